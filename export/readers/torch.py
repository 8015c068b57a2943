"""PyTorch reader: an nn.LSTM / nn.GRU stack with a Linear head becomes a `Stack`.

A PyTorch module does not describe its own forward pass in data, so the reader walks the
module's registered children in order and expects the usual forecaster shape: one or more
recurrent layers, then Linear layers (each optionally followed by an activation module) fed
with the last time step of the last recurrent layer. Dropout and Identity are inference
no-ops. Anything else is refused with the submodule's name and the reason, because a wrong
guess would export a model that silently forecasts something else; the exporter's parity
report against the module's own output is the final check.

Three sources are accepted:
- a live `torch.nn.Module` (TorchScript modules included);
- a TorchScript file (`torch.jit.save(torch.jit.script(model) or torch.jit.trace(...))`);
- a state_dict file (`torch.save(model.state_dict())`) plus `factory="file.py:build"` or
  `"package.module:build"`, a callable returning the module to load the weights into.
A whole pickled module (`torch.save(model)`) is refused: unpickling it runs arbitrary code.

torch is imported inside the functions, so importing this module does not need torch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm_export.stack import Dense, Recurrent, Stack, UnsupportedModelError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

ACCEPTED_FORMS = (
    "a live torch.nn.Module; a TorchScript file (torch.jit.save of torch.jit.script or "
    "torch.jit.trace); or a state_dict file (torch.save(model.state_dict())) together with "
    "factory='file.py:build' or 'package.module:build'"
)

#: Activation modules allowed right after a head Linear, by class name -> Keras name.
#: Only parameterless ones whose maths equals `edge_lstm.activations` exactly.
HEAD_ACTIVATIONS = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "SiLU": "silu",
    "Softsign": "softsign",
    "SELU": "selu",
    "Mish": "mish",
    "Hardsigmoid": "hard_sigmoid",
    "Hardswish": "hard_swish",
}
#: Modules that do nothing at inference time.
NO_OPS = {"Dropout", "Dropout1d", "AlphaDropout", "Identity"}
RECURRENT = {"LSTM": "lstm", "GRU": "gru"}
#: Modules refused outright, with the reason a step-by-step stream cannot run them.
REFUSED = {
    "RNN": "is a plain (Elman) RNN; edge-lstm steps LSTM and GRU layers only",
    "LSTMCell": "is a cell driven by a loop in forward(), which the reader cannot see; "
    "use nn.LSTM",
    "GRUCell": "is a cell driven by a loop in forward(), which the reader cannot see; use nn.GRU",
    "RNNCell": "is a plain RNN cell; edge-lstm steps nn.LSTM and nn.GRU layers only",
    "Conv1d": "is a convolution over the time axis: each output needs a window of past samples "
    "at once, so it cannot be stepped one sample at a time",
    "Conv2d": "is a convolution: it needs a window of samples at once, not one step",
    "ConvTranspose1d": "is a transposed convolution over time: it cannot be stepped one "
    "sample at a time",
    "MultiheadAttention": "is attention: every output looks at the whole sequence at once, so "
    "it cannot be stepped one sample at a time",
    "Transformer": "is a transformer: attention over the whole sequence cannot be stepped one "
    "sample at a time",
    "TransformerEncoder": "is a transformer encoder: attention over the whole sequence cannot "
    "be stepped one sample at a time",
    "TransformerDecoder": "is a transformer decoder: attention over the whole sequence cannot "
    "be stepped one sample at a time",
    "TransformerEncoderLayer": "is a transformer layer: attention over the whole sequence "
    "cannot be stepped one sample at a time",
    "TransformerDecoderLayer": "is a transformer layer: attention over the whole sequence "
    "cannot be stepped one sample at a time",
}
LEAVES = {*RECURRENT, "Linear", *HEAD_ACTIVATIONS, *NO_OPS, *REFUSED}
#: PyTorch GRU rows are (r, z, n); the canonical order is (z, r, h).
_GRU_ORDER = (1, 0, 2)


class TorchSourceError(UnsupportedModelError):
    """Raised when a PyTorch source cannot be loaded as asked: not a torch file, a bad
    factory, a state dict that does not fit its module, or arguments that contradict it.

    A ValueError (through `UnsupportedModelError`), like the Keras reader's `KerasFileError`,
    so the CLI can report either reader's problems the same way."""


