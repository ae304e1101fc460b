"""Inference runtimes behind one interface: ``runner(x: np.ndarray NCHW float32) -> np.ndarray``.

Runtime names (`RUNTIMES`, each described by a `RuntimeInfo`):

- ``torch``: PyTorch eager fp32, BatchNorm folded, NCHW; ``torch-cl``: the same in channels_last (NHWC) layout.
- ``compile``: ``torch.compile`` of the folded model in channels_last with inductor "freezing" (weights become
  constants, so convolutions get prepacked oneDNN weights: the PyTorch CPU-inference recipe); committed here for
  1.0-224, 1 thread: 21.47 ms against eager's 24.39 ms in the grid run (0.88x), but 21.44 ms against 20.20 ms when
  timed alternately (results/bench-amd-epyc-2c-*.json, results/ours-vs-timm-amd-epyc-2c-t1+2.json).
- ``ort``: ONNX Runtime fp32, full graph optimisation (``ORT_ENABLE_ALL``), CPU execution provider.
- ``openvino`` / ``openvino-bf16``: OpenVINO CPU plugin with ``INFERENCE_PRECISION_HINT`` f32 / bf16 (bf16 only
  where the CPU has AVX512_BF16 or AMX; elsewhere OpenVINO would silently run f32, so we refuse instead), compiled
  once per input shape with that shape static (a dynamic batch axis costs it 5-9% at batch 1).
- ``ort-int8`` / ``openvino-int8``: an INT8 QDQ ONNX graph, the model quantized by `export.quantize` (static, per
  channel, calibrated on synthetic batches: it times the graph, it does not score it), or the INT8 ONNX file that
  ``onnx_path`` names (`mobilenets export --int8` with real calibration images), which any runner accepts as is.
- ``cuda`` / ``cuda-bf16`` / ``cuda-fp16``: PyTorch on the GPU, BN folded, channels_last, eager (cuDNN) or another
  backend of `gpu.fast_inference` (``backend``: compile, triton), captured once in a CUDA graph (replayed per call, so
  Python launch overhead is paid once), when CUDA is present. A call copies the numpy batch in and the logits out;
  the runner's ``resident`` form times the model on a batch already on the GPU.

Every runner honours ``threads`` (intra-op threads; the GPU ignores it) without changing the process's settings: ONNX
Runtime and OpenVINO take it per session, and PyTorch, which has only the process-wide ``torch.set_num_threads``,
gets it for the duration of each call (`torch_threads`). A runtime that cannot run here raises
`RuntimeUnavailable` with a one-line reason; callers skip it with that note.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .mobilenet_v1 import MobileNetV1


@dataclass(frozen=True)
class RuntimeInfo:
    """What a runtime name means: which engine, its compute dtype and tensor layout, and where it runs."""

    name: str
    engine: str  # torch | ort | openvino | cuda
    dtype: str  # fp32 | bf16 | fp16 | int8
    layout: str  # NCHW | NHWC
    device: str = "cpu"
    onnx: bool = False  # runs from an ONNX file (so its weights size on disk is the ONNX file's)


RUNTIME_INFO: dict[str, RuntimeInfo] = {
    r.name: r
    for r in (
        RuntimeInfo("torch", "torch", "fp32", "NCHW"),
        RuntimeInfo("torch-cl", "torch", "fp32", "NHWC"),
        RuntimeInfo("compile", "torch", "fp32", "NHWC"),
        RuntimeInfo("ort", "ort", "fp32", "NCHW", onnx=True),
        RuntimeInfo("openvino", "openvino", "fp32", "NCHW", onnx=True),
        RuntimeInfo("openvino-bf16", "openvino", "bf16", "NCHW", onnx=True),
        RuntimeInfo("ort-int8", "ort", "int8", "NCHW", onnx=True),
        RuntimeInfo("openvino-int8", "openvino", "int8", "NCHW", onnx=True),
        RuntimeInfo("cuda", "cuda", "fp32", "NHWC", device="cuda"),
        RuntimeInfo("cuda-bf16", "cuda", "bf16", "NHWC", device="cuda"),
        RuntimeInfo("cuda-fp16", "cuda", "fp16", "NHWC", device="cuda"),
    )
}
RUNTIMES = tuple(RUNTIME_INFO)
CPU_RUNTIMES = tuple(n for n, r in RUNTIME_INFO.items() if r.device == "cpu")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here (package missing, no GPU, no bf16 in this CPU, no INT8 quantizer...)."""


