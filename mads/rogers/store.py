"""The SQLite store behind Rogers: append-only messages, conversations, participants, FTS5.

Two connections: one writer (every write serialised by a lock, one transaction per
batch) and one reader, so reads run beside a commit under WAL and only ever see
committed rows — what history shows has been made durable.

WAL with ``synchronous=FULL``: each commit fsyncs the WAL, so a message whose batch
has committed survives a power loss or OS crash, not only a killed process (NORMAL
would survive ``kill -9`` but may lose the last commits on power loss). Rogers
acknowledges with ``sync`` only after that commit, and group commit (one transaction
per batch) pays the fsync once per batch rather than once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from mads.core.sqlite import prepare_db_file, raise_if_storage_fault
from mads.rogers.migrations import MIGRATIONS, Migration, migrate
from mads.rogers.schemas import (
    Conversation,
    ConversationPage,
    Message,
    MessagePage,
    Participant,
    SearchHit,
    decode_conversation_cursor,
    encode_conversation_cursor,
)

BUSY_TIMEOUT_MS = 10_000


def timestamp(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL compares times as strings (min/max, ORDER BY)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> str:
    return timestamp(datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One envelope as stored: indexed columns, its prose for search and its full JSON."""

    id: str
    conversation_id: str | None
    sender: str
    recipient: str
    kind: str
    correlation_id: str | None
    created_at: str
    text: str
    envelope_json: str


class StoreError(Exception):
    """The store is not open or the database refused an operation."""


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, conversation_id, sender, recipient, kind, correlation_id, created_at, stored_at,"
    " text, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_MESSAGE_COLUMNS = "id, conversation_id, sender, recipient, kind, correlation_id, created_at, text, envelope"
_CONVERSATION_COLUMNS = "id, title, created_at, updated_at, created_by, message_count, owner"


