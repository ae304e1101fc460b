"""MobileNetV1 (Howard et al. 2017, arXiv 1704.04861): the paper's Table 1 as data, and the model built from it.

The same layer plan (`build_plan`) drives the PyTorch module here and the analytic cost model in `complexity.py`,
so the two cannot disagree about the architecture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import ConvBNAct, DepthwiseSeparable, fold_bn
from .spec import ModelSpec, SpecError, bad_value

# Paper Table 1, "MobileNet Body Architecture", at alpha = 1.
# Stem: "Conv / s2, 3 x 3 x 3 x 32".
STEM_KERNEL, STEM_STRIDE, STEM_CHANNELS = 3, 2, 32

# Body: one row per depthwise separable layer = "Conv dw / s{stride}, 3x3" followed by "Conv / s1, 1x1 -> channels".
# Columns: (depthwise stride, pointwise output channels).
MOBILENET_V1_BODY: tuple[tuple[int, int], ...] = (
    (1, 64),  # 112x112x32  -> 112x112x64
    (2, 128),  # 112x112x64  -> 56x56x128
    (1, 128),  # 56x56x128   -> 56x56x128
    (2, 256),  # 56x56x128   -> 28x28x256
    (1, 256),  # 28x28x256   -> 28x28x256
    (2, 512),  # 28x28x256   -> 14x14x512
    (1, 512),  # "5x" 14x14x512 blocks, 1 of 5
    (1, 512),  # 2 of 5
    (1, 512),  # 3 of 5
    (1, 512),  # 4 of 5
    (1, 512),  # 5 of 5
    (2, 1024),  # 14x14x512   -> 7x7x1024
    (1, 1024),  # 7x7x1024    -> 7x7x1024. Table 1 prints "Conv dw / s2" here; every implementation (TF-slim,
    #             Keras, timm) uses s1, and Table 1's own next row (7x7 input to the 7x7 avg pool) requires s1.
)

# Paper Table 5 "Shallow MobileNet": Table 1 without the five 14x14x512 separable blocks (rows 6..10 above).
SHALLOW_REMOVED_ROWS = range(6, 11)


def round_channels(channels: int, alpha: float, *, min_channels: int = 8, divisor: int = 1) -> int:
    """Apply the width multiplier alpha (paper Section 3.3) to a layer's channel count. The one place it happens.

    divisor == 1 (default): TF-slim's rule ``max(int(channels * alpha), min_depth)`` (mobilenet_v1.py ``depth()``),
    also Keras applications' ``int(filters * alpha)``; it reproduces the paper's and the released checkpoints'
    channel counts for every alpha (e.g. alpha 0.75: 24, 48, 96, 192, 384, 768).
    divisor > 1: round to the nearest multiple of ``divisor``, never dropping below 90% of ``channels * alpha``
    (torchvision ``_make_divisible`` / timm ``make_divisible``), kept for importing timm models.
    """
    if divisor == 1:
        return max(int(channels * alpha), min_channels)
    scaled = channels * alpha
    rounded = max(min_channels, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class LayerDef:
    """One conv/fc layer of the plan. ``kind``: 'conv' (full conv), 'dw' (depthwise), 'pw' (1x1), 'fc'."""

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    table1_row: int | None = None  # index into MOBILENET_V1_BODY (None for stem and classifier)


@dataclass(frozen=True)
class Plan:
    """The layer plan of a spec: stem, blocks (each a tuple of layers), classifier (None when num_classes == 0)."""

    stem: LayerDef
    blocks: tuple[tuple[LayerDef, ...], ...]
    classifier: LayerDef | None
    num_features: int

    def layers(self) -> list[LayerDef]:
        out = [self.stem] + [layer for block in self.blocks for layer in block]
        return out + ([self.classifier] if self.classifier else [])


def body_rows(variant: str) -> list[tuple[int, int, int]]:
    """(Table 1 row index, depthwise stride, pointwise channels) for the variant's body."""
    rows = [(i, s, c) for i, (s, c) in enumerate(MOBILENET_V1_BODY)]
    if variant == "shallow":
        rows = [r for r in rows if r[0] not in SHALLOW_REMOVED_ROWS]
    return rows