class ModelLoadError(ValueError):
    """An ONNX file that parses but that the runtime refuses to load (an operator it lacks, a missing external-data
    file copied without its model, a graph of the wrong types); the message names the file, the runtime and its
    reason in one line. These were tracebacks from inside ONNX Runtime / OpenVINO."""

    def __init__(self, path: str | os.PathLike, runtime: str, exc: BaseException) -> None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if "Summary:" in lines:  # OpenVINO's conversion report: the summary's lines name the operators
            lines = ["; ".join(line.removeprefix("-- ") for line in lines[lines.index("Summary:") + 1 :])]
        reason = lines[-1] if lines else type(exc).__name__  # ONNX Runtime: one line; OpenVINO: its last says why
        super().__init__(f"{path}: {runtime} cannot load this ONNX file ({reason})")


@dataclass
class Runner:
    name: str
    fn: Any
    info: dict
    # GPU runtimes: ``resident(x)`` uploads ``x`` once and returns a call that runs the model on it and waits for the
    # result without copying it back, so throughput can be timed apart from host-device transfers
    resident: Any = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def check_runtime(runtime: str) -> RuntimeInfo:
    if runtime not in RUNTIME_INFO:
        raise ValueError(f"runtime={runtime!r} is not allowed: runtime must be one of {', '.join(RUNTIMES)}")
    return RUNTIME_INFO[runtime]


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the caller's count restored after it (None: unchanged).

    torch has no per-module thread setting, only this process-wide one. A switch is not free (the next op may wait
    for OpenMP to rebuild its thread team); when the count is already ``threads`` the block costs nothing, so
    `bench` and `infer.stream` hold the count around their loops."""
    old = torch.get_num_threads()
    if not threads or threads == old:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_runner(
    model: MobileNetV1, *, threads: int | None = None, channels_last: bool = False, compile: bool = False
) -> Runner:
    """PyTorch eager (or ``compile``) on the CPU; ``threads`` applies to each call only (`torch_threads`)."""
    net = model.fuse()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net = torch.compile(net, options={"freezing": True})
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        with torch_threads(threads):
            return net(torch.from_numpy(x).contiguous(memory_format=fmt)).numpy()

    name = "compile" if compile else "torch-cl" if channels_last else "torch"
    return Runner(
        name,
        run,
        {
            "runtime": name,
            "version": torch.__version__,
            "layout": "NHWC" if channels_last else "NCHW",
            "dtype": "fp32",
            "threads": threads or torch.get_num_threads(),
        },
    )


def cuda_runner(model: MobileNetV1, *, dtype: str = "fp32", graphs: bool = True, backend: str = "eager") -> Runner:
    """The CUDA fast path (`gpu.fast_inference`): BN folded, channels_last, ``dtype``, one of its backends. On the
    fourth H200 lease (results/gpu-vs-timm-NVIDIA_H200-2026-11-27c.json, 1.0-224, bf16), as CUDA graphs at batch 1,
    ``compile`` took 0.143 ms, ``eager`` 0.218 and the Triton kernels 0.251; at batch 256 the Triton kernels ran at
    105.4k img/s, against 65.4k compiled and 34.5k eager. ``eager``, the default, needs no compile: ``compile`` costs
    an Inductor compile (seconds to tens of seconds) per model and batch size (it runs in Inductor's default mode,
    shapes static). With ``graphs`` each input shape is captured once in a CUDA graph (`gpu.CudaGraphRunner`) and
    replayed per call; a shape whose capture fails, or whose replay differs from the direct call (checked once at
    capture), runs launch by launch, noted in
    ``info["cuda_graph_failed"]``.

    Calling the runner copies the numpy batch to the GPU and the logits back (what a caller holding host images pays);
    its ``resident`` variant keeps the batch on the GPU, which is what the bench's throughput column times."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailable("CUDA is not available (no GPU or a CPU-only torch build)")
    from .gpu import CudaGraphRunner, fast_inference

    net = fast_inference(model, backend=backend, dtype=dtype, device="cuda", compile_mode="default")
    graphs_by_shape: dict[tuple, Any] = {}
    info: dict[str, Any] = {}

    def forward(xt: torch.Tensor) -> torch.Tensor:
        if not graphs:
            return net(xt)
        shape = tuple(xt.shape)
        if shape not in graphs_by_shape:
            try:
                graphs_by_shape[shape] = CudaGraphRunner(net, xt)
            except RuntimeError as exc:  # a backend that cannot be captured still runs, launch by launch
                graphs_by_shape[shape] = net
                info.setdefault("cuda_graph_failed", {})[str(shape)] = str(exc).splitlines()[0][:200]
        return graphs_by_shape[shape](xt)

    def run(x: np.ndarray) -> np.ndarray:
        return forward(torch.from_numpy(x).to("cuda", non_blocking=True)).float().cpu().numpy()  # .cpu() waits

    def resident(x: np.ndarray):
        xt = torch.from_numpy(x).to("cuda")

        def call() -> None:
            forward(xt)
            torch.cuda.synchronize()

        return call

    name = "cuda" if dtype == "fp32" else f"cuda-{dtype}"
    info |= {
        "runtime": name,
        "version": torch.__version__,
        "layout": "NHWC",
        "dtype": dtype,
        "threads": 0,
        "device": torch.cuda.get_device_name(0),
        "cuda_graphs": graphs,
        "backend": backend,
    }
    return Runner(name, run, info, resident=resident)


