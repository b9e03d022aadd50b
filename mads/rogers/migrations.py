"""Versioned schema migrations for Rogers's database.

Each migration is a file ``sql/NNN_name.sql``. They are applied in order, each in its
own ``BEGIN IMMEDIATE`` transaction together with its row in ``schema_migrations``, so
a crash leaves the database at a whole version, and starting again applies only what
is missing. A database newer than this code is refused rather than misread.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

SQL_DIR = Path(__file__).with_name("sql")
_FILE_NAME = re.compile(r"^(\d{3})_([a-z][a-z0-9_]*)\.sql$")


class MigrationError(Exception):
    """The database cannot be brought to this code's schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements (triggers' inner ``;`` included) using SQLite's own parser."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if _has_code(statement):
                statements.append(statement)
            buffer = ""
    if _has_code(buffer):
        raise MigrationError(f"incomplete SQL statement at the end of the script: {buffer.strip()[:80]!r}")
    return statements


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def load_migrations(directory: Path = SQL_DIR) -> tuple[Migration, ...]:
    """Every ``NNN_name.sql`` in ``directory``, checked to be numbered 1, 2, 3… without gaps."""
    found = []
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.version} ({migration.name}) found where {expected} was expected"
            )
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = load_migrations()
"""Read once at import: the files ship with the code and never change while it runs."""

LATEST_VERSION = MIGRATIONS[-1].version


async def current_version(conn: aiosqlite.Connection) -> int:
    await _ensure_table(conn)
    async with conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the missing migrations in order; return the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): transactions are explicit.
    """
    await _ensure_table(conn)
    latest = migrations[-1].version if migrations else 0
    version = await current_version(conn)
    if version > latest:
        raise MigrationError(f"database schema is at version {version}, newer than this code's {latest}")
    for migration in migrations:
        if migration.version <= version:
            continue
        await _apply(conn, migration)
        version = migration.version
    return version


async def _ensure_table(conn: aiosqlite.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )


async def _apply(conn: aiosqlite.Connection, migration: Migration) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have applied it while we waited for the write lock.
        async with conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)) as cursor:
            if await cursor.fetchone() is not None:
                await conn.execute("COMMIT")
                return
        for statement in migration.statements():
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (migration.version, migration.name),
        )
        await conn.execute("COMMIT")
    except BaseException as exc:
        await conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise MigrationError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
        raise
