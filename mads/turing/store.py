"""Turing's vault: versioned secrets (Vault KV v2 semantics) behind the barrier, in SQLite.

Only paths and version numbers are stored in clear (as in Vault); every value and every
piece of metadata (times, deleted/destroyed flags, current version) is barrier ciphertext
bound to its path and version, so rows cannot be swapped or edited undetected. Destroyed
versions have their ciphertext erased with SQLite's secure_delete and a WAL truncate.
Every operation is refused while sealed, and every secret operation is checked against the
deny-by-default Policy before touching storage.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import aiosqlite
from pydantic import BaseModel, ConfigDict, SecretStr

from mads.core.redaction import SecretRedactor
from mads.core.sqlite import Migration, migrate, open_db, write_transaction
from mads.turing.barrier import (
    AlreadyInitializedError,
    Argon2idParams,
    Barrier,
    BarrierChange,
    BarrierState,
    NotInitializedError,
    Passphrase,
    ScryptParams,
    SealedError,
    TuringError,
    default_kdf,
    make_unlock,
)
from mads.turing.policy import Capability, Policy

MAX_PATH_LEN = 512
MAX_VALUE_BYTES = 1024 * 1024
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_PATH_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")

_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "vault",
        """
        CREATE TABLE barrier (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            state TEXT NOT NULL
        );
        CREATE TABLE secrets (
            path TEXT PRIMARY KEY,
            meta BLOB NOT NULL
        );
        CREATE TABLE secret_versions (
            path TEXT NOT NULL REFERENCES secrets(path),
            version INTEGER NOT NULL CHECK (version >= 1),
            meta BLOB NOT NULL,
            value BLOB,
            PRIMARY KEY (path, version)
        );
        """,
    ),
)
_MIGRATIONS = (
    *_MIGRATIONS,
    Migration(
        2,
        "redaction_watch",
        """
        CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
        INSERT INTO generation (id, value) VALUES (1, 0);
        CREATE TABLE watchers (
            instance TEXT PRIMARY KEY,
            seen INTEGER NOT NULL,
            heartbeat TEXT NOT NULL
        );
        """,
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1].version


class VaultClosedError(TuringError):
    """The vault's database is not open."""


class SecretNotFoundError(TuringError):
    """No secret (or no such version) at that path."""


class SecretDeletedError(SecretNotFoundError):
    """The version was soft-deleted; `undelete` can restore it."""


class SecretDestroyedError(SecretNotFoundError):
    """The version's ciphertext was destroyed; it is gone for good."""


class CASMismatchError(TuringError):
    """A check-and-set write found a different current version."""


class SecretValue(BaseModel):
    """A read secret; `value` is a SecretStr so it never shows in reprs or logs."""

    model_config = ConfigDict(frozen=True)
    path: str
    version: int
    value: SecretStr
    created_time: datetime


class SecretVersionInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: int
    created_time: datetime
    deletion_time: datetime | None
    destroyed: bool


class SecretMetadata(BaseModel):
    model_config = ConfigDict(frozen=True)
    path: str
    current_version: int
    oldest_version: int
    max_versions: int
    created_time: datetime
    updated_time: datetime
    versions: list[SecretVersionInfo]


class VaultStatus(BaseModel):
    model_config = ConfigDict(frozen=True)
    db_path: str
    open: bool
    initialized: bool
    sealed: bool
    key_term: int | None
    unseal_method: Literal["passphrase", "key_file"] | None
    kdf: Literal["argon2id", "scrypt", "key_file"] | None
    schema_version: int | None


class _PathMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_version: int
    created_time: datetime
    updated_time: datetime


class _VersionMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    created_time: datetime
    deletion_time: datetime | None = None
    destroyed: bool = False


def validate_path(path: object, field: str = "path") -> str:
    if not isinstance(path, str):
        raise ValueError(f"{field} must be a string, got {type(path).__name__}")
    if len(path) > MAX_PATH_LEN:
        raise ValueError(f"{field} must be at most {MAX_PATH_LEN} characters, got {len(path)}")
    if not _PATH_RE.match(path):
        raise ValueError(
            f"{field} {path!r} must be '/'-separated segments of A-Z a-z 0-9 . _ - "
            "(no empty segments, no leading dot, no leading or trailing '/')"
        )
    return path


