"""Versioned migrations: an older database is upgraded in place and keeps its data."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bus.envelope import Envelope, Kind, ProsePart
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.sqlite import Migration, MigrationScriptError, split_statements
from mads.rogers import Rogers
from mads.rogers.migrations import LATEST_VERSION, MIGRATIONS, MigrationError, migrate
from mads.rogers.store import timestamp
from tests.mads.rogers.support import call, note


def db_file(data_dir: Path) -> Path:
    return data_dir / "rogers" / "conversations.db"


async def versions(path: Path) -> list[tuple[int, str, str]]:
    async with aiosqlite.connect(path) as db, db.execute("SELECT * FROM schema_migrations ORDER BY version") as cur:
        return [tuple(row) for row in await cur.fetchall()]


async def test_version_1_database_is_upgraded_without_losing_data(tmp_path: Path) -> None:
    path = db_file(tmp_path)
    path.parent.mkdir(parents=True)
    old = Envelope(
        sender="user.alice",
        recipient="hopper",
        kind=Kind.REQUEST,
        conversation_id="old-conversation",
        content=[ProsePart(text="remember the blue elephant")],
    )
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, MIGRATIONS[:1]) == 1
        await db.execute(
            "INSERT INTO messages (id, conversation_id, sender, recipient, kind, created_at, stored_at, text, envelope)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                old.id,
                old.conversation_id,
                old.sender,
                old.recipient,
                "request",
                timestamp(old.created_at),
                timestamp(old.created_at),
                old.text(),
                old.model_dump_json(),
            ),
        )
    assert [v[:2] for v in await versions(path)] == [(1, "conversations")]

    async with InMemoryBus() as bus:
        rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
        await rogers.start()
        try:
            assert (await call(bus, "stats"))["schema_version"] == LATEST_VERSION
            history = await call(bus, "history", {"conversation_id": "old-conversation"})
            assert [m["id"] for m in history["messages"]] == [old.id]
            conversation = await call(bus, "get_conversation", {"conversation_id": "old-conversation"})
            assert {p["address"] for p in conversation["participants"]} == {"user.alice", "hopper"}
            hits = (await call(bus, "search", {"query": "elephant"}))["hits"]  # indexed by migration 2
            assert [h["id"] for h in hits] == [old.id]
            await bus.publish(note("old-conversation", "a new elephant"))
            await call(bus, "sync")
            assert len((await call(bus, "search", {"query": "elephant"}))["hits"]) == 2
        finally:
            await rogers.stop()
    assert [v[:2] for v in await versions(path)] == [(m.version, m.name) for m in MIGRATIONS]


async def test_restart_applies_nothing_twice(tmp_path: Path) -> None:
    kept = note("c1", "still here")
    async with InMemoryBus() as bus:
        first = Rogers(MadContext(bus=bus, data_dir=tmp_path))
        await first.start()
        await bus.publish(kept)
        await call(bus, "sync")
        await first.stop()
    applied = await versions(db_file(tmp_path))
    async with InMemoryBus() as bus:
        second = Rogers(MadContext(bus=bus, data_dir=tmp_path))
        await second.start()
        try:
            history = await call(bus, "history", {"conversation_id": "c1"})
            assert [m["id"] for m in history["messages"]] == [kept.id]
        finally:
            await second.stop()
    assert await versions(db_file(tmp_path)) == applied


async def test_a_failing_migration_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    broken = Migration(
        LATEST_VERSION + 1, "broken", "CREATE TABLE half_done (a INTEGER);\nSELECT * FROM no_such_table;\n"
    )
    async with aiosqlite.connect(tmp_path / "x.db", isolation_level=None) as db:
        assert await migrate(db) == LATEST_VERSION
        with pytest.raises(MigrationError, match=rf"migration {LATEST_VERSION + 1} \(broken\) failed"):
            await migrate(db, [*MIGRATIONS, broken])
        async with db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'") as cur:
            assert await cur.fetchone() is None
        async with db.execute("SELECT max(version) FROM schema_migrations") as cur:
            assert (await cur.fetchone())[0] == LATEST_VERSION


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.db", isolation_level=None) as db:
        await migrate(db)
        await db.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2100-01-01T00:00:00.000Z')")
        with pytest.raises(
            MigrationError, match=rf"rogers schema version 99 is newer than this code supports \({LATEST_VERSION}\)"
        ):
            await migrate(db)


def test_statements_split_without_breaking_triggers() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (a);\n"
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    )
    statements = split_statements(script)
    assert len(statements) == 2 and statements[1].endswith("END;")
    with pytest.raises(MigrationScriptError, match="incomplete"):
        split_statements("CREATE TABLE t (a);\nCREATE TABLE u (b\n")
