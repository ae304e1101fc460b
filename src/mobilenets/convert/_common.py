"""Shared by the importers: building our state dict tensor by tensor with shape checks, identity BatchNorm for
folded (TFLite) weights, the 1001 <-> 1000 class mapping of TF-slim heads, and format sniffing."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..labels import imagenet_labels
from ..mobilenet_v1 import MobileNetV1
from ..spec import ModelSpec, SpecError
from ..weights import WeightsError, load_state_into

CONVERTER_VERSION = "1.0"


def unsupported(source: str | os.PathLike, exc: SpecError) -> WeightsError:
    """The error for weights whose shapes describe a model `ModelSpec` refuses (a 16 px input, say): the file named,
    as every other refusal of an importer names it, not a bare `SpecError`."""
    return WeightsError(f"{source}: the weights describe an unsupported model ({exc})")


def spec_from(source: str | os.PathLike, **fields) -> ModelSpec:
    """``ModelSpec(**fields)``, the model an importer read from ``source``; a refusal is `unsupported`."""
    try:
        return ModelSpec(**fields)
    except SpecError as exc:
        raise unsupported(source, exc) from exc


class StateBuilder:
    """Collects tensors for a `MobileNetV1(spec)` under our key names, checking each shape as it arrives.

    Errors name the source file, the source tensor and our target tensor, so the first mismatch is reported; the
    model is only built (`finish`) once every tensor is present, so nothing is ever loaded partially.
    """

    def __init__(self, spec: ModelSpec, source: str | os.PathLike) -> None:
        self.source = str(source)
        try:
            self.model = MobileNetV1(spec)
        except SpecError as exc:
            raise unsupported(self.source, exc) from exc
        self.shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        self.state: dict[str, torch.Tensor] = {}

    def put(self, key: str, value: torch.Tensor, src_name: str) -> None:
        if key not in self.shapes:
            raise WeightsError(f"{self.source}: {src_name} has no place in {self.describe()} (target {key!r})")
        if tuple(value.shape) != self.shapes[key]:
            raise WeightsError(
                f"{self.source}: {src_name} has shape {tuple(value.shape)} (as {key!r}), "
                f"{self.describe()} expects {self.shapes[key]}"
            )
        self.state[key] = value.detach().to(torch.float32).contiguous() if value.is_floating_point() else value

    def put_bn(self, prefix: str, gamma, beta, mean, var, src_name: str) -> None:
        for field, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            self.put(f"{prefix}.{field}", value, f"{src_name} ({field})")
        self.state[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    def put_identity_bn(self, prefix: str, bias: torch.Tensor, src_name: str) -> None:
        """A BatchNorm that computes exactly ``x + bias`` in float32, for layers whose BN is already folded.

        running_var = 1 - eps (float32) makes ``var + eps`` exactly 1.0 for eps = 1e-3 (checked in the tests), so
        ``(x - 0) / sqrt(1) * 1 + bias`` is bit-exact; the model keeps the standard ConvBNAct structure and can be
        folded again like any other. Training mode would normalise by batch statistics instead, so `mobilenets train
        --init` first gives these BNs their inputs' statistics (`trainer.restore_batchnorm_statistics`).
        """
        eps = self.model.spec.bn_eps
        n = bias.shape[0]
        var = torch.full((n,), 1.0, dtype=torch.float32) - torch.tensor(eps, dtype=torch.float32)
        self.put_bn(prefix, torch.ones(n), bias, torch.zeros(n), var, src_name)

    def describe(self) -> str:
        s = self.model.spec
        return f"MobileNetV1(alpha={s.alpha:g}, variant={s.variant}, num_classes={s.num_classes})"

    def finish(self) -> MobileNetV1:
        load_state_into(self.model, self.state, self.source)
        return self.model.eval()


def map_classes(
    weight: torch.Tensor, bias: torch.Tensor, want: int | None, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the head as it is (``want`` None or equal), or drop TF-slim's background row (1001 -> 1000)."""
    have = weight.shape[0]
    if want is None or want == have:
        return weight, bias
    if have == 1001 and want == 1000:
        return weight[1:], bias[1:]
    raise WeightsError(f"{source}: cannot map a {have}-class head to {want} classes (only 1001 -> 1000 is defined)")


def labels_for(num_classes: int) -> tuple[str, ...] | None:
    """ImageNet names for 1000-class heads, with "background" first for TF-slim's 1001-class heads."""
    if num_classes == 1000:
        return imagenet_labels()
    if num_classes == 1001:
        return imagenet_labels(background=True)
    return None


def alpha_from_channels(last_channels: int, source: str, what: str) -> float:
    """The width multiplier from the last pointwise layer's channels (1024 * alpha, Table 1's last row)."""
    alpha = round(last_channels / 1024, 4)
    if not 0 < alpha <= 2:
        raise WeightsError(f"{source}: {what} has {last_channels} channels; not a MobileNetV1 with alpha in (0, 2]")
    return alpha


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def torch_or_safetensors(head: bytes) -> str | None:
    """'torch' (a zip archive or a legacy pickle, read weights_only) or 'safetensors' (an 8-byte header length, then
    its JSON header) by a file's first bytes; None for neither."""
    if head[:2] in (b"PK", b"\x80\x02"):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def sniff_format(path: str | os.PathLike) -> str:
    """Guess 'tflite', 'keras' or 'timm' from the file's first bytes; WeightsError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:  # every format's identifier ends by byte 8: "unknown format" would send users looking for one
        raise WeightsError(f"{path}: {len(head)} bytes, too short for any weights file (empty, or cut short)")
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:8] == HDF5_MAGIC:
        return "keras"
    if torch_or_safetensors(head):
        return "timm"
    raise WeightsError(
        f"{path}: unknown weights format (not a TFLite flatbuffer, a Keras HDF5 file, a torch state dict or a "
        "safetensors file); pass --from tflite|keras|timm to force one"
    )
