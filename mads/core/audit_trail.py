"""Append-only, hash-chained audit trail in SQLite.

Each record's hash is SHA-256 over the canonical JSON of the record (seq, time, event_type,
actor, action, outcome, details, prev_hash), and prev_hash is the previous record's hash
(64 zeros for the first), so editing, deleting, inserting or reordering records breaks the
chain at the first affected record. A separate head row (latest seq and hash), written in
the same transaction as each append, exposes truncation of the tail.

Limits, honestly: the chain uses no secret key, so someone who can write the database file
can recompute every hash and the head and rewrite history undetectably. Detecting that
needs the head anchored outside the database: export `head()` periodically to another
system and pass it back to `verify(expected_head=...)`.

Sensitive detail values (tokens, secret values) are replaced by HMAC-SHA256 under a
per-install key, so equal values can be matched with `hmac_value()` but not read. The key
lives in a 0600 file next to the database rather than inside it: a copy of the database
alone is then not enough to brute-force low-entropy values. Paths stay in clear, as in Vault.
Every other string in the details (keys too), the actor and the action then pass through
`redact` (McNamara gives it the process's secret redactor), so a known secret value reported
under an innocent key is stored as [REDACTED]; HMACs are taken first, over the real values.

Appends are durable (committed with synchronous=FULL) before `append` returns; any failure
raises AuditWriteError so the caller can fail the request it was auditing (fail closed). No gap
is silent: every append that fails is counted, and the next append that succeeds first writes an
``audit.gap`` record (in the same transaction) saying how many records were lost, when, and of
which types; ``verify`` lists every gap record, so an intact chain with holes says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from mads.core.sqlite import Migration, migrate, open_db, open_readonly, write_transaction

GENESIS_HASH = "0" * 64
HMAC_PREFIX = "hmac-sha256:"
HMAC_KEY_LEN = 32
DEFAULT_SENSITIVE_KEYS: frozenset[str] = frozenset(
    {"token", "secret", "secret_value", "value", "password", "passphrase", "api_key", "authorization", "cookie"}
)
_EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"

_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "audit_log",
        """
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            event_type TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_log_event_type ON audit_log (event_type, seq);
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, printf('%.64d', 0));
        """,
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1].version


class AuditError(Exception):
    """Base of the audit trail's deliberate errors."""


class AuditWriteError(AuditError):
    """The record could not be made durable; the audited request must fail."""


class AuditKeyError(AuditError):
    """The HMAC key file has the wrong length or is readable by group/others."""


class AuditEventType(StrEnum):
    """Known event types. Any dotted lowercase name (e.g. 'bus.drop') is also accepted."""

    AUTH_LOGIN = "auth.login"
    AUTH_TOKEN_USE = "auth.token_use"
    AUTH_DENIED = "auth.denied"
    SECRET_READ = "secret.read"
    SECRET_WRITE = "secret.write"
    SECRET_DENIED = "secret.denied"
    TOOL_CALL = "tool.call"
    VALIDATION_FAILURE = "validation.failure"
    MAD_FAULT = "mad.fault"
    SANDBOX_VIOLATION = "sandbox.violation"
    LLM_CALL = "llm.call"
    CONFIG_CHANGE = "config.change"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
    ERROR = "error"


