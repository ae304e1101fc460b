"""Our on-disk model format: a folder holding ``model.safetensors`` (tensors only, no pickle) and ``config.json``.

config.json = {"format": "mobilenets-v1", "spec": ModelSpec fields, "input": {...}, "provenance": {...}}. The spec
carries everything needed to rebuild and feed the model (alpha, resolution, variant, act, padding, classes, labels,
mean/std); "input" spells out the input convention derived from it (RGB in [0, 1] normalised with mean/std, and the
resulting value range, e.g. [-1, 1] for TF-trained weights); provenance records where the weights came from (source
file, its sha256 and size, source format, converter and converter version, library version).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import atomic_write_bytes, atomic_write_text
from .mobilenet_v1 import MobileNetV1
from .spec import ModelSpec, SpecError

FORMAT = "mobilenets-v1"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_convention(spec: ModelSpec) -> dict[str, Any]:
    """How pixels become model inputs: RGB scaled to [0, 1], then (x - mean) / std; the value range that gives."""
    lo = [(0.0 - m) / s for m, s in zip(spec.mean, spec.std, strict=True)]
    hi = [(1.0 - m) / s for m, s in zip(spec.mean, spec.std, strict=True)]
    return {
        "color": "RGB",
        "pixel_scale": "uint8 [0, 255] -> [0, 1]",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "value_range": [min(lo), max(hi)],
        "resize": f"shorter side to resolution / {spec.crop_pct:g} ({spec.interpolation}), center crop",
    }


def source_provenance(src: str | os.PathLike, source_format: str, converter: str, converter_version: str) -> dict:
    """Provenance of converted weights: the source file (name, absolute path, sha256, size) and the converter."""
    src = Path(src)
    return {
        "source_file": src.name,
        "source_path": str(src.resolve()),
        "source_sha256": sha256_file(src),
        "source_bytes": src.stat().st_size,
        "source_format": source_format,
        "converter": converter,
        "converter_version": converter_version,
    }


def save(model: MobileNetV1, path: str | os.PathLike, *, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed); each file is written atomically."""
    from . import __version__

    folder = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "input": input_convention(model.spec),
        "provenance": {"library_version": __version__, **(provenance or {})},
    }
    atomic_write_bytes(folder / WEIGHTS_FILE, st_save(tensors))
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return folder


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_FILE, CONFIG_FILE):
        p = p.parent
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_dir() or not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
        raise WeightsError(f"{p}: not a mobilenets weights folder (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
    return p


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a weights folder (``spec`` as a `ModelSpec`)."""
    folder = _folder(path)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise WeightsError(f"{folder / CONFIG_FILE}: format {config.get('format')!r} is not {FORMAT!r}")
        config["spec"] = ModelSpec.from_dict(config["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, SpecError) as exc:
        raise WeightsError(f"{folder / CONFIG_FILE}: unreadable config ({exc})") from exc
    return config


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    file = Path(path)
    try:
        return st_load(file.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise WeightsError(f"{file}: not a readable safetensors file ({exc})") from exc


def load_state_into(model: MobileNetV1, state: dict[str, torch.Tensor], source: str) -> MobileNetV1:
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming the first."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise WeightsError(f"{source}: tensor {key!r} {tuple(value.shape)} is missing")
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, the model expects {tuple(value.shape)}"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise WeightsError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all)")
    model.load_state_dict(state, strict=True)
    return model


def load(path: str | os.PathLike, **overrides: Any) -> MobileNetV1:
    """Rebuild the model saved in folder ``path``, load its weights, return it in eval mode.

    ``overrides`` are `ModelSpec` fields to change (e.g. a data-side field such as ``resolution``).
    """
    folder = _folder(path)
    spec = read_config(folder)["spec"]
    if overrides:
        spec = spec.replace(**overrides)
    model = MobileNetV1(spec)
    return load_state_into(model, read_state_dict(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE)).eval()
