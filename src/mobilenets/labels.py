"""Class names: the 1000 ImageNet-1k names shipped as package data (sorted-wnid order, as Keras/torchvision/timm).

Source: ../shared/data/imagenet-classes/classes.tsv (names from the TF-slim/TFLite label file, which prepends
"background" for 1001-class models: output k of such a model is ImageNet class k - 1).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

BACKGROUND = "background"


@cache
def imagenet_labels(background: bool = False) -> tuple[str, ...]:
    """The 1000 ImageNet class names; with ``background=True`` the 1001-entry TF-slim list (index 0 = background)."""
    text = resources.files("mobilenets").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"packaged ImageNet label file has {len(names)} names, expected 1000")
    return ((BACKGROUND,) + names) if background else names


def resolve_labels(spec) -> tuple[str, ...]:
    """Class names for a model's outputs: the spec's own labels (training classes), else ImageNet names for a
    1000-way head, ImageNet with "background" first for a TF-slim 1001-way head, else ``class_<k>``."""
    if spec.labels:
        return tuple(spec.labels)
    if spec.num_classes == 1000:
        return imagenet_labels()
    if spec.num_classes == 1001:
        return imagenet_labels(background=True)
    return tuple(f"class_{k}" for k in range(spec.num_classes))
