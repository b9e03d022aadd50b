"""The run log: an append-only SQLite record of every run's steps, outputs, transitions and effects.

Rows are only ever inserted (triggers refuse ``UPDATE`` and ``DELETE``), so the state of a run
is a fold over its entries, and a run read back after ``kill -9`` is exactly what was committed.
An entry with a ``key`` is a *recorded result*: the engine looks it up before doing the work
again (an LLM call, a hook, a guard running tests) and reuses it, which is how a resumed run
avoids repeating completed side effects. Keys are unique per run.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bus.envelope import Principal
from mads.core.sqlite import Migration, migrate, open_db, write_transaction
from mads.core.workflow.definition import WorkflowDefinition


class RunLogError(Exception):
    """The run log cannot be opened or migrated."""


MIGRATIONS = (
    Migration(
        1,
        "runs",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            version INTEGER NOT NULL,
            definition TEXT NOT NULL,
            principal TEXT NOT NULL,
            subject TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE entries (
            run_id TEXT NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            state TEXT,
            key TEXT,
            payload TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE UNIQUE INDEX entries_key ON entries(run_id, key) WHERE key IS NOT NULL;
        CREATE INDEX entries_kind ON entries(kind);
        CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
            BEGIN SELECT RAISE(ABORT, 'the run log is append-only'); END;
        CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
            BEGIN SELECT RAISE(ABORT, 'the run log is append-only'); END;
        CREATE TRIGGER runs_append_only_update BEFORE UPDATE ON runs
            BEGIN SELECT RAISE(ABORT, 'the run log is append-only'); END;
        CREATE TRIGGER runs_append_only_delete BEFORE DELETE ON runs
            BEGIN SELECT RAISE(ABORT, 'the run log is append-only'); END;
        """,
    ),
)

END_KINDS = frozenset({"run_finished", "run_failed", "run_cancelled"})


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    state: str | None
    key: str | None
    payload: dict[str, Any]
    at: str


@dataclass(frozen=True)
class RunRecord:
    id: str
    definition: WorkflowDefinition
    principal: Principal
    subject: str
    data: dict[str, Any]
    created_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class RunLog:
    """One SQLite file of runs and their entries. ``await RunLog.open(path)``; ``close()`` when done."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        # One connection: its transactions must not interleave between coroutines.

    @classmethod
    async def open(cls, path: Path) -> RunLog:
        db = await open_db(path, synchronous="FULL")
        try:
            await migrate(db, MIGRATIONS, error=RunLogError, label="workflow run log")
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def create(
        self, run_id: str, definition: WorkflowDefinition, principal: Principal, subject: str, data: dict[str, Any]
    ) -> RunRecord:
        created = _now()
        async with self._lock, write_transaction(self.db):
            await self.db.execute(
                "INSERT INTO runs (id, workflow, version, definition, principal, subject, data, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    definition.name,
                    definition.version,
                    definition.model_dump_json(),
                    principal.model_dump_json(),
                    subject,
                    json.dumps(data),
                    created,
                ),
            )
        return RunRecord(run_id, definition, principal, subject, data, created)

    async def append(
        self, run_id: str, kind: str, payload: dict[str, Any], *, state: str | None = None, key: str | None = None
    ) -> Entry:
        """Append one entry; a second entry with the same ``key`` raises ``sqlite3.IntegrityError``."""
        at = _now()
        async with self._lock, write_transaction(self.db):
            async with self.db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM entries WHERE run_id = ?", (run_id,)
            ) as cur:
                row = await cur.fetchone()
            seq = int(row[0]) if row else 1
            await self.db.execute(
                "INSERT INTO entries (run_id, seq, kind, state, key, payload, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, seq, kind, state, key, json.dumps(payload), at),
            )
        return Entry(seq, kind, state, key, payload, at)

    async def recorded(self, run_id: str, key: str) -> Entry | None:
        async with self.db.execute(
            "SELECT seq, kind, state, key, payload, at FROM entries WHERE run_id = ? AND key = ?", (run_id, key)
        ) as cur:
            row = await cur.fetchone()
        return _entry(row) if row else None

    async def entries(self, run_id: str) -> list[Entry]:
        async with self.db.execute(
            "SELECT seq, kind, state, key, payload, at FROM entries WHERE run_id = ? ORDER BY seq", (run_id,)
        ) as cur:
            return [_entry(row) for row in await cur.fetchall()]

    async def run(self, run_id: str) -> RunRecord | None:
        async with self.db.execute(
            "SELECT id, definition, principal, subject, data, created_at FROM runs WHERE id = ?", (run_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return RunRecord(
            row[0],
            WorkflowDefinition.model_validate_json(row[1]),
            Principal.model_validate_json(row[2]),
            row[3],
            json.loads(row[4]),
            row[5],
        )

    async def unfinished(self) -> list[str]:
        """Runs with no end entry, oldest first: what a restarted engine resumes."""
        placeholders = ",".join("?" for _ in END_KINDS)
        async with self.db.execute(
            "SELECT id FROM runs WHERE id NOT IN"
            f" (SELECT run_id FROM entries WHERE kind IN ({placeholders})) ORDER BY created_at",
            tuple(END_KINDS),
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def count(self, kind: str, run_id: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM entries WHERE kind = ?" + (" AND run_id = ?" if run_id else "")
        async with self.db.execute(sql, (kind, run_id) if run_id else (kind,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> Entry:
    return Entry(int(row[0]), row[1], row[2], row[3], json.loads(row[4]), row[5])
