"""The state table: every stream's recurrent state as rows of one float32 array.

A stream owns a *slot*; the slot owns `rows` consecutive state rows (1 in continuous mode, W
in exact mode) of `data[capacity, rows, S]`. Keeping all streams in one array is what lets
the runtime step many streams with one engine call: gather their rows, step, scatter back.

Per-stream bookkeeping that the forecaster needs (sequence numbers, last timestamp, recent
samples...) lives in *columns*: arrays indexed by slot that grow, get reset and get freed
together with the state rows, so it can be read and written for a whole batch at once.

Slots of removed streams go on a free list and are reused (zeroed) before the table grows;
growing doubles the capacity. Idle streams (no sample for `idle_timeout` seconds) are dropped
by `expire`, like Triton's sequence idle timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Column:
    """A per-slot array: `shape` is the shape of one slot's entry, `fill` its reset value."""

    shape: tuple[int, ...] = ()
    dtype: type = np.float64
    fill: float | int | bool = 0


class StateTable:
    """Streams -> slots -> rows of one float32 array `data[capacity, rows, state_size]`."""

    def __init__(
        self,
        state_size: int,
        rows: int = 1,
        *,
        capacity: int = 16,
        columns: Mapping[str, Column] | None = None,
    ) -> None:
        if state_size < 1 or rows < 1:
            raise ValueError(f"state_size and rows must be >= 1, got {state_size} and {rows}")
        self.state_size = int(state_size)
        self.rows = int(rows)
        self._specs: dict[str, Column] = {"last_seen": Column((), np.float64, -np.inf), **(columns or {})}
        self._slot_of: dict[str, int] = {}
        self._id_of: list[str | None] = []
        self._free: list[int] = []
        self.capacity = 0
        self.data = np.zeros((0, self.rows, self.state_size), np.float32)
        self.cols: dict[str, np.ndarray] = {
            name: np.full((0, *spec.shape), spec.fill, spec.dtype) for name, spec in self._specs.items()
        }
        self._grow(max(1, int(capacity)))

    # -- lookup ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, stream: object) -> bool:
        return stream in self._slot_of

    @property
    def slot_of(self) -> dict[str, int]:
        """The live `stream -> slot` mapping (read it, do not change it)."""
        return self._slot_of

    def slot(self, stream: str) -> int | None:
        """The stream's slot, or None when the table does not hold it."""
        return self._slot_of.get(stream)

    def stream_at(self, slot: int) -> str | None:
        """The stream that owns `slot`, or None for a free slot."""
        return self._id_of[slot]

    def streams(self) -> list[str]:
        """Every stream id, in the order they were first added (slot reuse aside)."""
        return list(self._slot_of)

    # -- allocation --------------------------------------------------------------------------
    def add(self, stream: str, now: float | None = None) -> int:
        """The slot of `stream`, allocating a zeroed one when it is new."""
        slot = self._slot_of.get(stream)
        if slot is not None:
            return slot
        if not self._free:
            self._grow(self.capacity * 2)
        slot = self._free.pop()
        self._clear(slot)
        self._slot_of[stream] = slot
        self._id_of[slot] = stream
        if now is not None:
            self.cols["last_seen"][slot] = now
        return slot

    def add_many(self, streams: Iterable[str], now: float | None = None) -> np.ndarray:
        """Slots for `streams` (new ones allocated), as an int64 array aligned with the input."""
        get = self._slot_of.get
        streams = list(streams)
        slots = list(map(get, streams))
        if None in slots:
            for i, slot in enumerate(slots):
                if slot is None:
                    slots[i] = self.add(streams[i], now)
        return np.fromiter(slots, np.int64, count=len(slots))

    def remove(self, stream: str) -> bool:
        """Forget `stream` and free its slot; False when it was not there."""
        slot = self._slot_of.pop(stream, None)
        if slot is None:
            return False
        self._id_of[slot] = None
        self._clear(slot)
        self._free.append(slot)
        return True

    def _clear(self, slot: int) -> None:
        self.data[slot] = 0.0
        for name, spec in self._specs.items():
            self.cols[name][slot] = spec.fill

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        data = np.zeros((capacity, self.rows, self.state_size), np.float32)
        data[:old] = self.data
        self.data = data
        for name, spec in self._specs.items():
            col = np.full((capacity, *spec.shape), spec.fill, spec.dtype)
            col[:old] = self.cols[name]
            self.cols[name] = col
        self._id_of.extend([None] * (capacity - old))
        # pop() takes from the end: hand out low slots first, so rows stay dense.
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    # -- state rows --------------------------------------------------------------------------
    def reset(self, stream: str) -> bool:
        """Zero the stream's state rows (its columns are the caller's to reset); False if unknown."""
        slot = self._slot_of.get(stream)
        if slot is None:
            return False
        self.data[slot] = 0.0
        return True

    def get(self, stream: str) -> np.ndarray:
        """A copy of the stream's state rows, `[rows, S]`; KeyError if unknown."""
        return self.data[self._slot_of[stream]].copy()

    def set(self, stream: str, rows: np.ndarray) -> None:
        """Overwrite the stream's state rows with `rows` (`[rows, S]`); KeyError if unknown."""
        rows = np.asarray(rows, np.float32)
        if rows.shape != (self.rows, self.state_size):
            raise ValueError(
                f"stream {stream!r}: state rows of shape {rows.shape}, expected {(self.rows, self.state_size)}"
            )
        self.data[self._slot_of[stream]] = rows

    # -- idleness ----------------------------------------------------------------------------
    def touch(self, slots: np.ndarray | int, now: float) -> None:
        """Record that `slots` received a sample at `now` (seconds)."""
        self.cols["last_seen"][slots] = now

    def idle(self, now: float, timeout: float) -> list[str]:
        """Streams that received nothing for more than `timeout` seconds before `now`."""
        live = np.fromiter(self._slot_of.values(), np.int64, count=len(self._slot_of))
        if not len(live):
            return []
        stale = live[self.cols["last_seen"][live] < now - timeout]
        return [self._id_of[s] for s in stale.tolist()]

    def expire(self, now: float, timeout: float) -> list[str]:
        """Remove the streams `idle(now, timeout)` names and return their ids."""
        gone = self.idle(now, timeout)
        for stream in gone:
            self.remove(stream)
        return gone