def set_ort_threads(opts: Any, threads: int | None) -> Any:
    """``threads`` intra-op threads and one inter-op thread on ONNX Runtime session options ``opts`` (returned); None
    leaves ORT's defaults. Our graphs are one chain of ops, so inter-op threads would only wait: the one rule for
    every session we make (`ort_runner`, export's checks and calibration, bench's matmul probe)."""
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return opts


def ort_runner(onnx_path: str | os.PathLike, *, threads: int | None = None, dtype: str | None = None) -> Runner:
    """ONNX Runtime on the CPU; ``dtype`` defaults to the file's ``precision`` metadata (our exports), else fp32."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailable(f"onnxruntime is not installed ({exc})") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    set_ort_threads(opts, threads)
    try:
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own exceptions derive from Exception only (InvalidGraph, Fail, ...)
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        raise ModelLoadError(onnx_path, "ONNX Runtime", exc) from exc
    name = sess.get_inputs()[0].name
    dtype = dtype or sess.get_modelmeta().custom_metadata_map.get("precision", "fp32")

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]

    runtime = "ort" if dtype == "fp32" else f"ort-{dtype}"
    return Runner(
        runtime,
        run,
        {
            "runtime": runtime,
            "version": ort.__version__,
            "layout": "NCHW",
            "dtype": dtype,
            "threads": threads or 0,
            "session": sess,
        },
    )


def openvino_runner(
    onnx_path: str | os.PathLike, *, threads: int | None = None, precision: str = "f32", dtype: str | None = None
) -> Runner:
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeUnavailable(f"openvino is not installed (pip install 'mobilenets[openvino]'): {exc}") from exc
    if precision == "bf16" and not cpu_has_bf16():
        raise RuntimeUnavailable("this CPU has no AVX512_BF16/AMX: OpenVINO would run f32 instead of bf16")
    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        graph = core.read_model(str(onnx_path))  # in memory: the caller may delete the file once the runner is built
    except RuntimeError as exc:  # OpenVINO's conversion and file errors
        raise ModelLoadError(onnx_path, "OpenVINO", exc) from exc
    compiled: dict[tuple, Any] = {}  # input shape -> (compiled model, its infer request)

    def request_for(shape: tuple) -> tuple[Any, Any]:
        """The model compiled for this input shape: our exports have a dynamic batch axis, and OpenVINO's CPU
        plugin runs a dynamic-shape model 5-9% slower at batch 1 than the same model reshaped to a static shape
        (0.25-128 and 0.5-160, 1 thread, timed alternately), so each shape gets its own static compile."""
        if shape not in compiled:
            static, wanted = graph.clone(), ov.PartialShape(list(shape))
            takes = static.input(0).get_partial_shape()
            if not takes.compatible(wanted):  # OpenVINO itself answers such an input with an empty array, silently
                raise ValueError(f"input shape {tuple(shape)} is not allowed: {onnx_path} takes {takes}")
            try:  # an operator read_model took but shape inference or the CPU plugin refuses: met at the first call
                static.reshape({static.input(0).get_any_name(): wanted})
                model = core.compile_model(static, "CPU", config)
            except RuntimeError as exc:
                raise ModelLoadError(onnx_path, "OpenVINO", exc) from exc
            compiled[shape] = (model, model.create_infer_request())
        return compiled[shape]

    def run(x: np.ndarray) -> np.ndarray:
        model, request = request_for(x.shape)
        return request.infer({0: x})[model.output(0)]

    dtype = dtype or {"f32": "fp32", "bf16": "bf16"}.get(precision, precision)
    runtime = "openvino" if dtype == "fp32" else f"openvino-{dtype}"
    return Runner(
        runtime,
        run,
        {"runtime": runtime, "version": ov.__version__, "layout": "NCHW", "dtype": dtype, "threads": threads or 0,
         "compiled": compiled},
    )  # fmt: skip


def int8_onnx(model: MobileNetV1, path: str | os.PathLike, runtime: str = "ort-int8") -> Path:
    """Quantize ``model`` to an INT8 QDQ ONNX file with `export.quantize` (synthetic calibration: for timing).

    ONNX Runtime runs the first two convs faster in fp32 (its INT8 kernels are slow at 3-8 channels: export.py's
    ``fp32_head``); OpenVINO is fastest with every conv quantized (results/int8-amd-epyc-b1-t1.md), so it gets that.
    """
    from . import export

    try:
        import onnxruntime.quantization  # noqa: F401  (export.quantize's quantizer)
    except ImportError as exc:
        raise RuntimeUnavailable(f"{runtime}: onnxruntime.quantization cannot be imported ({exc})") from exc
    return export.quantize(model, path, fp32_head=int8_fp32_head(runtime))


def int8_fp32_head(runtime: str) -> int:
    """Leading convs the INT8 export for ``runtime`` keeps fp32 (`int8_onnx`): none for OpenVINO, else export.py's
    ``FP32_HEAD``."""
    from .export import FP32_HEAD

    info = RUNTIME_INFO.get(runtime)
    return 0 if info is not None and info.engine == "openvino" else FP32_HEAD


def model_onnx(model: MobileNetV1 | None, runtime: str, onnx_path: str | os.PathLike | None) -> Path:
    """The ONNX file a runtime runs: ``onnx_path`` as given, else ``model`` exported (fp32) or quantized (int8)."""
    if onnx_path is not None:
        return Path(onnx_path)
    if model is None:
        raise ValueError(f"runtime {runtime!r} needs a model or an onnx_path")
    path = Path(tempfile.mkdtemp(prefix="mobilenets-")) / "model.onnx"
    if RUNTIME_INFO[runtime].dtype == "int8":
        return int8_onnx(model, path, runtime)
    from .export import export_onnx

    return export_onnx(model, path)


def make_runner(
    model: MobileNetV1 | None = None,
    runtime: str = "torch",
    *,
    onnx_path: str | os.PathLike | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> Runner:
    """A runner for ``runtime``; ONNX runtimes export ``model`` to a temporary file unless ``onnx_path`` is given."""
    info = check_runtime(runtime)
    if info.engine in ("torch", "cuda"):
        if model is None:
            raise ValueError(f"runtime {runtime!r} needs a PyTorch model, not only an ONNX file")
        if info.engine == "cuda":
            return cuda_runner(model, dtype=info.dtype, **kwargs)
        kwargs.setdefault("channels_last", runtime in ("torch-cl", "compile"))
        return torch_runner(model, threads=threads, compile=runtime == "compile", **kwargs)
    if runtime == "openvino-bf16" and not cpu_has_bf16():  # before exporting: the refusal is cheap
        raise RuntimeUnavailable("this CPU has no AVX512_BF16/AMX: OpenVINO would run f32 instead of bf16")
    path = model_onnx(model, runtime, onnx_path)
    try:
        if info.engine == "ort":
            return ort_runner(path, threads=threads, dtype=info.dtype, **kwargs)
        precision = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[info.dtype]  # int8: QDQ decides, f32 elsewhere
        return openvino_runner(path, threads=threads, precision=precision, dtype=info.dtype, **kwargs)
    finally:
        if onnx_path is None:  # our temporary export: both runtimes hold the graph in memory once built
            shutil.rmtree(path.parent, ignore_errors=True)
