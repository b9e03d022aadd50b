"""The shared SQLite plumbing: private files, WAL connections, transactions, versioned migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mads.core.sqlite import Migration, migrate, open_db, open_readonly, prepare_db_file, write_transaction

V1 = Migration(1, "a", "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);")
V2 = Migration(2, "b", "CREATE TABLE b (y TEXT);")


class StoreError(Exception):
    pass


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as raw:
        return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_new_file_and_its_wal_are_private_and_a_loose_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store.db"
    db = await open_db(path)
    try:
        async with db.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone()) == ("wal",)
        await db.execute("CREATE TABLE t (x)")
        await db.execute("INSERT INTO t VALUES (1)")
        assert _mode(path.parent) == 0o700
        assert _mode(path) == 0o600
        assert _mode(path.with_name("store.db-wal")) == 0o600
    finally:
        await db.close()
    path.chmod(0o644)
    prepare_db_file(path)
    assert _mode(path) == 0o600


async def test_readonly_connection_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = await open_db(path)
    await migrate(db, [V1], error=StoreError, label="test")
    await db.close()
    ro = await open_readonly(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await ro.execute("INSERT INTO a VALUES (2)")
    finally:
        await ro.close()


@pytest.mark.parametrize("autocommit", [True, False])
async def test_migrations_apply_once_in_order_and_newer_schema_is_refused(tmp_path: Path, autocommit: bool) -> None:
    path = tmp_path / "store.db"
    db = await open_db(path, autocommit=autocommit)
    try:
        assert await migrate(db, [V1], error=StoreError, label="test") == 1
        assert await migrate(db, [V1, V2], error=StoreError, label="test") == 2
        assert await migrate(db, [V1, V2], error=StoreError, label="test") == 2
        with pytest.raises(StoreError, match=r"test schema version 2 is newer than this code supports \(1\)"):
            await migrate(db, [V1], error=StoreError, label="test")
    finally:
        await db.close()
    assert {"a", "b", "schema_migrations"} <= _tables(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [(1,), (2,)]
        assert raw.execute("SELECT COUNT(*) FROM a").fetchone() == (1,)


async def test_failing_migration_leaves_the_previous_whole_version(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = await open_db(path)
    try:
        await migrate(db, [V1], error=StoreError, label="test")
        broken = Migration(2, "broken", "CREATE TABLE c (z INTEGER); INSERT INTO nowhere VALUES (1);")
        with pytest.raises(StoreError, match=r"test: migration 2 \(broken\) failed: no such table: nowhere"):
            await migrate(db, [V1, broken], error=StoreError, label="test")
        assert not db.in_transaction
    finally:
        await db.close()
    assert "c" not in _tables(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)


async def test_write_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = await open_db(path)
    try:
        await migrate(db, [V1], error=StoreError, label="test")
        async with write_transaction(db):
            await db.execute("INSERT INTO a VALUES (2)")
        with pytest.raises(ValueError, match="refused"):
            async with write_transaction(db):
                await db.execute("INSERT INTO a VALUES (3)")
                raise ValueError("refused")
        assert not db.in_transaction
        async with db.execute("SELECT x FROM a ORDER BY x") as cur:
            assert [r[0] for r in await cur.fetchall()] == [1, 2]
    finally:
        await db.close()