def validate_prefix(prefix: object) -> str:
    if prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/"):
        validate_path(prefix[:-1], "prefix")
        return prefix
    return validate_path(prefix, "prefix")


def _validate_versions(versions: Sequence[int], field: str = "versions") -> list[int]:
    if isinstance(versions, str | bytes) or not isinstance(versions, Sequence) or not versions:
        raise ValueError(f"{field} must be a non-empty list of version numbers")
    for v in versions:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field} entries must be integers >= 1, got {v!r}")
    return sorted(set(versions))


def _now() -> datetime:
    return datetime.now(UTC)


class Vault:
    """Sealed-by-default secret store. Use `async with Vault(path) as v:` or open()/close()."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        policy: Policy | None = None,
        max_versions: int = 10,
        kdf: Argon2idParams | ScryptParams | None = None,
        redactor: SecretRedactor | None = None,
    ) -> None:
        if isinstance(max_versions, bool) or not isinstance(max_versions, int) or not 1 <= max_versions <= 1000:
            raise ValueError(f"max_versions must be an integer in 1..1000, got {max_versions!r}")
        self.db_path = Path(db_path)
        self.policy = policy if policy is not None else Policy()
        self.max_versions = max_versions
        self._kdf = kdf
        self._redactor = redactor if redactor is not None else SecretRedactor()
        self._barrier = Barrier()
        self._db: aiosqlite.Connection | None = None
        self._initialized = False
        self._kdf_kind: Literal["argon2id", "scrypt", "key_file"] | None = None
        self._schema_version: int | None = None
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> Vault:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) the database and apply pending migrations. Stays sealed."""
        if self._db is not None:
            return
        db = await open_db(self.db_path, synchronous="FULL", pragmas=("secure_delete=ON", "foreign_keys=ON"))
        try:
            self._schema_version = await migrate(db, _MIGRATIONS, error=TuringError, label="vault")
            state = await _load_state(db)
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._initialized = state is not None
        self._kdf_kind = state.seal.kdf.kind if state else None

    async def close(self) -> None:
        self.seal()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise VaultClosedError(f"vault {self.db_path} is not open; call open() first")
        return self._db

    def status(self) -> VaultStatus:
        method: Literal["passphrase", "key_file"] | None = None
        if self._kdf_kind is not None:
            method = "key_file" if self._kdf_kind == "key_file" else "passphrase"
        return VaultStatus(
            db_path=str(self.db_path),
            open=self._db is not None,
            initialized=self._initialized,
            sealed=self._barrier.sealed,
            key_term=None if self._barrier.sealed else self._barrier.term,
            unseal_method=method,
            kdf=self._kdf_kind,
            schema_version=self._schema_version,
        )

    @property
    def sealed(self) -> bool:
        return self._barrier.sealed

    async def initialize(
        self, passphrase: str | SecretStr | None = None, key_file: str | os.PathLike[str] | None = None
    ) -> None:
        """First run: create the root key and keyring. A missing key file is created (0600).

        Leaves the vault unsealed, since the caller has just proven the credentials.
        """
        db = self._conn()
        unlock = make_unlock(passphrase, key_file)
        async with self._write_lock:
            if self._initialized or await _load_state(db) is not None:
                raise AlreadyInitializedError(f"vault {self.db_path} is already initialized")
            state = await self._barrier.initialize(unlock, self._kdf or default_kdf())
            try:
                async with write_transaction(db):
                    await db.execute("INSERT INTO barrier (id, state) VALUES (1, ?)", (state.model_dump_json(),))
            except BaseException:
                self._barrier.seal()
                raise
            self._initialized = True
            self._kdf_kind = state.seal.kdf.kind

    async def unseal(
        self, passphrase: str | SecretStr | None = None, key_file: str | os.PathLike[str] | None = None
    ) -> None:
        """Unwrap the root key with a passphrase or key file; UnsealError if it is wrong."""
        db = self._conn()
        unlock = make_unlock(passphrase, key_file) if key_file is not None else _loose_unlock(passphrase)
        state = await _load_state(db)
        if state is None:
            raise NotInitializedError(f"vault {self.db_path} is not initialized; call initialize() first")
        await self._barrier.unseal(state, unlock)

    def seal(self) -> None:
        """Drop every key from memory; all secret operations refuse until unsealed."""
        self._barrier.seal()

    async def rotate(self) -> int:
        """Add a new key term for new writes; older terms keep decrypting. Returns the term."""
        self._require_unsealed("rotate")
        db = self._conn()
        async with self._write_lock:
            change = self._barrier.prepare_rotate()
            await self._persist_change(db, change)
            return self._barrier.term

    async def rekey(
        self,
        new_passphrase: str | SecretStr | None = None,
        new_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Replace the root key and its wrapping; the old passphrase/key file stops working."""
        self._require_unsealed("rekey")
        unlock = make_unlock(new_passphrase, new_key_file)
        db = self._conn()
        async with self._write_lock:
            change = await self._barrier.prepare_rekey(unlock, self._kdf or default_kdf())
            await self._persist_change(db, change)
            self._kdf_kind = change.state.seal.kdf.kind

    async def _persist_change(self, db: aiosqlite.Connection, change: BarrierChange) -> None:
        try:
            async with write_transaction(db):
                await db.execute("UPDATE barrier SET state = ? WHERE id = 1", (change.state.model_dump_json(),))
        except BaseException:
            change.discard()
            raise
        self._barrier.apply(change)

    # secrets ---------------------------------------------------------------------------

    def _require_unsealed(self, operation: str) -> None:
        self._conn()
        if self._barrier.sealed:
            raise SealedError(operation)

    def _enc(self, label: str, model: BaseModel) -> bytes:
        return self._barrier.encrypt(label, model.model_dump_json().encode("utf-8"))

    async def _path_meta(self, db: aiosqlite.Connection, path: str) -> _PathMeta | None:
        async with db.execute("SELECT meta FROM secrets WHERE path = ?", (path,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return _PathMeta.model_validate_json(self._barrier.decrypt(f"{path}#meta", row[0]))

    async def _version_rows(self, db: aiosqlite.Connection, path: str) -> dict[int, _VersionMeta]:
        out: dict[int, _VersionMeta] = {}
        async with db.execute(
            "SELECT version, meta FROM secret_versions WHERE path = ? ORDER BY version", (path,)
        ) as cur:
            async for version, meta in cur:
                raw = self._barrier.decrypt(f"{path}#v{version}/meta", meta)
                out[version] = _VersionMeta.model_validate_json(raw)
        return out

    async def put(self, principal: str, path: str, value: str, cas: int | None = None) -> int:
        """Write a new version; `cas=N` requires current version N, `cas=0` requires absence."""
        self._require_unsealed("put")
        path = validate_path(path)
        if not isinstance(value, str):
            raise ValueError(f"value must be a string, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > MAX_VALUE_BYTES:
            raise ValueError(f"value must be at most {MAX_VALUE_BYTES} bytes, got {len(raw)}")
        if cas is not None and (isinstance(cas, bool) or not isinstance(cas, int) or cas < 0):
            raise ValueError(f"cas must be an integer >= 0, got {cas!r}")
        self.policy.check(principal, Capability.WRITE, path)
        self._redactor.register(value)
        db = self._conn()
        async with self._write_lock, write_transaction(db):
            meta = await self._path_meta(db, path)
            current = meta.current_version if meta else 0
            if cas == 0 and meta is not None:
                raise CASMismatchError(f"cas=0 requires that '{path}' does not exist, but it is at version {current}")
            if cas is not None and cas != current:
                raise CASMismatchError(f"cas={cas} does not match current version {current} of '{path}'")
            version = current + 1
            now = _now()
            new_meta = _PathMeta(
                current_version=version, created_time=meta.created_time if meta else now, updated_time=now
            )
            await db.execute(
                "INSERT INTO secrets (path, meta) VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET meta = excluded.meta",
                (path, self._enc(f"{path}#meta", new_meta)),
            )
            await db.execute(
                "INSERT INTO secret_versions (path, version, meta, value) VALUES (?, ?, ?, ?)",
                (
                    path,
                    version,
                    self._enc(f"{path}#v{version}/meta", _VersionMeta(created_time=now)),
                    self._barrier.encrypt(f"{path}#v{version}", raw),
                ),
            )
            await db.execute(
                "DELETE FROM secret_versions WHERE path = ? AND version <= ?",
                (path, version - self.max_versions),
            )
            await db.execute("UPDATE generation SET value = value + 1 WHERE id = 1")
        return version

    async def get(self, principal: str, path: str, version: int | None = None) -> SecretValue:
        """The latest version, or `version`; raises if missing, deleted or destroyed."""
        self._require_unsealed("get")
        path = validate_path(path)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise ValueError(f"version must be an integer >= 1, got {version!r}")
        self.policy.check(principal, Capability.READ, path)
        db = self._conn()
        meta = await self._path_meta(db, path)
        if meta is None:
            raise SecretNotFoundError(f"no secret at '{path}'")
        wanted = version if version is not None else meta.current_version
        async with db.execute(
            "SELECT meta, value FROM secret_versions WHERE path = ? AND version = ?", (path, wanted)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise SecretNotFoundError(f"'{path}' has no version {wanted}")
        vmeta = _VersionMeta.model_validate_json(self._barrier.decrypt(f"{path}#v{wanted}/meta", row[0]))
        if vmeta.destroyed or row[1] is None:
            raise SecretDestroyedError(f"version {wanted} of '{path}' was destroyed")
        if vmeta.deletion_time is not None:
            raise SecretDeletedError(f"version {wanted} of '{path}' is deleted")
        value = self._barrier.decrypt(f"{path}#v{wanted}", row[1]).decode("utf-8")
        self._redactor.register(value)
        return SecretValue(path=path, version=wanted, value=SecretStr(value), created_time=vmeta.created_time)

    async def register_all_with_redactor(self) -> int:
        """Teach the redactor every stored value, so a secret pasted before its first use is still caught.

        Called once after unsealing; returns how many values were registered.
        """
        self._require_unsealed("register")
        count = 0
        async with self._conn().execute(
            "SELECT path, version, value FROM secret_versions WHERE value IS NOT NULL"
        ) as cur:
            async for path, version, blob in cur:
                self._redactor.register(self._barrier.decrypt(f"{path}#v{version}", blob).decode("utf-8"))
                count += 1
        return count

    # live redaction across processes -------------------------------------------------------

    async def generation(self) -> int:
        """How many values have been written to this vault, by any process (a put counts one)."""
        async with self._conn().execute("SELECT value FROM generation WHERE id = 1") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def note_watching(self, instance: str, seen: int) -> None:
        """Record that ``instance`` (a running ecosystem) redacts every value up to generation ``seen``."""
        db = self._conn()
        async with self._write_lock, write_transaction(db):
            await db.execute(
                "INSERT INTO watchers (instance, seen, heartbeat) VALUES (?, ?, ?) ON CONFLICT (instance) DO UPDATE"
                " SET seen = excluded.seen, heartbeat = excluded.heartbeat",
                (instance, seen, _now().isoformat()),
            )

    async def forget_watcher(self, instance: str) -> None:
        db = self._conn()
        async with self._write_lock, write_transaction(db):
            await db.execute("DELETE FROM watchers WHERE instance = ?", (instance,))

    async def watchers(self) -> list[tuple[str, int, datetime]]:
        """Running ecosystems watching this vault: (instance, generation seen, last heartbeat)."""
        async with self._conn().execute("SELECT instance, seen, heartbeat FROM watchers") as cur:
            rows = await cur.fetchall()
        return [(str(i), int(s), datetime.fromisoformat(str(h))) for i, s, h in rows]

    async def list(self, principal: str, prefix: str = "") -> list[str]:
        """Paths under `prefix` the principal may list; needs LIST on the prefix itself too."""
        self._require_unsealed("list")
        prefix = validate_prefix(prefix)
        self.policy.check(principal, Capability.LIST, prefix)
        db = self._conn()
        async with db.execute(
            "SELECT path FROM secrets WHERE substr(path, 1, ?) = ? ORDER BY path", (len(prefix), prefix)
        ) as cur:
            paths = [row[0] async for row in cur]
        return [p for p in paths if self.policy.allows(principal, Capability.LIST, p)]

    async def versions(self, principal: str, path: str) -> SecretMetadata:
        """Metadata and every kept version's state; needs READ."""
        self._require_unsealed("versions")
        path = validate_path(path)
        self.policy.check(principal, Capability.READ, path)
        db = self._conn()
        meta = await self._path_meta(db, path)
        if meta is None:
            raise SecretNotFoundError(f"no secret at '{path}'")
        rows = await self._version_rows(db, path)
        return SecretMetadata(
            path=path,
            current_version=meta.current_version,
            oldest_version=min(rows) if rows else meta.current_version,
            max_versions=self.max_versions,
            created_time=meta.created_time,
            updated_time=meta.updated_time,
            versions=[
                SecretVersionInfo(
                    version=v, created_time=m.created_time, deletion_time=m.deletion_time, destroyed=m.destroyed
                )
                for v, m in rows.items()
            ],
        )

    async def delete(self, principal: str, path: str, versions: Sequence[int] | None = None) -> list[int]:
        """Soft-delete `versions` (default: the latest). Returns the versions newly deleted."""
        self._require_unsealed("delete")
        path = validate_path(path)
        wanted = None if versions is None else _validate_versions(versions)
        self.policy.check(principal, Capability.DELETE, path)

        def mark(m: _VersionMeta) -> bool:
            if m.destroyed or m.deletion_time is not None:
                return False
            m.deletion_time = _now()
            return True

        return await self._update_versions(path, wanted, mark, erase=False)

    async def undelete(self, principal: str, path: str, versions: Sequence[int]) -> list[int]:
        """Restore soft-deleted versions (destroyed ones cannot come back). Returns those restored."""
        self._require_unsealed("undelete")
        path = validate_path(path)
        wanted = _validate_versions(versions)
        self.policy.check(principal, Capability.DELETE, path)

        def restore(m: _VersionMeta) -> bool:
            if m.destroyed or m.deletion_time is None:
                return False
            m.deletion_time = None
            return True

        return await self._update_versions(path, wanted, restore, erase=False)

    async def destroy(self, principal: str, path: str, versions: Sequence[int]) -> list[int]:
        """Erase the ciphertext of `versions` permanently. Returns the versions destroyed."""
        self._require_unsealed("destroy")
        path = validate_path(path)
        wanted = _validate_versions(versions)
        self.policy.check(principal, Capability.DELETE, path)

        def kill(m: _VersionMeta) -> bool:
            if m.destroyed:
                return False
            m.destroyed = True
            return True

        changed = await self._update_versions(path, wanted, kill, erase=True)
        if changed:
            await self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed

    async def _update_versions(
        self, path: str, wanted: list[int] | None, change: Callable[[_VersionMeta], bool], erase: bool
    ) -> list[int]:
        db = self._conn()
        changed: list[int] = []
        async with self._write_lock, write_transaction(db):
            meta = await self._path_meta(db, path)
            if meta is None:
                raise SecretNotFoundError(f"no secret at '{path}'")
            rows = await self._version_rows(db, path)
            targets = wanted if wanted is not None else [meta.current_version]
            missing = [v for v in targets if v not in rows]
            if missing:
                raise SecretNotFoundError(f"'{path}' has no version(s) {missing}")
            for v in targets:
                m = rows[v]
                if not change(m):
                    continue
                changed.append(v)
                sql = "UPDATE secret_versions SET meta = ?" + (", value = NULL" if erase else "")
                await db.execute(sql + " WHERE path = ? AND version = ?", (self._enc(f"{path}#v{v}/meta", m), path, v))
        return changed


def _loose_unlock(passphrase: str | SecretStr | None) -> Passphrase:
    """Unseal accepts any passphrase length: a short one simply fails to unwrap."""
    if passphrase is None:
        raise ValueError("give exactly one of passphrase or key_file")
    return Passphrase(passphrase if isinstance(passphrase, SecretStr) else SecretStr(str(passphrase)))


async def _load_state(db: aiosqlite.Connection) -> BarrierState | None:
    async with db.execute("SELECT state FROM barrier WHERE id = 1") as cur:
        row = await cur.fetchone()
    return None if row is None else BarrierState.model_validate_json(row[0])