def build_plan(spec: ModelSpec) -> Plan:
    """Expand a spec into layers: width multiplier, depth multiplier, variant and output stride applied here.

    Output stride follows TF-slim ``mobilenet_v1_base``: once the running stride reaches ``output_stride``, later
    strided layers get stride 1 and the following layers a dilation (atrous rate) multiplied by the skipped stride.
    """

    def ch(c: int) -> int:
        return round_channels(c, spec.alpha, min_channels=spec.min_channels, divisor=spec.channel_divisor)

    stem = LayerDef("stem", "conv", spec.in_chans, ch(STEM_CHANNELS), STEM_KERNEL, STEM_STRIDE)
    current_stride, rate = STEM_STRIDE, 1
    in_ch, blocks = stem.out_ch, []
    for i, (row, stride, out) in enumerate(body_rows(spec.variant)):
        if current_stride == spec.output_stride:
            layer_stride, layer_rate, rate = 1, rate, rate * stride
        else:
            layer_stride, layer_rate, current_stride = stride, 1, current_stride * stride
        out_ch = ch(out)
        if spec.variant == "conv":
            block = (LayerDef(f"blocks.{i}", "conv", in_ch, out_ch, 3, layer_stride, layer_rate, 1, row),)
        else:
            mid = in_ch * spec.depth_multiplier
            dw = LayerDef(f"blocks.{i}.dw", "dw", in_ch, mid, 3, layer_stride, layer_rate, in_ch, row)
            block = (dw, LayerDef(f"blocks.{i}.pw", "pw", mid, out_ch, 1, 1, 1, 1, row))
        blocks.append(block)
        in_ch = out_ch
    classifier = LayerDef("classifier", "fc", in_ch, spec.num_classes) if spec.num_classes else None
    return Plan(stem, tuple(blocks), classifier, in_ch)


def _build_layer(layer: LayerDef, spec: ModelSpec) -> ConvBNAct:
    return ConvBNAct(
        layer.in_ch,
        layer.out_ch,
        layer.kernel,
        stride=layer.stride,
        dilation=layer.dilation,
        groups=layer.groups,
        act=spec.act,
        tf_padding=spec.tf_padding,
        bn_eps=spec.bn_eps,
    )


def _build_block(block: tuple[LayerDef, ...], spec: ModelSpec) -> nn.Module:
    if len(block) == 1:  # variant "conv": a full 3x3 convolution (paper Table 4 baseline)
        return _build_layer(block[0], spec)
    dw, pw = block
    return DepthwiseSeparable(
        dw.in_ch,
        pw.out_ch,
        stride=dw.stride,
        dilation=dw.dilation,
        depth_multiplier=dw.out_ch // dw.in_ch,
        act=spec.act,
        tf_padding=spec.tf_padding,
        bn_eps=spec.bn_eps,
    )


def take_indices(n: int, indices: int | list[int] | tuple[int, ...] | None, name: str = "indices") -> list[int]:
    """Which of ``n`` feature maps to return, as timm's ``feature_take_indices``: None = all, an int k = the last k,
    a sequence = those positions (negative counts from the end); out of range is an error naming the value, as the
    keyword ``name`` the caller took it by."""
    if indices is None:
        return list(range(n))
    given, indices = indices, plain_ints(indices)  # the message names what the caller wrote: (5,), not [5]
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise SpecError(f"{name}={given!r} is not allowed: {name} must be a count in 1..{n} or a list")
        return list(range(n - indices, n))
    picked = (
        [i + n if isinstance(i, int) and i < 0 else i for i in indices] if isinstance(indices, list | tuple) else []
    )
    if not picked or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in picked):
        raise SpecError(f"{name}={given!r} is not allowed: {name} must be positions in {-n}..{n - 1}")
    return picked


def plain_ints(value):
    """NumPy / torch integers (and sequences of them) as Python ints, as timm accepts them; anything else as is."""
    import numbers

    def plain(v):
        return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v

    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return plain(value)


def feature_taps(plan: Plan) -> list[dict]:
    """The last block at each nominal stride 2/4/8/16/32, for detection/segmentation backbones (timm feature_info)."""
    taps: dict[int, dict] = {}
    nominal = actual = plan.stem.stride
    for i, block in enumerate(plan.blocks):
        nominal *= MOBILENET_V1_BODY[block[0].table1_row][0]  # the stride Table 1 gives this block
        actual *= block[0].stride  # after output_stride turned late strides into dilation
        taps[nominal] = {"module": f"blocks.{i}", "index": i, "num_chs": block[-1].out_ch, "reduction": actual}
    return [taps[s] for s in sorted(taps)]


