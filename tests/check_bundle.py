#!/usr/bin/env python3
"""Check that a bundle keeps the contract in DESIGN.md.

(A verbatim copy of the team's shared checker, shared/tools/check_bundle.py, kept here so that
the tests run on a fresh clone; refresh it when the shared one changes.)

Usage: python tests/check_bundle.py BUNDLE_DIR [BUNDLE_DIR ...]

It checks the manifest's keys, every variant's sha256, that each ONNX / TFLite variant has
the step signature y[B,O], state_out[B,S] = step(x[B,F], state[B,S]) with a free batch axis,
that stepping from zero state gives finite numbers, and that a batch of streams gives the
same rows as the streams stepped one at a time. It needs numpy, plus onnxruntime and/or
ai-edge-litert for the variants it finds. Exit 0 when every bundle holds; 1 otherwise.
It does not check that the model equals its source: the project's parity tests do that.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REQUIRED = ["format", "format_version", "features", "targets", "window", "state", "io", "variants"]


def problems(bundle: Path) -> list[str]:
    out: list[str] = []
    mf = bundle / "manifest.json"
    if not mf.is_file():
        return [f"{bundle}: no manifest.json"]
    try:
        m = json.loads(mf.read_text())
    except ValueError as exc:
        return [f"{mf}: not JSON ({exc})"]
    out += [f"{mf}: missing key {k!r}" for k in REQUIRED if k not in m]
    if out:
        return out
    if m["format"] != "edge-lstm-bundle":
        out.append(f"{mf}: format is {m['format']!r}, expected 'edge-lstm-bundle'")
    io = m["io"]
    for k in ("x", "state", "y", "state_out"):
        if k not in io:
            out.append(f"{mf}: io lacks {k!r}")
    size = int(m["state"].get("size", -1))
    covered = []
    for layer in m["state"].get("layers", []):
        for key in ("h", "c"):
            if key in layer:
                covered.extend(range(*layer[key]))
    if sorted(covered) != list(range(size)):
        out.append(f"{mf}: state.layers slices do not tile 0..{size} exactly")
    f, o = len(m["features"]), len(m["targets"])
    rng = np.random.default_rng(0)
    for v in m["variants"]:
        path = bundle / v.get("file", "?")
        if not path.is_file():
            out.append(f"{path}: listed in the manifest but missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if v.get("sha256") != digest:
            out.append(f"{path}: sha256 in manifest does not match the file")
        step = _stepper(path, v.get("backend"), io)
        if step is None:
            continue
        try:
            x = rng.normal(size=(5, f)).astype("float32")
            s0 = np.zeros((5, size), "float32")
            y, s1 = step(x, s0)
            if y.shape != (5, o) or s1.shape != (5, size):
                out.append(f"{path}: step gave y{y.shape}, state_out{s1.shape}; expected (5, {o}), (5, {size})")
                continue
            if not (np.isfinite(y).all() and np.isfinite(s1).all()):
                out.append(f"{path}: non-finite output from zero state")
            for i in range(5):
                yi, si = step(x[i : i + 1], s0[i : i + 1])
                if np.abs(yi[0] - y[i]).max() > 1e-5 or np.abs(si[0] - s1[i]).max() > 1e-5:
                    out.append(f"{path}: row {i} of a batch differs from the same stream stepped alone")
                    break
        except Exception as exc:  # report, do not crash: this is a checker
            out.append(f"{path}: stepping failed: {type(exc).__name__}: {exc}")
    return out


def _stepper(path: Path, backend: str | None, io: dict):
    if backend == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            print(f"note: onnxruntime not installed; {path.name} not stepped")
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        if names != {io["x"], io["state"]}:
            raise_msg = f"inputs are {sorted(names)}, expected {[io['x'], io['state']]}"
            return lambda x, s: (_ for _ in ()).throw(ValueError(raise_msg))
        return lambda x, s: tuple(sess.run([io["y"], io["state_out"]], {io["x"]: x, io["state"]: s}))
    if backend in ("tflite", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            print(f"note: ai-edge-litert not installed; {path.name} not stepped")
            return None
        it = Interpreter(model_path=str(path))

        def find(details, key):
            for d in details:
                if key == d["name"] or d["name"].endswith(key) or key in d["name"]:
                    return d
            raise ValueError(f"no tensor named like {key!r} in {[d['name'] for d in details]}")

        def step(x, s):
            xi, si = find(it.get_input_details(), io["x"]), find(it.get_input_details(), io["state"])
            it.resize_tensor_input(xi["index"], x.shape)
            it.resize_tensor_input(si["index"], s.shape)
            it.allocate_tensors()
            it.set_tensor(xi["index"], x)
            it.set_tensor(si["index"], s)
            it.invoke()
            yo, so = find(it.get_output_details(), io["y"]), find(it.get_output_details(), io["state_out"])
            return it.get_tensor(yo["index"]).copy(), it.get_tensor(so["index"]).copy()

        return step
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    bad = 0
    for arg in argv:
        found = problems(Path(arg))
        for p in found:
            print("FAIL", p)
        if not found:
            print("ok  ", arg)
        bad += bool(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
