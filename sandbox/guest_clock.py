"""Host versions of WASI `clock_time_get` and `poll_oneoff` that keep guest sleeps inside the deadline.

wasmtime's own `poll_oneoff` blocks in the host, where epoch interruption cannot reach it, so
`time.sleep(3600)` would outlive any deadline. This shim (installed with Linker shadowing) sleeps for real
but never past the run's deadline: a sleep that would cross it blocks until the epoch deadline has
passed and then returns, and the guest traps with a timeout at its next instruction boundary check.
File-descriptor subscriptions are answered at once with ENOTSUP (the guest has no sockets or pipes).

`clock_time_get` is shadowed too so the guest's monotonic clock is the host's `time.monotonic_ns()`,
which is what CPython's absolute-deadline sleeps are compared against here.

These functions never raise: wasmtime-py passes host exceptions through a process-global slot that
concurrent runs would race on, so every failure is an errno.
"""

import struct
import threading
import time

from wasmtime import Caller, FuncType, Linker, Memory, ValType

from sandbox.epoch_ticker import EpochTicker

WASI_MODULE = "wasi_snapshot_preview1"

ERRNO_SUCCESS = 0
ERRNO_FAULT = 21
ERRNO_INVAL = 28
ERRNO_NOTSUP = 58

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
EVENTTYPE_CLOCK = 0
SUBSCRIPTION_CLOCK_ABSTIME = 1

SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32
MAX_SUBSCRIPTIONS = 64


class GuestClock:
    """Per-run clock and sleep shim bound to one run's deadline."""

    def __init__(self, ticker: EpochTicker, deadline_tick: int, deadline_monotonic: float) -> None:
        self._ticker = ticker
        self._deadline_tick = deadline_tick
        self._deadline_monotonic = deadline_monotonic
        self._started_ns = time.monotonic_ns()
        self._cancel = threading.Event()
        self.sleeps_cut_short = 0

    def cancel(self) -> None:
        self._cancel.set()

    def install(self, linker: Linker) -> None:
        i32, i64 = ValType.i32(), ValType.i64()
        linker.define_func(WASI_MODULE, "clock_time_get", FuncType([i32, i64, i32], [i32]), self._clock_time_get, True)
        linker.define_func(WASI_MODULE, "poll_oneoff", FuncType([i32, i32, i32, i32], [i32]), self._poll_oneoff, True)

    def _now_ns(self, clock_id: int) -> int:
        if clock_id == CLOCK_REALTIME:
            return time.time_ns()
        if clock_id == CLOCK_MONOTONIC:
            return time.monotonic_ns()
        return time.monotonic_ns() - self._started_ns  # process/thread CPU time: time since run start

    def _clock_time_get(self, caller: Caller, clock_id: int, _precision: int, out_ptr: int) -> int:
        try:
            memory = _memory(caller)
            if memory is None or clock_id not in (0, 1, 2, 3):
                return ERRNO_INVAL
            memory.write(caller, struct.pack("<Q", self._now_ns(clock_id)), out_ptr)
            return ERRNO_SUCCESS
        except Exception:
            return ERRNO_FAULT

    def _poll_oneoff(self, caller: Caller, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
        try:
            memory = _memory(caller)
            if memory is None or not 0 < nsubs <= MAX_SUBSCRIPTIONS:
                return ERRNO_INVAL
            raw = memory.read(caller, in_ptr, in_ptr + nsubs * SUBSCRIPTION_SIZE)
            if len(raw) != nsubs * SUBSCRIPTION_SIZE:
                return ERRNO_FAULT
            clocks: list[tuple[int, int]] = []
            others: list[tuple[int, int]] = []
            for index in range(nsubs):
                base = index * SUBSCRIPTION_SIZE
                userdata, tag = struct.unpack_from("<QB", raw, base)
                if tag == EVENTTYPE_CLOCK:
                    clock_id, timeout, _precision, flags = struct.unpack_from("<I4xQQH", raw, base + 16)
                    if flags & SUBSCRIPTION_CLOCK_ABSTIME:
                        timeout = max(0, timeout - self._now_ns(clock_id))
                    clocks.append((userdata, timeout))
                else:
                    others.append((userdata, tag))
            events = bytearray()
            if others:
                for userdata, tag in others:
                    events += struct.pack("<QHB5xQH6x", userdata, ERRNO_NOTSUP, tag, 0, 0)
            else:
                shortest = min(timeout for _, timeout in clocks)
                self._sleep(shortest / 1e9)
                for userdata, timeout in clocks:
                    if timeout == shortest:
                        events += struct.pack("<QHB5xQH6x", userdata, ERRNO_SUCCESS, EVENTTYPE_CLOCK, 0, 0)
            memory.write(caller, bytes(events), out_ptr)
            memory.write(caller, struct.pack("<I", len(events) // EVENT_SIZE), nevents_ptr)
            return ERRNO_SUCCESS
        except Exception:
            return ERRNO_FAULT

    def _sleep(self, seconds: float) -> None:
        if time.monotonic() + seconds < self._deadline_monotonic:
            self._cancel.wait(seconds)
            return
        # The sleep would cross the deadline: hold the guest until its epoch deadline has passed, so the
        # next epoch check traps; the real-time bound keeps a stalled ticker from pinning the thread.
        self.sleeps_cut_short += 1
        remaining = max(0.0, self._deadline_monotonic - time.monotonic())
        self._ticker.wait_for_tick(self._deadline_tick, remaining + 1.0)


def _memory(caller: Caller) -> Memory | None:
    memory = caller.get("memory")
    return memory if isinstance(memory, Memory) else None
