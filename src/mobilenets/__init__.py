"""mobilenets: MobileNetV1 (Howard et al. 2017, arXiv 1704.04861) as a toolkit.

Public API: `create_model`, `list_models`, `MobileNetV1`, `ModelSpec`, `count_complexity`, `save` and `load`.

The names are imported on first use (PEP 562 module ``__getattr__``), not with the package: ``python -m mobilenets``
and the ``mobilenets`` console script then reach `cli.main` before torch is imported, so a Ctrl-C while torch loads
ends in main's one line and status 130 rather than a traceback from the import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and editors
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

# the module defining each public name
_MODULES = {
    "complexity": ("COUNTING_NOTE", "count_complexity"),
    "mobilenet_v1": ("MobileNetV1", "round_channels"),
    "registry": ("create_model", "list_models", "model_spec", "register_model", "mobilenet_v1_025",
                 "mobilenet_v1_050", "mobilenet_v1_075", "mobilenet_v1_100", "mobilenet_v1_conv",
                 "mobilenet_v1_shallow"),
    "spec": ("ModelSpec", "SpecError"),
    "weights": ("load", "save"),
}  # fmt: skip
_HOMES = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; a submodule (``mobilenets.weights``), imported."""
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    elif name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
