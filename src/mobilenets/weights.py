"""Our on-disk model format: a folder holding ``model.safetensors`` (tensors only, no pickle) and ``config.json``.

config.json = {"format": "mobilenets-v1", "spec": ModelSpec fields, "input": {...}, "provenance": {...}}. The spec
carries everything needed to rebuild and feed the model (alpha, resolution, variant, act, padding, classes, labels,
mean/std); "input" spells out the input convention derived from it (RGB in [0, 1] normalised with mean/std, and the
resulting value range, e.g. [-1, 1] for TF-trained weights); provenance records where the weights came from (source
file name, its sha256 and size, source format, converter and converter version, library version; for a training run's
weights, the run folder relative to the weights folder: `training_run`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .atomic import atomic_write_bytes, atomic_write_text, file_in_the_way
from .layers import ConvBNAct
from .mobilenet_v1 import FeatureMaps, MobileNetV1
from .spec import ModelSpec, SpecError, bad_value

FORMAT = "mobilenets-v1"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


SHA_KEY = "weights_sha256"  # config.json: the SHA-256 of the model.safetensors it describes (older folders: none)


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
        "color": "RGB" if spec.in_chans == 3 else f"{spec.in_chans} channels",
        "pixel_scale": "uint8 [0, 255] -> [0, 1]",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "value_range": [min(lo), max(hi)],
        "resize": f"shorter side to resolution / {spec.crop_pct:g} ({spec.interpolation}), center crop",
    }


def source_provenance(src: str | os.PathLike, source_format: str, converter: str, converter_version: str) -> dict:
    """Provenance of converted weights: the source file (its name, sha256 and size) and the converter.

    The file is named by its base name and identified by its SHA-256 (which `convert`'s replace check compares), not
    by its path: the absolute path earlier versions recorded as ``source_path`` published the converting user's home
    and directory layout with the weights (as the trainer's absolute ``run_dir`` did, `training_run`), and named no
    file once the weights left that machine. Folders that hold ``source_path`` still read; nothing reads it."""
    src = Path(src)
    return {
        "source_file": src.name,
        "source_sha256": sha256_file(src),
        "source_bytes": src.stat().st_size,
        "source_format": source_format,
        "converter": converter,
        "converter_version": converter_version,
    }


def save(model: nn.Module, path: str | os.PathLike, *, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed); each file is written atomically.

    A ``torch.compile``d (or DDP-wrapped) model is saved as the `MobileNetV1` inside it. A classifier swapped by
    hand for ``nn.Linear(num_features, N)`` (or ``nn.Identity()``) is recorded as ``num_classes=N``, dropping labels
    that do not number N (`MobileNetV1.reset_classifier` is the tidy way). Nothing is written unless `load` can
    rebuild the model: a fused model (`MobileNetV1.fuse`, BatchNorm folded away) or any other tensor that
    ``MobileNetV1(spec)`` does not have is an error naming it; save before ``fuse()`` and fuse after `load`.
    """
    from . import __version__

    model = _unwrap(model)
    spec = _recorded_spec(model)
    folder = Path(path)
    in_the_way = file_in_the_way(folder / WEIGHTS_FILE)  # the folder itself, or one of its parents
    if in_the_way is not None:  # it was NotADirectoryError naming FOLDER/model.safetensors, from the write
        raise WeightsError(f"{folder}: not saved: {in_the_way} is a file; save writes a folder ({WEIGHTS_FILE} "
                           f"and {CONFIG_FILE})")  # fmt: skip
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    hint = " (save writes the layers MobileNetV1(model.spec) builds; change the head with reset_classifier)"
    _check_state(_expected_shapes(spec), tensors, f"{folder}: not saved", hint)
    data = st_save(tensors)
    config = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "input": input_convention(spec),
        "provenance": {"library_version": __version__, **(provenance or {})},
        # the two files are replaced one after the other: a kill between them leaves a config describing other
        # weights, which `load` then names instead of building the old spec around the new tensors
        SHA_KEY: hashlib.sha256(data).hexdigest(),
    }
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    new_weights = not (folder / WEIGHTS_FILE).exists()
    try:
        atomic_write_bytes(folder / WEIGHTS_FILE, data)
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    except BaseException:
        # a full disk, say: nothing this save made is left (weights without a config are no model); weights it
        # replaced stay replaced, and `load` names the config that no longer describes them (its SHA-256)
        if new_weights:
            (folder / WEIGHTS_FILE).unlink(missing_ok=True)
        for made_folder in made:
            with contextlib.suppress(OSError):  # not empty: another file went there meanwhile
                made_folder.rmdir()
        raise
    return folder


def _unwrap(model: nn.Module) -> MobileNetV1:
    """The `MobileNetV1` under ``torch.compile`` and (Distributed)DataParallel wrappers (`engine.unwrap`)."""
    from .engine import unwrap

    inner = unwrap(model)
    if not isinstance(inner, MobileNetV1):
        hint = ""
        if isinstance(inner, FeatureMaps):  # a backbone cut from one: `load` could not rebuild it
            hint = ("; save the model before features_only (create_model(NAME, weights=FOLDER, features_only=True) "
                    "cuts the backbone from the saved one again)")  # fmt: skip
        raise WeightsError(f"model={type(inner).__name__} is not allowed: save needs a MobileNetV1{hint}")
    return inner


def _recorded_spec(model: MobileNetV1) -> ModelSpec:
    """``model.spec``, with num_classes made true when the classifier was replaced by hand (torchvision style)."""
    if any(isinstance(m, ConvBNAct) and not isinstance(m.bn, nn.BatchNorm2d) for m in model.modules()):
        raise WeightsError(
            "model=<fused MobileNetV1> is not allowed: save needs its BatchNorms, which fuse() folded away "
            "(save the model before fuse(); fuse() after load())"
        )
    spec, classes = model.spec, model.num_classes  # the spec's for an unknown head: the state check names it
    if classes == spec.num_classes:
        return spec
    labels = spec.labels if spec.labels is not None and len(spec.labels) == classes else None
    return spec.replace(num_classes=classes, labels=labels)


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of ``MobileNetV1(spec)``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        reference = MobileNetV1(spec)
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


RUN_WEIGHTS = "model"  # where a `mobilenets train` run folder keeps its final weights (README "Training")


def run_weights(path: str | os.PathLike) -> Path:
    """``path``, or for the folder of a `mobilenets train` run, the final weights it holds (``RUN/model``): the one
    rule by which every command and loader takes a run folder where weights go (`load`, `read_config`,
    `create_model`, eval, predict, stream, export, bench's `model_path`).

    A run saves ``model/`` (the weights of its last epoch, what its summary's final top-1 scored) and ``model_best/``
    (its best evaluated epoch's, chosen on the validation split, so a biased pick); the final ones are taken, the
    weights the run's summary.json scores as ``final_top1`` (which bench reports beside them,
    `accuracy.weights_run_top1`). Nothing is printed about it: library code prints nothing (STYLE), `bench`, which
    took run folders first, takes them silently, and the outputs that name the weights name ``RUN/model`` (predict's
    summary, export's ``RUN-model.onnx``); ``RUN/model_best`` is given by its path. A folder holding config.json is
    weights, never a run; a run folder without ``model/`` (stopped before its end) is returned as it is, and
    `_folder`'s error then names the ``model_best/`` it holds."""
    p = Path(path)
    if p.is_dir() and not (p / CONFIG_FILE).exists() and (p / RUN_WEIGHTS / WEIGHTS_FILE).is_file():
        return p / RUN_WEIGHTS
    return p


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_FILE, CONFIG_FILE):
        p = p.parent
    p = run_weights(p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_dir() or not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
        raise WeightsError(f"{p}: not a mobilenets weights folder ({_missing(p)}){_hint(p)}")
    return p


def _missing(p: Path) -> str:
    """What a weights folder lacks: the one file missing beside the other (a copy or download cut short), which
    a user looks for by name, else both."""
    if p.is_dir():
        for file, other in ((WEIGHTS_FILE, CONFIG_FILE), (CONFIG_FILE, WEIGHTS_FILE)):
            if (p / other).is_file() and not (p / file).is_file():
                return f"{file} is missing beside its {other}"
    return f"expected {WEIGHTS_FILE} and {CONFIG_FILE}"


# files `mobilenets convert` reads (convert.sniff_format), which --init, --teacher and eval take only once converted
CONVERTIBLE_SUFFIXES = (".tflite", ".h5", ".pth", ".safetensors")  # as convert names them


def _hint(p: Path) -> str:
    """Where the weights are, for a path one step away from them: a training run's folder (README's ``runs/x``
    holds them in ``model/`` and ``model_best/``, each only once written: a run stopped early may have model_best/
    alone, which is named here; one with ``model/`` never gets here, `run_weights` takes it) or a published file not
    converted yet."""
    saved = [p / name for name in ("model", "model_best") if (p / name / WEIGHTS_FILE).is_file()] if p.is_dir() else []
    if saved:
        return f": a run folder, whose weights are {saved[0]}" + (f" (and {saved[1]})" if len(saved) > 1 else "")
    return convert_hint(p)


def convert_hint(p: Path) -> str:
    """The way on from a published weights file (.tflite, .h5, ...) given where our weights go ('' for others):
    every command that takes weights says it (`_folder`, predict's `infer.load_predictor`)."""
    if p.is_file() and p.suffix.lower() in CONVERTIBLE_SUFFIXES:
        return f": convert it first (mobilenets convert {p} --out DIR) and give DIR"
    return ""


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a weights folder (``spec`` as a `ModelSpec`); a run folder's is its ``RUN/model``'s
    (`run_weights`)."""
    folder = _folder(path)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise WeightsError(f"{folder / CONFIG_FILE}: format {config.get('format')!r} is not {FORMAT!r}")
        config["spec"] = ModelSpec.from_dict(config["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, SpecError) as exc:
        raise WeightsError(f"{folder / CONFIG_FILE}: unreadable config ({exc})") from exc
    return config


def training_run(path: str | os.PathLike) -> Path | None:
    """The folder of the `mobilenets train` run that saved the weights at ``path`` (where its config.yaml, env.json
    and metrics are), or None: weights not saved by a run, or copied away from it.

    Provenance records ``run_dir`` relative to the weights folder (``..`` for ``RUN/model``), not the absolute path
    earlier versions wrote, which published weights carried with the trainer's home and directory layout, and which
    no longer named the run once its folder moved or was copied to another machine. Relative to the weights (as a
    Hugging Face repo's files refer to each other), it resolves wherever the run folder goes, read from any working
    directory; an absolute value written by earlier versions still reads (``folder / absolute`` is the absolute
    path). The folder is returned resolved, and only while it holds the run's config.yaml."""
    folder = _folder(path)
    recorded = read_config(folder).get("provenance", {}).get("run_dir")
    if not isinstance(recorded, str) or not recorded:
        return None
    run = (folder / recorded).resolve()  # as the OS reads "RUN/model/..": a link to RUN/model leads back to RUN
    return run if (run / "config.yaml").is_file() else None


def read_state_dict(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; with ``sha256`` (config.json's `SHA_KEY`), an error unless it is that
    file."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{file}: not a readable safetensors file ({exc})") from exc
    try:
        state = st_load(data)
    except (SafetensorError, ValueError) as exc:
        raise WeightsError(f"{file}: not a readable safetensors file ({exc})") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise WeightsError(
            f"{file}: not the weights {CONFIG_FILE} describes (its SHA-256 differs: a save interrupted between the "
            "two files, or a file copied in by hand); save the model again"
        )
    return state


def load_state_into(model: MobileNetV1, state: dict[str, torch.Tensor], source: str) -> MobileNetV1:
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming the first."""
    _check_state({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)
    model.load_state_dict(state, strict=True)
    return model


def _check_state(expected: dict[str, tuple], state: dict[str, torch.Tensor], source: str, hint: str = "") -> None:
    """WeightsError naming the first tensor of ``state`` missing, mis-shaped or unexpected against ``expected``."""
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{source}: tensor {key!r} {shape} is missing{hint}")
        if tuple(state[key].shape) != shape:
            got = tuple(state[key].shape)
            raise WeightsError(f"{source}: tensor {key!r} has shape {got}, the model expects {shape}{hint}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise WeightsError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all){hint}")


ARCHITECTURE_FIELDS = ("alpha", "variant", "depth_multiplier")


def check_architecture(have: ModelSpec, want: ModelSpec, source: str) -> None:
    """WeightsError unless weights built for ``have`` fit the architecture ``want`` asks for: alpha, variant and
    depth multiplier, then the channel counts, which the rounding fields (``min_channels``, ``channel_divisor``)
    set too. Weights of other rounding but the same channels fit (timm's 1.0 MobileNet, divisor 8, is the paper's
    1.0: every width is a multiple of 8); others would take the requested model's name with layers it does not
    have. Every tensor shape is checked again on loading."""
    for field in ARCHITECTURE_FIELDS:
        if getattr(have, field) != getattr(want, field):
            raise WeightsError(
                f"{source}: weights are for {field}={getattr(have, field)!r}, "
                f"the requested model has {field}={getattr(want, field)!r}"
            )
    if _widths(have) != _widths(want):
        rounding = [f"{f}={getattr(have, f)!r}" for f in ("min_channels", "channel_divisor")
                    if getattr(have, f) != getattr(want, f)]  # fmt: skip
        raise WeightsError(
            f"{source}: weights have other channel counts than the requested model ({', '.join(rounding)} there, "
            f"{_widths(have)[:4]}... against {_widths(want)[:4]}...); load them as they are (mobilenets.load)"
        )


def _widths(spec: ModelSpec) -> list[int]:
    """The output channels of the body's layers (the classifier's are the head's business)."""
    from .mobilenet_v1 import build_plan

    return [layer.out_ch for layer in build_plan(spec).layers() if layer.kind != "fc"]


# Fields the saved tensors were trained with: changing one changes what they compute (TF "SAME" padding, relu6,
# BN eps 1e-3 and the input normalisation of converted TF weights) or their shapes, so `load` refuses it.
WEIGHT_FIELDS = (
    *ARCHITECTURE_FIELDS,
    *("min_channels", "channel_divisor", "in_chans", "act", "tf_padding", "bn_eps", "mean", "std"),
)
# Fields `load` lets change: data-side ones, regularisation, the dilated-backbone output stride (TF-slim/DeepLab run
# ImageNet weights at output_stride 8 or 16), the name, and the head (num_classes, labels).
FREE_FIELDS = ("resolution", "crop_pct", "interpolation", "dropout", "output_stride", "global_pool", "name",
               "num_classes", "labels")  # fmt: skip


def check_weight_overrides(saved: ModelSpec, overrides: dict[str, Any], source: str) -> None:
    """SpecError naming the first override of a `WEIGHT_FIELDS` field that differs from the saved value."""
    fixed = {k: v for k, v in overrides.items() if k in WEIGHT_FIELDS}

    def refuse(field: str) -> SpecError:
        return bad_value(
            field,
            overrides[field],
            f"{getattr(saved, field)!r}, the value the weights in {source} were trained with (with weights, only "
            f"{', '.join(FREE_FIELDS)} may change)",
        )

    # a plain value that differs is named before validating the whole spec, which would name a field it makes wrong
    # instead (in_chans=1 alone: the saved 3-channel mean)
    for field in WEIGHT_FIELDS:
        value = fixed.get(field)
        if isinstance(value, (bool, int, str)) and value != getattr(saved, field):
            raise refuse(field)
    changed = saved.replace(**fixed)  # validated and normalised (np.float32, lists) before comparing
    for field in WEIGHT_FIELDS:
        if field in fixed and getattr(changed, field) != getattr(saved, field):
            raise refuse(field)


def _background_head(spec: ModelSpec) -> bool:
    """Whether ``spec`` is a TF-slim ImageNet classifier: 1001 outputs, output 0 "background", k the class k - 1."""
    from .labels import imagenet_labels

    return spec.num_classes == 1001 and tuple(spec.labels or ()) == imagenet_labels(background=True)


def _drop_background(model: MobileNetV1, pool: str | None) -> None:
    """Make a TF-slim 1001-way head the 1000-way ImageNet head by dropping its background row, as ``convert
    --classes 1000`` and timm's ``label_offset`` do: ``num_classes=1000`` asks for ImageNet's classes, which these
    weights already score, and a fresh head would throw the trained classifier away without a word."""
    from .labels import imagenet_labels

    weight, bias = model.classifier.weight.data[1:].clone(), model.classifier.bias.data[1:].clone()
    model.reset_classifier(1000, pool)
    model.classifier.weight.data.copy_(weight)
    model.classifier.bias.data.copy_(bias)
    model.spec = model.spec.replace(labels=imagenet_labels())


def load(path: str | os.PathLike, **overrides: Any) -> MobileNetV1:
    """Rebuild the model saved in folder ``path`` (a `mobilenets train` run folder: its final weights, ``RUN/model``,
    `run_weights`), load its weights, return it in eval mode.

    ``overrides`` are `ModelSpec` fields to change: any of `FREE_FIELDS` (``resolution``, ``output_stride``,
    ``dropout``...). ``num_classes=N`` other than the saved count keeps the backbone and gives a freshly
    initialised head of N classes, as timm's ``pretrained=True, num_classes=N`` (0 = pooled features; with
    ``global_pool=''`` the final feature map), except ``num_classes=1000`` from a TF-slim 1001-way ImageNet head,
    which keeps its trained rows less "background" (`_drop_background`); the saved labels are dropped unless
    ``labels=`` gives N new ones. A field the weights fix (`WEIGHT_FIELDS`: act, tf_padding, bn_eps, mean, std,
    in_chans, width) may only be given its saved value; another is an error.
    """
    folder = _folder(path)
    config = read_config(folder)
    saved = config["spec"]
    check_weight_overrides(saved, overrides, str(folder))
    classes = overrides.get("num_classes", saved.num_classes)
    pool = overrides.get("global_pool")
    body = {k: v for k, v in overrides.items() if k not in ("num_classes", "labels", "global_pool")}
    model = MobileNetV1(saved.replace(**body))
    state = read_state_dict(folder / WEIGHTS_FILE, config.get(SHA_KEY))
    load_state_into(model, state, str(folder / WEIGHTS_FILE))
    if _background_head(saved) and classes == 1000:
        _drop_background(model, pool)
    elif classes != saved.num_classes:
        model.reset_classifier(classes, pool)  # with the head: '' is allowed with num_classes=0 only
    elif pool is not None:
        model.set_global_pool(pool)
    if "labels" in overrides:
        model.spec = model.spec.replace(labels=overrides["labels"])
    return model.eval()
