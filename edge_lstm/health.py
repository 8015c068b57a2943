"""Liveness: notice when the daemon stops making progress, say so, and say when it recovers.

A daemon can be up and connected and still do nothing: its network thread dead, its inference
thread stuck in an engine call, a message handler blocked, or another client taking its MQTT
session twice a second. The `Watchdog` asks a few probes every `interval` seconds; each
returns None (fine) or a sentence saying what is wrong. The daemon's status is

- `online`: every probe is fine;
- `degraded`: at least one is not (the reasons are in the health document);
- `offline`: the daemon stopped (or died: the broker publishes the last will).

On each change the watchdog calls `on_change(status, reasons)`; the daemon publishes the status
(retained, the same topic as the last will, so subscribers that know only `online`/`offline`
keep working) and a retained JSON health document with the reasons.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("edge_lstm.health")

#: Seconds between two rounds of probes.
CHECK_EVERY = 1.0

Probe = Callable[[], "str | None"]


class Watchdog:
    """Runs `probes` every `interval` seconds in its own thread; reports status changes."""

    def __init__(
        self,
        probes: Sequence[Probe],
        on_change: Callable[[str, list[str]], None],
        *,
        interval: float = CHECK_EVERY,
    ) -> None:
        self.probes = list(probes)
        self.on_change = on_change
        self.interval = interval
        self.status = "online"
        self.reasons: list[str] = []
        self.since = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-lstm-watchdog", daemon=True)

    def start(self) -> None:
        """Start probing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop probing (the daemon then publishes `offline` itself)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def check(self) -> str:
        """Run every probe once; report a change of status or of reasons; return the status."""
        reasons = []
        for probe in self.probes:
            try:
                why = probe()
            except Exception as exc:  # a broken probe is itself a reason, never a dead watchdog
                log.exception("health probe %r failed", probe)
                why = f"health probe failed: {type(exc).__name__}: {exc}"
            if why:
                reasons.append(why)
        status = "degraded" if reasons else "online"
        if status != self.status or _kinds(reasons) != _kinds(self.reasons):
            if status != self.status:
                self.since = time.time()
            self.status, self.reasons = status, reasons
            if status == "degraded":
                log.warning("status degraded: %s", "; ".join(reasons))
            else:
                log.info("status online again: the daemon is making progress")
            self.on_change(status, reasons)
        return status

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


def _kinds(reasons: list[str]) -> list[str]:
    """Reasons without their numbers ('stuck for 31 s' and 'stuck for 32 s' are one state)."""
    return ["".join(ch for ch in r if not ch.isdigit()) for r in reasons]
