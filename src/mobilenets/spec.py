"""`ModelSpec`: everything that defines a MobileNetV1 model, validated, JSON round-trippable.

The two global knobs of Howard et al. 2017 (Section 3.3, 3.4) live here: the width multiplier ``alpha`` changes
the layers; the resolution multiplier ``rho`` does not change a single weight, so it is recorded only as the default
input ``resolution`` used by preprocessing, benchmarking and the cost model (rho = resolution / 224).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any

VARIANTS = ("standard", "shallow", "conv")
ACTIVATIONS = ("relu", "relu6")
OUTPUT_STRIDES = (8, 16, 32)
BASE_RESOLUTION = 224  # the paper's rho = 1 input size
MIN_RESOLUTION = 32  # five stride-2 stages: below 32 the last stage would see less than one pixel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpecError(ValueError):
    """A bad configuration value. The message names the parameter, the value received and what is allowed."""


def bad_value(name: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


@dataclass(frozen=True)
class ModelSpec:
    """A MobileNetV1 configuration (paper Table 1 body, Section 3.3 alpha, Section 3.4 rho).

    Layer-shaping fields: alpha, depth_multiplier, min_channels, channel_divisor, variant, act, tf_padding,
    output_stride, num_classes, in_chans, dropout, bn_eps. Data-side fields (no effect on weights): resolution,
    mean, std, crop_pct, interpolation, labels.
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
    bn_eps: float = 1e-5  # TF-slim/Keras checkpoints use 1e-3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    labels: tuple[str, ...] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        self.validate()

    def validate(self) -> None:
        _check_number("alpha", self.alpha, lambda v: 0 < v <= 2, "a number in (0, 2]")
        _check_int("resolution", self.resolution, MIN_RESOLUTION, f"an integer >= {MIN_RESOLUTION}")
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("act", self.act, ACTIVATIONS)
        _check_choice("output_stride", self.output_stride, OUTPUT_STRIDES)
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
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != self.in_chans and len(value) != 3:
                raise bad_value(name, value, f"a sequence of {self.in_chans} numbers")
        if self.labels is not None and self.num_classes and len(self.labels) != self.num_classes:
            raise bad_value("labels", f"<{len(self.labels)} labels>", f"{self.num_classes} labels (one per class)")

    @property
    def rho(self) -> float:
        """The paper's resolution multiplier (Section 3.4): resolution / 224."""
        return self.resolution / BASE_RESOLUTION

    def replace(self, **changes: Any) -> ModelSpec:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            allowed = ", ".join(f.name for f in fields(self))
            raise SpecError(f"unknown ModelSpec field(s) {', '.join(unknown)}; allowed: {allowed}")
        return dataclasses.replace(self, **changes)

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


def _check_number(name: str, value: Any, ok, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise bad_value(name, value, allowed)


def _check_int(name: str, value: Any, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_value(name, value, allowed)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices or isinstance(value, bool):
        raise bad_value(name, value, "one of " + ", ".join(repr(c) for c in choices))


__all__ = ["ModelSpec", "SpecError", "VARIANTS", "ACTIVATIONS", "OUTPUT_STRIDES", "BASE_RESOLUTION"]
