"""The TFLite step model: one explicit TF step function with the weights as constants.

Why not convert the user's Keras model: `TFLiteConverter.from_keras_model` on a Keras 3 LSTM
with a dynamic batch fails (`TensorListReserve`), and with a fixed batch it becomes a WHILE
loop that runs about 3x slower than the ONNX window model. A `tf.function` of one step with
explicit state converts to plain FULLY_CONNECTED / LOGISTIC / TANH / MUL / ADD ops that
XNNPACK runs, with a free batch axis.

The step has the bundle contract's signature and the NumPy backend's maths (the oracle):
`y[B,O], state_out[B,S] = step(x[B,F], state[B,S])`, float32, packed state per layer h then
c (LSTM) or h (GRU), LSTM gates (i,f,g,o), GRU gates (z,r,h) with `reset_after` either way,
the Dense head, then the optional `output_scale`/`output_offset`.

The converter names the I/O tensors `serving_default_x:0`, `PartitionedCall:1`, ...; we
rename them in place to exactly `x`, `state`, `y`, `state_out` (the manifest's `io` names),
so runtimes and `check_bundle.py` find them by name, and keep the `serving_default`
signature for tools that use one.

Quantization (TensorFlow's converter; the step I/O stays float32 in every variant):
- `"dynamic"`: int8 weights, activations quantized on the fly per call (dynamic range).
- `"fp16"`: float16 weights, dequantized to float32 at load; compute stays float32.
- `"int8"`: full integer, int8 weights and int8 activations, scales from a representative
  dataset of realistic (x, state) pairs (`edge_lstm_export.calibration`).
- `"int16x8"`: full integer with int16 activations and int8 weights (TFLite's
  `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`): for recurrent maths whose
  state needs more than 256 levels. Not run by XNNPACK, so it is slower.

Quantized variants compute each layer's input and recurrent products with separate matmuls:
a fused `[x, h] @ [Wx; Wh]` would give the raw-unit input (hundreds, once the scaler is
folded in) and h (within +-1) one activation scale, and the folded, tiny input kernel and
the recurrent kernel one weight scale, which rounds h or Wx to nothing in int8.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge_lstm.activations import parse
from edge_lstm.errors import BackendUnavailableError, ConfigError
from edge_lstm_export.stack import Recurrent, Stack

QUANTIZE_MODES = (None, "dynamic", "fp16", "int8", "int16x8")
IO_NAMES = ("x", "state", "y", "state_out")


def emit_tflite(
    stack: Stack,
    path: str | Path,
    *,
    quantize: str | None = None,
    representative: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Write `stack` as a TFLite step model to `path` and return the path.

    `quantize` is one of None (fp32), "dynamic", "fp16", "int8", "int16x8"; the last two need
    `representative`, an iterable of (x[1,F], state[1,S]) float32 pairs (see
    `edge_lstm_export.calibration.calibration_pairs`).
    """
    path = Path(path)
    path.write_bytes(tflite_bytes(stack, quantize=quantize, representative=representative))
    return path


