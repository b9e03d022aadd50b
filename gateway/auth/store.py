"""Principals and their bearer tokens in the gateway's own SQLite (``<data_dir>/gateway/auth.db``).

Only HMACs of tokens are stored (see :mod:`gateway.auth.tokens`); a token is shown
once, when it is created. Both the running gateway and the ``tokens`` CLI open the
file (WAL, busy timeout), so a revocation from the CLI takes effect on the next
request.

Checks are served from memory while the database is unchanged: the store keeps the rows
it verified, and a second connection watches SQLite's ``PRAGMA data_version``, which
changes whenever another connection — this store's own writer, the CLI in another
process — commits. Any commit (a revocation, a new token, a ``last_used_at`` touch)
empties the cache, so the next check reads the database again. Expiry is checked
against the clock on every request, cached or not. The watch is a read of SQLite's
shared-memory WAL index: microseconds, no disk, so it runs on the event loop.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import aiosqlite
from pydantic import BaseModel, ConfigDict

from bus.envelope import SYSTEM_NAME
from gateway.auth.tokens import load_pepper, new_token, token_hash, well_formed
from mads.core.sqlite import Migration, migrate, open_db

Role = Literal["user", "operator"]
Clock = Callable[[], datetime]
Rejection = Literal["malformed", "unknown", "revoked", "expired"]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
BUSY_TIMEOUT_MS = 5000
AUTH_DB = "auth.db"
PEPPER_FILE = "token_pepper"
CACHE_MAX = 10_000
"""Verified rows kept at most (by token hash and by token id); a full cache starts over."""

_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tokens",
        """
        CREATE TABLE principals (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('user', 'operator')),
            created_at TEXT NOT NULL
        );
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL REFERENCES principals (name),
            hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT,
            last_used_at TEXT
        );
        CREATE INDEX tokens_principal ON tokens (principal);
        """,
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1].version


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AuthStoreError(Exception):
    """A request the store refuses (bad name, unknown token id); the message says why."""


class TokenRejected(Exception):
    """A presented token is not valid; ``reason`` is for the audit trail, never for the client."""

    def __init__(self, reason: Rejection, principal: str | None = None) -> None:
        super().__init__(reason)
        self.reason: Rejection = reason
        self.principal = principal


class Verified(BaseModel):
    """Who a valid token belongs to."""

    model_config = ConfigDict(frozen=True)
    principal: str
    role: Role
    token_id: str
    expires_at: datetime | None


class TokenInfo(BaseModel):
    """A token as listed: everything except the secret."""

    model_config = ConfigDict(frozen=True)
    id: str
    principal: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    status: Literal["active", "revoked", "expired"]


class Issued(BaseModel):
    """A newly created token: the secret (print it once) and its listing."""

    model_config = ConfigDict(frozen=True)
    token: str
    info: TokenInfo


def auth_dir(data_dir: Path) -> Path:
    return data_dir / "gateway"


class AuthStore:
    def __init__(self, directory: Path, *, clock: Clock = _utcnow) -> None:
        self.path = directory / AUTH_DB
        self.pepper_path = directory / PEPPER_FILE
        self.clock = clock
        self._db: aiosqlite.Connection | None = None
        self._pepper = b""
        self._watch: sqlite3.Connection | None = None
        self._version = -1
        self._by_hash: dict[str, tuple[str, ...]] = {}
        self._by_id: dict[str, tuple[str, ...]] = {}

    async def open(self) -> None:
        self._pepper = load_pepper(self.pepper_path)
        db = await open_db(self.path, autocommit=False, busy_timeout_ms=BUSY_TIMEOUT_MS, pragmas=("foreign_keys=ON",))
        try:
            await migrate(db, _MIGRATIONS, error=AuthStoreError, label=f"auth store {self.path}")
        except BaseException:
            await db.close()
            raise
        self._db = db
        uri = self.path.resolve().as_uri() + "?mode=ro"
        self._watch = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self._version = -1

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        self._forget()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _forget(self) -> None:
        self._by_hash.clear()
        self._by_id.clear()

    def _unchanged(self) -> bool:
        """Whether no connection committed since the cache was last checked (else the cache is emptied)."""
        if self._watch is None:
            return False
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._version = version
            self._forget()
            return False
        return True

    def _remember(self, cache: dict[str, tuple[str, ...]], key: str, row: tuple[str, ...]) -> None:
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[key] = row

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the auth store is not open")
        return self._db

    async def principal_count(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM principals") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def create(self, name: str, role: Role = "user", expires_days: int | None = None) -> Issued:
        """A new token for ``name`` (the principal is created on first use; its role must then match)."""
        if not NAME_PATTERN.fullmatch(name):
            raise AuthStoreError("name: must be 1-64 letters, digits, '_' or '-'")
        if name == SYSTEM_NAME:
            raise AuthStoreError(f"name: {SYSTEM_NAME!r} is reserved for the ecosystem's own work")
        if expires_days is not None and not 1 <= expires_days <= 3650:
            raise AuthStoreError("expires_days: must be between 1 and 3650")
        now = self.clock()
        token = new_token()
        token_id = "tok_" + secrets.token_hex(6)
        expires = now + timedelta(days=expires_days) if expires_days is not None else None
        async with self.db.execute("SELECT role FROM principals WHERE name = ?", (name,)) as cursor:
            row = await cursor.fetchone()
        if row is not None and row[0] != role:
            raise AuthStoreError(f"principal {name!r} already exists with role {row[0]!r}, not {role!r}")
        if row is None:
            await self.db.execute(
                "INSERT INTO principals (name, role, created_at) VALUES (?, ?, ?)", (name, role, now.isoformat())
            )
        await self.db.execute(
            "INSERT INTO tokens (id, principal, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (token_id, name, token_hash(self._pepper, token), now.isoformat(), expires and expires.isoformat()),
        )
        await self.db.commit()
        info = TokenInfo(
            id=token_id,
            principal=name,
            role=role,
            created_at=now,
            expires_at=expires,
            revoked_at=None,
            last_used_at=None,
            status="active",
        )
        return Issued(token=token, info=info)

    def _verified(self, row: aiosqlite.Row | tuple[str, ...]) -> Verified:
        token_id, principal, role, expires_at, revoked_at = row[0], row[1], row[2], row[3], row[4]
        expires = _when(expires_at)
        if revoked_at is not None:
            raise TokenRejected("revoked", principal)
        if expires is not None and expires <= self.clock():
            raise TokenRejected("expired", principal)
        return Verified(principal=principal, role=role, token_id=token_id, expires_at=expires)

    _SELECT = (
        "SELECT t.id, t.principal, p.role, t.expires_at, t.revoked_at FROM tokens t "
        "JOIN principals p ON p.name = t.principal"
    )

    async def verify(self, token: str) -> Verified:
        """The principal a presented token belongs to, or :class:`TokenRejected` with the reason."""
        if not well_formed(token):
            raise TokenRejected("malformed")
        digest = token_hash(self._pepper, token)
        row = self._by_hash.get(digest) if self._unchanged() else None
        if row is None:
            async with self.db.execute(f"{self._SELECT} WHERE t.hash = ?", (digest,)) as cursor:
                found = await cursor.fetchone()
            if found is None:
                raise TokenRejected("unknown")  # unknown tokens are not cached: guessing costs a read each time
            row = tuple(found)
            self._remember(self._by_hash, digest, row)
        return self._verified(row)

    async def still_valid(self, token_id: str) -> Verified:
        """Re-check the token a session was opened with (revocation ends its sessions too)."""
        row = self._by_id.get(token_id) if self._unchanged() else None
        if row is None:
            async with self.db.execute(f"{self._SELECT} WHERE t.id = ?", (token_id,)) as cursor:
                found = await cursor.fetchone()
            if found is None:
                raise TokenRejected("unknown")
            row = tuple(found)
            self._remember(self._by_id, token_id, row)
        return self._verified(row)

    async def touch(self, token_id: str) -> None:
        await self.db.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (self.clock().isoformat(), token_id))
        await self.db.commit()

    async def list(self) -> list[TokenInfo]:
        now = self.clock()
        found: list[TokenInfo] = []
        async with self.db.execute(
            "SELECT t.id, t.principal, p.role, t.created_at, t.expires_at, t.revoked_at, t.last_used_at "
            "FROM tokens t JOIN principals p ON p.name = t.principal ORDER BY t.created_at, t.id"
        ) as cursor:
            async for row in cursor:
                expires, revoked = _when(row[4]), _when(row[5])
                status: Literal["active", "revoked", "expired"] = (
                    "revoked" if revoked else "expired" if expires and expires <= now else "active"
                )
                created = _when(row[3])
                assert created is not None
                found.append(
                    TokenInfo(
                        id=row[0],
                        principal=row[1],
                        role=row[2],
                        created_at=created,
                        expires_at=expires,
                        revoked_at=revoked,
                        last_used_at=_when(row[6]),
                        status=status,
                    )
                )
        return found

    async def revoke(self, ident: str) -> list[TokenInfo]:
        """Revoke one token by id, or every active token of a principal by name; returns what was revoked."""
        targets = [t for t in await self.list() if t.revoked_at is None and ident in (t.id, t.principal)]
        if not targets:
            raise AuthStoreError(f"no unrevoked token with id or principal name {ident!r}")
        now = self.clock().isoformat()
        await self.db.executemany("UPDATE tokens SET revoked_at = ? WHERE id = ?", [(now, t.id) for t in targets])
        await self.db.commit()
        return [t.model_copy(update={"revoked_at": _when(now), "status": "revoked"}) for t in targets]
