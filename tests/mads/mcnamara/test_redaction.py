"""McNamara redacts known secret values from every audit record before it is appended (HMACs still work)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.topics import CONFIG_CHANGE, VALIDATION_FAILURE, ConfigChange, ValidationFailure
from mads.core.audit_trail import AuditEvent, AuditOutcome, AuditTrail
from mads.core.redaction import REDACTED, SecretRedactor
from mads.mcnamara.schemas import McNamaraConfig
from tests.mads.mcnamara.conftest import Harness

SECRET = "sk-audit-canary-0e4b7c19d2"


@pytest.fixture
def redactor(harness: Harness) -> SecretRedactor:
    """McNamara's own redactor (from its context), taught the secret as Turing would teach it."""
    harness.redactor.register(SECRET)
    return harness.redactor


def trail_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("audit.db*")) if p.is_file() and "key" not in p.name)


async def test_record_redacts_details_keys_and_action_but_hmacs_the_real_value(
    harness: Harness, redactor: SecretRedactor
) -> None:
    await harness.result(
        "record",
        {
            "event_type": "secret.read",
            "actor": "turing",
            "action": f"read {SECRET}",
            "outcome": "success",
            "details": {
                "path": "providers/openai",
                "note": f"the key is {SECRET}",
                "nested": [{"deep": SECRET}],
                SECRET: "as a key",
                "token": SECRET,
            },
        },
        sender="turing",
    )
    [record] = await harness.m.trail.tail(1)
    assert record.action == f"read {REDACTED}"
    assert record.details["note"] == f"the key is {REDACTED}"
    assert record.details["nested"] == [{"deep": REDACTED}]
    assert record.details[REDACTED] == "as a key"
    assert record.details["token"] == harness.m.trail.hmac_value(SECRET)
    assert (await harness.m.trail.verify()).ok
    await harness.stop()
    assert SECRET.encode() not in trail_bytes(harness.data_dir)


async def test_consumer_redacts_before_it_truncates(harness: Harness, redactor: SecretRedactor) -> None:
    """A secret cut in half by truncation would not be recognised afterwards: redaction comes first."""
    await harness.stop()
    await harness.start(McNamaraConfig(max_detail_chars=100))
    detail = "x" * 495 + SECRET
    await harness.publish(
        VALIDATION_FAILURE, ValidationFailure(mad="hopper", problem="bad_json", detail=detail).model_dump()
    )
    summary = "y" * 60 + SECRET
    change = ConfigChange(actor=f"user.{SECRET}", section="fiedler", summary=summary)
    await harness.publish(CONFIG_CHANGE, change.model_dump())
    await harness.fence()
    records = {r.event_type: r for r in await harness.m.trail.tail(10)}
    validation, config = records["validation.failure"], records["config.change"]
    assert validation.details == {
        "truncated": True,
        "preview": validation.details["preview"],
        "principal": "system",
        "chain": [],
    }
    assert SECRET[:6] not in str(validation.details) and SECRET[:6] not in str(config.details)
    assert config.actor == f"user.{REDACTED}"
    await harness.stop()
    assert SECRET[:6].encode() not in trail_bytes(harness.data_dir)


async def test_audit_trail_without_a_redactor_stores_what_it_is_given(tmp_path: Path) -> None:
    """The CLI's trail has no redactor installed: unchanged strings, HMACs as before."""
    async with AuditTrail(tmp_path / "audit.db") as trail:
        record = await trail.append(
            AuditEvent(
                event_type="secret.write",
                actor="operator",
                action="set",
                outcome=AuditOutcome.SUCCESS,
                details={"path": "p/q", "value": "v-123456"},
            )
        )
    assert record.details == {"path": "p/q", "value": trail.hmac_value("v-123456")}
