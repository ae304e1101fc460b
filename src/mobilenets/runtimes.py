"""Inference runtimes behind one interface: ``runner(x: np.ndarray NCHW float32) -> np.ndarray``.

``torch`` (eager fp32, optional channels_last), ``compile`` (torch.compile), ``ort`` (ONNX Runtime, full graph
optimisation), ``openvino`` (optional package). Every runner honours ``threads`` (intra-op threads).
A runtime whose package is missing raises `RuntimeUnavailable` with a one-line reason.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .mobilenet_v1 import MobileNetV1

RUNTIMES = ("torch", "compile", "ort", "openvino")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here (package missing, no GPU...)."""


@dataclass
class Runner:
    name: str
    fn: Any
    info: dict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def torch_runner(
    model: MobileNetV1, *, threads: int | None = None, channels_last: bool = False, compile: bool = False
) -> Runner:
    if threads:
        torch.set_num_threads(threads)
    net = model.fuse()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net = torch.compile(net)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(x).contiguous(memory_format=fmt)).numpy()

    name = "compile" if compile else "torch"
    return Runner(
        name,
        run,
        {
            "runtime": name,
            "version": torch.__version__,
            "layout": "NHWC" if channels_last else "NCHW",
            "dtype": "fp32",
            "threads": torch.get_num_threads(),
        },
    )


def ort_runner(onnx_path: str | os.PathLike, *, threads: int | None = None) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailable(f"onnxruntime is not installed ({exc})") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]

    return Runner(
        "ort",
        run,
        {
            "runtime": "ort",
            "version": ort.__version__,
            "layout": "NCHW",
            "dtype": "fp32",
            "threads": threads or 0,
            "session": sess,
        },
    )


def openvino_runner(onnx_path: str | os.PathLike, *, threads: int | None = None, precision: str = "f32") -> Runner:
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeUnavailable(f"openvino is not installed (pip install 'mobilenets[openvino]'): {exc}") from exc
    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x})[compiled.output(0)]

    return Runner(
        "openvino",
        run,
        {
            "runtime": "openvino",
            "version": ov.__version__,
            "layout": "NCHW",
            "dtype": precision,
            "threads": threads or 0,
        },
    )


def make_runner(
    model: MobileNetV1 | None = None,
    runtime: str = "torch",
    *,
    onnx_path: str | os.PathLike | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> Runner:
    """A runner for ``runtime``; ONNX runtimes export ``model`` to a temporary file unless ``onnx_path`` is given."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not allowed: runtime must be one of {', '.join(RUNTIMES)}")
    if runtime in ("torch", "compile"):
        if model is None:
            raise ValueError(f"runtime {runtime!r} needs a PyTorch model, not only an ONNX file")
        return torch_runner(model, threads=threads, compile=runtime == "compile", **kwargs)
    if onnx_path is None:
        from .export import export_onnx

        if model is None:
            raise ValueError("make_runner needs a model or an onnx_path")
        onnx_path = Path(tempfile.mkdtemp(prefix="mobilenets-")) / "model.onnx"
        export_onnx(model, onnx_path)
    maker = ort_runner if runtime == "ort" else openvino_runner
    return maker(onnx_path, threads=threads, **kwargs)
