"""Latency percentiles and the error-message rate limit, for the daemon's stats and errors topics."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class LatencyWindow:
    """The latest sample-to-forecast latencies (seconds); p50/p99 over them, in milliseconds."""

    def __init__(self, size: int = 16384) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.add = self._values.append  # hot path: one bound call per forecast

    def percentiles(self, clear: bool = True) -> tuple[float | None, float | None]:
        """(p50, p99) in ms of what was added since the last call (None when nothing was)."""
        if not self._values:
            return None, None
        arr = np.fromiter(self._values, np.float64)
        if clear:
            self._values.clear()
        p50, p99 = np.percentile(arr, [50, 99]) * 1000.0
        return round(float(p50), 3), round(float(p99), 3)


class RateLimit:
    """A token bucket: at most `rate` events per second (bursts up to `rate`); counts the rest."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.suppressed = 0
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """True if one more event may go out now."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self._at) * self.rate)
            self._at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            self.suppressed += 1
            return False
