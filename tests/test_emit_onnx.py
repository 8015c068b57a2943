"""The ONNX step graph equals the NumPy reference, for every architecture, cell form and head."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import stacks
from edge_lstm_export.emit_numpy import reference
from edge_lstm_export.emit_onnx import build_step_graph, build_window_graph
from edge_lstm_export.parity import roll
from edge_lstm_export.stack import Stack


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _max_step_error(stack: Stack, cell: str, scale: float = 1.0, steps: int = 15) -> float:
    sess, ref = _session(build_step_graph(stack, cell)), reference(stack)
    rng = np.random.default_rng(7)
    state = np.zeros((5, stack.state_size), np.float32)
    state_ref = state.astype(np.float64)
    worst = 0.0
    for _ in range(steps):
        x = (rng.normal(size=(5, stack.features)) * scale).astype(np.float32)
        y, state = sess.run(["y", "state_out"], {"x": x, "state": state})
        y_ref, state_ref = ref.step(x, state_ref)
        rel = np.abs(y - y_ref).max() / max(1.0, np.abs(y_ref).max())
        worst = max(worst, rel, np.abs(state - state_ref).max())
    return worst


@pytest.mark.parametrize("cell", ["matmul", "op"])
@pytest.mark.parametrize("name", list(stacks.zoo()))
def test_step_graph_matches_reference(name: str, cell: str) -> None:
    """Stepping the ONNX graph 15 times tracks the float64 reference within fp32 rounding."""
    assert _max_step_error(stacks.zoo()[name], cell) < 1e-5


@pytest.mark.parametrize("activation", stacks.activation_names())
def test_every_head_activation(activation: str) -> None:
    """Every Keras activation the reader accepts has an ONNX form equal to the NumPy one."""
    rng = np.random.default_rng(3)
    stack = Stack((stacks.recurrent("lstm", 2, 4, rng),), (stacks.dense(4, 3, rng, activation),))
    assert _max_step_error(stack, "matmul") < 1e-5


def test_scaling_is_folded_exactly() -> None:
    """A scaled stack reads and writes sensor units: same as scaling by hand around the model."""
    rng = np.random.default_rng(4)
    stack = stacks.seed_like(rng, units=8)
    scaled = stack.with_scaling([104.0], [1 / 518.0], [104.0], [1 / 518.0])
    sess = _session(build_step_graph(scaled))
    ref = reference(stack)
    x = rng.uniform(104, 622, (6, 1)).astype(np.float32)
    s = np.zeros((6, stack.state_size), np.float32)
    y, s_out = sess.run(["y", "state_out"], {"x": x, "state": s})
    y_ref, s_ref = ref.step((x - 104.0) / 518.0, s.astype(np.float64))
    np.testing.assert_allclose((y - 104.0) / 518.0, y_ref, atol=2e-6)
    np.testing.assert_allclose(s_out, s_ref, atol=2e-6)


def test_scaling_folds_into_a_per_step_dense_before_the_recurrent_layers(tmp_path) -> None:
    """With a Dense before the first LSTM the input scaling folds into that Dense; the bundle's
    ONNX and NumPy (read back through the manifest) variants both read sensor units."""
    from edge_lstm.backends.registry import open_backend
    from edge_lstm.bundle import Bundle
    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.scaler import Scaler

    stack = stacks.zoo()["pre-dense"]
    scaler = Scaler("minmax", np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.25, 2.0]), np.zeros(2), np.array([1.0, 4.0]))
    bundle = Bundle.open(write_bundle(stack, tmp_path / "b", name="pre", features=["a", "b", "c"],
                                      targets=["y", "z"], scaler=scaler))
    assert [d["activation"] for d in bundle.manifest["pre"]] == ["gelu_tanh", "linear"]
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 6, 3))
    want = reference(stack).run_window((x - scaler.x_offset) * scaler.x_scale) / scaler.y_scale + scaler.y_offset
    for backend in ("onnx", "numpy"):
        got = roll(open_backend(bundle, backend).step, x, bundle.state_size)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_nonlinear_head_keeps_output_scaling_after_activation() -> None:
    """With a sigmoid head the output scaling cannot fold into the weights; it must still apply."""
    rng = np.random.default_rng(5)
    stack = Stack((stacks.recurrent("gru", 2, 4, rng),), (stacks.dense(4, 2, rng, "sigmoid"),))
    scaled = stack.with_scaling([1.0, 2.0], [0.5, 0.25], [10.0, 20.0], [0.1, 0.2])
    assert scaled.output_scale is not None
    sess, ref = _session(build_step_graph(scaled)), reference(stack)
    x = rng.normal(size=(3, 2)).astype(np.float32)
    y, _ = sess.run(["y", "state_out"], {"x": x, "state": np.zeros((3, 4), np.float32)})
    y_ref, _ = ref.step((x - [1.0, 2.0]) * [0.5, 0.25], np.zeros((3, 4)))
    np.testing.assert_allclose(y, y_ref / [0.1, 0.2] + [10.0, 20.0], rtol=1e-5)


def test_batch_axis_is_free_and_opset_recent() -> None:
    """The contract: dynamic batch axis, inputs x/state, outputs y/state_out, opset >= 17."""
    model = build_step_graph(stacks.seed_like(units=4))
    assert model.opset_import[0].version >= 17
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims == {"x": ["batch", 1], "state": ["batch", 16], "y": ["batch", 1], "state_out": ["batch", 16]}


@pytest.mark.parametrize("name", ["lstm2", "gru-reset-after", "gru-reset-before", "gru-lstm-mixed", "pre-dense"])
def test_window_baseline_equals_rolled_steps(name: str) -> None:
    """The whole-window baseline model answers what rolling the step model over the window does."""
    stack = stacks.zoo()[name]
    windows = np.random.default_rng(8).normal(size=(4, 7, stack.features)).astype(np.float32)
    got = _session(build_window_graph(stack, 7)).run(["y"], {"x": windows})[0]
    np.testing.assert_allclose(got, reference(stack).run_window(windows), atol=1e-5)


def test_cell_order_matters() -> None:
    """The parity check can fail: swapping two LSTM gates in the weights is caught."""
    from dataclasses import replace

    stack = stacks.zoo()["lstm2"]
    first = stack.recurrent[0]
    u = first.units
    swapped = np.r_[u : 2 * u, 0:u, 2 * u : 4 * u]  # f <-> i
    broken = replace(stack, recurrent=(replace(first, kernel=first.kernel[:, swapped]), *stack.recurrent[1:]))
    windows = np.random.default_rng(9).normal(size=(4, 6, 1)).astype(np.float32)
    got = _session(build_step_graph(broken))
    state = np.zeros((4, stack.state_size), np.float32)
    for t in range(6):
        y, state = got.run(["y", "state_out"], {"x": windows[:, t], "state": state})
    assert np.abs(y - reference(stack).run_window(windows)).max() > 1e-3
