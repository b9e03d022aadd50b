"""Rogers never stores a secret: secret parts are stripped by type, known values are redacted everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import aiosqlite
from pydantic import BaseModel, ConfigDict, JsonValue

from bus.envelope import SECRET_MEDIA_TYPE, DataPart, Envelope, Kind
from bus.memory import InMemoryBus
from mads.core.base import MAD, MadContext
from mads.core.redaction import REDACTED, SecretRedactor
from mads.core.tools import tool
from mads.rogers import Rogers
from tests.mads.rogers.support import Echo, call, note, request

SECRET = "sk-rogers-canary-5f0c2d9e71ab"
UNREGISTERED = "sk-from-another-process-33c1a7e2"


class PathArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class Keeper(MAD):
    """Answers like Turing's ``get``: the value in a data part typed SECRET_MEDIA_TYPE."""

    name = "keeper"
    description = "Hands out a secret value."
    accepts_prose = False

    @tool("Read a secret.")
    async def get(self, args: PathArgs) -> JsonValue:
        return {"path": args.path, "value": UNREGISTERED}

    def result_part(self, tool: str, value: JsonValue) -> DataPart:
        return DataPart(media_type=SECRET_MEDIA_TYPE, value=value)


def database_bytes(path: Path) -> bytes:
    """The database and its -wal/-shm files, as bytes on disk."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file())


async def stored_envelopes(rogers: Rogers) -> list[tuple[str, str]]:
    async with aiosqlite.connect(rogers.store.path) as db, db.execute("SELECT text, envelope FROM messages") as cur:
        return [(row[0], row[1]) for row in await cur.fetchall()]


async def test_secret_parts_are_stripped_even_when_the_value_is_unknown(
    bus: InMemoryBus, rogers: Rogers, tmp_path: Path, redactor: SecretRedactor
) -> None:
    keeper = Keeper(MadContext(bus=bus, data_dir=tmp_path))
    await keeper.start()
    try:
        reply = await request(bus, "keeper", "get", {"path": "providers/x"})
        assert reply.data(SECRET_MEDIA_TYPE) == [{"path": "providers/x", "value": UNREGISTERED}]
        put = await request(bus, "turing", "put", {"path": "providers/y", "value": UNREGISTERED})
        assert put.kind is Kind.ERROR
        await call(bus, "sync")
    finally:
        await keeper.stop()

    rows = await stored_envelopes(rogers)
    secret_parts = [
        part for _, text in rows for part in json.loads(text)["content"] if part.get("media_type") == SECRET_MEDIA_TYPE
    ]
    assert secret_parts == [{"type": "data", "media_type": SECRET_MEDIA_TYPE, "value": REDACTED}]
    [put_request] = [json.loads(t) for _, t in rows if json.loads(t)["recipient"] == "turing"]
    assert put_request["content"][0]["arguments"] == {"path": "providers/y", "value": REDACTED}
    await rogers.stop()
    assert UNREGISTERED.encode() not in database_bytes(rogers.store.path)


async def test_known_secrets_are_redacted_from_everything_stored(
    bus: InMemoryBus, rogers: Rogers, echo: Echo, redactor: SecretRedactor
) -> None:
    tricky = 'pa"ss\\word-with-quotes'
    redactor.register(SECRET)
    redactor.register(tricky)
    cid = (await call(bus, "create_conversation", {"title": f"about {SECRET}"}))["id"]
    await bus.publish(note(cid, f"my key is {SECRET} and {tricky}"))
    await request(bus, "echo", "echo", {"text": f"repeat {SECRET}"}, conversation_id=cid)
    await request(bus, "echo", "fail", {"text": SECRET}, conversation_id=cid)
    await request(bus, "echo", "echo", {SECRET: "as a key"}, conversation_id=cid)
    await call(bus, "sync")

    for text, envelope_json in await stored_envelopes(rogers):
        assert SECRET not in text and SECRET not in envelope_json
        assert 'pa\\"ss' not in envelope_json and 'pa"ss' not in text
        Envelope.model_validate_json(envelope_json)
    [noted] = [t for t, _ in await stored_envelopes(rogers) if t.startswith("my key")]
    assert noted == f"my key is {REDACTED} and {REDACTED}"
    conversation = await call(bus, "get_conversation", {"conversation_id": cid})
    assert conversation["title"] == f"about {REDACTED}"
    page = await call(bus, "history", {"conversation_id": cid, "limit": 50})
    assert SECRET not in json.dumps(page) and REDACTED in json.dumps(page)
    found = await call(bus, "search", {"query": SECRET})
    assert found["hits"] == []
    await rogers.stop()
    on_disk = database_bytes(rogers.store.path)
    assert SECRET.encode() not in on_disk and tricky.encode() not in on_disk


async def test_envelopes_queued_at_shutdown_are_redacted_too(
    bus: InMemoryBus, rogers: Rogers, redactor: SecretRedactor
) -> None:
    """What is still queued when the bus closes is stored through the same redactor (it is Rogers's own,
    from its context, so nothing another MAD does at shut-down can take it away)."""
    redactor.register(SECRET)
    for i in range(50):
        await bus.publish(note(None, f"late {i} {SECRET}"))
    await bus.close()
    await rogers.stop()
    assert SECRET.encode() not in database_bytes(rogers.store.path)
