"""One sandboxed run: a fresh Store, WASI context and scratch directory per call (blocking; run in a thread).

Guest view: argv `python -u -S /code/main.py` (the program as a read-only file, so tracebacks show source
lines); empty environment; the scratch directory (read-write) is the guest's `/` and working directory,
also reachable as `/scratch`; input files are read-only under `/input`; no other filesystem, no sockets,
no processes, no threads. stdout/stderr go to capped in-memory sinks.
"""

import base64
import errno
import math
import os
import stat
import tempfile
import time
from pathlib import Path

from wasmtime import Engine, ExitTrap, Linker, Memory, Module, Store, Trap, TrapCode, WasiConfig, WasmtimeError

from sandbox.epoch_ticker import EpochTicker
from sandbox.guest_clock import GuestClock
from sandbox.limits import CollectedFile, LimitHit, RunRequest, RunResult

# -u: unbuffered, so output printed before a trap survives; -S: no site module (faster start).
GUEST_ARGV = ["python", "-u", "-S", "/code/main.py"]
SCRATCH_GUEST_PATH = "/scratch"
INPUT_GUEST_PATH = "/input"
CODE_GUEST_PATH = "/code"
MAX_COLLECTED_FILES = 200
# Extra ticks beyond the timeout before the sleep shim gives up waiting: the deadline is relative to an
# epoch that may already be one tick ahead of the count we read.
DEADLINE_TICK_SLACK = 2


class OutputSink:
    """Collects one guest stream up to a byte cap; past it, writes fail with EFBIG (never spill to disk)."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self.truncated = False

    def write(self, data: bytes) -> int:
        room = self._cap - self._size
        if room <= 0:
            self.truncated = True
            return -errno.EFBIG
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self._chunks.append(data)
        self._size += len(data)
        return len(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")


def run_cell(engine: Engine, module: Module, ticker: EpochTicker, request: RunRequest) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="wasm-cell-") as root:
        scratch = Path(root, "scratch")
        scratch.mkdir(mode=0o700)
        inputs = Path(root, "input")
        inputs.mkdir(mode=0o700)
        for name, data in request.input_files.items():
            (inputs / name).write_bytes(data)
            (inputs / name).chmod(0o400)
        code = Path(root, "code")
        code.mkdir(mode=0o700)
        (code / "main.py").write_text(request.code, encoding="utf-8")
        (code / "main.py").chmod(0o400)
        result = _execute(engine, module, ticker, request, scratch, inputs, code)
        if request.collect_files:
            files, truncated = collect_scratch(scratch, request.limits.collect_bytes)
            result = result.model_copy(update={"files": files, "files_truncated": truncated})
        return result


def _execute(
    engine: Engine,
    module: Module,
    ticker: EpochTicker,
    request: RunRequest,
    scratch: Path,
    inputs: Path,
    code: Path,
) -> RunResult:
    limits = request.limits
    stdout, stderr = OutputSink(limits.output_bytes), OutputSink(limits.output_bytes)
    wasi = WasiConfig()
    wasi.argv = GUEST_ARGV
    wasi.stdout_custom = stdout.write
    wasi.stderr_custom = stderr.write
    wasi.preopen_dir(str(scratch), SCRATCH_GUEST_PATH, True)
    wasi.preopen_dir(str(scratch), "/", True)
    wasi.preopen_dir(str(inputs), INPUT_GUEST_PATH, False)
    wasi.preopen_dir(str(code), CODE_GUEST_PATH, False)

    store = Store(engine)
    exit_code: int | None = None
    trap_code: TrapCode | None = None
    trap_message = ""
    memory_bytes = 0
    ticks = math.ceil(limits.timeout_s / ticker.interval_s)
    start_tick = ticker.acquire()
    clock = GuestClock(ticker, start_tick + ticks + DEADLINE_TICK_SLACK, time.monotonic() + limits.timeout_s)
    started = time.perf_counter()
    try:
        store.set_wasi(wasi)
        store.set_fuel(limits.fuel)
        store.set_limits(memory_size=limits.memory_bytes, instances=1, memories=1)
        store.set_epoch_deadline(ticks)
        linker = Linker(engine)
        linker.allow_shadowing = True
        linker.define_wasi()
        clock.install(linker)
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        memory = exports["memory"]
        try:
            exports["_start"](store)
            exit_code = 0
        except ExitTrap as exc:
            exit_code = exc.code
        except Trap as exc:
            trap_code = exc.trap_code
            trap_message = exc.message
        if isinstance(memory, Memory):
            memory_bytes = memory.data_len(store)
        fuel_used = limits.fuel - store.get_fuel()
    except (WasmtimeError, Trap) as exc:
        trap_message = str(exc)
        fuel_used = limits.fuel - _fuel_left(store, limits.fuel)
    finally:
        duration_ms = (time.perf_counter() - started) * 1000
        clock.cancel()
        ticker.release()
        store.close()  # always: a trapped store with output callbacks attached must not outlive the run

    stderr_text = stderr.text()
    if exit_code is None and trap_code is None:
        stderr_text += f"\n[sandbox] wasmtime error: {trap_message}\n"
    return RunResult(
        stdout=stdout.text(),
        stderr=stderr_text,
        stdout_truncated=stdout.truncated,
        stderr_truncated=stderr.truncated,
        exit_code=exit_code,
        limit_hit=_limit_hit(trap_code, exit_code, stderr_text, stdout, stderr, memory_bytes, limits.memory_bytes),
        trap=trap_code.name.lower() if trap_code is not None else ("host_error" if exit_code is None else None),
        fuel_used=fuel_used,
        duration_ms=round(duration_ms, 3),
        memory_bytes=memory_bytes,
    )


def _fuel_left(store: Store, default: int) -> int:
    try:
        return store.get_fuel()
    except WasmtimeError:
        return default


def _limit_hit(
    trap_code: TrapCode | None,
    exit_code: int | None,
    stderr_text: str,
    stdout: OutputSink,
    stderr: OutputSink,
    memory_bytes: int,
    memory_cap: int,
) -> LimitHit | None:
    """Name the budget that ended the run: a trap's cause first, then memory, then output caps."""
    if trap_code == TrapCode.INTERRUPT:
        return "timeout"
    if trap_code == TrapCode.OUT_OF_FUEL:
        return "fuel"
    if exit_code != 0 and _ran_out_of_memory(stderr_text, memory_bytes, memory_cap, trap_code):
        return "memory"
    if stdout.truncated or stderr.truncated:
        return "output"
    return None


