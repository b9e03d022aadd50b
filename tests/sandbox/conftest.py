"""Compile python.wasm once per test session; every test then builds its own Sandbox from that cache."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import LimitMaxima, Sandbox


@dataclass(frozen=True)
class CompiledCache:
    path: Path
    first_start_from_cache: bool
    progress: list[str]


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    cache_dir = tmp_path_factory.mktemp("wasm-cache") / "cache" / "wasm"
    progress: list[str] = []

    async def compile_once() -> bool:
        box = Sandbox(cache_dir, on_progress=progress.append)
        await box.start()
        from_cache = box.compiled_from_cache
        await box.close()
        return from_cache

    return CompiledCache(cache_dir, asyncio.run(compile_once()), progress)


@pytest.fixture
async def sandbox(compiled_cache: CompiledCache) -> AsyncIterator[Sandbox]:
    box = Sandbox(compiled_cache.path, max_concurrency=2, maxima=LimitMaxima(timeout_s=10))
    await box.start()
    yield box
    await box.close()
