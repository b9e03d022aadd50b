"""The Turing MAD through a real in-memory bus, with a real vault and a real audit trail.

McNamara is built elsewhere; here a small stand-in MAD named ``mcnamara`` serves its
``record`` tool on top of the real ``AuditTrail``, and a variant whose trail is closed
proves that Turing fails closed when the audit record cannot be written.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue

from bus.envelope import (
    SECRET_MEDIA_TYPE,
    SYSTEM,
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    Kind,
    Principal,
    deadline_in,
)
from bus.memory import InMemoryBus
from mads.core.audit_trail import AuditEvent, AuditRecord, AuditTrail, AuditWriteError
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.redaction import SecretRedactor
from mads.core.tools import tool
from mads.turing import Turing
from mads.turing.schemas import TuringConfig

ALL_CAPS = ["read", "write", "list", "delete"]
POLICY: list[dict[str, Any]] = [
    {"principal": "fiedler", "paths": ["providers/**"], "capabilities": ["read"]},
    {"principal": "keeper", "paths": ["**"], "capabilities": ALL_CAPS},
    {"principal": "operator:*", "paths": ["**"], "capabilities": ALL_CAPS},
]
ADMIN = Principal(kind="operator", name="root")
"""An operator: Turing's administration (rotate, destroy) runs only for one."""


class Recorder(MAD):
    """Stand-in for McNamara's ``record`` tool, writing to the real hash-chained trail."""

    name = "mcnamara"
    description = "records audit events"
    accepts_prose = False

    def __init__(self, ctx: MadContext, trail: AuditTrail) -> None:
        super().__init__(ctx)
        self.trail = trail

    @tool("Append one audit record")
    async def record(self, args: AuditEvent) -> dict[str, JsonValue]:
        try:
            rec = await self.trail.append(args)
        except AuditWriteError as exc:
            raise ToolFailure("audit_write_failed", str(exc)) from None
        return {"seq": rec.seq}


class ExplodeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detail: str


class Clumsy(MAD):
    """A MAD whose tool crashes with an exception that quotes what it was given."""

    name = "clumsy"
    description = "crashes"
    accepts_prose = False

    @tool("Crash, quoting the detail")
    async def explode(self, args: ExplodeArgs) -> None:
        raise RuntimeError(f"upstream rejected key {args.detail}")


def unique_secret() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
async def bus(redactor: SecretRedactor) -> AsyncIterator[InMemoryBus]:
    b = InMemoryBus(redact=redactor.redact)
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[AuditTrail]:
    async with AuditTrail(tmp_path / "mcnamara" / "audit.db") as t:
        yield t


@pytest.fixture
async def recorder(bus: InMemoryBus, tmp_path: Path, trail: AuditTrail) -> AsyncIterator[Recorder]:
    r = Recorder(MadContext(bus=bus, data_dir=tmp_path), trail)
    await r.start()
    yield r
    await r.stop()


async def start_turing(
    bus: InMemoryBus, data_dir: Path, *, redactor: SecretRedactor | None = None, **config: Any
) -> Turing:
    config.setdefault("policy", POLICY)
    ctx = MadContext(
        bus=bus,
        data_dir=data_dir,
        config=TuringConfig.model_validate(config),
        redactor=redactor if redactor is not None else SecretRedactor(),
    )
    turing = Turing(ctx)
    await turing.start()
    return turing


@pytest.fixture
async def turing(bus: InMemoryBus, tmp_path: Path, recorder: Recorder) -> AsyncIterator[Turing]:
    t = await start_turing(bus, tmp_path)
    yield t
    await t.stop()


async def ask(
    bus: InMemoryBus, sender: str, tool_name: str, *, principal: Principal = SYSTEM, **arguments: JsonValue
) -> Envelope:
    """A command to Turing from ``sender`` (a MAD) serving ``principal`` (the system unless said)."""
    return await bus.request(
        Envelope(
            sender=sender,
            recipient="turing",
            kind=Kind.REQUEST,
            deadline=deadline_in(10),
            principal=principal,
            content=[CommandPart(tool=tool_name, arguments=arguments)],
        )
    )


