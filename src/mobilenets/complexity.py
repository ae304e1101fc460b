"""Analytic cost model: per-layer mult-adds and parameters, computed from the same plan the model is built from.

Counting convention, as in the paper (Section 3, Tables 1-10): MACs are multiply-accumulates (the paper's
"Mult-Adds"; FLOPs = 2 x MACs). BatchNorm, biases, pooling, activations and softmax are not counted.
Parameters are conv and FC weights; ``params_all`` adds BatchNorm affine parameters and the FC bias, i.e. what
``sum(p.numel() for p in model.parameters())`` gives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from torch import nn

from .mobilenet_v1 import FeatureMaps, LayerDef, build_plan, plain_ints
from .spec import MIN_RESOLUTION, ModelSpec, bad_value

COUNTING_NOTE = (
    "MACs = multiply-accumulates (the paper's Mult-Adds; FLOPs = 2 x MACs); BatchNorm, biases and pooling not "
    "counted; params = conv + FC weights (paper convention)"
)

# `Complexity.table`'s columns (`LayerCost` fields): the paper's Table 1 ones and the cost
TABLE_COLUMNS = ("index", "name", "type_stride", "filter_shape", "input_size", "output_size", "macs", "params")

# Paper Table 2 layer types.
TYPE_CONV1X1, TYPE_DW3X3, TYPE_CONV3X3, TYPE_FC = "Conv 1x1", "Conv DW 3x3", "Conv 3x3", "Fully Connected"
LAYER_TYPES = (TYPE_CONV1X1, TYPE_DW3X3, TYPE_CONV3X3, TYPE_FC)


@dataclass(frozen=True)
class LayerCost:
    """One row of the per-layer table, in the paper's Table 1 columns plus cost."""

    index: int
    name: str
    type_stride: str  # e.g. "Conv dw / s2"
    filter_shape: str  # e.g. "3 x 3 x 64 dw"
    input_size: str  # e.g. "112 x 112 x 64"
    output_size: str
    layer_type: str  # Table 2 category, "" for pooling/softmax rows
    macs: int
    params: int
    params_all: int


@dataclass(frozen=True)
class Complexity:
    spec: ModelSpec
    input_hw: tuple[int, int]
    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def params_all(self) -> int:
        return sum(layer.params_all for layer in self.layers)

    @property
    def peak_values(self) -> int:
        """The most activation values one image needs at once: the largest layer's input and output together (a
        layer reads one while writing the other). A floor on any runtime's working memory per image, which a
        runtime's buffer reuse cannot go below."""
        return max(_values(layer.input_size) + _values(layer.output_size) for layer in self.layers)

    def shares(self) -> dict[str, dict[str, float]]:
        """Percent of mult-adds and of parameters per Table 2 layer type."""
        out = {}
        for kind in LAYER_TYPES:
            rows = [layer for layer in self.layers if layer.layer_type == kind]
            if rows:
                out[kind] = {
                    "macs_pct": 100 * sum(r.macs for r in rows) / self.macs,
                    "params_pct": 100 * sum(r.params for r in rows) / self.params,
                }
        return out

    def table(self, fmt: str = "table") -> str:
        """The per-layer table in the paper's Table 1 columns with MACs and params, and a total row, as
        ``mobilenets summary`` prints it; ``fmt`` one of formatting.FORMATS ('table', 'md', 'csv', 'json')."""
        from .formatting import render

        rows = [{k: getattr(layer, k) for k in TABLE_COLUMNS} for layer in self.layers]
        total = {"index": None, "name": "total", "macs": self.macs, "params": self.params}
        return render([*rows, total], fmt, TABLE_COLUMNS)

    def totals(self, label: str | None = None) -> str:
        """The line under the table, in `__str__` and ``mobilenets summary`` alike: the model (``label``, else the
        spec's name), its input and its MACs and parameters."""
        spec = self.spec
        h, w = self.input_hw
        return (
            f"{label or spec.name or 'MobileNetV1'}: alpha={spec.alpha:g} input {h} x {w} variant={spec.variant} "
            f"classes={spec.num_classes}: {self.macs / 1e6:.1f}M MACs, {self.params / 1e6:.3f}M params "
            f"({self.params_all / 1e6:.3f}M with BatchNorm and biases)"
        )

    def __str__(self) -> str:
        """``print(count_complexity(model))``: the table, totals and the counting convention (Keras'
        ``model.summary()``, as text: library code does not print); the dataclass repr stays for debugging."""
        return f"{self.table()}\n\n{self.totals()}\n{COUNTING_NOTE}"

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "input_hw": list(self.input_hw),
            "macs": self.macs,
            "params": self.params,
            "params_all": self.params_all,
            "shares": self.shares(),
            "convention": COUNTING_NOTE,
            "layers": [asdict(layer) for layer in self.layers],
        }


