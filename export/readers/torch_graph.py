"""Read what a PyTorch module's forward() really does: its dataflow, in call order.

A module's children are registered in whatever order its author wrote `__init__`, and it may
hold children forward() never calls (a loss, metrics). So the reader follows the forward's
own graph from the input to the output: torch.fx's symbolic trace for a Python module, the
TorchScript graph for a scripted or traced one. Each step of the graph is interpreted on
abstract values (a sequence with its time axis, one vector per sample, an RNN's outputs, its
final hidden state, zeros, shapes), collecting the layers in the order the data meets them:
per-step Linear layers on the input, nn.LSTM/nn.GRU, and the head on the last time step (or
on every step, when the output is a sequence whose last step is the forecast).

Only what feeds the output is interpreted, so unused branches cost nothing. An operation that
the step model cannot reproduce is refused by name (`Unmappable`); a graph this interpreter
cannot follow at all (a loop, a branch on tensor values) raises `Untraceable`, and the caller
falls back to the registration order, leaving the exporter's parity check to confirm it.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_lstm.activations import named
from edge_lstm_export.stack import Dense, Recurrent, UnsupportedModelError

__all__ = ["Flow", "Unmappable", "Untraceable", "trace"]


class Unmappable(UnsupportedModelError):
    """forward() does something a step model cannot reproduce (message names the operation)."""


class Untraceable(Exception):
    """The graph cannot be followed (control flow on tensor values, loops): fall back."""


#: Operations that change nothing a step model sees (inference-time no-ops and casts).
_IDENTITY = {"contiguous", "detach", "clone", "float", "to", "type_as", "requires_grad_", "cpu", "alias",
             "identity", "Dropout", "Dropout1d", "AlphaDropout", "Identity", "feature_dropout", "float32"}
#: Activation functions/methods/modules by the name torch gives them -> edge_lstm.activations name.
_ACTIVATIONS = {
    "sigmoid": "sigmoid", "Sigmoid": "sigmoid", "tanh": "tanh", "Tanh": "tanh", "relu": "relu", "ReLU": "relu",
    "relu6": "relu6", "ReLU6": "relu6", "hardtanh": None, "selu": "selu", "SELU": "selu", "silu": "silu",
    "SiLU": "silu", "mish": "mish", "Mish": "mish", "softsign": "softsign", "Softsign": "softsign",
    "hardsigmoid": "hard_sigmoid", "Hardsigmoid": "hard_sigmoid", "hardswish": "hard_swish",
    "Hardswish": "hard_swish", "gelu": "gelu", "GELU": "gelu", "leaky_relu": "leaky_relu",
    "LeakyReLU": "leaky_relu", "elu": "elu", "ELU": "elu", "softplus": "softplus", "Softplus": "softplus",
    "softmax": "softmax", "Softmax": "softmax", "log_softmax": "log_softmax", "LogSoftmax": "log_softmax",
}
_SHAPE = {"squeeze", "unsqueeze", "view", "reshape", "flatten", "Flatten", "view_as", "reshape_as"}
_NOT_DATA = {"size", "dim", "getattr", "device", "dtype", "shape", "numel", "Int", "NumToTensor", "len"}


@dataclass(frozen=True)
class Val:
    """An abstract value of the forward pass.

    kind: "input" (the module's input), "seq" (a per-step sequence), "vec" (one vector per
    sample), "rnn" (an nn.LSTM/GRU call's (output, hidden)), "hidden" (LSTM's (h_n, c_n)),
    "h_n" / "c_n" (final states [layers, B, H]), "zeros", "tuple", "extra" (another input),
    "other" (shapes, devices).
    """

    kind: str
    layers: tuple = ()  # Dense and Recurrent in the order the data meets them
    time: int | None = None  # time axis of a "seq"; None: the input's own, not known yet
    swapped: bool = False  # a pre-recurrent "seq" with axes 0 and 1 swapped relative to the input
    depth: int = 0  # layers of the nn.LSTM/GRU behind an "h_n"
    items: tuple = ()  # "tuple" members, or "rnn": (seq, hidden)
    width: int = 0  # values per step/sample of a "seq"/"vec"/"h_n"


@dataclass
class Flow:
    """What the interpretation found: the layers and how to feed and read the module."""

    pre: list[Dense] = field(default_factory=list)
    recurrent: list[Recurrent] = field(default_factory=list)
    head: list[Dense] = field(default_factory=list)
    input_time_axis: int | None = None  # 1: [N, W, F] (batch first), 0: [W, N, F]
    input_tuple: bool = False  # forward takes (x, ...) as one tuple (darts)
    output_time_axis: int | None = None  # set when the output is a sequence: its last step is the forecast
    calls: list[str] = field(default_factory=list)  # submodules in call order, for the manifest


class Interpreter:
    """Abstract interpretation of one forward pass (frontend-neutral)."""

    def __init__(self, convert_recurrent: Callable, convert_linear: Callable, class_name: Callable) -> None:
        self._recurrent = convert_recurrent
        self._linear = convert_linear
        self._class = class_name
        self.flow = Flow()

    # -- entry points the frontends call ---------------------------------------------------
    def module(self, path: str, module: Any, args: list) -> Val:
        kind = self._class(module)
        where = f"{path!r} ({kind})"
        from edge_lstm_export.readers.torch import REFUSED  # the reasons live with the reader

        if kind in REFUSED:
            raise Unmappable(f"{where} {REFUSED[kind]}")
        self.flow.calls.append(path)
        if kind in ("LSTM", "GRU"):
            return self._rnn(path, module, kind, args)
        x = args[0] if args else None
        if kind == "Linear":
            return self._dense(where, self._linear(path, module), x)
        if kind in _IDENTITY:
            return x
        if kind in _ACTIVATIONS:
            return self.activation(where, _module_activation(where, kind, module), x)
        if kind == "Flatten":
            return self.op("flatten", [x, int(getattr(module, "start_dim", 1))], {}, where)
        raise Unmappable(
            f"{where} is called by forward() but is not supported in a streamable stack (supported: "
            "nn.LSTM, nn.GRU, nn.Linear before and after them, activation modules, Dropout, Identity)"
        )

    def op(self, name: str, args: list, kwargs: dict, where: str) -> Val | Any:
        """A function or tensor method `name` applied to `args`."""
        if name in ("getitem", "__getitem__"):
            return self._getitem(args[0], args[1], where)
        if name in _NOT_DATA:
            return Val("other")
        if name in ("zeros", "zeros_like", "new_zeros"):
            return Val("zeros")
        x = args[0] if args else None
        if isinstance(x, Val) and x.kind == "zeros" and name in (_IDENTITY | {"expand", "repeat"}):
            return x
        if name in ("cat", "concat", "concatenate") and isinstance(x, Val) and x.kind == "tuple" and len(x.items) == 1:
            return x.items[0]  # concatenating one tensor (darts' concatenate_past_features without covariates)
        if name in ("dropout", "feature_dropout", "alpha_dropout"):
            train = kwargs.get("training", kwargs.get("train", args[2] if len(args) > 2 else True))
            if train is True:
                raise Unmappable(
                    f"{where}: forward() calls {name}(..., training=True), which drops values at random "
                    "even in eval mode; pass training=self.training"
                )
            return x
        if name in _IDENTITY:
            return x
        if name in _ACTIVATIONS:
            return self.activation(where, _function_activation(where, name, args, kwargs), x)
        if name in _SHAPE:
            return self._reshape(name, x, args[1:], kwargs, where)
        if name in ("transpose", "permute", "swapaxes", "t"):
            return self._transpose(name, x, args[1:], where)
        if name in ("select", "slice"):
            return self._getitem(x, _aten_index(name, args), where)
        raise Unmappable(
            f"{where}: forward() applies {name!r} to the data, which edge-lstm cannot map to a step model "
            "(mapped: nn.LSTM/GRU, Linear, activations, dropout, squeeze/view/reshape, taking the last "
            "time step or the last layer's h_n)"
        )

    def activation(self, where: str, act: str, x: Val) -> Val:
        self._data(x, where)
        if x.kind not in ("seq", "vec", "input"):
            raise Unmappable(f"{where}: an activation on the {x.kind} of an RNN is not supported")
        layers = list(x.layers)
        last = layers[-1] if layers else None
        if isinstance(last, Dense) and last.activation == "linear":
            layers[-1] = Dense(last.kernel, last.bias, act, name=f"{last.name}+{act}")
        else:
            width = x.width
            layers.append(Dense(np.eye(width), np.zeros(width), act, name=where))
        return replace(x, layers=tuple(layers))

    def finish(self, out: Any) -> Flow:
        """The flow, from the value forward() returns."""
        while isinstance(out, Val) and out.kind == "tuple" and out.items:
            out = out.items[0]  # (prediction, hidden...): the prediction
        if isinstance(out, Val) and out.kind == "rnn":
            out = out.items[0]
        if not isinstance(out, Val) or out.kind not in ("seq", "vec"):
            kind = out.kind if isinstance(out, Val) else type(out).__name__
            raise Unmappable(f"forward() returns {kind!r}, not a forecast computed from its input")
        if not any(isinstance(l, Recurrent) for l in out.layers):
            raise Unmappable("forward()'s output does not go through an nn.LSTM or nn.GRU: nothing to stream")
        first = next(i for i, l in enumerate(out.layers) if isinstance(l, Recurrent))
        last = max(i for i, l in enumerate(out.layers) if isinstance(l, Recurrent))
        between = [l for l in out.layers[first:last] if isinstance(l, Dense)]
        if between:
            raise Unmappable(
                f"{between[0].name!r} (Linear or activation) sits between recurrent layers; edge-lstm steps "
                "Linear layers before the first nn.LSTM/GRU and after the last one, not between two"
            )
        self.flow.pre = list(out.layers[:first])
        self.flow.recurrent = list(out.layers[first : last + 1])
        self.flow.head = list(out.layers[last + 1 :])
        if out.kind == "seq":
            self.flow.output_time_axis = out.time
        return self.flow

    # -- the operations ---------------------------------------------------------------------
    def _data(self, x: Any, where: str) -> None:
        if not isinstance(x, Val):
            raise Unmappable(f"{where}: applied to a constant ({x!r}), not to the data")
        if x.kind == "extra":
            raise Unmappable(
                f"{where}: forward() uses a second input (covariates or a state handed in); edge-lstm "
                "feeds the model one sequence of samples"
            )

    def _rnn(self, path: str, module: Any, kind: str, args: list) -> Val:
        where = f"{path!r} ({kind})"
        x = args[0]
        self._data(x, where)
        if x.kind not in ("seq", "input"):
            raise Unmappable(f"{where} is fed a {x.kind}, not a sequence of samples")
        for hx in args[1:]:
            if not _is_zero_state(hx):
                raise Unmappable(
                    f"{where} is started from a state other than zeros; a window model starts every "
                    "window from zero state (pass no hx, or torch.zeros)"
                )
        if any(isinstance(l, Recurrent) for l in x.layers) and isinstance(x.layers[-1], Dense):
            raise Unmappable(
                f"{x.layers[-1].name!r} (Linear or activation) sits between recurrent layers (before "
                f"{where}); edge-lstm steps Linear layers before the first nn.LSTM/GRU and after the last"
            )
        layers, batch_first = self._recurrent(path, module, kind.lower())
        axis = 1 if batch_first else 0
        if x.time is None:
            found = 1 - axis if x.swapped else axis
            if self.flow.input_time_axis not in (None, found):
                raise Unmappable(f"{where}: the input reaches it with another layout than the first RNN's")
            self.flow.input_time_axis = found
        elif x.time != axis:
            raise Unmappable(
                f"{where} (batch_first={batch_first}) is fed a sequence whose time axis is {x.time}: "
                "it would read batch rows as time steps"
            )
        units = layers[-1].units
        seq = Val("seq", layers=(*x.layers, *layers), time=axis, width=units)
        h_n = Val("h_n", layers=seq.layers, depth=len(layers), width=units)
        hidden = Val("hidden", items=(h_n, Val("c_n")), layers=seq.layers) if kind == "LSTM" else h_n
        return Val("rnn", items=(seq, hidden), layers=seq.layers)

    def _dense(self, where: str, dense: Dense, x: Any) -> Val:
        self._data(x, where)
        if x.kind == "input":
            x = Val("seq", width=dense.kernel.shape[0])
        if x.kind not in ("seq", "vec"):
            raise Unmappable(f"{where} is applied to the {x.kind} of an RNN, not to its output sequence or last step")
        if x.width and x.width != dense.kernel.shape[0]:
            raise Unmappable(f"{where} takes in_features={dense.kernel.shape[0]} but is fed {x.width} values")
        return replace(x, layers=(*x.layers, dense), width=dense.units)

    def _getitem(self, x: Any, index: Any, where: str) -> Any:
        if not isinstance(x, Val):
            return Val("other")  # indexing a shape or a constant
        if x.kind == "input" and isinstance(index, int):  # forward((x, covariates)) unpacked
            self.flow.input_tuple = True
            return x if index == 0 else Val("extra")
        if x.kind in ("tuple", "rnn", "hidden") and isinstance(index, int):
            return x.items[index]
        if x.kind in ("other", "zeros", "extra"):
            return x
        entries = _entries(index)
        if all(_full(e) for e in entries):
            return x  # x[:, :] (TorchScript writes out[:, -1, :] as three index steps)
        if x.kind == "h_n":
            first, rest = entries[0], entries[1:]
            if isinstance(first, int) and first in (-1, x.depth - 1) and all(_full(e) for e in rest):
                return Val("vec", layers=x.layers, width=x.width)
            raise Unmappable(
                f"{where}: forward() reads h_n[{_show(index)}]; the step model gives the last layer's h "
                "(h_n[-1]) only"
            )
        if x.kind == "c_n":
            raise Unmappable(f"{where}: forward() reads the LSTM's cell state c_n; the head must read h")
        if x.kind == "seq" and x.time is not None:
            keep = all(_full(e) for j, e in enumerate(entries) if j != x.time)
            at = entries[x.time] if len(entries) > x.time else slice(None)
            if keep and (at == -1 or (isinstance(at, slice) and at.start == -1 and at.stop is None
                                       and at.step in (None, 1))):
                return Val("vec", layers=x.layers, width=x.width)
            if keep and _full(at):
                return x
            if keep and isinstance(at, slice) and isinstance(at.start, int) and at.start < -1 and at.stop is None:
                raise Unmappable(
                    f"{where}: forward() keeps the last {-at.start} time steps of the sequence "
                    f"([{_show(index)}]) for a {-at.start}-step forecast: each value would come from a "
                    "different time step, while a step model forecasts from the latest sample; only the "
                    "last step (out[:, -1]) streams (darts: output_chunk_length=1)"
                )
        raise Unmappable(
            f"{where}: forward() indexes the {x.kind} with [{_show(index)}]; edge-lstm maps taking the last "
            "time step (out[:, -1] batch-first, out[-1] sequence-first) and the last layer's h_n[-1]"
        )

    def _reshape(self, name: str, x: Any, args: list, kwargs: dict, where: str) -> Val:
        self._data(x, where)
        if x.kind == "h_n":
            if x.depth == 1:
                return Val("vec", layers=x.layers, width=x.width)
            raise Unmappable(f"{where}: forward() reshapes h_n of {x.depth} layers, mixing all layers' h")
        if x.kind in ("vec", "input"):
            return x
        if x.kind != "seq":
            raise Unmappable(f"{where}: {name} of the {x.kind} of an RNN is not supported")
        sizes = _sizes(args, kwargs)
        if name in ("view", "reshape") and sizes is not None and len(sizes) <= 2:
            raise Unmappable(
                f"{where}: forward() {name}s the whole sequence into {len(sizes)} axes, flattening the "
                "window: the layer after it needs every time step at once"
            )
        if name in ("flatten", "Flatten"):
            start = args[0] if args else kwargs.get("start_dim", 0)
            if isinstance(start, int) and start < 2 and start != -1:
                raise Unmappable(f"{where}: forward() flattens the window (start_dim={start}): every time step at once")
        if name == "unsqueeze":
            dim = args[0] if args else kwargs.get("dim")
            if x.time is not None and isinstance(dim, int) and 0 <= dim <= x.time:
                return replace(x, time=x.time + 1)
        return x

    def _transpose(self, name: str, x: Any, args: list, where: str) -> Val:
        self._data(x, where)
        dims = list(args[0]) if name == "permute" and len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
        if x.kind == "input":
            x = Val("seq", width=0)
        if x.kind == "seq":
            if name == "permute":
                swap = dims[:2] == [1, 0] and all(d == i for i, d in enumerate(dims) if i > 1)
            else:
                swap = sorted(int(d) % 3 for d in dims) == [0, 1]
            if swap:
                return replace(x, swapped=not x.swapped) if x.time is None else replace(x, time=1 - x.time)
        raise Unmappable(f"{where}: forward() calls {name}({', '.join(map(str, dims))}) on the {x.kind}")


def _is_zero_state(hx: Any) -> bool:
    if hx is None:
        return True
    if isinstance(hx, Val):
        if hx.kind == "zeros":
            return True
        if hx.kind == "tuple":
            return all(_is_zero_state(v) for v in hx.items)
        return False
    if isinstance(hx, (tuple, list)):
        return all(_is_zero_state(v) for v in hx)
    return False


def _entries(index: Any) -> list:
    entries = list(index) if isinstance(index, tuple) else [index]
    if any(e is Ellipsis for e in entries):
        at = entries.index(Ellipsis)
        entries = entries[:at] + [slice(None)] * (3 - len(entries) + 1) + entries[at + 1 :]
    return entries


def _full(entry: Any) -> bool:
    return isinstance(entry, slice) and entry.start in (None, 0) and entry.step in (None, 1) and (
        entry.stop is None or entry.stop >= 2**62)


def _show(index: Any) -> str:
    def one(e: Any) -> str:
        if isinstance(e, slice):
            return ":".join("" if v is None else str(v) for v in (e.start, e.stop)) + (f":{e.step}" if e.step else "")
        return "..." if e is Ellipsis else str(e)

    return ", ".join(one(e) for e in (index if isinstance(index, tuple) else (index,)))


def _sizes(args: list, kwargs: dict) -> list | None:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    if args:
        return list(args)
    shape = kwargs.get("shape") or kwargs.get("size")
    return list(shape) if isinstance(shape, (list, tuple)) else None


def _aten_index(name: str, args: list) -> tuple:
    """aten::select(x, dim, i) / aten::slice(x, dim, start, end, step) as a Python index."""
    dim = int(args[1])
    if name == "select":
        entry: Any = int(args[2])
    else:
        start, stop = args[2], args[3]
        step = args[4] if len(args) > 4 else 1
        entry = slice(start, None if stop is not None and stop >= 2**62 else stop, step)
    return tuple([slice(None)] * dim + [entry])


def _module_activation(where: str, kind: str, module: Any) -> str:
    base = _ACTIVATIONS[kind]
    if base == "leaky_relu":
        return named("leaky_relu", float(getattr(module, "negative_slope", 0.01)))
    if base == "elu":
        return named("elu", float(getattr(module, "alpha", 1.0)))
    if base == "gelu":
        return "gelu_tanh" if getattr(module, "approximate", "none") == "tanh" else "gelu"
    if base == "softplus" and (float(getattr(module, "beta", 1.0)) != 1.0):
        raise Unmappable(f"{where}: Softplus(beta={module.beta}) is not supported (beta=1 is)")
    if base in ("softmax", "log_softmax") and getattr(module, "dim", -1) not in (-1, None):
        raise Unmappable(f"{where}: {kind}(dim={module.dim}) is not supported (over the last axis is)")
    return base


def _function_activation(where: str, name: str, args: list, kwargs: dict) -> str:
    base = _ACTIVATIONS[name]
    if base is None:
        raise Unmappable(f"{where}: forward() applies {name!r}, which edge-lstm has no step form for")

    def arg(i: int, key: str, default: Any) -> Any:
        return kwargs.get(key, args[i] if len(args) > i else default)

    if base == "leaky_relu":
        return named("leaky_relu", float(arg(1, "negative_slope", 0.01)))
    if base == "elu":
        return named("elu", float(arg(1, "alpha", 1.0)))
    if base == "gelu":
        return "gelu_tanh" if arg(1, "approximate", "none") == "tanh" else "gelu"
    if base == "softplus" and float(arg(1, "beta", 1.0)) != 1.0:
        raise Unmappable(f"{where}: softplus(beta != 1) is not supported")
    if base in ("softmax", "log_softmax") and arg(1, "dim", -1) not in (-1, None):
        raise Unmappable(f"{where}: {name}(dim={arg(1, 'dim', -1)}) is not supported (over the last axis is)")
    return base


# ------------------------------------------------------------------------------ frontends


def trace(module: Any, interpreter: Interpreter) -> Flow:
    """Interpret `module`'s forward: TorchScript graph for a script module, else torch.fx."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return _TorchScript(module, interpreter).run()
    return _Fx(module, interpreter).run()


