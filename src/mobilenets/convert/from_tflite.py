"""Import TF-slim MobileNetV1 classifiers from TFLite flatbuffers (float or uint8/int8-quantized), without TensorFlow.

The flatbuffer is read with the `tflite` package (the generated Python bindings of TFLite's schema.fbs on top of
`flatbuffers`; pure Python, 2 MB). We chose it over the schema module bundled inside ai-edge-litert because it is
small, has no native code, and keeps conversion usable where the interpreter cannot be installed; the interpreter is
only an oracle in tests and benchmarks.

What the file holds and how it maps (TFLite converter conventions, schema.fbs):
- CONV_2D weights [O, H, W, I] -> torch [O, I, H, W]; DEPTHWISE_CONV_2D [1, H, W, C*m] -> [C*m, 1, H, W];
  FULLY_CONNECTED [O, I]; the TF-slim head is a 1x1 CONV_2D "Conv2d_1c_1x1" on the pooled 1x1 map, then
  RESHAPE/SQUEEZE and SOFTMAX (our model returns the logits before that softmax).
- Quantized tensors are dequantized as real = scale * (q - zero_point), per tensor or per channel along
  ``quantized_dimension``; int32 biases use scale = input_scale * weight_scale, as the file records it.
- BatchNorm is already folded into each conv (weights and bias); our ConvBNAct keeps its BN as an exact identity
  plus that bias (`StateBuilder.put_identity_bn`). Fused activations must be RELU6 (TF-slim) or RELU.
- Padding 'SAME' with stride 2 is TensorFlow's asymmetric padding: the model gets ``tf_padding=True``.
- Inputs: a uint8 input tensor with scale s and zero point z means real = s * (q - z); since our transform feeds
  q / 255, that is mean = z / 255, std = 1 / (255 s): for the published models (s = 1/128, z = 128) inputs are
  (q - 128) / 128 in [-1, 0.992]. Float models take [-1, 1] (mean = std = 0.5).

What is not reproduced: the interpreter also requantizes every activation to uint8 (and ReLU6 becomes the clamp of
that uint8 range); our float model keeps activations in float32, so outputs differ by that rounding noise
(measured in benchmarks/converted_accuracy.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..mobilenet_v1 import build_plan
from ..spec import ModelSpec
from ..weights import WeightsError
from ._common import StateBuilder, alpha_from_channels, labels_for, map_classes, spec_from

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
PASS_OPS = ("AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")
ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}  # ActivationFunctionType: NONE, RELU, RELU6


@dataclass
class TfliteLayer:
    op: str
    index: int  # operator index in the subgraph
    name: str  # the weight tensor's name
    weight: np.ndarray  # float32, TFLite layout
    bias: np.ndarray
    stride: int
    padding: str  # "SAME" | "VALID"
    act: str | None
    dilation: int
    depth_multiplier: int = 1
    out_quant: tuple[float | None, int | None] = (None, None)  # (scale, zero point) of a quantized output


@dataclass
class TfliteGraph:
    layers: list[TfliteLayer]
    input_shape: tuple[int, ...]
    input_dtype: str
    input_scale: float | None
    input_zero_point: int | None
    quantized: bool


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def read_tflite(path: str | os.PathLike) -> TfliteGraph:
    """Parse a MobileNetV1-style TFLite classifier into its conv layers (dequantized float32, TFLite layouts)."""
    try:
        import tflite
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise WeightsError("reading TFLite files needs the 'tflite' package (pip install tflite)") from exc
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WeightsError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    try:
        return _parse(tflite, data)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    except Exception as exc:  # a truncated/corrupt flatbuffer fails anywhere inside the generated accessors
        if (reach := _reach(exc)) > len(data):  # a cut-short copy: struct's words for it name offsets, not the cause
            raise WeightsError(
                f"{path}: truncated TFLite file: {len(data)} bytes, but its flatbuffer reaches byte {reach} "
                "(a download or copy cut short)"
            ) from exc
        raise WeightsError(f"{path}: corrupt or truncated TFLite file ({type(exc).__name__}: {exc})") from exc


def _reach(exc: Exception) -> int:
    """How many bytes a failed flatbuffer read needed: struct.error says "requires a buffer of at least N bytes";
    0 for any other failure."""
    found = re.search(r"requires a buffer of at least (\d+) bytes", str(exc))
    return int(found[1]) if found else 0


def _parse(tflite, data: bytes) -> TfliteGraph:
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise WeightsError(f"expected 1 subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    op_names = _enum_names(tflite.BuiltinOperator)
    type_names = _enum_names(tflite.TensorType)
    reader = _TensorReader(model, graph, data, type_names)
    (inp,) = graph.InputsAsNumpy().tolist()
    in_t = graph.Tensors(inp)
    in_scale, in_zp = reader.quant(inp)
    layers, current = [], inp
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins, outs = op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist()
        if name == "DEQUANTIZE" and reader.is_constant(ins[0]):  # fp16 weights stored as a constant + DEQUANTIZE
            reader.alias(outs[0], ins[0])
            continue
        if name not in CONV_OPS + PASS_OPS:
            raise WeightsError(f"operator {k} is {name}, which a MobileNetV1 classifier does not contain")
        if ins[0] != current:
            raise WeightsError(f"operator {k} ({name}) does not continue the single chain of a MobileNetV1")
        if name in CONV_OPS:
            layers.append(_conv_layer(tflite, reader, op, name, k, ins))
            layers[-1].out_quant = reader.quant(outs[0])
        current = outs[0]
    return TfliteGraph(
        layers=layers,
        input_shape=tuple(in_t.ShapeAsNumpy().tolist()),
        input_dtype=type_names[in_t.Type()],
        input_scale=in_scale,
        input_zero_point=in_zp,
        quantized=type_names[in_t.Type()] in ("UINT8", "INT8"),
    )


class _TensorReader:
    """Constant tensors out of the flatbuffer's buffers, dequantized to float32."""

    DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8, "INT8": np.int8}

    def __init__(self, model, graph, data: bytes, type_names: dict[int, str]) -> None:
        self.model, self.graph, self.data, self.type_names = model, graph, data, type_names
        self.aliases: dict[int, int] = {}

    def alias(self, tensor: int, source: int) -> None:
        self.aliases[tensor] = source

    def _raw(self, index: int) -> bytes:
        buf = self.model.Buffers(self.graph.Tensors(index).Buffer())
        if buf.DataLength():
            return buf.DataAsNumpy().tobytes()
        offset, size = buf.Offset(), buf.Size()  # large models keep buffers after the flatbuffer
        if offset > 1 and offset + size <= len(self.data):
            return self.data[offset : offset + size]
        return b""

    def is_constant(self, index: int) -> bool:
        return bool(self._raw(index))

    def quant(self, index: int) -> tuple[float | None, int | None]:
        q = self.graph.Tensors(index).Quantization()
        if q is None or not q.ScaleLength():
            return None, None
        return float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0]) if q.ZeroPointLength() else 0

    def name(self, index: int) -> str:
        return self.graph.Tensors(self.aliases.get(index, index)).Name().decode("utf-8", "replace")

    def read(self, index: int) -> np.ndarray:
        """The tensor as float32 (dequantized with its per-tensor or per-channel scale and zero point)."""
        index = self.aliases.get(index, index)
        t = self.graph.Tensors(index)
        type_name = self.type_names[t.Type()]
        if type_name not in self.DTYPES:
            raise WeightsError(f"tensor {self.name(index)!r} has unsupported type {type_name}")
        shape = tuple(t.ShapeAsNumpy().tolist())
        raw = self._raw(index)
        dtype = np.dtype(self.DTYPES[type_name]).newbyteorder("<")
        if len(raw) != int(np.prod(shape)) * dtype.itemsize:
            raise WeightsError(f"tensor {self.name(index)!r} {shape} has {len(raw)} bytes of data")
        values = np.frombuffer(raw, dtype=dtype).reshape(shape)
        q = t.Quantization()
        if type_name in ("FLOAT32", "FLOAT16") or q is None or not q.ScaleLength():
            return values.astype(np.float32)
        scale = q.ScaleAsNumpy().astype(np.float64)
        zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
        if scale.size > 1:  # per-channel: broadcast along the quantized dimension
            bshape = [1] * len(shape)
            bshape[q.QuantizedDimension()] = scale.size
            scale, zero = scale.reshape(bshape), zero.reshape(bshape)
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def _conv_layer(tflite, reader: _TensorReader, op, name: str, k: int, ins: list[int]) -> TfliteLayer:
    weight = reader.read(ins[1])
    bias = (
        reader.read(ins[2])
        if len(ins) > 2 and ins[2] >= 0
        else np.zeros(weight.shape[-1 if name == "DEPTHWISE_CONV_2D" else 0], np.float32)
    )
    table = op.BuiltinOptions()
    if name == "FULLY_CONNECTED":
        opts = tflite.FullyConnectedOptions()
        opts.Init(table.Bytes, table.Pos)
        return TfliteLayer(name, k, reader.name(ins[1]), weight, bias, 1, "VALID", _act(opts, k), 1)
    opts = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
    opts.Init(table.Bytes, table.Pos)
    if opts.StrideH() != opts.StrideW() or opts.DilationHFactor() != opts.DilationWFactor():
        raise WeightsError(f"operator {k} ({name}) has non-square strides or dilations")
    padding = {0: "SAME", 1: "VALID"}[opts.Padding()]
    mult = opts.DepthMultiplier() if name == "DEPTHWISE_CONV_2D" else 1
    return TfliteLayer(
        name, k, reader.name(ins[1]), weight, bias, opts.StrideH(), padding, _act(opts, k), opts.DilationHFactor(), mult
    )


