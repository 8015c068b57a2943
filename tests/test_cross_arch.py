"""Cross-architecture parity: bundles exported on x86 forecast the same on aarch64.

The device runs bundles that were exported on a workstation. This file holds both halves of
the check:

- On the x86 host, `write_reference(folder)` exports a few bundles with the workstation
  toolchain (ONNX step models in both cell styles, `weights.npz`, and a TFLite variant when
  TensorFlow is installed) and writes `folder/x86-forecasts.npz`: the inputs, and what the
  host's own engines forecast for them, per bundle and per fp32 variant.
  `deploy/check-aarch64` runs it as `python tests/test_cross_arch.py FOLDER`.
- On aarch64 (`deploy/check-aarch64` runs pytest under qemu with EDGE_LSTM_X86_BUNDLES=FOLDER),
  `test_forecasts_match_x86` rolls the same inputs through the same variants and compares.
  Without that variable those tests skip; `test_reference_round_trip` always runs.

Inputs: 3 streams stepped together as rows of one batch for 2 windows' worth of samples,
from zero state; every step's forecast and the final packed state are compared. Forecasts
are in sensor units (hundreds of passengers, where float32's own spacing is ~3e-5), so each
output column's error is taken relative to that column's peak, and absolute below 1:
max |a - b| / max(1, max |b|) <= 1e-5.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

TOLERANCE = 1e-5
REFERENCE = "x86-forecasts.npz"
ENV = "EDGE_LSTM_X86_BUNDLES"
#: Set by deploy/check-aarch64's launcher to the flavour under test ("litert" or "rpios").
FLAVOUR = os.environ.get("EDGE_LSTM_AARCH64_FLAVOUR")
#: The LiteRT interpreter each emulated flavour must end up on (rpios has no ai-edge-litert).
EXPECTED_INTERPRETER = {"litert": "ai_edge_litert", "rpios": "tflite_runtime"}
STREAMS = 3
BACKENDS = ("onnx", "litert", "numpy")


# --- the x86 side ------------------------------------------------------------------------------
def _bundle_specs() -> dict[str, dict]:
    """The bundles to export: name -> stack, scaler, onnx cell style, whether to add TFLite."""
    import datasets
    import stacks
    from edge_lstm_export.scaler import Scaler

    lo, scale = datasets.minmax(datasets.airline())
    airline = Scaler("minmax", lo, scale, lo, scale)
    seed = keras_initialised_seed(np.random.default_rng(7))
    zoo = stacks.zoo(np.random.default_rng(11))
    return {
        "airline-lstm2x50": {"stack": seed, "scaler": airline, "cell": "matmul", "tflite": True},
        "airline-lstm2x50-op": {"stack": seed, "scaler": airline, "cell": "op", "tflite": False},
        "gru-lstm-mixed": {"stack": zoo["gru-lstm-mixed"], "scaler": None, "cell": "matmul", "tflite": True},
        "gru-reset-before": {"stack": zoo["gru-reset-before"], "scaler": None, "cell": "matmul", "tflite": True},
    }


def keras_initialised_seed(rng: np.random.Generator, units: int = 50, window: int = 12):
    """The seed architecture, LSTM(50) -> LSTM(50) -> Dense(1), with the weights Keras
    initialises it with (Glorot-uniform kernels, orthogonal recurrent kernels, forget-gate
    bias 1): the magnitudes of a real small forecaster, not a chaotic random one."""
    from edge_lstm_export.stack import Dense, Recurrent, Stack

    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))

    def lstm(inputs: int, name: str) -> Recurrent:
        q, _ = np.linalg.qr(rng.normal(size=(4 * units, units)))
        bias = np.zeros(4 * units)
        bias[units : 2 * units] = 1.0  # unit_forget_bias; gate order i, f, g, o
        return Recurrent("lstm", units, glorot(inputs, 4 * units), q.T, bias, None, name=name)

    head = Dense(glorot(units, 1), np.zeros(1), "linear", name="dense")
    return Stack((lstm(1, "lstm"), lstm(units, "lstm_1")), (head,), window=window)


def _inputs(stack, scaler, rng: np.random.Generator) -> np.ndarray:
    """x[T, STREAMS, F] in sensor units: the airline series (shifted per stream) for a
    univariate airline model, else values spread over the model's input range."""
    steps = 2 * (stack.window or 12)
    if scaler is not None and stack.features == 1:
        import datasets

        series = datasets.airline()
        x = np.stack([series[7 * k : 7 * k + steps] for k in range(STREAMS)], axis=1)[:, :, None]
    else:
        x = rng.uniform(-1.5, 1.5, (steps, STREAMS, stack.features))
    return np.ascontiguousarray(x, np.float32)