class _Fx:
    """torch.fx symbolic trace of a Python module; known torch.nn layers stay leaves."""

    def __init__(self, module: Any, interpreter: Interpreter) -> None:
        self.module, self.it = module, interpreter

    def run(self) -> Flow:
        import inspect

        import torch.fx as fx

        leaves = _leaf_classes()

        class Tracer(fx.Tracer):
            def is_leaf_module(self, m: Any, qualname: str) -> bool:
                return type(m).__name__ in leaves or super().is_leaf_module(m, qualname)

        params = list(inspect.signature(self.module.forward).parameters.values())[1:]
        concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        was = self.module.training
        self.module.eval()
        try:
            graph = Tracer().trace(self.module, concrete_args=concrete or None)
        except Exception as exc:  # noqa: BLE001 - tracing fails with many exception types
            raise Untraceable(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
        finally:
            self.module.train(was)
        values: dict[Any, Any] = {}
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for k, node in enumerate(placeholders):
            values[node] = Val("input") if k == 0 else Val("extra")
        self._values = values
        out = next(n for n in graph.nodes if n.op == "output")
        return self.it.finish(self._arg(out.args[0]))

    def _arg(self, a: Any) -> Any:
        import torch.fx as fx

        if isinstance(a, fx.Node):
            return self._eval(a)
        if isinstance(a, (tuple, list)):
            items = tuple(self._arg(v) for v in a)
            if any(isinstance(v, Val) for v in items):
                return Val("tuple", items=items)
            return type(a)(items)
        if isinstance(a, slice):
            return slice(self._arg(a.start), self._arg(a.stop), self._arg(a.step))
        return a

    def _eval(self, node: Any) -> Any:
        if node in self._values:
            return self._values[node]
        args = [self._index_arg(node, a) for a in node.args]
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        where = f"{node.name}"
        if node.op == "call_module":
            sub = self.module.get_submodule(node.target)
            val = self.it.module(str(node.target), sub, args)
        elif node.op == "call_method":
            val = self.it.op(str(node.target), args, kwargs, f"{node.target}() ({where})")
        elif node.op == "call_function":
            name = _fx_name(node.target)
            val = self.it.op(name, args, kwargs, f"{_qualified(node.target)} ({where})")
        elif node.op == "get_attr":
            raise Unmappable(
                f"forward() uses the tensor self.{node.target} directly; the reader can only read weights "
                "held by nn.LSTM/nn.GRU/nn.Linear submodules"
            )
        else:
            raise Untraceable(f"unexpected fx node {node.op}")
        self._values[node] = val
        return val

    def _index_arg(self, node: Any, a: Any) -> Any:
        value = self._arg(a)
        if isinstance(value, Val) and value.kind == "tuple" and node.target is operator.getitem and a is node.args[1]:
            return tuple(value.items)
        return value


def _fx_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    if target is builtins.getattr:
        return "getattr"
    return str(getattr(target, "__name__", target))


def _qualified(target: Any) -> str:
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('torch._C._nn', 'torch.nn.functional')}.{name}" if module else name