def _act(opts, k: int) -> str | None:
    code = opts.FusedActivationFunction()
    if code not in ACTIVATIONS:
        raise WeightsError(f"operator {k} has fused activation {code}, a MobileNetV1 uses RELU6 or RELU")
    return ACTIVATIONS[code]


def spec_from_graph(g: TfliteGraph, classes: int | None, source: str) -> ModelSpec:
    """The `ModelSpec` a parsed TFLite MobileNetV1 implies (checked against the file by `tflite_state`)."""
    body, head = g.layers[:-1], g.layers[-1]
    if len(g.layers) < 3 or head.weight.shape[0] < 2 or any(layer.op == "FULLY_CONNECTED" for layer in body):
        raise WeightsError(f"{source}: no MobileNetV1 classifier found ({len(g.layers)} conv/FC layers)")
    acts = {layer.act for layer in body}
    if len(acts) != 1 or None in acts:
        raise WeightsError(f"{source}: body activations are {sorted(map(str, acts))}, expected all RELU6 (or RELU)")
    if len(g.input_shape) != 4 or g.input_shape[1] != g.input_shape[2] or g.input_shape[3] != 3:
        raise WeightsError(f"{source}: input shape {g.input_shape} is not 1 x R x R x 3")
    if g.quantized and g.input_scale:
        mean, std = g.input_zero_point / 255.0, 1.0 / (255.0 * g.input_scale)
    else:
        mean, std = 0.5, 0.5
    num_classes = head.weight.shape[0] if classes is None else classes
    last = body[-1].weight
    return spec_from(
        source,
        alpha=alpha_from_channels(last.shape[0], source, repr(body[-1].name)),
        resolution=g.input_shape[1],
        act=acts.pop(),
        tf_padding=any(layer.padding == "SAME" for layer in body),
        bn_eps=1e-3,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        mean=(mean,) * 3,
        std=(std,) * 3,
        dropout=0.0,
    )