# key prefixes of wrapped models: (Distributed)DataParallel's, AveragedModel's and torch.compile's
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# a wrapper's own entries, no weight of the model: AveragedModel's step counter beside its module.* tensors
WRAPPER_OWN_KEYS = ("n_averaged",)


def unprefixed(key: str) -> str:
    """``key`` without its `WRAPPER_PREFIXES` (repeated, for wrappers nested in either order)."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def strip_wrapper_prefixes(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with each key `unprefixed`, as timm's ``clean_state_dict`` (per key, not only when every key
    carries the prefix: ``AveragedModel``'s ``n_averaged`` sits beside its ``module.*`` tensors, and with
    ``strict=False`` an all-or-nothing rule loaded none of them without a word); its ``_metadata`` (BatchNorm's
    version, read by ``load_state_dict``) renamed alike, the wrapped model's entry over the wrapper's own.
    The wrapper's own entries (`WRAPPER_OWN_KEYS`) go, so an ``AveragedModel``'s state dict loads with
    ``strict=True``, as the README says (its ``n_averaged`` failed the default load as an unexpected key).
    ``state`` itself when no key carries a prefix."""
    if not any(k.startswith(WRAPPER_PREFIXES) for k in state):
        return state
    keys = ((unprefixed(k), v) for k, v in state.items())  # an own entry under a wrapper too: _orig_mod.n_averaged
    stripped: Any = OrderedDict((k, v) for k, v in keys if k not in WRAPPER_OWN_KEYS)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict()
        for k, v in metadata.items():  # module paths: "" (the root), "module", "module.stem"...
            name = unprefixed(k + ".")[:-1]
            if name != k or name not in stripped._metadata:
                stripped._metadata[name] = v
    return stripped


def timm_cfg(spec: ModelSpec, num_classes: int) -> dict:
    """``spec``'s input convention as timm's ``pretrained_cfg``; without it timm assumes 224 px, bicubic and
    ImageNet mean/std, wrong for converted TF weights (mean = std = 0.5)."""
    return {
        "input_size": (spec.in_chans, spec.resolution, spec.resolution),
        "interpolation": spec.interpolation,
        "mean": spec.mean,
        "std": spec.std,
        "crop_pct": spec.crop_pct,
        "crop_mode": "center",  # preprocess.py: shorter side to resolution / crop_pct, center crop
        "num_classes": num_classes,
        "first_conv": "stem.conv",
        "classifier": "classifier",
    }


# the message of BatchNorm's training-mode check (torch.nn.functional._verify_batch_size)
_ONE_VALUE = "Expected more than 1 value per channel when training"


def raise_explained(exc: ValueError, x: torch.Tensor, stride: int) -> None:
    """If ``exc`` is BatchNorm's "Expected more than 1 value per channel when training", raise it told in the user's
    terms (its traceback, deep in F.batch_norm, dropped): in training mode each BatchNorm takes statistics over
    batch x height x width, and at a batch of 1 the final feature map of an input of at most ``stride`` px a side is
    1x1 (32: CIFAR-size images). Return for any other ValueError, which the caller re-raises as it was (``raise
    ... from None`` on it erased the ``__cause__`` it was raised ``from``: a custom layer's ``raise ValueError(...)
    from err``). Under torch.compile the error is raised while Dynamo traces, outside the model's code, so it stays
    Dynamo's TorchRuntimeError quoting BatchNorm's message (`mobilenets train` refuses a batch under 2 before that)."""
    if _ONE_VALUE not in str(exc):
        return
    h, w = x.shape[-2], x.shape[-1]  # one value per channel at N x h x w: a batch of 1
    raise ValueError(
        f"batch size {x.shape[0]} at {h}x{w} px is not allowed in training mode: the final feature map is "
        f"{-(-h // stride)}x{-(-w // stride)} (stride {stride}), and BatchNorm needs more than one value per "
        f"channel; train on batches of 2 or more, or inputs over {stride} px on a side, or call model.eval() "
        "(BatchNorm then uses its running statistics)"
    ) from None


