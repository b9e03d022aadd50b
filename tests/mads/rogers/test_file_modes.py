"""Rogers's database and its -wal/-shm files are private (0600) whatever the umask, like every other store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.redaction import SecretRedactor
from mads.rogers import Rogers
from tests.mads.rogers.support import call, note


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive usual umask (files 0644 unless the code narrows them)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_database_wal_and_shm_are_0600(bus: InMemoryBus, tmp_path: Path, open_umask: None) -> None:
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path, redactor=SecretRedactor()))
    await rogers.start()
    try:
        await bus.publish(note(None, "something to write"))
        await call(bus, "sync")
        path = rogers.store.path
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert all(f.exists() for f in files), [f.name for f in path.parent.iterdir()]
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        await rogers.stop()
