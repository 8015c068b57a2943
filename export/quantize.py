"""Quantized variants of a step model: ONNX (onnxruntime.quantization) and TFLite (the converter).

Every variant keeps the float32 step I/O `y, state_out = step(x, state)`, so the runtime
treats them alike; only the inside changes.

| request   | ONNX                                                         | TFLite                              |
|-----------|--------------------------------------------------------------|-------------------------------------|
| `dynamic` | `quantize_dynamic`: int8 weights (per channel), MatMul ->    | dynamic range: int8 weights,        |
|           | MatMulInteger, activations quantized per row at run time     | activations per row at run time     |
| `static`  | `quantize_static`, QDQ, int8 weights and activations,        | full integer (int8), representative |
|           | calibrated on (x, state) pairs                               | (x, state) pairs                    |
| `fp16`    | float16 initializers, each behind a Cast to float32          | float16 weights                     |
| `int16x8` | (not made)                                                   | int16 activations, int8 weights     |

fp16 here means fp16 *storage*: weights are rounded to float16 and computed in float32
(onnxruntime folds the Casts at load; TFLite dequantizes at load on CPUs). That halves the
file and costs nothing in speed, and needs no extra package (onnxconverter-common's
`convert_float_to_float16` would make float16 compute, which onnxruntime's CPU provider
mostly runs by casting back anyway).

Static int8 clamps every activation to its calibrated range: calibrate on data that spans the
values the device will see (see `edge_lstm_export.calibration`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_lstm.errors import ConfigError
from edge_lstm_export.emit_onnx import emit_onnx
from edge_lstm_export.emit_tflite import emit_tflite
from edge_lstm_export.stack import Stack

#: CLI `--quantize` names -> the manifest's precision names.
PRECISION = {"dynamic": "int8-dynamic", "static": "int8-static", "fp16": "fp16", "int16x8": "int16x8"}
#: Which formats can make which request.
SUPPORTED = {"onnx": ("dynamic", "static", "fp16"), "tflite": ("dynamic", "static", "fp16", "int16x8")}
_TFLITE_MODE = {"dynamic": "dynamic", "static": "int8", "fp16": "fp16", "int16x8": "int16x8"}
#: Op types that prove an ONNX graph was really quantized, per precision.
QUANTIZED_OPS = {
    "int8-dynamic": {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"},
    "int8-static": {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul"},
}

#: Weight matrices smaller than this stay float32 in the dynamic variant (TFLite's threshold).
MIN_WEIGHTS = 1024

Pairs = Sequence[tuple[np.ndarray, np.ndarray]]


# -- ONNX ------------------------------------------------------------------------------------


def onnx_dynamic_int8(
    src: str | Path, dst: str | Path, *, per_channel: bool = True, min_weights: int = MIN_WEIGHTS
) -> Path:
    """Dynamic int8: MatMul weights stored int8 (per output channel), activations quantized
    per call **per row**, so a stream's answer does not depend on its batch-mates.

    `onnxruntime.quantization.quantize_dynamic` does the weights; its `DynamicQuantizeLinear`
    takes one scale for the whole [B, K] activation, which makes batch row i differ from
    stream i stepped alone (by ~0.15 passengers on the seed model), against the bundle
    contract. Each one is rewritten into per-row symmetric 8-bit quantization (`Abs`,
    `ReduceMax` over the row, `Div`, `Round`, `Add`, `Cast`) feeding `MatMulInteger` (see
    `_per_row_activations`).

    MatMuls with fewer than `min_weights` weights stay float32, as TFLite's converter does:
    there is nothing to gain in size, and the first layer's input kernel reads raw sensor
    units. Checked afterwards: the graph must hold MatMulInteger nodes.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    small = [n.name for n in matmuls if sizes.get(n.input[1], min_weights) < min_weights]
    if len(small) == len(matmuls):
        raise ConfigError(
            f"{src}: no weight matrix has {min_weights} values or more, so int8 would not make "
            "this model smaller; leave `dynamic` out of --quantize for it"
        )
    dst = Path(dst)
    quantize_dynamic(
        model, str(dst), weight_type=QuantType.QInt8, per_channel=per_channel, nodes_to_exclude=small
    )
    model = onnx.load(str(dst))
    _per_row_activations(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(dst))
    require_quantized(dst, "int8-dynamic")
    return dst


