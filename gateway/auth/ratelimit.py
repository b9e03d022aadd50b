"""Token-bucket rate limits keyed by principal, IP or login source, with an injectable clock.

Each key has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one. When the bucket is empty the caller learns how long until one token is
back (the Retry-After). Buckets are bounded in number (least recently used dropped:
a dropped bucket is a full one, which only ever errs towards letting a request in).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
MAX_BUCKETS = 100_000


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_buckets: int = MAX_BUCKETS):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str) -> int:
        """Take one token for ``key``: 0 if allowed, else whole seconds until a token is available (>= 1)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(tokens=float(self.burst), updated=now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