def ok(reply: Envelope) -> Any:
    assert reply.error is None, reply.error
    part = reply.content[0]
    assert isinstance(part, DataPart)
    return part.value


def failed(reply: Envelope, code: str) -> ErrorInfo:
    assert reply.kind is Kind.ERROR, reply
    error = reply.error
    assert error is not None and error.code == code, error
    return error


async def records(trail: AuditTrail) -> list[AuditRecord]:
    return await trail.query()


async def test_secret_lifecycle_over_the_bus(bus: InMemoryBus, turing: Turing, trail: AuditTrail) -> None:
    first, second, third = unique_secret(), unique_secret(), unique_secret()
    assert ok(await ask(bus, "keeper", "put", path="providers/openai", value=first)) == {
        "path": "providers/openai",
        "version": 1,
    }
    assert ok(await ask(bus, "keeper", "put", path="providers/openai", value=second))["version"] == 2
    assert ok(await ask(bus, "keeper", "put", path="internal/signing", value=third))["version"] == 1

    latest = await ask(bus, "keeper", "get", path="providers/openai")
    assert ok(latest) == {"path": "providers/openai", "version": 2, "value": second}
    assert ok(await ask(bus, "keeper", "get", path="providers/openai", version=1))["value"] == first
    assert ok(await ask(bus, "keeper", "list", prefix="providers/"))["paths"] == ["providers/openai"]
    assert ok(await ask(bus, "keeper", "list"))["paths"] == ["internal/signing", "providers/openai"]

    # check-and-set: 0 means "must not exist", N means "current version is N"
    assert (
        "does not exist"
        in failed(await ask(bus, "keeper", "put", path="providers/openai", value=first, cas=0), "cas_mismatch").message
    )
    failed(await ask(bus, "keeper", "put", path="providers/openai", value=first, cas=1), "cas_mismatch")
    assert ok(await ask(bus, "keeper", "put", path="providers/openai", value=third, cas=2))["version"] == 3

    assert ok(await ask(bus, "keeper", "delete", path="providers/openai"))["changed"] == [3]
    assert "deleted" in failed(await ask(bus, "keeper", "get", path="providers/openai"), "not_found").message
    assert ok(await ask(bus, "keeper", "undelete", path="providers/openai", versions=[3]))["changed"] == [3]
    assert ok(await ask(bus, "keeper", "get", path="providers/openai"))["value"] == third
    assert ok(await ask(bus, "keeper", "destroy", principal=ADMIN, path="providers/openai", versions=[1]))[
        "changed"
    ] == [1]
    assert (
        "destroyed" in failed(await ask(bus, "keeper", "get", path="providers/openai", version=1), "not_found").message
    )
    meta = ok(await ask(bus, "keeper", "versions", path="providers/openai"))
    assert meta["current_version"] == 3
    assert [(v["version"], v["destroyed"]) for v in meta["versions"]] == [(1, True), (2, False), (3, False)]
    failed(await ask(bus, "keeper", "get", path="providers/missing"), "not_found")

    # every access was audited, with paths and versions but never a value
    trail_records = await records(trail)
    kinds = [(r.event_type, r.action, r.outcome.value) for r in trail_records]
    assert kinds[:4] == [
        ("secret.write", "put", "success"),
        ("secret.write", "put", "success"),
        ("secret.write", "put", "success"),
        ("secret.read", "get", "success"),
    ]
    assert ("secret.write", "put", "failure") in kinds
    assert ("secret.destroy", "destroy", "success") in kinds
    # the actor is the person a request served when there is one (the operator's destroy), else the MAD
    assert {r.actor for r in trail_records} == {"keeper", "operator:root"}
    assert [r.action for r in trail_records if r.actor == "operator:root"] == ["destroy"]
    assert trail_records[3].details == {"path": "providers/openai", "version": 2, "chain": ["keeper"]}
    audit_bytes = b"".join(p.read_bytes() for p in trail.db_path.parent.iterdir())
    for value in (first, second, third):
        assert value.encode() not in audit_bytes


