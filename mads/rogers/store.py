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
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from mads.core import ledger
from mads.core.sqlite import ThreadConnection, prepare_db_file, raise_if_storage_fault, rollback_now
from mads.rogers.migrations import MIGRATIONS, Migration, current_version, migrate
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
    """One envelope as stored: indexed columns, its prose for search and its full JSON.

    ``checksum`` is computed when the record is made (Rogers makes them in a thread, so the
    hashing stays off the event loop); it is never given.
    """

    id: str
    conversation_id: str | None
    sender: str
    recipient: str
    kind: str
    correlation_id: str | None
    created_at: str
    text: str
    envelope_json: str
    checksum: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "checksum", _record_checksum(self))


class StoreError(Exception):
    """The store is not open or the database refused an operation."""


class StoreDamaged(StoreError):
    """Part of the file cannot be read; names the file, never what it holds."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        """The damage without the path (for /healthz and error bodies, which never show server paths)."""
        super().__init__(f"{path} is damaged: {what}; run `ecosystem.py storage check`")


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, conversation_id, sender, recipient, kind, correlation_id, created_at, stored_at,"
    " text, envelope, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
INSERT_CHUNK = 512
"""Most rows one INSERT statement carries (11 parameters each); a batch up to this size is one statement."""


@lru_cache(maxsize=64)
def _insert_messages(rows: int) -> str:
    """One INSERT of ``rows`` messages (multi-row VALUES, inserted in the order given).

    One statement for a batch rather than ``executemany`` (one step per row): SQLite runs the
    whole batch — triggers, full-text index — in one step with the GIL released, instead of
    handing the GIL back and forth with the event loop for every row, which a busy loop
    stretches to milliseconds per row.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return _INSERT_MESSAGE.replace("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)


_MESSAGE_COLUMNS = "id, conversation_id, sender, recipient, kind, correlation_id, created_at, text, envelope, checksum"
_BACKFILL_CHUNK = 2000


def message_checksum(
    message_id: object,
    conversation_id: object,
    sender: object,
    recipient: object,
    kind: object,
    correlation_id: object,
    created_at: object,
    text: object,
    envelope: object,
) -> str:
    """SHA-256 (hex) over a message's stored fields, in order, as compact JSON."""
    body = json.dumps(
        [message_id, conversation_id, sender, recipient, kind, correlation_id, created_at, text, envelope],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def _record_checksum(r: MessageRecord) -> str:
    """The checksum of a record's stored fields (see :func:`message_checksum`)."""
    return message_checksum(
        r.id, r.conversation_id, r.sender, r.recipient, r.kind, r.correlation_id, r.created_at, r.text, r.envelope_json
    )


_CONVERSATION_COLUMNS = "id, title, created_at, updated_at, created_by, message_count, owner"


class ConversationStore:
    """Rogers's database file. ``open`` migrates it; ``append`` is the only message write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._appender: ThreadConnection | None = None
        """The connection that appends messages (the hot path): a whole batch per trip to its thread."""
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._stored = 0
        """Messages stored (``max(seq)``): read at open, then counted by :meth:`encode_and_append`."""
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
            before = await current_version(self._writer)
            self.schema_version = await migrate(self._writer, migrations)
            if before < 5 <= self.schema_version:
                await self._backfill_checksums()
            self._stored = int(await _scalar(self._writer, "SELECT coalesce(max(seq), 0) FROM messages"))
            self._appender = await ThreadConnection.open(
                self.path,
                pragmas=[f"busy_timeout = {BUSY_TIMEOUT_MS}", "synchronous = FULL", "foreign_keys = ON"],
                name="rogers-append",
            )
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await _pragma(self._reader, f"busy_timeout = {BUSY_TIMEOUT_MS}")
            await _pragma(self._reader, "query_only = ON")
        except BaseException:
            await self.close()
            raise
        self.path.chmod(0o600)

    async def _backfill_checksums(self) -> None:
        """Give rows stored before checksums existed theirs, a chunk per transaction."""
        conn = self.writer
        while True:
            async with conn.execute(
                f"SELECT seq, {_MESSAGE_COLUMNS} FROM messages WHERE checksum IS NULL LIMIT ?", (_BACKFILL_CHUNK,)
            ) as cursor:
                rows = list(await cursor.fetchall())
            if not rows:
                return
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.executemany(
                    "UPDATE messages SET checksum = ? WHERE seq = ?",
                    [(message_checksum(*row[1:10]), row[0]) for row in rows],
                )
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise

    async def close(self) -> None:
        for conn in (self._reader, self._appender, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = self._appender = None

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("the conversation store is not open")
        return self._writer

    @property
    def appender(self) -> ThreadConnection:
        if self._appender is None:
            raise StoreError("the conversation store is not open")
        return self._appender

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("the conversation store is not open")
        return self._reader

    # ---- writes ------------------------------------------------------------------------

    async def append(self, records: Sequence[MessageRecord]) -> int:
        """Store a batch in one transaction (ids already stored are ignored); return the message count."""
        _, count = await self.encode_and_append(lambda: records)
        return count

    async def encode_and_append(
        self, encode: Callable[[], Sequence[MessageRecord]]
    ) -> tuple[Sequence[MessageRecord], int]:
        """Make a batch's records with ``encode()`` and store them in one transaction, both in the appending
        connection's thread: one trip there and back per batch, one fsync at the commit. Returns the
        records and the number of messages stored in all."""
        async with self._write_lock:
            records, inserted = await self.appender.run(_append_now, encode, INSERT_CHUNK)
            # seq is the rowid, and nothing deletes messages: every inserted row takes max(seq) + 1.
            self._stored += inserted
            return records, self._stored

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
        found = await self.reader.execute_fetchall(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        )
        row = next(iter(found), None)
        if row is None:
            return None
        conversation = _conversation(row)
        if participants:
            await self._fill_participants([conversation])
        return conversation

    async def _fill_participants(self, conversations: Sequence[Conversation]) -> None:
        """Set each conversation's participants (in order of first appearance) with one query."""
        by_id = {c.id: c for c in conversations}
        for conversation in conversations:
            conversation.participants = []
        if not by_id:
            return
        marks = ", ".join("?" * len(by_id))
        rows = await self.reader.execute_fetchall(
            "SELECT conversation_id, address, first_seen, last_seen, message_count FROM participants"
            f" WHERE conversation_id IN ({marks}) ORDER BY conversation_id, first_seen, address",
            list(by_id),
        )
        for cid, address, first, last, count in rows:
            participant = Participant(address=address, first_seen=first, last_seen=last, message_count=count)
            by_id[cid].participants.append(participant)  # type: ignore[union-attr]

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
        await self._fill_participants(page)
        next_cursor = encode_conversation_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return ConversationPage(conversations=page, next_cursor=next_cursor)

    async def history(
        self, conversation_id: str, cursor: str | None, limit: int, direction: Literal["forward", "backward"]
    ) -> MessagePage:
        """Keyset paging by message id: each page starts strictly after the previous page's last id.

        Every row's checksum is verified: a row that fails it, or cannot be read at all (a damaged
        page of the file), comes back as ``damaged`` with only its id, and the rest of the page is
        returned; one damaged row never makes a conversation unreadable.
        """
        forward = direction == "forward"
        where = "conversation_id = ?"
        params: list[Any] = [conversation_id]
        if cursor is not None:
            where += " AND id > ?" if forward else " AND id < ?"
            params.append(cursor)
        order = f"ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?"
        params.append(limit + 1)
        try:
            async with self.reader.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where} {order}", params
            ) as result:
                rows: list[tuple[Any, ...] | str] = list(await result.fetchall())
        except sqlite3.DatabaseError:
            rows = await self._rows_one_by_one(where, order, params)
        messages = await asyncio.to_thread(_messages, rows[:limit])
        next_cursor = messages[-1].id if len(rows) > limit else None
        return MessagePage(
            conversation_id=conversation_id, direction=direction, messages=messages, next_cursor=next_cursor
        )

    async def _rows_one_by_one(self, where: str, order: str, params: list[Any]) -> list[tuple[Any, ...] | str]:
        """The page read through the (conversation, id) index, each row fetched alone: a row that cannot
        be read is given as its id only. If even the index cannot be read, the store is damaged there."""
        try:
            async with self.reader.execute(
                f"SELECT id FROM messages INDEXED BY messages_conversation WHERE {where} {order}", params
            ) as result:
                ids = [row[0] for row in await result.fetchall()]
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(self.path, "the conversation's index cannot be read") from exc
        rows: list[tuple[Any, ...] | str] = []
        for message_id in ids:
            try:
                async with self.reader.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
                ) as result:
                    row = await result.fetchone()
            except sqlite3.DatabaseError:
                row = None
            rows.append(tuple(row) if row is not None else str(message_id))
        return rows

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

    async def claim_key(self, owner: str, key: str, conversation_id: str, message_id: str) -> tuple[str, str]:
        """Record ``key`` for ``message_id`` unless the owner used it before; return the (conversation, message)
        the key stands for now."""
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute(
                    "INSERT INTO idempotency_keys (owner, key, conversation_id, message_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, key) DO NOTHING",
                    (owner, key, conversation_id, message_id, now()),
                )
                async with conn.execute(
                    "SELECT conversation_id, message_id FROM idempotency_keys WHERE owner = ? AND key = ?", (owner, key)
                ) as cursor:
                    row = await cursor.fetchone()
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
        assert row is not None
        return str(row[0]), str(row[1])

    async def reassign_key(self, owner: str, key: str, message_id: str) -> None:
        """The message a key stood for was never stored (refused): the key now stands for ``message_id``."""
        async with self._write_lock:
            await self.writer.execute(
                "UPDATE idempotency_keys SET message_id = ?, created_at = ? WHERE owner = ? AND key = ?",
                (message_id, now(), owner, key),
            )

    async def reply_to(self, message_id: str) -> tuple[str, str] | None:
        """The stored reply (or error) answering ``message_id``: its kind and envelope JSON."""
        async with self.reader.execute(
            "SELECT kind, envelope, checksum, id, conversation_id, sender, recipient, correlation_id, created_at, text"
            " FROM messages WHERE correlation_id = ? AND kind IN ('reply', 'error') ORDER BY seq LIMIT 1",
            (message_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        kind, envelope, checksum, mid, cid, sender, recipient, corr, created, text = row
        if _damaged((mid, cid, sender, recipient, kind, corr, created, text, envelope, checksum)):
            raise StoreDamaged(self.path, f"the stored reply {mid} fails its checksum")
        return str(kind), str(envelope)

    async def conversation_tail(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        """(seq, checksum) of the conversation's messages stored after ``after_seq``, in the order stored."""
        async with self.reader.execute(
            "SELECT seq, checksum FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq",
            (conversation_id, after_seq),
        ) as cursor:
            return [(int(seq), str(checksum)) for seq, checksum in await cursor.fetchall()]

    async def stored_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored (committed).

        Asked on the writer, between writes: the reader connection may be inside another handler's
        statement (aiosqlite steps a query and fetches it in separate calls), whose read transaction
        still shows the database as it was before the latest commit — a message just committed would
        look missing, and a durable message would be answered ``storage_unavailable``.
        """
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        sql = f"SELECT id FROM messages WHERE id IN ({marks})"
        async with self._write_lock, self.writer.execute(sql, list(ids)) as cursor:
            return {row[0] for row in await cursor.fetchall()}

    async def integrity_check(self) -> str:
        return str(await _scalar(self.reader, "PRAGMA integrity_check"))


def _append_now(
    conn: sqlite3.Connection, encode: Callable[[], Sequence[MessageRecord]], chunk: int
) -> tuple[Sequence[MessageRecord], int]:
    """:meth:`ConversationStore.encode_and_append` in the connection's thread (blocking).

    Returns the records and how many rows were really inserted (ids already stored are not).
    A batch of up to ``chunk`` rows is one INSERT statement, which SQLite commits on its own
    (autocommit: one atomic transaction, fsynced before the statement returns); a bigger one is
    several statements in one ``BEGIN IMMEDIATE`` transaction. Every trip through the GIL costs
    up to the interpreter's switch interval while the event loop is busy, so there are as few as
    can be: the statement (prepared, stepped) and nothing else.
    """
    records = encode()
    if not records:
        return records, 0
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
            r.checksum,
        )
        for r in records
    ]
    if len(rows) <= chunk:
        return records, conn.execute(_insert_messages(len(rows)), [v for row in rows for v in row]).rowcount
    inserted = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            inserted += conn.execute(_insert_messages(len(part)), [v for row in part for v in row]).rowcount
        conn.execute("COMMIT")
    except BaseException:
        rollback_now(conn)
        raise
    return records, inserted


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


def damaged_messages(path: Path, chunk: int = 5000) -> tuple[int, list[str]]:
    """Read every stored message of ``path`` (read-only) and verify its checksum (blocking: use a thread).

    Returns how many rows were read and the ids of those that fail, plus a note naming the
    sequence number after which rows could not be read at all, if the file is damaged there.
    """
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    checked, bad, last = 0, [], 0
    try:
        while True:
            try:
                rows = conn.execute(
                    f"SELECT seq, {_MESSAGE_COLUMNS} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (last, chunk)
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                bad.append(f"rows after seq {last} cannot be read ({exc})")
                return checked, bad
            if not rows:
                return checked, bad
            for row in rows:
                checked += 1
                if _damaged(row[1:]):
                    bad.append(str(row[1]))
            last = rows[-1][0]
    finally:
        conn.close()


def ledger_differences(path: Path, entries: dict[str, tuple[int, str]]) -> tuple[dict[str, int], list[str]]:
    """Compare what was acknowledged (count and running hash per conversation) with the file (read-only, blocking).

    Returns the conversations missing messages (how many) and those whose first ``count`` messages hash
    differently (rolled back and rewritten, or changed).
    """
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    missing: dict[str, int] = {}
    changed: list[str] = []
    try:
        for conversation_id, (expected, expected_hash) in sorted(entries.items()):
            count, running = 0, ledger.GENESIS
            rows = conn.execute(
                "SELECT checksum FROM messages WHERE conversation_id = ? ORDER BY seq LIMIT ?",
                (conversation_id, expected),
            )
            for (checksum,) in rows:
                count, running = count + 1, ledger.advance(running, str(checksum))
            if count < expected:
                missing[conversation_id] = expected - count
            elif running != expected_hash:
                changed.append(conversation_id)
    finally:
        conn.close()
    return missing, changed


def _damaged(row: Sequence[Any]) -> bool:
    """True when a stored message row does not match its checksum (or has none, or is not valid JSON)."""
    *fields, checksum = row
    if checksum is None or message_checksum(*fields) != checksum:
        return True
    try:
        json.loads(fields[8])
    except (TypeError, ValueError):
        return True
    return False


def _messages(rows: Sequence[tuple[Any, ...] | str]) -> list[Message]:
    """Rows to messages, each verified against its checksum (CPU work: called in a thread).

    A row that fails (or could not be read: given as its id) becomes a ``damaged`` placeholder
    carrying its id only, so no changed or unreadable content is ever returned or echoed.
    """
    messages = []
    for row in rows:
        if isinstance(row, str) or _damaged(row):
            message_id = row if isinstance(row, str) else str(row[0])
            messages.append(_damaged_message(message_id))
            continue
        mid, cid, sender, recipient, kind, corr, created, text, envelope, _ = row
        messages.append(
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
        )
    return messages


def _damaged_message(message_id: str) -> Message:
    return Message(
        id=message_id,
        conversation_id=None,
        sender="",
        recipient="",
        kind="damaged",
        correlation_id=None,
        created_at="",
        text="",
        envelope=None,
        damaged=True,
    )


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