def tflite_state(g: TfliteGraph, spec: ModelSpec, classes: int | None, source: str) -> StateBuilder:
    """Check every layer against the spec's plan (kind, stride, padding) and fill our state dict."""
    plan = build_plan(spec)
    plan_layers = [layer for layer in plan.layers() if layer.kind != "fc"]
    body, head = g.layers[:-1], g.layers[-1]
    if len(body) != len(plan_layers):
        raise WeightsError(
            f"{source}: {len(body)} conv layers before the classifier, MobileNetV1 has {len(plan_layers)}"
        )
    builder = StateBuilder(spec, source)
    for ours, theirs in zip(plan_layers, body, strict=True):
        where = f"operator {theirs.index} ({theirs.op}, tensor {theirs.name!r})"
        kind = "DEPTHWISE_CONV_2D" if ours.kind == "dw" else "CONV_2D"
        if theirs.op != kind or theirs.stride != ours.stride or theirs.dilation != ours.dilation:
            raise WeightsError(
                f"{source}: {where} with stride {theirs.stride} does not match {ours.name} "
                f"({kind}, stride {ours.stride})"
            )
        if theirs.padding != "SAME" and ours.kernel > 1:
            raise WeightsError(f"{source}: {where} uses {theirs.padding} padding; MobileNetV1 uses SAME")
        w = torch.from_numpy(theirs.weight)
        w = w.permute(3, 0, 1, 2) if theirs.op == "DEPTHWISE_CONV_2D" else w.permute(0, 3, 1, 2)
        prefix = "stem" if ours.name == "stem" else ours.name
        builder.put(f"{prefix}.conv.weight", w, where)
        builder.put_identity_bn(f"{prefix}.bn", torch.from_numpy(theirs.bias), where + " bias")
    hw = torch.from_numpy(head.weight).reshape(head.weight.shape[0], -1)
    hw, hb = map_classes(hw, torch.from_numpy(head.bias), classes, source)
    builder.put("classifier.weight", hw, f"operator {head.index} ({head.op}, tensor {head.name!r})")
    builder.put("classifier.bias", hb, f"operator {head.index} bias")
    return builder


def import_tflite(path: str | os.PathLike, *, classes: int | None = None):
    """Read a TFLite MobileNetV1 classifier; returns (model, extra provenance). ``classes`` = 1000 drops background."""
    source = str(path)
    g = read_tflite(path)
    spec = spec_from_graph(g, classes, source)
    model = tflite_state(g, spec, classes, source).finish()
    head = g.layers[-1]
    extra = {
        "tflite": {
            "input_dtype": g.input_dtype,
            "input_scale": g.input_scale,
            "input_zero_point": g.input_zero_point,
            "weights": "dequantized from uint8/int8 (scale * (q - zero_point))" if g.quantized else "float",
            "batchnorm": "folded in the file; kept as identity BatchNorm (weight 1, mean 0, var 1 - eps) + bias",
            "head_classes_in_file": int(head.weight.shape[0]),
            "outputs": "logits (the file's final SOFTMAX is not part of the model)",
            "activations_not_quantized": g.quantized,
        }
    }
    return model, extra