class ConversationStore:
    """Rogers's database file. ``open`` migrates it; ``append`` is the only message write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self.schema_version = 0

    async def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        """Open (creating and migrating) the file; a full disk or I/O error raises ``StorageUnavailable``."""
        try:
            await self._open(migrations)
        except Exception as exc:
            raise_if_storage_fault(self.path, exc)
            raise

    async def _open(self, migrations: Sequence[Migration]) -> None:
        # The file exists (0600) before SQLite opens it: SQLite gives -wal and -shm the database's mode.
        await asyncio.to_thread(prepare_db_file, self.path)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await _pragma(self._writer, f"busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = await _pragma(self._writer, "journal_mode = WAL")
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot put {self.path.name} in WAL mode (got {mode!r})")
            await _pragma(self._writer, "synchronous = FULL")
            await _pragma(self._writer, "foreign_keys = ON")
            self.schema_version = await migrate(self._writer, migrations)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await _pragma(self._reader, f"busy_timeout = {BUSY_TIMEOUT_MS}")
            await _pragma(self._reader, "query_only = ON")
        except BaseException:
            await self.close()
            raise
        self.path.chmod(0o600)

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("the conversation store is not open")
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the conversation store is not open")
        return self._reader

    # ---- writes ------------------------------------------------------------------------

    async def append(self, records: Sequence[MessageRecord]) -> int:
        """Store a batch in one transaction (ids already stored are ignored); return the message count."""
        stored_at = now()
        rows = [
            (
                r.id,
                r.conversation_id,
                r.sender,
                r.recipient,
                r.kind,
                r.correlation_id,
                r.created_at,
                stored_at,
                r.text,
                r.envelope_json,
            )
            for r in records
        ]
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.executemany(_INSERT_MESSAGE, rows)
                count = await _scalar(conn, "SELECT coalesce(max(seq), 0) FROM messages")
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
        return int(count)

    async def create_conversation(
        self, conversation_id: str, title: str | None, created_by: str | None, owner: str
    ) -> Conversation:
        at = now()
        async with self._write_lock:
            await self.writer.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, created_by, message_count, owner)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                (conversation_id, title, at, at, created_by, owner),
            )
        return Conversation(
            id=conversation_id,
            title=title,
            created_at=at,
            updated_at=at,
            created_by=created_by,
            message_count=0,
            owner=owner,
        )

    # ---- reads -------------------------------------------------------------------------

    async def message_count(self) -> int:
        return int(await _scalar(self.reader, "SELECT coalesce(max(seq), 0) FROM messages"))

    async def conversation_count(self) -> int:
        return int(await _scalar(self.reader, "SELECT count(*) FROM conversations"))

    async def has_message(self, message_id: str) -> bool:
        async with self.reader.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)) as cursor:
            return await cursor.fetchone() is not None

    async def get_conversation(self, conversation_id: str, *, participants: bool = True) -> Conversation | None:
        async with self.reader.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        conversation = _conversation(row)
        if participants:
            async with self.reader.execute(
                "SELECT address, first_seen, last_seen, message_count FROM participants"
                " WHERE conversation_id = ? ORDER BY first_seen, address",
                (conversation_id,),
            ) as cursor:
                conversation.participants = [
                    Participant(address=a, first_seen=f, last_seen=la, message_count=n)
                    for a, f, la, n in await cursor.fetchall()
                ]
        return conversation

    async def list_conversations(self, cursor: str | None, limit: int, owner: str | None = None) -> ConversationPage:
        """Newest first by (created_at, id): keys that never change, so pages neither skip nor repeat.

        ``owner`` limits the list to one owner's conversations (``None``: everyone's).
        """
        sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
        where: list[str] = []
        params: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if cursor is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(decode_conversation_cursor(cursor))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        async with self.reader.execute(sql, params) as result:
            rows = list(await result.fetchall())
        page = [_conversation(row) for row in rows[:limit]]
        next_cursor = encode_conversation_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return ConversationPage(conversations=page, next_cursor=next_cursor)

    async def history(
        self, conversation_id: str, cursor: str | None, limit: int, direction: Literal["forward", "backward"]
    ) -> MessagePage:
        """Keyset paging by message id: each page starts strictly after the previous page's last id."""
        forward = direction == "forward"
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
        params: list[Any] = [conversation_id]
        if cursor is not None:
            sql += " AND id > ?" if forward else " AND id < ?"
            params.append(cursor)
        sql += f" ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?"
        params.append(limit + 1)
        async with self.reader.execute(sql, params) as result:
            rows = list(await result.fetchall())
        messages = await asyncio.to_thread(_messages, rows[:limit])
        next_cursor = messages[-1].id if len(rows) > limit else None
        return MessagePage(
            conversation_id=conversation_id, direction=direction, messages=messages, next_cursor=next_cursor
        )

    async def search(
        self, fts_query: str, conversation_id: str | None, limit: int, owner: str | None = None
    ) -> list[SearchHit]:
        """Best matches first; ``owner`` limits the search to one owner's conversations (``None``: all)."""
        sql = (
            "SELECT m.id, m.conversation_id, m.sender, m.recipient, m.kind, m.created_at,"
            " snippet(messages_fts, 0, '[', ']', '…', 16)"
            " FROM messages_fts JOIN messages AS m ON m.seq = messages_fts.rowid"
            " WHERE messages_fts MATCH ?"
        )
        params: list[Any] = [fts_query]
        if owner is not None:
            sql += " AND m.conversation_id IN (SELECT id FROM conversations WHERE owner = ?)"
            params.append(owner)
        if conversation_id is not None:
            sql += " AND m.conversation_id = ?"
            params.append(conversation_id)
        sql += " ORDER BY rank LIMIT ?"
        params.append(limit)
        async with self.reader.execute(sql, params) as result:
            rows = await result.fetchall()
        return [
            SearchHit(id=i, conversation_id=c, sender=s, recipient=r, kind=k, created_at=t, snippet=snip)
            for i, c, s, r, k, t, snip in rows
        ]

    async def probe(self) -> None:
        """One tiny committed write: raises what the database raises when it cannot write."""
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute(
                    "INSERT INTO store_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    (now(),),
                )
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise

    async def stored_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored (committed and visible to readers)."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        async with self.reader.execute(f"SELECT id FROM messages WHERE id IN ({marks})", list(ids)) as cursor:
            return {row[0] for row in await cursor.fetchall()}

    async def integrity_check(self) -> str:
        return str(await _scalar(self.reader, "PRAGMA integrity_check"))


def _conversation(row: sqlite3.Row | tuple[Any, ...]) -> Conversation:
    cid, title, created_at, updated_at, created_by, count, owner = row
    return Conversation(
        id=cid,
        title=title,
        created_at=created_at,
        updated_at=updated_at,
        created_by=created_by,
        message_count=count,
        owner=owner,
    )


def _messages(rows: Sequence[tuple[Any, ...]]) -> list[Message]:
    """Rows to messages, parsing each stored envelope (CPU work: called in a thread)."""
    return [
        Message(
            id=mid,
            conversation_id=cid,
            sender=sender,
            recipient=recipient,
            kind=kind,
            correlation_id=corr,
            created_at=created,
            text=text,
            envelope=json.loads(envelope),
        )
        for mid, cid, sender, recipient, kind, corr, created, text, envelope in rows
    ]


async def _pragma(conn: aiosqlite.Connection, pragma: str) -> Any:
    async with conn.execute(f"PRAGMA {pragma}") as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


async def _rollback(conn: aiosqlite.Connection) -> None:
    """Roll back an open transaction; never raises (after a full disk SQLite may have rolled back already),
    so the error the caller reports is the one that made the write fail."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await conn.execute("ROLLBACK")
