"""Measure MobileNets on the device at hand: latency, throughput, memory, size, cost and expected accuracy per runtime.

Method (timm's benchmark.py and the PyTorch benchmark recipe): build the runner, call it once (``startup_s``: the
build and that first call, where torch.compile compiles; never in the latency), warm up, then time single calls with
``time.perf_counter`` (GPU runners synchronise inside the call) until ``min_runs`` calls or ``min_time`` seconds,
whichever comes first; report median, p90 and min. Throughput runs batches of ``batch`` the same way.

Peak memory: Linux-only, the process's peak resident set (``VmHWM`` in /proc/self/status) is reset before each
runner is built (writing 5 to /proc/self/clear_refs), after the files it loads are written, and ``peak_mem_MB`` =
VmHWM after building, the latency runs and the throughput runs minus the resident set before building. It counts
everything the runtime allocates (weights, arena, activations, compiled code), which tracemalloc cannot see, and not
the ONNX export or INT8 calibration that made its file (a deployment loads the file: with them, INT8 rows read
several times the fp32 rows' peak); on CUDA it is ``torch.cuda.max_memory_allocated``.
Freed heap memory is returned to the OS first (``malloc_trim``), but memory an allocator keeps cached from an earlier
model in the same process (oneDNN/inductor caches, torch's CPU allocator) can still be reused unseen, so the figure is
a lower bound; ``--models X`` with one model per process gives the absolute figure.

The FP32 physical limit of a model is 2 x MACs / peak FP32 FLOP/s of the cores used; the peak is measured by a
large single-precision matmul (`matmul_gflops`, FMA-bound: the fastest of torch's and ONNX Runtime's), per core,
times ``threads``.

Models are named (the registry, "alpha-resolution", "timm:<name>") or given by path (`ModelPath`): an ONNX file from
`mobilenets export` is timed as it is on the ONNX runtimes of its precision (as ``onnxruntime_perf_test`` times the
file it is given), a weights or training-run folder is loaded and runs everywhere a named model does.
"""

from __future__ import annotations

import difflib
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import accuracy as acc
from .atomic import atomic_write_text, check_writable, locked, not_a_file
from .complexity import count_complexity
from .cores import usable_cores
from .gpu import BACKENDS as CUDA_BACKENDS
from .progress import Lines, bar_or_lines
from .registry import PAPER_ALPHAS, PAPER_RESOLUTIONS, create_model, grid_name, model_spec
from .runtimes import RUNTIME_INFO, RuntimeUnavailable, check_runtime, make_runner, set_ort_threads, torch_threads
from .spec import ModelSpec, SpecError, on_grid

GRID = tuple(grid_name(a, r) for a in PAPER_ALPHAS for r in PAPER_RESOLUTIONS)
PEER_PREFIX = "timm:"

# Row schema of `bench`, in column order (CSV header, JSON keys). Units are in the names; *_MB are MiB (2**20 bytes).
# ``classes`` (the classifier's outputs: 1000 for a named model, a file's or folder's own) was added last, so that
# the first columns, by which a results CSV is recognised (`check_results_file`), stay those of older files; rows
# of older files lack it (merged rows, `select`'s and the plots' readers do not need it).
COLUMNS = (
    "model", "alpha", "resolution", "runtime", "dtype", "layout", "backend", "threads", "batch",
    "latency_ms_median", "latency_ms_p90", "latency_ms_min", "runs", "fps", "realtime", "target_fps",
    "throughput_ips", "startup_s", "peak_mem_MB", "weights_MB", "weights_fp32_MB", "weights_int8_MB", "file",
    "macs_M", "params_M", "top1", "top1_source", "top1_table", "top1_task", "fp32_limit_ms", "limit_fraction",
    "probe_gflops", "cpu", "cores", "gpu", "device", "torch", "onnxruntime", "openvino", "python", "commit",
    "timestamp", "classes",
)  # fmt: skip
# The printed table: resolution and classes beside the model, as a file's name says neither (an ONNX file exported
# with --dynamic-hw is timed at its recorded size; a 10-class file's row sits beside 1000-class ones).
TABLE_COLUMNS = (
    "model", "resolution", "classes", "runtime", "threads", "latency_ms_median", "latency_ms_p90", "fps", "realtime",
    "throughput_ips", "peak_mem_MB", "weights_MB", "macs_M", "top1", "top1_source", "fp32_limit_ms",
)  # fmt: skip
DEFAULT_RUNTIMES = ("torch", "ort", "openvino")
# A row's expected top-1 is of the model's fp32 weights (TF-slim's table, or the user's runs): an INT8 runtime runs
# them quantized, a bf16 or fp16 one (openvino-bf16, cuda-bf16, cuda-fp16) rounded to 8 or 11 significant bits, and
# neither top-1 is measured here, so their rows say whose top-1 it is rather than pass it off as theirs.
# (Measured on Imagenette val, 3,925 images, 1000-way, for 0.25-128 and 0.75-192: the per-channel INT8 exports were
# within 0.61 points of the fp32 top-1 and agreed with the fp32 model on 86-94% of images, per-tensor ones lost 5-7
# points; results/int8-amd-epyc-b1-t1.md.)
FP32_WEIGHTS = ", of fp32 weights"


def of_fp32_weights(dtype: str | None) -> bool:
    """Whether a runtime or row of ``dtype`` carries its fp32 weights' top-1 rather than one measured at that dtype:
    every dtype but fp32 (int8, bf16, fp16; see `FP32_WEIGHTS`). The one rule behind a row's label
    (`top1_source_for`), select's note (`select.fp32_weights_note`) and the plots' legend; a row that records no
    dtype (None) is not labelled."""
    return dtype is not None and dtype != "fp32"


def top1_source_for(source: str | None, dtype: str) -> str | None:
    """``source`` (`accuracy.AccuracyModel.predict`'s, or a run's: `accuracy.weights_run_top1`) as a row of ``dtype``
    records it: where `of_fp32_weights`, it says that the top-1 is the fp32 weights' (`FP32_WEIGHTS`); None stays
    None (no top-1)."""
    return f"{source}{FP32_WEIGHTS}" if source is not None and of_fp32_weights(dtype) else source


def top1_basis(source: str | None) -> str | None:
    """A row's ``top1_source`` without the fp32-weights label (`top1_source_for`): what the accuracy model said."""
    return source.removesuffix(FP32_WEIGHTS) if isinstance(source, str) else source