def read_torch(
    source: "str | Path | torch.nn.Module",
    *,
    factory: str | None = None,
    features: int | None = None,
    window: int | None = None,
) -> Stack:
    """Read a PyTorch LSTM/GRU forecaster into a framework-neutral `Stack`.

    `source` is a live module, a TorchScript file, or a state_dict file with `factory`
    (see the module docstring). `features` is only a cross-check of the input width the
    weights record; `window` is recorded as given (PyTorch modules do not store it).
    """
    import torch

    if isinstance(source, torch.nn.Module):
        if factory is not None:
            raise TorchSourceError(
                "factory= applies only to a state_dict file; a live module was given, so drop it"
            )
        module, info = source, {"format": "torchscript" if _is_script(source) else "module"}
    elif isinstance(source, (str, os.PathLike)):
        module, info = _load(Path(source), factory)
    else:
        raise TorchSourceError(
            f"read_torch got a {type(source).__name__}; expected {ACCEPTED_FORMS}"
        )
    stack_layers, head, pre, details = _read_forward(module)
    stack = Stack(
        recurrent=tuple(stack_layers),
        head=tuple(head),
        pre=tuple(pre),
        window=window,
        source={
            "framework": "torch",
            **info,
            "class": _class_name(module),
            "torch_version": torch.__version__.split("+")[0],
            **details,
        },
    )
    if features is not None and features != stack.features:
        first = stack_layers[0]
        raise TorchSourceError(
            f"features={features} was given, but {first.name!r} reads {stack.features} value(s) "
            f"per sample (its weight_ih_l0 is [{first.kernel.shape[1]}, {stack.features}]); "
            "pass the model's own input width"
        )
    return stack


def predict_torch(
    source: "str | Path | torch.nn.Module", windows: np.ndarray, *, factory: str | None = None,
    features: int | None = None, window: int | None = None, stack: Stack | None = None,
) -> np.ndarray:
    """The module's own forward pass on `windows` [N, W, F]: the parity reference for export.

    The input is laid out as forward() feeds it to the first recurrent layer (batch-first or
    not), wrapped as `(x, None)` for a forward taking one tuple (darts); a tuple output gives
    its first item, and a sequence output its last time step. `stack` is what `read_torch`
    made of this module (read again when not given).
    """
    import torch

    module = source if isinstance(source, torch.nn.Module) else _load(Path(source), factory)[0]
    info = (stack or read_torch(module)).source
    batch_first = info.get("batch_first")
    x = torch.from_numpy(np.ascontiguousarray(windows, np.float32))

    def forward(seq_first: bool) -> np.ndarray:
        inp = x.transpose(0, 1) if seq_first else x
        was = module.training
        try:
            adapter = _input_adapter(module) if info.get("input_adapter") else None
            with torch.no_grad():
                module.eval()
                if adapter is not None:
                    out = adapter[1](module, inp)
                else:
                    out = module((inp, None) if info.get("input_tuple") else inp)
        finally:
            module.train(was)
        while isinstance(out, (tuple, list)):
            out = out[0]
        out = out.detach().cpu().numpy()
        if info.get("sequence_output"):
            return np.take(out, -1, axis=int(info.get("output_time_axis", 0 if seq_first else 1)))
        if out.ndim == 3:
            out = out[-1] if seq_first else out[:, -1]
        return out

    out = forward(seq_first=batch_first is False)
    if batch_first is None and len(x) != x.shape[1] and out.shape[0] != len(x):
        out = forward(seq_first=True)  # a traced module hides batch_first: its output tells
    return out


# ---------------------------------------------------------------------------------- loading


def _load(path: Path, factory: str | None) -> tuple["torch.nn.Module", dict]:
    """Load a TorchScript file, or a state_dict file into the factory's module."""
    import torch

    if not path.exists():
        raise TorchSourceError(f"{path}: no such file (expected {ACCEPTED_FORMS})")
    if not path.is_file():
        raise TorchSourceError(f"{path}: is not a file (expected {ACCEPTED_FORMS})")
    kind = _archive_kind(path)
    info: dict[str, Any] = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if kind == "torchscript":
        if factory is not None:
            raise TorchSourceError(
                f"{path}: is a TorchScript archive, which carries its own module; "
                "drop factory= (it is only for state_dict files)"
            )
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure here means a broken archive
            raise TorchSourceError(
                f"{path}: TorchScript archive could not be loaded: {exc}"
            ) from exc
        return module, {**info, "format": "torchscript"}
    if kind is None:
        raise TorchSourceError(f"{path}: is not a PyTorch file (expected {ACCEPTED_FORMS})")
    state = _load_state_dict(path)
    if factory is None:
        raise TorchSourceError(
            f"{path}: holds a state_dict (weights without the module that uses them); "
            "pass factory='file.py:build' or 'package.module:build', a callable that builds "
            "the module, or save the model as TorchScript instead"
        )
    module = _build(factory)
    missing, unexpected, wrong = _mismatch(module, state)
    if missing or unexpected or wrong:
        problems = [
            f"missing from the file: {', '.join(missing)}" if missing else "",
            f"not in the module: {', '.join(unexpected)}" if unexpected else "",
            f"shape differs: {'; '.join(wrong)}" if wrong else "",
        ]
        raise TorchSourceError(
            f"{path}: state_dict does not fit the module built by {factory!r} "
            f"({'; '.join(p for p in problems if p)}); the factory must build the same "
            "architecture the weights were trained with"
        )
    module.load_state_dict(state, strict=True)
    module.eval()
    return module, {**info, "format": "state_dict", "factory": factory}


