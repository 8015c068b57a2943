"""Read a saved Keras model (`.keras` archive or legacy `.h5`) into a framework-neutral `Stack`.

Only zipfile, json, h5py and numpy are used: a user must be able to export a model on a
machine without TensorFlow, so this module never imports tensorflow or keras.

Two containers are understood:
- Keras 3 `.keras`: a zip with `config.json` (the architecture) and `model.weights.h5`, where a
  layer's weights sit under `layers/<key>/...`. `<key>` is *not* the configured layer name but
  the snake-case class name with a counter per class within the model (`lstm`, `lstm_1`,
  `dense`), so layers are matched to weight groups by the `name` attribute Keras 3 writes on
  each `vars` group, and failing that by class and order.
- Legacy `.h5` (Keras 2, or Keras 3's `model.save("x.h5")`): the root attribute
  `model_config` and `model_weights/<layer name>` groups whose `weight_names` attribute lists
  the layer's arrays in order.

Supported models are a linear chain, Sequential or Functional: an input, per-step Dense /
TimeDistributed(Dense) layers, LSTM/GRU layers, then a Dense head (on the last step's h, or on
every step after `return_sequences=True`: the step model gives the last step's value), with
activation layers anywhere a Dense may be; inference no-ops (Dropout and friends) are skipped.
Everything that cannot run one sample at a time is refused with `UnsupportedModelError`,
naming the layer and the reason.

Keras 1.x/2.x files (their `keras_version`) read `hard_sigmoid` as that version's
`clip(0.2 x + 0.5, 0, 1)`; Keras 3 files as Keras 3's `relu6(x + 3) / 6`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from edge_lstm.activations import ACTIVATIONS, known, named, supported
from edge_lstm_export.stack import Dense, Recurrent, Stack, UnsupportedModelError

__all__ = ["KerasFileError", "read_keras"]

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

RECURRENT = {"LSTM": "lstm", "GRU": "gru"}
#: Layers that do nothing at inference time (`training=False`).
INFERENCE_NOOPS = {
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}
STEP_BY_STEP = "a step model sees one sample at a time"
#: Layers refused outright, with the reason they cannot be stepped one sample at a time.
REFUSED = {
    "Bidirectional": "it needs the future: the backward pass reads samples that have not "
    "arrived yet. Train a unidirectional LSTM/GRU for streaming",
    "Masking": "it skips masked time steps inside the window, which a streaming state "
    "cannot undo; drop the Masking layer and feed only real samples",
    "Lambda": "it holds Python code that cannot be read from the file",
    "SimpleRNN": "SimpleRNN layers are not supported yet (LSTM and GRU are)",
    "CuDNNLSTM": "CuDNN layers are not supported; re-save the model with keras.layers.LSTM",
    "CuDNNGRU": "CuDNN layers are not supported; re-save the model with keras.layers.GRU",
    "RepeatVector": "it repeats the encoder's last vector as a new sequence for a decoder, which "
    "runs after the window has ended; edge-lstm streams one recurrent stack that forecasts "
    "from each sample",
}
_CONV = re.compile(r"^(Separable|Depthwise)?Conv(\d)D(Transpose)?$|^ConvLSTM\dD$")
_POOL = re.compile(r"^(Global)?(Max|Average)Pool(ing)?\dD$")
_ATTENTION = re.compile(r"Attention$")
_NESTED = {"Sequential", "Functional", "Model"}


class KerasFileError(UnsupportedModelError):
    """The file is not a readable Keras model (wrong format, truncated, missing parts)."""


@dataclass(frozen=True)
class _Layer:
    """One layer of the model's config, in chain order."""

    class_name: str
    name: str
    config: dict
    index: int  # position among all layers of the model, for class-and-order matching

    def label(self) -> str:
        return f"{self.name!r} ({self.class_name})"


