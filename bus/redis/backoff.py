"""Retry pacing for a lost Redis: exponential, jittered, capped."""

from __future__ import annotations

import asyncio
import random

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
"""Failures that mean "Redis is (briefly) gone": wait and try again, never crash a loop."""

FIRST_DELAY = 0.01


class Backoff:
    """Doubles the pause after each failure up to ``cap``; ``reset`` after a success."""

    __slots__ = ("cap", "delay", "failures")

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.0
        self.failures = 0

    async def wait(self, limit: float | None = None) -> None:
        """Pause before the next try; never longer than ``limit`` seconds (what is left of a deadline)."""
        self.failures += 1
        self.delay = min(self.cap, max(FIRST_DELAY, self.delay * 2))
        pause = self.delay * random.uniform(0.5, 1.0)
        await asyncio.sleep(pause if limit is None else max(0.0, min(pause, limit)))

    def reset(self) -> bool:
        """Forget past failures; ``True`` if there were any (the caller just reconnected)."""
        had = self.failures > 0
        self.delay = 0.0
        self.failures = 0
        return had


def is_nogroup(exc: BaseException) -> bool:
    """The group (or its stream) vanished: Redis restarted without persistence, or a janitor destroyed it."""
    return "NOGROUP" in str(exc)
