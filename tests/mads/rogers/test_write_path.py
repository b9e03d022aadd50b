"""Rogers's write path on a real SQLite file: a batch is stored whole or not at all, in order, counted
right, whatever its size; ``sync`` answers from what was committed lately and from the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bus.envelope import Envelope, Kind, ProsePart
from bus.ids import new_id
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.ledger import LEDGER_TOPIC, LedgerEvent
from mads.rogers import Rogers
from mads.rogers.store import (
    INSERT_CHUNK,
    ConversationStore,
    MessageRecord,
    damaged_messages,
    ledger_differences,
    now,
)
from tests.mads.rogers.support import call, note, request
from tests.support.waiting import eventually_async


def record(message_id: str, conversation_id: str, text: str, *, kind: str = "event") -> MessageRecord:
    envelope = Envelope(
        id=message_id,
        sender="user.alice",
        recipient="events.note",
        kind=Kind.EVENT,
        conversation_id=conversation_id,
        content=[ProsePart(text=text)],
    )
    return MessageRecord(
        id=message_id,
        conversation_id=conversation_id,
        sender=envelope.sender,
        recipient=envelope.recipient,
        kind=kind,
        correlation_id=None,
        created_at=now(),
        text=text,
        envelope_json=envelope.model_dump_json(exclude_none=True),
    )


def ids_in_order(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY seq")]


async def test_batches_of_any_size_are_stored_in_order_once_and_counted(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "conversations.db")
    await store.open()
    try:
        cid = new_id()
        earlier = [record(new_id(), cid, f"earlier {i}") for i in range(3)]
        assert await store.append(earlier) == 3
        # Bigger than one statement takes (so several, in one transaction), with ids already stored
        # and one id twice within the batch: each is stored once, the first time it comes.
        fresh = [record(new_id(), cid, f"zephyr number {i}") for i in range(2 * INSERT_CHUNK + 7)]
        batch = [*fresh[:10], earlier[1], fresh[3], *fresh[10:]]
        count = await store.append(batch)
        assert count == 3 + len(fresh) == await store.message_count()
        assert ids_in_order(store.path) == [r.id for r in earlier] + [r.id for r in fresh]
        # A small batch (one statement) after it, repeating the last id of the big one.
        small = [record(new_id(), cid, "small one"), fresh[-1]]
        assert await store.append(small) == count + 1
        assert ids_in_order(store.path)[-1] == small[0].id
        conversation = await store.get_conversation(cid)
        assert conversation is not None and conversation.message_count == count + 1
        hits = await store.search('"zephyr"', cid, 10 * INSERT_CHUNK)
        assert len(hits) == len(fresh)
    finally:
        await store.close()
    assert damaged_messages(store.path) == (count + 1, []), "every row matches its checksum"
    reopened = ConversationStore(store.path)
    await reopened.open()
    try:
        assert await reopened.append([record(new_id(), cid, "after a restart")]) == count + 2
    finally:
        await reopened.close()


async def test_a_batch_with_a_row_the_database_refuses_stores_none_of_it(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "conversations.db")
    await store.open()
    try:
        cid = new_id()
        assert await store.append([record(new_id(), cid, "kept")]) == 1
        for size in (5, INSERT_CHUNK + 5):  # one statement, and several in one transaction
            good = [record(new_id(), cid, f"good {i}") for i in range(size)]
            bad = record(new_id(), cid, "a kind the schema refuses", kind="gossip")
            try:
                await store.append([*good, bad])
            except sqlite3.IntegrityError:
                pass
            else:
                raise AssertionError("a row violating the schema was accepted")
            assert len(ids_in_order(store.path)) == 1, f"batch of {size + 1}: nothing of it stored"
            assert await store.message_count() == 1
        assert await store.append([record(new_id(), cid, "and on")]) == 2, "the count did not move for the refused"
    finally:
        await store.close()


async def test_sync_finds_ids_committed_lately_and_ids_from_before_a_restart(tmp_path: Path) -> None:
    async def started(bus: InMemoryBus) -> Rogers:
        rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
        await rogers.start()
        return rogers

    bus = InMemoryBus()
    await bus.start()
    rogers = await started(bus)
    before = [note(None, f"before the restart {i}") for i in range(3)]
    for envelope in before:
        await bus.publish(envelope)
    assert (await call(bus, "sync", {"message_ids": [e.id for e in before]}))["count"] >= 3
    await bus.close()
    await rogers.stop()

    bus = InMemoryBus()
    await bus.start()
    rogers = await started(bus)
    try:
        after = note(None, "after the restart")
        await bus.publish(after)
        known = [after.id, *(e.id for e in before)]  # one committed just now, three only in the file
        synced = await call(bus, "sync", {"message_ids": known})
        assert synced["count"] >= 5
        unknown = await request(bus, "rogers", "sync", {"message_ids": [after.id, new_id()]})
        assert unknown.error is not None and unknown.error.code == "storage_unavailable"
    finally:
        await bus.close()
        await rogers.stop()


async def test_the_published_ledger_matches_the_file_batch_after_batch(tmp_path: Path) -> None:
    """What Rogers publishes on ``events.storage_ledger`` (count and running hash per conversation) is what
    the file holds, whether a batch's rows were folded as committed or read back (a duplicate in it)."""
    bus = InMemoryBus()
    await bus.start()
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
    await rogers.start()
    latest: dict[str, tuple[int, str]] = {}

    async def on_ledger(envelope: Envelope) -> None:
        for value in envelope.data():
            for cid, entry in LedgerEvent.model_validate(value).conversations.items():
                latest[cid] = (entry.count, entry.hash)

    await bus.subscribe(LEDGER_TOPIC, on_ledger, group="test-ledger")
    try:
        conversations = [new_id() for _ in range(3)]
        sent: list[Envelope] = []
        for round_ in range(6):
            for cid in conversations:
                for i in range(round_ + 1):
                    sent.append(note(cid, f"round {round_} message {i}"))
                    await bus.publish(sent[-1])
            if round_ % 2:
                await bus.publish(sent[round_])  # delivered again: stored once, the batch is read back
            await call(bus, "sync")
        with sqlite3.connect(rogers.store.path) as db:
            counts = dict(db.execute("SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id"))

        async def caught_up() -> bool:
            return all(latest.get(cid, (0, ""))[0] == counts[cid] for cid in conversations)

        await eventually_async(caught_up, what="ledger entries for every stored message")
        assert ledger_differences(rogers.store.path, {cid: latest[cid] for cid in conversations}) == ({}, [])
    finally:
        await bus.close()
        await rogers.stop()
