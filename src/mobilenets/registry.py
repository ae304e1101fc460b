"""Named models: the paper's 16-model alpha x resolution grid (Tables 6-7, Figures 4-5) and its variants.

``create_model("mobilenet_v1_050_160", num_classes=10)`` builds a `MobileNetV1`; ``list_models()`` names them all.
Off the grid, the same pattern names any width and resolution (``mobilenet_v1_045_176``, as `grid_name` writes the
models that bench and select print), and so does bench's ``ALPHA-RESOLUTION`` form (``0.45-176``). `grid_name`
(defined in spec.py, which keeps a grid-named spec's name in step with its alpha and resolution) is the one naming
function.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from .layers import adapt_input_conv
from .mobilenet_v1 import FeatureMaps, MobileNetV1
from .spec import NAMED_LAYER_FIELDS, ModelSpec, SpecError, grid_name
from .weights import ARCHITECTURE_FIELDS, check_architecture, check_weight_overrides, load, read_config

_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}

PAPER_ALPHAS = (1.0, 0.75, 0.5, 0.25)  # Table 6
PAPER_RESOLUTIONS = (224, 192, 160, 128)  # Table 7


def register_model(name: str, spec_fn: Callable[[], ModelSpec]) -> None:
    """Register ``name`` -> a function returning its default `ModelSpec`; it is called each time the model is
    created, and anything but a ModelSpec is then an error naming the model. Registering a name twice is an error."""
    if not isinstance(name, str) or not name:  # else create_model(3) could not ask for it, and list_models breaks
        raise SpecError(f"name={name!r} is not allowed: register_model needs a model name (a non-empty str)")
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    if not callable(spec_fn):
        raise SpecError(f"spec_fn={spec_fn!r} is not allowed: register_model({name!r}, ...) needs a function")
    _REGISTRY[name] = spec_fn


def _registered_spec(name: str) -> ModelSpec:
    spec = _REGISTRY[name]()
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"model {name!r}: its registered function returned {type(spec).__name__}, not a ModelSpec")
    return spec


def list_models(
    filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = "", *, pretrained: bool = False
) -> list[str]:
    """Registered model names, in registration order (the paper's grid first), filtered as timm's ``list_models``:
    ``filter`` keeps the names matching any of its fnmatch patterns (``"mobilenet_v1_050*"``), ``exclude_filters``
    drops those matching any of its. Off-grid names (see `model_spec`) are created but not listed.

    ``pretrained=True`` (timm's keyword; ours is keyword-only, the second place being ``exclude_filters``) keeps the
    models with weights available, those ``create_model(name, pretrained=True)`` builds: none, as no weights are
    bundled or downloaded here (`_check_timm_torchvision_habits`), so the list is empty and ported code that loops
    over it runs. Converted weights (``mobilenets convert``) are loaded by folder, ``create_model(name, weights=DIR)``.
    """
    if not isinstance(pretrained, bool):  # timm's is a flag; a name here would silently mean True
        raise SpecError(f"pretrained={pretrained!r} is not allowed: pretrained must be True or False")
    names = [] if pretrained else list(_REGISTRY)  # create_model refuses pretrained=True for every name
    if filter:
        names = [n for n in names if _matches(n, filter)]
    if exclude_filters:
        names = [n for n in names if not _matches(n, exclude_filters)]
    return names


def _matches(name: str, patterns: str | Sequence[str]) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


_GRID_NAME = re.compile(r"mobilenet_v1_(\d{3,})(?:_(\d+))?")
_ALPHA_RES = re.compile(r"(\d*\.?\d+)-(\d+)")


def model_spec(name: str, /, **overrides: Any) -> ModelSpec:
    """The spec of a registered model, or of a `grid_name`-style or ALPHA-RESOLUTION name off the grid, with
    ``overrides`` applied (validated)."""
    if name in _REGISTRY:  # a registered name stays only on the layers it names (mobilenet_v1_shallow at alpha 0.5
        registered = _registered_spec(name)  # is no model of that name: loading it by name would fail)
        spec = registered.replace(**overrides)
        moved = any(getattr(spec, f) != getattr(registered, f) for f in NAMED_LAYER_FIELDS)
        return spec.replace(name=None) if moved and spec.name == name and "name" not in overrides else spec
    grid, pair = _GRID_NAME.fullmatch(name), _ALPHA_RES.fullmatch(name)
    if grid or pair:
        digits = grid.group(1) if grid else ""
        alpha = int(digits) / 10 ** (len(digits) - 1) if grid else float(pair.group(1))
        resolution = int((grid.group(2) or 224) if grid else pair.group(2))
        try:
            spec = ModelSpec(alpha=alpha, resolution=resolution)  # validated before it is named
        except SpecError as exc:  # the name, not only the alpha read from it: mobilenet_v1_999 is no model of 9.99
            rule = str(exc).split(" is not allowed: ", 1)[-1]  # "alpha must be a number in (0, 2]"
            raise SpecError(f"model name {name!r} is not allowed: it reads as alpha={alpha:g} at resolution "
                            f"{resolution}, and {rule}") from None  # fmt: skip
        return spec.replace(name=grid_name(spec.alpha, spec.resolution)).replace(**overrides)
    timm = re.fullmatch(r"mobilenetv1_(\d{3,})", name)  # timm spells the family without the underscore
    hint = f" (timm's spelling: here it is 'mobilenet_v1_{timm.group(1)}')" if timm else ""
    raise SpecError(
        f"unknown model name {name!r}{hint}; known models: {', '.join(_REGISTRY)}, or any width and resolution as "
        "mobilenet_v1_<alpha x 100>[_<resolution>] or ALPHA-RESOLUTION (0.45-176)"
    )


def named_resolution(name: str) -> int | None:
    """The resolution a model name states: a grid name's ``_RES`` (``mobilenet_v1_075_160``: 160) or ALPHA-RESOLUTION's
    (``0.75-160``); None for a name that states none (``mobilenet_v1_075``, ``mobilenet_v1_shallow``: 224 for a fresh
    model, while ``train --init`` weights keep their own). A name that states one is read by `model_spec`, so a bad
    one (``mobilenet_v1_075_16``) is a SpecError naming it."""
    grid = _GRID_NAME.fullmatch(name)
    if (grid and grid.group(2)) or _ALPHA_RES.fullmatch(name):
        return model_spec(name).resolution
    return None


def create_model(name_or_spec: str | ModelSpec, *, weights: Any = None, **overrides: Any) -> MobileNetV1 | FeatureMaps:
    """Build a model from a registered name or a `ModelSpec`; keyword overrides are `ModelSpec` fields, or Keras'
    ``include_top``/``pooling``/``input_shape`` and timm's ``drop_rate`` (`_keras_timm_keywords`); timm's
    ``exportable``, ``drop_path_rate=None``... choose nothing here (`_timm_keywords_that_select_nothing`). timm's
    ``features_only=True`` (with ``out_indices``) returns the backbone's feature maps instead: a `FeatureMaps`.

    ``weights=PATH`` (a folder written by `mobilenets.save` or `mobilenets convert`, or a `mobilenets train` run
    folder for its final weights ``RUN/model``: `weights.run_weights`) loads those weights in eval mode. The saved
    config then defines the model (padding, activation, BN eps, classes, mean/std); the name or spec must agree with
    it on alpha, variant and depth multiplier. ``overrides`` apply on top as `weights.load`
    allows: data-side fields, dropout and output_stride freely, ``num_classes`` for a fresh head of that many
    classes (timm's ``pretrained=True, num_classes=N``; 1000 on a TF-slim 1001-way head keeps its trained rows less
    "background"), and a field the weights fix (act, tf_padding, bn_eps, mean, std...) only at its saved value, but
    ``in_chans``: as timm's ``pretrained=True, in_chans=1``, the stem's weights are adapted (summed over RGB for one
    channel) and mean/std with them (averaged; `_adapted_input`). Weights saved without a name take the requested
    one. The resolution is ``resolution=`` if given, else the one the name states (``mobilenet_v1_050_160``: 160,
    as a fresh model of that name and ``train --init`` take it; `named_resolution`), else the weights'.
    """
    if not isinstance(name_or_spec, str | ModelSpec):
        raise SpecError(f"create_model needs a model name or a ModelSpec, got {type(name_or_spec).__name__}")
    _check_timm_torchvision_habits(weights, overrides)
    _timm_keywords_that_select_nothing(overrides)
    features_only, out_indices = _features_keywords(overrides)
    overrides = _keras_timm_keywords(overrides)
    if weights is not None:
        model = _create_with_weights(name_or_spec, weights, overrides)
    elif isinstance(name_or_spec, ModelSpec):
        model = MobileNetV1(name_or_spec.replace(**overrides))
    else:
        model = MobileNetV1(model_spec(name_or_spec, **overrides))
    return FeatureMaps(model, out_indices) if features_only else model


def _features_keywords(overrides: dict[str, Any]) -> tuple[bool, Any]:
    """timm's ``features_only`` and ``out_indices``, taken out of ``overrides``: (features_only, out_indices)."""
    features_only = overrides.pop("features_only", False)
    if not isinstance(features_only, bool):
        raise SpecError(f"features_only={features_only!r} is not allowed: features_only must be True or False")
    out_indices = overrides.pop("out_indices", None)
    if out_indices is not None and not features_only:
        raise SpecError(f"out_indices={out_indices!r} is not allowed: out_indices needs features_only=True")
    return features_only, out_indices


# Keras applications' pooling -> ModelSpec.global_pool (None: the unpooled final feature map)
_KERAS_POOLING = {None: "", "avg": "avg", "max": "max"}


def _keras_timm_keywords(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with Keras applications' ``include_top``/``pooling``/``classes`` and timm's ``drop_rate`` as
    `ModelSpec` fields, so code ported from ``keras.applications.MobileNet(include_top=False, pooling='avg')`` or
    ``timm.create_model(..., drop_rate=0.2)`` runs unchanged (else: "unknown ModelSpec field pooling").
    Keras semantics: ``include_top=False`` drops the classifier (num_classes=0) and, with ``pooling`` None (Keras'
    default, unless timm's ``global_pool`` is given), returns the final feature map; ``pooling`` 'avg'/'max' pools
    it. A value given both ways that disagrees is an error naming both."""
    out = _keras_input_keywords(dict(overrides))
    if "drop_rate" in out:
        rate = out.pop("drop_rate")
        _alias(out, f"drop_rate={rate!r}", "dropout", rate)
    top = out.pop("include_top", True)
    if not isinstance(top, bool):
        raise SpecError(f"include_top={top!r} is not allowed: include_top must be True or False")
    classes = out.pop("classes", None)
    if classes is not None and top:  # Keras ignores classes without its top, as here
        _alias(out, f"classes={classes!r}", "num_classes", classes)
    if "pooling" in out or (not top and "global_pool" not in out):  # timm's global_pool said it: Keras' default
        pooling = out.pop("pooling", None)  # pooling=None was not written, so it is no conflict
        if not isinstance(pooling, str | type(None)) or pooling not in _KERAS_POOLING:
            raise SpecError(f"pooling={pooling!r} is not allowed: pooling must be one of None, 'avg', 'max'")
        if pooling is None and top and out.get("num_classes", 0):  # unstated: the spec says (a ModelSpec may have 0)
            raise SpecError("pooling=None is not allowed: pooling=None (no pooling) needs include_top=False")
        _alias(out, f"pooling={pooling!r}", "global_pool", _KERAS_POOLING[pooling])
    if not top:
        _alias(out, "include_top=False", "num_classes", 0)
    return out


def _keras_input_keywords(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with Keras applications' ``input_shape`` (height, width, channels; channels last, Keras' default) as
    ``resolution`` and ``in_chans``, and ``classifier_activation`` taken out where it is what the model returns
    (None or 'linear': logits). A height and width of None state no resolution; two different ones are an error, as
    a spec's resolution is one square size (the model itself takes any)."""
    shape = out.pop("input_shape", None)
    if shape is not None:
        ok = isinstance(shape, tuple | list) and len(shape) == 3
        if not ok or shape[0] != shape[1] or not all(isinstance(v, int | type(None)) for v in shape):
            raise SpecError(f"input_shape={shape!r} is not allowed: input_shape must be (size, size, channels), "
                            "channels last, the sizes equal or None")  # fmt: skip
        if shape[0] is not None:
            _alias(out, f"input_shape={shape!r}", "resolution", shape[0])
        if shape[2] is not None:
            _alias(out, f"input_shape={shape!r}", "in_chans", shape[2])
    activation = out.pop("classifier_activation", None)
    if activation not in (None, "linear"):  # Keras' default is 'softmax': torch's losses take logits
        raise SpecError(
            f"classifier_activation={activation!r} is not allowed: classifier_activation must be None or 'linear': "
            "the model returns logits (torch.softmax(logits, 1) gives probabilities)"
        )
    return out


def _alias(out: dict[str, Any], given: str, field: str, value: Any) -> None:
    """Set ``out[field] = value`` for the keyword ``given`` (``"pooling=None"``), unless ``field`` was given as
    another value."""
    if field in out and out[field] != value:
        keyword = given.split("=", 1)[0]
        raise SpecError(f"{field}={out[field]!r} is not allowed with {given}: give one of {keyword} and {field}")
    out[field] = value


def _check_timm_torchvision_habits(weights: Any, overrides: dict[str, Any]) -> None:
    """timm's ``pretrained=True``, torchvision's ``weights=True``/``"DEFAULT"`` and Keras' ``weights="imagenet"`` ask
    for weights that would be downloaded; nothing is bundled or downloaded here, so they are refused with the way to
    real weights rather than as an unknown ModelSpec field or a missing folder named ``DEFAULT``.
    ``pretrained=False`` asks for what create_model does anyway (timm's default), so ported timm code runs
    unchanged."""
    how = "convert published weights with `mobilenets convert FILE --out DIR` and pass weights=DIR"
    pretrained = overrides.pop("pretrained", False)
    if pretrained:
        raise SpecError(f"pretrained={pretrained!r} is not allowed: no weights are bundled or downloaded; {how}")
    keras = weights == "imagenet" and not os.path.exists(weights)  # Keras' weights='imagenet' (a folder so named loads)
    if isinstance(weights, bool) or weights in ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2") or keras:
        raise SpecError(f"weights={weights!r} is not allowed: weights is a folder of our format; {how}")


# timm.create_model's layer-implementation flags: every layer here scripts, traces and exports already
_TIMM_LAYER_FLAGS = ("scriptable", "exportable", "no_jit")
# timm's regularisers of residual paths, of which MobileNetV1 has none (timm's mobilenetv1 takes drop_path_rate and
# drops nothing: its blocks have no skip), and its checkpoint to load: timm's train.py passes each, None if unset
_TIMM_UNSET = {"drop_path_rate": (None, 0, 0.0), "drop_block_rate": (None, 0, 0.0), "checkpoint_path": (None, "")}
# timm.create_model drops every keyword given as None (such keywords "only override model defaults if set"), and its
# train.py passes these as None when unset; bn_momentum has no field here (BatchNorm keeps torch's 0.1)
_TIMM_NONE_UNSET = ("num_classes", "global_pool", "bn_eps", "bn_momentum", "in_chans", "drop_rate")


def _timm_keywords_that_select_nothing(overrides: dict[str, Any]) -> None:
    """Take timm's create_model keywords that choose nothing here out of ``overrides``, so code ported from
    ``timm.create_model(name, exportable=True, drop_path_rate=args.drop_path)`` runs (else: "unknown ModelSpec
    field"), and timm's None for "not set" (`_TIMM_NONE_UNSET`: train.py's ``num_classes=args.num_classes``...)
    keeps the default, as timm drops it; a value that would do something in timm and cannot here is an error."""
    for flag in _TIMM_LAYER_FLAGS:
        value = overrides.pop(flag, None)
        if not isinstance(value, bool | type(None)):
            raise SpecError(f"{flag}={value!r} is not allowed: {flag} must be True, False or None")
    for key, unset in _TIMM_UNSET.items():
        value = overrides.pop(key, None)
        if not any(value is u or (type(value) is type(u) and value == u) for u in unset):
            why = "0 or None: MobileNetV1 has no residual paths to drop (timm's mobilenetv1 drops none either)"
            if key == "checkpoint_path":
                why = "'' or None: weights load with weights=DIR (`mobilenets convert` writes one from timm's)"
            raise SpecError(f"{key}={value!r} is not allowed: {key} must be {why}")
    for key in _TIMM_NONE_UNSET:
        if key in overrides and overrides[key] is None:
            del overrides[key]
    if "bn_momentum" in overrides:
        momentum = overrides.pop("bn_momentum")
        raise SpecError(f"bn_momentum={momentum!r} is not allowed: bn_momentum must be None (BatchNorm's is torch's "
                        "0.1; set it on the built model's BatchNorm2d modules)")  # fmt: skip


def _create_with_weights(name_or_spec: str | ModelSpec, path: Any, overrides: dict[str, Any]) -> MobileNetV1:
    requested = name_or_spec if isinstance(name_or_spec, ModelSpec) else model_spec(name_or_spec)
    stated = named_resolution(name_or_spec) if isinstance(name_or_spec, str) else None
    if stated is not None and "resolution" not in overrides:  # resolution changes no weight (the paper's rho)
        overrides = {**overrides, "resolution": stated}  # as a fresh model of that name, and `train --init`
    saved = read_config(path)["spec"]
    arch = {k: v for k, v in overrides.items() if k in ARCHITECTURE_FIELDS}
    check_architecture(saved, requested.replace(**arch), str(path))
    if saved.name is None and "name" not in overrides:  # converted weights are unnamed: the request names them
        resolution = overrides.get("resolution", saved.resolution)
        overrides = {**overrides, "name": requested.replace(resolution=resolution).name}
    chans = overrides.pop("in_chans", saved.in_chans)
    if chans == saved.in_chans:
        return load(path, **overrides)
    return _adapted_input(path, saved, chans, overrides)


def _adapted_input(path: Any, saved: ModelSpec, in_chans: Any, overrides: dict[str, Any]) -> MobileNetV1:
    """The weights in ``path`` for ``in_chans`` input channels, as timm's ``pretrained=True, in_chans=N``: the stem's
    weights adapted (`layers.adapt_input_conv`: summed for one channel), mean and std with them
    (`spec.per_channel`: averaged); a mean or std given must be those."""
    adapted = saved.replace(in_chans=in_chans)  # validated: in_chans=0 is named here
    stats = {k: overrides.pop(k) for k in ("mean", "std") if k in overrides}
    check_weight_overrides(adapted, stats, str(path))
    model = load(path, **overrides)
    state = model.state_dict()
    state["stem.conv.weight"] = adapt_input_conv(in_chans, state["stem.conv.weight"])
    new = MobileNetV1(model.spec.replace(in_chans=in_chans))
    new.load_state_dict(state)
    return new.eval()


def _register_defaults() -> None:
    for alpha in PAPER_ALPHAS:
        for res in PAPER_RESOLUTIONS:
            name = grid_name(alpha, res)
            register_model(name, lambda a=alpha, r=res, n=name: ModelSpec(alpha=a, resolution=r, name=n))
    register_model("mobilenet_v1_shallow", lambda: ModelSpec(variant="shallow", name="mobilenet_v1_shallow"))
    register_model("mobilenet_v1_conv", lambda: ModelSpec(variant="conv", name="mobilenet_v1_conv"))


_register_defaults()


def mobilenet_v1_100(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """1.0 MobileNet-224 (paper Table 6/7 first row): 569M MACs, 4.2M parameters."""
    return create_model("mobilenet_v1_100", **overrides)


def mobilenet_v1_075(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """0.75 MobileNet-224 (paper Table 6): 325M MACs, 2.6M parameters."""
    return create_model("mobilenet_v1_075", **overrides)


def mobilenet_v1_050(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """0.5 MobileNet-224 (paper Table 6): 149M MACs, 1.3M parameters."""
    return create_model("mobilenet_v1_050", **overrides)


def mobilenet_v1_025(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """0.25 MobileNet-224 (paper Table 6): 41M MACs, 0.5M parameters."""
    return create_model("mobilenet_v1_025", **overrides)


def mobilenet_v1_shallow(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """Shallow MobileNet (paper Table 5): Table 1 without the five 14x14x512 blocks; 307M MACs, 2.9M params."""
    return create_model("mobilenet_v1_shallow", **overrides)


def mobilenet_v1_conv(**overrides: Any) -> MobileNetV1 | FeatureMaps:
    """Conv MobileNet (paper Table 4): full 3x3 convolutions instead of depthwise separable; 4866M MACs, 29.3M."""
    return create_model("mobilenet_v1_conv", **overrides)