# What readers of a results file use (select's measured latencies, merging, plots): a row without one was a KeyError.
RESULT_KEYS = ("model", "alpha", "resolution", "runtime", "threads", "latency_ms_median")
# BenchConfig's sequence fields: (type of one item, its name in errors); one item given alone is a sequence of one
SEQUENCE_FIELDS = {
    "models": (str, "a model name"),
    "runtimes": (str, "a runtime name"),
    "threads": (int, "an integer"),
    "accuracy_files": ((str, os.PathLike), "a path"),
}


def as_tuple(name: str, value: Any, item: type | tuple[type, ...], what: str) -> tuple:
    """``value`` as a tuple: one ``item`` alone -> (item,), a list, tuple or other iterable -> its items."""
    if isinstance(value, item) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be {what} or a sequence of them")
    return tuple(value)


@dataclass(frozen=True)
class BenchConfig:
    """Everything `bench` measures. The CLI reads its defaults from here.

    ``models``, ``runtimes``, ``threads`` and ``accuracy_files`` are sequences; one value given alone
    (``models="0.25-128"``, ``threads=1``) is a sequence of one."""

    models: tuple[str, ...] = GRID  # registered names, "alpha-resolution" specs, or "timm:<name>" peers
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    threads: tuple[int, ...] = (1,)
    batch: int | None = None  # throughput batch: None = 32 on CPU, 256 on GPU; 0 = skip throughput
    min_runs: int = 50
    min_time: float = 2.0  # seconds
    warmup: int = 5
    target_fps: float = 24.0
    accuracy_files: tuple[str, ...] = ()
    peak_gflops: float | None = None  # per core; None = measure with `matmul_gflops`
    progress: bool = True
    cuda_backend: str = "eager"  # the cuda runtimes' `gpu.fast_inference` backend: eager | compile | triton

    def __post_init__(self) -> None:
        """Sequence fields as tuples: ``models="0.25-128"`` or ``threads=1`` mean one model, one thread count; a
        model, runtime or thread count listed twice is measured once (it was measured once per mention)."""
        for name, (item, what) in SEQUENCE_FIELDS.items():
            value = as_tuple(name, getattr(self, name), item, what)
            object.__setattr__(self, name, value if name == "accuracy_files" else tuple(dict.fromkeys(value)))

    def validate(self) -> BenchConfig:
        if not self.models:
            raise ValueError("models is empty: name at least one model")
        if not self.runtimes:
            raise ValueError("runtimes is empty: name at least one runtime")
        if not self.threads:  # `--threads ,`: it failed later as "max() arg is an empty sequence"
            raise ValueError("threads is empty: name at least one thread count")
        for name in ("models", "runtimes"):
            bad = [v for v in getattr(self, name) if not isinstance(v, str)]
            if bad:
                raise ValueError(f"{name}={bad[0]!r} is not allowed: each of {name} must be a name (str)")
        for r in self.runtimes:
            check_runtime(r)
        for name, value, ok, allowed in (
            ("threads", self.threads, all(_is_int(t) and t >= 1 for t in self.threads), "integers >= 1"),
            ("batch", self.batch, self.batch is None or self.batch >= 0, "an integer >= 0 (0 = no throughput)"),
            ("min_runs", self.min_runs, self.min_runs >= 1, "an integer >= 1"),
            ("min_time", self.min_time, self.min_time >= 0 and math.isfinite(self.min_time), "a number >= 0"),
            ("warmup", self.warmup, self.warmup >= 0, "an integer >= 0"),
            ("target_fps", self.target_fps, self.target_fps > 0 and math.isfinite(self.target_fps), "> 0"),
            (
                "cuda_backend",
                self.cuda_backend,
                self.cuda_backend in CUDA_BACKENDS,
                f"one of {', '.join(CUDA_BACKENDS)}",
            ),
        ):
            if not ok:
                raise ValueError(f"{name}={value!r} is not allowed: {name} must be {allowed}")
        cuda = any(RUNTIME_INFO[r].engine == "cuda" for r in self.runtimes)  # each checked above
        if self.cuda_backend != BenchConfig.cuda_backend and not cuda:  # it picks the cuda runtimes' backend only
            raise ValueError(
                f"cuda_backend={self.cuda_backend!r} is not allowed without a cuda runtime: it is the backend of "
                "cuda, cuda-bf16 and cuda-fp16; add one to runtimes or drop cuda_backend"
            )
        for m in self.models:
            target = resolve_model(m)  # fail before measuring anything
            reasons = [target.cannot_run(r) for r in self.runtimes] if isinstance(target, ModelPath) else [None]
            if None not in reasons:  # a file none of the runtimes runs: one line naming it, an ONNX runtime's reason
                onnx = [why for why, r in zip(reasons, self.runtimes, strict=True) if RUNTIME_INFO[r].onnx]
                raise ValueError(f"model {m!r} is not allowed with runtimes={','.join(self.runtimes)}: "
                                 f"{(onnx or reasons)[0]}")  # fmt: skip
        return self

    def throughput_batch(self, device: str) -> int:
        """``batch``, or its default on ``device`` (None: 256 on a GPU, 32 on the CPU)."""
        return self.batch if self.batch is not None else (256 if device == "cuda" else 32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- models ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPath:
    """A model given by path (`resolve_model`): an ONNX file written by `mobilenets export` (``kind`` "onnx", run as
    it is: an INT8 file is not quantized again) or a weights folder (``kind`` "weights": config.json +
    model.safetensors, a `mobilenets train` run's ``RUN/model`` when the run folder is given), whose model is built
    as a registered one is. ``spec`` is what the file says it holds (an ONNX file's metadata, its resolution the
    graph's input size: `infer.onnx_spec`, which `predict` uses too); ``precision`` is an ONNX file's (fp32 | int8,
    its metadata's, as `runtimes.ort_runner` reads it), fp32 for weights. ``run``: the top-1 a `mobilenets train` run
    measured of these very weights (its ``RUN/model`` or ``RUN/model_best``: `accuracy.weights_run_top1`), the rows'
    top-1; ``run_note``, why a run folder's summary.json gave none (one line, for bench's notes)."""

    given: str  # as the user wrote it: the rows' ``model``
    path: Path  # the .onnx file or the weights folder
    kind: str
    spec: ModelSpec
    precision: str = "fp32"
    run: acc.RunTop1 | None = None
    run_note: str = ""

    def cannot_run(self, runtime: str) -> str | None:
        """Why ``runtime`` cannot time this file (a clause naming the runtime: callers name the file), or None.

        A weights folder runs everywhere a registered model does; an ONNX file runs on the ONNX runtimes of its own
        precision only: bench times the file given, so it neither quantizes an fp32 file (that would time another
        file than the one named) nor runs an INT8 file under an fp32 runtime's name."""
        info = RUNTIME_INFO[runtime]
        if self.kind != "onnx":
            return None
        onnx_runtimes = [n for n, r in RUNTIME_INFO.items() if r.onnx and (r.dtype == "int8") == self.is_int8]
        which = f"it runs on {', '.join(onnx_runtimes)}"
        if not info.onnx:
            return (f"it is an ONNX file and {runtime} runs PyTorch models; {which} (give the weights folder it was "
                    f"exported from to time {runtime})")  # fmt: skip
        if self.is_int8 and info.dtype != "int8":
            return f"it is an INT8 export and {runtime} is not an INT8 runtime; {which}"
        if not self.is_int8 and info.dtype == "int8":
            return (f"it is an {self.precision} export and {runtime} runs INT8 files, which bench does not make of a "
                    f"given file; {which} (or export it with --int8 and bench that file)")  # fmt: skip
        return None

    @property
    def is_int8(self) -> bool:
        return self.precision == "int8"


def resolve_model(name: str) -> ModelSpec | str | ModelPath:
    """A registered name, an "alpha-resolution" spec like "0.6-176", a "timm:<name>" peer (returned as is), or the
    path of an exported ONNX file or of a weights or run folder (`ModelPath`). A name wins over a file or folder of
    the same name in the working directory (names meant what they mean before paths were taken); ``./NAME`` is the
    path. A leading ``~`` is the home folder (`os.path.expanduser`), as a shell expands it in a word of its own but
    not after a comma; the rows' ``model`` keeps the name as typed, their ``file`` is the resolved path."""
    if name.startswith(PEER_PREFIX):
        _check_peer(name)
        return name
    m = re.fullmatch(r"(\d*\.?\d+)[-_x@](\d+)", name)
    if m:
        return ModelSpec(alpha=float(m.group(1)), resolution=int(m.group(2)))
    try:
        return model_spec(name)  # registered, or an off-grid mobilenet_v1_<alpha x 100>[_<res>] name
    except SpecError:
        pass
    where = os.path.expanduser(name)  # after a comma (`--models 0.25-128,~/m.onnx`) no shell expanded the ~
    if os.path.exists(where):
        return model_path(name)
    if os.path.islink(where):  # a broken link: its target is what is missing, not a model "neither" kind
        raise SpecError(f"model {name!r} is not allowed: no such file or folder: it is a link to "
                        f"{os.readlink(where)!r}, which does not exist")  # fmt: skip
    if _looks_like_path(name):
        raise SpecError(f"model {name!r} is not allowed: no such file or folder (a model path must be an ONNX file "
                        "from `mobilenets export` or a weights or run folder)")  # fmt: skip
    raise SpecError(
        f"model {name!r} is not allowed: give a registered name (mobilenets list), ALPHA-RESOLUTION like 0.6-176, "
        f"timm:<model>, or the path of an ONNX file from `mobilenets export` or of a weights or run folder"
    )


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.lower().endswith(".onnx") or name.startswith(("~", "."))


def model_path(name: str) -> ModelPath:
    """The `ModelPath` of an existing ``name``; a ValueError naming it where it is no model bench can run. The
    loaders are predict's: `infer.onnx_spec` for an ONNX file, `weights.read_config` for a folder."""
    from . import weights
    from .export import read_onnx_metadata
    from .infer import onnx_spec

    path = Path(name).expanduser()  # the row's ``model`` stays as typed; ``file`` is the resolved path
    if path.is_file() and path.suffix.lower() == ".onnx":
        spec = onnx_spec(path)  # ExportError (a ValueError) naming the file: not ONNX, or no mobilenets metadata
        precision = read_onnx_metadata(path).get("precision", "fp32")
        return ModelPath(name, path, "onnx", spec, precision)
    path = weights.run_weights(path)  # a `mobilenets train` run: its final weights, RUN/model, as every command
    if path.is_dir() or path.name in (weights.WEIGHTS_FILE, weights.CONFIG_FILE):
        spec = weights.read_config(path)["spec"]  # WeightsError naming the folder and what it lacks
        folder = path.parent if path.is_file() else path
        return ModelPath(name, folder, "weights", spec, "fp32", *acc.weights_run_top1(folder))
    raise SpecError(f"model {name!r} is not allowed: bench runs an ONNX file from `mobilenets export` (.onnx) or a "
                    "weights or run folder, and this is neither")  # fmt: skip


def _check_peer(name: str) -> None:
    """A "timm:<name>" peer that timm does not know is a bad model name (without timm, `build` skips it)."""
    try:
        import timm
    except ImportError:
        return
    peer = name[len(PEER_PREFIX) :]
    if not timm.is_model(peer):
        close = difflib.get_close_matches(peer, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise SpecError(f"model {name!r} is not allowed: timm has no model named {peer!r}{hint}")


def spec_label(spec: ModelSpec) -> str:
    return spec.name or grid_name(spec.alpha, spec.resolution)  # TF-slim style: alpha 0.6 at 176 -> _060_176


class _Peer(torch.nn.Module):
    """A peer implementation (timm) behind the runner interface: ``fuse()`` is the model as its users run it."""

    def __init__(self, net: torch.nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net, self.spec = net.eval(), spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def fuse(self) -> _Peer:
        return self


def build(name: str) -> tuple[torch.nn.Module | None, ModelSpec, str]:
    """(model in eval mode, its spec, its label). Peers are random-init timm models (timm is a dev dependency); a
    weights or run folder is loaded as `predict` loads it (`weights.load`), labelled as given; an ONNX file has no
    PyTorch model (None: its runtimes run the file)."""
    target = resolve_model(name)
    if isinstance(target, ModelSpec):
        return create_model(target).eval(), target, spec_label(target)
    if isinstance(target, ModelPath):
        from . import weights

        model = weights.load(target.path) if target.kind == "weights" else None
        return model, target.spec, target.given
    try:
        import timm
    except ImportError as exc:
        raise RuntimeUnavailable(f"{name}: timm is not installed ({exc})") from exc
    net = timm.create_model(name[len(PEER_PREFIX) :], pretrained=False)
    size = net.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return _Peer(net, ModelSpec(resolution=size)), ModelSpec(resolution=size), name


# --- timing ------------------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], *, min_runs: int, min_time: float, warmup: int = 5) -> np.ndarray:
    """Seconds per call of ``fn`` after ``warmup`` calls: until ``min_runs`` calls or ``min_time`` s, whichever first
    (at least 3 calls so a median exists)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < min_runs and time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def robust_ms(fn: Callable[[], Any], *, blocks: int = 5, block: int = 10, warmup: int = 3) -> float:
    """The lowest of ``blocks`` block medians, in ms: a short burst of other work on a shared machine inflates
    some blocks, not all, so this recovers the quiet-machine latency (used for the lookup table and its check)."""
    for _ in range(warmup):
        fn()
    medians = []
    for _ in range(blocks):
        t = []
        for _ in range(block):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        medians.append(float(np.median(t)))
    return min(medians) * 1e3


def stats_ms(times: np.ndarray) -> dict[str, float]:
    return {
        "latency_ms_median": float(np.median(times) * 1e3),
        "latency_ms_p90": float(np.percentile(times, 90) * 1e3),
        "latency_ms_min": float(times.min() * 1e3),
        "runs": len(times),
    }


def alternate(fns: dict[str, Callable[[], Any]], *, rounds: int = 10, block: int = 10, warmup: int = 5) -> dict:
    """Time several callables A B A B ... in blocks of ``block`` calls, ``rounds`` times; per name, the seconds per
    call of every timed call (so a drift of the machine hits all of them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
    return {k: np.array(v) for k, v in out.items()}


def sgemm_gflops(threads: int = 1, *, n: int = 512, seconds: float = 0.5) -> dict[str, float]:
    """FP32 GFLOP/s of an n x n sgemm on ``threads`` threads (best of repeated runs), per library: ``torch`` (torch.mm:
    MKL or oneDNN) and ``onnxruntime`` (a MatMul session: MLAS), where it imports. Which is faster depends on the CPU:
    on the 2-vCPU AMD EPYC with AVX-512 of 2026-11-27, one core ran 112 GFLOP/s through torch and 249 through
    onnxruntime, so a torch-only probe put ONNX Runtime's MobileNet at twice its 'physical limit'."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads):
        times = time_calls(lambda: torch.mm(a, b), min_runs=10_000, min_time=seconds, warmup=2)
    out = {"torch": float(2 * n**3 / times.min() / 1e9)}
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return out
    spec = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [n, n]) for name in "ABC"]
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm", spec[:2], spec[2:])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    options = set_ort_threads(ort.SessionOptions(), threads)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"A": a.numpy(), "B": b.numpy()}
    times = time_calls(lambda: session.run(None, feed), min_runs=10_000, min_time=seconds, warmup=2)
    out["onnxruntime"] = float(2 * n**3 / times.min() / 1e9)
    return out


def matmul_gflops(threads: int = 1, *, n: int = 512, seconds: float = 0.5) -> float:
    """The FMA-bound FP32 peak probe: the fastest library's sgemm (`sgemm_gflops`) on ``threads`` threads, GFLOP/s."""
    return max(sgemm_gflops(threads, n=n, seconds=seconds).values())


# --- memory and environment ---------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that memory a previous
    model freed is not silently reused by the next one without showing in its RSS peak."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_memory() -> int | None:
    """Reset the peak-RSS counter (Linux) and return the current RSS in kB; None where unsupported."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def available_memory(device: str) -> int | None:
    """Bytes a new allocation can take now: on the GPU, CUDA's free memory; on the CPU, Linux's MemAvailable,
    capped by this process's cgroup v2 limit (a container's, a Slurm job's) where one is set
    (`_cgroup_headroom`). None where neither can be read."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    if found is None:
        return None
    free = int(found[1]) * 1024
    headroom = _cgroup_headroom()
    return free if headroom is None else min(free, headroom)


def _cgroup_headroom(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """memory.max less the working set (memory.current less the reclaimable inactive file cache, as the kernel and
    Kubernetes count it) of this process's cgroup v2 group (its path from /proc/self/cgroup's ``0::`` line), at
    least 0; None without a limit or cgroup v2. memory.current alone counts the page cache, which a container fills
    up to its limit: every batch would have looked too big."""
    try:
        line = next(ln for ln in proc.read_text().splitlines() if ln.startswith("0::"))
        group = root / line[3:].lstrip("/")
        limit = (group / "memory.max").read_text().strip()
        if limit == "max":
            return None
        stat = dict(ln.split() for ln in (group / "memory.stat").read_text().splitlines() if ln.count(" ") == 1)
        used = int((group / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
        return max(int(limit) - used, 0)
    except (OSError, ValueError, StopIteration):
        return None


BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def check_batch_fits(cfg: BenchConfig, free: Callable[[str], int | None] = available_memory) -> None:
    """Raise ValueError naming ``batch`` where a throughput batch cannot fit in this machine's memory, before
    anything is measured: without it the kernel kills a run of ``--batch 100000`` for memory with no message. The
    floor is `batch_memory_floor`'s (a lower bound, so a batch refused here could not have run); a batch above it
    can still run out where the runtime needs more."""
    for runtime in cfg.runtimes:
        info = RUNTIME_INFO[runtime]
        batch = cfg.throughput_batch(info.device)
        available = free(info.device) if batch else None
        if available is None:
            continue
        for name in cfg.models:
            spec = resolve_model(name)
            spec = spec.spec if isinstance(spec, ModelPath) else spec
            if not isinstance(spec, ModelSpec):  # a timm peer: its architecture is not ours to count
                continue
            per_image = batch_memory_floor(spec, BYTES_PER_VALUE[info.dtype])
            if batch * per_image > available:
                raise ValueError(
                    f"batch={batch} is not allowed here: {name} on {runtime} needs at least "
                    f"{batch * per_image / 2**30:.1f} GiB at that batch (its fp32 input and its largest layer's input "
                    f"and output), and this machine has {available / 2**30:.1f} GiB free: a batch above "
                    f"{available // per_image} cannot fit"
                )


def batch_memory_floor(spec: ModelSpec, bytes_per_value: int) -> int:
    """Bytes per image of a throughput batch that no runtime can do without: the fp32 input array the bench builds
    (`measure`) and the largest layer's input and output at the runtime's width (`Complexity.peak_values`)."""
    return 4 * 3 * spec.resolution**2 + bytes_per_value * count_complexity(spec).peak_values


def peak_memory_mb(baseline_kb: int | None, device: str) -> float | None:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    hwm = _status_kb("VmHWM")
    return None if hwm is None or baseline_kb is None else max(hwm - baseline_kb, 0) / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def checkout(where: Path = Path(__file__).parent) -> tuple[str, bool] | None:
    """(full commit, whether the repository's tracked files differ from it) of the git checkout that tracks the
    package's files at ``where``; None where none does. A copy installed into a virtual environment inside another
    repository (a project's .venv) is untracked there: that project's commit is not the measured or trained code's.
    One rule for bench rows (`git_commit`) and training runs (`trainer.git_commit`)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)

    try:
        if git("ls-files", "--error-unmatch", ".").returncode != 0:
            return None
        commit = git("rev-parse", "HEAD").stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, dirty) if commit else None


def git_commit(where: Path = Path(__file__).parent) -> str | None:
    """`checkout`'s commit as results rows name it: 7 digits, with '-dirty' when tracked files differ from it (the
    measured code then is not exactly that commit)."""
    found = checkout(where)
    return None if found is None else found[0][:7] + ("-dirty" if found[1] else "")


def machine() -> dict[str, Any]:
    """This machine as every row names it (what `hardware_tag` reads): CPU model, core count, GPU."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def environment() -> dict[str, Any]:
    """The machine and library versions recorded in every row."""
    return {
        **machine(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "python": platform.python_version(),
        "commit": git_commit(),
    }


def hardware_tag(env: dict | None = None) -> str:
    """A file-name-safe hardware name: the GPU if any, else the CPU model and core count (e.g. 'amd-epyc-2c')."""
    env = env or machine()
    name = env["gpu"] if env["gpu"] != "none" else f"{env['cpu']} {env['cores']}c"
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*?ghz|\d+-core", " ", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


# --- one model on one runtime --------------------------------------------------------------------------------------


@dataclass
class Measured:
    """A built runner and the files it came from (their sizes are the weights-on-disk columns)."""

    runner: Any
    weights_fp32_MB: float | None  # None: an INT8 ONNX file given to time, of no fp32 file here
    artifact_MB: float
    build_s: float = 0.0  # building the runner from the model or ONNX file (not exporting or quantizing it)
    baseline_kb: int | None = None  # resident set before building the runner, its peak reset (`reset_peak_memory`)


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def prepare(
    model: torch.nn.Module | None,
    runtime: str,
    threads: int,
    workdir: Path,
    cuda_backend: str = "eager",
    onnx_file: Path | None = None,
    int8_file: bool = False,
) -> Measured:
    """Build the runner; write the fp32 safetensors (and the ONNX file for ONNX runtimes) to measure sizes. The peak
    memory is reset after writing them: the export and INT8 calibration are not the runner's memory. With
    ``onnx_file`` (an exported file given to bench: `ModelPath`) the runner runs that file as it is, and its size is
    the weights on disk (the fp32 size too, unless ``int8_file``)."""
    from safetensors.torch import save_file

    info = RUNTIME_INFO[runtime]
    if onnx_file is not None:
        size = file_mb(onnx_file)
        baseline = reset_peak_memory()
        t0 = time.perf_counter()
        runner = make_runner(None, runtime, onnx_path=onnx_file, threads=threads)
        return Measured(runner, None if int8_file else size, size, time.perf_counter() - t0, baseline)
    assert model is not None, "a runner needs a PyTorch model or an ONNX file"
    st = workdir / "model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(st))
    fp32 = file_mb(st)
    kwargs, artifact = {"threads": threads}, fp32
    if info.onnx:
        from .export import export_onnx
        from .runtimes import int8_onnx

        path = workdir / "model.onnx"
        onnx_path = int8_onnx(model, path, runtime) if info.dtype == "int8" else export_onnx(model, path)
        kwargs, artifact = {"onnx_path": onnx_path, "threads": threads}, file_mb(onnx_path)
    elif info.engine == "cuda":
        kwargs = {"backend": cuda_backend}
    baseline = reset_peak_memory()
    t0 = time.perf_counter()  # building the runner: startup_s (the export above is not part of it)
    runner = make_runner(model, runtime, **kwargs)
    return Measured(runner, fp32, artifact, time.perf_counter() - t0, baseline)


def measure(
    model: torch.nn.Module,
    spec: ModelSpec,
    runtime: str,
    *,
    threads: int,
    cfg: BenchConfig,
    label: str,
    accuracy: acc.AccuracyModel | None = None,
    peak_gflops: float | None = None,
    env: dict | None = None,
    origin: ModelPath | None = None,
) -> dict[str, Any]:
    """One bench row (see `COLUMNS`). Raises `RuntimeUnavailable` when the runtime cannot run here.

    ``origin``: the file or folder the model came from (`ModelPath`; ``model`` is None for an ONNX file, which is
    run as it is). Its row names it in ``file``, and its top-1 is the one its `mobilenets train` run measured of
    those weights (``origin.run``: top1_table "measured", as the user's runs given to ``--accuracy`` are, and
    top1_task the run's), else unknown (None): the accuracy tables and ``--accuracy`` runs are of their own weights,
    not of weights given by path."""
    info = RUNTIME_INFO[runtime]
    onnx_file = origin.path if origin is not None and origin.kind == "onnx" else None
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as tmp:
        built = prepare(model, runtime, threads, Path(tmp), cfg.cuda_backend, onnx_file,
                        origin is not None and origin.is_int8)  # fmt: skip
        x1 = np.random.default_rng(0).standard_normal((1, 3, spec.resolution, spec.resolution), dtype=np.float32)
        t0 = time.perf_counter()
        built.runner(x1)  # torch.compile compiles, OpenVINO compiles this shape: startup_s, outside the latency
        startup = built.build_s + time.perf_counter() - t0
        times = time_calls(lambda: built.runner(x1), min_runs=cfg.min_runs, min_time=cfg.min_time, warmup=cfg.warmup)
        batch = cfg.throughput_batch(info.device)
        tput = None
        if batch:  # on a GPU, of a batch already there: 154 MB of fp32 input would time the host link instead
            xb = np.repeat(x1, batch, axis=0)
            call = built.runner.resident(xb) if built.runner.resident else (lambda: built.runner(xb))
            tb = time_calls(call, min_runs=max(3, cfg.min_runs // 10), min_time=cfg.min_time / 2, warmup=1)
            tput = batch / float(np.median(tb))
        peak = peak_memory_mb(built.baseline_kb, info.device)
    backend = built.runner.info.get("backend")
    if backend and built.runner.info.get("cuda_graph_failed"):
        backend += " (no CUDA graph for " + ", ".join(built.runner.info["cuda_graph_failed"]) + ")"
    row = {"model": label, "alpha": spec.alpha, "resolution": spec.resolution, "runtime": runtime}
    row["classes"] = spec.num_classes  # a file's or folder's own; placed by COLUMNS (last)
    row.update(dtype=info.dtype, layout=info.layout, backend=backend, threads=threads, batch=batch, **stats_ms(times))
    row["fps"] = 1000.0 / row["latency_ms_median"]
    row.update(realtime=row["fps"] >= cfg.target_fps, target_fps=cfg.target_fps, throughput_ips=tput, startup_s=startup)
    row.update(peak_mem_MB=peak, weights_MB=built.artifact_MB, weights_fp32_MB=built.weights_fp32_MB)
    row["weights_int8_MB"] = built.artifact_MB if info.dtype == "int8" else None
    row["file"] = str(origin.path.resolve()) if origin is not None else None
    cost = count_complexity(spec) if not label.startswith(PEER_PREFIX) else None
    macs = cost.macs if cost else _peer_macs(label, spec)
    params = cost.params if cost else _n_params(model)
    row.update(macs_M=macs / 1e6 if macs is not None else None, params_M=params / 1e6)
    top1, source = (None, None)
    # the standard body is what the accuracy tables and runs describe
    if accuracy is not None and origin is None and not label.startswith(PEER_PREFIX) and on_grid(spec):
        top1, source = accuracy.predict(spec.alpha, spec.resolution)
    table, task = (accuracy.label, accuracy.task) if accuracy is not None else (None, None)
    if origin is not None and origin.run is not None:  # measured by the run that trained these weights
        top1, source, table, task = origin.run.top1, origin.run.source, "measured", origin.run.task
    row.update(top1=top1, top1_source=top1_source_for(source, info.dtype),  # a non-fp32 row's is the fp32 weights'
               top1_table=table, top1_task=task)  # fmt: skip
    known = macs is not None and peak_gflops and info.device == "cpu"  # a peer of unknown MACs has no limit, not 0 ms
    limit = 2 * macs / (peak_gflops * 1e9 * threads) * 1e3 if known else None
    row.update(fp32_limit_ms=limit, limit_fraction=limit / row["latency_ms_median"] if limit else None)
    row.update(probe_gflops=None, device=info.device, **(env or environment()))
    row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {k: _plain(row.get(k)) for k in COLUMNS}


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (JSON-serialisable, rendered like the rest)."""
    return value.item() if isinstance(value, np.generic) else value


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() > 1)  # weights only, paper convention


def _peer_macs(label: str, spec: ModelSpec) -> int | None:
    """timm's mobilenetv1_100 has the paper's architecture; other peers have no MAC count here (None)."""
    return count_complexity(spec).macs if label == "timm:mobilenetv1_100" else None


# --- the whole run -------------------------------------------------------------------------------------------------


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_bench`: ``rows`` are the rows measured before it, of ``total`` measurements planned (the
    command writes them; a caller that does not look sees a KeyboardInterrupt); ``pending``, the runtime and threads
    of each measurement not made that a rerun would make (`_pending`: not of runtimes skipped, nor refused for a file
    given), so that `results_name` names the file the whole run would have written, and the same command run again
    replaces it."""

    def __init__(self, rows: list[dict[str, Any]], total: int, pending: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(f"interrupted after {len(rows)} of {total} measurements")
        self.rows, self.total, self.pending = rows, total, list(pending)


def run_bench(cfg: BenchConfig, *, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure every model x runtime x threads of ``cfg``; unavailable runtimes add one line to ``notes``.

    torch's process-wide thread count is set per measurement and is the caller's again on return. Ctrl-C raises
    `BenchInterrupted` holding the rows measured so far (they were lost with the measurement under way)."""
    cfg = cfg.validate()
    check_batch_fits(cfg)
    if max(cfg.threads) > (cores := usable_cores()):  # the row would time the threads' contention, not a machine
        raise ValueError(f"threads={max(cfg.threads)} is not allowed here: this process may run on {cores} core(s); "
                         f"measure at most {cores} thread(s)")  # fmt: skip
    notes = notes if notes is not None else []
    accuracy = acc.accuracy_model(cfg.accuracy_files, say=notes.append)
    env = environment()
    if cfg.peak_gflops:
        peak, probed = cfg.peak_gflops, "given"
    else:
        by_library = sgemm_gflops(1)
        peak = max(by_library.values())
        probed = "fastest sgemm of " + ", ".join(f"{k} {v:.1f}" for k, v in by_library.items())
    notes.append(f"FP32 peak: {peak:.1f} GFLOP/s per core ({probed}); limit = 2 x MACs / (peak x threads)")
    jobs = [(t, r, m) for t in cfg.threads for r in cfg.runtimes for m in cfg.models]
    skipped: set[str] = set()
    refused: set[tuple[str, str]] = set()  # (runtime, model) of a file that runtime cannot run (`ModelPath.cannot_run`)
    run_noted: set[str] = set()  # run folders whose summary.json gave no top-1 (`ModelPath.run_note`), said once
    rows: list[dict[str, Any]] = []
    # the machine state beside each thread count's figures (the second vCPU may be busy), probed as its jobs start:
    # for the first 1-thread jobs the peak probe just made is that
    probes: dict[int, float] = {1: peak} if not cfg.peak_gflops and cfg.threads[0] == 1 else {}
    bar = _progress(len(jobs), cfg.progress)
    done = measured = 0
    try:
        for threads, runtime, name in jobs:
            bar.set_description(f"{runtime} x{threads} {name}")
            target = resolve_model(name)
            source = target if isinstance(target, ModelPath) else None
            why = source.cannot_run(runtime) if source is not None else None
            if source is not None and source.run_note and name not in run_noted:  # said once per model
                run_noted.add(name)
                notes.append(f"note: {name}: {source.run_note}")
            if why is not None and (runtime, name) not in refused:  # said once, not once per thread count
                refused.add((runtime, name))
                notes.append(f"skipped {runtime} for {name}: {why}")
            if runtime not in skipped and why is None:
                if threads not in probes:
                    probes[threads] = matmul_gflops(threads, seconds=0.3)
                try:
                    model, spec, label = build(name)
                    with torch_threads(threads):  # set once here, so the timed calls do not switch it per call
                        row = measure(model, spec, runtime, threads=threads, cfg=cfg, label=label, accuracy=accuracy,
                                      peak_gflops=peak, env=env, origin=source)  # fmt: skip
                    row["probe_gflops"] = probes[threads]
                    rows.append(row)
                except RuntimeUnavailable as exc:
                    skipped.add(runtime)
                    notes.append(f"skipped {runtime}: {exc}")
            bar.update(1, measured=len(rows) > measured)
            measured, done = len(rows), done + 1
    except KeyboardInterrupt:
        raise BenchInterrupted(rows, len(jobs), _pending(jobs[done:], skipped)) from None
    finally:
        bar.close()
    return rows


def _pending(jobs: Sequence[tuple[int, str, str]], skipped: set[str]) -> list[dict[str, Any]]:
    """The runtime and threads of each job of ``jobs`` a rerun would measure (`BenchInterrupted.pending`): not those
    of a runtime unavailable here (``skipped``), nor a runtime that cannot run the file given (`ModelPath.cannot_run`),
    which a rerun refuses again: they named a runtime in the results file's name that the whole run never writes."""
    targets: dict[str, Any] = {}
    pending = []
    for threads, runtime, name in jobs:
        if runtime in skipped:
            continue
        if name not in targets:
            try:
                targets[name] = resolve_model(name)
            except (ValueError, OSError):  # the file went away since validate: the Ctrl-C's rows still come back
                targets[name] = None
        target = targets[name]
        if not isinstance(target, ModelPath) or target.cannot_run(runtime) is None:
            pending.append({"runtime": runtime, "threads": threads})
    return pending


def _progress(total: int, enabled: bool, stream: Any = None, every_s: float = 30.0) -> JobProgress:
    """tqdm's bar on a terminal; off one (a log file, CI), a plain line at most every ``every_s`` seconds and one at
    the end (`progress.bar_or_lines`): ``bench: 12/48 measured (ort x1 mobilenet_v1_050_160), 0.4 min, about 1.2 min
    left``. Nothing when ``enabled`` is false (``--no-progress``). Jobs that measured nothing are counted apart
    (`JobProgress`)."""
    lines = {"every_s": every_s, "done": JobProgress.line(0, 0, JobProgress.DONE),
             "running": JobProgress.line(0, 0, JobProgress.RUNNING)}  # fmt: skip
    return JobProgress(bar_or_lines(total, enabled, lines, stream, dynamic_ncols=True))


class JobProgress:
    """bench's progress over its jobs (threads x runtime x model), saying how many were measured and how many
    skipped: a runtime that cannot run a file given (`ModelPath.cannot_run`) or is unavailable here measures nothing,
    and ``bench: 2/2 measured`` was printed for one row measured and one skipped. A skipped job still advances the
    count of jobs done (the bar's position, the time left): ``bench: 1/2 measured, 1 skipped in 0.0 min``."""

    DONE = " in {{min:.1f}} min"
    RUNNING = " ({{desc}}), {{min:.1f}} min, about {{left:.1f}} min left"

    def __init__(self, bar: Any) -> None:
        self.bar, self.measured, self.skipped = bar, 0, 0

    @staticmethod
    def line(measured: int | None, skipped: int, tail: str) -> str:
        """A `progress.Lines` template: ``{n}`` (jobs done) is the measured count while nothing was skipped."""
        count = "{n}" if not skipped else f"{measured}"
        return f"bench: {count}/{{total}} measured" + (f", {skipped} skipped" if skipped else "") + tail.format()

    def set_description(self, desc: str) -> None:
        self.bar.set_description(desc)

    def update(self, n: int = 1, *, measured: bool = True) -> None:
        """``n`` jobs done, each of which measured a row (``measured``) or was skipped."""
        if measured:
            self.measured += n
        else:
            self.skipped += n
        if self.skipped and isinstance(self.bar, Lines):  # the counts are in its next line's template
            self.bar.done = self.line(self.measured, self.skipped, self.DONE)
            self.bar.running = self.line(self.measured, self.skipped, self.RUNNING)
        elif self.skipped:
            self.bar.set_postfix_str(f"{self.skipped} skipped", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def results_name(rows: Sequence[dict], stem: str = "bench") -> str:
    """A results file stem carrying hardware, runtimes, threads and batch, e.g. 'bench-amd-epyc-2c-ort-t1-b32' (the
    hardware and batch of the first row; rows of runtime and threads only add to the names)."""
    if not rows:
        return stem
    runtimes = "+".join(dict.fromkeys(r["runtime"] for r in rows))
    threads = "+".join(str(t) for t in dict.fromkeys(r["threads"] for r in rows))
    return f"{stem}-{hardware_tag(rows[0])}-{runtimes}-t{threads}-b{rows[0]['batch']}"


def row_key(row: dict) -> tuple:
    """What one bench row measured: a later row of the same key replaces it. A row of a file or folder given by path
    is keyed by that file too (``file``, the resolved path): ``m.onnx`` benched in two folders is two files, and the
    second replaced the first in a results file both were merged into. Rows without one (named models, rows written
    before the column) are keyed as before."""
    key = (row["model"], row["runtime"], row.get("backend"), int(row["threads"]), row.get("batch"))
    return (*key, row["file"]) if row.get("file") else key


def merge_rows(old: Sequence[dict], new: Sequence[dict]) -> tuple[list[dict], int, int]:
    """``old`` with the rows ``new`` measures again replaced in place, then ``new``'s other rows: (rows, kept,
    replaced), kept counting the old rows of models not measured now."""
    fresh = {row_key(r): r for r in new}
    again = [row_key(r) in fresh for r in old]
    merged = [fresh.pop(row_key(r)) if hit else r for r, hit in zip(old, again, strict=True)]
    return merged + list(fresh.values()), again.count(False), again.count(True)


def results_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The CSV and JSON files `write_results` writes for ``out`` (whatever its suffix: a.csv, a.json and a give
    a.csv and a.json)."""
    base = Path(out)
    base = base.with_suffix("") if base.suffix in (".csv", ".json") else base
    return base.with_suffix(".csv"), base.with_suffix(".json")


def out_is_folder(out: str | os.PathLike) -> bool:
    """Whether ``--out`` names a folder for files named after the run (`results_name`): it ends in a separator or
    is an existing folder (``--out results`` wrote results.csv beside the folder results/)."""
    return str(out).endswith(("/", os.sep)) or Path(out).is_dir()


def check_outputs(out: str | os.PathLike | None = None, plots: str | os.PathLike | None = None) -> None:
    """Before a bench measures anything: an `OSError` naming the first output it could not write, or a ValueError
    naming a file there that is not a bench results file (`check_results_file`), instead of the measurements lost
    at the end of the run. ``out`` is the results file base (`results_paths`), or a folder (`out_is_folder`);
    ``plots`` a folder (`lut.predict_many` checks its table the same way before measuring). Probes with
    `atomic.check_writable`, which creates nothing."""
    if out is not None:
        if out_is_folder(out):
            check_writable(out, folder=True)
        else:
            for path in results_paths(out):
                check_writable(path)
                check_results_file(path)
    if plots is not None:
        check_writable(plots, folder=True)


def check_results_file(path: Path) -> None:
    """A ValueError naming ``path`` where it exists and is not a bench results file, which writing would destroy:
    ``--out mydata`` replaced the user's mydata.csv and mydata.json. Ours (written by `write_results`) are merged
    or replaced as `write_results` says."""
    if not path.is_file():
        return
    if path.suffix == ".json":
        try:
            data, rows = _results_json(path)
            if rows or isinstance(data, dict):  # our {"meta", "rows"} file may hold no row; a user's [] is no results
                return
        except ValueError:
            pass
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            if f.readline().rstrip("\r\n").split(",")[:4] == list(COLUMNS[:4]):  # model, alpha, resolution, runtime
                return
    raise ValueError(f"out={str(path)!r} is not allowed: that file exists and is not a bench results file (give "
                     "another --out, or move the file)")  # fmt: skip


def write_results(
    rows: Sequence[dict],
    out: str | os.PathLike,
    *,
    meta: dict | None = None,
    say: Callable[[str], None] | None = None,
    merge: bool = True,
) -> list[Path]:
    """Write ``out`` as CSV and JSON (both, whatever the suffix given): rows plus the command/config metadata.

    An existing results file there of the same hardware (whatever its batches: `row_key` keeps rows of another batch
    apart, and benchmarks/bench_grid.py's file holds compile rows of batch 0 beside batch 32) is merged, not
    overwritten: its rows of models not measured now are kept, those measured again are replaced, and ``say``
    (else a warning) hears the counts; the metadata of the earlier runs (their command and config; each row has its
    own timestamp and commit) go to ``meta["earlier_runs"]``, oldest first. A file of rows of other hardware is
    replaced, and ``say`` hears that too (it was replaced without a word)."""
    import json
    import warnings

    from .formatting import render

    csv_path, json_path = results_paths(out)
    for path in (csv_path, json_path):  # an OSError naming the file, not the lock or staging file beside it
        check_writable(path)
        check_results_file(path)
    meta = dict(meta or {})
    rows = list(rows)
    with locked(json_path):  # two benches writing one file at once: the later one merges the earlier one's rows
        old, same = _earlier_rows(json_path, rows) if merge else ([], True)  # merge=False: the file is ``rows``
        if old and not same:
            machines = ", ".join(dict.fromkeys(f"{r.get('cpu')} x{r.get('cores')}, gpu {r.get('gpu')}" for r in old))
            msg = f"note: {json_path} existed with {len(old)} row(s) of other hardware ({machines}): replaced them"
            say(msg) if say is not None else warnings.warn(msg, stacklevel=2)
        elif old:
            merged, kept, replaced = merge_rows(old, rows)
            rows = merged if kept else rows  # nothing kept: the caller's rows in the caller's order
            meta["merged"] = {"kept": kept, "replaced": replaced}
            if kept:
                before = _meta(json_path)
                meta["earlier_runs"] = [*before.pop("earlier_runs", []), *([before] if before else [])]
            msg = f"note: {json_path} existed: kept its {kept} row(s) of models not measured now, replaced {replaced}"
            say(msg) if say is not None else warnings.warn(msg, stacklevel=2)
        atomic_write_text(csv_path, render(rows, "csv", COLUMNS) + "\n")
        atomic_write_text(json_path, json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    return [csv_path, json_path]


def _meta(json_path: Path) -> dict:
    """The ``meta`` of a results file (empty for a plain list of rows)."""
    import json

    data = json.loads(json_path.read_text())
    return dict(data.get("meta") or {}) if isinstance(data, dict) else {}


def _earlier_rows(json_path: Path, rows: Sequence[dict]) -> tuple[list[dict], bool]:
    """The rows of an existing results file (none where it is missing or unreadable: it is replaced, as before) and
    whether all of them were measured on the hardware of ``rows`` (only then are they merged)."""
    if not rows or not json_path.is_file():
        return [], True
    try:
        old = read_results(json_path)
    except ValueError:
        return [], True
    return old, {_setup(r) for r in old} <= {_setup(r) for r in rows}


def _setup(row: dict) -> tuple:
    return row.get("cpu"), row.get("cores"), row.get("gpu")


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results JSON written by `write_results` (or a plain JSON list of rows)."""
    return _results_json(path)[1]


def _results_json(path: str | os.PathLike) -> tuple[Any, list[dict]]:
    """(the JSON, its rows) of a results file (`read_results`); a ValueError naming it when it is not one."""
    import json

    p = Path(path)
    if (what := not_a_file(p)) is not None:
        raise ValueError(f"bench results file {str(p)!r} {what}, expected a `mobilenets bench --out` JSON file")
    if not p.is_file():
        raise FileNotFoundError(f"bench results file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(p)!r} is not a bench results file (not JSON: {exc})") from exc
    rows = data["rows"] if isinstance(data, dict) and "rows" in data else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and set(RESULT_KEYS) <= set(r) for r in rows):
        raise ValueError(f"{str(p)!r} is not a bench results file (rows with {', '.join(RESULT_KEYS)})")
    return data, rows


def config_from(models=None, alphas=None, resolutions=None, **kw: Any) -> BenchConfig:
    """A `BenchConfig` from CLI-style model choices: names, or the product of alpha and resolution lists. None
    leaves a choice out (the paper's grid); an empty list is an error, not the grid's 16 models."""
    for name, values in (("models", models), ("alphas", alphas), ("resolutions", resolutions)):
        if values is not None and not values:
            raise ValueError(f"{name}='' is not allowed: name at least one, or leave it out for the paper's grid")
    if models and (alphas or resolutions):
        raise ValueError(
            f"models={','.join(models)} with alphas/resolutions: give either model names (--models) or the "
            "alpha x resolution product (--alpha/--resolution), not both"
        )
    if alphas or resolutions:
        alphas = alphas or list(PAPER_ALPHAS)
        resolutions = resolutions or list(PAPER_RESOLUTIONS)
        for a in alphas:  # a bad value is named as itself, not as the model name made of it ('-0.5-224')
            ModelSpec(alpha=a)
        for r in resolutions:
            ModelSpec(resolution=r)
        models = [f"{a:g}-{r}" for a in alphas for r in resolutions]
    cfg = BenchConfig(**{k: v for k, v in kw.items() if v is not None})
    return replace(cfg, models=models) if models else cfg


__all__ = [
    "BenchConfig",
    "BenchInterrupted",
    "COLUMNS",
    "ModelPath",
    "check_outputs",
    "check_results_file",
    "GRID",
    "alternate",
    "environment",
    "hardware_tag",
    "matmul_gflops",
    "sgemm_gflops",
    "measure",
    "read_results",
    "results_name",
    "out_is_folder",
    "results_paths",
    "run_bench",
    "time_calls",
    "write_results",
]