def _ran_out_of_memory(stderr_text: str, memory_bytes: int, memory_cap: int, trap_code: TrapCode | None) -> bool:
    # A refused memory.grow surfaces as a guest MemoryError, or (inside C code) as an abort trap with the
    # linear memory already close to the cap.
    last_line = stderr_text.rstrip().rsplit("\n", 1)[-1]
    if last_line.startswith("MemoryError") or "out of memory" in stderr_text.lower():
        return True
    return trap_code is not None and memory_bytes >= memory_cap - 2 * 1024 * 1024


def collect_scratch(scratch: Path, budget: int) -> tuple[list[CollectedFile], bool]:
    """Read regular files left in scratch without following links, within a total byte budget."""
    files: list[CollectedFile] = []
    truncated = False
    for dirpath, dirnames, filenames in os.walk(scratch, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if len(files) >= MAX_COLLECTED_FILES:
                return files, True
            read = _read_regular(path, scratch, budget)
            if read is None:
                continue
            collected, consumed = read
            budget -= consumed
            truncated = truncated or collected.truncated
            files.append(collected)
    return files, truncated


def _read_regular(path: Path, scratch: Path, budget: int) -> tuple[CollectedFile, int] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # a symlink (ELOOP) or something we may not open: never followed
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        data = handle.read(max(budget, 0))
    relative = path.relative_to(scratch).as_posix()
    is_truncated = st.st_size > len(data)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        content = CollectedFile(
            path=relative,
            size=st.st_size,
            encoding="base64",
            content=base64.b64encode(data).decode(),
            truncated=is_truncated,
        )
    else:
        content = CollectedFile(path=relative, size=st.st_size, encoding="utf-8", content=text, truncated=is_truncated)
    return content, len(data)
