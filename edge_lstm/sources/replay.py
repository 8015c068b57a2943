"""Samples from a CSV file or standard input, paced at a fixed rate.

Used by the daemon (`source.kind = "replay"`, handy for demos and soak tests without a
broker) and by `edge-lstm replay`, which publishes the same rows to a broker.

CSV rules: a header row is optional. With a header, the feature columns are the ones named in
`columns`, else the model's feature names if all are present, else every column whose first
value is a number (so `Month,Passengers` replays `Passengers`). A column named `ts` is not a
feature. Without a header every column is a value.
"""

from __future__ import annotations

import csv
import io
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from edge_lstm.csvfile import is_number
from edge_lstm.errors import ConfigError
from edge_lstm.intake import Intake


def csv_rows(
    fh: TextIO, columns: Sequence[str] = (), features: Sequence[str] = (), *, name: str = "<csv>"
) -> Iterator[tuple[int, str]]:
    """Yield (line number, plain-text payload "v1,v2") for each data row of a CSV stream."""
    reader = csv.reader(fh)
    first = next(reader, None)
    if first is None:
        return
    if all(is_number(c) for c in first if c.strip()):
        yield 1, ",".join(c.strip() for c in first)
        for row in reader:
            if row:
                yield reader.line_num, ",".join(c.strip() for c in row)
        return
    header = [h.strip() for h in first]
    pending: list[tuple[int, list[str]]] = []
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise ConfigError(f"{name}: no column {missing[0]!r}; the header has {header}")
        idx = [header.index(c) for c in columns]
    elif features and all(f in header for f in features):
        idx = [header.index(f) for f in features]
    else:
        row = next(reader, None)
        while row is not None and not row:
            row = next(reader, None)
        if row is None:
            return
        pending.append((reader.line_num, row))
        idx = [i for i, c in enumerate(row) if i < len(header) and header[i] != "ts" and is_number(c)]
        if not idx:
            raise ConfigError(f"{name}: no numeric column in the first data row {row}")
    for line, row in pending:
        yield line, ",".join(row[i].strip() if i < len(row) else "" for i in idx)
    for row in reader:
        if row:
            yield reader.line_num, ",".join(row[i].strip() if i < len(row) else "" for i in idx)


def open_text(path: str) -> TextIO:
    """Open a CSV file, or standard input for `-`."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    try:
        return Path(path).open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the replay file: {exc.strerror or exc}") from None


class Pacer:
    """Sleeps so that calls to `tick()` happen `rate` times per second (0 = no pacing)."""

    def __init__(self, rate: float, stop: threading.Event | None = None) -> None:
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.stop = stop or threading.Event()

    def tick(self) -> bool:
        """Wait for the next slot; False if stopped meanwhile."""
        if self.period:
            self.next += self.period
            delay = self.next - time.monotonic()
            if delay > 0:
                return not self.stop.wait(delay)
        return not self.stop.is_set()


class ReplaySource:
    """Feeds CSV rows into the intake at `rate` per second, timestamped with the wall clock."""

    def __init__(
        self, path: str, stream: str, rate: float, intake: Intake, *, columns: Sequence[str] = (), loop: bool = False
    ) -> None:
        self.path = path
        self.stream = stream
        self.rate = rate
        self.intake = intake
        self.columns = list(columns)
        self.loop = loop
        self.sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-lstm-replay", daemon=True)

    def start(self) -> None:
        """Start the replay thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop replaying."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pacer = Pacer(self.rate, self._stop)
        try:
            while not self._stop.is_set():
                with open_text(self.path) as fh:
                    for _, text in csv_rows(fh, self.columns, self.intake.features, name=self.path):
                        if not pacer.tick():
                            return
                        ts = time.time()
                        self.intake.offer(self.stream, text.encode(), source=f"replay:{self.path}", ts=ts)
                        self.sent += 1
                if not self.loop or self.path == "-":
                    return
        finally:
            self.done.set()
