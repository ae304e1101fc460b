"""The TFLite reference interpreter (ai-edge-litert) as an oracle for converted models, and the shared uint8 crops.

Both sides see the same uint8 pixels: the eval transform's resize + center crop is done once in uint8; the
interpreter takes them as they are (NHWC), our model takes them through the spec's mean/std. Agreement is counted
two ways: strict (our argmax == the interpreter's argmax, which picks the lowest index among tied uint8 scores) and
tie-aware (our top-1 is one of the classes tied for the interpreter's top uint8 score; its output is quantized in
steps of 1/256, so several classes can share the top score).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2

from ..mobilenet_v1 import MobileNetV1
from ..preprocess import read_image
from ..spec import ModelSpec


def uint8_crops(paths: Sequence[str | os.PathLike], spec: ModelSpec) -> torch.Tensor:
    """(N, 3, R, R) uint8: shorter side resized to R / crop_pct, center crop R (the eval transform before scaling)."""
    res = spec.resolution
    crop = v2.Compose(
        [
            v2.Resize(int(res / spec.crop_pct), interpolation=InterpolationMode(spec.interpolation), antialias=True),
            v2.CenterCrop(res),
        ]
    )
    return torch.stack([crop(read_image(p)) for p in paths])


def normalize(u8: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (u8.to(torch.float32) / 255.0 - mean) / std


def interpreter_outputs(
    path: str | os.PathLike, u8: torch.Tensor, *, threads: int = 1, preserve: bool = False
) -> tuple[np.ndarray, object]:
    """The interpreter's dequantized output (N, classes) for uint8 NCHW images, and the interpreter itself."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path), num_threads=threads, experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = out["quantization"]
    rows = []
    for image in u8:
        it.set_tensor(inp["index"], image.permute(1, 2, 0).unsqueeze(0).numpy())
        it.invoke()
        q = it.get_tensor(out["index"])[0].astype(np.float32)
        rows.append((q - zero) * scale if scale else q)
    return np.stack(rows), it


@contextlib.contextmanager
def uint8_activations(model: MobileNetV1, path: str | os.PathLike) -> Iterator[None]:
    """Within the block, round every conv output, the pooled features and the logits of a model converted from the
    uint8 TFLite file ``path`` to that file's uint8 grid (scale, zero point), as the interpreter does.

    An experiment, not a deployment mode: it shows how much of the float model's difference from the interpreter
    is the interpreter's activation rounding (rounding half to even here vs TFLite's fixed-point arithmetic).
    """
    from .from_tflite import read_tflite

    layers = read_tflite(path).layers
    convs = [model.stem] + [m for b in model.blocks for m in (b.dw, b.pw)]
    targets = [*convs, model.global_pool, model.classifier]
    quants = [layer.out_quant for layer in layers[:-1]] + [layers[-2].out_quant, layers[-1].out_quant]
    if len(quants) != len(targets) or any(s is None for s, _ in quants):
        raise ValueError(f"{path}: not a uint8 MobileNetV1 TFLite file matching this model")

    def hook(scale: float, zero: int):
        def fake_quant(_module, _inputs, out):
            return (torch.clamp(torch.round(out / scale) + zero, 0, 255) - zero) * scale

        return fake_quant

    handles = [m.register_forward_hook(hook(s, z)) for m, (s, z) in zip(targets, quants, strict=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Strict and tie-aware top-1 agreement, max and mean (over images) of the max probability difference."""
    top = ours.argmax(1)
    tied = reference[np.arange(len(top)), top] == reference.max(1)
    diff = np.abs(ours - reference).max(1)
    return {
        "top1_agreement": float((top == reference.argmax(1)).mean()),
        "top1_agreement_tie_aware": float(tied.mean()),
        "prob_diff_max": float(diff.max()),
        "prob_diff_mean": float(diff.mean()),
    }
