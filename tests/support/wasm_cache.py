"""One compile of python.wasm per test session, shared by every suite that needs the sandbox.

Compiling takes seconds and ~600 MB, so the first suite to ask compiles into a session directory
and the others reuse that artifact: tests/sandbox reads it directly, ecosystem tests copy it into
their data directory's ``cache/wasm`` (a pre-seeded cache, exactly what a second boot finds).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import BUNDLED_PYTHON, Sandbox
from sandbox.compiled_cache import cache_file_name


@dataclass(frozen=True)
class CompiledCache:
    path: Path
    first_start_from_cache: bool
    progress: list[str]

    @property
    def artifact(self) -> Path:
        return self.path / cache_file_name(BUNDLED_PYTHON.sha256)


_compiled: dict[Path, CompiledCache] = {}


def shared_compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    """The session's compiled module (compiled on first use, in a directory nobody else writes)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _compiled:
        cache_dir = base / "shared-wasm-cache" / "cache" / "wasm"
        progress: list[str] = []

        async def compile_once() -> bool:
            box = Sandbox(cache_dir, on_progress=progress.append)
            await box.start()
            from_cache = box.compiled_from_cache
            await box.close()
            return from_cache

        _compiled[base] = CompiledCache(cache_dir, asyncio.run(compile_once()), progress)
    return _compiled[base]


def seed_data_dir(data_dir: Path, compiled: CompiledCache) -> Path:
    """Copy the compiled artifact into ``<data_dir>/cache/wasm`` with the modes the sandbox insists on."""
    target_dir = data_dir / "cache" / "wasm"
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target_dir, 0o700)
    target = target_dir / compiled.artifact.name
    shutil.copyfile(compiled.artifact, target)
    os.chmod(target, 0o600)
    return target