def tflite_bytes(
    stack: Stack,
    *,
    quantize: str | None = None,
    representative: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
) -> bytes:
    """The `.tflite` flatbuffer of `stack`'s step model (see `emit_tflite`)."""
    if quantize not in QUANTIZE_MODES:
        raise ConfigError(
            f"TFLite quantization {quantize!r} is not known; choose one of "
            f"{', '.join(str(q) for q in QUANTIZE_MODES)}"
        )
    if quantize in ("int8", "int16x8") and representative is None:
        raise ConfigError(
            f"TFLite {quantize} quantization needs calibration data: pass --calibration "
            "with a CSV of the model's input columns (representative (x, state) pairs)"
        )
    tf = _tensorflow()
    module = _step_module(tf, stack, split_input=quantize is not None)
    concrete = module.step.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in ("int8", "int16x8"):
        pairs = [
            (np.asarray(x, np.float32).reshape(1, stack.features),
             np.asarray(s, np.float32).reshape(1, stack.state_size))
            for x, s in representative
        ]
        if not pairs:
            raise ConfigError("the representative dataset for TFLite quantization is empty")
        # The signature's inputs are keyed by name, so feed them by name.
        converter.representative_dataset = lambda: ({"x": x, "state": s} for x, s in pairs)
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [
            ops.TFLITE_BUILTINS_INT8
            if quantize == "int8"
            else ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        # The step I/O stays float32 (the runtime contract); QUANTIZE/DEQUANTIZE ops at the edges.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    with warnings.catch_warnings():
        # The converter calibrates through the deprecated tf.lite.Interpreter; not our call.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        model = bytearray(converter.convert())
    _rename_io(model)
    return bytes(model)


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailableError(
            f"writing a TFLite model needs TensorFlow, which is not installed ({exc}); "
            "install the export extra: pip install 'edge-lstm[export]'"
        ) from exc
    return tf


def _step_module(tf, stack: Stack, *, split_input: bool):
    """A tf.Module whose `step(x, state)` is the packed-state step of `stack`."""
    f32 = lambda a: tf.constant(np.asarray(a, np.float32))  # noqa: E731
    cells = [_cell(tf, f32, layer, split_input) for layer in stack.recurrent]
    head, pre = ([(f32(d.kernel), f32(d.bias), _activation(tf, d.activation)) for d in part]
                 for part in (stack.head, stack.pre))
    out_scale = None if stack.output_scale is None else f32(stack.output_scale)
    out_offset = None if stack.output_offset is None else f32(stack.output_offset)
    widths = [layer.state_width for layer in stack.recurrent]

    class StepModule(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, stack.features], tf.float32, name="x"),
                tf.TensorSpec([None, stack.state_size], tf.float32, name="state"),
            ]
        )
        def step(self, x, state):
            parts = tf.split(state, widths, axis=1) if len(widths) > 1 else [state]
            inp, new = x, []
            for kernel, bias, act in pre:
                inp = act(tf.matmul(inp, kernel) + bias)
            for cell, part in zip(cells, parts):
                inp, part_out = cell(inp, part)
                new.append(part_out)
            for kernel, bias, act in head:
                inp = act(tf.matmul(inp, kernel) + bias)
            if out_scale is not None:
                inp = inp * out_scale + out_offset
            state_out = tf.concat(new, axis=1) if len(new) > 1 else new[0]
            return {"y": inp, "state_out": state_out}

    return StepModule()


def _cell(tf, f32, layer: Recurrent, split_input: bool) -> Callable:
    """One layer's step: `(inp, packed_layer_state) -> (h_new, packed_layer_state_out)`."""
    u = layer.units
    act, ract = _activation(tf, layer.activation), _activation(tf, layer.recurrent_activation)
    if layer.kind == "lstm":
        fused = f32(np.concatenate([layer.kernel, layer.recurrent_kernel], axis=0))
        wx, wh, bias = f32(layer.kernel), f32(layer.recurrent_kernel), f32(layer.bias)

        def lstm(inp, part):
            h, c = part[:, :u], part[:, u:]
            if split_input:
                z = tf.matmul(inp, wx) + tf.matmul(h, wh) + bias
            else:
                z = tf.matmul(tf.concat([inp, h], axis=1), fused) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c_new = ract(f) * c + ract(i) * act(g)
            h_new = ract(o) * act(c_new)
            return h_new, tf.concat([h_new, c_new], axis=1)

        return lstm

    wx, bias = f32(layer.kernel), f32(layer.bias)
    rk, rb = layer.recurrent_kernel, layer.recurrent_bias
    if layer.reset_after:
        wh, bh = f32(rk), f32(rb)

        def gru_after(inp, h):
            xz, hz = tf.matmul(inp, wx) + bias, tf.matmul(h, wh) + bh
            xzg, xrg, xhg = tf.split(xz, 3, axis=1)
            hzg, hrg, hhg = tf.split(hz, 3, axis=1)
            z, r = ract(xzg + hzg), ract(xrg + hrg)
            cand = act(xhg + r * hhg)
            h_new = z * h + (1.0 - z) * cand
            return h_new, h_new

        return gru_after

    wzr, bzr = f32(rk[:, : 2 * u]), f32(rb[: 2 * u])
    whh, bhh = f32(rk[:, 2 * u :]), f32(rb[2 * u :])

    def gru_before(inp, h):
        xz = tf.matmul(inp, wx) + bias
        xzg, xrg, xhg = tf.split(xz, 3, axis=1)
        hzg, hrg = tf.split(tf.matmul(h, wzr) + bzr, 2, axis=1)
        z, r = ract(xzg + hzg), ract(xrg + hrg)
        cand = act(xhg + tf.matmul(r * h, whh) + bhh)
        h_new = z * h + (1.0 - z) * cand
        return h_new, h_new

    return gru_before


