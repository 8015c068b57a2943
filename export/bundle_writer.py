"""Write a bundle directory: the step models, weights.npz and a manifest that pins them."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from edge_lstm.bundle import FORMAT, FORMAT_VERSION
from edge_lstm_export.emit_numpy import weight_arrays
from edge_lstm_export.emit_onnx import IO, build_step_graph, build_window_graph
from edge_lstm_export.scaler import Scaler
from edge_lstm_export.stack import Stack


def _entry(path: Path, **fields) -> dict:
    data = path.read_bytes()
    return {"file": path.name, **fields, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def write_bundle(
    stack: Stack,
    out_dir: str | Path,
    *,
    name: str,
    features: list[str],
    targets: list[str],
    scaler: Scaler | None = None,
    cell: str = "matmul",
    baseline_windows: tuple[int, ...] = (),
    units: dict[str, str] | None = None,
) -> Path:
    """Write `stack` (in the model's own units) as a bundle that reads and writes sensor units.

    Writes model.onnx (fp32 step model), weights.npz (NumPy backend) and manifest.json. With
    `baseline_windows`, also window-W.onnx files: the naive whole-window model that
    `edge-lstm bench` times against the step model on the device. Further variants (TFLite,
    quantized) are added with `add_variant`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(features) != stack.features or len(targets) != stack.outputs:
        raise ValueError(
            f"{len(features)} feature names / {len(targets)} target names for a model with "
            f"{stack.features} inputs / {stack.outputs} outputs"
        )
    device_stack = scaler.fold(stack) if scaler else stack
    onnx.save_model(build_step_graph(device_stack, cell, name=name), str(out / "model.onnx"))
    buf = io.BytesIO()
    np.savez(buf, **weight_arrays(device_stack))
    (out / "weights.npz").write_bytes(buf.getvalue())
    baselines = []
    for w in baseline_windows:
        path = out / f"window-{w}.onnx"
        onnx.save_model(build_window_graph(device_stack, w), str(path))
        baselines.append(_entry(path, kind="window", backend="onnx", window=w))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": stack.source,
        "features": list(features),
        "targets": list(targets),
        "window": stack.window,
        "scaler": scaler.manifest() if scaler else {"kind": "none"},
        "state": {"size": stack.state_size, "layers": stack.state_layout()},
        "head": [{"units": d.units, "activation": d.activation} for d in stack.head],
        **({"pre": [{"units": d.units, "activation": d.activation} for d in stack.pre]} if stack.pre else {}),
        "io": dict(IO),
        "onnx_cell": cell,
        "variants": [
            _entry(out / "model.onnx", backend="onnx", precision="fp32"),
            _entry(out / "weights.npz", backend="numpy", precision="fp32"),
        ],
        "baselines": baselines,
    }
    if units:  # optional (format_version 1 either way): each target's unit, for dashboards and HA
        unknown = sorted(set(units) - set(targets))
        if unknown:
            raise ValueError(f"units given for {unknown}, which are not targets ({targets})")
        manifest["units"] = dict(units)
    _write_manifest(out, manifest)
    return out


def add_variant(out_dir: str | Path, file: str | Path, *, backend: str, precision: str) -> dict:
    """List an extra file (already inside the bundle) in the manifest, with its hash."""
    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = _entry(out / Path(file).name, backend=backend, precision=precision)
    manifest["variants"] = [v for v in manifest["variants"] if v["file"] != entry["file"]] + [entry]
    _write_manifest(out, manifest)
    return entry


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")