def _head_pool(kind: str) -> tuple[nn.Module, nn.Module]:
    """(global pool, flatten) of the head for ``spec.global_pool`` (spec.GLOBAL_POOLS)."""
    if kind == "":
        return nn.Identity(), nn.Identity()
    pool = nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)
    return pool, nn.Flatten(1)


class MobileNetV1(nn.Module):
    """MobileNetV1 from a `ModelSpec` (paper Table 1; Table 4 'conv' and Table 5 'shallow' variants).

    ``MobileNetV1(alpha=0.5, num_classes=10)`` or ``MobileNetV1(spec)``; every keyword is a `ModelSpec` field.
    Any input of at least 32x32 pixels works (adaptive pooling), square or not; in training mode a batch of one
    image needs more than ``output_stride`` px on a side (`raise_explained`).

    ``torch.export`` with a dynamic height and width: from 33 px, ``Dim("h", min=33)``, as at 32 or less the final
    map is 1x1, a size torch.export specialises (its error names a guard ending ``// 32)) != 1``). With
    ``tf_padding=True`` the 'SAME' padding of each strided layer depends on its input's parity, which torch.export
    cannot prove for any range of a free size (its error is a page of nested ``sym_max``, whatever the minimum):
    declare the sizes multiples of the output stride, ``32 * Dim("h", min=2)``, and every padding is known.
    """

    # TorchScript reads this name; these properties are Python-side metadata
    __jit_unused_properties__ = ["num_classes", "pretrained_cfg", "default_cfg"]  # noqa: RUF012

    def __init__(self, spec: ModelSpec | None = None, /, **overrides) -> None:
        super().__init__()
        spec = ModelSpec() if spec is None else spec  # not `spec or`: MobileNetV1(0) or ({}) is no default model
        if not isinstance(spec, ModelSpec):
            raise bad_value("spec", spec, "a ModelSpec or None (create_model takes a model name)")
        spec = spec.replace(**overrides) if overrides else spec
        self.spec = spec
        plan = build_plan(spec)
        self.plan = plan
        self.stem = _build_layer(plan.stem, spec)
        self.blocks = nn.Sequential(*[_build_block(b, spec) for b in plan.blocks])
        self.num_features = plan.num_features
        self.head_hidden_size = plan.num_features  # timm's: the size forward_head(pre_logits=True) returns
        self.feature_info = feature_taps(plan)
        self.global_pool, self.flatten = _head_pool(spec.global_pool)
        self.head_drop = nn.Dropout(spec.dropout)
        self.grad_checkpointing = False
        self.classifier: nn.Module = (
            nn.Linear(self.num_features, spec.num_classes) if spec.num_classes else nn.Identity()
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's MobileNetV2/V3 initialisation, on which every recorded training run started: He normal
        with fan-out = out_channels x kernel area for every conv, the depthwise ones included (timm divides a
        depthwise conv's fan-out by its groups, which starts those weights sqrt(channels) times larger)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        """Classifier outputs (0 = no classifier: `forward` returns pooled features): the classifier's own when it
        was replaced by hand, torchvision style (``model.classifier = nn.Linear(model.num_features, 5)``, which
        leaves the spec behind; `weights.save` records the same), else the spec's."""
        head = self.classifier
        if isinstance(head, nn.Linear) and head.in_features == self.num_features:
            return head.out_features
        return 0 if isinstance(head, nn.Identity) else self.spec.num_classes

    @property
    def pretrained_cfg(self) -> dict:
        """The spec's input convention as timm's ``pretrained_cfg`` (``default_cfg``), which
        ``timm.data.resolve_model_data_config(model)`` reads (`timm_cfg`). A fresh dict: edit the spec, not this."""
        return timm_cfg(self.spec, self.num_classes)

    @property
    def default_cfg(self) -> dict:
        """timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's parameter grouping, read by its layer-wise lr decay (``create_optimizer_v2(model, layer_decay=...)``):
        the stem, then one group per separable block (Table 1 row), the classifier last. Without it timm grouped
        by top-level module, so all 13 blocks shared one learning rate. ``coarse`` groups the same (timm's flag)."""
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute each block's activations in the backward pass instead of keeping them (less
        memory, one more forward). As in timm, BatchNorm running stats are updated again by the recomputation."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the separable blocks: the unpooled final feature map (N, num_features, H/s, W/s), s the spec's
        ``output_stride`` (32 by default; 8 and 16 dilate the late blocks instead of striding)."""
        if torch.jit.is_scripting():  # TorchScript has no try, nor checkpointing
            return self.blocks(self.stem(x))
        return self._features_explained(x)

    @torch.jit.unused
    def _features_explained(self, x: torch.Tensor) -> torch.Tensor:
        """`forward_features` outside TorchScript, a BatchNorm that sees one value per channel (a batch of 1 at a
        1x1 map) named by the input's size (`raise_explained`); a try costs nothing until it catches."""
        try:
            y = self.stem(x)
            if self.grad_checkpointing:
                for block in self.blocks:
                    y = checkpoint(block, y, use_reentrant=False)
                return y
            return self.blocks(y)
        except ValueError as exc:
            raise_explained(exc, x, self.spec.output_stride)
            raise

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool (``spec.global_pool``: Table 1's 'Avg Pool' by default, or max, or none), dropout, then the
        FC classifier unless ``pre_logits``."""
        x = self.head_drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, in_chans, H, W), normalised with the spec's mean/std, H and W >= 32 -> logits
        (N, num_classes), or pooled features (N, num_features) when num_classes is 0, or the final feature map
        (N, num_features, h, w) when num_classes is 0 and global_pool is '' (Keras' pooling=None)."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's contract: ``(final feature map, [feature maps])``, or the list alone if ``intermediates_only``.

        The maps are those of ``feature_info`` (nominal strides 2, 4, 8, 16, 32; channels and actual reduction
        there). ``indices`` as timm's ``feature_take_indices``: None = all, n = the last n, a list picks (negative
        from the end). ``stop_early`` (with ``intermediates_only``) skips the blocks after the last map taken.
        ``norm`` is accepted and does nothing (MobileNetV1 has no final norm); ``output_fmt`` must be 'NCHW'.
        """
        if output_fmt != "NCHW":
            raise SpecError(f"output_fmt={output_fmt!r} is not allowed: output_fmt must be 'NCHW'")
        if stop_early and not intermediates_only:
            raise SpecError("stop_early=True is not allowed: stop_early needs intermediates_only=True")
        take = [self.feature_info[i]["index"] for i in take_indices(len(self.feature_info), indices)]
        blocks = self.blocks[: max(take) + 1] if stop_early else self.blocks
        out = []
        x = self.stem(x)
        for i, block in enumerate(blocks):
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing else block(x)
            if i in take:
                out.append(x)
        return out if intermediates_only else (x, out)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, also for the state dict of this model wrapped in (Distributed)DataParallel
        or ``AveragedModel`` (``module.`` keys) or ``torch.compile`` (``_orig_mod.``), in either nesting: what
        ``torch.save(wrapped.state_dict(), ...)`` wrote in a training script, which timm's ``load_checkpoint``
        unwraps too (`strip_wrapper_prefixes`)."""
        return super().load_state_dict(strip_wrapper_prefixes(state_dict), strict=strict, assign=assign)

    def get_classifier(self) -> nn.Module:
        """The classifier (``nn.Linear``, or ``nn.Identity`` when num_classes is 0), as timm's."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one (0 = no classifier, features out); labels are
        dropped. ``global_pool`` as timm's: None keeps the pooling ('' under a new classifier becomes 'avg'), else
        'avg', 'max' or '' (no pooling, with num_classes=0 only: the model then returns its final feature map)."""
        pool = self.spec.global_pool if global_pool is None else global_pool
        if global_pool is None and num_classes and not pool:
            pool = "avg"  # a classifier needs pooled features: the paper's head
        self.spec = self.spec.replace(num_classes=num_classes, labels=None, global_pool=pool)
        self.plan = build_plan(self.spec)
        self.set_global_pool(pool)
        p = self.stem.conv.weight
        linear = nn.Linear(self.num_features, num_classes, device=p.device, dtype=p.dtype) if num_classes else None
        self.classifier = linear if linear is not None else nn.Identity()
        if linear is not None:
            nn.init.normal_(linear.weight, 0, 0.01)
            nn.init.zeros_(linear.bias)

    def set_global_pool(self, global_pool: str) -> None:
        """Pool the head with ``global_pool`` ('avg', 'max', or '' with num_classes=0), keeping the classifier."""
        self.spec = self.spec.replace(global_pool=global_pool)
        self.global_pool, self.flatten = _head_pool(global_pool)

    def fuse(self) -> MobileNetV1:
        """An eval-mode copy with every BatchNorm folded into the preceding conv (same outputs, fewer ops)."""
        return fold_bn(self)


class FeatureInfo(list):
    """``feature_info`` of a `FeatureMaps` model: the list of dicts (module, index, num_chs, reduction), with timm's
    ``FeatureInfo`` accessors, so detection code reading ``model.feature_info.channels()`` or effdet's
    ``get_dicts(keys=[...])`` runs unchanged. Unlike timm's, it holds the maps returned only: ``idx`` counts them
    (timm's counts all five stages, whatever ``out_indices`` took)."""

    def get(self, key: str, idx: int | list[int] | tuple[int, ...] | None = None):
        if isinstance(idx, list | tuple):
            return [self[i][key] for i in idx]
        return [info[key] for info in self] if idx is None else self[idx][key]

    def get_dicts(self, keys: list[str] | None = None, idx: int | list[int] | tuple[int, ...] | None = None):
        """timm's: the dicts (copies, of ``keys`` only when given), or the one at an int ``idx``."""
        pick = (lambda d: {k: d[k] for k in keys}) if keys else dict
        if isinstance(idx, int):
            return pick(self[idx])
        return [pick(self[i]) for i in (range(len(self)) if idx is None else idx)]

    def channels(self, idx: int | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self.get("module", idx)


class FeatureMaps(nn.Module):
    """The backbone of a `MobileNetV1` returning its feature maps, as timm's ``features_only=True``:
    ``create_model(name, features_only=True, out_indices=(2, 3, 4))``. ``out_indices`` picks among the model's
    ``feature_info`` (nominal strides 2, 4, 8, 16, 32; `take_indices` rules; None = all five). The blocks after the
    last map taken are dropped, and the head with them; parameter names stay the model's (``stem.*``,
    ``blocks.N.*``), so a `MobileNetV1` state dict loads with ``strict=False``."""

    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]  # noqa: RUF012

    def __init__(self, model: MobileNetV1, out_indices: int | list[int] | tuple[int, ...] | None = None) -> None:
        super().__init__()
        picked = take_indices(len(model.feature_info), out_indices, "out_indices")
        self.spec = model.spec.replace(num_classes=0, global_pool="", labels=None)
        self.feature_info = FeatureInfo(dict(model.feature_info[i]) for i in picked)
        self.taps = [info["index"] for info in self.feature_info]
        self.stem = model.stem
        self.blocks = model.blocks[: max(self.taps) + 1]
        self.grad_checkpointing = model.grad_checkpointing
        self.train(model.training)  # create_model(weights=...) gives an eval-mode model: so its backbone

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """As `MobileNetV1.set_grad_checkpointing` (timm's feature backbones have the switch too)."""
        self.grad_checkpointing = enable

    @property
    def pretrained_cfg(self) -> dict:
        """The input convention, as `MobileNetV1.pretrained_cfg` (timm's ``resolve_model_data_config`` reads it)."""
        return timm_cfg(self.spec, 0)

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As `MobileNetV1.load_state_dict` (wrapper prefixes stripped): a classifier's state dict loads here with
        ``strict=False`` only, which would otherwise load nothing of a DDP or torch.compile model's, silently."""
        return super().load_state_dict(strip_wrapper_prefixes(state_dict), strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (N, in_chans, H, W) -> one map per ``out_indices`` entry, (N, channels, H/r, W/r) for each
        ``feature_info`` channels and reduction r."""
        if torch.jit.is_scripting():  # TorchScript has no try, not even in a branch it never takes
            return self._maps(x)
        return self._maps_explained(x)

    @torch.jit.unused
    def _maps_explained(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`_maps` outside TorchScript, as `MobileNetV1._features_explained`: a batch of 1 at a 1x1 map, named."""
        try:
            return self._maps(x)
        except ValueError as exc:
            raise_explained(exc, x, max(info["reduction"] for info in self.feature_info))
            raise

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in self.taps:
                out.append(x)
        return out
