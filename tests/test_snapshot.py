"""Warm-restart snapshots: atomic, pickle-free, restored only into the same bundle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import datasets
from edge_lstm import snapshot
from edge_lstm.forecaster import Forecast, Runtime, Sample



def fed(bundle, series, streams=("a", "b")) -> Runtime:
    rt = Runtime.open(bundle, backend="numpy")
    for i, v in enumerate(series):
        rt.push_many([Sample(s, [float(v) + k], float(i)) for k, s in enumerate(streams)])
    return rt


def test_round_trip(tmp_path, tiny_bundle):
    """save then load gives back the same arrays, and the file needs no pickle to read."""
    rt = fed(tiny_bundle, datasets.airline()[:20])
    export = rt.export_state()
    path = snapshot.save(tmp_path / "state.npz", export, meta={"device": "d1"})
    back, meta = snapshot.load(path)
    assert meta["device"] == "d1" and meta["format"] == "edge-lstm-snapshot" and abs(meta["saved"] - time.time()) < 60
    assert back.streams == export.streams and back.bundle_sha == export.bundle_sha
    for name in ("states", "seq", "since", "last_ts", "recent_x", "recent_n"):
        np.testing.assert_array_equal(getattr(back, name), getattr(export, name))
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]  # no temp file left behind


def test_restore_continues_like_an_uninterrupted_run(tmp_path, tiny_bundle):
    """A runtime restored from a snapshot forecasts exactly what the uninterrupted one does."""
    series = datasets.airline()
    whole = fed(tiny_bundle, series[:30])
    snapshot.save(tmp_path / "s.npz", whole.export_state())
    fresh = Runtime.open(tiny_bundle, backend="numpy")
    done = snapshot.restore(fresh, tmp_path / "s.npz")
    assert done.streams == 2 and done.reason == ""
    for i in range(30, 40):
        a = whole.push("a", [float(series[i])], float(i))
        b = fresh.push("a", [float(series[i])], float(i))
        assert isinstance(a, Forecast) and a.seq == b.seq and not b.warming_up
        np.testing.assert_array_equal(a.values, b.values)
    # the restored timestamps still drop duplicates
    assert fresh.push("b", [1.0], 5.0).reason in ("duplicate", "out-of-order")


def test_restore_refuses_another_bundle(tmp_path, bundle_dir):
    """A snapshot of another model is not loaded: the daemon starts cold and says why."""
    rt = fed(bundle_dir / "tiny-lstm", datasets.airline()[:10])
    snapshot.save(tmp_path / "s.npz", rt.export_state())
    other = Runtime.open(bundle_dir / "tiny-gru", backend="numpy")
    done = snapshot.restore(other, tmp_path / "s.npz")
    assert done.streams == 0 and "taken with bundle" in done.reason and "starting cold" in done.reason
    assert other.streams() == []


@pytest.mark.parametrize("content, words", [(b"not a zip", "not a readable snapshot"), (None, "no snapshot yet")])
def test_unreadable_or_missing_snapshot_starts_cold(tmp_path, tiny_bundle, content, words):
    """A corrupt or missing file never stops the daemon: restore reports why and starts cold."""
    path = tmp_path / "s.npz"
    if content is not None:
        path.write_bytes(content)
    rt = Runtime.open(tiny_bundle, backend="numpy")
    done = snapshot.restore(rt, path)
    assert done.streams == 0 and words in done.reason


def test_foreign_npz_is_refused(tmp_path, tiny_bundle):
    """An .npz without the snapshot header is refused with a message naming the file."""
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(snapshot.SnapshotError, match="x.npz: no snapshot header"):
        snapshot.load(tmp_path / "x.npz")


def test_failed_write_keeps_the_old_snapshot(tmp_path, tiny_bundle, monkeypatch):
    """If writing fails half-way, the previous snapshot is intact and no temp file remains."""
    path = tmp_path / "s.npz"
    rt = fed(tiny_bundle, datasets.airline()[:8])
    snapshot.save(path, rt.export_state())
    before = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot.np, "savez", broken)
    with pytest.raises(snapshot.SnapshotError, match="No space left on device"):
        snapshot.save(path, fed(tiny_bundle, datasets.airline()[:12]).export_state())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_sigkill_while_saving_never_leaves_a_torn_file(tmp_path, tiny_bundle):
    """A process killed at random moments while saving in a loop leaves a loadable snapshot."""
    path = tmp_path / "s.npz"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        from edge_lstm import snapshot
        from edge_lstm.forecaster import Runtime, Sample
        rt = Runtime.open({str(tiny_bundle)!r}, backend="numpy")
        rt.push_many([Sample(f"s{{i}}", [float(i)], 1.0) for i in range(3000)])
        snapshot.save({str(path)!r}, rt.export_state())
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            rt.push_many([Sample(f"s{{i}}", [float(i)], 1.0 + n) for i in range(3000)])
            snapshot.save({str(path)!r}, rt.export_state())
    """)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + rng.uniform(0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc.stdout.close()
        export, _ = snapshot.load(path)
        assert len(export.streams) == 3000
    rt = Runtime.open(tiny_bundle, backend="numpy")
    assert snapshot.restore(rt, path).streams == 3000
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # killed saves' temp files are gone