def _per_row_activations(model: onnx.ModelProto) -> None:
    """Rewrite each `quantize_dynamic` group

        DynamicQuantizeLinear(A) -> MatMulInteger(Aq, Wq, a_zp, w_zp) -> Cast -> Mul(., a_scale * w_scale)

    into per-row symmetric 8-bit activations, stored as uint8 around zero point 128 (the
    uint8 x int8 form onnxruntime's MatMulInteger kernels are fast for; int8 x int8 ran ~3x
    slower here):

        a_scale[B,1] = max(|A| over the row) / 127;  Aq = uint8(round(A / a_scale) + 128)
        Y = float(MatMulInteger(Aq, Wq, 128, w_zp)) * w_scale * a_scale

    The two scales are applied by separate Muls on purpose: onnxruntime's
    MatMulIntegerToFloat fusion (which matches `Mul(a_scale, w_scale)`) assumes a per-tensor
    `a_scale` and computes wrong numbers with a per-row one.
    """
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    producer = {out: n for n in graph.node for out in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def only_user(name: str, op_type: str) -> onnx.NodeProto:
        found = users.get(name, [])
        if len(found) != 1 or found[0].op_type != op_type:
            raise RuntimeError(f"unexpected dynamic-quantization graph at {name}: {[n.op_type for n in found]}")
        return found[0]

    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "per_row_eps")
    inv = numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "per_row_inv127")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "per_row_axes")
    mid = numpy_helper.from_array(np.array(128.0, np.float32), "per_row_mid")
    zp128 = numpy_helper.from_array(np.array(128, np.uint8), "per_row_zero_point")
    dropped: set[int] = set()
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for dql in graph.node:
        if dql.op_type != "DynamicQuantizeLinear":
            continue
        a, (aq_old, scale_old, _) = dql.input[0], dql.output
        p = dql.name or aq_old
        reduce = (
            helper.make_node("ReduceMax", [f"{p}_abs", axes.name], [f"{p}_max"], name=f"{p}_max", keepdims=1)
            if opset >= 18
            else helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], name=f"{p}_max", axes=[-1], keepdims=1)
        )
        scale, aq = f"{p}_row_scale", f"{p}_row_q"
        new = [
            helper.make_node("Abs", [a], [f"{p}_abs"], name=f"{p}_abs"),
            reduce,
            helper.make_node("Mul", [f"{p}_max", inv.name], [f"{p}_scaled"], name=f"{p}_scaled"),
            helper.make_node("Max", [f"{p}_scaled", eps.name], [scale], name=f"{p}_scale"),
            helper.make_node("Div", [a, scale], [f"{p}_div"], name=f"{p}_div"),
            helper.make_node("Round", [f"{p}_div"], [f"{p}_round"], name=f"{p}_round"),
            helper.make_node("Add", [f"{p}_round", mid.name], [f"{p}_shift"], name=f"{p}_shift"),
            helper.make_node("Cast", [f"{p}_shift"], [aq], name=f"{p}_q", to=TensorProto.UINT8),
        ]
        for k, mmi in enumerate(users.get(aq_old, [])):
            if mmi.op_type != "MatMulInteger":
                raise RuntimeError(f"{dql.name}: {aq_old} feeds a {mmi.op_type}, expected MatMulInteger")
            cast = only_user(mmi.output[0], "Cast")
            out_mul = only_user(cast.output[0], "Mul")
            combined = next(i for i in out_mul.input if i != cast.output[0])
            scale_mul = producer[combined]
            w_scale = next(i for i in scale_mul.input if i != scale_old)
            q = f"{p}_{k}"
            new += [
                helper.make_node("MatMulInteger", [aq, mmi.input[1], zp128.name, mmi.input[3]], [f"{q}_int"], name=f"{q}_mmi"),
                helper.make_node("Cast", [f"{q}_int"], [f"{q}_f"], name=f"{q}_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{q}_f", w_scale], [f"{q}_w"], name=f"{q}_wscale"),
                helper.make_node("Mul", [f"{q}_w", scale], [out_mul.output[0]], name=f"{q}_ascale"),
            ]
            dropped.update(id(n) for n in (mmi, cast, out_mul, scale_mul))
        replaced[id(dql)] = new
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in replaced:
            nodes += replaced[id(node)]
        elif id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([eps, inv, mid, zp128] + ([axes] if opset >= 18 else []))