def write_reference(folder: str | Path, *, tflite: bool | None = None) -> Path:
    """Export the bundles into `folder` and write this machine's forecasts to x86-forecasts.npz.

    `tflite=None` adds the TFLite variants when TensorFlow can be imported. Returns the
    reference file's path.
    """
    from edge_lstm_export.bundle_writer import add_variant, write_bundle

    if tflite is None:
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            tflite = False
        else:
            tflite = True
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in _bundle_specs().items():
        stack, scaler = spec["stack"], spec["scaler"]
        names = [f"x{i}" for i in range(stack.features)]
        targets = [f"y{i}" for i in range(stack.outputs)]
        out = write_bundle(stack, folder / name, name=name, features=names, targets=targets,
                           scaler=scaler, cell=spec["cell"])
        if tflite and spec["tflite"]:
            from edge_lstm_export.emit_tflite import emit_tflite

            device = stack.with_scaling(scaler.x_offset, scaler.x_scale, scaler.y_offset, scaler.y_scale) if scaler else stack
            emit_tflite(device, out / "model.tflite")
            add_variant(out, "model.tflite", backend="litert", precision="fp32")
        arrays[f"{name}:x"] = _inputs(stack, scaler, rng)
    for (name, backend, precision), (y, state) in forecasts(folder, arrays).items():
        arrays[f"{name}:{backend}/{precision}:y"] = y
        arrays[f"{name}:{backend}/{precision}:state"] = state
    arrays["meta"] = np.array(json.dumps(_machine()))
    path = folder / REFERENCE
    np.savez(path, **arrays)
    return path


# --- both sides ----------------------------------------------------------------------------------
def roll(engine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step `engine` over x[T, B, F] from zero state: every step's y [T, B, O] and the final state."""
    state = np.zeros((x.shape[1], engine.state_size), np.float32)
    ys = []
    for t in range(x.shape[0]):
        y, state = engine.step(x[t], state)
        ys.append(np.array(y, np.float32))  # onnx hands back its own buffers: copy them
        state = np.array(state, np.float32)
    return np.stack(ys), state


def forecasts(folder: Path, inputs: dict[str, np.ndarray]) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """(bundle, backend, precision) -> (y, final state) for every fp32 variant of every bundle."""
    from edge_lstm.backends.registry import open_backend
    from edge_lstm.bundle import Bundle

    out = {}
    for key, x in inputs.items():
        if not key.endswith(":x"):
            continue
        name = key[:-2]
        bundle = Bundle.open(folder / name)
        for variant in bundle.variants:
            if variant.precision != "fp32":
                continue
            engine = open_backend(bundle, variant.backend, variant.precision)
            out[(name, variant.backend, variant.precision)] = roll(engine, x)
    return out


def error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(1, peak |want|), the peak taken per column (last axis).

    Relative to the column's own scale (a forecast that crosses zero would make a plain
    relative error meaningless there), absolute for columns that stay within +-1.
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    peak = np.abs(want).reshape(-1, want.shape[-1]).max(axis=0)
    return float(np.max(np.abs(got - want) / np.maximum(1.0, peak)))


def _machine() -> dict:
    """Where the forecasts were computed, with which engines."""
    info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        from edge_lstm.backends.litert_backend import interpreter_class

        info["litert"] = interpreter_class().__module__.split(".")[0]
    except Exception:  # noqa: BLE001 - the backend's own error says why; here it is only a note
        info["litert"] = None
    return info


