"""Rogers's artifact store: files attached to conversations, content-addressed on disk.

The bytes of an artifact are written once to ``<dir>/<sha[:2]>/<sha>`` (a temporary file,
fsynced, then renamed, mode 0600), and a row in ``artifacts.db`` records which conversation
holds that content under which name. Reading checks the bytes against their id, so a file
changed on disk is reported as damaged, never served. Who may read or attach is Rogers's
decision (the conversation's owner, operators reading, the system); this store only keeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from mads.core import sqlite
from mads.core.artifacts import ArtifactRef, content_type_for
from mads.core.sqlite import Migration, load_migrations

MIGRATIONS: tuple[Migration, ...] = load_migrations(Path(__file__).with_name("sql_artifacts"))


class ArtifactStoreError(Exception):
    """The artifact store is not open, its schema is wrong, or a stored file is damaged."""


class ArtifactDamaged(ArtifactStoreError):
    """A stored artifact's bytes no longer match their id (or are missing)."""


class ArtifactStore:
    """Artifacts by conversation. ``await open()`` first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        db = await sqlite.open_db(self.directory / "artifacts.db", synchronous="FULL")
        try:
            await sqlite.migrate(db, MIGRATIONS, error=ArtifactStoreError, label="rogers artifacts")
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ArtifactStoreError("the artifact store is not open")
        return self._db

    def _blob(self, artifact_id: str) -> Path:
        return self.directory / "artifacts" / artifact_id[:2] / artifact_id

    async def put(self, conversation_id: str, name: str, content: bytes, attached_by: str) -> ArtifactRef:
        """Keep ``content`` under ``name`` in ``conversation_id`` and return its reference."""
        artifact_id = hashlib.sha256(content).hexdigest()
        await asyncio.to_thread(self._write_blob, artifact_id, content)
        ref = ArtifactRef(
            id=artifact_id,
            name=name,
            content_type=content_type_for(name),
            size=len(content),
            conversation_id=conversation_id,
        )
        async with sqlite.write_transaction(self.db):
            await self.db.execute(
                "INSERT INTO artifacts (conversation_id, id, name, content_type, size, attached_by, attached_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (conversation_id, id) DO UPDATE SET name = excluded.name",
                (
                    conversation_id,
                    ref.id,
                    ref.name,
                    ref.content_type,
                    ref.size,
                    attached_by,
                    datetime.now(UTC).isoformat(timespec="microseconds"),
                ),
            )
        return ref

    def _write_blob(self, artifact_id: str, content: bytes) -> None:
        path = self._blob(artifact_id)
        if path.exists():
            return  # content-addressed: the same bytes are already there
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{artifact_id}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def get(self, conversation_id: str, artifact_id: str) -> ArtifactRef | None:
        async with self.db.execute(
            "SELECT id, name, content_type, size, conversation_id FROM artifacts WHERE conversation_id = ? AND id = ?",
            (conversation_id, artifact_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return ArtifactRef(id=row[0], name=row[1], content_type=row[2], size=row[3], conversation_id=row[4])

    async def list(self, conversation_id: str) -> list[ArtifactRef]:
        async with self.db.execute(
            "SELECT id, name, content_type, size, conversation_id FROM artifacts WHERE conversation_id = ?"
            " ORDER BY attached_at, id",
            (conversation_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [ArtifactRef(id=r[0], name=r[1], content_type=r[2], size=r[3], conversation_id=r[4]) for r in rows]

    async def read(self, ref: ArtifactRef) -> bytes:
        """The bytes of ``ref``, checked against its id; raises :class:`ArtifactDamaged` if they differ."""
        return await asyncio.to_thread(self._read_blob, ref.id)

    def _read_blob(self, artifact_id: str) -> bytes:
        try:
            content = self._blob(artifact_id).read_bytes()
        except FileNotFoundError:
            raise ArtifactDamaged(f"artifact {artifact_id} is missing from the store") from None
        if hashlib.sha256(content).hexdigest() != artifact_id:
            raise ArtifactDamaged(f"artifact {artifact_id} is damaged: its bytes no longer match its checksum")
        return content
