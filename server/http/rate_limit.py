"""Request budgets: a token bucket per key, refilled continuously.

One limiter for every budget of the server: requests per ingest token
(`acquire`), and failed dashboard sign-ins per client address (`wait`, then
`spend` on a failure).
"""

import threading
import time

MAX_KEYS = 10_000  # buckets kept; beyond, every bucket starts full again


def retry_after(wait):
    """A `Retry-After` header value for a wait of `wait` seconds: whole seconds, at least 1.

    Example:
        >>> retry_after(0.2), retry_after(2.4)
        ('1', '3')
    """
    return str(max(1, round(wait + 0.5)))


class RateLimiter:
    """Allows `rate` requests per second per key, in bursts of up to `burst`.

    Example:
        >>> limiter = RateLimiter(rate=10, burst=2)
        >>> limiter.acquire("token-1"), limiter.acquire("token-1"), limiter.acquire("token-1") > 0
        (0.0, 0.0, True)
    """

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self._buckets = {}
        self._lock = threading.Lock()

    def acquire(self, key):
        """Take one request from `key`'s budget: 0.0 if allowed, else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            level = self._level(key, now)
            if level >= 1:
                self._store(key, level - 1, now)
                return 0.0
            self._store(key, level, now)
            return (1 - level) / self.rate

    def wait(self, key):
        """Seconds until `key` may make a request, 0.0 if now; takes nothing from its budget."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            level = self._level(key, time.monotonic())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def spend(self, key):
        """Take one request from `key`'s budget, even when it is empty (it stays at zero).

        Example: a failed sign-in, counted after the fact (`wait` said it could be tried).
        """
        now = time.monotonic()
        with self._lock:
            self._store(key, max(0.0, self._level(key, now) - 1), now)

    def _level(self, key, now):
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def _store(self, key, level, now):
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._buckets.clear()
        self._buckets[key] = (level, now)