def _activation(tf, name: str) -> Callable:
    """The TF form of `edge_lstm.activations.resolve(name)` (Keras 3 definitions, and the named
    variants), built from ops that TFLite has as builtins."""

    def softplus(x):  # log(1 + e^x) without overflow, from builtin ops
        return tf.nn.relu(x) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))

    def hard_sigmoid(x):
        return tf.nn.relu6(x + 3.0) / 6.0

    try:
        base, value = parse(name)
    except KeyError:
        raise ConfigError(f"activation {name!r} has no TFLite form in edge_lstm_export.emit_tflite") from None
    if value is not None:  # a parametrized leaky_relu / elu
        if base == "leaky_relu":
            return lambda x: tf.nn.leaky_relu(x, alpha=value)
        return lambda x: tf.nn.relu(x) + value * (tf.nn.elu(x) - tf.nn.relu(x))

    table: dict[str, Callable] = {
        "linear": lambda x: x,
        "sigmoid": tf.sigmoid,
        "tanh": tf.tanh,
        "relu": tf.nn.relu,
        "relu6": tf.nn.relu6,
        "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.2),
        "elu": tf.nn.elu,
        "selu": tf.nn.selu,
        "softplus": softplus,
        "softsign": lambda x: x / (1.0 + tf.abs(x)),
        "swish": lambda x: x * tf.sigmoid(x),
        "silu": lambda x: x * tf.sigmoid(x),
        "hard_sigmoid": hard_sigmoid,
        "hard_silu": lambda x: x * hard_sigmoid(x),
        "hard_swish": lambda x: x * hard_sigmoid(x),
        "mish": lambda x: x * tf.tanh(softplus(x)),
        "gelu": lambda x: tf.nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: tf.nn.gelu(x, approximate=True),
        # clip(0.2 x + 0.5, 0, 1) = relu6(1.2 x + 3) / 6
        "hard_sigmoid_keras2": lambda x: tf.nn.relu6(1.2 * x + 3.0) / 6.0,
        "exponential": tf.exp,
        "softmax": lambda x: tf.nn.softmax(x, axis=-1),
        "log_softmax": lambda x: tf.nn.log_softmax(x, axis=-1),
    }
    if name not in table:
        raise ConfigError(f"activation {name!r} has no TFLite form in edge_lstm_export.emit_tflite")
    return table[name]


def _rename_io(model: bytearray) -> None:
    """Rename the signature's I/O tensors to their signature names (`x`, `state`, `y`,
    `state_out`), in place.

    Each new name is shorter than the converter's (`serving_default_x:0`, `PartitionedCall:0`),
    so it is written over the old string with its length prefix shortened: nothing moves, and
    the converter's buffer layout and alignment stay exactly as written.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    if root.SignatureDefsLength() != 1:
        raise RuntimeError(f"expected one signature in the converted model, found {root.SignatureDefsLength()}")
    sig = root.SignatureDefs(0)
    graph = root.Subgraphs(sig.SubgraphIndex())
    maps = [sig.Inputs(j) for j in range(sig.InputsLength())]
    maps += [sig.Outputs(j) for j in range(sig.OutputsLength())]
    found = sorted(m.Name().decode() for m in maps)
    if found != sorted(IO_NAMES):
        raise RuntimeError(f"converted step model has signature tensors {found}, expected {sorted(IO_NAMES)}")
    for tensor_map in maps:
        tensor = graph.Tensors(tensor_map.TensorIndex())
        _overwrite_string(model, tensor, 10, tensor_map.Name())  # Tensor.name is vtable slot 10


def _overwrite_string(buf: bytearray, table, slot: int, new: bytes) -> None:
    """Replace the string field at vtable `slot` of flatbuffer `table` with the shorter `new`."""
    field = table._tab.Offset(slot)
    if field == 0:
        raise RuntimeError("tensor has no name field to rename")
    at = table._tab.Indirect(table._tab.Pos + field)
    old_len = int.from_bytes(buf[at : at + 4], "little")
    if len(new) > old_len:
        raise RuntimeError(f"cannot rename a {old_len}-byte tensor name to {new!r} in place")
    buf[at : at + 4] = len(new).to_bytes(4, "little")
    buf[at + 4 : at + 4 + old_len + 1] = new + b"\0" * (old_len + 1 - len(new))