def _archive_kind(path: Path) -> str | None:
    """'torchscript', 'torch.save' or None (not a PyTorch file), from the file's contents."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return None
        if any("/code/" in name for name in names):
            return "torchscript"
        if any(name.endswith("data.pkl") for name in names):
            return "torch.save"
        return None
    with path.open("rb") as fh:
        head = fh.read(2)
    # The legacy (pre-1.6, non-zip) torch.save format is a pickle stream: protocol 2+ opens 0x80.
    return "torch.save" if head[:1] == b"\x80" else None


def _load_state_dict(path: Path) -> Mapping[str, "torch.Tensor"]:
    """`torch.load(weights_only=True)`, accepting a bare state dict or a checkpoint holding one."""
    import torch

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails with many exception types
        text = str(exc)
        detail = next(
            (line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line),
            text.splitlines()[0] if text else type(exc).__name__,
        )
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if found is None:
            raise TorchSourceError(
                f"{path}: is not a PyTorch file torch.load can read ({detail}); "
                f"expected {ACCEPTED_FORMS}"
            ) from exc
        raise TorchSourceError(
            f"{path}: holds a pickled Python object ({found.group(1)}), probably a whole module "
            "saved with torch.save(model); edge-lstm does not unpickle it (that runs arbitrary "
            f"code). Accepted: {ACCEPTED_FORMS}"
        ) from exc
    if isinstance(loaded, Mapping) and not _all_tensors(loaded):
        nested = [k for k in ("state_dict", "model_state_dict", "model") if k in loaded]
        if nested and isinstance(loaded[nested[0]], Mapping) and _all_tensors(loaded[nested[0]]):
            loaded = loaded[nested[0]]
    if not isinstance(loaded, Mapping) or not loaded or not _all_tensors(loaded):
        raise TorchSourceError(
            f"{path}: torch.load gives a {type(loaded).__name__}, not a state_dict of tensors. "
            f"Accepted: {ACCEPTED_FORMS}"
        )
    return loaded


def _all_tensors(mapping: Mapping) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _build(factory: str) -> "torch.nn.Module":
    """Call the factory named by 'file.py:attr' or 'package.module:attr'."""
    import torch

    where, sep, attr = factory.rpartition(":")
    if not sep or not where or not attr:
        raise TorchSourceError(
            f"factory {factory!r}: expected 'path/to/file.py:build' or 'package.module:build'"
        )
    if where.endswith(".py") or "/" in where or "\\" in where:
        file = Path(where).expanduser().resolve()
        if not file.is_file():
            raise TorchSourceError(f"factory {factory!r}: file {file} does not exist")
        name = f"_edge_lstm_factory_{abs(hash(str(file)))}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise TorchSourceError(f"factory {factory!r}: {file} cannot be imported as Python")
        holder = importlib.util.module_from_spec(spec)
        sys.modules[name] = holder  # dataclasses and pickling look their module up here
        try:
            spec.loader.exec_module(holder)
        except Exception as exc:  # noqa: BLE001 - report whatever the user's file raised
            sys.modules.pop(name, None)
            raise TorchSourceError(
                f"factory {factory!r}: importing {file} failed: {type(exc).__name__}: {exc}"
            ) from exc
        origin = str(file)
    else:
        try:
            holder = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001
            raise TorchSourceError(
                f"factory {factory!r}: module {where!r} cannot be imported: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        origin = where
    target: Any = holder
    for part in attr.split("."):
        if not hasattr(target, part):
            raise TorchSourceError(f"factory {factory!r}: {origin} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TorchSourceError(f"factory {factory!r}: {origin}:{attr} is not callable")
    try:
        module = target()
    except Exception as exc:  # noqa: BLE001
        raise TorchSourceError(
            f"factory {factory!r}: calling {attr}() failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise TorchSourceError(
            f"factory {factory!r}: {attr}() returned a {type(module).__name__}, "
            "not a torch.nn.Module"
        )
    return module


def _mismatch(module: "torch.nn.Module", state: Mapping) -> tuple[list, list, list]:
    """Keys missing, unexpected and shape-mismatched between a module and a state dict."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {list(state[k].shape)} in the file vs {list(own[k].shape)} in the module"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, wrong


