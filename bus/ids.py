"""Sortable unique ids, so message order is visible in the id itself.

32 lowercase hex characters: 12 of milliseconds since the epoch, 8 of a random
per-process prefix, 12 of a per-process counter. Ids from one process are strictly
increasing; across processes they sort by time to the millisecond and never
collide (the prefix has 2^32 values, the counter 2^48). Generation takes well
under a microsecond, which matters: every bus message needs one.
"""

from __future__ import annotations

import itertools
import os
import time

_prefix = os.urandom(4).hex()
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


def new_id() -> str:
    """A new id, monotonic within this process (``next`` on a count is atomic under the GIL)."""
    return f"{time.time_ns() // 1_000_000:012x}{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"


def reseed_after_fork() -> None:
    """Give a forked child its own prefix so parent and child ids cannot collide."""
    global _prefix
    _prefix = os.urandom(4).hex()


os.register_at_fork(after_in_child=reseed_after_fork)

ID_PATTERN = r"^[0-9a-f]{32}$"
