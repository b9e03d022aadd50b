"""Compile python.wasm once and keep the native artifact in a private cache directory.

Compiling takes seconds and hundreds of MB; deserializing a cached artifact takes well under a millisecond.
The artifact is native code, so it is only loaded from a directory and file that nobody else can write.
"""

import hashlib
import json
import logging
import os
import platform
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from wasmtime import Config, Engine, Module, WasmtimeError

from sandbox.errors import InsecureCacheError
from sandbox.runtime import RuntimeBinary, verify_binary

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]

# Everything that changes the generated code; part of the cache key.
ENGINE_SETTINGS: dict[str, object] = {"consume_fuel": True, "epoch_interruption": True}


def make_engine() -> Engine:
    config = Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return Engine(config)


def cache_file_name(wasm_sha256: str) -> str:
    """Name the artifact after everything it depends on, so a mismatch is a cache miss, not a load error."""
    wasmtime_version = version("wasmtime")
    settings = json.dumps({**ENGINE_SETTINGS, "arch": platform.machine()}, sort_keys=True)
    settings_digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return f"python-wasmtime{wasmtime_version}-cfg{settings_digest}-wasm{wasm_sha256[:16]}.cwasm"


def _check_private(st: os.stat_result, what: Path) -> None:
    if st.st_uid != os.getuid():
        raise InsecureCacheError(f"{what} is owned by uid {st.st_uid}, not {os.getuid()}; refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureCacheError(
            f"{what} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it"
        )


def ensure_private_dir(cache_dir: Path) -> None:
    """Create the cache directory 0700, or refuse an existing one that others could write into."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(cache_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureCacheError(f"{cache_dir} is not a directory (symlinks are refused)")
    _check_private(st, cache_dir)


def _artifact_is_loadable(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise InsecureCacheError(f"cannot open cached artifact {path} safely: {exc}") from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise InsecureCacheError(f"cached artifact {path} is not a regular file")
    _check_private(st, path)
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class LoadedModule:
    module: Module
    from_cache: bool
    seconds: float
    artifact: Path


def load_or_compile(
    engine: Engine, binary: RuntimeBinary, cache_dir: Path, on_progress: ProgressCallback | None = None
) -> LoadedModule:
    """Blocking: verify the binary, then deserialize the cached artifact or compile and cache it."""
    verify_binary(binary)
    ensure_private_dir(cache_dir)
    artifact = cache_dir / cache_file_name(binary.sha256)
    started = time.perf_counter()
    if _artifact_is_loadable(artifact):
        try:
            module = Module.deserialize_file(engine, str(artifact))
            return LoadedModule(module, True, time.perf_counter() - started, artifact)
        except WasmtimeError as exc:
            log.warning("cached module %s unusable (%s); recompiling", artifact, exc)
    _report(on_progress, f"compiling {binary.path.name} to native code (first start only, takes seconds)")
    module = Module.from_file(engine, str(binary.path))
    _write_atomically(artifact, module.serialize())
    seconds = time.perf_counter() - started
    _report(on_progress, f"compiled {binary.path.name} in {seconds:.1f} s; cached at {artifact}")
    return LoadedModule(module, False, seconds, artifact)


def _report(on_progress: ProgressCallback | None, message: str) -> None:
    log.info(message)
    if on_progress is not None:
        on_progress(message)
