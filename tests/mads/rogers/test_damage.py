"""Damaged files: a changed byte is reported, never returned; one damaged row never hides a conversation.

The damage is real: the test stops Rogers (its WAL checkpointed into the file), changes bytes
of ``conversations.db`` on disk, and starts a new Rogers on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bus.base import Subscription
from bus.envelope import Envelope
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.store_health import STORAGE_TOPIC
from mads.rogers import Rogers
from tests.mads.rogers.support import call, note, request
from tests.support.waiting import eventually

PAGE = 4096


async def _fill(bus: InMemoryBus, tmp_path: Path, texts: list[str]) -> tuple[str, list[Envelope]]:
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
    await rogers.start()
    cid = (await call(bus, "create_conversation", {}))["id"]
    published = [note(cid, text) for text in texts]
    for envelope in published:
        await bus.publish(envelope)
    await call(bus, "sync")
    await rogers.stop()
    return cid, published


def _envelope_offset(db: Path, marker: str) -> int:
    """Where ``marker`` sits inside a stored envelope's JSON (not the search text, not the index)."""
    data = db.read_bytes()
    offset = data.find(f'"text":"{marker}'.encode())
    assert offset > 0, f"{marker} not found in {db}"
    return offset + len('"text":"')


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


class Events:
    def __init__(self) -> None:
        self.values: list[dict] = []
        self.subscription: Subscription | None = None

    async def on(self, envelope: Envelope) -> None:
        self.values.extend(v for v in envelope.data() if isinstance(v, dict))


async def _restart(bus: InMemoryBus, tmp_path: Path, events: Events) -> Rogers:
    events.subscription = await bus.subscribe(STORAGE_TOPIC, events.on, group="test-storage")
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
    await rogers.start()
    return rogers


async def test_a_changed_letter_is_reported_not_returned(bus: InMemoryBus, tmp_path: Path) -> None:
    texts = [f"kept message {i}" for i in range(5)] + ["the original wording zebra"]
    cid, published = await _fill(bus, tmp_path, texts)
    db = tmp_path / "rogers" / "conversations.db"
    offset = _envelope_offset(db, "the original wording zebra") + len("the original wording ")
    _overwrite(db, offset, b"Z")  # "zebra" becomes "Zebra": same length, SQLite's structure intact

    events = Events()
    rogers = await _restart(bus, tmp_path, events)
    try:
        page = await call(bus, "history", {"conversation_id": cid, "limit": 50})
        by_id = {m["id"]: m for m in page["messages"]}
        changed = by_id[published[-1].id]
        assert changed["damaged"] is True and changed["text"] == "" and changed["envelope"] is None
        assert "Zebra" not in json.dumps(page) and "zebra" not in json.dumps(page)
        assert [by_id[e.id]["text"] for e in published[:-1]] == texts[:-1]
        await eventually(lambda: any(v["state"] == "damaged" for v in events.values), what="damage announced")
        damaged = next(v for v in events.values if v["state"] == "damaged")
        assert damaged["path"] == str(db) and published[-1].id in damaged["details"]["messages"]
        assert rogers.health.health.state == "damaged"
    finally:
        await rogers.stop()


async def test_a_damaged_page_marks_its_row_and_the_rest_is_read(bus: InMemoryBus, tmp_path: Path) -> None:
    """One stored row per page (each ~2.5 KB); the page of one is overwritten: SQLite calls the file malformed."""
    texts = [f"row{i:02d} " + "filler words here " * 60 for i in range(12)]
    cid, published = await _fill(bus, tmp_path, texts)
    db = tmp_path / "rogers" / "conversations.db"
    offset = _envelope_offset(db, "row06 ")
    page_start = offset - offset % PAGE
    _overwrite(db, page_start, b"\xff" * 12)  # the b-tree page header: not a page SQLite can read

    events = Events()
    rogers = await _restart(bus, tmp_path, events)
    try:
        await eventually(
            lambda: any("quick_check" in v["message"] for v in events.values if v["state"] == "damaged"),
            what="the start-up quick_check reporting damage",
        )
        reply = await request(bus, "rogers", "history", {"conversation_id": cid, "limit": 50})
        assert reply.error is None, reply.error
        page = reply.data()[0]
        by_id = {m["id"]: m for m in page["messages"]}
        assert by_id[published[6].id]["damaged"] is True
        readable = [e for i, e in enumerate(published) if i != 6]
        assert all(by_id[e.id]["text"] == e.text() for e in readable)
        assert "row06" not in json.dumps(page)
        assert rogers.health.health.state == "damaged"
    finally:
        await rogers.stop()
