"""McNamara's audit paths: the synchronous ``record`` tool and the ``events.*`` consumer."""

from __future__ import annotations

import sqlite3

from bus.topics import (
    AUTH,
    CONFIG_CHANGE,
    LLM_CALL,
    URL_REFUSED,
    VALIDATION_FAILURE,
    AuthEvent,
    ConfigChange,
    ValidationFailure,
)
from mads.core.audit_trail import AuditRecord
from mads.mcnamara.schemas import McNamaraConfig
from tests.mads.mcnamara.conftest import PERSON, Harness

TOKEN = "tok-CANARY-91f3"


async def records(harness: Harness, n: int = 100) -> list[AuditRecord]:
    return await harness.m.trail.tail(n)


async def test_record_appends_durably_and_returns_seq_and_hash(harness: Harness) -> None:
    result = await harness.result(
        "record",
        {
            "event_type": "secret.read",
            "actor": "hopper",
            "action": "read",
            "outcome": "success",
            "details": {"path": "providers/openai", "token": TOKEN, "lease": "L-CANARY"},
            "hmac_keys": ["lease"],
        },
        sender="turing",
    )
    assert isinstance(result, dict) and set(result) == {"seq", "hash"}
    (rec,) = [r for r in await records(harness) if r.event_type == "secret.read"]
    assert (rec.seq, rec.hash) == (result["seq"], result["hash"])
    assert rec.details["token"] == harness.m.trail.hmac_value(TOKEN)
    assert rec.details["lease"] == harness.m.trail.hmac_value("L-CANARY")
    assert rec.details["reported_by"] == "turing" and rec.details["path"] == "providers/openai"
    report = await harness.result("verify")
    assert report["ok"] is True  # type: ignore[index]
    await harness.stop()
    data = b"".join(p.read_bytes() for p in (harness.data_dir / "mcnamara").iterdir())
    assert TOKEN.encode() not in data and b"L-CANARY" not in data


async def test_record_is_for_components_not_people(harness: Harness) -> None:
    """A person (at the gateway) or an LLM cannot write into the audit trail; only components' code can."""
    event = {"event_type": "secret.read", "actor": "forged", "action": "r", "outcome": "success"}
    reply = await harness.call("record", event, sender="user.ops")
    assert reply.error is not None and reply.error.code == "forbidden"
    assert [r for r in await records(harness) if r.actor == "forged"] == []


async def test_record_rejects_bad_fields_by_name(harness: Harness) -> None:
    reply = await harness.call(
        "record", {"event_type": "NotDotted", "actor": "a", "action": "b", "outcome": "maybe", "extra": 1}
    )
    assert reply.error is not None and reply.error.code == "invalid_arguments"
    assert {f.field for f in reply.error.fields} == {
        "content.0.arguments.event_type",
        "content.0.arguments.outcome",
        "content.0.arguments.extra",
    }
    assert [r for r in await records(harness) if r.event_type != "tool.call"] == []


async def test_record_fails_closed_when_the_trail_is_closed(harness: Harness) -> None:
    await harness.m.trail.close()
    reply = await harness.call(
        "record", {"event_type": "secret.read", "actor": "a", "action": "r", "outcome": "success"}, sender="turing"
    )
    assert reply.error is not None and reply.error.code == "audit_unavailable" and reply.error.retryable


async def test_record_fails_closed_when_the_database_is_locked(harness: Harness) -> None:
    await harness.stop()
    await harness.start(McNamaraConfig(audit_busy_timeout_ms=50))
    blocker = sqlite3.connect(harness.data_dir / "mcnamara" / "audit.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        reply = await harness.call(
            "record", {"event_type": "secret.read", "actor": "a", "action": "r", "outcome": "success"}, sender="turing"
        )
        assert reply.error is not None and reply.error.code == "audit_unavailable"
        assert "locked" in reply.error.message
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ok = await harness.result(
        "record", {"event_type": "secret.read", "actor": "a", "action": "r", "outcome": "success"}, sender="turing"
    )
    assert isinstance(ok, dict) and ok["seq"] >= 1