def _leaf_classes() -> set[str]:
    from edge_lstm_export.readers.torch import LEAVES

    return set(LEAVES) | set(_ACTIVATIONS) | {"Flatten", "LayerNorm", "BatchNorm1d"}


class _TorchScript:
    """The graph of a scripted or traced module's forward (submodule calls kept as calls)."""

    def __init__(self, module: Any, interpreter: Interpreter) -> None:
        self.root, self.it = module, interpreter

    def run(self) -> Flow:
        graph = self.root.forward.graph
        inputs = list(graph.inputs())
        env: dict[Any, Any] = {inputs[0]: ("module", "", self.root)}
        schema = self.root.forward.schema.arguments
        for k, v in enumerate(inputs[1:]):
            env[v] = Val("input") if k == 0 else Val("extra")
            if k > 0 and k + 1 < len(schema) and schema[k + 1].default_value is None and schema[k + 1].has_default_value():
                env[v] = None  # forward(x, h=None) is called with x alone
            if k == 0 and str(v.type()).startswith("Tuple"):
                env[v] = Val("tuple", items=(Val("input"), Val("extra")))
                self.it.flow.input_tuple = True
        outs = self._block(graph, env)
        return self.it.finish(outs[0])

    def _block(self, block: Any, env: dict) -> list:
        for node in block.nodes():
            self._node(node, env)
        return [self._get(env, v) for v in block.outputs()]

    def _get(self, env: dict, value: Any) -> Any:
        if value not in env:
            raise Untraceable(f"value {value.debugName()} is not known")
        return env[value]

    def _node(self, node: Any, env: dict) -> None:
        kind = node.kind()
        outs = list(node.outputs())
        ins = [self._get(env, v) for v in node.inputs()]
        where = f"{kind} at {_line(node)}"
        if kind == "prim::Constant":
            env[outs[0]] = node.output().toIValue()
            return
        if kind == "prim::GetAttr":
            owner = ins[0]
            name = node.s("name")
            if isinstance(owner, tuple) and owner[0] == "module":
                target = getattr(owner[2], name)
                path = f"{owner[1]}.{name}" if owner[1] else name
                import torch

                if isinstance(target, torch.nn.Module):
                    env[outs[0]] = ("module", path, target)
                elif isinstance(target, torch.Tensor):
                    env[outs[0]] = ("tensor", path)
                else:
                    env[outs[0]] = target
                return
            raise Untraceable(f"attribute {name} of a non-module")
        if kind == "prim::CallMethod":
            owner = ins[0]
            if not (isinstance(owner, tuple) and owner[0] == "module"):
                raise Untraceable("method call on a non-module")
            _, path, sub = owner
            args = [self._plain(a, where) for a in ins[1:]]
            from edge_lstm_export.readers.torch import _class_name

            if _class_name(sub) in _leaf_classes() and node.s("name").startswith("forward"):
                result = self.it.module(path, sub, args)
                if str(outs[0].type()) == "Tensor" and isinstance(result, Val) and result.kind == "rnn":
                    result = result.items[0]  # a traced RNN call returns its output sequence only
                env[outs[0]] = result
                return
            method = getattr(sub, node.s("name"))
            sub_graph = method.graph
            sub_env: dict[Any, Any] = {}
            sub_inputs = list(sub_graph.inputs())
            sub_env[sub_inputs[0]] = owner
            for v, a in zip(sub_inputs[1:], args):
                sub_env[v] = a
            result = self._block(sub_graph, sub_env)
            env[outs[0]] = result[0]
            return
        if kind in ("prim::TupleConstruct", "prim::ListConstruct"):
            items = tuple(ins)
            env[outs[0]] = Val("tuple", items=items) if any(isinstance(v, Val) for v in items) else list(items)
            return
        if kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            src = ins[0]
            items = src.items if isinstance(src, Val) and src.kind in ("tuple", "rnn", "hidden") else src
            if isinstance(items, Val):
                raise Untraceable(f"cannot unpack {items.kind}")
            for o, v in zip(outs, items):
                env[o] = v
            return
        if kind in ("prim::TupleIndex", "aten::__getitem__"):
            env[outs[0]] = self.it.op("getitem", [ins[0], ins[1]], {}, where)
            return
        if kind == "prim::If":
            cond = ins[0]
            if not isinstance(cond, bool):
                raise Untraceable(f"a branch on a value computed at run time ({where})")
            blocks = list(node.blocks())
            result = self._block(blocks[0] if cond else blocks[1], env)
            for o, v in zip(outs, result):
                env[o] = v
            return
        if kind in ("prim::Loop",):
            raise Untraceable(f"a loop in forward() ({where})")
        if kind in ("aten::__is__", "aten::__isnot__"):
            same = (ins[0] is None) == (ins[1] is None) if ins[1] is None or ins[0] is None else None
            if same is None:
                raise Untraceable(f"{kind} on values")
            env[outs[0]] = same if kind == "aten::__is__" else not same
            return
        if kind == "prim::unchecked_cast":
            env[outs[0]] = ins[0]
            return
        name = kind.split("::", 1)[1]
        args = [self._plain(a, where) for a in ins]
        if name in ("eq", "ne", "lt", "gt", "le", "ge") and all(isinstance(a, (int, float, bool)) for a in args):
            env[outs[0]] = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "gt": operator.gt,
                            "le": operator.le, "ge": operator.ge}[name](*args)
            return
        if name == "dim" and isinstance(ins[0], Val) and ins[0].kind in ("input", "seq"):
            env[outs[0]] = 3
            return
        result = self.it.op(name, args, {}, f"{kind} at {_line(node)}")
        if len(outs) == 1:
            env[outs[0]] = result
        else:
            for o in outs:
                env[o] = Val("other")

    def _plain(self, a: Any, where: str) -> Any:
        if isinstance(a, tuple) and a and a[0] == "tensor":
            raise Unmappable(
                f"{where}: forward() uses the tensor {a[1]} directly; the reader can only read weights held "
                "by nn.LSTM/nn.GRU/nn.Linear submodules"
            )
        if isinstance(a, tuple) and a and a[0] == "module":
            raise Untraceable(f"a module passed as a value ({where})")
        return a


def _line(node: Any) -> str:
    try:
        text = str(node.sourceRange()).strip().splitlines()
    except Exception:  # noqa: BLE001 - source ranges are best effort
        return "?"
    return text[0] if text else "?"
