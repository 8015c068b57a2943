"""The bounded queue between the network thread and the inference thread.

Memory stays bounded whatever the senders do. When the queue is full the configured policy
decides, and every sample it costs is counted:

- `drop-oldest` (default): make room by discarding the oldest queued sample; fresh data wins,
  which suits forecasting (a late forecast is worth less than a current one);
- `drop-newest`: refuse the arriving sample;
- `block`: the source waits for room, pushing back to the broker (with MQTT the broker then
  queues QoS 1 samples for us; a block longer than the keep-alive drops the connection).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

POLICIES = ("drop-oldest", "drop-newest", "block")
T = TypeVar("T")


class Backlog(Generic[T]):
    """A thread-safe bounded FIFO with a full-queue policy and counters."""

    def __init__(self, maxsize: int, policy: str = "drop-oldest", on_drop: Callable[[T], None] | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"queue policy {policy!r} is unknown; choose one of {', '.join(POLICIES)}")
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.policy = policy
        self.on_drop = on_drop  # called (under the lock) with each item drop-oldest discards
        self.dropped = 0
        self.high_water = 0
        self.closed = False
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue `item`; False when the policy dropped it (or the backlog is closed)."""
        with self._lock:
            items = self._items
            if len(items) >= self.maxsize:
                if self.policy == "drop-oldest":
                    old = items.popleft()
                    self.dropped += 1
                    if self.on_drop is not None:
                        self.on_drop(old)
                elif self.policy == "drop-newest":
                    self.dropped += 1
                    return False
                else:
                    while len(items) >= self.maxsize and not self.closed:
                        self._not_full.wait(0.5)
            if self.closed:
                return False
            items.append(item)
            n = len(items)
            if n > self.high_water:
                self.high_water = n
            if n == 1:
                self._not_empty.notify()
            return True

    def take(self, max_items: int, timeout: float) -> list[T]:
        """Up to `max_items` queued items, oldest first; waits up to `timeout` for the first."""
        with self._lock:
            items = self._items
            if not items:
                end = time.monotonic() + timeout
                while not items:
                    left = end - time.monotonic()
                    if left <= 0 or self.closed:
                        return []
                    self._not_empty.wait(left)
            n = min(max_items, len(items))
            out = [items.popleft() for _ in range(n)]
            if self.policy == "block":
                self._not_full.notify_all()
            return out

    def close(self) -> None:
        """Refuse further items and wake every waiter (queued items can still be taken)."""
        with self._lock:
            self.closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
