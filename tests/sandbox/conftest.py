"""Compile the runtime once per test session (shared with the MAD suites, see tests/support/wasm_cache.py);
every test then builds its own Sandbox from that cache."""

from collections.abc import AsyncIterator

import pytest

from sandbox import LimitMaxima, Sandbox
from tests.support.wasm_cache import CompiledCache, shared_compiled_cache

__all__ = ["CompiledCache"]


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    return shared_compiled_cache(tmp_path_factory)


@pytest.fixture
async def sandbox(compiled_cache: CompiledCache) -> AsyncIterator[Sandbox]:
    box = Sandbox(compiled_cache.path, max_concurrency=2, maxima=LimitMaxima(timeout_s=10), pool_size=1)
    await box.start()
    yield box
    await box.close()
