"""Checksum pinning and the compiled-module cache (a second start must load, not compile)."""

import os
import shutil
import stat
from pathlib import Path

import pytest
from wasmtime import wat2wasm

from sandbox import BUNDLED_PYTHON, BinaryChecksumError, InsecureCacheError, RuntimeBinary, Sandbox
from sandbox.compiled_cache import cache_file_name, load_or_compile, make_engine
from sandbox.runtime import file_sha256
from tests.sandbox.conftest import CompiledCache


def test_first_start_compiles_and_reports_progress(compiled_cache: CompiledCache) -> None:
    assert compiled_cache.first_start_from_cache is False
    assert compiled_cache.progress[0].startswith("compiling python.wasm")
    assert compiled_cache.progress[-1].startswith("compiled python.wasm in ")


def test_artifact_is_private_and_keyed(compiled_cache: CompiledCache) -> None:
    artifact = compiled_cache.path / cache_file_name(BUNDLED_PYTHON.sha256)
    assert "wasmtime50.0.1" in artifact.name and BUNDLED_PYTHON.sha256[:16] in artifact.name
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600
    assert stat.S_IMODE(compiled_cache.path.stat().st_mode) == 0o700
    assert [p.name for p in compiled_cache.path.iterdir()] == [artifact.name]  # no temp files left


async def test_second_start_loads_from_cache(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path)
    await box.start()
    assert box.compiled_from_cache is True
    result = await box.run_python("print(6 * 7)")
    await box.close()
    assert result.stdout == "42\n"


async def test_tampered_binary_is_refused_even_with_a_cached_artifact(
    compiled_cache: CompiledCache, tmp_path: Path
) -> None:
    tampered = tmp_path / "python.wasm"
    shutil.copyfile(BUNDLED_PYTHON.path, tampered)
    with tampered.open("r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    box = Sandbox(compiled_cache.path, binary=RuntimeBinary(path=tampered, sha256=BUNDLED_PYTHON.sha256))
    with pytest.raises(BinaryChecksumError, match="refusing to load"):
        await box.start()
    await box.close()


async def test_missing_binary_is_refused(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "cache", binary=RuntimeBinary(path=tmp_path / "nope.wasm", sha256="0" * 64))
    with pytest.raises(BinaryChecksumError, match="not found"):
        await box.start()
    await box.close()


async def test_world_writable_cache_dir_is_refused(compiled_cache: CompiledCache, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(compiled_cache.path, cache)
    cache.chmod(0o777)
    box = Sandbox(cache)
    with pytest.raises(InsecureCacheError, match="writable"):
        await box.start()
    await box.close()


async def test_group_writable_artifact_is_refused(compiled_cache: CompiledCache, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(compiled_cache.path, cache)
    (cache / cache_file_name(BUNDLED_PYTHON.sha256)).chmod(0o620)
    box = Sandbox(cache)
    with pytest.raises(InsecureCacheError, match="writable"):
        await box.start()
    await box.close()


@pytest.mark.skipif(os.getuid() != 0, reason="changing a file's owner needs root")
async def test_artifact_owned_by_another_user_is_refused(compiled_cache: CompiledCache, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(compiled_cache.path, cache)
    os.chown(cache / cache_file_name(BUNDLED_PYTHON.sha256), 4321, -1)
    box = Sandbox(cache)
    with pytest.raises(InsecureCacheError, match="owned by uid 4321"):
        await box.start()
    await box.close()


async def test_symlinked_artifact_is_refused(compiled_cache: CompiledCache, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    name = cache_file_name(BUNDLED_PYTHON.sha256)
    (cache / name).symlink_to(compiled_cache.path / name)
    box = Sandbox(cache)
    with pytest.raises(InsecureCacheError, match="safely"):
        await box.start()
    await box.close()


def test_corrupt_artifact_is_recompiled_not_loaded(tmp_path: Path) -> None:
    # A tiny real module keeps this fast; load_or_compile treats any pinned binary the same way.
    wasm = tmp_path / "tiny.wasm"
    wasm.write_bytes(wat2wasm('(module (func (export "_start")))'))
    binary = RuntimeBinary(path=wasm, sha256=file_sha256(wasm))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    artifact = cache / cache_file_name(binary.sha256)
    artifact.write_bytes(b"not a wasmtime artifact")
    artifact.chmod(0o600)
    engine = make_engine()
    first = load_or_compile(engine, binary, cache)
    assert first.from_cache is False
    second = load_or_compile(engine, binary, cache)
    assert second.from_cache is True
    assert [e.name for e in second.module.exports] == ["_start"]
