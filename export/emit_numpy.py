"""`weights.npz` for the NumPy backend, and the float64 reference the exporter checks against."""

from __future__ import annotations

import numpy as np

from edge_lstm.backends.numpy_backend import DenseWeights, LayerWeights, NumpyStep
from edge_lstm_export.stack import Stack


def weight_arrays(stack: Stack) -> dict[str, np.ndarray]:
    """The arrays `NumpyStep.from_arrays` reads, float32, keyed `pre{j}.*` / `rnn{k}.*` / `dense{j}.*`."""
    out: dict[str, np.ndarray] = {}
    for j, dense in enumerate(stack.pre):
        out[f"pre{j}.kernel"] = dense.kernel
        out[f"pre{j}.bias"] = dense.bias
    for k, layer in enumerate(stack.recurrent):
        out[f"rnn{k}.kernel"] = layer.kernel
        out[f"rnn{k}.recurrent_kernel"] = layer.recurrent_kernel
        out[f"rnn{k}.bias"] = layer.bias
        if layer.kind == "gru":
            out[f"rnn{k}.recurrent_bias"] = layer.recurrent_bias
    for j, dense in enumerate(stack.head):
        out[f"dense{j}.kernel"] = dense.kernel
        out[f"dense{j}.bias"] = dense.bias
    if stack.output_scale is not None:
        out["output.scale"] = stack.output_scale
        out["output.offset"] = stack.output_offset
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def reference(stack: Stack, dtype: type = np.float64) -> NumpyStep:
    """A NumPy step engine for `stack` (float64 by default: the exporter's oracle)."""
    layers = [
        LayerWeights(
            kind=l.kind,
            units=l.units,
            kernel=l.kernel,
            recurrent_kernel=l.recurrent_kernel,
            bias=l.bias,
            recurrent_bias=l.recurrent_bias,
            activation=l.activation,
            recurrent_activation=l.recurrent_activation,
            reset_after=l.reset_after,
        )
        for l in stack.recurrent
    ]
    head = [DenseWeights(d.kernel, d.bias, d.activation) for d in stack.head]
    return NumpyStep(
        layers,
        head,
        output_scale=stack.output_scale,
        output_offset=stack.output_offset,
        dtype=dtype,
        pre=[DenseWeights(d.kernel, d.bias, d.activation) for d in stack.pre],
    )