# --- the aarch64 side (and any machine given a prepared folder) ---------------------------------
def _reference_cases() -> list:
    folder = os.environ.get(ENV)
    if not folder:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{ENV} is not set (deploy/check-aarch64 sets it)"))]
    path = Path(folder) / REFERENCE
    if not path.is_file():
        return [pytest.param(None, id="missing-reference")]
    with np.load(path, allow_pickle=False) as npz:
        keys = sorted(k[: -len(":y")] for k in npz.files if k.endswith(":y"))
    return [pytest.param(k, id=k) for k in keys]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The x86 folder's forecasts, as arrays (the test fails if the folder has none)."""
    if not os.environ.get(ENV):
        pytest.fail(f"{ENV} is not set: point it at a folder written by `python tests/test_cross_arch.py FOLDER` on x86")
    folder = Path(os.environ[ENV])
    path = folder / REFERENCE
    assert path.is_file(), f"{ENV}={folder}: no {REFERENCE} there; write it with `python tests/test_cross_arch.py {folder}` on x86"
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def here(reference) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """This machine's forecasts for the same bundles and inputs."""
    return forecasts(Path(os.environ[ENV]), {k: v for k, v in reference.items() if k.endswith(":x")})


@pytest.mark.parametrize("case", _reference_cases())
def test_forecasts_match_x86(case, reference, here, record_property) -> None:
    """Each fp32 variant's forecasts and final state on this machine match the x86 ones."""
    name, variant = case.split(":")
    backend, precision = variant.split("/")
    assert (name, backend, precision) in here, f"{name}: variant {variant} did not open here"
    y, state = here[(name, backend, precision)]
    err_y = error(y, reference[f"{case}:y"])
    err_state = error(state, reference[f"{case}:state"])
    x86 = json.loads(str(reference["meta"]))
    record_property("cross_arch_error_y", f"{err_y:.3g}")
    record_property("cross_arch_error_state", f"{err_state:.3g}")
    record_property("cross_arch_pair", f"{x86['machine']} -> {platform.machine()}")
    assert err_y <= TOLERANCE and err_state <= TOLERANCE, (
        f"{case}: forecasts differ from {x86['machine']}'s by {err_y:.3g} (state {err_state:.3g}); "
        f"allowed {TOLERANCE:g}. x86 had {x86}, this machine {_machine()}"
    )


@pytest.mark.skipif(not FLAVOUR, reason="only in deploy/check-aarch64's emulated runs")
def test_emulated_flavour_covers_every_backend(reference) -> None:
    """Under the emulated flavours the check is complete: aarch64, and every backend compared
    (a reference without TFLite variants would silently drop the litert backend)."""
    assert platform.machine() == "aarch64", f"expected to run on aarch64, this is {platform.machine()}"
    exported = {k.split(":")[1].split("/")[0] for k in reference if k.endswith(":y")}
    assert exported >= set(BACKENDS), (
        f"the x86 reference has variants for {sorted(exported)} only; export it on a host with "
        f"TensorFlow (pip install 'edge-lstm[export]') so that {sorted(set(BACKENDS) - exported)} is compared too"
    )
    from edge_lstm.backends.litert_backend import interpreter_class

    assert interpreter_class().__module__.split(".")[0] == EXPECTED_INTERPRETER[FLAVOUR], (
        f"flavour {FLAVOUR}: the litert backend runs on {interpreter_class().__module__}, "
        f"expected {EXPECTED_INTERPRETER[FLAVOUR]}"
    )


def test_reference_round_trip(tmp_path) -> None:
    """The reference written here reproduces here exactly, and a changed forecast is caught."""
    path = write_reference(tmp_path, tflite=False)
    with np.load(path, allow_pickle=False) as npz:
        ref = {k: npz[k] for k in npz.files}
    again = forecasts(tmp_path, {k: v for k, v in ref.items() if k.endswith(":x")})
    assert {(n, b) for n, b, _ in again} == {(n, b) for n in _bundle_specs() for b in ("onnx", "numpy")}
    for (name, backend, precision), (y, state) in again.items():
        assert error(y, ref[f"{name}:{backend}/{precision}:y"]) == 0.0
        assert error(state, ref[f"{name}:{backend}/{precision}:state"]) == 0.0
    y = ref["airline-lstm2x50:onnx/fp32:y"]
    assert y.shape == (24, STREAMS, 1) and np.all(np.isfinite(y))
    assert error(y * (1 + 3 * TOLERANCE), y) > TOLERANCE  # the metric sees a 3e-5 relative change


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} FOLDER  (exports bundles and writes FOLDER/{REFERENCE})")
    written = write_reference(sys.argv[1])
    with np.load(written, allow_pickle=False) as npz:
        variants = sorted(k.split(":")[1] for k in npz.files if k.endswith(":y"))
    print(f"{written}: {len(variants)} forecasts ({', '.join(sorted(set(variants)))}) on {platform.machine()}")
