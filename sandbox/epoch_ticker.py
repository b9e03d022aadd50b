"""One thread per engine that advances the wasmtime epoch, which is what enforces wall-clock deadlines.

The ticker runs only while at least one cell is active and stops for good on close(). It also counts its
ticks so host code (the sleep shim) can wait until a store's epoch deadline has really passed.
"""

import threading

from wasmtime import Engine

TICK_SECONDS = 0.01


class EpochTicker:
    def __init__(self, engine: Engine, interval_s: float = TICK_SECONDS) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._active = 0
        self._ticks = 0
        self._thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def ticks(self) -> int:
        with self._cond:
            return self._ticks

    def acquire(self) -> int:
        """Mark a run active (starting the thread on first use); returns the tick count now."""
        with self._cond:
            if self._stop.is_set():
                raise RuntimeError("epoch ticker is stopped")
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasm-epoch-ticker", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._ticks

    def release(self) -> None:
        with self._cond:
            self._active -= 1

    def wait_for_tick(self, target: int, timeout_s: float) -> bool:
        """Block until the tick count reaches target (True) or timeout_s passes or the ticker stops (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ticks >= target or self._stop.is_set(), timeout_s) and (
                self._ticks >= target
            )

    def stop(self) -> None:
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._active > 0 or self._stop.is_set())
            if self._stop.wait(self._interval_s):
                return
            self._engine.increment_epoch()
            with self._cond:
                self._ticks += 1
                self._cond.notify_all()
