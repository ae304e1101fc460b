"""Import Keras applications MobileNet (v1) `.h5` weight files (with or without top), read with h5py.

Layout (keras.applications.mobilenet; Keras 2 HDF5 weights, also the legacy-HDF5 files Keras 3 writes):
``conv1`` (HWIO kernel, no bias) + ``conv1_bn``; for N = 1..13 ``conv_dw_N`` (depthwise kernel H x W x C x mult)
+ ``conv_dw_N_bn`` and ``conv_pw_N`` (1 x 1 x C x O) + ``conv_pw_N_bn``; with top, ``conv_preds`` (1 x 1 x C x 1000
kernel + bias, applied after global pooling; Keras heads have no background class). BatchNorm holds gamma, beta,
moving_mean, moving_variance with Keras' epsilon 1e-3. Activations are ReLU6; inputs are x / 127.5 - 1 (mean = std
= 0.5).

Padding: Keras pads every stride-2 conv with ``ZeroPadding2D(((0, 1), (0, 1)))`` then a 'valid' conv (older
releases, such as the 2.0.4 file in shared/data, used padding='same'). For even input sizes both equal TensorFlow
'SAME' (pad total 1, all of it bottom/right), which our ``tf_padding=True`` computes; every stride-2 layer of a
MobileNetV1 sees an even size at 224, 192, 160 and 128. At odd sizes Keras' fixed (0, 1) pad and SAME differ, and we
follow SAME.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..weights import WeightsError
from ._common import StateBuilder, alpha_from_channels, labels_for, map_classes, spec_from

BLOCKS = 13
BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")


class _H5Weights:
    """Named arrays of one Keras layer group: ``get("conv1", "kernel")`` -> np.ndarray (or None)."""

    def __init__(self, root, source: str) -> None:
        self.root = root.get("model_weights", root)
        self.source = source

    def layer_names(self) -> list[str]:
        names = self.root.attrs.get("layer_names")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else list(self.root)

    def get(self, layer: str, field: str) -> np.ndarray | None:
        if layer not in self.root:
            return None
        names: list[str] = []
        self.root[layer].visit(names.append)  # e.g. "conv1/kernel:0" (Keras 2) or "kernel" (legacy h5 of Keras 3)
        found = [n for n in names if n.split("/")[-1].split(":")[0] == field]
        return np.asarray(self.root[layer][found[0]], dtype=np.float32) if found else None

    def need(self, layer: str, field: str) -> np.ndarray:
        value = self.get(layer, field)
        if value is None:
            raise WeightsError(f"{self.source}: layer {layer!r} has no {field!r} weights (not a Keras MobileNet file)")
        return value


def _resolution_from_name(path: Path) -> int:
    """Keras names its files mobilenet_{alpha}_{rows}_tf[_no_top].h5; default 224 where the name says nothing."""
    match = re.search(r"mobilenet_[0-9_]+?_(\d{3})_tf", path.name)
    return int(match.group(1)) if match else 224


def import_keras(path: str | os.PathLike, *, classes: int | None = None):
    """Read a Keras applications MobileNet .h5; returns (model, extra provenance)."""
    import h5py

    path, source = Path(path), str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"{source}: not a readable HDF5 file ({exc})") from exc
    try:
        with f:
            return _import(_H5Weights(f, source), path, source, classes)
    except (KeyError, OSError, ValueError, TypeError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{source}: corrupt or unreadable Keras weights ({type(exc).__name__}: {exc})") from exc


def _import(h5: _H5Weights, path: Path, source: str, classes: int | None):
    names = set(h5.layer_names())
    if "conv1" not in names or "conv_pw_13" not in names:
        hint = "a MobileNetV2 file" if "Conv1" in names or "block_1_expand" in names else "not a Keras MobileNet file"
        raise WeightsError(f"{source}: no layers 'conv1' ... 'conv_pw_13' ({hint}; layers: {sorted(names)[:6]} ...)")
    last = h5.need("conv_pw_13", "kernel")
    dw1 = h5.need("conv_dw_1", "depthwise_kernel")
    kernel_top = h5.get("conv_preds", "kernel")
    num_classes = 0 if kernel_top is None else kernel_top.shape[-1]
    if classes is not None and classes != num_classes:
        if kernel_top is None:
            raise WeightsError(f"{source}: has no classifier (include_top=False); it cannot give {classes} classes")
        raise WeightsError(f"{source}: has a {num_classes}-class head; cannot map it to {classes} classes")
    spec = spec_from(
        source,
        alpha=alpha_from_channels(last.shape[-1], source, "conv_pw_13"),
        resolution=_resolution_from_name(path),
        act="relu6",
        depth_multiplier=int(dw1.shape[-1]),
        tf_padding=True,
        bn_eps=1e-3,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    b = StateBuilder(spec, source)
    _conv_bn(b, h5, "stem", "conv1", "conv1_bn", "kernel")
    for i in range(BLOCKS):
        _conv_bn(b, h5, f"blocks.{i}.dw", f"conv_dw_{i + 1}", f"conv_dw_{i + 1}_bn", "depthwise_kernel")
        _conv_bn(b, h5, f"blocks.{i}.pw", f"conv_pw_{i + 1}", f"conv_pw_{i + 1}_bn", "kernel")
    if kernel_top is not None:
        w = torch.from_numpy(kernel_top).reshape(-1, kernel_top.shape[-1]).t()
        w, bias = map_classes(w, torch.from_numpy(h5.need("conv_preds", "bias")), classes, source)
        b.put("classifier.weight", w, "conv_preds/kernel")
        b.put("classifier.bias", bias, "conv_preds/bias")
    extra = {
        "keras": {
            "top": kernel_top is not None,
            "resolution_from": "file name" if "_tf" in path.name else "default 224",
        }
    }
    return b.finish(), extra


def _conv_bn(b: StateBuilder, h5: _H5Weights, prefix: str, conv: str, bn: str, field: str) -> None:
    k = torch.from_numpy(h5.need(conv, field))
    if k.ndim != 4:
        raise WeightsError(f"{h5.source}: {conv}/{field} has shape {tuple(k.shape)}, expected a 4-d kernel")
    if field == "depthwise_kernel":  # H, W, C, mult -> C * mult, 1, H, W (output channel c * mult + m, as TF)
        h, w, c, m = k.shape
        k = k.reshape(h, w, c * m).permute(2, 0, 1).unsqueeze(1)
    else:  # H, W, I, O -> O, I, H, W
        k = k.permute(3, 2, 0, 1)
    b.put(f"{prefix}.conv.weight", k, f"{conv}/{field}")
    gamma, beta, mean, var = (torch.from_numpy(h5.need(bn, f)) for f in BN_FIELDS)
    b.put_bn(f"{prefix}.bn", gamma, beta, mean, var, bn)
