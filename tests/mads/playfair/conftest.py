"""Playfair's fixtures: the real ecosystem (core MADs + Playfair) with its wasm cache pre-seeded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.ecosystem import Running
from tests.support.sandbox_ecosystem import sandbox_ecosystem, sandbox_settings
from tests.support.wasm_cache import CompiledCache, shared_compiled_cache


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    return shared_compiled_cache(tmp_path_factory)


@pytest.fixture
async def playfair(tmp_path: Path, compiled_cache: CompiledCache) -> AsyncIterator[Running]:
    settings = sandbox_settings(tmp_path / "data", mads=["rogers", "fiedler", "grace", "playfair"])
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco:
        yield eco
