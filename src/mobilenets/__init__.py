"""mobilenets: MobileNetV1 (Howard et al. 2017, arXiv 1704.04861) as a toolkit.

Public API: `create_model`, `list_models`, `MobileNetV1`, `FeatureMaps`, `ModelSpec`, `count_complexity`, `save`
and `load`.

The names load on first use (PEP 562's module ``__getattr__``), so that ``import mobilenets`` does not import
torch: the ``mobilenets`` command's entry point (`mobilenets.launch`) must be running before torch's few seconds of
import start, to end a Ctrl-C during them in one line rather than a traceback from inside torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "COUNTING_NOTE": "complexity",
    "count_complexity": "complexity",
    "FeatureMaps": "mobilenet_v1",
    "MobileNetV1": "mobilenet_v1",
    "round_channels": "mobilenet_v1",
    "create_model": "registry",
    "list_models": "registry",
    "mobilenet_v1_025": "registry",
    "mobilenet_v1_050": "registry",
    "mobilenet_v1_075": "registry",
    "mobilenet_v1_100": "registry",
    "mobilenet_v1_conv": "registry",
    "mobilenet_v1_shallow": "registry",
    "model_spec": "registry",
    "register_model": "registry",
    "ModelSpec": "spec",
    "SpecError": "spec",
    "load": "weights",
    "save": "weights",
}

__all__ = [  # _EXPORTS' keys, spelled out for linters and IDEs (a test checks the two agree)
    "COUNTING_NOTE",
    "FeatureMaps",
    "MobileNetV1",
    "ModelSpec",
    "SpecError",
    "count_complexity",
    "create_model",
    "list_models",
    "load",
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_075",
    "mobilenet_v1_100",
    "mobilenet_v1_conv",
    "mobilenet_v1_shallow",
    "model_spec",
    "register_model",
    "round_channels",
    "save",
]


def __getattr__(name: str):
    """A public name from its submodule, or a submodule (``mobilenets.weights``) not imported yet."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # the next lookup is an ordinary one
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .complexity import COUNTING_NOTE, count_complexity
    from .mobilenet_v1 import FeatureMaps, MobileNetV1, round_channels
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
