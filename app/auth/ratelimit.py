"""Per-caller token buckets: `burst` requests at once, refilled at `per_minute` per minute.

In memory, per app instance: with N instances behind a proxy a caller gets up to N times the rate. The bucket table
is pruned of full buckets when it grows, so many one-off callers (client addresses with auth off) cannot grow it
without bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, per_minute: int, burst: int) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until a token is available."""
        rate = per_minute / 60.0
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._prune(now, rate, burst)
                b = self._buckets[key] = _Bucket(float(burst), now)
            b.tokens = min(float(burst), b.tokens + (now - b.stamp) * rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / rate

    def _prune(self, now: float, rate: float, burst: int) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * rate < burst}
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: drop the stalest half rather than grow
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1].stamp)[MAX_BUCKETS // 2 :]
            self._buckets = dict(keep)


def retry_after_header(wait_s: float) -> str:
    """Retry-After is whole seconds; round up so a client that waits that long gets a token."""
    return str(max(1, math.ceil(wait_s)))
