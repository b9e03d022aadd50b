"""File claims: a writer claims a file before writing it; a conflicting claim is refused, naming the holder.

A claim belongs to a *holder* (an attempt) inside a *group* (the task the attempt works on;
by default the holder alone). Holders of one group do not exclude each other (parallel attempts
of one task each write on their own branch); another group's claim on the same file is a
conflict. Every claim has an expiry: an expired claim no longer excludes anyone and is recorded
as released by ``timeout``. Claims are released by holder or by group with a reason
(``completed``, ``failed``, ``cancelled``, ``discarded``, ``timeout``), and the release is kept.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosqlite
from pydantic import BaseModel, ConfigDict

from mads.core.sqlite import Migration, migrate, open_db, write_transaction


class ClaimStoreError(Exception):
    pass


class ClaimConflict(Exception):
    """The file is claimed by another group; ``holder`` names who holds it."""

    def __init__(self, project: str, path: str, holder: str, group: str) -> None:
        super().__init__(f"{project}:{path} is claimed by {holder} (task {group})")
        self.holder = holder
        self.group = group


MIGRATIONS = (
    Migration(
        1,
        "claims",
        """
        CREATE TABLE claims (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project TEXT NOT NULL,
            path TEXT NOT NULL,
            holder TEXT NOT NULL,
            grp TEXT NOT NULL,
            claimed_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            released_at REAL,
            release_reason TEXT
        );
        CREATE INDEX claims_active ON claims(project, path) WHERE released_at IS NULL;
        CREATE INDEX claims_holder ON claims(holder) WHERE released_at IS NULL;
        """,
    ),
)


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    path: str
    holder: str
    group: str
    claimed_at: float
    expires_at: float


class ClaimStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        # One connection: its transactions must not interleave between coroutines.

    @classmethod
    async def open(cls, path: Path) -> ClaimStore:
        db = await open_db(path)
        try:
            await migrate(db, MIGRATIONS, error=ClaimStoreError, label="horace claims")
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def _expire(self, now: float) -> int:
        cursor = await self.db.execute(
            "UPDATE claims SET released_at = ?, release_reason = 'timeout'"
            " WHERE released_at IS NULL AND expires_at <= ?",
            (now, now),
        )
        return cursor.rowcount

    async def claim(self, project: str, path: str, holder: str, *, group: str | None = None, ttl_s: float) -> Claim:
        """Claim ``path`` for ``holder`` (renewing its own claim), or raise :class:`ClaimConflict`."""
        group = group or holder
        now = time.time()
        async with self._lock, write_transaction(self.db):
            await self._expire(now)
            async with self.db.execute(
                "SELECT id, holder, grp FROM claims WHERE project = ? AND path = ? AND released_at IS NULL",
                (project, path),
            ) as cur:
                rows = await cur.fetchall()
            for _, other, other_group in rows:
                if other_group != group:
                    raise ClaimConflict(project, path, other, other_group)
            mine = [row[0] for row in rows if row[1] == holder]
            if mine:
                await self.db.execute("UPDATE claims SET expires_at = ? WHERE id = ?", (now + ttl_s, mine[0]))
            else:
                await self.db.execute(
                    "INSERT INTO claims (project, path, holder, grp, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (project, path, holder, group, now, now + ttl_s),
                )
        return Claim(project=project, path=path, holder=holder, group=group, claimed_at=now, expires_at=now + ttl_s)

    async def holds(self, project: str, path: str, holder: str) -> bool:
        async with self.db.execute(
            "SELECT 1 FROM claims WHERE project = ? AND path = ? AND holder = ? AND released_at IS NULL"
            " AND expires_at > ?",
            (project, path, holder, time.time()),
        ) as cur:
            return await cur.fetchone() is not None

    async def release(self, *, holder: str | None = None, group: str | None = None, reason: str) -> int:
        """Release every active claim of ``holder`` or of ``group``; returns how many."""
        if (holder is None) == (group is None):
            raise ValueError("release by holder or by group, exactly one")
        column, value = ("holder", holder) if holder is not None else ("grp", group)
        async with self._lock, write_transaction(self.db):
            cursor = await self.db.execute(
                f"UPDATE claims SET released_at = ?, release_reason = ? WHERE {column} = ? AND released_at IS NULL",
                (time.time(), reason, value),
            )
        return cursor.rowcount

    async def expire(self) -> int:
        """Release expired claims (reason ``timeout``); returns how many."""
        async with self._lock, write_transaction(self.db):
            return await self._expire(time.time())

    async def active(self, project: str | None = None) -> list[Claim]:
        sql = "SELECT project, path, holder, grp, claimed_at, expires_at FROM claims WHERE released_at IS NULL"
        sql += " AND expires_at > ?"
        params: tuple[object, ...] = (time.time(),)
        if project is not None:
            sql += " AND project = ?"
            params += (project,)
        async with self.db.execute(sql + " ORDER BY id", params) as cur:
            rows = await cur.fetchall()
        return [Claim(project=r[0], path=r[1], holder=r[2], group=r[3], claimed_at=r[4], expires_at=r[5]) for r in rows]

    async def released(self, holder: str) -> list[str]:
        """The release reasons of ``holder``'s claims (for trails and tests)."""
        async with self.db.execute(
            "SELECT release_reason FROM claims WHERE holder = ? AND released_at IS NOT NULL ORDER BY id", (holder,)
        ) as cur:
            return [row[0] for row in await cur.fetchall()]
