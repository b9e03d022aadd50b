"""The Sandbox service: owns the engine, the compiled module, the epoch ticker and the concurrency limit.

Everything blocking (checksum, compile or cache load, each run) happens in worker threads, so the event
loop keeps serving while cells execute.
"""

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wasmtime import Module

from sandbox.cell import run_cell
from sandbox.compiled_cache import LoadedModule, ProgressCallback, load_or_compile, make_engine
from sandbox.epoch_ticker import EpochTicker
from sandbox.errors import SandboxStateError
from sandbox.html_extract import PageExtract, extract_html_in_cell
from sandbox.limits import LimitMaxima, RunLimits, RunRequest, RunResult
from sandbox.runtime import BUNDLED_PYTHON, RuntimeBinary

log = logging.getLogger(__name__)


class Sandbox:
    """Runs untrusted Python in fresh WASM cells. `await start()` once, then `run_python` many times."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_concurrency: int = 2,
        maxima: LimitMaxima | None = None,
        binary: RuntimeBinary = BUNDLED_PYTHON,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.cache_dir = Path(cache_dir)
        self.maxima = maxima or LimitMaxima()
        self.max_concurrency = max_concurrency
        self._binary = binary
        self._on_progress = on_progress
        self._engine = make_engine()
        self._ticker = EpochTicker(self._engine)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._loaded: LoadedModule | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Verify the binary and load the compiled module from cache, compiling it (in a thread) if needed."""
        async with self._start_lock:
            if self._closed:
                raise SandboxStateError("sandbox is closed")
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(
                    load_or_compile, self._engine, self._binary, self.cache_dir, self._on_progress
                )

    @property
    def compiled_from_cache(self) -> bool:
        """True when start() deserialized a cached artifact instead of compiling."""
        return self._require_module()[1].from_cache

    @property
    def load_seconds(self) -> float:
        return self._require_module()[1].seconds

    @property
    def active_runs(self) -> int:
        """Cells executing right now (never above max_concurrency)."""
        return self._in_flight

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

    async def close(self) -> None:
        """Refuse new runs, wait for in-flight ones (each bounded by its deadline), then stop the ticker."""
        self._closed = True
        await self._idle.wait()
        await asyncio.to_thread(self._ticker.stop)

    async def __aenter__(self) -> "Sandbox":
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self, request: RunRequest) -> RunResult:
        if self._closed:
            raise SandboxStateError("sandbox is closed")
        module, _ = self._require_module()
        await self._semaphore.acquire()
        if self._closed:
            self._semaphore.release()
            raise SandboxStateError("sandbox is closed")
        self._in_flight += 1
        self._idle.clear()
        # A worker thread cannot be cancelled: if the caller is cancelled the cell still runs to its
        # deadline, so the slot is released when the thread finishes, not when the caller stops waiting.
        future = asyncio.ensure_future(asyncio.to_thread(run_cell, self._engine, module, self._ticker, request))
        future.add_done_callback(self._run_finished)
        return await asyncio.shield(future)

    def _run_finished(self, future: "asyncio.Future[RunResult]") -> None:
        if not future.cancelled():
            future.exception()  # mark retrieved: the awaiting caller may have been cancelled
        self._semaphore.release()
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def _require_module(self) -> tuple[Module, LoadedModule]:
        if self._loaded is None:
            raise SandboxStateError("sandbox not started: await start() first")
        return self._loaded.module, self._loaded