async def test_bad_arguments_name_the_field(bus: InMemoryBus, turing: Turing) -> None:
    error = failed(await ask(bus, "keeper", "put", path="../etc/passwd", value="whatever-value"), "invalid_arguments")
    assert [f.field for f in error.fields] == ["content.0.arguments.path"]
    error = failed(await ask(bus, "keeper", "get", path="providers/openai", colour="red"), "invalid_arguments")
    assert [f.field for f in error.fields] == ["content.0.arguments.colour"]
    error = failed(await ask(bus, "keeper", "undelete", path="providers/openai", versions=[0]), "invalid_arguments")
    assert error.fields[0].field.startswith("content.0.arguments.versions")


async def test_access_is_decided_by_the_caller(bus: InMemoryBus, turing: Turing, trail: AuditTrail) -> None:
    key, signing = unique_secret(), unique_secret()
    ok(await ask(bus, "keeper", "put", path="providers/openai", value=key))
    ok(await ask(bus, "keeper", "put", path="internal/signing", value=signing))

    assert ok(await ask(bus, "fiedler", "get", path="providers/openai"))["value"] == key
    denied = failed(await ask(bus, "fiedler", "put", path="providers/openai", value=unique_secret()), "access_denied")
    assert "'fiedler'" in denied.message and "'write'" in denied.message and "'providers/openai'" in denied.message
    denied = failed(await ask(bus, "fiedler", "get", path="internal/signing"), "access_denied")
    assert "'read'" in denied.message and "'internal/signing'" in denied.message
    assert signing not in denied.message
    failed(await ask(bus, "fiedler", "rotate"), "forbidden")  # an operator action, and no MAD is an operator
    failed(await ask(bus, "hopper", "get", path="providers/openai"), "access_denied")
    # 'operator' is the CLI's principal; a bus message claiming it is refused
    failed(await ask(bus, "operator", "get", path="providers/openai"), "access_denied")
    assert ok(await ask(bus, "keeper", "get", path="providers/openai", version=1))["value"] == key

    denials = [r for r in await records(trail) if r.event_type == "secret.denied"]
    assert [(r.actor, r.action, r.outcome.value, r.details) for r in denials] == [
        ("fiedler", "put", "denied", {"path": "providers/openai", "capability": "write", "chain": ["fiedler"]}),
        ("fiedler", "get", "denied", {"path": "internal/signing", "capability": "read", "chain": ["fiedler"]}),
        ("hopper", "get", "denied", {"path": "providers/openai", "capability": "read", "chain": ["hopper"]}),
        ("operator", "get", "denied", {"path": "providers/openai", "capability": "read", "chain": ["operator"]}),
    ]


async def test_default_policy_lets_fiedler_read_provider_keys_only(
    bus: InMemoryBus, tmp_path: Path, recorder: Recorder
) -> None:
    turing = Turing(MadContext(bus=bus, data_dir=tmp_path, config=TuringConfig()))
    await turing.start()
    try:
        failed(await ask(bus, "keeper", "put", path="providers/openai", value=unique_secret()), "access_denied")
        failed(await ask(bus, "fiedler", "put", path="providers/openai", value=unique_secret()), "access_denied")
        failed(await ask(bus, "fiedler", "list", prefix="providers/"), "access_denied")
        assert "no secret" in failed(await ask(bus, "fiedler", "get", path="providers/openai"), "not_found").message
    finally:
        await turing.stop()


