"""Class names: the 1000 ImageNet-1k names and their WordNet ids shipped as package data (sorted-wnid order, as
Keras/torchvision/timm).

Source: ../shared/data/imagenet-classes/classes.tsv, its name and wnid columns (names from the TF-slim/TFLite label
file, which prepends "background" for 1001-class models: output k of such a model is ImageNet class k - 1; wnids
from the ILSVRC synset mapping). ImageNet's own folders, and Imagenette's, are named by wnid (n01440764 = tench):
`class_indices` matches them to a model whose labels are the ImageNet names.
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


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764`` ...) in class-index order, the order of `imagenet_labels`."""
    text = resources.files("mobilenets").joinpath("data/imagenet_wnids.txt").read_text(encoding="utf-8")
    wnids = tuple(line for line in text.splitlines() if line)
    if len(wnids) != 1000:
        raise RuntimeError(f"packaged ImageNet wnid file has {len(wnids)} ids, expected 1000")
    return wnids


@cache
def _wnid_names() -> dict[str, str]:
    return dict(zip(imagenet_wnids(), imagenet_labels(), strict=True))


def wnid_name(label: str) -> str | None:
    """The ImageNet class name of a WordNet-id label (``n01440764`` -> ``tench, Tinca tinca``); None for any other
    label. A model trained on ImageNet-layout folders (Imagenette) has wnids as its labels."""
    return _wnid_names().get(label)


def display_label(label: str) -> str:
    """``label`` for people: ``tench, Tinca tinca (n01440764)`` for an ImageNet wnid, any other label as it is."""
    name = wnid_name(label)
    return f"{name} ({label})" if name else label


def class_indices(folders: list[str], labels: tuple[str, ...] | list[str]) -> tuple[dict[str, int], list[str]]:
    """({folder: output index}, folders that match nothing) for class folders against a model's ``labels``: a
    folder named as a label takes that label's output; when the labels are the ImageNet names (1000, or 1001 with
    "background" first), a folder named by an ImageNet wnid takes its class's output."""
    index = {name: i for i, name in enumerate(labels)}
    imagenet = tuple(labels) in (imagenet_labels(), imagenet_labels(background=True))
    by_wnid = {w: i + (len(labels) - 1000) for i, w in enumerate(imagenet_wnids())} if imagenet else {}
    found, unknown = {}, []
    for folder in folders:
        k = index.get(folder, by_wnid.get(folder))
        if k is None:
            unknown.append(folder)
        else:
            found[folder] = k
    return found, unknown


def known_labels(spec) -> tuple[str, ...]:
    """The names a model's outputs are known by: its labels, else ImageNet's for a 1000/1001-way head
    (`resolve_labels` without its made-up ``class_<k>``); empty when they are unnamed (folders then match by count)."""
    if spec.labels:
        return tuple(spec.labels)
    return resolve_labels(spec) if spec.num_classes in (1000, 1001) else ()


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
