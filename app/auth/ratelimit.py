"""Per-caller token buckets (`RateLimiter`) and the login throttle (`LoginThrottle`).

Buckets: `burst` requests at once, refilled at `per_minute` per minute. In memory, per app instance: with N
instances behind a proxy a caller gets up to N times the rate. The bucket table is pruned of full buckets when it
grows, so many one-off callers (client addresses with auth off) cannot grow it without bound.

Login throttle: failed logins are counted per party, the pair (client address, first characters of the key tried),
and after a few each further attempt of that party waits twice as long as the last (exponential backoff, capped).
The pair, not the address alone: users behind one proxy share an address, and one of them mistyping (or an attacker
among them guessing) must never lock out another's valid key, whose prefix differs. Nor the prefix alone: an attacker
elsewhere who knows a victim's key prefix cannot lock the victim out either. A party that rotates prefixes gets no
backoff, but each attempt then costs what any request with a wrong API key costs, and 256-bit keys are not guessable.
"""

from __future__ import annotations

import hashlib
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


@dataclass
class _Failures:
    count: int
    until: float  # no attempt before this time
    last: float


class LoginThrottle:
    FREE_FAILURES = 3  # typos are free
    BASE_S = 1.0  # the first backoff; each further failure doubles it
    MAX_S = 15 * 60.0
    PREFIX_CHARS = 12  # `qw_` + 9 random characters (54 bits): someone else's key does not share them by chance
    MAX_PARTIES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._parties: dict[str, _Failures] = {}

    def party(self, address: str, key: str) -> str:
        """Who is trying: a digest of the address and the key's prefix (no key material kept in memory)."""
        return hashlib.sha256(f"{address}\x00{key.strip()[: self.PREFIX_CHARS]}".encode()).hexdigest()

    def wait(self, party: str) -> float:
        """Seconds before `party` may try again; 0.0 when it may try now."""
        with self._lock:
            f = self._parties.get(party)
            return max(0.0, f.until - self._clock()) if f else 0.0

    def failed(self, party: str) -> float:
        """Count a failed attempt; the backoff it earns (0.0 while the free failures last)."""
        now = self._clock()
        with self._lock:
            f = self._parties.get(party)
            if f is None or now - f.last > self.MAX_S:  # quiet long enough: start over
                if len(self._parties) >= self.MAX_PARTIES:
                    self._prune(now)
                f = self._parties[party] = _Failures(0, now, now)
            f.count += 1
            f.last = now
            over = f.count - self.FREE_FAILURES
            backoff = 0.0 if over <= 0 else min(self.MAX_S, self.BASE_S * 2 ** (over - 1))
            f.until = now + backoff
            return backoff

    def succeeded(self, party: str) -> None:
        with self._lock:
            self._parties.pop(party, None)

    def _prune(self, now: float) -> None:
        self._parties = {p: f for p, f in self._parties.items() if now - f.last <= self.MAX_S}
        if len(self._parties) >= self.MAX_PARTIES:  # all recent: drop the stalest half rather than grow
            keep = sorted(self._parties.items(), key=lambda kv: kv[1].last)[self.MAX_PARTIES // 2 :]
            self._parties = dict(keep)
