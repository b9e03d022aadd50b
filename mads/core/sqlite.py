"""SQLite plumbing shared by the stores of MADs and the gateway (not a MAD: anyone but bus/ and sandbox/ may import it).

One way to create a private database file, open it (WAL, busy timeout), run versioned
migrations and roll back, so every store gets the same durability and the same file
permissions. Each store keeps its own migrations (in code, or as ``NNN_name.sql`` files
read by :func:`load_migrations`) and its own error class; there is one migration system
and one ``schema_migrations`` table shape for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import aiosqlite


@dataclass(frozen=True)
class Migration:
    """One schema version: ``version`` counts up from 1; ``sql`` is a script of complete statements."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return split_statements(self.sql)


class MigrationScriptError(ValueError):
    """A migration script or directory is malformed (a programming error, found at import)."""


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements (triggers' inner ``;`` included) using SQLite's own parser."""
    statements: list[str] = []
    start = 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : end + 1]):
            statement = script[start : end + 1].strip()
            if _has_code(statement):
                statements.append(statement)
            start = end + 1
    buffer = script[start:]
    if _has_code(buffer):
        raise MigrationScriptError(f"incomplete SQL statement at the end of the script: {buffer.strip()[:80]!r}")
    return statements


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


_FILE_NAME = re.compile(r"^(\d{3})_([a-z][a-z0-9_]*)\.sql$")


def load_migrations(directory: Path) -> tuple[Migration, ...]:
    """Every ``NNN_name.sql`` in ``directory``, checked to be numbered 1, 2, 3… without gaps."""
    found = []
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationScriptError(
                f"migration {migration.version} ({migration.name}) found where {expected} was expected"
            )
    return tuple(found)


DEFAULT_BUSY_TIMEOUT_MS = 5000


def prepare_db_file(path: Path) -> None:
    """Create the directory (0700) and the file (0600) before SQLite does, so no umask can widen them.

    An existing file is narrowed to 0600 too; SQLite gives its -wal and -shm files the same mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


async def open_db(
    path: Path,
    *,
    autocommit: bool = True,
    synchronous: Literal["NORMAL", "FULL"] | None = None,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pragmas: Sequence[str] = (),
) -> aiosqlite.Connection:
    """Open a read-write connection in WAL mode on a private file (created if missing).

    ``autocommit`` (``isolation_level=None``) is for stores that write explicit transactions;
    without it sqlite3 opens transactions implicitly and the store calls ``commit()``.
    The busy timeout is set first so that switching to WAL waits for a concurrent opener.
    ``pragmas`` are extra ``PRAGMA`` bodies such as ``"foreign_keys=ON"``. A storage fault
    (full disk, read-only, I/O error) raises :class:`StorageUnavailable` naming the file.
    """
    extra = [f"synchronous={synchronous}"] if synchronous is not None else []
    try:
        await asyncio.to_thread(prepare_db_file, path)
        return await _configured(
            _connect(path, autocommit=autocommit),
            [f"busy_timeout={int(busy_timeout_ms)}", "journal_mode=WAL", *extra, *pragmas],
        )
    except (sqlite3.Error, OSError) as exc:
        raise_if_storage_fault(path, exc)
        raise


async def open_readonly(
    path: Path, *, autocommit: bool = True, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> aiosqlite.Connection:
    """Open an existing database read-only (``mode=ro``): readers such as the operator CLI never write."""
    uri = (await asyncio.to_thread(path.resolve)).as_uri() + "?mode=ro"
    return await _configured(_connect(uri, autocommit=autocommit, uri=True), [f"busy_timeout={int(busy_timeout_ms)}"])


def _connect(target: str | Path, *, autocommit: bool, uri: bool = False) -> aiosqlite.Connection:
    if autocommit:
        return aiosqlite.connect(target, uri=uri, isolation_level=None)
    return aiosqlite.connect(target, uri=uri)


async def _configured(pending: aiosqlite.Connection, pragmas: Sequence[str]) -> aiosqlite.Connection:
    """Start the connection and apply ``pragmas`` in order, closing it if one fails."""
    db = await pending
    try:
        for pragma in pragmas:
            await db.execute(f"PRAGMA {pragma}")
    except BaseException:
        await db.close()
        raise
    return db


T = TypeVar("T")


class ThreadConnection:
    """A plain ``sqlite3`` connection owned by one thread of its own: :meth:`run` calls ``fn(conn, …)`` there.

    For a hot path that runs a whole transaction per call: one trip to the thread and one back,
    where aiosqlite makes a trip per statement and per fetch. Each trip is a hand-over of the GIL,
    and a busy event loop stretches every hand-over to milliseconds (the thread waits for the
    interpreter's switch interval), so a four-statement transaction could cost tens of ms. SQLite
    releases the GIL while it works, so a single long statement costs the loop nothing.
    """

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    async def open(cls, path: Path, *, pragmas: Sequence[str] = (), name: str = "sqlite") -> ThreadConnection:
        """Connect (autocommit: transactions are explicit) and apply ``pragmas`` in the connection's thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                for pragma in pragmas:
                    conn.execute(f"PRAGMA {pragma}").fetchall()
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(conn, *args)`` in the connection's thread. Cancelling the caller does not stop a call under way."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn, *args)

    async def close(self) -> None:
        """Close the connection (after any call under way) and end its thread."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


def rollback_now(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open (plain ``sqlite3``); never raises, so the original error is reported."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


async def rollback(db: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open; never raises, so the original error is the one reported."""
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.execute("ROLLBACK")


@contextlib.asynccontextmanager
async def write_transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (cancellation included).

    IMMEDIATE takes the write lock up front, so a read-then-write cannot fail half way with
    SQLITE_BUSY; a lock that cannot be had within the busy timeout raises from ``BEGIN``.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise


async def migrate(
    db: aiosqlite.Connection, migrations: Sequence[Migration], *, error: type[Exception], label: str
) -> int:
    """Apply the pending migrations in order, each with its ``schema_migrations`` row in one transaction.

    A crash leaves the database at a whole version; a migration another process applied while
    this one waited for the lock is skipped. A failing migration raises ``error("<label>: migration
    N (name) failed: …")`` and leaves the previous version whole. A database newer than
    ``migrations`` is refused with ``error("<label> schema version N is newer than this code
    supports (M)")`` rather than misread. ``db`` may be in autocommit mode or not: transactions
    are explicit. Returns the resulting version.
    """
    await _ensure_table(db)
    current = await schema_version(db)
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise error(f"{label} schema version {current} is newer than this code supports ({latest})")
    for migration in migrations:
        if migration.version <= current:
            continue
        try:
            async with write_transaction(db):
                async with db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)) as cur:
                    done = await cur.fetchone() is not None
                if not done:
                    for statement in migration.statements():
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.name, datetime.now(UTC).isoformat(timespec="microseconds")),
                    )
        except sqlite3.Error as exc:
            raise error(f"{label}: migration {migration.version} ({migration.name}) failed: {exc}") from exc
        current = migration.version
    return current


async def _ensure_table(db: aiosqlite.Connection) -> None:
    """The one ``schema_migrations`` shape; a table from before ``name`` existed gets the column."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', applied_at TEXT NOT NULL)"
    )
    async with db.execute("PRAGMA table_info(schema_migrations)") as cur:
        columns = {row[1] for row in await cur.fetchall()}
    if "name" not in columns:
        await db.execute("ALTER TABLE schema_migrations ADD COLUMN name TEXT NOT NULL DEFAULT ''")


async def schema_version(db: aiosqlite.Connection) -> int:
    """The highest applied version (0 for a new database)."""
    await _ensure_table(db)
    async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# ---- storage faults ------------------------------------------------------------------------

_FAULTS = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_CANTOPEN: "cannot_open",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
}
"""Primary result codes that mean the storage itself refuses, not a busy lock or a bad statement."""


def storage_fault(exc: BaseException) -> str | None:
    """``disk_full``, ``io_error``, ``read_only``, ``cannot_open`` or ``corrupt`` when ``exc`` says the
    storage under a database cannot be written (or read) at all; ``None`` for any other error.

    Such a fault does not go away by retrying at once: the caller fails the request now, with
    :class:`StorageUnavailable`, instead of retrying behind the client's back. ``OSError`` with
    ``ENOSPC``/``EROFS``/``EIO`` (creating a file, for instance) counts too.
    """
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        return _FAULTS.get(code & 0xFF)
    if isinstance(exc, OSError):
        return {28: "disk_full", 30: "read_only", 5: "io_error"}.get(exc.errno or 0)
    return None


def fault_detail(exc: BaseException) -> str:
    """What went wrong without a file path (``OSError``'s text names the file): safe for error bodies."""
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        return exc.strerror or type(exc).__name__
    return str(exc)


def free_bytes(path: Path) -> int:
    """Bytes free (for an unprivileged writer) on the filesystem holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def describe_bytes(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``12.3 KB``, ``4.0 MB``, ``1.2 GB``."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class StorageUnavailable(Exception):
    """A store cannot write (disk full, read-only, I/O error, damaged file): the request fails now.

    ``fault`` is one of :func:`storage_fault`'s names; the message names the file and the free
    space and never repeats stored content.
    """

    def __init__(self, path: Path, fault: str, detail: str) -> None:
        self.path = path
        self.fault = fault
        try:
            free = describe_bytes(free_bytes(path))
        except OSError:
            free = "unknown"
        super().__init__(f"{path} cannot be written ({fault.replace('_', ' ')}: {detail}; {free} free)")


def raise_if_storage_fault(path: Path, exc: BaseException) -> None:
    """Raise :class:`StorageUnavailable` for ``path`` if ``exc`` (or its cause) is a storage fault (else return)."""
    fault = storage_fault(exc)
    if fault is None and exc.__cause__ is not None:
        exc = exc.__cause__
        fault = storage_fault(exc)
    if fault is not None:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StorageUnavailable(path, fault, detail) from exc


def storage_failure(exc: BaseException, fallback: Path) -> str | None:
    """One line for a person when ``exc`` (or what caused it) is a storage fault; ``None`` otherwise.

    Used where start-up fails: ``<path> cannot be written (disk full: …; 0 B free)``, naming the
    file when the error knows it and ``fallback`` (the data directory) when it does not.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageUnavailable):
            return str(current)
        fault = storage_fault(current)
        if fault is not None:
            where = Path(current.filename) if isinstance(current, OSError) and current.filename else fallback
            detail = current.strerror if isinstance(current, OSError) and current.strerror else str(current)
            return str(StorageUnavailable(where, fault, detail))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


# ---- checks and backups ----------------------------------------------------------------------


def check_file(path: Path, *, quick: bool = False) -> list[str]:
    """SQLite's ``integrity_check`` (or the faster ``quick_check``) of one file, read-only; ``[]`` when ok.

    Blocking: call it in a thread. A file SQLite cannot open at all is reported as a problem.
    """
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        rows = conn.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}(50)").fetchall()
    except sqlite3.Error as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


def backup_file(source: Path, target: Path) -> None:
    """A consistent copy of a live database with SQLite's online backup API (blocking: use a thread).

    One step (``pages=-1``) inside one read transaction: under WAL the writers keep writing while
    it runs, and the copy is the database as of that transaction's start, whole. The copy is
    written beside ``target``, fsynced, then renamed into place (0600), so a crash never leaves a
    half-written file under the final name.
    """
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    prepare_db_file(partial)
    src = sqlite3.connect(source, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, target)