# ---------------------------------------------------------------------------------- walking


def _is_script(module: "torch.nn.Module") -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def _class_name(module: "torch.nn.Module") -> str:
    """The torch.nn class a module is (or derives from); a TorchScript module's original name."""
    if _is_script(module):
        return str(module.original_name)
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn.") and cls.__name__ != "Module":
            return cls.__name__
    return type(module).__name__


def _leaves(module: "torch.nn.Module", prefix: str = "") -> Iterator[tuple[str, "torch.nn.Module"]]:
    """(dotted name, module) of every leaf in registration order, flattening containers."""
    if not prefix and _class_name(module) in LEAVES:
        yield _class_name(module).lower(), module
        return
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        kind = _class_name(child)
        if kind in LEAVES or not any(True for _ in child.children()):
            yield path, child
        else:
            own = [n for n, _ in child.named_parameters(recurse=False)]
            own += [n for n, _ in child.named_buffers(recurse=False)]
            if own:
                raise UnsupportedModelError(
                    f"{path!r} ({kind}) holds its own tensors ({', '.join(own)}) that its "
                    "forward() uses in a way the reader cannot see; keep weights in "
                    "nn.LSTM/nn.GRU/nn.Linear submodules"
                )
            yield from _leaves(child, path)


def _input_adapter(module: "torch.nn.Module") -> tuple[str, Any] | None:
    """How to call a module whose forward() takes a structured batch instead of a tensor.

    darts (0.3x and later) modules take a `PLModuleInput` dataclass (`past_target` plus
    covariates, a state, a stage) and return a `PLModuleOutput`; edge-lstm calls them as darts
    does at prediction time: `module(PLModuleInput(past_target=x)).prediction`.
    """
    import inspect
    import typing

    if _is_script(module):
        return None
    try:
        forward = inspect.unwrap(type(module).forward)
        first = list(inspect.signature(forward).parameters.values())[1]
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    annotation = first.annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if name != "PLModuleInput":
        return None
    cls = annotation if not isinstance(annotation, str) else None
    if cls is None:
        try:
            cls = typing.get_type_hints(forward).get(first.name)
        except Exception:  # noqa: BLE001 - unresolvable hints: look the name up instead
            cls = getattr(forward, "__globals__", {}).get("PLModuleInput")
    if cls is None:
        return None
    return "darts PLModuleInput(past_target=x).prediction", lambda m, x: m(cls(past_target=x)).prediction


def _adapted_class():
    import torch

    class Adapted(torch.nn.Module):
        """`adapter(inner, x)` as a forward, so the tracer sees a tensor in and a tensor out."""

        def __init__(self, inner: torch.nn.Module, adapter: Any) -> None:
            super().__init__()
            self.inner = inner
            self._adapter = adapter

        def forward(self, x):
            return self._adapter(self.inner, x)

    return Adapted


def _Adapted(inner: "torch.nn.Module", adapter: Any) -> "torch.nn.Module":  # noqa: N802 - a class factory
    return _adapted_class()(inner, adapter)


def _read_forward(module: "torch.nn.Module") -> tuple[list[Recurrent], list[Dense], list[Dense], dict]:
    """(recurrent, head, pre, details) from forward()'s own dataflow; when it cannot be traced
    (a loop, a branch on tensor values), from the registration order, with a hint saying so."""
    from edge_lstm_export.readers.torch_graph import Interpreter, Untraceable, trace

    adapter = _input_adapter(module)
    try:
        traced = module if adapter is None else _Adapted(module, adapter[1])
        flow = trace(traced, Interpreter(_recurrent, _linear, _class_name))
    except Untraceable as exc:
        recurrent, head, details = _walk(module)
        details["read_from"] = "registration order"
        details["hints"] = [
            f"forward() could not be traced ({exc}), so the reader took the submodules in registration "
            "order and assumed nothing happens between them; operations in forward()'s code (a "
            "torch.sigmoid, a scaling, a skipped layer) are not in the bundle"
        ]
        return recurrent, head, [], details
    calls = [c.removeprefix("inner.") for c in flow.calls] if adapter else flow.calls
    details: dict[str, Any] = {"read_from": "forward() graph", "calls": calls}
    if adapter:
        details["input_adapter"] = adapter[0]
    if flow.input_time_axis is not None:
        details["batch_first"] = flow.input_time_axis == 1
    if flow.input_tuple:
        details["input_tuple"] = True
    if flow.output_time_axis is not None:
        details["sequence_output"] = True
        details["output_time_axis"] = flow.output_time_axis
    return flow.recurrent, flow.head, flow.pre, details


