"""Import published MobileNetV1 weights into our format (model.safetensors + config.json, see `weights`).

Sources (one module each): TF-slim/TFLite hosted-model flatbuffers (`from_tflite`), Keras applications `.h5` files
(`from_keras`), timm ``mobilenetv1_*`` state dicts (`from_timm`). Each importer derives the `ModelSpec` the file
implies (alpha, resolution, activation, TF 'SAME' padding, BN eps, classes, input mean/std), checks every tensor's
shape against that spec's layer plan (errors name the file and the first mismatching tensor) and builds the model
only once all tensors are present, so a model is never loaded partially.

``convert("m.tflite")`` -> (model, provenance); ``convert_file("m.tflite", "out/")`` also saves it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import check_writable, file_in_the_way
from ..mobilenet_v1 import MobileNetV1
from ..registry import grid_name, model_spec
from ..spec import ModelSpec
from ..weights import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    WeightsError,
    check_architecture,
    read_config,
    save,
    source_provenance,
)
from ._common import CONVERTER_VERSION, sniff_format

# what a grid name fixes about the layers (timm's files round widths to 8 channels: not a grid model's layers)
GRID_FIELDS = ("alpha", "variant", "depth_multiplier", "channel_divisor", "min_channels")

FORMATS = ("tflite", "keras", "timm")


def _importer(fmt: str):
    if fmt == "tflite":
        from .from_tflite import import_tflite

        return import_tflite
    if fmt == "keras":
        from .from_keras import import_keras

        return import_keras
    if fmt == "timm":
        from .from_timm import import_timm

        return import_timm
    raise WeightsError(f"unknown source format {fmt!r}; allowed: {', '.join(FORMATS)}")


def convert(
    src: str | os.PathLike,
    fmt: str | None = None,
    *,
    classes: int | None = None,
    resolution: int | None = None,
    expect: str | ModelSpec | None = None,
) -> tuple[MobileNetV1, dict[str, Any]]:
    """Import ``src`` (format ``fmt``, sniffed from its first bytes when None); returns (eval model, provenance).

    ``classes``: None keeps the file's head; 1000 maps a TF-slim 1001-class head to ImageNet's 1000 by dropping
    "background". ``resolution`` is the input size the weights record for preprocessing (default: the file's own
    where it fixes one, as TFLite does, else 224); it changes no weights (paper Section 3.4), and one other than a
    TFLite file's records the file's in the provenance as ``file_resolution``. ``expect`` (a registered name or a
    `ModelSpec`) makes a file of another architecture (alpha, variant, depth multiplier) an error.
    """
    src = Path(src)
    is_dir = src.is_dir()
    ours = src if is_dir else src.parent if src.name == WEIGHTS_FILE else None
    if ours is not None and _holds_our_config(ours) and fmt in (None, "timm"):  # ours look like timm's
        raise WeightsError(f"{src}: already mobilenets weights (with {ours / CONFIG_FILE}); nothing to convert: use "
                           f"the folder as it is (--weights {ours}, mobilenets.load)")  # fmt: skip
    if is_dir:
        raise FileNotFoundError(f"{src}: a folder, not a weights file (.tflite, .h5, .safetensors or .pth)")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    fmt = fmt or sniff_format(src)
    importer = _importer(fmt)
    model, extra = importer(src, classes=classes)
    if expect is not None:
        check_architecture(model.spec, expect if isinstance(expect, ModelSpec) else model_spec(expect), str(src))
    if resolution is not None and resolution != model.spec.resolution:
        if fmt == "tflite":  # the file's graph takes one size; the weights do not care (Keras, timm: a default)
            extra["file_resolution"] = model.spec.resolution
        model.spec = model.spec.replace(resolution=resolution)
    grid = grid_name(model.spec.alpha, model.spec.resolution)
    if not model.spec.name and all(  # a grid model (TF's files): named as ours, so the name builds these layers
        getattr(model_spec(grid), k) == getattr(model.spec, k) for k in GRID_FIELDS
    ):
        model.spec = model.spec.replace(name=grid)
    provenance = source_provenance(src, fmt, f"mobilenets.convert.from_{fmt}", CONVERTER_VERSION)
    return model, {**provenance, **extra}


def _holds_our_config(folder: Path) -> bool:
    """Whether ``folder`` has our config.json; a timm Hugging Face repo also holds model.safetensors beside a
    config.json (timm's: architecture, pretrained_cfg), and those weights are to be converted."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def convert_file(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    fmt: str | None = None,
    *,
    classes: int | None = None,
    resolution: int | None = None,
    expect: str | ModelSpec | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``src`` and save it to folder ``out`` (default: ``./<src name without suffix>``).

    A folder that already holds weights is replaced only when they were converted from the same file into the same
    spec (re-running the command), or with ``overwrite``; other weights there are an error, never lost silently."""
    model, provenance = convert(src, fmt, classes=classes, resolution=resolution, expect=expect)
    out = Path(out) if out is not None else Path(Path(src).stem)
    if out.exists() and not out.is_dir():
        raise WeightsError(f"{out}: exists and is not a folder")
    if (blocker := file_in_the_way(out)) is not None:
        raise WeightsError(f"out={out} is not allowed: {blocker} is a file, not a folder")
    check_writable(out, folder=True)  # naming ``out``: the first file written in it would be the one reported
    if not overwrite:
        _check_replace(out, model.spec, provenance)
    return save(model, out, provenance=provenance)


def _other_files(out: Path) -> list[str]:
    """What folder ``out`` holds besides weights (hidden staging files aside)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in (WEIGHTS_FILE, CONFIG_FILE) and p.name[0] != ".")


def _check_replace(out: Path, spec: ModelSpec, provenance: dict[str, Any]) -> None:
    """WeightsError when folder ``out`` holds weights other than these (another source file, or another spec), or
    files of something else: the weights would be mixed into, say, a dataset folder given as --out by mistake."""
    if others := _other_files(out):
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise WeightsError(f"out={out} is not allowed: the folder holds other files ({shown}); give a new or empty "
                           "folder, or pass --overwrite to add the weights there")  # fmt: skip
    if not ((out / WEIGHTS_FILE).exists() or (out / CONFIG_FILE).exists()):
        return
    try:
        config = read_config(out)
        source = config["provenance"].get("source_file", "training")
        if config["provenance"].get("source_sha256") != provenance["source_sha256"]:
            differs = f"weights from {source}, not from {provenance['source_file']}"
        else:  # the same file converted with other options: name the fields they changed
            was, now = config["spec"].to_dict(), spec.to_dict()
            changed = [f"{k}={_short(was.get(k))} there, {_short(now[k])} now" for k in now if was.get(k) != now[k]]
            differs = f"weights from {source} converted with other options ({'; '.join(changed)})" if changed else ""
    except (WeightsError, FileNotFoundError):
        differs = f"an unreadable weights folder, not these converted from {provenance['source_file']}"
    if differs:
        raise WeightsError(f"out={out} is not allowed: it holds {differs}; pass --overwrite to replace them")


def _short(value: Any) -> str:
    """A spec value for a one-line message: a list (labels) by its length, anything else as its repr."""
    return f"{len(value)} items" if isinstance(value, list | tuple) else repr(value)


__all__ = ["FORMATS", "CONVERTER_VERSION", "convert", "convert_file", "sniff_format"]
