"""`edge-lstm demo` end to end: a real broker, the daemon, the replay and the subscriber."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (its parent has exited)
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def _demo(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_lstm", "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.broker
def test_demo_runs_to_the_end_and_cleans_up(tmp_path) -> None:
    """All 144 months get a forecast; the errors are printed; the plot is saved; the broker
    the demo started is gone when it exits."""
    proc = _demo("--rate", "200", "--plot", str(tmp_path / "demo.png"), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "144 forecasts for 144 samples" in out
    held = re.search(r"held-out \(1959-60, not trained on\)\s+MAE\s+([\d.]+)\s+RMSE\s+([\d.]+)", out)
    assert held, out
    assert 10 < float(held.group(2)) < 120  # a real forecaster of this series, not noise
    rows = [line for line in out.splitlines() if re.match(r"^19\d\d-\d\d ", line)]
    assert len(rows) == 144 and "warming up" in rows[0] and "warming up" not in rows[20]
    pid = re.search(r"\(pid (\d+)\)", out)
    if pid:
        assert _gone(int(pid.group(1)))
    try:
        import matplotlib  # noqa: F401

        assert (tmp_path / "demo.png").stat().st_size > 10_000
    except ImportError:
        assert "no plot" in out


@pytest.mark.broker
def test_ctrl_c_stops_everything(tmp_path) -> None:
    """SIGINT mid-replay ends the demo within seconds and leaves no broker behind."""
    proc = _demo("--rate", "5", "--no-plot", cwd=tmp_path)
    lines = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        lines.append(line)
        if re.match(r"^1949-0[3-9] ", line):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err, err
    pid = re.search(r"\(pid (\d+)\)", "".join(lines))
    if pid:
        assert _gone(int(pid.group(1)))
