"""mobilenets: MobileNetV1 (Howard et al. 2017, arXiv 1704.04861) as a toolkit.

Public API: `create_model`, `list_models`, `MobileNetV1`, `ModelSpec`, `count_complexity`, `save` and `load`.
"""

from .complexity import COUNTING_NOTE, count_complexity
from .mobilenet_v1 import MobileNetV1, round_channels
from .registry import (
    create_model,
    list_models,
    mobilenet_v1_025,
    mobilenet_v1_050,
    mobilenet_v1_075,
    mobilenet_v1_100,
    mobilenet_v1_conv,
    mobilenet_v1_shallow,
    model_spec,
    register_model,
)
from .spec import ModelSpec, SpecError
from .weights import load, save

__version__ = "0.1.0"

__all__ = [
    "COUNTING_NOTE",
    "MobileNetV1",
    "ModelSpec",
    "SpecError",
    "count_complexity",
    "create_model",
    "list_models",
    "load",
    "save",
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_075",
    "mobilenet_v1_100",
    "mobilenet_v1_conv",
    "mobilenet_v1_shallow",
    "model_spec",
    "register_model",
    "round_channels",
]
