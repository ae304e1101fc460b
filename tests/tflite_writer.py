"""Test helper: write a float TFLite flatbuffer of a MobileNetV1 (TF-slim graph layout) with the `tflite` package's
generated builders, so the float32 / float16 and FULLY_CONNECTED paths of the importer can be checked against the
real interpreter (the published files in shared/data are all uint8)."""

from __future__ import annotations

import importlib

import flatbuffers
import numpy as np
import tflite
from tflite import BuiltinOperator as Op
from tflite import BuiltinOptions as Opt

from mobilenets import MobileNetV1

FLOAT32, FLOAT16, INT32, INT8 = (tflite.TensorType.FLOAT32, tflite.TensorType.FLOAT16, tflite.TensorType.INT32,
                                 tflite.TensorType.INT8)  # fmt: skip
SAME, VALID = tflite.Padding.SAME, tflite.Padding.VALID
RELU6, NONE = tflite.ActivationFunctionType.RELU6, tflite.ActivationFunctionType.NONE


class _Graph:
    def __init__(self) -> None:
        self.buffers: list[bytes] = [b""]
        self.tensors: list[tuple[str, tuple[int, ...], int, int, tuple | None]] = []
        self.ops: list[tuple[int, list[int], list[int], int, dict]] = []
        self.codes: list[int] = []

    def tensor(self, name, shape, dtype=FLOAT32, data: np.ndarray | None = None, quant=None) -> int:
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append((name, tuple(shape), dtype, buf, quant))
        return len(self.tensors) - 1

    def const(self, name, array: np.ndarray, store: str, axis: int = 0) -> int:
        """A constant: float32 as is, or ``store`` = "fp16" / "int8" (symmetric, one scale per slice along
        ``axis``) behind a DEQUANTIZE op, as TFLite's float16 and weight-only quantized files hold them."""
        if store == "float" or array.dtype != np.float32:
            dtype = INT32 if array.dtype == np.int32 else FLOAT32
            return self.tensor(name, array.shape, dtype, array)
        if store == "fp16":
            stored = self.tensor(name + "_fp16", array.shape, FLOAT16, array.astype(np.float16))
        else:
            moved = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
            scale = np.maximum(np.abs(moved).max(1), 1e-8) / 127.0
            shape = [1] * array.ndim
            shape[axis] = -1
            q = np.clip(np.round(array / scale.reshape(shape)), -127, 127).astype(np.int8)
            stored = self.tensor(name + "_int8", array.shape, INT8, q, (scale.astype(np.float32), axis))
        out = self.tensor(name, array.shape)
        self.op(Op.DEQUANTIZE, [stored], [out])
        return out

    def op(self, code, inputs, outputs, kind=Opt.NONE, **options) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, kind, options))


