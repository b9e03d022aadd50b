"""Fixtures: a real InMemoryBus and a real Rogers on a SQLite file under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.redaction import SecretRedactor
from mads.rogers import Rogers
from tests.mads.rogers.support import Echo


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    b = InMemoryBus()
    await b.start()
    yield b
    await b.close()


@pytest.fixture
def redactor() -> SecretRedactor:
    """A fresh real redactor: the one the host would hand Rogers (and Turing would feed)."""
    return SecretRedactor()


@pytest.fixture
async def rogers(bus: InMemoryBus, tmp_path: Path, redactor: SecretRedactor) -> AsyncIterator[Rogers]:
    mad = Rogers(MadContext(bus=bus, data_dir=tmp_path, redactor=redactor))
    await mad.start()
    yield mad
    await mad.stop()


@pytest.fixture
async def echo(bus: InMemoryBus, tmp_path: Path) -> AsyncIterator[Echo]:
    mad = Echo(MadContext(bus=bus, data_dir=tmp_path))
    await mad.start()
    yield mad
    await mad.stop()
