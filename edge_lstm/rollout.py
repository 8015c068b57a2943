"""Signed model rollout over MQTT: verify, store atomically, check, hot-swap, watch, roll back.

On the device (`[rollout] enabled = true`), for each offer on `edge/<device>/bundle`
(`edge-lstm publish-bundle`; format in `edge_lstm.bundle_transfer`, `edge_lstm.signing`):

1. the signature must be a trusted key's over the exact release document (else refused:
   `unsigned`, `unknown-key`, `bad-signature`); a release handled before (the retained offer
   again after a reconnect) is a no-op; a version older than the installed one is refused
   unless the signed release says `rollback`; a version equal to the installed one with other
   content is refused;
2. the chunks are written to `<bundle_dir>/.incoming/<transfer>/`; every file's sha256 and size
   must match the signed release (else refused: `bad-hash`), then the directory is renamed to
   `<bundle_dir>/<name>-v<version>/` and opened as a bundle (manifest, variant hashes);
3. parity: the new and the running model, both opened fresh, step each stream's recent samples
   (up to 64 streams); the largest |new - old| forecast difference relative to the largest
   |old| forecast of its stream must stay within `rollout.parity_tolerance`, else the bundle is
   rolled back before it ever serves a forecast;
4. the state file `<bundle_dir>/.rollout/state.json` and the `current` link switch atomically
   (temp + fsync + rename) and the daemon hot-swaps between two batches;
5. the first `rollout.watch` forecasts are watched: a failed batch, a non-finite forecast, or
   the daemon dying before a clean shutdown (found at the next start) rolls back to the
   previous bundle; after them the rollout is confirmed.

Every outcome is an event `rollout` on the events topic (`outcome`: receiving, refused,
unchanged, installed, confirmed, rolled-back) and every refusal or rollback also an error on
the errors topic. A restart runs the current bundle of the state file.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.bundle_transfer import Assembly, Offer
from edge_lstm.config import Config
from edge_lstm.errors import BundleError, ConfigError, EdgeLstmError, RolloutError
from edge_lstm.fleet import AddOn, Host
from edge_lstm.signing import Release, file_sha256, key_id, load_public_key, verify

log = logging.getLogger("edge_lstm.rollout")

#: Most streams whose recent samples the parity check replays.
PARITY_STREAMS = 64
#: Releases remembered as handled (their retained offers are then no-ops).
SEEN = 64
#: Seconds the parity check waits for the inference thread's copy of the recent samples.
SNAPSHOT_TIMEOUT = 60.0


# ----------------------------------------------------------------------------- the store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The rollout's side of the bundle directory: installed bundles, the `current` link and
    the state file (current, previous, the rollout being watched, releases seen)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / ".rollout" / "state.json"
        self._lock = threading.RLock()
        self.state = self._read()

    @classmethod
    def for_config(cls, cfg: Config) -> "Store":
        return cls(Path(cfg.model.bundle_dir or Path(cfg.model.bundle).parent))

    def _read(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.state_file}: unreadable rollout state ({exc}); move it away to start "
                              "again from model.bundle") from None
        return state if isinstance(state, dict) else {}

    def _write(self) -> None:
        self.state_file.parent.mkdir(exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        _fsync_dir(self.state_file.parent)
        cur = self.state.get("current")
        if cur:  # the `current` link, for people and tools (the state file is what counts)
            target = Path(cur["path"])
            link = self.root / "current"
            tmp_link = self.root / ".current.tmp"
            tmp_link.unlink(missing_ok=True)
            os.symlink(target.name if target.parent == self.root else str(target), tmp_link)
            os.replace(tmp_link, link)

    # -- queries
    def current_version(self) -> int:
        return int((self.state.get("current") or {}).get("version", 0))

    def seen(self, release_sha: str) -> bool:
        return release_sha in self.state.get("seen", [])

    def version_problem(self, release: Release) -> str | None:
        """Why `release` may not replace the installed bundle, or None."""
        cur = self.state.get("current") or {"version": 0}
        if release.version == cur["version"]:
            return (f"{release.label}: version {release.version} is installed already with other content; "
                    "publish the bundle under a new version")
        if release.version < cur["version"] and not release.rollback:
            return (f"{release.label} is older than the installed v{cur['version']}: going back needs an explicit, "
                    "signed rollback (edge-lstm publish-bundle --rollback)")
        return None

    # -- changes
    def remember(self, release_sha: str) -> None:
        with self._lock:
            seen = [s for s in self.state.get("seen", []) if s != release_sha] + [release_sha]
            self.state["seen"] = seen[-SEEN:]
            self._write()

    def staging(self, transfer: str) -> Path:
        path = self.root / ".incoming" / transfer
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(exist_ok=True)
        return path

    def install(self, staging: Path, release: Release) -> Path:
        """Move a verified staging directory to `<root>/<name>-v<version>` (files and
        directories fsynced first, so that a power cut leaves either nothing or all of it)."""
        for f in release.files:
            with open(staging / f.name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(staging)
        final = self.root / f"{release.bundle}-v{release.version}"
        with self._lock:
            if final.exists():
                if final.resolve() in {Path(e["path"]).resolve() for e in self._entries()}:
                    raise RolloutError("in-use", f"{final} is the running or the previous bundle; not replaced")
                shutil.rmtree(final)
            os.rename(staging, final)
            _fsync_dir(self.root)
        return final

    def _entries(self) -> list[dict]:
        return [e for e in (self.state.get("current"), self.state.get("previous")) if e]

    def switch(self, new: dict, running: dict, *, watch: bool) -> None:
        """`new` becomes current, what runs now becomes previous; with `watch`, the rollout is
        marked as being watched (a crash before `confirm` rolls it back at the next start)."""
        with self._lock:
            self.state["previous"] = self.state.get("current") or running
            self.state["current"] = new
            self.state["watch"] = {"version": new["version"], "clean_stop": False} if watch else None
            installed = [p for p in self.state.get("installed", []) if p != new["path"]] + [new["path"]]
            self.state["installed"] = installed
            self._write()

    def revert(self) -> dict:
        """Back to the previous bundle; returns it (the state's `current` now)."""
        with self._lock:
            failed, prev = self.state.get("current"), self.state.get("previous")
            self.state["current"], self.state["previous"], self.state["watch"] = prev, None, None
            if failed:
                self.state["installed"] = [p for p in self.state.get("installed", []) if p != failed["path"]]
            self._write()
            if failed and Path(failed["path"]).parent == self.root:
                shutil.rmtree(failed["path"], ignore_errors=True)
            return prev

    def confirm(self, keep: int) -> None:
        """The watched rollout passed: forget the watch, delete installed bundles past `keep`."""
        with self._lock:
            self.state["watch"] = None
            keep_paths = {e["path"] for e in self._entries()}
            installed = self.state.get("installed", [])
            old = [p for p in installed[:-keep] if p not in keep_paths] if len(installed) > keep else []
            self.state["installed"] = [p for p in installed if p not in old]
            self._write()
        for p in old:
            shutil.rmtree(p, ignore_errors=True)

    def mark_clean_stop(self) -> None:
        with self._lock:
            if self.state.get("watch"):
                self.state["watch"]["clean_stop"] = True
                self._write()

    def recover(self) -> Path | None:
        """At start: roll back a rollout whose daemon died while it was watched, resume a watch
        a clean shutdown interrupted; the bundle to run (None: the config's own)."""
        with self._lock:
            watch = self.state.get("watch")
            if watch and not watch.get("clean_stop"):
                failed = self.state.get("current") or {}
                prev = self.revert()
                self.state["report"] = {
                    "outcome": "rolled-back", "reason": "crash", "bundle": failed.get("bundle"),
                    "version": failed.get("version"),
                    "problem": (f"the daemon died within the first forecasts of {failed.get('bundle')} "
                                f"v{failed.get('version')} (no clean shutdown while it was watched); back to "
                                f"{Path(prev['path']).name if prev else 'model.bundle'}"),
                }
                self._write()
                log.error("rollout: %s", self.state["report"]["problem"])
            elif watch:
                watch["clean_stop"] = False
                self._write()
            cur = self.state.get("current")
        if cur and (Path(cur["path"]) / "manifest.json").is_file():
            return Path(cur["path"])
        return None

    def pop_report(self) -> dict | None:
        with self._lock:
            report = self.state.pop("report", None)
            if report:
                self._write()
            return report

    def watching(self) -> bool:
        return bool(self.state.get("watch"))


# ----------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class Parity:
    """The parity check's finding: streams compared, the worst relative difference and where."""

    streams: int
    worst: float
    stream: str | None
    problem: str | None = None

    def ok(self, tolerance: float) -> bool:
        return self.problem is None and self.worst <= tolerance


def parity(old: Any, new: Any, snap: Any, *, backend: str, precision: str, mode: str,
           max_streams: int = PARITY_STREAMS) -> Parity:
    """Step each stream's recent samples (`snap`, a StateExport) through the old and the new
    bundle, both opened fresh, and compare their warm forecasts stream by stream."""
    from edge_lstm.forecaster import Forecast, Runtime, Sample

    if (len(old.features), len(old.targets)) != (len(new.features), len(new.targets)):
        return Parity(0, math.inf, None, f"the new bundle reads {len(new.features)} feature(s) and forecasts "
                                         f"{len(new.targets)}, the running one {len(old.features)} and {len(old.targets)}")
    try:
        rts = [Runtime.open(b, backend=backend, precision=precision or None, mode=mode) for b in (old, new)]
    except EdgeLstmError as exc:
        return Parity(0, math.inf, None, f"cannot run it as configured: {exc}")
    counts = np.asarray(snap.recent_n)
    picked = [int(i) for i in np.argsort(-counts, kind="stable")[:max_streams] if counts[i] > 0]
    peak: dict[str, float] = {}
    diff: dict[str, float] = {}
    for t in range(int(counts.max(initial=0))):
        samples = [Sample(snap.streams[i], snap.recent_x[i, t]) for i in picked if counts[i] > t]
        for fa, fb in zip(*(rt.push_many(samples) for rt in rts)):
            if type(fa) is Forecast and type(fb) is Forecast and not (fa.warming_up or fb.warming_up):
                s = fa.stream
                gap = float(np.abs(fb.values - fa.values).max()) if np.isfinite(fb.values).all() else math.inf
                diff[s] = max(diff.get(s, 0.0), gap)
                peak[s] = max(peak.get(s, 0.0), float(np.abs(fa.values).max()))
    if not diff:
        return Parity(0, 0.0, None)
    rel = {s: diff[s] / max(peak[s], 1e-12) for s in diff}
    worst = max(rel, key=rel.__getitem__)
    return Parity(len(diff), rel[worst], worst)


# ----------------------------------------------------------------------------- the agent


class RolloutAgent(AddOn):
    """The daemon add-on: offers and chunks arrive in paho's thread, a worker thread verifies,
    stores and checks, the inference thread swaps and watches."""

    def __init__(self, host: Host) -> None:
        cfg = host.cfg
        self.host = host
        self.ro = cfg.rollout
        keys = [load_public_key(p) for p in self.ro.trusted_keys]
        self.trusted = {key_id(k): k for k in keys}
        self.topic = self.ro.topic.format(device=cfg.device_id)
        self.store = Store.for_config(cfg)
        self._work: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work_loop, name="edge-lstm-rollout", daemon=True)
        self._assembly: Assembly | None = None
        self._chunks: str | None = None  # the chunk subscription of the transfer in progress
        self._refused: set[str] = set()  # offers refused in this run (a retained one comes back)
        self._watch_left: int | None = None
        self._watched: dict | None = None

    # -- daemon hooks
    def start(self) -> None:
        link = self.host.link
        link.subscribe(self.topic, 1, self._on_offer, retained=self._on_offer)
        self._thread.start()
        report = self.store.pop_report()
        if report:  # once connected: errors are QoS 0, which paho drops while disconnected
            told: list[bool] = []

            def tell() -> None:
                if not told:
                    told.append(True)
                    self.host.report("rollout-rolled-back", report["problem"], topic=self.topic, source="rollout")
                    self.host.event("rollout", **report)

            link.on_connected.append(tell)
        if self.store.watching():  # a clean restart in the middle of a watch: watch again
            self._watched = self.store.state.get("current")
            self._watch_left = self.ro.watch
        log.info("rollout: listening on %s, %d trusted key(s) (%s)", self.topic, len(self.trusted),
                 ", ".join(sorted(self.trusted)))

    def after_batch(self, batch: Any, results: Any) -> None:
        if self._watch_left is None:
            return
        from edge_lstm.forecaster import Forecast

        n = 0
        for res in results:
            if type(res) is Forecast:
                if not np.isfinite(res.values).all():
                    self._roll_back(f"a non-finite forecast for stream {res.stream!r}")
                    return
                n += 1
        self._watch_left -= n
        if self._watch_left <= 0:
            self._confirm()

    def batch_failed(self, exc: BaseException) -> None:
        if self._watch_left is not None:
            self._roll_back(f"a batch failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._work.put(None)
        self._thread.join(10)
        if self._watch_left is not None:
            self.store.mark_clean_stop()
        self._abort_transfer()

    # -- paho thread
    def _on_offer(self, topic: str, payload: bytes, token: int) -> None:
        if payload:  # an empty retained message clears the offer
            self._work.put(("offer", bytes(payload)))
        self.host.link.ack(token)

    def _on_chunk(self, topic: str, payload: bytes, token: int) -> None:
        a, prefix = self._assembly, self._chunks
        try:
            if a is not None and prefix is not None and topic.startswith(prefix[:-1]):
                if a.add(topic[len(prefix) - 1:], bytes(payload)):
                    self._work.put(("complete", a))
        except RolloutError as exc:
            self._work.put(("failed", (a, exc)))
        except OSError as exc:  # the staging directory went away: a newer offer replaced this one
            if a is self._assembly:
                self._work.put(("failed", (a, RolloutError("bad-chunk", f"writing a chunk failed: {exc}"))))
        finally:
            self.host.link.ack(token)

    # -- worker thread
    def _work_loop(self) -> None:
        while (item := self._work.get()) is not None:
            kind, arg = item
            try:
                if kind == "offer":
                    self._offer(arg)
                elif kind == "complete" and arg is self._assembly:
                    self._complete(arg)
                elif kind == "failed" and arg[0] is self._assembly:
                    self._abort_transfer()
                    self._refuse(arg[1], arg[0].release)
            except Exception as exc:  # a bug must not end the worker: report it
                log.exception("rollout: internal error")
                self.host.report("internal-error", f"rollout ({kind}): {type(exc).__name__}: {exc}",
                                 topic=self.topic, source="rollout")

    def _offer(self, payload: bytes) -> None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest in self._refused:
            return
        release = None
        try:
            offer = Offer.decode(payload)
            release = verify(offer.release, offer.signature, offer.key_id, self.trusted)
            if self.store.seen(release.sha256):
                log.debug("rollout: %s was handled before (retained offer re-delivered): nothing to do", release.label)
                return
            problem = self.store.version_problem(release)
            if problem:
                raise RolloutError("old-version" if release.version < self.store.current_version() else "version-reused",
                                   problem)
            if release.total_bytes > self.ro.max_bytes:
                raise RolloutError("too-large", f"{release.label} is {release.total_bytes} bytes, more than "
                                                f"rollout.max_bytes = {self.ro.max_bytes}")
        except RolloutError as exc:
            self._refused.add(digest)
            self._refuse(exc, release)
            return
        manifest = next(f for f in release.files if f.name == "manifest.json")
        if manifest.sha256 == self.host.runtime.bundle_sha:
            self.store.remember(release.sha256)
            self._event("unchanged", release, problem="this bundle is already running")
            return
        self._abort_transfer()
        self._assembly = Assembly(offer, release, self.store.staging(offer.transfer))
        self._chunks = f"{self.topic}/{offer.transfer}/#"
        self.host.link.subscribe(self._chunks, 1, self._on_chunk, retained=self._on_chunk)
        self._event("receiving", release, files=len(release.files), bytes=release.total_bytes, key_id=offer.key_id)

    def _abort_transfer(self) -> None:
        a, self._assembly = self._assembly, None
        if self._chunks is not None:
            self.host.link.unsubscribe(self._chunks)
            self._chunks = None
        if a is not None:
            shutil.rmtree(a.staging, ignore_errors=True)

    def _complete(self, a: Assembly) -> None:
        from edge_lstm.daemon import verify_bundle

        self.host.link.unsubscribe(self._chunks)
        self._assembly, self._chunks = None, None
        release = a.release
        path = None
        try:
            for f in release.files:
                got = file_sha256(a.staging / f.name)
                if got != f.sha256:
                    raise RolloutError("bad-hash", f"{release.label}: {f.name} has sha256 {got[:12]}..., the signed "
                                                   f"release says {f.sha256[:12]}...: altered in transit; refused")
            path = self.store.install(a.staging, release)
            bundle = verify_bundle(path)
        except (RolloutError, BundleError) as exc:
            shutil.rmtree(path or a.staging, ignore_errors=True)
            self.store.remember(release.sha256)
            err = exc if isinstance(exc, RolloutError) else RolloutError("bad-bundle", str(exc))
            self._refuse(err, release)
            return
        checks: dict[str, Any] = {"sha256": "ok"}
        if self.ro.parity_tolerance:
            p = self._parity(bundle)
            checks["parity"] = {"compared_streams": p.streams, "worst": _round(p.worst), "stream": p.stream,
                                "tolerance": self.ro.parity_tolerance}
            if not p.ok(self.ro.parity_tolerance):
                shutil.rmtree(path, ignore_errors=True)
                self.store.remember(release.sha256)
                why = p.problem or (f"its forecasts differ from the running model's by {p.worst:.1%} of their scale on "
                                    f"stream {p.stream!r}, more than rollout.parity_tolerance = "
                                    f"{self.ro.parity_tolerance:g}")
                self._rolled_back(release, "parity", f"{release.label}: {why}; the running bundle stays", checks)
                return
        self.host.call_soon(lambda: self._swap(path, release, checks))

    def _parity(self, bundle: Any) -> Parity:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                fut.set_result(self.host.runtime.export_state())
            except Exception as exc:
                fut.set_exception(exc)

        self.host.call_soon(take)
        snap = fut.result(SNAPSHOT_TIMEOUT)
        m = self.host.cfg.model
        return parity(self.host.runtime.bundle, bundle, snap, backend=m.backend, precision=m.precision, mode=m.mode)

    # -- inference thread
    def _swap(self, path: Path, release: Release, checks: dict) -> None:
        bundle = self.host.runtime.bundle
        running = {"path": str(bundle.path.resolve()) if bundle is not None else self.host.cfg.model.bundle,
                   "bundle": bundle.name if bundle is not None else None,
                   "version": self.store.current_version(), "release": None}
        new = {"path": str(path.resolve()), "bundle": release.bundle, "version": release.version,
               "release": release.sha256}
        self.store.switch(new, running, watch=self.ro.watch > 0)
        self.store.remember(release.sha256)
        try:
            self.host.load_bundle(path, reason="rollout")
        except Exception as exc:  # the new bundle does not fit the running daemon
            self.store.revert()
            self._rolled_back(release, "load", f"{release.label} could not be swapped in: {exc}; the running "
                                               "bundle stays", checks)
            return
        self.host.cfg.model.bundle = new["path"]  # what SIGHUP reloads
        self._event("installed", release, checks=checks, watch=self.ro.watch, path=new["path"])
        if self.ro.watch:
            self._watched, self._watch_left = new, self.ro.watch
        else:
            self._confirm(release)

    def _confirm(self, release: Release | None = None) -> None:
        w = self._watched or {}
        self._watch_left = self._watched = None
        self.store.confirm(self.ro.keep)
        self.host.event("rollout", outcome="confirmed", bundle=release.bundle if release else w.get("bundle"),
                        version=release.version if release else w.get("version"), forecasts=self.ro.watch)

    def _roll_back(self, why: str) -> None:
        w = self._watched or {}
        self._watch_left = self._watched = None
        prev = self.store.revert()
        problem = (f"{w.get('bundle')} v{w.get('version')}: {why} within its first {self.ro.watch} forecasts; back "
                   f"to {Path(prev['path']).name if prev else 'model.bundle'}")
        if prev:
            try:
                self.host.load_bundle(Path(prev["path"]), reason="rollback")
                self.host.cfg.model.bundle = prev["path"]
            except Exception as exc:
                problem += f" (which failed to load too: {exc})"
        log.error("rollout: %s", problem)
        self.host.report("rollout-rolled-back", problem, topic=self.topic, source="rollout")
        self.host.event("rollout", outcome="rolled-back", reason="crash", bundle=w.get("bundle"),
                        version=w.get("version"), problem=problem)

    # -- reporting
    def _event(self, outcome: str, release: Release | None, **fields: Any) -> None:
        ids = {"bundle": release.bundle, "version": release.version, "release": release.sha256[:16]} if release else {}
        self.host.event("rollout", outcome=outcome, **ids, **fields)

    def _refuse(self, exc: RolloutError, release: Release | None = None) -> None:
        log.warning("rollout refused (%s): %s", exc.code, exc.problem)
        self.host.report("rollout-refused", exc.problem, topic=self.topic, source="rollout")
        self._event("refused", release, code=exc.code, problem=exc.problem)

    def _rolled_back(self, release: Release, reason: str, problem: str, checks: dict) -> None:
        log.error("rollout rolled back (%s): %s", reason, problem)
        self.host.report("rollout-rolled-back", problem, topic=self.topic, source="rollout")
        self._event("rolled-back", release, reason=reason, problem=problem, checks=checks)


def _round(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None
