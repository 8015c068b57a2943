"""Warm-restart snapshots: the runtime's per-stream state, saved atomically, no pickle.

`save` writes `Runtime.export_state()` with `np.savez` to a temporary file next to the
target, fsyncs it, renames it over the target and fsyncs the directory, so a crash or power
cut at any moment leaves either the old snapshot or the new one, never a torn file. `load`
reads it back with `allow_pickle=False`. `restore` puts it into a runtime only when the
snapshot was taken with the same bundle (same manifest hash): state rows of another model
mean nothing.

The arrays are the runtime's own `StateExport.to_arrays()` (strings as unicode arrays, no
object arrays), plus a `__meta__` JSON header (format, version, device, save time).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_lstm.errors import BundleError, EdgeLstmError
from edge_lstm.forecaster import Runtime, StateExport

FORMAT = "edge-lstm-snapshot"
FORMAT_VERSION = 1


class SnapshotError(EdgeLstmError):
    """Raised when a snapshot file cannot be written or is unreadable."""


def save(path: str | Path, export: StateExport, *, meta: dict | None = None) -> Path:
    """Atomically write a `StateExport` to `path` (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    arrays = export.to_arrays()
    for key, arr in arrays.items():
        if arr.dtype == object:
            raise SnapshotError(f"state field {key!r} is an object array; snapshots hold no pickled data")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "saved": time.time(), **(meta or {})}
    arrays["__meta__"] = np.asarray(json.dumps(header))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot write a snapshot there: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise SnapshotError(f"{path}: snapshot not written: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load(path: str | Path) -> tuple[StateExport, dict]:
    """Read a snapshot written by `save`; returns (export, meta). FileNotFoundError if absent."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise SnapshotError(f"{path}: not a readable snapshot ({exc}); delete it to start cold") from None
    try:
        meta = json.loads(str(data.pop("__meta__").item()))
    except (KeyError, ValueError):
        raise SnapshotError(f"{path}: no snapshot header; delete it to start cold") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: format {meta.get('format')!r} version {meta.get('format_version')!r} is not "
            f"{FORMAT!r} version {FORMAT_VERSION}; delete it to start cold"
        )
    try:
        return StateExport.from_arrays(data), meta
    except BundleError as exc:
        raise SnapshotError(f"{path}: {exc}; delete it to start cold") from None


@dataclass(frozen=True)
class Restored:
    """What `restore` did: how many streams came back, or why none did."""

    streams: int
    reason: str = ""
    saved: float | None = None


def restore(runtime: Runtime, path: str | Path) -> Restored:
    """Load `path` into `runtime` when it was taken with the same bundle; never raises for a
    missing, foreign or unreadable snapshot (the daemon then starts cold and says why).

    Temp files left by a save that was killed half-way are deleted first.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    try:
        export, meta = load(path)
    except FileNotFoundError:
        return Restored(0, "no snapshot yet")
    except SnapshotError as exc:
        return Restored(0, str(exc))
    if export.bundle_sha != runtime.bundle_sha:
        return Restored(
            0,
            f"{path}: taken with bundle {export.bundle_sha[:12]}..., the daemon runs "
            f"{runtime.bundle_sha[:12]}...; starting cold",
            meta.get("saved"),
        )
    try:
        runtime.import_state(export)
    except (BundleError, ValueError) as exc:
        return Restored(0, f"{path}: {exc}", meta.get("saved"))
    return Restored(len(export.streams), "", meta.get("saved"))