def _walk(module: "torch.nn.Module") -> tuple[list[Recurrent], list[Dense], dict]:
    """Turn the leaves into canonical recurrent layers and a Dense head."""
    root_own = [n for n, _ in module.named_parameters(recurse=False)]
    if root_own and _class_name(module) not in LEAVES:
        raise UnsupportedModelError(
            f"{_class_name(module)} holds its own tensors ({', '.join(root_own)}) outside any "
            "submodule; the reader cannot tell how forward() uses them"
        )
    recurrent: list[Recurrent] = []
    head: list[Dense] = []
    passthrough: list[str] = []
    details: dict[str, Any] = {}
    last_rnn, prev = "", ""
    width = None
    leaves = list(_leaves(module))
    for path, leaf in leaves:
        kind = _class_name(leaf)
        if kind in REFUSED:
            raise UnsupportedModelError(f"{path!r} ({kind}) {REFUSED[kind]}")
        if kind in NO_OPS:
            continue
        if kind in RECURRENT:
            if head:
                raise UnsupportedModelError(
                    f"{path!r} ({kind}) comes after the Linear head {head[-1].name!r}; "
                    "edge-lstm supports Linear layers only after the last recurrent layer"
                )
            layers, batch_first = _recurrent(path, leaf, RECURRENT[kind])
            if width is not None and layers[0].inputs != width:
                raise UnsupportedModelError(
                    f"{path!r} ({kind}) takes input_size={layers[0].inputs} but {last_rnn!r} "
                    f"gives {width} values per step"
                )
            recurrent.extend(layers)
            details.setdefault("batch_first", batch_first)
            width, last_rnn, prev = layers[-1].units, path, path
            continue
        if kind == "Linear":
            if not recurrent:
                raise UnsupportedModelError(
                    f"{path!r} (Linear) comes before any LSTM/GRU layer; edge-lstm supports "
                    "Linear layers only as a head after the last recurrent layer"
                )
            dense = _linear(path, leaf)
            if dense.kernel.shape[0] != width:
                after = f"the Linear {head[-1].name!r}" if head else f"{last_rnn!r} (hidden size)"
                raise UnsupportedModelError(
                    f"{path!r} (Linear) takes in_features={dense.kernel.shape[0]} but {after} "
                    f"gives {width}; the head must read the last recurrent layer's h"
                )
            head.append(dense)
            width, prev = dense.units, path
            continue
        if kind in HEAD_ACTIVATIONS:
            if not head or prev != head[-1].name or head[-1].activation != "linear":
                raise UnsupportedModelError(
                    f"{path!r} ({kind}) follows {prev or 'the input'!r}, not a Linear; "
                    "edge-lstm supports an activation only directly after a Linear of the head"
                )
            head[-1] = Dense(head[-1].kernel, head[-1].bias, HEAD_ACTIVATIONS[kind], head[-1].name)
            prev = path
            continue
        # An unknown leaf. A parameterless module between the last recurrent layer and the
        # head is the usual "take the last time step" shim of nn.Sequential models; accept
        # it there (the parity check will catch anything else) and refuse it elsewhere.
        tensors = [n for n, _ in leaf.named_parameters()] + [n for n, _ in leaf.named_buffers()]
        if recurrent and not head and not tensors:
            passthrough.append(f"{path} ({kind})")
            prev = path
            continue
        raise UnsupportedModelError(
            f"{path!r} ({kind}) is not supported in a streamable stack (supported: nn.LSTM, "
            "nn.GRU, then nn.Linear layers each optionally followed by one of "
            f"{', '.join(HEAD_ACTIVATIONS)}; Dropout and Identity are skipped)"
        )
    if not recurrent:
        found = ", ".join(f"{p} ({_class_name(m)})" for p, m in leaves) or "no submodules"
        raise UnsupportedModelError(
            f"{_class_name(module)} has no nn.LSTM or nn.GRU ({found}): nothing to stream"
        )
    if not head:
        raise UnsupportedModelError(
            f"{_class_name(module)} has no nn.Linear after {last_rnn!r}: edge-lstm needs a "
            "Linear head reading the last recurrent layer's output"
        )
    if passthrough:
        details["assumed_passthrough"] = passthrough
    return recurrent, head, details