def read_keras(path: str | Path) -> Stack:
    """Read a `.keras` or legacy `.h5` Keras model file into a `Stack` in canonical layout.

    Raises `KerasFileError` when the file cannot be read as a Keras model and
    `UnsupportedModelError` when the model holds something that cannot be streamed.
    """
    path = Path(path)
    try:
        head = path.read_bytes()[:8]
    except OSError as exc:
        raise KerasFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if head.startswith(ZIP_MAGIC):
        with _KerasArchive(path) as source:
            return _build(path, source)
    if head.startswith(HDF5_MAGIC):
        with _LegacyH5(path) as source:
            return _build(path, source)
    raise KerasFileError(
        f"{path}: not a Keras model file: it is neither a .keras zip archive nor an HDF5 .h5 "
        f"file (first bytes {head!r}). Save the model with model.save('model.keras')."
    )


# --------------------------------------------------------------------------- containers


class _KerasArchive:
    """A Keras 3 `.keras` zip: `config.json` + `model.weights.h5`."""

    format = "keras-v3"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            names = set(self._zip.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise KerasFileError(
                f"{path}: not a readable .keras archive ({exc}); the file may be truncated "
                "or damaged: save the model again with model.save('model.keras')"
            ) from exc
        self.config = json.loads(self._member("config.json", names, "the model architecture"))
        self.keras_version = ""
        if "metadata.json" in names:
            meta = json.loads(self._member("metadata.json", names, "the metadata"))
            self.keras_version = str(meta.get("keras_version", ""))
        if "model.weights.h5" not in names:
            extra = (
                " It holds model.weights.npz, which stores pickled Python objects that "
                "edge-lstm refuses to unpickle; save with the default weights format."
                if "model.weights.npz" in names
                else ""
            )
            raise KerasFileError(
                f"{path}: the archive has no model.weights.h5 (members: "
                f"{', '.join(sorted(names))}).{extra} Save the whole model with "
                "model.save('model.keras')."
            )
        raw = self._member("model.weights.h5", names, "the weights")
        try:
            self._h5 = h5py.File(io.BytesIO(raw), "r")
        except OSError as exc:
            raise KerasFileError(
                f"{path}: model.weights.h5 inside the archive is not readable HDF5 ({exc})"
            ) from exc
        self._groups = self._index_groups()

    def _member(self, name: str, names: set[str], what: str) -> bytes:
        if name not in names:
            raise KerasFileError(
                f"{self.path}: the archive has no {name} ({what}); members: "
                f"{', '.join(sorted(names)) or 'none'}. Is this a Keras 3 .keras file? "
                "Save the model with model.save('model.keras')."
            )
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise KerasFileError(
                f"{self.path}: cannot read {name} from the archive ({exc}); the file is damaged"
            ) from exc

    def _index_groups(self) -> dict[str, str]:
        """Configured layer name -> group key, from the `name` attribute of each `vars` group."""
        out: dict[str, str] = {}
        layers = self._h5.get("layers")
        if isinstance(layers, h5py.Group):
            for key, group in layers.items():
                vars_ = group.get("vars") if isinstance(group, h5py.Group) else None
                if isinstance(vars_, h5py.Group) and "name" in vars_.attrs:
                    out.setdefault(_text(vars_.attrs["name"]), key)
        return out

    def arrays(self, layer: _Layer, order_key: str) -> list[np.ndarray]:
        """The layer's stored variables in Keras order (kernel, recurrent kernel, bias)."""
        layers = self._h5.get("layers")
        key = self._groups.get(layer.name, order_key)
        group = layers.get(key) if isinstance(layers, h5py.Group) else None
        if not isinstance(group, h5py.Group):
            raise KerasFileError(
                f"{self.path}: no weights for layer {layer.label()} in model.weights.h5 "
                f"(looked for layers/{key}); the archive is incomplete or was not written by "
                "Keras 3's model.save"
            )
        inner = {**{k: "cell/vars" for k in RECURRENT}, "TimeDistributed": "layer/vars"}
        vars_ = group.get(inner.get(layer.class_name, "vars"))
        if not isinstance(vars_, h5py.Group) or len(vars_) == 0:
            raise KerasFileError(
                f"{self.path}: layer {layer.label()} has no stored weights under layers/{key} "
                "in model.weights.h5; was the model built and trained before saving?"
            )
        return [_array(vars_[str(i)]) for i in range(len(vars_))]

    def __enter__(self) -> "_KerasArchive":
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_h5"):
            self._h5.close()
        self._zip.close()


class _LegacyH5:
    """A legacy `.h5` model: root attribute `model_config`, weights under `model_weights/`."""

    format = "keras-h5"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h5 = h5py.File(path, "r")
        except OSError as exc:
            raise KerasFileError(
                f"{path}: not a readable HDF5 file ({exc}); the file may be truncated or damaged"
            ) from exc
        if "model_config" not in self._h5.attrs:
            self._h5.close()
            raise KerasFileError(
                f"{path}: HDF5 file without a model_config attribute: it holds weights only "
                "(model.save_weights) or is not a Keras model. Save the whole model with "
                "model.save('model.keras') or model.save('model.h5')."
            )
        self.config = json.loads(_text(self._h5.attrs["model_config"]))
        self.keras_version = _text(self._h5.attrs.get("keras_version", ""))
        weights = self._h5.get("model_weights")
        if not isinstance(weights, h5py.Group):
            self._h5.close()
            raise KerasFileError(
                f"{path}: the file has a model_config but no model_weights group: the weights "
                "are missing. Save the whole model with model.save('model.keras')."
            )
        self._weights = weights

    def arrays(self, layer: _Layer, order_key: str) -> list[np.ndarray]:
        """The layer's arrays in the order of its `weight_names` attribute."""
        group = self._weights.get(layer.name)
        if not isinstance(group, h5py.Group) or "weight_names" not in group.attrs:
            raise KerasFileError(
                f"{self.path}: no weights for layer {layer.label()} under "
                f"model_weights/{layer.name}; the file is incomplete"
            )
        names = [_text(n) for n in group.attrs["weight_names"]]
        if not names:
            raise KerasFileError(
                f"{self.path}: layer {layer.label()} has no stored weights under "
                f"model_weights/{layer.name}; was the model built before saving?"
            )
        out = []
        for name in names:
            if name not in group:
                raise KerasFileError(
                    f"{self.path}: weight {name!r} of layer {layer.label()} is listed but "
                    "missing from the file"
                )
            out.append(_array(group[name]))
        return out

    def __enter__(self) -> "_LegacyH5":
        return self

    def __exit__(self, *exc: object) -> None:
        self._h5.close()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _array(dataset: h5py.Dataset) -> np.ndarray:
    value = np.asarray(dataset[()])
    if _text(dataset.attrs.get("dtype", "")) == "bfloat16":  # stored as raw uint16 bits
        value = (value.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(value, np.float64)


# --------------------------------------------------------------------------- architecture


def _layers(path: Path, config: dict) -> tuple[list[_Layer], list | None]:
    """The model's layers in chain order, and the build input shape if the config has one."""
    kind = config.get("class_name")
    body = config.get("config", {})
    if isinstance(body, list):  # very old Keras 2 Sequential: config is the layer list
        body = {"layers": body}
    raw = body.get("layers")
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(raw, list):
        raise UnsupportedModelError(
            f"{path.name}: the model is a {kind!r}, not a Sequential or Functional model: its "
            "architecture is Python code, not data. Rebuild it as keras.Sequential([...]) "
            "(or a linear Functional model) with the same layers, copy the weights over, save."
        )
    layers = [
        _Layer(l["class_name"], str(l.get("config", {}).get("name", l.get("name", f"#{i}"))),
               l.get("config", {}), i)
        for i, l in enumerate(raw)
    ]
    build_shape = body.get("build_input_shape")
    if kind == "Sequential":
        return layers, build_shape
    return _linear_chain(path, body, raw, layers), build_shape


def _linear_chain(path: Path, body: dict, raw: list, layers: list[_Layer]) -> list[_Layer]:
    """Order a Functional model's layers from input to output, refusing any branching."""
    by_name = {layer.name: layer for layer in layers}
    inputs, outputs = _endpoints(body.get("input_layers")), _endpoints(body.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"{path.name}: the Functional model has {len(inputs)} inputs and {len(outputs)} "
            "outputs: a branching graph cannot be streamed as one chain; edge-lstm reads "
            "one input -> LSTM/GRU layers -> Dense head"
        )
    sources: dict[str, list[str]] = {}
    for spec, layer in zip(raw, layers):
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise UnsupportedModelError(
                f"{path.name}: layer {layer.label()} is called {len(nodes)} times (a shared "
                "layer): a branching graph cannot be streamed as one chain"
            )
        found = list(_inbound(nodes))
        known = _known_refusal(layer)
        if known:  # name the real reason (attention also takes several inputs)
            _refuser(path)(layer.name, layer.class_name, known)
        if len(found) > 1 or (not found and layer.class_name != "InputLayer"):
            raise UnsupportedModelError(
                f"{path.name}: layer {layer.label()} takes {len(found)} inputs "
                f"({', '.join(found) or 'none'}): a branching functional graph cannot be "
                "streamed as one chain; edge-lstm reads one input -> LSTM/GRU -> Dense head"
            )
        sources[layer.name] = found
    chain, at = [], outputs[0]
    while True:
        if at not in by_name or by_name[at] in chain:
            raise UnsupportedModelError(
                f"{path.name}: the Functional graph cannot be followed at layer {at!r}"
            )
        chain.append(by_name[at])
        if not sources[at]:
            break
        at = sources[at][0]
    chain.reverse()
    if chain[0].name != inputs[0] or len(chain) != len(layers):
        stray = sorted({l.name for l in layers} - {l.name for l in chain})
        raise UnsupportedModelError(
            f"{path.name}: the Functional graph is not one chain from {inputs[0]!r} to "
            f"{outputs[0]!r} (layers off the chain: {', '.join(stray) or 'none'}): a "
            "branching functional graph cannot be streamed"
        )
    return chain


def _endpoints(spec: Any) -> list[str]:
    """`input_layers`/`output_layers`: `["x", 0, 0]` (Keras 3) or `[["x", 0, 0], ...]`."""
    if not spec:
        return []
    if isinstance(spec[0], str):
        return [spec[0]]
    return [entry[0] for entry in spec]


def _inbound(node: Any) -> Iterator[str]:
    """Names of the layers feeding a node: Keras 3 `keras_history` or Keras 2 `[name, i, j, {}]`."""
    if isinstance(node, dict):
        if "keras_history" in node:
            yield str(node["keras_history"][0])
            return
        for value in node.values():
            yield from _inbound(value)
    elif isinstance(node, list):
        if (
            len(node) >= 3
            and isinstance(node[0], str)
            and isinstance(node[1], int)
            and isinstance(node[2], int)
        ):
            yield node[0]
            for extra in node[3:]:
                yield from _inbound(extra)
        else:
            for value in node:
                yield from _inbound(value)


# --------------------------------------------------------------------------- layers -> Stack


class _OrderKeys:
    """Keras 3 weight-group keys by class and order: `lstm`, `lstm_1`, ... per class."""

    def __init__(self, layers: list[_Layer]) -> None:
        seen: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        for layer in sorted(layers, key=lambda l: l.index):
            snake = _snake_case(layer.class_name)
            n = seen.get(snake, -1) + 1
            seen[snake] = n
            self._keys[layer.index] = snake if n == 0 else f"{snake}_{n}"

    def __getitem__(self, layer: _Layer) -> str:
        return self._keys[layer.index]


def _snake_case(name: str) -> str:
    """Keras' `to_snake_case`: `LSTM` -> `lstm`, `InputLayer` -> `input_layer`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    return name if not name.startswith("_") else "private" + name


def _build(path: Path, source: _KerasArchive | _LegacyH5) -> Stack:
    layers, build_shape = _layers(path, source.config)
    keys = _OrderKeys(layers)
    refuse = _refuser(path)
    keras2 = _is_keras2(source)
    pre: list[Dense] = []
    recurrent: list[Recurrent] = []
    head: list[Dense] = []
    shape: list | None = build_shape
    last_recurrent: _Layer | None = None
    vector = False  # True once the last recurrent layer has reduced the window to one vector

    for layer in layers:
        cfg, cls = layer.config, layer.class_name
        if shape is None:
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if cls == "InputLayer" or cls in INFERENCE_NOOPS:
            continue
        _refuse_quantized(path, layer)
        part = pre if last_recurrent is None else head
        if cls in RECURRENT:
            if last_recurrent is not None and not last_recurrent.config.get("return_sequences"):
                refuse(last_recurrent.name, last_recurrent.class_name,
                       f"it returns one vector, yet {layer.label()} after it expects a sequence")
            if head:
                refuse(head[-1].name, "Dense",
                       f"it sits between recurrent layers (before {layer.label()}); edge-lstm steps "
                       "Dense layers before the first LSTM/GRU and after the last one, not between two")
            _check_recurrent(layer, refuse)
            arrays = source.arrays(layer, keys[layer])
            recurrent.append(_recurrent(layer, arrays, path, keras2))
            last_recurrent = layer
            continue
        dense_cfg = _per_step_dense(layer, refuse)
        if dense_cfg is not None:
            if last_recurrent is not None and not last_recurrent.config.get("return_sequences"):
                vector = True
            arrays = source.arrays(layer, keys[layer])
            part.append(_dense(layer, dense_cfg, arrays, path, keras2))
            continue
        act = _activation_of_layer(layer, path, keras2)
        if act is not None:
            width = part[-1].units if part else recurrent[-1].units if recurrent else _features(shape)
            if width is None:
                refuse(layer.name, cls, "it comes first and the model does not record its input width")
            part.append(_activation_layer(part, act, layer, width))
            continue
        if cls == "Flatten" and last_recurrent is not None and not last_recurrent.config.get(
            "return_sequences"
        ):
            continue  # flattening one vector changes nothing
        refuse(layer.name, cls, _refusal_reason(layer, last_recurrent, vector))

    if not recurrent:
        raise UnsupportedModelError(f"{path.name}: the model has no LSTM or GRU layer: nothing to stream")
    if not head:  # the last recurrent layer's h is the output itself
        units = recurrent[-1].units
        head.append(Dense(np.eye(units), np.zeros(units), name=f"{last_recurrent.name} (output)"))
    features = pre[0].kernel.shape[0] if pre else recurrent[0].inputs
    window = _input_shape(path, shape, features)
    return Stack(
        recurrent=tuple(recurrent),
        head=tuple(head),
        pre=tuple(pre),
        window=window,
        source={
            "framework": "keras",
            "format": source.format,
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "keras_version": source.keras_version,
            "features": int(features),
            # The model outputs one forecast per time step; the step model gives the last one.
            "sequence_output": bool(last_recurrent.config.get("return_sequences")),
        },
    )


def _is_keras2(source: _KerasArchive | _LegacyH5) -> bool:
    """Saved by Keras 1.x/2.x (tf.keras included)? A legacy .h5 without a version is taken as
    Keras 2: Keras 3 always records its version."""
    version = source.keras_version
    return version.startswith(("1.", "2.")) or (not version and source.format == "keras-h5")


def _per_step_dense(layer: _Layer, refuse: Callable) -> dict | None:
    """The Dense config of a Dense or TimeDistributed(Dense) layer, else None.

    A Dense on a sequence applies to each time step on its own, exactly as TimeDistributed
    does, so both step one sample at a time.
    """
    if layer.class_name == "Dense":
        return layer.config
    if layer.class_name != "TimeDistributed":
        return None
    inner = layer.config.get("layer") or {}
    if inner.get("class_name") == "Dense":
        return inner.get("config", {})
    wrapped = _Layer(str(inner.get("class_name", "")), layer.name, inner.get("config", {}), -1)
    why = _known_refusal(wrapped)
    refuse(layer.name, "TimeDistributed",
           f"it wraps a {wrapped.class_name or 'layer'}, and edge-lstm steps TimeDistributed(Dense) only"
           + (f"; the {wrapped.class_name} itself cannot be streamed: {why}" if why else ""))


def _features(shape: Any) -> int | None:
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _refuser(path: Path) -> Callable[[str, str, str], NoReturn]:
    def refuse(name: str, cls: str, why: str) -> NoReturn:
        raise UnsupportedModelError(
            f"{path.name}: layer {name!r} ({cls}) cannot be streamed one sample at a time: {why}"
        )

    return refuse


def _need_vector(last: _Layer | None, refuse: Callable) -> None:
    if last is not None and last.config.get("return_sequences"):
        refuse(
            last.name, last.class_name,
            "it is the last recurrent layer and has return_sequences=True, so the model outputs "
            "one value per time step of the window instead of one forecast; re-train or "
            "re-save it with return_sequences=False",
        )


def _known_refusal(layer: _Layer) -> str | None:
    """Why a layer of a known non-streamable kind is refused, or None for other layers."""
    cls = layer.class_name
    if cls in REFUSED:
        return REFUSED[cls]
    if _CONV.match(cls):
        size = layer.config.get("kernel_size")
        return (
            f"it convolves over {size} neighbouring samples of the window at once, while "
            f"{STEP_BY_STEP}"
        )
    if _POOL.match(cls):
        return f"it pools over several time steps of the window at once, while {STEP_BY_STEP}"
    if _ATTENTION.search(cls):
        return f"it attends over the whole window at once, while {STEP_BY_STEP}"
    return None


def _refusal_reason(layer: _Layer, last_recurrent: _Layer | None, vector: bool) -> str:
    cls = layer.class_name
    known = _known_refusal(layer)
    if known:
        return known
    if cls == "Flatten":
        return (
            "it flattens the whole window into one vector, so the layer after it needs all "
            f"time steps at once, while {STEP_BY_STEP}"
        )
    if cls in _NESTED:
        return "it is a nested model; rebuild the model as one flat Sequential and save it again"
    if last_recurrent is None:
        where = "before the recurrent layers"
    elif vector or not last_recurrent.config.get("return_sequences"):
        where = "in the head, after the last recurrent layer"
    else:
        where = "between recurrent layers"
    return (
        f"edge-lstm does not know how to step this layer ({where}); supported: InputLayer, "
        "LSTM, GRU, Dense and TimeDistributed(Dense) before the first and after the last "
        f"recurrent layer, {', '.join(sorted(ACTIVATION_LAYERS))}, {', '.join(sorted(INFERENCE_NOOPS))}"
    )


def _refuse_quantized(path: Path, layer: _Layer) -> None:
    policy = layer.config.get("dtype")
    name = policy.get("class_name", "") if isinstance(policy, dict) else str(policy or "")
    inner = policy.get("config", {}).get("name", "") if isinstance(policy, dict) else ""
    if "Quantized" in name or str(inner).startswith(("int8", "int4", "float8")):
        raise UnsupportedModelError(
            f"{path.name}: layer {layer.label()} is quantized inside Keras ({inner or name}); "
            "export the float model: edge-lstm quantizes the step model itself"
        )
    if layer.config.get("lora_rank"):
        raise UnsupportedModelError(
            f"{path.name}: layer {layer.label()} has LoRA enabled (lora_rank="
            f"{layer.config['lora_rank']}); merge the LoRA weights into the kernel and save again"
        )


def _check_recurrent(layer: _Layer, refuse: Callable) -> None:
    """Refuse recurrent settings that need the future, pin the batch or hand state out."""
    cfg, cls = layer.config, layer.class_name
    if cfg.get("go_backwards"):
        refuse(layer.name, cls,
               "it reads the window backwards (go_backwards=True): its first step needs the "
               "last sample, which has not arrived yet")
    if cfg.get("stateful"):
        refuse(layer.name, cls,
               "it is stateful=True, which pins the batch size and carries state between "
               "predict calls inside Keras; re-save the model with stateful=False (same "
               "weights): the edge-lstm runtime keeps the state itself (continuous mode)")
    if cfg.get("return_state"):
        refuse(layer.name, cls,
               "it returns its state as extra outputs (return_state=True); re-save with "
               "return_state=False: the step model hands the state over itself")
    if cfg.get("time_major"):
        refuse(layer.name, cls, "time_major=True layouts are not supported; re-save with "
               "time_major=False")


def _recurrent(layer: _Layer, arrays: list[np.ndarray], path: Path, keras2: bool) -> Recurrent:
    """Keras LSTM (i,f,c,o) / GRU (z,r,h) weights are already in canonical order and layout."""
    cfg = layer.config
    kind = RECURRENT[layer.class_name]
    units = int(cfg["units"])
    width = (4 if kind == "lstm" else 3) * units
    use_bias = cfg.get("use_bias", True)
    expected = 3 if use_bias else 2
    if len(arrays) != expected:
        raise KerasFileError(
            f"{path}: layer {layer.label()} stores {len(arrays)} arrays, expected {expected} "
            "(kernel, recurrent kernel" + (", bias)" if use_bias else ")")
        )
    kernel, recurrent_kernel = arrays[0], arrays[1]
    bias = arrays[2] if use_bias else np.zeros(width)
    recurrent_bias = None
    reset_after = bool(cfg.get("reset_after", kind == "gru"))
    if kind == "gru":
        if bias.ndim == 2:  # reset_after=True: row 0 input bias, row 1 recurrent bias
            bias, recurrent_bias = bias[0], bias[1]
        else:
            recurrent_bias = np.zeros(width)
    return Recurrent(
        kind=kind,
        units=units,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        recurrent_bias=recurrent_bias,
        activation=_activation(cfg.get("activation", "tanh"), layer, path, keras2),
        recurrent_activation=_activation(
            cfg.get("recurrent_activation", "sigmoid"), layer, path, keras2
        ),
        reset_after=reset_after,
        name=layer.name,
    )


def _dense(layer: _Layer, cfg: dict, arrays: list[np.ndarray], path: Path, keras2: bool) -> Dense:
    """A Dense (or the Dense inside a TimeDistributed): `cfg` is the Dense's own config."""
    kernel = arrays[0]
    if kernel.ndim != 2:
        raise UnsupportedModelError(
            f"{path.name}: layer {layer.label()} has a {kernel.ndim}-D kernel; only plain "
            "2-D Dense layers are supported"
        )
    bias = arrays[1] if cfg.get("use_bias", True) and len(arrays) > 1 else np.zeros(kernel.shape[1])
    act = _activation(cfg.get("activation", "linear"), layer, path, keras2)
    return Dense(kernel=kernel, bias=bias, activation=act, name=layer.name)


def _activation_layer(part: list[Dense], act: str, layer: _Layer, width: int) -> Dense:
    """An activation layer: folded into a linear Dense just before it, else an identity Dense."""
    if part and part[-1].activation == "linear":
        last = part.pop()
        return Dense(last.kernel, last.bias, act, name=f"{last.name}+{layer.name}")
    return Dense(np.eye(width), np.zeros(width), act, name=layer.name)


#: Layers that only apply an activation, element by element.
ACTIVATION_LAYERS = {"Activation", "LeakyReLU", "ReLU", "ELU", "Softmax"}


def _activation_of_layer(layer: _Layer, path: Path, keras2: bool) -> str | None:
    """The activation an activation layer applies (None for other layers)."""
    if layer.class_name not in ACTIVATION_LAYERS:
        return None
    if layer.class_name == "Activation":
        return _activation(layer.config.get("activation"), layer, path, keras2)
    if layer.class_name == "Softmax" and layer.config.get("axis", -1) != -1:
        raise UnsupportedModelError(
            f"{path.name}: layer {layer.label()} takes the softmax over axis "
            f"{layer.config.get('axis')}; edge-lstm supports it over the last axis only"
        )
    return _activation({"class_name": layer.class_name, "config": layer.config}, layer, path, keras2)


def _activation(value: Any, layer: _Layer, path: Path, keras2: bool) -> str:
    """An activation from the config (a string or a serialized dict) as an edge_lstm.activations name.

    Keras 1.x/2.x's `hard_sigmoid` is `clip(0.2 x + 0.5, 0, 1)`, not Keras 3's
    `relu6(x + 3) / 6`: it is read as `hard_sigmoid_keras2`, the formula the file was trained with.
    """
    name = _activation_name(value)
    if name is None or not known(name):
        raise UnsupportedModelError(
            f"{path.name}: layer {layer.label()}: activation {_describe(value) if name is None else repr(name)} "
            f"is not supported (supported: {supported()})"
        )
    if name == "hard_sigmoid" and keras2:
        return "hard_sigmoid_keras2"
    return name


def _describe(value: Any) -> str:
    """A short form of a serialized activation, such as `LeakyReLU(negative_slope=0.3)`."""
    if not isinstance(value, dict):
        return repr(value)
    cfg = value.get("config")
    if not isinstance(cfg, dict):
        return f"{value.get('class_name')}({cfg!r})"
    params = ", ".join(
        f"{k}={v!r}" for k, v in cfg.items() if k not in ("name", "trainable", "dtype")
    )
    return f"{value.get('class_name')}({params})"


def _activation_name(value: Any) -> str | None:
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        return None
    cls, cfg = value.get("class_name"), value.get("config")
    if cls == "function" or cls in ACTIVATIONS:
        if isinstance(cfg, str):
            return cfg
        return value.get("registered_name") or (cls if cls in ACTIVATIONS else None)
    if cls == "Activation" and isinstance(cfg, dict):
        return _activation_name(cfg.get("activation"))
    cfg = cfg if isinstance(cfg, dict) else {}
    if cls == "ReLU" and not cfg.get("threshold"):
        top, slope = cfg.get("max_value"), float(cfg.get("negative_slope") or 0.0)
        if top is None:
            return named("leaky_relu", slope) if slope else "relu"
        return "relu6" if float(top) == 6.0 and not slope else None
    if cls == "LeakyReLU":  # Keras 3 negative_slope, Keras 2 alpha; both default to 0.3
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return named("leaky_relu", float(0.3 if slope is None else slope))
    if cls == "ELU":
        return named("elu", float(cfg.get("alpha", 1.0)))
    if cls == "Softmax":
        return "softmax"
    return None


def _input_shape(path: Path, shape: Any, features: int) -> int | None:
    """The window from the input shape `[batch, window, features]`, checked against the weights."""
    if shape is None:
        return None
    if len(shape) != 3:
        raise UnsupportedModelError(
            f"{path.name}: the model input has shape {shape}; a recurrent forecaster takes "
            "[batch, window, features]"
        )
    window, declared = shape[1], shape[2]
    if declared is not None and int(declared) != features:
        raise KerasFileError(
            f"{path}: the input declares {declared} features but the first layer's kernel "
            f"reads {features}; the file is inconsistent"
        )
    return None if window is None else int(window)
