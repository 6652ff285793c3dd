"""Per-token request budgets: a token bucket per key, refilled continuously."""

import threading
import time


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
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
