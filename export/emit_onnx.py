"""ONNX step models: `y[B,O], state_out[B,S] = step(x[B,F], state[B,S])`.

The graph is built from the weights with the `onnx` package (no TensorFlow, no torch.onnx:
its dynamo exporter breaks on recurrent layers). Two ways to write a recurrent cell:

- `cell="matmul"` (the default): the gates as one MatMul per input plus element-wise
  ops. Every LSTM and GRU quantizes (MatMul -> MatMulInteger), and at batch sizes of 12 and
  up (exact mode steps W rows per sample) it is as fast or faster than the ONNX ops.
- `cell="op"`: ONNX's own LSTM/GRU operators with a sequence of one. Fewer nodes; kept for
  comparison (`bench/bench_cells.py`) and for tools that pattern-match those ops.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_lstm.activations import parse
from edge_lstm_export.stack import Recurrent, Stack

OPSET = 17
IO = {"x": "x", "state": "state", "y": "y", "state_out": "state_out"}
CELLS = ("matmul", "op")


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, array: np.ndarray, dtype=np.float32) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if outputs == 1 else outs

    def split(self, x: str, sizes: list[int], hint: str) -> list[str]:
        if len(sizes) == 1:
            return [x]
        return self.op("Split", [x, self.const("split", np.array(sizes), np.int64)], hint, outputs=len(sizes), axis=1)

    def activation(self, name: str, x: str) -> str:
        """Emit the activation `name` applied to `x` (definitions of edge_lstm.activations)."""
        name, value = parse(name)
        if value is not None:  # a parametrized leaky_relu / elu
            return self.op({"leaky_relu": "LeakyRelu", "elu": "Elu"}[name], [x], alpha=value)
        simple = {
            "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softplus": "Softplus",
            "softsign": "Softsign", "exponential": "Exp", "elu": "Elu", "selu": "Selu",
        }
        if name == "linear":
            return x
        if name in simple:
            return self.op(simple[name], [x])
        if name == "relu6":
            return self.op("Clip", [x, self.const("lo", np.array(0.0)), self.const("hi", np.array(6.0))])
        if name == "leaky_relu":
            return self.op("LeakyRelu", [x], alpha=0.2)
        if name == "hard_sigmoid":
            return self.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        if name == "hard_sigmoid_keras2":
            return self.op("HardSigmoid", [x], alpha=0.2, beta=0.5)
        if name in ("hard_silu", "hard_swish"):
            return self.op("HardSwish", [x])
        if name in ("swish", "silu"):
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if name == "mish":
            return self.op("Mul", [x, self.op("Tanh", [self.op("Softplus", [x])])])
        if name == "gelu":
            erf = self.op("Erf", [self.op("Mul", [x, self.const("rsqrt2", np.array(1 / math.sqrt(2)))])])
            half = self.op("Mul", [x, self.const("half", np.array(0.5))])
            return self.op("Mul", [half, self.op("Add", [erf, self.const("one", np.array(1.0))])])
        if name == "gelu_tanh":
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.const("c", np.array(0.044715))])])
            t = self.op("Tanh", [self.op("Mul", [inner, self.const("k", np.array(math.sqrt(2 / math.pi)))])])
            half = self.op("Mul", [x, self.const("half", np.array(0.5))])
            return self.op("Mul", [half, self.op("Add", [t, self.const("one", np.array(1.0))])])
        if name == "softmax":
            return self.op("Softmax", [x], axis=-1)
        if name == "log_softmax":
            return self.op("LogSoftmax", [x], axis=-1)
        raise ValueError(f"no ONNX form for activation {name!r}")

    def affine(self, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str) -> str:
        mm = self.op("MatMul", [x, self.const(f"{hint}_kernel", kernel)])
        return self.op("Add", [mm, self.const(f"{hint}_bias", bias)], hint)


def _dense_layers(g: _Graph, layers: tuple, inp: str, hint: str) -> str:
    """`activation(inp @ kernel + bias)` for each Dense in turn (on the last axis)."""
    for j, dense in enumerate(layers):
        inp = g.activation(dense.activation, g.affine(inp, dense.kernel, dense.bias, f"{hint}{j}"))
    return inp


def _lstm_matmul(g: _Graph, layer: Recurrent, inp: str, h: str, c: str, k: int) -> tuple[str, str]:
    u = layer.units
    # Reorder gates (i, f, g, o) -> (i, f, o, g): one recurrent activation over the first 3u.
    order = np.r_[0:u, u : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]
    # x and h get a MatMul each: quantization gives each MatMul input one scale, and a sensor
    # value in raw units beside h in [-1, 1] would round h to nothing (+600 % int8 RMSE).
    zx = g.op("MatMul", [inp, g.const(f"lstm{k}_wx", layer.kernel[:, order])])
    z = g.op("Add", [zx, g.affine(h, layer.recurrent_kernel[:, order], layer.bias[order], f"lstm{k}")])
    ifo, cand = g.split(z, [3 * u, u], f"lstm{k}_gates")
    i, f, o = g.split(g.activation(layer.recurrent_activation, ifo), [u, u, u], f"lstm{k}_ifo")
    c_new = g.op("Add", [g.op("Mul", [f, c]), g.op("Mul", [i, g.activation(layer.activation, cand)])], f"lstm{k}_c")
    h_new = g.op("Mul", [o, g.activation(layer.activation, c_new)], f"lstm{k}_h")
    return h_new, c_new


def _gru_matmul(g: _Graph, layer: Recurrent, inp: str, h: str, k: int) -> str:
    u = layer.units
    xz, xn = g.split(g.affine(inp, layer.kernel, layer.bias, f"gru{k}_x"), [2 * u, u], f"gru{k}_x")
    rk, rb = layer.recurrent_kernel, layer.recurrent_bias
    if layer.reset_after:
        hz, hn = g.split(g.affine(h, rk, rb, f"gru{k}_h"), [2 * u, u], f"gru{k}_h")
    else:
        hz = g.affine(h, rk[:, : 2 * u], rb[: 2 * u], f"gru{k}_h")
    zg, rg = g.split(g.activation(layer.recurrent_activation, g.op("Add", [xz, hz])), [u, u], f"gru{k}_zr")
    if layer.reset_after:
        inner = g.op("Mul", [rg, hn])
    else:
        inner = g.affine(g.op("Mul", [rg, h]), rk[:, 2 * u :], rb[2 * u :], f"gru{k}_rh")
    cand = g.activation(layer.activation, g.op("Add", [xn, inner]))
    # h' = z*h + (1-z)*cand = cand + z*(h - cand)
    return g.op("Add", [cand, g.op("Mul", [zg, g.op("Sub", [h, cand])])], f"gru{k}_h")


_ONNX_ACT = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def _op_supported(layer: Recurrent) -> bool:
    return layer.activation in _ONNX_ACT and layer.recurrent_activation in _ONNX_ACT


def _lstm_op(g: _Graph, layer: Recurrent, inp: str, h: str, c: str, k: int) -> tuple[str, str]:
    u = layer.units
    order = np.r_[0:u, 3 * u : 4 * u, u : 2 * u, 2 * u : 3 * u]  # (i,f,g,o) -> ONNX (i,o,f,c)
    w = g.const(f"lstm{k}_W", layer.kernel[:, order].T[None])
    r = g.const(f"lstm{k}_R", layer.recurrent_kernel[:, order].T[None])
    b = g.const(f"lstm{k}_B", np.concatenate([layer.bias[order], np.zeros(4 * u)])[None])
    axes = g.const("axes0", np.array([0]), np.int64)
    x3, h3, c3 = (g.op("Unsqueeze", [t, axes]) for t in (inp, h, c))
    acts = [_ONNX_ACT[layer.recurrent_activation], _ONNX_ACT[layer.activation], _ONNX_ACT[layer.activation]]
    _, yh, yc = g.op("LSTM", [x3, w, r, b, "", h3, c3], f"lstm{k}", outputs=3, hidden_size=u, activations=acts)
    return g.op("Squeeze", [yh, axes], f"lstm{k}_h"), g.op("Squeeze", [yc, axes], f"lstm{k}_c")


def _gru_op(g: _Graph, layer: Recurrent, inp: str, h: str, k: int) -> str:
    u = layer.units  # canonical (z, r, h) is ONNX's order too
    w = g.const(f"gru{k}_W", layer.kernel.T[None])
    r = g.const(f"gru{k}_R", layer.recurrent_kernel.T[None])
    b = g.const(f"gru{k}_B", np.concatenate([layer.bias, layer.recurrent_bias])[None])
    axes = g.const("axes0", np.array([0]), np.int64)
    x3, h3 = (g.op("Unsqueeze", [t, axes]) for t in (inp, h))
    acts = [_ONNX_ACT[layer.recurrent_activation], _ONNX_ACT[layer.activation]]
    _, yh = g.op(
        "GRU", [x3, w, r, b, "", h3], f"gru{k}", outputs=2, hidden_size=u,
        linear_before_reset=int(layer.reset_after), activations=acts,
    )
    return g.op("Squeeze", [yh, axes], f"gru{k}_h")


def build_step_graph(stack: Stack, cell: str = "matmul", name: str = "edge-lstm-step") -> onnx.ModelProto:
    """The step model of `stack` as an ONNX ModelProto (checked with onnx.checker)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    g = _Graph()
    widths = [w for layer in stack.recurrent for w in ([layer.units] * (2 if layer.kind == "lstm" else 1))]
    pieces = iter(g.split(IO["state"], widths, "state"))
    inp, new_state = _dense_layers(g, stack.pre, IO["x"], "pre"), []
    for k, layer in enumerate(stack.recurrent):
        use_op = cell == "op" and _op_supported(layer)
        if layer.kind == "lstm":
            h, c = next(pieces), next(pieces)
            h, c = (_lstm_op if use_op else _lstm_matmul)(g, layer, inp, h, c, k)
            new_state += [h, c]
        else:
            h = (_gru_op if use_op else _gru_matmul)(g, layer, inp, next(pieces), k)
            new_state.append(h)
        inp = h
    inp = _dense_layers(g, stack.head, inp, "dense")
    if stack.output_scale is not None:
        inp = g.op("Mul", [inp, g.const("out_scale", stack.output_scale)])
        inp = g.op("Add", [inp, g.const("out_offset", stack.output_offset)])
    g.nodes.append(helper.make_node("Identity", [inp], [IO["y"]], name="y_out"))
    if len(new_state) == 1:
        g.nodes.append(helper.make_node("Identity", new_state, [IO["state_out"]], name="state_concat"))
    else:
        g.nodes.append(helper.make_node("Concat", new_state, [IO["state_out"]], name="state_concat", axis=1))
    f, s, o = stack.features, stack.state_size, stack.outputs
    graph = helper.make_graph(
        g.nodes,
        name,
        [
            helper.make_tensor_value_info(IO["x"], TensorProto.FLOAT, ["batch", f]),
            helper.make_tensor_value_info(IO["state"], TensorProto.FLOAT, ["batch", s]),
        ],
        [
            helper.make_tensor_value_info(IO["y"], TensorProto.FLOAT, ["batch", o]),
            helper.make_tensor_value_info(IO["state_out"], TensorProto.FLOAT, ["batch", s]),
        ],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-lstm"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10 on the device
    onnx.checker.check_model(model, full_check=True)
    return model


def emit_onnx(stack: Stack, path: str | Path, *, cell: str = "matmul") -> Path:
    """Write the fp32 step model of `stack` to `path`."""
    path = Path(path)
    onnx.save_model(build_step_graph(stack, cell), str(path))
    return path


def build_window_graph(stack: Stack, window: int) -> onnx.ModelProto:
    """The naive baseline: the whole window re-run per sample, `y[B,O] = model(x[B,W,F])`.

    Built with ONNX's own LSTM/GRU operators over the full sequence, as a converter such as
    tf2onnx would give a user: the strongest form of the baseline `edge-lstm bench` times.
    """
    g = _Graph()
    axes0 = g.const("axes0", np.array([0]), np.int64)
    axes1 = g.const("axes1", np.array([1]), np.int64)
    seq = _dense_layers(g, stack.pre, g.op("Transpose", [IO["x"]], "seq", perm=[1, 0, 2]), "pre")  # [W, B, F]
    h = None
    for k, layer in enumerate(stack.recurrent):
        if not _op_supported(layer):
            raise ValueError(f"layer {layer.name!r}: no ONNX operator form for its activations")
        u = layer.units
        if layer.kind == "lstm":
            order = np.r_[0:u, 3 * u : 4 * u, u : 2 * u, 2 * u : 3 * u]
            w, r = layer.kernel[:, order].T[None], layer.recurrent_kernel[:, order].T[None]
            b = np.concatenate([layer.bias[order], np.zeros(4 * u)])[None]
            acts = [_ONNX_ACT[layer.recurrent_activation]] + [_ONNX_ACT[layer.activation]] * 2
            y, h, _ = g.op("LSTM", [seq, g.const("W", w), g.const("R", r), g.const("B", b)],
                           f"lstm{k}", outputs=3, hidden_size=u, activations=acts)
        else:
            w, r = layer.kernel.T[None], layer.recurrent_kernel.T[None]
            b = np.concatenate([layer.bias, layer.recurrent_bias])[None]
            acts = [_ONNX_ACT[layer.recurrent_activation], _ONNX_ACT[layer.activation]]
            y, h = g.op("GRU", [seq, g.const("W", w), g.const("R", r), g.const("B", b)], f"gru{k}",
                        outputs=2, hidden_size=u, linear_before_reset=int(layer.reset_after), activations=acts)
        seq = g.op("Squeeze", [y, axes1])  # [W, 1, B, u] -> [W, B, u]
    inp = _dense_layers(g, stack.head, g.op("Squeeze", [h, axes0]), "dense")
    if stack.output_scale is not None:
        inp = g.op("Add", [g.op("Mul", [inp, g.const("out_scale", stack.output_scale)]),
                           g.const("out_offset", stack.output_offset)])
    g.nodes.append(helper.make_node("Identity", [inp], [IO["y"]], name="y_out"))
    graph = helper.make_graph(
        g.nodes,
        "edge-lstm-window",
        [helper.make_tensor_value_info(IO["x"], TensorProto.FLOAT, ["batch", window, stack.features])],
        [helper.make_tensor_value_info(IO["y"], TensorProto.FLOAT, ["batch", stack.outputs])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-lstm")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
