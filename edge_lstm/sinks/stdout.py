"""Forecasts written to standard output as JSON lines (for pipes, logs and demos)."""

from __future__ import annotations

import sys
from typing import TextIO


class StdoutSink:
    """Writes one prediction payload per line; flushed after each batch."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.out = stream or sys.stdout
        self.failed = 0

    def send(self, stream: str, payload: bytes) -> None:
        """Write one forecast line."""
        try:
            self.out.write(payload.decode() + "\n")
        except (OSError, ValueError):  # a closed pipe must not kill the daemon
            self.failed += 1

    def flush(self) -> None:
        """Flush after a batch so that a reader sees forecasts promptly."""
        try:
            self.out.flush()
        except (OSError, ValueError):
            self.failed += 1
