"""The edge daemon: samples in, forecasts out, for months, through faults and bad input.

    source thread (paho / serial / replay) --Intake--> Backlog (bounded) --> inference thread
                                                                              | push_many
                                                                              v
                                                                  sink (MQTT topic / stdout)

- The source's thread only decodes and queues (`edge_lstm.intake`), so the network is
  serviced while the model runs. Bad input is refused there, counted and reported on the
  errors topic (rate limited), and never reaches a stream's state; so is a timestamp too far
  ahead of the device's clock (`pipeline.max_future_skew`).
- The inference thread takes everything queued (up to `pipeline.max_batch`) and steps it
  with one `Runtime.push_many` call: one engine call per round, each stream's samples in
  order. Duplicates and out-of-order timestamps (QoS 1 redeliveries) are dropped by the
  runtime, counted and reported, so a sample never yields a second forecast.
- Nothing kills a thread: a failure in a paho callback, a batch or a command is logged with
  its traceback, counted and reported as `internal-error` on the errors topic. A watchdog
  (`edge_lstm.health`) turns the retained status `degraded`, with the reason in the retained
  health document, when samples wait and nothing progresses, and back to `online`.
- The same thread runs everything that touches the runtime: commands (reset, prime, load,
  snapshot), SIGHUP reloads, stream expiry, periodic snapshots and stats, so the runtime
  needs no lock and a model swap happens between two batches without losing a sample
  (they wait in the backlog).
- Service topics: status (retained online/degraded/offline, last will), health, errors,
  stats, events and a retained model-info topic; the command topic `edge/<device>/cmd` when
  enabled, rate limited (`commands.rate`) so that a flood cannot starve inference.
- SIGTERM/SIGINT: stop the source, drain the backlog, snapshot, publish offline, exit 0.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edge_lstm import control, fleet, snapshot
from edge_lstm.backlog import Backlog
from edge_lstm.bundle import Bundle
from edge_lstm.config import Config
from edge_lstm.errors import EdgeLstmError
from edge_lstm.forecaster import Dropped, Forecast, Runtime, Sample
from edge_lstm.health import Watchdog
from edge_lstm.intake import Incoming, Intake, Refusal, duration
from edge_lstm.mqtt import MqttLink
from edge_lstm.payload import encode_error, encode_forecast
from edge_lstm.stats import LatencyWindow, RateLimit

log = logging.getLogger("edge_lstm.daemon")

#: Seconds between stream-expiry sweeps.
EXPIRE_EVERY = 5.0
#: Most seconds of commands the inference thread runs before it steps samples again.
CONTROL_SLICE = 0.05
#: Most commands waiting for the inference thread; past it new ones are refused (rate-limited).
MAX_PENDING_COMMANDS = 100
#: Most samples a `prime` command may step in continuous mode (exact mode steps only the last W).
MAX_PRIME_CONTINUOUS = 1000


def open_runtime(cfg: Config, bundle: str | Path | Bundle | None = None) -> Runtime:
    """The runtime the config asks for (bundle, backend, mode, horizon, gaps, expiry); the
    config's bundle is verified whole first (every variant's hash, not only the one run)."""
    m = cfg.model
    return Runtime.open(
        bundle if bundle is not None else verify_bundle(Path(m.bundle)),
        backend=m.backend,
        precision=m.precision or None,
        mode=m.mode,
        horizon=m.horizon,
        max_gap=m.max_gap or None,
        gap_policy=m.gap_policy,
        idle_timeout=m.idle_timeout or None,
        threads=m.threads,
    )


def verify_bundle(path: Path) -> Bundle:
    """Open a bundle and check every variant file against its manifest hash."""
    bundle = Bundle.open(path)
    for variant in bundle.variants:
        bundle.read_variant(variant)
    return bundle


class Daemon:
    """One daemon: build it from a `Config`, then `start()`/`stop()` or `run_forever()`."""

    def __init__(self, cfg: Config, *, runtime: Runtime | None = None, stdout: Any = None) -> None:
        self.cfg = cfg
        self.device = cfg.device_id
        if runtime is None:
            fleet.bundle_to_run(cfg)
        self.runtime = runtime if runtime is not None else open_runtime(cfg)
        self.bundle_dir = Path(cfg.model.bundle_dir or Path(cfg.model.bundle).parent)
        p = cfg.pipeline
        self.backlog: Backlog[Incoming] = Backlog(p.queue_size, p.queue_policy, on_drop=self._ack_one)
        self.latency = LatencyWindow()
        self.error_limit = RateLimit(p.error_rate)
        self.counts: dict[str, int] = dict.fromkeys(
            ("received", "refused", "forecasts", "duplicates", "out_of_order", "rejected", "batches",
             "commands", "commands_refused", "rate_limited", "snapshots", "internal_errors"), 0)
        self.refused_by_code: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.restored: snapshot.Restored | None = None
        self.started_at = time.time()
        self.exit_code = 0
        self._halt = threading.Event()
        self._stopped = threading.Event()
        self._idle = threading.Event()
        self._control: queue.Queue = queue.Queue()
        self._warm: set[str] = set()
        self._thread = threading.Thread(target=self._infer_loop, name="edge-lstm-inference", daemon=True)
        self._progress_at = time.monotonic()  # the inference loop's last turn
        self.command_limit = RateLimit(cfg.commands.rate)

        self.link = MqttLink(cfg, status_topic=cfg.topic("status")) if cfg.uses_mqtt else None
        self.intake = Intake(
            self.runtime.features, self._accept, self._refused,
            max_payload=p.max_payload, max_stream_id=p.max_stream_id, strict_keys=p.strict_keys,
            max_future_skew=p.max_future_skew,
        )
        probes = [self._inference_health]
        if self.link is not None:
            self.link.on_internal_error.append(
                lambda where, exc, topic: self._internal_error(where, exc, topic, logged=True))
            probes.append(lambda: self.link.health(p.stall_timeout))
        self.watchdog = Watchdog(probes, self._health_changed)
        self.source = self._make_source()
        self.sink = self._make_sink(stdout)
        self.addons = fleet.attach(self)  # Home Assistant discovery, signed rollout (edge_lstm.fleet)

    # ------------------------------------------------------------------ wiring

    def _make_source(self) -> Any:
        kind = self.cfg.source.kind
        if kind == "mqtt":
            from edge_lstm.sources.mqtt import MqttSource

            s = self.cfg.source.mqtt
            return MqttSource(self.link, s.topics, s.qos, self.intake)
        if kind == "serial":
            from edge_lstm.sources.serial import SerialSource

            return SerialSource(self.cfg.source.serial, self.intake)
        from edge_lstm.sources.replay import ReplaySource

        r = self.cfg.source.replay
        return ReplaySource(r.file, r.stream, r.rate, self.intake, columns=r.columns, loop=r.loop)

    def _make_sink(self, stdout: Any) -> Any:
        if self.cfg.sink.kind == "mqtt":
            from edge_lstm.sinks.mqtt import MqttSink

            s = self.cfg.sink.mqtt
            return MqttSink(self.link, s.topic, self.device, s.qos, s.retain)
        from edge_lstm.sinks.stdout import StdoutSink

        return StdoutSink(stdout)

    def _accept(self, item: Incoming) -> bool:
        return self.backlog.put(item)

    def _ack(self, batch: list[Incoming]) -> None:
        """Acknowledge a processed batch to the broker, in arrival order."""
        if self.link is not None and self.link.manual_ack:
            ack = self.link.ack
            for item in batch:
                if item.ack:
                    ack(item.ack)

    def _ack_one(self, item: Incoming) -> None:
        if item.ack and self.link is not None:
            self.link.ack(item.ack)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, connect_timeout: float = 0.0) -> None:
        """Restore the snapshot, subscribe, connect (waiting up to `connect_timeout` for the
        broker to acknowledge the subscriptions), then start inference."""
        if self.cfg.snapshot.path:
            self.restored = snapshot.restore(self.runtime, self.cfg.snapshot.path)
            if self.restored.streams:
                log.info("restored %d streams from %s", self.restored.streams, self.cfg.snapshot.path)
                self._rewind_future_clocks()
            else:
                log.info("no warm restart: %s", self.restored.reason)
        if self.link is not None:
            self.link.on_connected.append(self._publish_model_info)
            self.link.on_connected.append(self._publish_health)
            if self.cfg.commands.enabled:
                self.link.subscribe(self.cfg.topic("cmd"), 1, self._on_command, retained=self._on_retained_command)
        self._addons("start")
        # The source subscribes before the link connects, so every subscription is made (and
        # acknowledged) with the connection, and start() can wait until samples can arrive.
        self.source.start()
        if self.link is not None:
            self.link.start()
            if connect_timeout and self.link.wait_connected(connect_timeout):
                self.link.wait_subscribed(connect_timeout)
        self._thread.start()
        self.watchdog.start()
        self.event("started", restored=self.restored.streams if self.restored else 0,
                   bundle=self.runtime.bundle.name if self.runtime.bundle else None)
        log.info(
            "edge-lstm daemon %r running: %s source -> %s sink, model %s (%s/%s, window %s)",
            self.device, self.cfg.source.kind, self.cfg.sink.kind, self._model_name(),
            self.runtime.backend_name, self.runtime.precision, self.runtime.window,
        )

    def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Stop the source, drain the backlog, snapshot, say offline, disconnect."""
        if self._stopped.is_set():
            return
        self.watchdog.stop()
        self.source.stop()
        end = time.monotonic() + drain_timeout
        while (len(self.backlog) or not self._idle.is_set()) and time.monotonic() < end and self._thread.is_alive():
            time.sleep(0.01)
        self._halt.set()
        self.backlog.close()
        self._thread.join(drain_timeout)
        while not self._control.empty():  # commands queued while draining
            self._run_control()
        if self.cfg.snapshot.path:
            self._snapshot("shutdown")
        self._publish_stats()
        self.watchdog.status, self.watchdog.reasons = "offline", []
        self._publish_health()
        self._addons("stop")
        if self.link is not None:
            self.link.stop()
        self.sink.flush()
        self._stopped.set()
        log.info("edge-lstm daemon %r stopped", self.device)

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT (drain, snapshot, exit 0); SIGHUP reloads the bundle."""
        stop = threading.Event()

        def on_stop(signum: int, frame: Any) -> None:
            log.info("%s: draining and stopping", signal.Signals(signum).name)
            stop.set()

        def on_hup(signum: int, frame: Any) -> None:
            log.info("SIGHUP: reloading the bundle %s", self.cfg.model.bundle)
            self._control.put(("reload", None))

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        self.start()
        while not stop.is_set():
            stop.wait(0.5)
            if not self._thread.is_alive():
                log.error("the inference thread ended unexpectedly; stopping")
                self.exit_code = 1
                break
            if self.cfg.source.kind == "replay" and self.source.done.is_set() and not len(self.backlog):
                if self._idle.is_set():
                    log.info("replay finished")
                    break
        self.stop()
        return self.exit_code

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the backlog is empty and the inference thread has nothing in hand."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not len(self.backlog) and self._idle.is_set() and self._control.empty():
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ inference thread

    def _infer_loop(self) -> None:
        cfg = self.cfg
        rt = self.runtime
        next_stats = time.monotonic() + cfg.pipeline.stats_interval if cfg.pipeline.stats_interval else float("inf")
        next_snap = time.monotonic() + cfg.snapshot.interval if cfg.snapshot.path and cfg.snapshot.interval else float("inf")
        expire_every = min(EXPIRE_EVERY, cfg.model.idle_timeout / 2)
        next_expire = time.monotonic() + expire_every if cfg.model.idle_timeout else float("inf")
        max_batch = cfg.pipeline.max_batch
        while True:
            self._progress_at = time.monotonic()
            self._idle.set()
            batch = self.backlog.take(max_batch, 0.05)
            if batch:
                self._idle.clear()
                try:
                    self._step(batch)
                except Exception as exc:  # the daemon must outlive a bug: count it, report it, carry on
                    self._internal_error(f"inference on a batch of {len(batch)} samples (dropped)", exc, None)
                    self._ack(batch)  # or they would hold the broker's window forever
                    self._addons("batch_failed", exc)
            elif self._halt.is_set():
                return
            if not self._control.empty():
                self._idle.clear()
                self._run_control()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + cfg.pipeline.stats_interval
                self._publish_stats()
            if now >= next_snap:
                next_snap = now + cfg.snapshot.interval
                self._snapshot("periodic")
            if now >= next_expire:
                next_expire = now + expire_every
                gone = rt.expire()
                if gone:
                    self._warm.difference_update(gone)
                    self.event("streams-expired", streams=gone[:100], count=len(gone))
            rt = self.runtime

    def _step(self, batch: list[Incoming]) -> None:
        rt = self.runtime
        counts = self.counts
        counts["received"] += len(batch)
        counts["batches"] += 1
        gaps = rt.counters().get("gaps", 0) if rt.max_gap else 0
        results = rt.push_many([Sample(i.stream, i.values, i.ts) for i in batch])
        now = time.perf_counter()
        send, add_latency = self.sink.send, self.latency.add
        model, variant, targets = self._model_name(), rt.precision, rt.targets
        warm = self._warm
        reset_streams = []
        forecasts = 0
        for item, res in zip(batch, results):
            cls = type(res)
            if cls is Forecast:
                lat = now - item.received
                add_latency(lat)
                forecasts += 1
                if res.warming_up:
                    if res.stream in warm:
                        warm.discard(res.stream)
                        reset_streams.append(res.stream)
                elif res.stream not in warm:
                    warm.add(res.stream)
                send(res.stream, encode_forecast(
                    stream=res.stream, ts=res.ts, seq=res.seq, forecast=res.values, targets=targets,
                    horizon=res.horizon, model=model, variant=variant, latency_ms=lat * 1000.0,
                    warming_up=res.warming_up))
            elif cls is Dropped:
                self._dropped(res)
            else:
                counts["rejected"] += 1
                self._report("rejected", getattr(res, "problem", str(res)), stream=item.stream, source="runtime")
        counts["forecasts"] += forecasts
        self.sink.flush()
        self._ack(batch)
        if self.addons:
            self._addons("after_batch", batch, results)
        if rt.max_gap and rt.counters().get("gaps", 0) != gaps:
            self.event("streams-reset", reason="gap", streams=reset_streams[:100], count=len(reset_streams))

    # ------------------------------------------------------------------ control

    def _on_command(self, topic: str, payload: bytes, token: int) -> None:
        """paho thread: hand the raw command to the inference thread (or refuse a flood)."""
        waiting = self._control.qsize()
        if waiting < MAX_PENDING_COMMANDS and self.command_limit.allow():
            self._control.put(("command", payload))
        else:
            with self._count_lock:
                self.counts["rate_limited"] += 1
                n = self.counts["rate_limited"]
            why = (f"{waiting} commands are already waiting" if waiting >= MAX_PENDING_COMMANDS else
                   f"more than {self.cfg.commands.rate:g} commands per second (commands.rate)")
            self._report("rate-limited", f"command refused unread: {why}; {n} refused so far",
                         topic=topic, source="cmd", count=n)
        self.link.ack(token)

    def _on_retained_command(self, topic: str, payload: bytes, token: int) -> None:
        """paho thread: a retained command would run again at every (re)subscription: refuse it."""
        with self._count_lock:
            self.counts["commands_refused"] += 1
        problem = (f"a retained command is ignored (it would run again at every reconnect): clear it with "
                   f"mosquitto_pub -r -n -t '{topic}', and publish commands without the retain flag")
        log.warning("command refused: %s", problem)
        self._report("bad-command", problem, topic=topic, source="cmd")
        self.link.ack(token)

    def _run_control(self) -> None:
        """Run queued commands for up to CONTROL_SLICE seconds, then let samples through."""
        end = time.monotonic() + CONTROL_SLICE
        while time.monotonic() < end:
            try:
                kind, arg = self._control.get_nowait()
            except queue.Empty:
                return
            try:
                if kind == "command":
                    self._command(arg)
                elif kind == "snapshot":
                    self._snapshot("request")
                elif kind == "reload":
                    self._load(Path(self.cfg.model.bundle), reason="reload")
                elif kind == "call":
                    arg()
            except Exception as exc:
                self._internal_error(f"the control action {kind!r}", exc, self.cfg.topic("cmd") if kind == "command" else None)

    def _command(self, payload: bytes) -> None:
        self.counts["commands"] += 1
        try:
            cmd = control.parse(payload, allow=self.cfg.commands.allow, bundle_dir=self.bundle_dir,
                                features=len(self.runtime.features))
        except control.CommandError as exc:
            self._command_refused(exc.problem, exc.cmd, exc.id)
            return
        rt = self.runtime
        try:
            if cmd.cmd == "reset":
                if not rt.reset(cmd.stream):
                    raise control.CommandError(
                        f"stream {cmd.stream!r} is unknown (it never sent a sample, or expired); nothing was reset")
                self._warm.discard(cmd.stream)
                self.event("streams-reset", reason="command", streams=[cmd.stream], count=1)
            elif cmd.cmd == "prime":
                if rt.mode == "continuous" and len(cmd.values) > MAX_PRIME_CONTINUOUS:
                    raise control.CommandError(
                        f"{len(cmd.values)} samples; in continuous mode at most {MAX_PRIME_CONTINUOUS} are "
                        "stepped per command (send the most recent ones)")
                rt.prime(cmd.stream, cmd.values)
                self._warm.discard(cmd.stream)
            elif cmd.cmd == "load":
                self._load(cmd.bundle, reason="command")
            elif cmd.cmd == "snapshot":
                if not self.cfg.snapshot.path:
                    raise control.CommandError("snapshot: no snapshot.path is configured on this device")
                self._snapshot("command")
        except (EdgeLstmError, ValueError, OSError) as exc:
            self._command_refused(f"{cmd.cmd}: {exc}", cmd.cmd, cmd.id)
            return
        self.event("command", cmd=cmd.cmd, id=cmd.id, ok=True,
                   **({"stream": cmd.stream} if cmd.stream else {}),
                   **({"bundle": cmd.bundle.name} if cmd.bundle else {}))

    def _command_refused(self, problem: str, cmd: str | None, cid: str | None) -> None:
        self.counts["commands_refused"] += 1
        log.warning("command refused: %s", problem)
        self._publish_error(encode_error("bad-command", problem, topic=self.cfg.topic("cmd"),
                                         source=f"cmd:{cmd}" if cmd else "cmd"))
        self.event("command", cmd=cmd, id=cid, ok=False, problem=problem)

    def _load(self, path: Path, *, reason: str) -> None:
        """Hot-swap to the bundle at `path` (verified first); samples wait in the backlog."""
        t0 = time.perf_counter()
        bundle = verify_bundle(path)
        old = self.runtime.bundle_sha
        self.runtime.swap_bundle(bundle)
        self.intake.features = list(self.runtime.features)
        kept = old == self.runtime.bundle_sha
        log.info("model %s loaded (%s, %.0f ms, states %s)", bundle.name, reason,
                 (time.perf_counter() - t0) * 1000, "kept" if kept else "re-primed")
        self.event("model-loaded", bundle=bundle.name, sha256=bundle.sha256, reason=reason,
                   states="kept" if kept else "re-primed", streams=len(self.runtime.streams()))
        self._publish_model_info()
        self._addons("model_loaded")

    def _snapshot(self, why: str) -> None:
        t0 = time.perf_counter()
        export = self.runtime.export_state()
        try:
            snapshot.save(self.cfg.snapshot.path, export, meta={"device": self.device, "reason": why})
        except EdgeLstmError as exc:
            log.error("%s", exc)
            self._report("snapshot-failed", str(exc), source="snapshot")
            return
        self.counts["snapshots"] += 1
        ms = (time.perf_counter() - t0) * 1000
        log.debug("snapshot (%s): %d streams in %.1f ms", why, len(export.streams), ms)
        self.event("snapshot", reason=why, streams=len(export.streams), ms=round(ms, 2),
                   path=str(self.cfg.snapshot.path))

    # ------------------------------------------------------------------ add-ons (edge_lstm.fleet.Host)

    def _addons(self, hook: str, *args: Any) -> None:
        """Call one hook of every add-on; a failing add-on is reported and never stops the daemon."""
        for addon in self.addons:
            try:
                getattr(addon, hook)(*args)
            except Exception as exc:
                self._internal_error(f"the {type(addon).__name__} add-on ({hook})", exc, None)

    def call_soon(self, fn: Any) -> None:
        """Run `fn()` on the inference thread between two batches."""
        self._control.put(("call", fn))

    def load_bundle(self, path: Path, *, reason: str) -> None:
        """Inference thread: verify the bundle at `path` and hot-swap to it (raises on failure)."""
        self._load(Path(path), reason=reason)

    def report(self, code: str, problem: str, **where: Any) -> None:
        """Publish an error document on the errors topic (rate limited)."""
        self._report(code, problem, **where)

    # ------------------------------------------------------------------ reporting

    def _refused(self, refusal: Refusal) -> None:
        """Source thread: count a refused sample and report it (rate limited)."""
        err = refusal.error
        with self._count_lock:
            self.counts["refused"] += 1
            n = self.refused_by_code[err.code] = self.refused_by_code.get(err.code, 0) + 1
        self._report(err.code, err.problem, stream=err.stream, topic=refusal.topic, source=refusal.source, count=n)

    def _dropped(self, res: Dropped) -> None:
        """Inference thread: count and report a sample dropped for its timestamp (rate limited)."""
        dup = res.reason == "duplicate"
        key = "duplicates" if dup else "out_of_order"
        self.counts[key] += 1
        if dup:
            problem = (f"'ts' {res.ts!r} equals the stream's last timestamp: sample dropped as a duplicate "
                       "(a QoS 1 redelivery, or the sender repeating itself)")
        else:
            problem = (f"'ts' {res.ts!r} is {duration(res.last_ts - res.ts)} older than the stream's last "
                       f"timestamp {res.last_ts!r}: sample dropped as out of order; if the stream's clock is "
                       f"wrong, the command {{\"cmd\": \"reset\", \"stream\": \"{res.stream}\"}} clears it")
        self._report(res.reason, problem, stream=res.stream, source="runtime", count=self.counts[key])

    def _internal_error(self, where: str, exc: BaseException, topic: str | None, *, logged: bool = False) -> None:
        """Any thread: a bug met at `where`; count it, log it (unless the link did), report it
        as `internal-error` on the errors topic."""
        with self._count_lock:
            self.counts["internal_errors"] += 1
            n = self.counts["internal_errors"]
        if not logged:
            log.error("internal error in %s (the daemon carries on):", where, exc_info=exc)
        self._report("internal-error",
                     f"{where}: {type(exc).__name__}: {exc}; the daemon carried on (traceback in its log)"
                     + ("; the message was acknowledged and dropped" if topic and "message" in where else ""),
                     topic=topic, source="daemon", count=n)

    def _rewind_future_clocks(self) -> None:
        """After a restore: a stream whose clock is far in the future would drop every sample."""
        skew = self.cfg.pipeline.max_future_skew
        if not skew:
            return
        now = time.time()
        gone = self.runtime.rewind_clocks(now + skew)
        if gone:
            log.warning("%d restored stream(s) had a last timestamp more than pipeline.max_future_skew = %g s "
                        "ahead of this device's clock; their clocks were cleared (states kept): %s",
                        len(gone), skew, ", ".join(gone[:10]))
            self.event("clocks-cleared", reason="future-ts", streams=gone[:100], count=len(gone))

    def _inference_health(self) -> str | None:
        """Watchdog probe: the inference thread is alive and turning while work waits."""
        if self._stopped.is_set() or self._halt.is_set():
            return None
        if not self._thread.is_alive():
            return "the inference thread has ended: no forecast can be made"
        stalled = time.monotonic() - self._progress_at
        waiting = len(self.backlog) + self._control.qsize()
        if waiting and stalled > self.cfg.pipeline.stall_timeout:
            return f"inference has made no progress for {stalled:.0f} s with {waiting} sample(s)/command(s) waiting"
        return None

    def _health_changed(self, status: str, reasons: list[str]) -> None:
        if self.link is not None:
            self.link.set_status(status)
        self._publish_health()
        self.event("health", status=status, reasons=reasons)

    def health(self) -> dict:
        """The health document: status (online/degraded/offline), reasons, since when."""
        w = self.watchdog
        return {"status": w.status, "reasons": list(w.reasons), "since": round(w.since, 3),
                "time": round(time.time(), 3)}

    def _publish_health(self) -> None:
        if self.link is not None:
            payload = json.dumps(self.health(), separators=(",", ":")).encode()
            self.link.publish(self.cfg.topic("health"), payload, qos=1, retain=True)

    def _report(self, code: str, problem: str, **where: Any) -> None:
        if self.error_limit.allow():
            self._publish_error(encode_error(code, problem, **where))

    def _publish_error(self, payload: bytes) -> None:
        if self.link is not None:
            self.link.publish(self.cfg.topic("errors"), payload, qos=0)
        else:
            log.warning("refused: %s", payload.decode())

    def event(self, name: str, **fields: Any) -> None:
        """Publish one event (JSON) on the events topic, or log it without a broker."""
        doc = {"event": name, "time": round(time.time(), 3), **fields}
        payload = json.dumps(doc, separators=(",", ":")).encode()
        if self.link is not None:
            self.link.publish(self.cfg.topic("events"), payload, qos=1)
        log.info("event %s", payload.decode())

    def _model_name(self) -> str:
        b = self.runtime.bundle
        return b.name if b is not None else "model"

    def model_info(self) -> dict:
        """The retained model-info document."""
        rt = self.runtime
        b = rt.bundle
        return {
            "name": self._model_name(), "backend": rt.backend_name, "variant": rt.precision,
            "sha256": rt.bundle_sha, "features": rt.features, "targets": rt.targets,
            "window": rt.window, "mode": rt.mode, "horizon": rt.horizon, "state_size": rt.state_size,
            "path": str(b.path) if b is not None else None, "since": round(time.time(), 3),
        }

    def _publish_model_info(self) -> None:
        if self.link is not None:
            payload = json.dumps(self.model_info(), separators=(",", ":")).encode()
            self.link.publish(self.cfg.topic("model"), payload, qos=1, retain=True)

    def stats(self, *, clear_latency: bool = False) -> dict:
        """Counters, queue and latency figures (p50/p99 over the recent forecasts, or since
        the last published stats when that cleared them)."""
        rt = self.runtime
        c = rt.counters()
        p50, p99 = self.latency.percentiles(clear=clear_latency)
        with self._count_lock:
            refused = dict(self.refused_by_code)
            counts = dict(self.counts)
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "samples": counts["received"], "forecasts": counts["forecasts"],
            "refused": counts["refused"], "refused_by_code": refused,
            "dropped": self.backlog.dropped, "duplicates": counts["duplicates"],
            "out_of_order": counts["out_of_order"], "rejected": counts["rejected"],
            "rate_limited": counts["rate_limited"], "status": self.watchdog.status,
            "errors": counts["refused"] + counts["rejected"] + counts["commands_refused"],
            "errors_suppressed": self.error_limit.suppressed, "gaps": c.get("gaps", 0),
            "expired": c.get("expired", 0), "streams": len(rt.streams()),
            "queue_depth": len(self.backlog), "queue_max": self.backlog.high_water,
            "queue_size": self.backlog.maxsize, "batches": counts["batches"],
            "p50_ms": p50, "p99_ms": p99, "commands": counts["commands"],
            "snapshots": counts["snapshots"], "internal_errors": counts["internal_errors"],
            "sink_failed": getattr(self.sink, "failed", 0),
            "mqtt_connects": self.link.connects if self.link else 0,
            "mqtt_takeovers": self.link.takeovers if self.link else 0,
        }

    def _publish_stats(self) -> None:
        doc = self.stats(clear_latency=True)
        payload = json.dumps(doc, separators=(",", ":")).encode()
        if self.link is not None:
            self.link.publish(self.cfg.topic("stats"), payload, qos=0)
        else:
            log.info("stats %s", payload.decode())
