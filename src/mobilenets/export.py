"""Export to ONNX (BatchNorm folded, dynamic batch axis) for ONNX Runtime / OpenVINO.

Uses torch.onnx's TorchScript-based exporter (``dynamo=False``): it needs no extra package (the dynamo exporter
needs onnxscript) and produces a plain opset-17 graph that every runtime we target reads.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .mobilenet_v1 import MobileNetV1

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(
    model: MobileNetV1,
    path: str | os.PathLike,
    *,
    resolution: int | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    fold_bn: bool = True,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically) and return the path. Input NCHW float32, RGB, normalised."""
    res = resolution or model.spec.resolution
    net = model.fuse() if fold_bn else model.eval()
    example = torch.zeros(1, model.spec.in_chans, res, res)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the input size is fixed here
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
        )
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