def mobilenet_graph(model: MobileNetV1, *, store: str = "float", head: str = "conv", extra_op: bool = False) -> _Graph:
    """TF-slim's graph: Conv2d_0, Conv2d_N_depthwise/pointwise (BN folded, RELU6, SAME), AvgPool, 1x1 conv or FC
    logits, reshape, softmax. ``extra_op`` inserts an ADD (as a residual network would have) to test rejection."""
    fused = model.eval().fuse()
    r = model.spec.resolution
    g = _Graph()
    x = g.tensor("input", (1, r, r, 3))
    layers = [("Conv2d_0", fused.stem.conv, False)]
    for i, block in enumerate(fused.blocks, start=1):
        layers += [(f"Conv2d_{i}_depthwise", block.dw.conv, True), (f"Conv2d_{i}_pointwise", block.pw.conv, False)]
    size = r
    for name, conv, depthwise in layers:
        w = conv.weight.detach().numpy()
        size = -(-size // conv.stride[0])
        if depthwise:
            wt = g.const(name + "/weights", w.transpose(1, 2, 3, 0).copy(), store, axis=3)  # [1, H, W, C]
        else:
            wt = g.const(name + "/weights", w.transpose(0, 2, 3, 1).copy(), store)  # [O, H, W, I]
        b = g.const(name + "/bias", conv.bias.detach().numpy(), "float" if store == "int8" else store)
        y = g.tensor(name + "/Relu6", (1, size, size, w.shape[0]))
        opts = dict(Padding=SAME, StrideW=conv.stride[0], StrideH=conv.stride[0], FusedActivationFunction=RELU6)
        if depthwise:
            g.op(Op.DEPTHWISE_CONV_2D, [x, wt, b], [y], Opt.DepthwiseConv2DOptions, DepthMultiplier=1, **opts)
        else:
            g.op(Op.CONV_2D, [x, wt, b], [y], Opt.Conv2DOptions, **opts)
        x = y
        if extra_op and name == "Conv2d_2_pointwise":
            y = g.tensor("residual_add", (1, size, size, w.shape[0]))
            g.op(Op.ADD, [x, x], [y])
            x = y
    c = model.num_features
    pooled = g.tensor("AvgPool_1a", (1, 1, 1, c))
    g.op(Op.AVERAGE_POOL_2D, [x], [pooled], Opt.Pool2DOptions, Padding=VALID, StrideW=size, StrideH=size,
         FilterWidth=size, FilterHeight=size, FusedActivationFunction=NONE)  # fmt: skip
    k = model.num_classes
    w, b = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    shape = g.const("shape", np.array([1, k if head == "conv" else c], np.int32), "float")
    if head == "conv":
        wt, bt = g.const("Conv2d_1c_1x1/weights", w.reshape(k, 1, 1, c), store), g.const("logits/bias", b, "float")
        logits4 = g.tensor("Conv2d_1c_1x1/BiasAdd", (1, 1, 1, k))
        g.op(Op.CONV_2D, [pooled, wt, bt], [logits4], Opt.Conv2DOptions, Padding=VALID, StrideW=1, StrideH=1)
        logits = g.tensor("SpatialSqueeze", (1, k))
        g.op(Op.RESHAPE, [logits4, shape], [logits])
    else:
        flat = g.tensor("flatten", (1, c))
        g.op(Op.RESHAPE, [pooled, shape], [flat])
        wt, bt = g.const("fc/weights", w, store), g.const("fc/bias", b, "float")
        logits = g.tensor("fc/BiasAdd", (1, k))
        g.op(Op.FULLY_CONNECTED, [flat, wt, bt], [logits], Opt.FullyConnectedOptions, FusedActivationFunction=NONE)
    probs = g.tensor("Predictions", (1, k))
    g.op(Op.SOFTMAX, [logits], [probs], Opt.SoftmaxOptions, Beta=1.0)
    g.inputs, g.outputs = [0], [probs]
    return g


def _m(name: str):
    """The generated module (the package namespace re-exports only the class of the same name)."""
    return importlib.import_module(f"tflite.{name}")


def _ints(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _options(b: flatbuffers.Builder, kind: int, options: dict) -> int:
    name = {v: k for k, v in vars(Opt).items() if not k.startswith("_")}[kind]
    module = _m(name)
    getattr(module, f"{name}Start")(b)
    for key, value in options.items():
        getattr(module, f"{name}Add{key}")(b, value)
    return getattr(module, f"{name}End")(b)


def _quantization(b: flatbuffers.Builder, scale: np.ndarray, axis: int) -> int:
    module = _m("QuantizationParameters")
    sv = b.CreateNumpyVector(scale.astype(np.float32))
    zv = b.CreateNumpyVector(np.zeros(scale.size, np.int64))
    module.QuantizationParametersStart(b)
    module.QuantizationParametersAddScale(b, sv)
    module.QuantizationParametersAddZeroPoint(b, zv)
    module.QuantizationParametersAddQuantizedDimension(b, axis)
    return module.QuantizationParametersEnd(b)


def to_bytes(g: _Graph) -> bytes:
    b = flatbuffers.Builder(1 << 20)
    buffers = []
    for data in g.buffers:
        vec = None
        if data:
            b.StartVector(1, len(data), 16)
            b.head -= len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        _m("Buffer").BufferStart(b)
        if vec is not None:
            _m("Buffer").BufferAddData(b, vec)
        buffers.append(_m("Buffer").BufferEnd(b))
    tensors = []
    for name, shape, dtype, buf, quant in g.tensors:
        n, s = b.CreateString(name), _ints(b, shape)
        q = _quantization(b, *quant) if quant is not None else None
        _m("Tensor").TensorStart(b)
        _m("Tensor").TensorAddName(b, n)
        _m("Tensor").TensorAddShape(b, s)
        _m("Tensor").TensorAddType(b, dtype)
        _m("Tensor").TensorAddBuffer(b, buf)
        if q is not None:
            _m("Tensor").TensorAddQuantization(b, q)
        tensors.append(_m("Tensor").TensorEnd(b))
    ops = []
    for code, inputs, outputs, kind, options in g.ops:
        ins, outs = _ints(b, inputs), _ints(b, outputs)
        opts = _options(b, kind, options) if kind != Opt.NONE else None
        _m("Operator").OperatorStart(b)
        _m("Operator").OperatorAddOpcodeIndex(b, code)
        _m("Operator").OperatorAddInputs(b, ins)
        _m("Operator").OperatorAddOutputs(b, outs)
        if opts is not None:
            _m("Operator").OperatorAddBuiltinOptionsType(b, kind)
            _m("Operator").OperatorAddBuiltinOptions(b, opts)
        ops.append(_m("Operator").OperatorEnd(b))
    codes = []
    for code in g.codes:
        _m("OperatorCode").OperatorCodeStart(b)
        _m("OperatorCode").OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        _m("OperatorCode").OperatorCodeAddBuiltinCode(b, code)
        _m("OperatorCode").OperatorCodeAddVersion(b, 1)
        codes.append(_m("OperatorCode").OperatorCodeEnd(b))

    def vector(start, items):
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    tvec, ovec = (
        vector(_m("SubGraph").SubGraphStartTensorsVector, tensors),
        vector(_m("SubGraph").SubGraphStartOperatorsVector, ops),
    )
    ivec, outvec = _ints(b, g.inputs), _ints(b, g.outputs)
    _m("SubGraph").SubGraphStart(b)
    _m("SubGraph").SubGraphAddTensors(b, tvec)
    _m("SubGraph").SubGraphAddInputs(b, ivec)
    _m("SubGraph").SubGraphAddOutputs(b, outvec)
    _m("SubGraph").SubGraphAddOperators(b, ovec)
    subgraph = _m("SubGraph").SubGraphEnd(b)
    svec = vector(_m("Model").ModelStartSubgraphsVector, [subgraph])
    bvec = vector(_m("Model").ModelStartBuffersVector, buffers)
    cvec = vector(_m("Model").ModelStartOperatorCodesVector, codes)
    desc = b.CreateString("mobilenets test writer")
    _m("Model").ModelStart(b)
    _m("Model").ModelAddVersion(b, 3)
    _m("Model").ModelAddOperatorCodes(b, cvec)
    _m("Model").ModelAddSubgraphs(b, svec)
    _m("Model").ModelAddDescription(b, desc)
    _m("Model").ModelAddBuffers(b, bvec)
    b.Finish(_m("Model").ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())
