"""`ModelSpec`: everything that defines a MobileNetV1 model, validated, JSON round-trippable.

The two global knobs of Howard et al. 2017 (Section 3.3, 3.4) live here: the width multiplier ``alpha`` changes
the layers; the resolution multiplier ``rho`` does not change a single weight, so it is recorded only as the default
input ``resolution`` used by preprocessing, benchmarking and the cost model (rho = resolution / 224).
Model names follow TF-slim's checkpoint names (``mobilenet_v1_050_160``, `grid_name`), and a spec named that way
keeps its name in step with its alpha and resolution (`ModelSpec.replace`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

VARIANTS = ("standard", "shallow", "conv")
ACTIVATIONS = ("relu", "relu6")
OUTPUT_STRIDES = (8, 16, 32)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")  # torchvision modes that resize tensors
# the head's global pooling, as timm's global_pool (Keras' pooling='avg' / 'max' / None): 'avg' is the paper's
# Table 1 'Avg Pool'; '' pools nothing, so a model without classifier returns the final feature map
GLOBAL_POOLS = ("avg", "max", "")
BASE_RESOLUTION = 224  # the paper's rho = 1 input size
MIN_RESOLUTION = 32  # five stride-2 stages: below 32 the last stage would see less than one pixel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INT_FIELDS = ("resolution", "depth_multiplier", "min_channels", "channel_divisor", "num_classes", "in_chans")
REAL_FIELDS = ("alpha", "dropout", "bn_eps", "crop_pct")
# the fields a registered model's name stands for (its layers): changing one clears the name (`registry.model_spec`)
NAMED_LAYER_FIELDS = ("alpha", "variant", "depth_multiplier", "min_channels", "channel_divisor")


class SpecError(ValueError):
    """A bad configuration value. The message names the parameter, the value received and what is allowed."""


def bad_value(name: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def grid_name(alpha: float, resolution: int = BASE_RESOLUTION) -> str:
    """TF-slim-like short name: alpha 0.75 at 160 -> 'mobilenet_v1_075_160' (no suffix at 224). The digits are
    alpha without its point, at least three: 1.0 -> 100, 0.5 -> 050, and a finer width keeps all its digits
    (0.125 -> 0125), so `registry.model_spec` reads every name back to its alpha (the first digit is alpha's units).
    The one naming function (`registry.grid_name` is this function)."""
    digits = f"{alpha:.6f}".rstrip("0").replace(".", "")
    name = f"mobilenet_v1_{digits.ljust(3, '0')}"
    return name if resolution == BASE_RESOLUTION else f"{name}_{resolution}"


@dataclass(frozen=True)
class ModelSpec:
    """A MobileNetV1 configuration (paper Table 1 body, Section 3.3 alpha, Section 3.4 rho).

    Layer-shaping fields: alpha, depth_multiplier, min_channels, channel_divisor, variant, act, tf_padding,
    output_stride, num_classes, in_chans, dropout, bn_eps, global_pool (no weights: 'avg', 'max', or '' for the
    unpooled feature map of a model without classifier). Data-side fields (no effect on weights): resolution,
    mean, std (one value per input channel), crop_pct, interpolation, labels (one name per class; None or empty
    with num_classes=0). With ``in_chans`` other than 3 and mean/std left at ImageNet's RGB values, or changed by
    `replace` without them, mean and std follow the channels (`per_channel`: in_chans=1 takes their average).
    Integers and reals of any numeric type (NumPy scalars too) are stored as ``int`` and ``float``; bools are not
    numbers here.
    """

    alpha: float = 1.0
    resolution: int = BASE_RESOLUTION
    variant: str = "standard"
    act: str = "relu"
    depth_multiplier: int = 1
    min_channels: int = 8  # TF-slim's min_depth
    channel_divisor: int = 1  # 1 = TF-slim/Keras truncation rule; 8 = timm/torchvision make-divisible rule
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float = 0.001  # TF-slim's dropout_keep_prob=0.999; the paper does not state one
    tf_padding: bool = False
    output_stride: int = 32
    global_pool: str = "avg"  # GLOBAL_POOLS; '' only with num_classes=0
    bn_eps: float = 1e-5  # TF-slim/Keras checkpoints use 1e-3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    labels: tuple[str, ...] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for name, value in _normalized(self).items():
            object.__setattr__(self, name, value)
        for name, rgb in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):  # left at the RGB default: for in_chans
            if getattr(self, name) == rgb and _is_count(self.in_chans):  # (else in_chans=1 needed both spelled out)
                object.__setattr__(self, name, per_channel(rgb, self.in_chans))
        self.validate()

    def validate(self) -> None:
        _check_number("alpha", self.alpha, lambda v: 0 < v <= 2, "a number in (0, 2]")
        _check_int("resolution", self.resolution, MIN_RESOLUTION, f"an integer >= {MIN_RESOLUTION}")
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("act", self.act, ACTIVATIONS)
        _check_choice("output_stride", self.output_stride, OUTPUT_STRIDES)
        _check_choice("global_pool", self.global_pool, GLOBAL_POOLS)
        if self.global_pool == "" and self.num_classes:
            raise bad_value("global_pool", "", "'avg' or 'max' under a classifier; '' (no pooling) needs num_classes=0")
        _check_int("depth_multiplier", self.depth_multiplier, 1, "an integer >= 1")
        if self.variant == "conv" and self.depth_multiplier != 1:
            raise bad_value(
                "depth_multiplier", self.depth_multiplier, "1 for variant 'conv' (it has no depthwise layers)"
            )
        _check_int("min_channels", self.min_channels, 1, "an integer >= 1")
        _check_int("channel_divisor", self.channel_divisor, 1, "an integer >= 1")
        _check_int("num_classes", self.num_classes, 0, "an integer >= 0 (0 = feature extractor)")
        _check_int("in_chans", self.in_chans, 1, "an integer >= 1")
        _check_number("dropout", self.dropout, lambda v: 0 <= v < 1, "a number in [0, 1)")
        _check_number("bn_eps", self.bn_eps, lambda v: v > 0, "a positive number")
        _check_number("crop_pct", self.crop_pct, lambda v: 0 < v <= 1, "a number in (0, 1]")
        if not isinstance(self.tf_padding, bool):
            raise bad_value("tf_padding", self.tf_padding, "True or False")
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_per_channel("mean", self.mean, self.in_chans, lambda v: True, "numbers")
        _check_per_channel("std", self.std, self.in_chans, lambda v: v > 0, "positive numbers")
        self._validate_labels()
        if self.name is not None and not isinstance(self.name, str):
            raise bad_value("name", self.name, "a str or None")

    def _validate_labels(self) -> None:
        labels = self.labels
        if labels is None:
            return
        if not isinstance(labels, tuple) or not all(isinstance(label, str) for label in labels):
            raise bad_value("labels", labels, "a sequence of class names (str), e.g. ('cat', 'dog'), or None")
        if labels and not self.num_classes:  # a feature extractor has no classes for names to belong to
            raise bad_value(
                "labels",
                f"<{len(labels)} labels>",
                "None with num_classes=0 (a model without classifier has no classes)",
            )
        if self.num_classes and len(labels) != self.num_classes:
            raise bad_value("labels", f"<{len(labels)} labels>", f"{self.num_classes} labels (one per class)")

    @property
    def rho(self) -> float:
        """The paper's resolution multiplier (Section 3.4): resolution / 224."""
        return self.resolution / BASE_RESOLUTION

    def replace(self, **changes: Any) -> ModelSpec:
        """A validated copy with ``changes`` (field=value) applied; an unknown field is an error listing the fields.

        A `grid_name`-named spec keeps its name true: changing alpha or resolution renames it
        (``mobilenet_v1_100`` with alpha=0.5 becomes ``mobilenet_v1_050``), and a change of variant or depth
        multiplier, which no grid name describes, clears it to None; another name is the caller's and stays (a
        registered one is cleared by `registry.model_spec` when the layers it names change). An explicit ``name=``
        always wins. A new ``num_classes`` drops ``labels`` that no longer number it (as `load` and
        `MobileNetV1.reset_classifier` do), unless ``labels=`` is given too.
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            allowed = ", ".join(f.name for f in fields(self))
            raise SpecError(f"unknown ModelSpec field(s) {', '.join(unknown)}; allowed: {allowed}")
        chans = changes.get("in_chans", self.in_chans)
        if chans != self.in_chans and _is_count(chans):  # the mean and std not given follow, as the stem's weights do
            changes = {k: per_channel(getattr(self, k), chans) for k in ("mean", "std") if k not in changes} | changes
        relabel = "num_classes" in changes and "labels" not in changes and _is_sequence(self.labels)
        if relabel and len(self.labels) != changes["num_classes"]:
            changes = {**changes, "labels": None}
        new = dataclasses.replace(self, **changes)
        if "name" in changes or not _grid_named(self):
            return new
        return dataclasses.replace(new, name=grid_name(new.alpha, new.resolution) if on_grid(new) else None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("mean", "std", "labels"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecError(f"unknown ModelSpec field(s) in config: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        """Every field, but ``labels`` as ``<1000 labels>`` (a repr that prints all class names is unreadable)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            text = f"<{len(value)} labels>" if f.name == "labels" and value is not None else repr(value)
            parts.append(f"{f.name}={text}")
        return f"ModelSpec({', '.join(parts)})"


def per_channel(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Per-channel statistics (mean or std) of ``len(values)`` channels for ``in_chans`` channels, as timm's
    ``adapt_input_conv`` adapts a stem's weights: for one channel their average (the stem's weights are summed over
    the channels, so a gray image normalised so meets them as the RGB model meets it on all three channels; exactly
    where the three values are equal, as TF's 0.5), else repeated in turn (channel i takes value i mod len)."""
    if in_chans == len(values):
        return tuple(values)
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


def _is_count(value: Any) -> bool:
    """An in_chans that `validate` accepts: any integer type (NumPy's too, as `_normalized` stores them), not bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def on_grid(spec: ModelSpec) -> bool:
    """Whether a `grid_name` can name the spec: the standard body with depth multiplier 1 (any alpha, resolution)."""
    return spec.variant == "standard" and spec.depth_multiplier == 1


def _grid_named(spec: ModelSpec) -> bool:
    return on_grid(spec) and spec.name == grid_name(spec.alpha, spec.resolution)


def _normalized(spec: ModelSpec) -> dict[str, Any]:
    """The fields to store converted: numbers.Integral -> int, numbers.Real -> float, sequences -> tuples (of
    float for mean/std). Values that do not convert are left as they are, for `validate` to name."""
    out: dict[str, Any] = {}
    for name in INT_FIELDS + ("output_stride",):
        value = getattr(spec, name)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            out[name] = int(value)
    for name in REAL_FIELDS:
        value = getattr(spec, name)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
    if type(spec.tf_padding).__name__ == "bool_":  # numpy.bool_, without importing numpy
        out["tf_padding"] = bool(spec.tf_padding)
    for name in ("mean", "std"):
        value = getattr(spec, name)
        if _is_sequence(value) and all(_is_real(v) for v in value):
            out[name] = tuple(float(v) for v in value)
    if _is_sequence(spec.labels):
        out["labels"] = tuple(spec.labels)
    return out


def _is_sequence(value: Any) -> bool:
    """A list, tuple or array of values; a str is not (it would split into characters)."""
    if isinstance(value, str | bytes):
        return False
    return isinstance(value, Sequence) or type(value).__name__ == "ndarray"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(name: str, value: Any, ok, allowed: str) -> None:
    if not _is_real(value) or not math.isfinite(value) or not ok(value):
        raise bad_value(name, value, allowed)


def _check_int(name: str, value: Any, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_value(name, value, allowed)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    # of a choice's type too: output_stride=16.0 passed as 16 and was stored as 16.0
    if isinstance(value, bool) or value not in choices or not any(type(value) is type(c) for c in choices):
        raise bad_value(name, value, "one of " + ", ".join(repr(c) for c in choices))


def _check_per_channel(name: str, value: Any, in_chans: int, ok, kind: str) -> None:
    """mean/std: one finite number per input channel (so in_chans != 3 needs its own mean and std)."""
    good = isinstance(value, tuple) and len(value) == in_chans
    if not good or not all(_is_real(v) and math.isfinite(v) and ok(v) for v in value):
        raise bad_value(name, value, f"{in_chans} {kind}, one per input channel (in_chans={in_chans})")


__all__ = [
    "ModelSpec",
    "SpecError",
    "VARIANTS",
    "ACTIVATIONS",
    "OUTPUT_STRIDES",
    "INTERPOLATIONS",
    "BASE_RESOLUTION",
    "grid_name",
]