def onnx_static_int8(src: str | Path, dst: str | Path, pairs: Pairs, *, per_channel: bool = True) -> Path:
    """Static int8 in QDQ form: every MatMul gets int8 weights (per output channel) and uint8
    activations whose scales come from `pairs`, (x[1,F], state[1,S]) float32 inputs from
    `calibration.calibration_pairs`.

    Only the MatMuls are quantized: on the seed model, also quantizing the element-wise gate
    maths (Add/Mul, where the cell state accumulates) cost 1-2 % more forecast RMSE and ran
    slower. Activations are uint8 (U8S8), the form onnxruntime's x86 and Arm kernels fuse;
    int8 activations ran 1.6x slower here.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not pairs:
        raise ConfigError("static int8 quantization needs calibration pairs; none were given")

    class PairReader(CalibrationDataReader):
        """Feeds the (x, state) pairs to onnxruntime's calibrator, one step at a time."""

        def __init__(self) -> None:
            self._it = iter(pairs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            pair = next(self._it, None)
            if pair is None:
                return None
            return {"x": np.asarray(pair[0], np.float32), "state": np.asarray(pair[1], np.float32)}

    dst = Path(dst)
    quantize_static(
        str(src),
        str(dst),
        PairReader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    require_quantized(dst, "int8-static")
    return dst


def onnx_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 storage: every float32 initializer is stored as float16 behind a Cast to float32."""
    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}_cast", to=TensorProto.FLOAT))
    if not casts:
        raise ConfigError(f"{src}: no float32 weights to store as float16")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model, full_check=True)
    dst = Path(dst)
    onnx.save_model(model, str(dst))
    return dst


def onnx_op_counts(path: str | Path) -> Counter:
    """Op types in the ONNX graph at `path` (domain-qualified when not the default domain)."""
    model = onnx.load(str(path))
    return Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)


def require_quantized(path: str | Path, precision: str) -> Counter:
    """Raise if the ONNX graph at `path` holds none of `precision`'s quantized op types."""
    ops = onnx_op_counts(path)
    wanted = QUANTIZED_OPS[precision]
    if not any(op.split(".")[-1] in wanted for op in ops):
        raise RuntimeError(
            f"{path}: onnxruntime.quantization left the graph unquantized for {precision} "
            f"(ops: {dict(ops)}); expected some of {sorted(wanted)}"
        )
    return ops


# -- both formats ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantFile:
    """A step model file written into the bundle directory."""

    path: Path
    backend: str  # the manifest's backend: "onnx" or "litert" (a .tflite file)
    precision: str  # "fp32", "fp16", "int8-dynamic", "int8-static", "int16x8"


@dataclass
class Variants:
    """What `make_variants` wrote, and the requests it could not honour (with the reason)."""

    files: list[VariantFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def make_variants(
    stack: Stack,
    out_dir: str | Path,
    *,
    formats: Iterable[str] = ("onnx",),
    quantize: Iterable[str] = (),
    pairs: Pairs | None = None,
    onnx_fp32: str | Path | None = None,
    on_file: Callable[[VariantFile], None] | None = None,
) -> Variants:
    """Write the fp32 TFLite model (if "tflite" is in `formats`) and each requested quantized
    variant of each format into `out_dir`, named `model[.PRECISION].{onnx,tflite}`.

    `stack` is the device stack (scaler folded in). The ONNX variants quantize `onnx_fp32`
    (default `out_dir/model.onnx`, written with `emit_onnx` when missing); the fp32 ONNX model
    itself is not listed (the bundle writer owns it). `static` needs `pairs`. `on_file` is
    called after each file (a progress hook). A request a format cannot make (`int16x8` for
    ONNX) is skipped with a note; an unknown request is a ConfigError.
    """
    out = Path(out_dir)
    formats, quantize = list(formats), list(quantize)
    for f in formats:
        if f not in SUPPORTED:
            raise ConfigError(f"--formats: unknown format {f!r}; choose from {', '.join(SUPPORTED)}")
    for q in quantize:
        if q not in PRECISION:
            raise ConfigError(f"--quantize: unknown kind {q!r}; choose from {', '.join(PRECISION)}")
    if "static" in quantize and not pairs:
        raise ConfigError("--quantize static needs calibration data: pass --calibration data.csv")
    result = Variants()

    def done(path: Path, backend: str, precision: str) -> None:
        vf = VariantFile(path, backend, precision)
        result.files.append(vf)
        if on_file is not None:
            on_file(vf)

    if "onnx" in formats and quantize:
        src = Path(onnx_fp32) if onnx_fp32 is not None else out / "model.onnx"
        if not src.is_file():
            emit_onnx(stack, src)
        for q in quantize:
            if q not in SUPPORTED["onnx"]:
                result.notes.append(f"onnx: {q} is a TFLite-only variant; not made for ONNX")
                continue
            dst = out / f"model.{PRECISION[q]}.onnx"
            if q == "dynamic":
                onnx_dynamic_int8(src, dst)
            elif q == "static":
                onnx_static_int8(src, dst, pairs)
            else:
                onnx_fp16(src, dst)
            done(dst, "onnx", PRECISION[q])
    if "tflite" in formats:
        done(emit_tflite(stack, out / "model.tflite"), "litert", "fp32")
        for q in quantize:
            dst = out / f"model.{PRECISION[q]}.tflite"
            emit_tflite(stack, dst, quantize=_TFLITE_MODE[q], representative=pairs)
            done(dst, "litert", PRECISION[q])
    return result
