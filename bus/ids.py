"""Sortable unique ids, so message order is visible in the id itself.

32 lowercase hex characters: 12 of milliseconds since the epoch, 8 of a random
per-process prefix, 12 of a per-process counter. Ids from one process are strictly
increasing; across processes they sort by time to the millisecond and never
collide (the prefix has 2^32 values, the counter 2^48). Every bus message needs
one, so generation is tuned: the first 30 characters only change once per
millisecond or per 256 ids, and are cached; only the last byte is looked up.
"""

from __future__ import annotations

import itertools
import os
import time

_HEX_BYTE = tuple(f"{i:02x}" for i in range(256))
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_next = _counter.__next__
_time_ns = time.time_ns
_prefix = os.urandom(4).hex()
_head: tuple[int, int, str] = (-1, -1, "")
"""(millisecond, counter >> 8, the id's first 30 characters): replaced whole, so threads never see a torn cache."""


def new_id() -> str:
    """A new id, monotonic within this process (``next`` on a count is atomic under the GIL)."""
    global _head
    ms = _time_ns() // 1_000_000
    n = _next() & 0xFFFFFFFFFFFF
    high = n >> 8
    head = _head
    if head[0] != ms or head[1] != high:
        head = _head = (ms, high, f"{ms:012x}{_prefix}{high:010x}")
    return head[2] + _HEX_BYTE[n & 0xFF]


def reseed_after_fork() -> None:
    """Give a forked child its own prefix so parent and child ids cannot collide."""
    global _prefix, _head
    _prefix = os.urandom(4).hex()
    _head = (-1, -1, "")


os.register_at_fork(after_in_child=reseed_after_fork)

ID_PATTERN = r"^[0-9a-f]{32}$"