def _values(size: str) -> int:
    """The number of values of a ``"h x w x c"`` size column."""
    return math.prod(int(v) for v in size.split(" x "))


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv (either padding mode): ceil(size / stride)."""
    return -(-size // stride)


def layer_macs(layer: LayerDef, out_h: int, out_w: int) -> int:
    """k*k*(in/groups)*out per output pixel (paper eq. 1 and 4: D_K^2 M N D_F^2 and D_K^2 M D_F^2)."""
    return layer.kernel * layer.kernel * (layer.in_ch // layer.groups) * layer.out_ch * out_h * out_w


def layer_weights(layer: LayerDef) -> int:
    return layer.kernel * layer.kernel * (layer.in_ch // layer.groups) * layer.out_ch


def _describe(layer: LayerDef) -> tuple[str, str, str]:
    """(type/stride, filter shape, Table 2 type) in the paper's Table 1 notation."""
    k, s = layer.kernel, layer.stride
    rate = f", rate {layer.dilation}" if layer.dilation > 1 else ""
    if layer.kind == "dw":
        mult = f" x {layer.out_ch // layer.in_ch}" if layer.out_ch != layer.in_ch else ""
        return f"Conv dw / s{s}{rate}", f"{k} x {k} x {layer.in_ch}{mult} dw", TYPE_DW3X3
    if layer.kind == "fc":
        return "FC / s1", f"{layer.in_ch} x {layer.out_ch}", TYPE_FC
    kind = TYPE_CONV1X1 if k == 1 else TYPE_CONV3X3
    return f"Conv / s{s}{rate}", f"{k} x {k} x {layer.in_ch} x {layer.out_ch}", kind


def _input_hw(spec: ModelSpec, resolution: int | tuple[int, int] | None) -> tuple[int, int]:
    if resolution is None:
        return spec.resolution, spec.resolution
    hw = tuple(plain_ints(resolution if isinstance(resolution, list | tuple) else (resolution, resolution)))
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < MIN_RESOLUTION for v in hw):
        raise bad_value("resolution", resolution, f"an integer >= {MIN_RESOLUTION} or a pair of them")
    return hw  # type: ignore[return-value]


def count_complexity(spec: ModelSpec | str | object, resolution: int | tuple[int, int] | None = None) -> Complexity:
    """Per-layer cost of a model (a `ModelSpec`, a `MobileNetV1` or `FeatureMaps`, or a model name as
    `create_model` and ``mobilenets summary NAME`` take) at ``resolution`` (default: the spec's; an int, or
    (height, width))."""
    if isinstance(spec, str):
        from .registry import model_spec  # registry imports the model and weights: not at import time

        spec = model_spec(spec)
    if isinstance(spec, nn.Module):  # torch.compile's wrapper forwards .spec, not what it wraps: a FeatureMaps
        from .engine import unwrap  # was counted whole; DDP's has no .spec at all (save unwraps them alike)

        spec = unwrap(spec)
    model, spec = spec, getattr(spec, "spec", spec)
    classes = getattr(model, "num_classes", None)  # a MobileNetV1's head replaced by hand, torchvision style
    if isinstance(spec, ModelSpec) and isinstance(classes, int) and classes != spec.num_classes:
        spec = spec.replace(num_classes=classes, global_pool=spec.global_pool or "avg")
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"count_complexity needs a ModelSpec, MobileNetV1 or model name, got {type(spec).__name__}")
    plan = build_plan(spec)
    if isinstance(model, FeatureMaps):  # features_only: the blocks past its last map are not run
        kept = plan.blocks[: len(model.blocks)]
        plan = replace(plan, blocks=kept, num_features=kept[-1][-1].out_ch)
    h, w = _input_hw(spec, resolution)
    rows: list[LayerCost] = []
    for layer in plan.layers():
        if layer.kind == "fc":
            rows.append(_pool_row(len(rows), h, w, layer.in_ch, spec.global_pool))
            oh = ow = 1
            h = w = 1
        else:
            oh, ow = conv_out(h, layer.stride), conv_out(w, layer.stride)
        type_stride, shape, kind = _describe(layer)
        macs = layer.in_ch * layer.out_ch if layer.kind == "fc" else layer_macs(layer, oh, ow)
        weights = layer_weights(layer)
        extra = layer.out_ch if layer.kind == "fc" else 2 * layer.out_ch  # FC bias, or BN gamma and beta
        rows.append(
            LayerCost(
                len(rows),
                layer.name,
                type_stride,
                shape,
                f"{h} x {w} x {layer.in_ch}",
                f"{oh} x {ow} x {layer.out_ch}",
                kind,
                macs,
                weights,
                weights + extra,
            )
        )
        h, w = oh, ow
    if plan.classifier is None:
        if spec.global_pool:  # '' returns the final feature map: no pool
            rows.append(_pool_row(len(rows), h, w, plan.num_features, spec.global_pool))
    else:
        n = plan.classifier.out_ch
        rows.append(
            LayerCost(len(rows), "softmax", "Softmax / s1", "Classifier", f"1 x 1 x {n}", f"1 x 1 x {n}", "", 0, 0, 0)
        )
    return Complexity(spec, _input_hw(spec, resolution), tuple(rows))


def _pool_row(index: int, h: int, w: int, ch: int, kind: str = "avg") -> LayerCost:
    what = "Max Pool / s1" if kind == "max" else "Avg Pool / s1"
    return LayerCost(index, "global_pool", what, f"Pool {h} x {w}", f"{h} x {w} x {ch}", f"1 x 1 x {ch}", "", 0, 0, 0)