class AuditEvent(BaseModel):
    """What a caller reports. `hmac_keys` name detail keys (at any depth) to HMAC, on top of
    DEFAULT_SENSITIVE_KEYS; they are not stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: str = Field(pattern=_EVENT_TYPE_PATTERN, max_length=100)
    actor: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=200)
    outcome: AuditOutcome
    details: dict[str, JsonValue] = Field(default_factory=dict)
    hmac_keys: frozenset[str] = frozenset()

    @field_validator("details")
    @classmethod
    def _finite_json(cls, v: dict[str, JsonValue]) -> dict[str, JsonValue]:
        try:
            canonical_json(v)
        except ValueError as exc:
            raise ValueError(f"details must be finite JSON: {exc}") from None
        return v


class AuditRecord(BaseModel):
    """A stored, chained record."""

    model_config = ConfigDict(frozen=True)
    seq: int
    time: datetime
    event_type: str
    actor: str
    action: str
    outcome: AuditOutcome
    details: dict[str, JsonValue]
    prev_hash: str
    hash: str


class ChainHead(BaseModel):
    model_config = ConfigDict(frozen=True)
    seq: int
    hash: str


GAP_EVENT_TYPE = "audit.gap"


class Gap(BaseModel):
    """Records that could not be written (the store refused them), as the gap record tells it."""

    model_config = ConfigDict(frozen=True)
    seq: int
    lost: int
    first_at: str
    last_at: str
    event_types: dict[str, int]


class VerifyReport(BaseModel):
    """Result of walking the chain; on failure names the first bad record and why.

    ``gaps`` lists the ``audit.gap`` records: the chain is intact (``ok``) but records were lost there.
    """

    model_config = ConfigDict(frozen=True)
    ok: bool
    records_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    head: ChainHead
    gaps: list[Gap] = Field(default_factory=list)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _time_text(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(
    seq: int, time: str, event_type: str, actor: str, action: str, outcome: str, details: str, prev_hash: str
) -> str:
    """SHA-256 over the canonical JSON of the record; `details` is its canonical JSON text."""
    body = {
        "seq": seq,
        "time": time,
        "event_type": event_type,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "details": json.loads(details),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def load_or_create_hmac_key(path: Path) -> bytes:
    """Create a 32-byte key with mode 0600 on first use; refuse bad length or permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, os.urandom(HMAC_KEY_LEN))
            os.fsync(fd)
        finally:
            os.close(fd)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        raise AuditKeyError(
            f"audit HMAC key {path} must be a regular file not accessible by group or others "
            f"(mode is {stat.S_IMODE(st.st_mode):04o}; chmod 600)"
        )
    with open(path, "rb") as fh:
        key = fh.read(HMAC_KEY_LEN + 1)
    if len(key) != HMAC_KEY_LEN:
        raise AuditKeyError(f"audit HMAC key {path} must hold exactly {HMAC_KEY_LEN} bytes, got {len(key)}")
    return key


