"""Import timm ``mobilenetv1_100`` / ``mobilenetv1_125`` state dicts (`.pth`/`.pt`/`.bin` or `.safetensors`).

timm builds MobileNetV1 as an EfficientNet-style net (timm/models/efficientnet.py ``_gen_mobilenet_v1``): keys
``conv_stem.weight`` + ``bn1.*``, then ``blocks.{stage}.{i}.conv_dw.weight`` + ``.bn1.*`` and ``.conv_pw.weight`` +
``.bn2.*`` (stages of 1, 2, 2, 6, 2 blocks = Table 1's 13 rows in order), then ``classifier.*``. Channels are
rounded with ``round_channels`` (multiple of 8, at least 90% of c * alpha), which our ``channel_divisor=8``
reproduces; ReLU6, symmetric padding (PyTorch-style, not TF 'SAME'), BatchNorm eps 1e-5, inputs in [-1, 1]
(timm's pretrained cfgs: mean = std = 0.5, bicubic; crop_pct by model, `TIMM_CROP_PCT`).

Files are read without unpickling arbitrary objects: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..mobilenet_v1 import unprefixed  # keys of wrapped models (DDP, torch.compile), as load_state_dict
from ..weights import WeightsError
from ._common import StateBuilder, alpha_from_channels, labels_for, map_classes, spec_from, torch_or_safetensors

BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(\d+)\.conv_dw\.weight$")
# checkpoint keys holding the state dict, in the order timm's load_checkpoint prefers them (EMA weights first)
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
# crop_pct of timm's pretrained cfg, by width (mobilenetv1_100 and _100h: 0.875, mobilenetv1_125: 0.9; the
# ra4_e3600_r224_in1k weights); a state dict does not name its model, but its width does. Other widths: 0.875.
TIMM_CROP_PCT = {1.0: 0.875, 1.25: 0.9}


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A flat {name: tensor} from a torch checkpoint (weights_only) or a safetensors file, and the checkpoint key
    it was under (None: the file is the state dict); unwraps common wrappers."""
    source = str(path)
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{source}: not a readable safetensors file ({exc})") from exc
    else:
        try:
            with open(path, "rb") as f:  # a file object: torch.load hands a *.safetensors path to safetensors
                state = torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
            text = str(exc).strip()
            if "Weights only load failed" in text:  # torch's long message ends by suggesting the unsafe path
                why = "the weights-only unpickler refused it; arbitrary pickled objects are never loaded"
            else:
                why = text.splitlines()[0] if text else type(exc).__name__
            raise WeightsError(f"{source}: not a readable torch state dict ({why})") from exc
    key = next((k for k in WRAPPERS if isinstance(state, dict) and isinstance(state.get(k), dict)), None)
    state = state if key is None else state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source}: does not hold a state dict of tensors")
    return {unprefixed(k): v for k, v in state.items()}, key


def _is_safetensors(path: Path) -> bool:
    """By the first bytes (`torch_or_safetensors`, as `sniff_format`), the suffix only when they say nothing: Hub
    downloads and training scripts name files freely (a torch zip saved as .safetensors, safetensors as .bin), and
    the wrong reader's error ("header too large", "the weights-only unpickler refused it") would misdescribe it."""
    with open(path, "rb") as f:
        kind = torch_or_safetensors(f.read(9))
    return kind == "safetensors" or (kind is None and path.suffix == ".safetensors")


def import_timm(path: str | os.PathLike, *, classes: int | None = None):
    """Read a timm MobileNetV1 state dict; returns (model, extra provenance)."""
    path, source = Path(path), str(path)
    state, checkpoint_key = read_state(path)
    if "conv_stem.weight" not in state:
        raise WeightsError(
            f"{source}: no 'conv_stem.weight': not a timm MobileNetV1 state dict "
            f"(first key {next(iter(state), None)!r})"
        )
    blocks = sorted((int(m.group(1)), int(m.group(2))) for k in state if (m := BLOCK_KEY.match(k)))
    if len(blocks) != 13:
        raise WeightsError(f"{source}: {len(blocks)} depthwise blocks, a MobileNetV1 has 13 (is it a MobileNetV1?)")
    last = state[f"blocks.{blocks[-1][0]}.{blocks[-1][1]}.conv_pw.weight"]
    head = state.get("classifier.weight")
    num_classes = 0 if head is None else head.shape[0]
    if classes is not None and head is None:
        raise WeightsError(f"{source}: has no classifier (num_classes=0); it cannot give {classes} classes")
    if classes is not None:
        num_classes = classes
    alpha = alpha_from_channels(last.shape[0], source, "the last conv_pw")
    spec = spec_from(
        source,
        alpha=alpha,
        act="relu6",
        channel_divisor=8,
        bn_eps=1e-5,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        crop_pct=TIMM_CROP_PCT.get(alpha, 0.875),
        interpolation="bicubic",
    )
    b = StateBuilder(spec, source)
    used = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise WeightsError(f"{source}: tensor {key!r} is missing")
        used.add(key)
        return state[key]

    def conv_bn(prefix: str, conv: str, bn: str) -> None:
        b.put(f"{prefix}.conv.weight", take(f"{conv}.weight"), f"{conv}.weight")
        fields = [take(f"{bn}.{f}") for f in ("weight", "bias", "running_mean", "running_var")]
        b.put_bn(f"{prefix}.bn", *fields, bn)
        used.add(f"{bn}.num_batches_tracked")

    conv_bn("stem", "conv_stem", "bn1")
    for i, (s, j) in enumerate(blocks):
        conv_bn(f"blocks.{i}.dw", f"blocks.{s}.{j}.conv_dw", f"blocks.{s}.{j}.bn1")
        conv_bn(f"blocks.{i}.pw", f"blocks.{s}.{j}.conv_pw", f"blocks.{s}.{j}.bn2")
    if head is not None and num_classes:
        w, bias = map_classes(take("classifier.weight"), take("classifier.bias"), classes, source)
        b.put("classifier.weight", w, "classifier.weight")
        b.put("classifier.bias", bias, "classifier.bias")
    else:
        used.update({"classifier.weight", "classifier.bias"})
    # the first layer weight is named (conv_head.weight, not its BN's buffers): safetensors files keep no key
    # order of the model's, so file order alone named 'bn2.num_batches_tracked' for mobilenetv1_100h
    extra_keys = sorted((k for k in state if k not in used), key=lambda k: state[k].ndim < 2)
    if extra_keys:
        raise WeightsError(
            f"{source}: unexpected tensor {extra_keys[0]!r} ({len(extra_keys)} in all): not a plain timm MobileNetV1 "
            "(e.g. mobilenetv1_100h's conv_head is not part of the paper's network)"
        )
    return b.finish(), {"timm": {"checkpoint_key": checkpoint_key, "blocks": [f"{s}.{j}" for s, j in blocks]}}
