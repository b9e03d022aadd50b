"""One compile of the sandbox runtime per test session, shared by every suite that needs the sandbox.

Compiling takes about 90 s of CPU, so the first suite to ask compiles into a session-scoped directory
that stands for the machine's cache, and every Sandbox and ecosystem of the session points at it
(``[sandbox] cache_dir``), exactly as every data directory of one machine shares the user's cache.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import PYTHON_WASM_SHA256, Sandbox
from sandbox.compiled_cache import cache_file_name


@dataclass(frozen=True)
class CompiledCache:
    path: Path
    first_start_from_cache: bool
    progress: list[str]

    @property
    def artifact(self) -> Path:
        return self.path / cache_file_name(PYTHON_WASM_SHA256)


_compiled: dict[Path, CompiledCache] = {}


def shared_compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    """The session's compiled module (compiled on first use, in a directory nobody else writes)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _compiled:
        cache_dir = base / "machine-cache" / "mad-ecosystem" / "wasm"
        progress: list[str] = []

        async def compile_once() -> bool:
            box = Sandbox(cache_dir, pool_size=0, on_progress=progress.append)
            await box.start()
            from_cache = box.compiled_from_cache
            await box.close()
            return from_cache

        _compiled[base] = CompiledCache(cache_dir, asyncio.run(compile_once()), progress)
    return _compiled[base]