class AuditTrail:
    """The hash-chained log. `async with AuditTrail(path) as trail:` or open()/close()."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        hmac_key_path: str | os.PathLike[str] | None = None,
        busy_timeout_ms: int = 5000,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.hmac_key_path = (
            Path(hmac_key_path)
            if hmac_key_path is not None
            else self.db_path.with_name(self.db_path.name + ".hmac-key")
        )
        if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) or busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be an integer >= 0, got {busy_timeout_ms!r}")
        self._busy_timeout_ms = busy_timeout_ms
        self._redact: Callable[[str], str] = redact if redact is not None else _unchanged
        self._db: aiosqlite.Connection | None = None
        self._key: bytes | None = None
        self._lock = asyncio.Lock()
        self._lost: dict[str, int] = {}
        self._lost_first: str | None = None
        self._lost_last: str | None = None

    @property
    def lost(self) -> int:
        """Appends that failed since the last gap record was written (they will be in the next one)."""
        return sum(self._lost.values())

    async def __aenter__(self) -> AuditTrail:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._db is not None:
            return
        self._key = await asyncio.to_thread(load_or_create_hmac_key, self.hmac_key_path)
        self._db = await open_db(self.db_path, synchronous="FULL", busy_timeout_ms=self._busy_timeout_ms)
        try:
            await migrate(self._db, _MIGRATIONS, error=AuditError, label="audit")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def hmac_value(self, value: JsonValue | bytes) -> str:
        """'hmac-sha256:<hex>' of a value (strings as UTF-8, others as canonical JSON)."""
        if self._key is None:
            raise AuditError("audit trail is not open; call open() first")
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            data = canonical_json(value).encode("utf-8")
        return HMAC_PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def _protect(self, value: JsonValue, keys: frozenset[str]) -> JsonValue:
        """HMAC the values under sensitive keys; redact every other string (and every key)."""
        if isinstance(value, dict):
            return {
                self._redact(k): self.hmac_value(v) if k in keys and v is not None else self._protect(v, keys)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._protect(v, keys) for v in value]
        if isinstance(value, str):
            return self._redact(value)
        return value

    async def append(self, event: AuditEvent) -> AuditRecord:
        """Chain and commit one record; raises AuditWriteError if it is not durable."""
        details = self._protect(event.details, DEFAULT_SENSITIVE_KEYS | event.hmac_keys)
        actor, action = self._redact(event.actor), self._redact(event.action)
        try:
            details_text = canonical_json(details)
        except ValueError as exc:
            raise ValueError(f"details must be finite JSON: {exc}") from None
        async with self._lock:
            try:
                seq, when, prev_hash, digest = await self._write(event, actor, action, details_text)
            except AuditWriteError:
                self._note_lost(event.event_type)
                raise
        return AuditRecord(
            seq=seq,
            time=when,
            event_type=event.event_type,
            actor=actor,
            action=action,
            outcome=event.outcome,
            details=json.loads(details_text),
            prev_hash=prev_hash,
            hash=digest,
        )

    def _note_lost(self, event_type: str) -> None:
        now = _time_text(datetime.now(UTC))
        self._lost[event_type] = self._lost.get(event_type, 0) + 1
        self._lost_first = self._lost_first or now
        self._lost_last = now

    async def _write(
        self, event: AuditEvent, actor: str, action: str, details_text: str
    ) -> tuple[int, datetime, str, str]:
        """Chain and commit the record, preceded by a gap record if appends were lost (one transaction)."""
        db = self._db
        if db is None:
            raise AuditWriteError(f"audit trail {self.db_path} is not open")
        try:
            async with write_transaction(db):
                async with db.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
                    row = await cur.fetchone()
                if row is None:
                    raise AuditWriteError("audit head row is missing: the trail was tampered with")
                seq, prev_hash = int(row[0]), str(row[1])
                if self._lost:
                    gap = {
                        "lost": self.lost,
                        "first_at": self._lost_first,
                        "last_at": self._lost_last,
                        "event_types": dict(sorted(self._lost.items())),
                    }
                    seq, prev_hash, _ = await self._insert(
                        db, seq, prev_hash, GAP_EVENT_TYPE, "audit", "records_lost", "failure", canonical_json(gap)
                    )
                event_fields = (event.event_type, actor, action, event.outcome.value, details_text)
                seq, digest, when = await self._insert(db, seq, prev_hash, *event_fields)
                await db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
        except (sqlite3.Error, ValueError, AuditWriteError) as exc:
            if isinstance(exc, AuditWriteError):
                raise
            raise AuditWriteError(f"could not write audit record to {self.db_path}: {exc}") from exc
        self._lost.clear()
        self._lost_first = self._lost_last = None
        return seq, when, prev_hash, digest

    @staticmethod
    async def _insert(
        db: aiosqlite.Connection,
        last_seq: int,
        prev_hash: str,
        event_type: str,
        actor: str,
        action: str,
        outcome: str,
        details_text: str,
    ) -> tuple[int, str, datetime]:
        """Insert the record after ``last_seq``; return its seq, hash and time."""
        seq = last_seq + 1
        when = datetime.now(UTC)
        fields = (seq, _time_text(when), event_type, actor, action, outcome, details_text)
        digest = record_hash(*fields, prev_hash)
        await db.execute(
            f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*fields, prev_hash, digest)
        )
        return seq, digest, when

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise AuditError(f"audit trail {self.db_path} is not open; call open() first")
        return self._db

    async def head(self) -> ChainHead:
        """Latest seq and hash: export it elsewhere to anchor the chain."""
        async with self._conn().execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            row = await cur.fetchone()
        if row is None:
            raise AuditError("audit head row is missing")
        return ChainHead(seq=row[0], hash=row[1])

    async def tail(self, n: int) -> list[AuditRecord]:
        """The last `n` records, oldest first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        async with self._conn().execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?", (n,)) as cur:
            rows = await cur.fetchall()
        return [_record(r) for r in reversed(rows)]

    async def query(
        self, since_seq: int = 0, event_types: Iterable[str] | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Records with seq > since_seq, optionally of the given types, oldest first."""
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0:
            raise ValueError(f"since_seq must be an integer >= 0, got {since_seq!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be an integer in 1..100000, got {limit!r}")
        sql = f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ?"
        params: list[object] = [since_seq]
        if event_types is not None:
            types = sorted({str(t) for t in event_types})
            if not types:
                return []
            sql += f" AND event_type IN ({','.join('?' * len(types))})"
            params += types
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        async with self._conn().execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [_record(r) for r in rows]

    async def verify(self, expected_head: ChainHead | None = None) -> VerifyReport:
        """Walk the whole chain on a read-only snapshot; name the first bad record.

        Reasons: "sequence gap", "prev_hash mismatch", "hash mismatch", "malformed record",
        "truncated" (head says more records than exist), "records after head",
        "head mismatch" (last hash differs from head, or from `expected_head`).
        """
        self._conn()
        db = await open_readonly(self.db_path, busy_timeout_ms=self._busy_timeout_ms)
        try:
            await db.execute("BEGIN")
            async with db.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
                row = await cur.fetchone()
            head = ChainHead(seq=row[0], hash=row[1]) if row else ChainHead(seq=0, hash=GENESIS_HASH)
            checked, expected_seq, prev = 0, 1, GENESIS_HASH
            gaps: list[Gap] = []

            def bad(seq: int | None, reason: str, detail: str) -> VerifyReport:
                return VerifyReport(
                    ok=False, records_checked=checked, first_bad_seq=seq, reason=reason, detail=detail, head=head
                )

            async with db.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq") as cur:
                while batch := await cur.fetchmany(1000):
                    for r in batch:
                        seq = r[0]
                        if seq != expected_seq:
                            return bad(expected_seq, "sequence gap", f"expected record {expected_seq}, found {seq}")
                        if r[7] != prev:
                            return bad(seq, "prev_hash mismatch", f"record {seq} does not link to record {seq - 1}")
                        try:
                            digest = record_hash(seq, r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                        except (ValueError, TypeError) as exc:
                            return bad(seq, "malformed record", f"record {seq} cannot be hashed: {exc}")
                        if digest != r[8]:
                            return bad(seq, "hash mismatch", f"record {seq} content does not match its hash")
                        if r[2] == GAP_EVENT_TYPE:
                            gaps.append(Gap(seq=seq, **json.loads(r[6])))
                        checked += 1
                        expected_seq, prev = seq + 1, r[8]
            last = expected_seq - 1
            if row is None:
                return bad(None, "head mismatch", "the head row is missing")
            if head.seq > last:
                return bad(last + 1, "truncated", f"head records {head.seq} entries but the chain ends at {last}")
            if head.seq < last:
                return bad(head.seq + 1, "records after head", f"records {head.seq + 1}..{last} are not in the head")
            if head.hash != prev:
                return bad(last or None, "head mismatch", "the last record's hash differs from the head")
            if expected_head is not None:
                if expected_head.seq > last:
                    return bad(last + 1, "truncated", f"anchored head is at {expected_head.seq}, chain ends at {last}")
                if expected_head.seq >= 1:
                    async with db.execute("SELECT hash FROM audit_log WHERE seq = ?", (expected_head.seq,)) as cur:
                        anchored = await cur.fetchone()
                    if anchored is None or anchored[0] != expected_head.hash:
                        return bad(expected_head.seq, "head mismatch", "record differs from the anchored head")
            return VerifyReport(ok=True, records_checked=checked, head=head, gaps=gaps)
        finally:
            await db.close()


def _unchanged(text: str) -> str:
    return text


_COLUMNS = "seq, time, event_type, actor, action, outcome, details, prev_hash, hash"


def _record(r: Mapping[int, Any] | tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        seq=r[0],
        time=datetime.fromisoformat(r[1]),
        event_type=r[2],
        actor=r[3],
        action=r[4],
        outcome=AuditOutcome(r[5]),
        details=json.loads(r[6]),
        prev_hash=r[7],
        hash=r[8],
    )