def _recurrent(path: str, rnn: "torch.nn.Module", kind: str) -> tuple[list[Recurrent], Any]:
    """One nn.LSTM/nn.GRU (all its layers) in canonical layout, from its parameters.

    Hyperparameters are read from the weights (a traced TorchScript module keeps the
    parameters but not the attributes): layers from `weight_ih_l{k}`, bias from `bias_ih_l0`,
    bidirectional from `*_reverse`, projection from `weight_hr_l{k}`.
    """
    params = {n: _numpy(t) for n, t in rnn.named_parameters(recurse=False)}
    name = _class_name(rnn)
    if any(n.endswith("_reverse") for n in params) or getattr(rnn, "bidirectional", False):
        raise UnsupportedModelError(
            f"{path!r} ({name}) is bidirectional: its backward direction reads the window from "
            "the last sample to the first, so it needs the future and cannot be stepped one "
            "sample at a time; retrain with bidirectional=False"
        )
    if any(n.startswith("weight_hr_") for n in params) or getattr(rnn, "proj_size", 0):
        raise UnsupportedModelError(
            f"{path!r} ({name}) has proj_size={getattr(rnn, 'proj_size', '>0')} (a projected "
            "hidden state), which edge-lstm's LSTM step does not implement; retrain without "
            "proj_size"
        )
    count = sum(1 for n in params if n.startswith("weight_ih_l"))
    if count == 0 or any(f"weight_ih_l{k}" not in params for k in range(count)):
        raise UnsupportedModelError(
            f"{path!r} ({name}) has no weight_ih_l0..l{count - 1} parameters "
            f"(found: {', '.join(params) or 'none'})"
        )
    gates = 4 if kind == "lstm" else 3
    layers = []
    for k in range(count):
        w_ih, w_hh = params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"]
        units = w_hh.shape[1]
        if w_ih.shape[0] != gates * units or w_hh.shape[0] != gates * units:
            raise UnsupportedModelError(
                f"{path!r} ({name}) layer {k}: weight_ih {list(w_ih.shape)} and weight_hh "
                f"{list(w_hh.shape)} do not hold {gates} gates of {units} units"
            )
        zeros = np.zeros(gates * units)
        b_ih = params.get(f"bias_ih_l{k}", zeros)
        b_hh = params.get(f"bias_hh_l{k}", zeros)
        label = f"{path}.l{k}"
        if kind == "lstm":  # PyTorch's (i, f, g, o) is already the canonical order
            layers.append(
                Recurrent("lstm", units, w_ih.T.copy(), w_hh.T.copy(), b_ih + b_hh, name=label)
            )
        else:
            order = np.concatenate([np.arange(g * units, (g + 1) * units) for g in _GRU_ORDER])
            layers.append(
                Recurrent(
                    "gru",
                    units,
                    w_ih[order].T.copy(),
                    w_hh[order].T.copy(),
                    b_ih[order],
                    recurrent_bias=b_hh[order],
                    reset_after=True,
                    name=label,
                )
            )
    return layers, _batch_first(rnn)


def _batch_first(rnn: "torch.nn.Module") -> bool | None:
    """`rnn.batch_first`; a traced TorchScript RNN keeps it only as an argument of its aten op."""
    found = getattr(rnn, "batch_first", None)
    if found is not None or not _is_script(rnn):
        return found
    for node in rnn.forward.graph.nodes():
        if node.kind() in ("aten::lstm", "aten::gru"):
            flag = list(node.inputs())[8]
            if flag.node().kind() == "prim::Constant":
                return bool(flag.toIValue())
    return None


def _linear(path: str, linear: "torch.nn.Module") -> Dense:
    """A Linear as a canonical Dense: kernel = weight.T, missing bias = zeros."""
    params = {n: _numpy(t) for n, t in linear.named_parameters(recurse=False)}
    weight = params["weight"]
    bias = params.get("bias", np.zeros(weight.shape[0]))
    return Dense(weight.T.copy(), bias, "linear", name=path)


def _numpy(tensor: "torch.Tensor") -> np.ndarray:
    return tensor.detach().to("cpu").double().numpy().copy()