async def test_consumer_writes_tool_llm_and_validation_records(harness: Harness) -> None:
    await harness.result("verify", sender="user.alice", principal=PERSON)
    await harness.publish(
        LLM_CALL,
        {
            "caller": "hopper",
            "conversation_id": "c1",
            "model": "local/tiny",
            "input_tokens": 12,
            "output_tokens": 34,
            "cost_usd": 0.0021,
            "duration_ms": 5.5,
            "ok": True,
            "error_code": None,
        },
        sender="fiedler",
    )
    await harness.publish(
        VALIDATION_FAILURE,
        ValidationFailure(mad="hopper", problem="unknown_tool", tool="nope", detail="no such tool").model_dump(
            mode="json"
        ),
        sender="hopper.01JAAAAAAAAAAAAAAAAAAAAAAA",
    )
    await harness.publish("events.presence", {"mad": "hopper", "status": "up"}, sender="hopper")
    await harness.fence()
    by_type = {r.event_type: r for r in await records(harness)}
    assert set(by_type) == {"tool.call", "llm.call", "validation.failure"}, "presence heartbeats are not stored"
    call = by_type["tool.call"]
    assert (call.actor, call.action, call.outcome) == ("user:alice", "mcnamara.verify", "success")
    assert call.details["caller"] == "user.alice" and call.details["principal"] == "user:alice"
    llm = by_type["llm.call"]
    assert (llm.actor, llm.action) == ("hopper", "local/tiny")
    assert (llm.details["input_tokens"], llm.details["output_tokens"], llm.details["cost_usd"]) == (12, 34, 0.0021)
    vf = by_type["validation.failure"]
    assert (vf.actor, vf.action, vf.outcome, vf.details["tool"]) == (
        "hopper.01JAAAAAAAAAAAAAAAAAAAAAAA",
        "unknown_tool",
        "failure",
        "nope",
    )
    assert (await harness.m.trail.verify()).ok


async def test_consumer_maps_auth_config_and_url_events(harness: Harness) -> None:
    ok = AuthEvent(outcome="success", method="token", principal="alice", ip="127.0.0.1", route="/api/chat")
    denied = AuthEvent(outcome="denied", principal="bob", ip="127.0.0.1", reason="not an admin", route="/admin")
    await harness.publish(AUTH, ok.model_dump(mode="json"), sender="gateway")
    await harness.publish(AUTH, denied.model_dump(mode="json"), sender="gateway")
    change = ConfigChange(actor="user.ops", section="fiedler", keys=["models"], summary="added a model")
    await harness.publish(CONFIG_CHANGE, change.model_dump(mode="json"), sender="grace")
    await harness.publish(
        URL_REFUSED,
        {"mad": "marco", "url": f"https://user:{TOKEN}@10.0.0.5:8443/p?key={TOKEN}#f", "reason": "private address"},
        sender="marco",
    )
    await harness.fence()
    got = [
        (r.event_type, r.actor, r.outcome.value)
        for r in await records(harness)
        if not r.event_type.startswith("security.")
    ]
    assert got == [
        ("auth.token_use", "alice", "success"),
        ("auth.denied", "bob", "denied"),
        ("config.change", "user.ops", "success"),
        ("sandbox.violation", "marco", "failure"),
    ]
    url = next(r for r in await records(harness) if r.event_type == "sandbox.violation")
    assert url.details["url"] == "https://10.0.0.5:8443/p"
    await harness.stop()
    data = b"".join(p.read_bytes() for p in (harness.data_dir / "mcnamara").iterdir())
    assert TOKEN.encode() not in data


async def test_malformed_event_is_recorded_naming_fields_not_values(harness: Harness) -> None:
    await harness.publish(AUTH, {"outcome": "failure", "ip": f"evil-{TOKEN}", "route": "/login"}, sender="gateway")
    await harness.fence()
    (rec,) = await records(harness)
    assert (rec.event_type, rec.actor, rec.action, rec.outcome.value) == (
        "audit.malformed_event",
        "gateway",
        "events.auth",
        "error",
    )
    assert [e["field"] for e in rec.details["errors"]] == ["ip"]  # type: ignore[index,union-attr]
    assert TOKEN not in str(rec.details)
