"""A pool of prepared cells: each is used for one program and then discarded; the pool refills in the background.

Refilling prepares one cell at a time in a worker thread (the event loop only awaits it), then rests so
that preparation uses at most `cpu_share` of one core: after a preparation that took t seconds it waits
t * (1 - cpu_share) / cpu_share before the next. A request that finds the pool empty is not delayed by
the refill; it prepares its own cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from sandbox.cell import Cell, CellShape

log = logging.getLogger(__name__)


class CellPool:
    def __init__(self, make_cell: Callable[[], Cell], shape: CellShape, size: int, cpu_share: float) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        self.shape = shape
        self.size = size
        self.cpu_share = cpu_share
        self._make_cell = make_cell
        self._ready: deque[Cell] = deque()
        self._wanted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.prepared = 0
        self.prepare_seconds_total = 0.0

    @property
    def ready(self) -> int:
        return len(self._ready)

    def put(self, cell: Cell) -> None:
        """Add a cell prepared elsewhere (the one start() made)."""
        if self._closed or len(self._ready) >= self.size:
            cell.discard()
            return
        self._ready.append(cell)

    def start(self) -> None:
        if self._task is None and self.size > 0:
            self._wanted.set()
            self._task = asyncio.create_task(self._refill(), name="sandbox-pool-refill")

    def take(self, shape: CellShape) -> Cell | None:
        """A prepared cell of this shape, or None (the caller prepares its own); wakes the refill."""
        if shape != self.shape or not self._ready:
            self._wanted.set()
            return None
        cell = self._ready.popleft()
        self._wanted.set()
        return cell

    async def wait_full(self) -> None:
        """For benchmarks and tests: until every slot holds a prepared cell."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._ready) >= self.size or self._closed)

    async def _refill(self) -> None:
        while not self._closed:
            await self._wanted.wait()
            self._wanted.clear()
            while not self._closed and len(self._ready) < self.size:
                cell = self._make_cell()
                try:
                    await asyncio.to_thread(cell.prepare)
                except Exception:
                    log.exception("sandbox pool: preparing a cell failed")
                    await self._rest(1.0)
                    continue
                if self._closed:
                    await asyncio.to_thread(cell.discard)
                    return
                self._ready.append(cell)
                self.prepared += 1
                self.prepare_seconds_total += cell.prepare_seconds
                async with self._changed:
                    self._changed.notify_all()
                rest = cell.prepare_seconds * (1 - self.cpu_share) / self.cpu_share
                if rest > 0:
                    await self._rest(rest)

    async def _rest(self, seconds: float) -> None:
        """Sleep between preparations (the CPU budget), cut short by close()."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._closed), seconds)

    async def close(self) -> None:
        self._closed = True
        self._wanted.set()
        async with self._changed:
            self._changed.notify_all()
        if self._task is not None:
            # Not cancelled: a preparation in its worker thread finishes, and its cell is discarded.
            try:
                await self._task
            except Exception:
                log.exception("sandbox pool: refill task failed")
        cells = list(self._ready)
        self._ready.clear()
        for cell in cells:
            await asyncio.to_thread(cell.discard)