async def test_sealed_without_passphrase_refuses_everything(
    bus: InMemoryBus, tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TURING_TEST_PASSPHRASE", raising=False)
    turing = await start_turing(bus, tmp_path, unseal="passphrase", passphrase_env="TURING_TEST_PASSPHRASE")
    try:
        status = ok(await ask(bus, "keeper", "status"))
        assert status["sealed"] is True and status["key_term"] is None
        assert "TURING_TEST_PASSPHRASE" in status["how_to_unseal"]
        calls: list[tuple[str, dict[str, JsonValue]]] = [
            ("get", {"path": "providers/openai"}),
            ("put", {"path": "providers/openai", "value": "some-value-123"}),
            ("list", {"prefix": ""}),
            ("versions", {"path": "providers/openai"}),
            ("delete", {"path": "providers/openai"}),
            ("undelete", {"path": "providers/openai", "versions": [1]}),
            ("destroy", {"path": "providers/openai", "versions": [1]}),
            ("rotate", {}),
        ]
        for name, arguments in calls:
            error = failed(await ask(bus, "keeper", name, principal=ADMIN, **arguments), "sealed")
            assert f"'{name}'" in error.message and "TURING_TEST_PASSPHRASE" in error.message
    finally:
        await turing.stop()

    monkeypatch.setenv("TURING_TEST_PASSPHRASE", "a long enough test passphrase")
    turing = await start_turing(bus, tmp_path, unseal="passphrase", passphrase_env="TURING_TEST_PASSPHRASE")
    try:
        status = ok(await ask(bus, "keeper", "status"))
        assert status["sealed"] is False and status["unseal_method"] == "passphrase"
        ok(await ask(bus, "keeper", "put", path="providers/openai", value=unique_secret()))
    finally:
        await turing.stop()
    assert not (tmp_path / "turing" / "root.key").exists()


async def test_first_run_creates_key_file_and_restart_unseals(
    bus: InMemoryBus, tmp_path: Path, recorder: Recorder
) -> None:
    key_file = tmp_path / "turing" / "root.key"
    assert not key_file.exists()
    value = unique_secret()
    turing = await start_turing(bus, tmp_path)
    try:
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert key_file.stat().st_size == 32
        ok(await ask(bus, "keeper", "put", path="tokens/ci", value=value))
    finally:
        await turing.stop()
    key_bytes = key_file.read_bytes()
    turing = await start_turing(bus, tmp_path)
    try:
        status = ok(await ask(bus, "keeper", "status"))
        assert (status["sealed"], status["initialized"], status["unseal_method"]) == (False, True, "key_file")
        assert ok(await ask(bus, "keeper", "get", path="tokens/ci"))["value"] == value
    finally:
        await turing.stop()
    assert key_file.read_bytes() == key_bytes
    assert key_bytes not in (tmp_path / "turing" / "vault.db").read_bytes()


async def test_rotate_keeps_old_versions_readable(bus: InMemoryBus, turing: Turing, trail: AuditTrail) -> None:
    old, new = unique_secret(), unique_secret()
    ok(await ask(bus, "keeper", "put", path="providers/anthropic", value=old))
    assert ok(await ask(bus, "keeper", "status"))["key_term"] == 1
    assert ok(await ask(bus, "keeper", "rotate", principal=ADMIN)) == {"key_term": 2}
    ok(await ask(bus, "keeper", "put", path="providers/anthropic", value=new))
    assert ok(await ask(bus, "keeper", "status"))["key_term"] == 2
    assert ok(await ask(bus, "keeper", "get", path="providers/anthropic", version=1))["value"] == old
    assert ok(await ask(bus, "keeper", "get", path="providers/anthropic"))["value"] == new
    assert any(r.event_type == "secret.rotate" and r.details["key_term"] == 2 for r in await records(trail))


async def test_audit_failure_fails_closed(bus: InMemoryBus, tmp_path: Path, trail: AuditTrail) -> None:
    value = unique_secret()
    good = Recorder(MadContext(bus=bus, data_dir=tmp_path), trail)
    await good.start()
    turing = await start_turing(bus, tmp_path)
    try:
        ok(await ask(bus, "keeper", "put", path="providers/openai", value=value))
        await good.stop()

        broken_trail = AuditTrail(tmp_path / "broken" / "audit.db")
        await broken_trail.open()
        await broken_trail.close()  # appends now fail with AuditWriteError, as on a dead disk
        broken = Recorder(MadContext(bus=bus, data_dir=tmp_path), broken_trail)
        await broken.start()
        try:
            reply = await ask(bus, "fiedler", "get", path="providers/openai")
            error = failed(reply, "audit_unavailable")
            assert "audit_write_failed" in error.message and error.retryable
            assert value not in reply.model_dump_json()
            failed(await ask(bus, "keeper", "put", path="providers/openai", value=unique_secret()), "audit_unavailable")
        finally:
            await broken.stop()

        # nobody serving McNamara at all: still no value
        reply = await ask(bus, "fiedler", "get", path="providers/openai")
        assert "no_route" in failed(reply, "audit_unavailable").message
        assert value not in reply.model_dump_json()
    finally:
        await turing.stop()


async def test_secret_values_travel_only_in_secret_parts(bus: InMemoryBus, turing: Turing) -> None:
    value = unique_secret()
    seen: list[Envelope] = []
    got_reply = asyncio.Event()
    request_ids: set[str] = set()

    async def observe(envelope: Envelope) -> None:
        seen.append(envelope)
        if envelope.correlation_id in request_ids:
            got_reply.set()

    await bus.wiretap(observe)
    ok(await ask(bus, "keeper", "put", path="providers/openai", value=value))
    request = Envelope(
        sender="fiedler",
        recipient="turing",
        kind=Kind.REQUEST,
        deadline=deadline_in(10),
        content=[CommandPart(tool="get", arguments={"path": "providers/openai"})],
    )
    request_ids.add(request.id)
    reply = await bus.request(request)
    assert [(p.type, getattr(p, "media_type", None)) for p in reply.content] == [("data", SECRET_MEDIA_TYPE)]
    await asyncio.wait_for(got_reply.wait(), 5)

    carrying = [e for e in seen if value in e.model_dump_json()]
    # the put request (the writer sends it) and the get reply; nothing else — not the audit record
    assert {(e.sender, e.kind) for e in carrying} == {("keeper", Kind.REQUEST), ("turing", Kind.REPLY)}
    for envelope in carrying:
        if envelope.sender != "turing":
            continue
        stripped = [p for p in envelope.content if not (isinstance(p, DataPart) and p.media_type == SECRET_MEDIA_TYPE)]
        assert value not in str([p.model_dump() for p in stripped])
    put_reply = ok(await ask(bus, "keeper", "put", path="providers/openai", value=unique_secret()))
    assert put_reply["version"] == 2


async def test_handler_errors_are_scrubbed_of_known_secrets(
    bus: InMemoryBus, tmp_path: Path, recorder: Recorder, redactor: SecretRedactor
) -> None:
    """Turing feeds the process's redactor (its context's), and the bus scrubs handler errors with it."""
    value = unique_secret()
    clumsy = Clumsy(MadContext(bus=bus, data_dir=tmp_path, redactor=redactor))
    await clumsy.start()
    turing = await start_turing(bus, tmp_path, redactor=redactor)
    try:
        ok(await ask(bus, "keeper", "put", path="providers/openai", value=value))
        reply = await bus.request(
            Envelope(
                sender="keeper",
                recipient="clumsy",
                kind=Kind.REQUEST,
                deadline=deadline_in(10),
                content=[CommandPart(tool="explode", arguments={"detail": value})],
            )
        )
        error = failed(reply, "handler_error")
        assert "upstream rejected key [REDACTED]" in error.message
        assert value not in reply.model_dump_json()
    finally:
        await turing.stop()
        await clumsy.stop()


async def test_stored_values_are_known_to_the_redactor_after_unseal(tmp_path) -> None:
    """A secret set offline (CLI) and never read is still redacted once Turing has started."""
    from mads.turing.schemas import TuringConfig
    from mads.turing.unsealing import make_vault, unseal_from_config

    canary = "offline-canary-5b7e1c9d2a4f"
    config = TuringConfig()
    vault = make_vault(config, tmp_path)
    await vault.open()
    assert await unseal_from_config(vault, config, tmp_path) is None
    await vault.put("operator", "providers/offline", canary)
    await vault.close()
    redactor = SecretRedactor()
    assert canary in redactor.redact(f"key={canary}")
    vault = make_vault(config, tmp_path, redactor)
    await vault.open()
    assert await unseal_from_config(vault, config, tmp_path) is None
    assert await vault.register_all_with_redactor() == 1
    await vault.close()
    assert canary not in redactor.redact(f"key={canary}")
