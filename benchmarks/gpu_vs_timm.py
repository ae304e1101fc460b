"""GPU speed, ours vs timm ``mobilenetv1_100``, in one process, same batch/dtype/layout, alternating (issue 7).

Sections run in order of value and each is skipped (``{"skipped": "time budget"}``) when the time left of
``--time-budget`` is below its estimated cost (`ESTIMATED_S`), so one run on a lent GPU returns the most useful
numbers first:

    hbm_bound           environment, HBM copy bandwidth, activation-traffic bound (issue 7, "The physical limit")
    inference_eager     batch 256: fp32 baselines; bf16 channels_last eager, timm vs ours eager vs ours Triton
    numerics            ours' fast paths vs our eager fp32 on real images (--images), tolerance and pass/fail
    train_eager         training step batch 256, bf16 autocast, channels_last, SGD (fused on CUDA)
    latency_batch1      batch 1: timm and ours eager, compiled (both direct and as a CUDA graph), ours Triton as a
                        CUDA graph; against timm's fastest (issue 7: compiled + CUDA graph)
    inference_compiled  torch.compile (default mode, never max-autotune), timm vs ours, batch 256
    train_compiled      compiled training step, timm vs ours (also with the fast layers), each also replayed whole
                        as one CUDA graph
    profile             where the time goes: torch.profiler over a few calls of each path built above, its GPU time
                        per call by kernel category (GEMM, convolution, our Triton kernels, Inductor's, ...), its
                        costliest kernels, and its costliest (op, input shapes) pairs, i.e. layers (on CPU: self time
                        per op)
    train_tuned         ours with the fast layers compiled with Inductor's coordinate-descent tuning (also replayed
                        whole as one CUDA graph, as the trainer's --step-graph replays it, and with Inductor's own
                        CUDA graphs), beside timm compiled (and, with --tune-timm, timm tuned)
    numerics_trained    with --numerics-weights: the numerics check on those trained weights at their resolution
                        (eager, compiled, Triton), with top-1 agreement; last, as its Triton shapes had no preflight

Every compile happens inside the section that times it. Each section is wrapped so a failure records its error and
traceback tail and the run goes on; the JSON (environment included) is rewritten after every section to
results/gpu-vs-timm-<gpu>.json and to $OUT when set. The closing ``ratios`` block gives ours/timm speed per
comparable pair (> 1: ours faster) and the fraction of the HBM bound our best inference path reaches.

    PYTHONPATH=src python3 benchmarks/gpu_vs_timm.py --images /tmp/data/val                 # one H100/H200
    PYTHONPATH=src python3 benchmarks/gpu_vs_timm.py --device cpu --smoke --out /tmp/smoke.json  # CPU code paths

``--smoke`` uses batch 2, resolution 64, 1 round of 2 iterations, 2 profiled calls per path. On CPU it skips what
cannot run there: CUDA graphs, the Triton kernels unless TRITON_INTERPRET=1 (then they run in the interpreter,
minutes per call), and Inductor (torch.compile runs with backend 'eager' instead, which exercises Dynamo and the
section's code).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mobilenets import MobileNetV1, count_complexity, dwconv, kernels, step_graph  # noqa: E402
from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.engine import DistEnv, StepContext, optimizer_step, train_step  # noqa: E402
from mobilenets.gpu import REPLAY_TOLERANCE, CudaGraphRunner, fast_inference  # noqa: E402
from mobilenets.layers import pad_stem  # noqa: E402
from mobilenets.optim import set_lr  # noqa: E402
from mobilenets.trainer import inductor_options  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
T0 = time.perf_counter()

# Estimated seconds per section on one H200 with cold caches: about 1.5x the longest each took on the four H200 leases
# (results/gpu-vs-timm-NVIDIA_H200*.json, section_s; in brackets), which is what compiles, tunes and first calls
# cost there (timm's first compiled training step alone took 39 s). The Triton preflight child (10-34 s) comes first.
ESTIMATED_S = {
    "hbm_bound": 5,  # [0.0]
    "inference_eager": 25,  # [15.5] + the Triton path captured as a CUDA graph at the batch
    "numerics": 10,  # [3.1]
    "train_eager": 60,  # [40.1]
    "latency_batch1": 55,  # [35.8] with timm and ours compiled, directly and as CUDA graphs
    "inference_compiled": 60,  # [40.6] the first section of its process to tune the Triton kernels; else 12-18 s
    # [124.3] timm, ours and ours with the fast layers, each compiled (timm's first step 44-61 s) and also captured as
    # a CUDA graph; --train-dw-variants adds the Triton depthwise op (its first call 16 s) and the taps (69 s)
    "train_compiled": 190,
    "profile": 15,  # [0.9] ~16 paths x (1 warm + PROFILE_STEPS profiled calls, shapes recorded)
    # [198.2] ours with the fast layers compiled with coordinate-descent tuning (its first call 164-192 s: it times
    # launch configs of each generated kernel of a step), with timm and the twins built by train_compiled; run
    # without it, the section compiles them itself (about 110 s more); and once more with Inductor's CUDA graphs
    # (its kernels' tuning cached: a guess of 40 s, untimed on a GPU); and the trainer's own step graph
    # (`mobilenets train --step-graph`) around the same tuned compile, from Inductor's caches (another guess of 40 s)
    "train_tuned": 390,
    "numerics_trained": 50,  # [34.7] with --numerics-weights: a compile and Triton tuning for its layer shapes
}
SECTIONS = tuple(ESTIMATED_S)
# train_tuned with --tune-timm: timm compiled with tuning too (untimed on a GPU: ours' took 164-192 s, and timm's
# untuned first compiled step took 2-3x ours')
TUNED_TIMM_S = 200
# train_tuned with --hybrid: ours with the hybrid depthwise layers, tuned (Inductor's caches hold the BatchNorm kernels'
# configs) and graphed: a guess, untimed on a GPU
HYBRID_S = 60
# Numerics tolerance: max |logit - reference| <= TOL * max |reference logit|. bf16 keeps 8 mantissa bits (relative
# rounding 2^-9 per value); ~28 layers of rounded activations and weights accumulate to about 1% of the logit range,
# so 5% flags real bugs (a wrong tap, stride or bias) without failing on bf16 rounding. fp32 paths only reorder sums.
TOLERANCE = {"bf16": 0.05, "fp32": 1e-3}
BASELINE_SLACK = 1.5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def environment(device: str) -> dict:
    import importlib

    from mobilenets.bench import environment as machine

    versions = {}
    for name in ("torchvision", "timm", "triton"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - record whatever is missing
            versions[name] = f"unavailable: {exc}"
    env = {**machine(), **versions, "device": device, "command": " ".join(sys.argv)}
    env["triton_interpret"] = kernels.INTERPRET
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_memory_gb=round(props.total_memory / 2**30, 1), sm_count=props.multi_processor_count)
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        # fp32 numerics: cuDNN convs default to TF32; the Triton split plan's GEMM (cuBLAS) only if this is set
        env.update(
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32
        )
    return env


class Timer:
    """Mean milliseconds per call: CUDA events on the GPU, ``time.perf_counter`` on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, fn, x, iters: int) -> float:
        if not self.cuda:
            t = time.perf_counter()
            for _ in range(iters):
                fn(x)
            return (time.perf_counter() - t) * 1e3 / iters
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn(x)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters


class Bench:
    """The run's settings, clock, report and the candidates built so far (reused across sections)."""

    def __init__(self, args) -> None:
        self.args = args
        self.device = args.device
        self.timer = Timer(args.device)
        self.built: dict[str, object] = {}
        # a training path's losses on its first calls (the first and the warm-up ones), wherever it was built
        self.first_losses: dict[str, list[float]] = {}
        self.report: dict = {}
        self.images: torch.Tensor | None = None

    def left(self) -> float:
        return self.args.time_budget - (time.perf_counter() - T0)

    def build(self, name: str, make) -> object:
        """Build a candidate once (models, compiles and CUDA graphs are costly); later sections reuse it."""
        if name not in self.built:
            t = time.perf_counter()
            self.built[name] = make()
            log(f"  built {name} in {time.perf_counter() - t:.1f}s")
        return self.built[name]

    def alternate(self, makers: dict, x, *, iters: int, warmup: int) -> dict:
        """Build and warm up each candidate (a failure drops only that one), then time them in turn (A B C, A B C,
        ...). Per candidate: median/min/max ms per call and the first call's seconds (compile/tuning included); for a
        training step, which returns its loss, the losses of its first call and of its warm-up calls, at least
        GRAPH_WARMUP of them (`losses`, and the first as `first_loss`: its very first, from the section that built
        it, for a path an earlier section trained on): a step replayed as a CUDA graph (`step_graph.StepGraph`) is
        captured within them, so they are its model's steps 1, 2, ... as every other path's are."""
        out: dict[str, dict] = {}
        ready = {}
        for name, make in makers.items():
            if isinstance(make, str):  # a reason this candidate cannot run here
                out[name] = {"skipped": make}
                continue
            try:
                fn = self.build(name, make)
                t = time.perf_counter()
                y = fn(x)
                self.timer.sync()
                first = time.perf_counter() - t
                out[name] = {"first_call_s": round(first, 2)}
                if isinstance(y, torch.Tensor) and y.dim() == 0:  # a training step: its loss, step by step
                    losses = [y.item()] + [fn(x).item() for _ in range(max(warmup, GRAPH_WARMUP))]
                    losses = self.first_losses.setdefault(name, losses)
                    out[name].update(first_loss=losses[0], losses=losses)
                else:
                    for _ in range(warmup):
                        fn(x)
                self.timer.sync()
                ready[name] = fn
                log(f"  warm {name}: first call {first:.1f}s")
            except Exception as exc:  # noqa: BLE001 - keep timing the others, record why this one failed
                out[name] = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-1500:]}
                log(f"  {name} FAILED: {exc!r}"[:300])
        samples: dict[str, list[float]] = {name: [] for name in ready}
        for _ in range(self.args.rounds):
            for name, fn in ready.items():
                samples[name].append(self.timer.ms(fn, x, iters))
        for name, v in samples.items():
            med = statistics.median(v)
            out[name].update(median_ms=med, min_ms=min(v), max_ms=max(v), images_per_s=x.shape[0] / (med / 1e3))
            log(f"  {name}: {med:.3f} ms, {x.shape[0] / (med / 1e3):,.0f} img/s")
        return out


def hbm_bandwidth_gbs(b: Bench, nbytes: int) -> float:
    """Device-to-device copy bandwidth (read + write) in GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=b.device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = min(b.timer.ms(lambda _: dst.copy_(src), None, 10) for _ in range(3))
    return 2 * nbytes / (ms / 1e3) / 1e9


def activation_values(model: MobileNetV1) -> int:
    """Values written by conv layers per image (stem, every depthwise and pointwise output), from the cost model."""
    total = 0
    for layer in count_complexity(model.spec).layers:
        if layer.layer_type and layer.layer_type != "Fully Connected":
            h, w, c = (int(v) for v in layer.output_size.split(" x "))
            total += h * w * c
    return total


def load_images(folder: str | None, spec, n: int, device: str) -> tuple[torch.Tensor, str]:
    if folder:
        from mobilenets.preprocess import load_batch

        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        paths = paths[:: max(1, len(paths) // n)][:n]  # spread over the (sorted, class-per-folder) set
        if paths:
            return load_batch(paths, spec).to(device), f"{len(paths)} images from {folder}"
    torch.manual_seed(0)
    return torch.randn(n, 3, spec.resolution, spec.resolution, device=device), "random normal (no --images)"


def calibrate_bn(model: MobileNetV1, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of ``x`` (one pass, cumulative average).

    A random init leaves running mean 0 / var 1: every folded bias is then zero (a bias bug in a fast path would go
    unseen) and the logits shrink to ~1e-18 through 13 depthwise layers. Calibrated, the model sees activations at a
    trained network's scale, which is what the numerics check should exercise.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    model.to(x.device).train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1
    model.to(device).eval()


def module_runner(m: torch.nn.Module, dtype: torch.dtype, layout):
    """Inference closure matching `fast_inference`'s: cast and lay out the input inside, no autograd."""

    @torch.inference_mode()
    def run(x):
        return m(x.to(dtype).contiguous(memory_format=layout))

    return run


def compiled_ours(model: MobileNetV1, compile_kwargs: dict, device: str, **kw):
    """``model`` through `fast_inference`'s compile backend in bf16, with the run's ``torch.compile`` options."""
    mode, backend = compile_kwargs.get("mode"), compile_kwargs.get("backend", "inductor")
    return fast_inference(model, backend="compile", dtype="bf16", device=device, compile_mode=mode,
                          compile_backend=backend, **kw)  # fmt: skip


def fast_layers(model: MobileNetV1, depthwise: str = "flipped") -> MobileNetV1:
    """``model`` (in place) with the two training-speed layers that keep PyTorch's kernels (tests/
    test_train_speed_layers.py): depthwise layers whose stride-1 input gradient is a forward convolution
    (``--depthwise flipped``), and the stem's input channels zero-padded to 8 (``--pad-stem``). ``depthwise="hybrid"``:
    the stride-2 layers' input gradient by Triton's kernel too (``--depthwise hybrid``)."""
    dwconv.use_depthwise(model, depthwise)
    return pad_stem(model)


def tuned_compile(compile_kwargs: dict, cudagraphs: bool = False) -> dict:
    """``compile_kwargs`` with Inductor's coordinate-descent tuning of its generated kernels' launch configs (the
    BatchNorm/ReLU kernels: half of ours' compiled step's GPU time on the third H200 lease of 2026-11-27), and with
    ``cudagraphs`` its own CUDA graphs of the forward and backward passes (mode reduce-overhead): the options of
    ``mobilenets train --compile-tuning [--compile-cudagraphs]`` (`trainer.inductor_options`). torch.compile takes
    ``options`` only without ``mode``, so the default mode is dropped (it is what no mode means)."""
    if compile_kwargs.get("mode") not in (None, "default"):
        raise ValueError(f"train_tuned needs the default compile mode, not {compile_kwargs['mode']!r}")
    kept = {k: v for k, v in compile_kwargs.items() if k != "mode"}
    return {**kept, "options": {**kept.get("options", {}), **inductor_options(True, cudagraphs)}}


def step_parts(model, *, device: str, compile_kwargs: dict | None, batch: int):
    """What every timed training step trains with: the model on ``device`` in training mode and channels_last,
    SGD-Nesterov (fused on CUDA; its group's ``base_lr`` for `optim.set_lr`), the model compiled with
    ``compile_kwargs`` (None: not), and one batch of targets drawn after them (so that two steps built from one seed
    draw the same targets). Returns (optimizer, network, targets)."""
    model = model.to(device).train().to(memory_format=torch.channels_last)
    group = {"params": list(model.parameters()), "lr": 0.1, "base_lr": 0.1}
    opt = torch.optim.SGD([group], lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5, fused=device == "cuda")
    net = torch.compile(model, **compile_kwargs) if compile_kwargs is not None else model
    return opt, net, torch.randint(0, 1000, (batch,), device=device)


def step_context(opt: torch.optim.Optimizer, device: str) -> StepContext:
    """The trainer's step settings every timed step runs with: bf16 autocast, channels_last batches, a constant rate
    (`optim.set_lr` of the groups' ``base_lr``), nothing else (no smoothing, mixing, clipping, EMA or teacher)."""
    return StepContext(optimizer=opt, lr_at=lambda _: 1.0, set_lr=set_lr, env=DistEnv(device=torch.device(device)),
                       amp_dtype=torch.bfloat16, channels_last=True)  # fmt: skip


def train_step_fn(model, *, device: str, compile_kwargs: dict | None, batch: int):
    """The trainer's own step (`engine.optimizer_step`: forward and loss under bf16 autocast, backward, the
    optimizer step) with `step_parts`' SGD-Nesterov (fused on CUDA) on a channels_last model; returns the loss."""
    opt, net, target = step_parts(model, device=device, compile_kwargs=compile_kwargs, batch=batch)
    ctx = step_context(opt, device)
    return lambda x: optimizer_step(net, x, target, ctx)[0]


# The paths `profile` looks at, in this order, wherever an earlier section built them (inference ones take the batch
# of random images, training ones a channels_last batch).
PROFILED_INFERENCE = (
    "ours_bf16_cl_compiled", "timm_bf16_cl_compiled", "ours_bf16_cl_triton", "ours_bf16_cl_eager", "timm_bf16_cl",
)  # fmt: skip
PROFILED_TRAIN = (
    "ours_compiled", "timm_compiled", "ours_compiled_fast", "ours_compiled_graph", "timm_compiled_graph",
    "ours_compiled_taps_dw", "ours_compiled_triton_dw", "ours_eager", "timm_eager",
)  # fmt: skip
# batch 1 (latency_batch1's names): where a replayed graph's time goes, kernel by kernel, against timm's best; and
# the compiled models launched directly (how much of their latency is launching)
PROFILED_BATCH1 = (
    "b1_ours_triton_cudagraph", "b1_ours_compiled_cudagraph", "b1_timm_compiled_cudagraph", "b1_ours_compiled",
    "b1_timm_compiled",
)  # fmt: skip
PROFILE_STEPS, PROFILE_TOP = 5, 25
# --smoke profiles each path over 2 calls: still an average over calls, and its ~12 CPU paths (training steps of
# 0.1-2 s each, every op's shapes recorded and grouped) were the smoke run's costliest section at 5
SMOKE_PROFILE_STEPS = 2
OUR_KERNELS = (
    "_dw_kernel", "_dw_rows_kernel", "_dwpw_kernel", "_stem_kernel", "_dgrad_kernel", "_dgrad_s2_kernel",
    "_wgrad_kernel",
)  # fmt: skip
# kernel (or, on CPU, op) name fragments -> category; the first match wins, so BatchNorm (cuDNN's bn_fw/bn_bw
# kernels live in its namespace) comes before convolutions, and convolutions (whose cuDNN kernel names often say
# "implicit_gemm") before GEMMs
CATEGORIES = (
    ("ours_triton", OUR_KERNELS),
    ("inductor_gemm", ("triton_tem",)),
    ("inductor_fused", ("triton_",)),
    ("batchnorm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit", "depthwise", "winograd")),
    ("gemm", ("gemm", "nvjet", "cutlass", "cublas", "aten::mm", "aten::addmm", "aten::linear", "matmul")),
    ("optimizer", ("multi_tensor", "foreach", "fused_sgd", "_fused_", "sgd")),
    ("copy", ("memcpy", "memset", "copy")),
    ("reduction", ("reduce", "softmax", "nll_loss", "cross_entropy", "sum")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "relu", "threshold", "add", "mul", "fill", "where")),
)


def kernel_category(name: str) -> str:
    low = name.lower()
    for category, fragments in CATEGORIES:
        if any(f.lower() in low for f in fragments):
            return category
    return "other"


def time_by_name(events, *, cuda: bool) -> dict[str, list[float]]:
    """{name: [microseconds, count]} of the profiler's ``events``: on CUDA each kernel's and copy's GPU time, on CPU
    each op's self CPU time. A profiler range (record_function: ours around each Triton launch, Inductor's around each
    compiled call) also appears on the GPU timeline, spanning the kernels it encloses; it is left out (counted, it
    doubled the H200 lease's totals of 2026-11-27: ours_bf16_cl_triton 4.39 ms per call for a 2.65 ms median)."""
    from torch.autograd import DeviceType

    per_name: dict[str, list[float]] = {}
    for e in events:
        if cuda and e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False):
            us = e.time_range.elapsed_us()
        elif not cuda and e.device_type == DeviceType.CPU:
            us = e.self_cpu_time_total
        else:
            continue
        row = per_name.setdefault(e.name, [0.0, 0])
        row[0] += us
        row[1] += 1
    return per_name


def profile_path(fn, x, *, cuda: bool, steps: int = PROFILE_STEPS, top: int = PROFILE_TOP) -> dict:
    """Run ``fn(x)`` once, then ``steps`` times under torch.profiler. On CUDA: the GPU time of every kernel (and
    copy) per call, summed by `kernel_category`, and the ``top`` costliest kernels with their launches per call; on
    CPU the same from each op's self CPU time. ``wall_ms_per_call`` includes the profiler's own overhead."""
    from torch.profiler import ProfilerActivity, profile

    fn(x)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            fn(x)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    per_name = time_by_name(prof.events(), cuda=cuda)
    total_us = sum(us for us, _ in per_name.values())
    by_category: dict[str, float] = {}
    for name, (us, _n) in per_name.items():
        cat = kernel_category(name)
        by_category[cat] = by_category.get(cat, 0.0) + us / 1e3 / steps
    costliest = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "by_op_and_shape": op_shape_costs(prof, cuda=cuda, steps=steps, top=top),
        "steps": steps,
        "timed": "GPU time of kernels and copies" if cuda else "self CPU time of ops",
        "ms_per_call": total_us / 1e3 / steps,
        "wall_ms_per_call": wall * 1e3 / steps,
        "events_per_call": sum(n for _us, n in per_name.values()) / steps,  # kernels and copies (CPU: ops)
        "by_category_ms": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
        "top": [
            {"name": name[:160], "category": kernel_category(name), "ms_per_call": us / 1e3 / steps,
             "calls_per_call": n / steps, "share": us / total_us if total_us else 0.0}
            for name, (us, n) in costliest
        ],
    }  # fmt: skip


def op_shape_costs(prof, *, cuda: bool, steps: int, top: int) -> list[dict]:
    """Which layers the time goes to: the ``top`` (op, input shapes) pairs by the GPU time of the kernels each op
    launched itself (its children's counted under them, so nothing twice; on CPU, self CPU time). Shapes name the
    layer: the first convolution's backward is the one with a 3-channel input, a depthwise one has groups = channels."""
    from torch.autograd import DeviceType

    rows = []
    for avg in prof.key_averages(group_by_input_shape=True):
        if avg.device_type != DeviceType.CPU:  # a kernel's own row: its time is already its launching op's
            continue
        us = getattr(avg, "self_device_time_total", None) if cuda else avg.self_cpu_time_total
        if cuda and us is None:
            us = getattr(avg, "self_cuda_time_total", 0.0)
        if us and us > 0:
            shapes = [list(sh) for sh in avg.input_shapes if sh][:3]
            rows.append({"op": avg.key[:80], "shapes": shapes, "ms_per_call": us / 1e3 / steps,
                         "calls_per_call": avg.count / steps})  # fmt: skip
    return sorted(rows, key=lambda r: -r["ms_per_call"])[:top]


def dw_model(model: MobileNetV1, impl: str = "triton") -> MobileNetV1:
    """``model`` with its depthwise convolutions as ``impl`` (`dwconv.IMPLEMENTATIONS`: Triton kernels, or taps that
    Inductor fuses), forward and backward."""
    dwconv.use_depthwise(model, impl)
    return model


def dw_train_numerics(model: MobileNetV1, x: torch.Tensor, device: str, impl: str) -> dict:
    """One eager fp32 training forward/backward (batch statistics, no dropout) with PyTorch's and with the ``impl``
    depthwise layers, same weights: loss difference and the largest gradient difference relative to the largest
    gradient; and how far each is from the same step in fp64 (PyTorch's layers), which tells a wrong tap from the
    rounding that a few images' BatchNorm statistics amplify in fp32 (both miss fp64 by ~2% on 4 images at 64 px)."""
    labels = torch.arange(len(x), device=device) % model.num_classes

    def grads(m, dtype=torch.float32):
        m = m.to(device, dtype).train().to(memory_format=torch.channels_last)
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        loss = torch.nn.functional.cross_entropy(m(x.to(dtype).contiguous(memory_format=torch.channels_last)), labels)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in m.parameters()]).double()

    exact_loss, exact_g = grads(copy.deepcopy(model), torch.float64)
    ref_loss, ref_g = grads(copy.deepcopy(model))
    loss, g = grads(dw_model(copy.deepcopy(model), impl))
    scale = exact_g.abs().max()
    return {
        "images": len(x),
        "loss_diff": abs(loss - ref_loss),
        "grad_max_abs_over_max": ((g - ref_g).abs().max() / ref_g.abs().max()).item(),
        "fp64_loss_diff": {impl: abs(loss - exact_loss), "conv": abs(ref_loss - exact_loss)},
        "fp64_grad_max_abs_over_max": {
            impl: ((g - exact_g).abs().max() / scale).item(),
            "conv": ((ref_g - exact_g).abs().max() / scale).item(),
        },
        "note": "fp32; cuDNN's convolutions run in TF32 by default",
    }


def compare_numerics(candidates: dict, reference, x, tolerance: dict, baseline, tf32: bool = False) -> dict:
    """Each path's logits against ``reference``'s on ``x``: max abs error relative to the logit range, top-1 agreement,
    pass/fail. A bf16 path passes within max(tolerance, BASELINE_SLACK x the error of ``baseline``, the unfused model
    simply cast to bf16): random weights are far more sensitive to bf16 than trained ones (a plain cast is ~10% off
    on the calibrated random model), so the fast path is held to what PyTorch's own bf16 gives on the same model.
    ``tf32``: fp32 convolutions run in TF32 on both sides, allowed a quarter of the bf16 baseline's error."""
    with torch.inference_mode():
        ref = reference(x).float()
        scale = max(ref.abs().max().item(), 1e-30)
        base_rel = (baseline(x).float() - ref).abs().max().item() / scale
        out = {"bf16_baseline": {"path": "unfused model cast to bf16 (NCHW)", "max_abs_over_ref_max": base_rel}}
        for name, (fn, dtype) in candidates.items():
            try:
                y = fn(x).float()
                err = (y - ref).abs().max().item()
                allowed = tolerance[dtype]
                if dtype == "bf16":
                    allowed = max(allowed, BASELINE_SLACK * base_rel)
                elif tf32:  # TF32 rounds 8x finer than bf16 (10 vs 7 stored mantissa bits): a quarter, 2x slack
                    allowed = max(allowed, base_rel / 4)
                out[name] = {
                    "dtype": dtype,
                    "max_abs": err,
                    "ref_max_abs": scale,
                    "max_abs_over_ref_max": err / scale,
                    "tolerance": tolerance[dtype],
                    "allowed_over_ref_max": allowed,
                    "top1_agreement": (y.argmax(1) == ref.argmax(1)).float().mean().item(),
                    "pass": err <= allowed * scale,
                }
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-1500:]}
    return out


def trained_numerics(args, dev: str, tolerance: dict, tf32: bool, triton_ok: bool, compile_kwargs: dict) -> dict:
    """`compare_numerics` for our fast paths on ``--numerics-weights`` (e.g. TF's 0.75 MobileNet-192, converted):
    eager fp32 as the reference, at the weights' resolution, on the real ``--images``; and how often every path's
    top-1 agrees with it."""
    from mobilenets import weights

    trained = weights.load(args.numerics_weights).eval()
    images, described = load_images(args.images, trained.spec, args.numerics_images, dev)
    reference = module_runner(copy.deepcopy(trained).to(dev), torch.float32, torch.contiguous_format)
    cast = module_runner(copy.deepcopy(trained).to(dev, torch.bfloat16), torch.bfloat16, torch.contiguous_format)
    compiled = compiled_ours(trained, compile_kwargs, dev)
    paths = {
        "ours_fp32": (fast_inference(trained, backend="eager", dtype="fp32", device=dev, channels_last=False), "fp32"),
        "ours_bf16_cl_eager": (fast_inference(trained, backend="eager", dtype="bf16", device=dev), "bf16"),
        "ours_bf16_cl_compiled": (compiled, "bf16"),
    }
    if triton_ok:
        paths["ours_bf16_cl_triton"] = (fast_inference(trained, backend="triton", dtype="bf16", device=dev), "bf16")
    spec = trained.spec
    return {
        "weights": str(args.numerics_weights),
        "model": f"alpha {spec.alpha:g}, resolution {spec.resolution}, act {spec.act}, tf_padding {spec.tf_padding}",
        "images": described,
        **compare_numerics(paths, reference, images, tolerance, cast, tf32),
    }


PREFLIGHT_TIMEOUT_S = 150


def preflight_child(res: int, device: str, batch: int) -> None:
    """The Triton paths once at ``batch`` (inference; a bf16 training step with the Triton depthwise layers)."""
    x = torch.randn(batch, 3, res, res, device=device)
    fast_inference(MobileNetV1(resolution=res), backend="triton", dtype="bf16", device=device)(x)
    model = dw_model(MobileNetV1(resolution=res)).to(device, memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = model(x.contiguous(memory_format=torch.channels_last)).float().square().mean()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()


def preflight(res: int, device: str = "cuda", triton_configs: int = 0, batch: int = 8) -> str | None:
    """Run the Triton paths first in a child process: a kernel fault (an illegal address is sticky, it poisons the
    CUDA context) must not cost this process's measurements of everything else. The child tunes the same configs
    (``--triton-configs``), so their compiled kernels are in Triton's disk cache for the real run. None if the
    child passed, else why it did not. ``batch``: 8 on the GPU; the CPU test runs the interpreter at 2 (training
    steps cost it in proportion), and BatchNorm in training needs more than one image at 1x1."""
    cmd = [sys.executable, __file__, "--preflight-child", "--resolution", str(res), "--device", device,
           "--triton-configs", str(triton_configs), "--batch", str(batch)]  # fmt: skip
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PREFLIGHT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"Triton preflight did not finish in {PREFLIGHT_TIMEOUT_S} s"
    log(f"triton preflight: exit {proc.returncode} in {time.perf_counter() - t:.1f}s")
    if proc.returncode == 0:
        return None
    return f"Triton preflight failed (exit status {proc.returncode}): {proc.stderr.strip()[-600:] or 'no error output'}"


# the sections that run our Triton kernels (the training ones only with --train-dw-variants): the preflight child
# runs first only when one of them is asked for
TRITON_SECTIONS = frozenset(("inference_eager", "numerics", "latency_batch1", "inference_compiled", "numerics_trained"))


def uses_triton(sections: set[str], train_dw_variants: bool, hybrid: bool = False) -> bool:
    """Whether a section asked for runs our Triton kernels (train_tuned with --hybrid: the stride-2 input gradient,
    which the preflight child's training step runs too, `dwconv.depthwise3x3_dgrad`)."""
    return (
        bool(sections & TRITON_SECTIONS)
        or (train_dw_variants and bool(sections & {"train_eager", "train_compiled"}))
        or (hybrid and "train_tuned" in sections)
    )


def run_sections(b: Bench, timm) -> None:
    args, dev, report = b.args, b.device, b.report
    res, batch, bf16, cl = args.resolution, args.batch, torch.bfloat16, torch.channels_last
    cuda = dev == "cuda"
    triton_ok = kernels.runs_on(dev)
    no_triton = (
        "Triton kernels need CUDA, or TRITON_INTERPRET=1 on CPU"
        if kernels.triton_available()
        else ("triton is not installed")
    )
    report["triton_configs"] = {"fused": kernels.FUSED_CONFIGS, "split": kernels.SPLIT_CONFIGS}
    wanted = set(args.sections.split(",")) if args.sections else set(SECTIONS)
    if triton_ok and cuda and not uses_triton(wanted, args.train_dw_variants, args.hybrid):
        report["triton_preflight"] = "not run: no section asked for runs our Triton kernels"  # 10-34 s saved
    elif triton_ok and cuda:
        failed = preflight(res, triton_configs=args.triton_configs)
        report["triton_preflight"] = failed or "passed"
        if failed:
            triton_ok, no_triton = False, failed
    # static shapes in every compile: Dynamo remembers the shapes each model class's forward was compiled at, so after
    # latency_batch1 compiled timm at batch 1, a later compile of another copy at 256 would default to a symbolic
    # batch (seen on CPU with torch 2.14) and time other code than earlier leases did (ours: fast_inference is static)
    if cuda or not args.smoke:
        compile_kwargs: dict = {"mode": "default", "dynamic": False}
    else:
        compile_kwargs = {"backend": "eager", "dynamic": False}
        report["compile_note"] = "CPU smoke: torch.compile(backend='eager') runs Dynamo only; Inductor not exercised"
    tolerance = dict(TOLERANCE)
    tolerance_note = "bf16: 8 mantissa bits over ~28 rounded layers; fp32: summation order only"
    tf32 = cuda and torch.backends.cudnn.allow_tf32
    if tf32:
        tolerance["fp32"] = 1e-2  # both sides run cuDNN convs in TF32 (10 mantissa bits), PyTorch's default
        tolerance_note = (
            "bf16: 8 mantissa bits over ~28 rounded layers; fp32: cuDNN convs in TF32 (the default), allowed "
            "max(tolerance, bf16_baseline's error / 4)"
        )
    # one seed for the random init: the numerics checks of every run judge the same weights (unseeded, the taps' fp64
    # gradient error on the CPU smoke's 4 images ranged 0.3x-3.1x PyTorch layers' over 60 inits, past the 2x slack
    # once: a flaky smoke test, tests/test_gpu_vs_timm_smoke.py)
    torch.manual_seed(0)
    ours = MobileNetV1(num_classes=1000, resolution=res).eval()
    if args.weights:
        from mobilenets import weights

        ours = weights.load(args.weights).eval()
    b.images, report["numerics_images"] = load_images(args.images, ours.spec, args.numerics_images, dev)
    if not args.weights:
        calibrate_bn(ours, b.images)
    report["weights"] = args.weights or "random init, BN statistics calibrated on the numerics images"
    peer = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    values = activation_values(ours)
    iters, warmup = args.iters, args.warmup
    x = torch.randn(batch, 3, res, res, device=dev)

    def peer_copy(dtype, layout):
        return copy.deepcopy(peer).to(device=dev, dtype=dtype).to(memory_format=layout).eval()

    def timm_compiled_runner():
        """A fresh copy of timm's model in bf16 channels_last, compiled with the run's options."""
        return module_runner(torch.compile(peer_copy(bf16, cl), **compile_kwargs), bf16, cl)

    def baseline():
        return module_runner(copy.deepcopy(ours).to(dev, bf16), bf16, torch.contiguous_format)

    def hbm_bound():
        gbs = hbm_bandwidth_gbs(b, (2 << 30) if cuda else (64 << 20))
        bytes_per_image = 2 * values * 2  # bf16, each activation written once and read once
        return {
            "copy_gbs": gbs,
            "activation_values_per_image": values,
            "bytes_per_image": bytes_per_image,
            "bound_images_per_s": gbs * 1e9 / bytes_per_image,
        }

    graphs = cuda and not args.no_graphs
    no_graph = "left out by --no-graphs" if cuda else "CUDA graphs need CUDA"

    def graphed(fn, batch: int):
        """``fn`` captured as a CUDA graph on a bf16 channels_last input of ``batch`` images (the callables cast)."""
        return CudaGraphRunner(fn, torch.zeros(batch, 3, res, res, device=dev, dtype=bf16).contiguous(memory_format=cl))

    def same_as_ungraphed(out: dict, graph: str, twin: str) -> None:
        """Record how far the captured graph's logits are from its uncaptured twin's on ``x`` (0 when it replays the
        same kernels): a graph path can be the best one, so its output is checked, not only its speed."""
        if graph in b.built and twin in b.built and "error" not in out.get(graph, {}):
            try:
                with torch.inference_mode():
                    replayed = b.built[graph](x).clone().float()
                    direct = b.built[twin](x).float()
                out[graph]["max_abs_diff_vs_ungraphed"] = (replayed - direct).abs().max().item()
                out[graph]["ungraphed_max_abs"] = direct.abs().max().item()  # the scale `_output_checked` judges by
                # where a NaN comes from (NaN on two H200 leases): the replay's logits, the twin's, or both
                out[graph]["nonfinite_logits"] = {
                    "graph": int((~replayed.isfinite()).sum()),
                    "ungraphed": int((~direct.isfinite()).sum()),
                    "of": replayed.numel(),
                }
            except Exception as exc:  # noqa: BLE001 - recorded; the section's timings stand
                out[graph]["max_abs_diff_vs_ungraphed"] = {"error": repr(exc)[:300]}

    def triton_makers() -> dict:
        """Our Triton path, and the same kernels replayed as one CUDA graph (no per-launch Python/driver cost)."""
        return {
            "ours_bf16_cl_triton": (lambda: fast_inference(ours, backend="triton", dtype="bf16", device=dev))
            if triton_ok
            else no_triton,
            "ours_bf16_cl_triton_graph": (
                lambda: fast_inference(ours, backend="triton", dtype="bf16", device=dev, cuda_graph_batch=x.shape[0])
            )
            if graphs and triton_ok and not args.no_triton_graph
            else (no_graph if not graphs else no_triton if not triton_ok else "left out by --no-triton-graph"),
        }

    def inference_eager():
        makers = {
            "timm_fp32": lambda: module_runner(
                peer_copy(torch.float32, torch.contiguous_format), torch.float32, torch.contiguous_format
            ),
            "ours_fp32": lambda: fast_inference(ours, backend="eager", dtype="fp32", device=dev, channels_last=False),
            "timm_bf16_cl": lambda: module_runner(peer_copy(bf16, cl), bf16, cl),
            "ours_bf16_cl_eager": lambda: fast_inference(ours, backend="eager", dtype="bf16", device=dev),
            **triton_makers(),
        }
        out = b.alternate(makers, x, iters=iters, warmup=warmup)
        same_as_ungraphed(out, "ours_bf16_cl_triton_graph", "ours_bf16_cl_triton")
        return out

    def numerics():
        reference = module_runner(copy.deepcopy(ours).to(dev), torch.float32, torch.contiguous_format)
        paths = {
            "ours_fp32": (
                b.build(
                    "ours_fp32",
                    lambda: fast_inference(ours, backend="eager", dtype="fp32", device=dev, channels_last=False),
                ),
                "fp32",
            ),
            "ours_bf16_cl_eager": (
                b.build("ours_bf16_cl_eager", lambda: fast_inference(ours, backend="eager", dtype="bf16", device=dev)),
                "bf16",
            ),
        }
        skipped = {}
        if triton_ok:
            make = lambda: fast_inference(ours, backend="triton", dtype="bf16", device=dev)  # noqa: E731
            paths["ours_bf16_cl_triton"] = (b.build("ours_bf16_cl_triton", make), "bf16")
        else:
            skipped["ours_bf16_cl_triton"] = {"skipped": no_triton}
        out = compare_numerics(paths, reference, b.images, tolerance, baseline(), tf32)
        notes = {}
        if kernels.INTERPRET and triton_ok:
            notes["interpreter_note"] = (
                "TRITON_INTERPRET=1 rounds fp32 to bf16 with about twice round-to-nearest-even's error (measured), so "
                "the bf16 Triton path's error is inflated on CPU; a GPU rounds to nearest even"
            )
        return {
            "images": report["numerics_images"],
            "reference": "ours eager fp32 (BN unfolded, NCHW)",
            "tolerance_rule": "max |logit - ref| <= allowed * max |ref logit|; bf16: allowed = max(tolerance, "
            f"{BASELINE_SLACK} x bf16_baseline's error)",
            "tolerance_note": tolerance_note,
            **notes,
            **out,
            **skipped,
        }

    def seeded(impl: str = "conv") -> MobileNetV1:
        """Our model from one seed, so that each variant starts from the same weights and labels: their losses at the
        same step must then agree (`_same_step_losses`), which checks the variants' arithmetic."""
        torch.manual_seed(0)
        return dw_model(MobileNetV1(resolution=res), impl)

    xt = torch.randn(batch, 3, res, res, device=dev).contiguous(memory_format=cl)  # every training step's batch

    def timm_step(compiled: dict | None):
        return lambda: train_step_fn(
            timm.create_model("mobilenetv1_100"), device=dev, compile_kwargs=compiled, batch=batch
        )

    def ours_step(compiled: dict | None, impl: str = "conv", fast: bool = False):
        """``fast``: `fast_layers` with ``impl`` ("conv": flipped) for the depthwise layers."""

        def make():
            model = fast_layers(seeded(), "flipped" if impl == "conv" else impl) if fast else seeded(impl)
            return train_step_fn(model, device=dev, compile_kwargs=compiled, batch=batch)

        return make

    def trainer_step(compiled: dict):
        """What ``mobilenets train --step-graph`` runs, on ours with the fast layers compiled with ``compiled``: the
        trainer's own step (`engine.train_step`: the rate set, then its `optimizer_step` replayed by the trainer's
        `StepGraph` after 3 eager steps, `step_graph.attach`), with train_step_fn's optimizer, targets and settings
        (`step_parts`, `step_context`), so that its losses match its twin's step by step. Left out: the epoch's
        running sums of the loss and the hits (a few small kernels)."""

        def make():
            opt, net, target = step_parts(fast_layers(seeded()), device=dev, compile_kwargs=compiled, batch=batch)
            ctx = step_context(opt, dev)
            step_graph.attach(ctx, net)
            return lambda x: train_step(net, x, target, ctx, 0)[0]

        return make if graphs else no_graph

    def graph_of(make):
        """``make``'s step captured whole (forward, backward, optimizer step) as one CUDA graph, by the trainer's
        `step_graph.StepGraph` (its first GRAPH_WARMUP calls train eagerly, the next is captured and replayed)."""
        return (lambda: step_graph.StepGraph(make(), GRAPH_WARMUP)) if graphs else no_graph

    def time_train(makers: dict) -> dict:
        if args.train_paths:
            makers = {k: v for k, v in makers.items() if k in args.train_paths}
        return b.alternate(makers, xt, iters=max(1, iters // 2), warmup=warmup)

    def train_makers(tag: str, kwargs: dict | None) -> dict:
        """timm's and our training steps, eager (``kwargs`` None) or compiled with ``kwargs``; compiled, each also
        captured whole as one CUDA graph, and ours with the fast layers (`fast_layers`) too."""
        makers: dict = {f"timm_{tag}": timm_step(kwargs), f"ours_{tag}": ours_step(kwargs)}
        if args.train_dw_variants:  # slower on the H200 leases: timed again only when asked
            makers[f"ours_{tag}_triton_dw"] = ours_step(kwargs, "triton") if triton_ok else no_triton
            if kwargs is not None:  # the taps are for Inductor to fuse; eager, they are nine products per layer
                makers[f"ours_{tag}_taps_dw"] = ours_step(kwargs, "taps")
        if kwargs is not None:
            makers[f"ours_{tag}_fast"] = ours_step(kwargs, fast=True)
            # the GPU idled 6% of ours' compiled step on the fourth H200 lease: launch costs
            makers[f"timm_{tag}_graph"] = graph_of(timm_step(kwargs))
            makers[f"ours_{tag}_graph"] = graph_of(ours_step(kwargs))
            makers[f"ours_{tag}_fast_graph"] = graph_of(ours_step(kwargs, fast=True))
        return makers

    def train_eager():
        out = {"fused_sgd": cuda, **time_train(train_makers("eager", None))}
        if triton_ok and args.train_dw_variants:  # after the timings, its failure recorded apart: it must not cost
            try:
                out["numerics_triton_dw"] = dw_train_numerics(ours, b.images[:8], dev, "triton")
            except Exception as exc:  # noqa: BLE001 - reported in the JSON, the run goes on
                out["numerics_triton_dw"] = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-1500:]}
        return out

    def latency_batch1():
        one = torch.randn(1, 3, res, res, device=dev)

        def compiled(name: str, make):
            """A batch-1 compiled model, built once for its direct and its CUDA-graph candidate (one compile)."""
            return b.build(f"b1_{name}_compiled_model", make)

        def timm_compiled():
            return compiled("timm", timm_compiled_runner)

        def ours_compiled():
            return compiled("ours", lambda: compiled_ours(ours, compile_kwargs, dev))

        # timm's best at batch 1 is compiled and replayed as a CUDA graph (issue 7: 0.20 ms on its H200), which the
        # first leases' figures left out: they compared ours with timm's eager graph only
        makers = {
            "timm_eager": lambda: module_runner(peer_copy(bf16, cl), bf16, cl),
            "timm_cudagraph": (lambda: graphed(module_runner(peer_copy(bf16, cl), bf16, cl), 1))
            if graphs
            else no_graph,
            "timm_compiled": timm_compiled,
            "timm_compiled_cudagraph": (lambda: graphed(timm_compiled(), 1)) if graphs else no_graph,
            "ours_compiled": ours_compiled,
            "ours_compiled_cudagraph": (lambda: graphed(ours_compiled(), 1)) if graphs else no_graph,
            "ours_eager": lambda: fast_inference(ours, backend="eager", dtype="bf16", device=dev),
            "ours_eager_cudagraph": (
                lambda: fast_inference(ours, backend="eager", dtype="bf16", device=dev, cuda_graph_batch=1)
            )
            if graphs
            else no_graph,
            "ours_triton_cudagraph": (
                lambda: fast_inference(ours, backend="triton", dtype="bf16", device=dev, cuda_graph_batch=1)
            )
            if graphs and triton_ok
            else (no_graph if not graphs else no_triton),
        }
        # batch-1 candidates are distinct objects from the batch-256 ones: keep them out of the shared cache
        makers = {f"b1_{k}": v for k, v in makers.items()}
        out = b.alternate(makers, one, iters=iters * 10, warmup=warmup * 4)
        return {k[3:]: v for k, v in out.items()}

    def inference_compiled():
        def ours_compiled(**kw):
            return compiled_ours(ours, compile_kwargs, dev, **kw)

        # each also replayed as one CUDA graph (what mode="reduce-overhead" does), so the comparison stays like for like
        makers = {
            "timm_bf16_cl_compiled": timm_compiled_runner,
            "ours_bf16_cl_compiled": ours_compiled,
            "timm_bf16_cl_compiled_graph": (
                (lambda: graphed(timm_compiled_runner(), x.shape[0])) if graphs else no_graph
            ),
            "ours_bf16_cl_compiled_graph": (lambda: ours_compiled(cuda_graph_batch=x.shape[0])) if graphs else no_graph,
            # timed again here, in turn with timm compiled: the ratios to it are then side by side (built once)
            **triton_makers(),
        }
        out = {"compile": compile_kwargs, **b.alternate(makers, x, iters=iters, warmup=warmup)}
        same_as_ungraphed(out, "ours_bf16_cl_compiled_graph", "ours_bf16_cl_compiled")
        same_as_ungraphed(out, "timm_bf16_cl_compiled_graph", "timm_bf16_cl_compiled")
        if "ours_bf16_cl_compiled" in b.built:
            reference = module_runner(copy.deepcopy(ours).to(dev), torch.float32, torch.contiguous_format)
            out["numerics_vs_eager_fp32"] = compare_numerics(
                {"ours_bf16_cl_compiled": (b.built["ours_bf16_cl_compiled"], "bf16")},
                reference,
                b.images,
                tolerance,
                baseline(),
            )
        return out

    def train_tuned():
        """Ours with the fast layers compiled with Inductor's coordinate-descent tuning (`tuned_compile`), direct and
        as a CUDA graph (gpu_vs_timm's and the trainer's, `trainer_step`), beside timm compiled, timm compiled as a
        graph (timm's fastest untuned step) and the twins the checks need (all built by train_compiled: reused, no
        compile); with --tune-timm timm tuned too (like for like). A section of its own, after the profile: its
        tuning took 192 s on the H200 (fourth lease of 2026-11-27), and a run cut in it keeps the sections before."""
        tuned = tuned_compile(compile_kwargs)
        untuned = train_makers("compiled", compile_kwargs)  # the same makers as train_compiled's (built once)
        twins = (
            "timm_compiled",
            "timm_compiled_graph",
            "ours_compiled",
            "ours_compiled_fast",
            "ours_compiled_fast_graph",
        )
        makers = {name: untuned[name] for name in twins}
        makers["ours_compiled_fast_tuned"] = ours_step(tuned, fast=True)
        makers["ours_compiled_fast_tuned_graph"] = graph_of(makers["ours_compiled_fast_tuned"])
        # what `mobilenets train --compile-tuning --compile-cudagraphs` runs: Inductor's own graphs of the forward and
        # backward passes (the kernels' tuning cached by the path above), the optimizer step launched apart
        makers["ours_compiled_fast_tuned_cudagraphs"] = (
            ours_step(tuned_compile(compile_kwargs, True), fast=True) if graphs else no_graph
        )
        makers["ours_compiled_fast_tuned_stepgraph"] = trainer_step(tuned)  # `mobilenets train --step-graph`'s step
        if args.hybrid:  # the flipped layers' step with the stride-2 input gradients by Triton (SAME_STEPS)
            hybrid = ours_step(tuned, "hybrid", fast=True)
            makers["ours_compiled_hybrid_tuned_graph"] = graph_of(hybrid) if triton_ok else no_triton
        if args.tune_timm:
            makers["timm_compiled_tuned"] = timm_step(tuned)
            makers["timm_compiled_tuned_graph"] = graph_of(makers["timm_compiled_tuned"])
        return {"compile": tuned, **time_train(makers)}

    def train_compiled():
        out = {"compile": compile_kwargs, **time_train(train_makers("compiled", compile_kwargs))}
        if args.train_dw_variants:
            try:  # eager fp32, so it checks the taps' sum itself, not Inductor's reordering (tests/test_dwconv_taps.py)
                out["numerics_taps_dw"] = dw_train_numerics(ours, b.images[:8], dev, "taps")
            except Exception as exc:  # noqa: BLE001 - reported in the JSON, the run goes on
                out["numerics_taps_dw"] = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-1500:]}
        return out

    def numerics_trained():
        """The numerics check on trained weights (which random ones stand in for badly). Last: its new layer shapes
        compile and tune Triton kernels that no preflight child has run, so a kernel fault here costs nothing else."""
        if not args.numerics_weights:
            return {"skipped": "no --numerics-weights"}
        return trained_numerics(args, dev, tolerance, tf32, triton_ok, compile_kwargs)

    def profile():
        timed = {**report.get("inference_eager", {}), **report.get("inference_compiled", {})}
        timed.update({**report.get("train_eager", {}), **report.get("train_compiled", {})})
        timed.update({f"b1_{k}": v for k, v in report.get("latency_batch1", {}).items()})
        one = torch.randn(1, 3, res, res, device=dev)
        profile_steps = SMOKE_PROFILE_STEPS if args.smoke else PROFILE_STEPS
        out: dict[str, dict] = {}
        for name in PROFILED_INFERENCE + PROFILED_TRAIN + PROFILED_BATCH1:
            if name not in b.built or "error" in timed.get(name, {}):
                continue
            inputs = xt if name in PROFILED_TRAIN else one if name in PROFILED_BATCH1 else x
            try:
                row = profile_path(b.built[name], inputs, cuda=cuda, steps=profile_steps)
            except Exception as exc:  # noqa: BLE001 - recorded; the other paths are still profiled
                out[name] = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-1500:]}
                continue
            median = timed.get(name, {}).get("median_ms")
            if median and cuda:  # below 1: the GPU idles between kernels (launch-bound) in the unprofiled timing
                row["gpu_busy_over_median"] = row["ms_per_call"] / median
            out[name] = row
            log(f"  profiled {name}: {row['ms_per_call']:.3f} ms/call, {json.dumps(row['by_category_ms'])[:200]}")
        return out or {"skipped": "no path built by an earlier section"}

    bodies = {
        "hbm_bound": hbm_bound,
        "inference_eager": inference_eager,
        "numerics": numerics,
        "train_eager": train_eager,
        "latency_batch1": latency_batch1,
        "inference_compiled": inference_compiled,
        "train_compiled": train_compiled,
        "profile": profile,
        "train_tuned": train_tuned,
        "numerics_trained": numerics_trained,
    }
    for name in SECTIONS:
        if name not in wanted:
            report[name] = {"skipped": "not in --sections"}
        elif args.skip_train and name.startswith("train"):
            report[name] = {"skipped": "--skip-train"}
        else:
            section(b, name, bodies[name])
        if kernels.tuning_report():  # per layer shape: fused or split plan, and every candidate's time
            report["triton_tuning"] = kernels.tuning_report()
        report["ratios"] = ratios(report)
        save(b)


def section(b: Bench, name: str, fn) -> None:
    extra = (TUNED_TIMM_S * b.args.tune_timm + HYBRID_S * b.args.hybrid) if name == "train_tuned" else 0
    estimate = (ESTIMATED_S[name] + extra) * (0.05 if b.args.smoke else 1.0)
    left = b.left()
    if left < estimate:
        b.report[name] = {"skipped": "time budget", "estimated_s": estimate, "left_s": round(left, 1)}
        log(f"{name}: skipped, {left:.0f}s left < {estimate:.0f}s estimated")
        return
    log(f"{name} ... ({left:.0f}s of budget left, ~{estimate:.0f}s estimated)")
    t = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - keep measuring the rest, record the failure
        result = {"error": repr(exc)[:500], "traceback": traceback.format_exc()[-2000:]}
    result["section_s"] = round(time.perf_counter() - t, 1)
    b.report[name] = result
    log(f"{name} done in {result['section_s']}s: {json.dumps(result, default=str)[:400]}")


def _speed(report: dict, sec: str, cand: str) -> float | None:
    v = report.get(sec, {}).get(cand)
    return v.get("images_per_s") if isinstance(v, dict) else None


# A CUDA graph replays its twin's kernels: its logits may differ from the twin's by rounding, not by more than this
# fraction of the twin's largest logit (the rule CudaGraphRunner checks itself by at capture)
GRAPH_TOL = REPLAY_TOLERANCE


def _output_checked(report: dict, cand: str) -> bool:
    """False for a CUDA-graph path whose logits were not its uncaptured twin's: the check failed, its difference was
    NaN, or it passed ``GRAPH_TOL`` x the twin's largest logit (``ungraphed_max_abs``; runs before it was recorded
    are judged by finiteness alone). Its speed is then no candidate for the best path: the Triton graph's check was
    NaN on two H200 leases, and on the third our compiled graph's logits were 15.6 off."""
    for sec in ("inference_compiled", "inference_eager"):
        row = report.get(sec, {}).get(cand)
        if isinstance(row, dict) and "max_abs_diff_vs_ungraphed" in row:
            diff, scale = row["max_abs_diff_vs_ungraphed"], row.get("ungraphed_max_abs")
            if not isinstance(diff, (int, float)) or not math.isfinite(diff):
                return False
            return scale is None or (isinstance(scale, (int, float)) and diff <= GRAPH_TOL * scale)
    return True


# A training path with other depthwise layers than PyTorch's counts as ours only where its eager fp32 gradients were
# checked (`dw_train_numerics`): no further from fp64 than PyTorch's own, give or take this factor and offset; and,
# where both were timed from the same seed, its loss within FIRST_LOSS_TOL (relative) of PyTorch's layers' at the
# same step (the same steps compiled: bf16 rounding and a dropout mask apart)
DW_NUMERICS = {"_taps_dw": ("train_compiled", "numerics_taps_dw"), "_triton_dw": ("train_eager", "numerics_triton_dw")}
DW_GRAD_SLACK, DW_GRAD_FLOOR = 2.0, 1e-4
FIRST_LOSS_TOL = 2e-2
# Paths that compute their twin's steps (the name without the suffix) otherwise: replayed whole as a CUDA graph, with
# the fast layers (fast_layers), with Inductor's tuned configs or its own CUDA graphs (train_tuned). Each is checked
# against its twin at the latest step both recorded (`_same_step_losses`): ours within FIRST_LOSS_TOL (the same
# weights), timm's within GRAPH_LOSS_TOL (each timm model draws its own); a step on wrong weights gives NaN or a loss
# far off, one whose backward is wrong does not learn. A graph's first replay is its model's step GRAPH_WARMUP + 1,
# so each training path records the losses of its first GRAPH_WARMUP + 1 calls at least, each read right after its
# call: a graph returns one static tensor that the next replay overwrites. (The first lease of graphed steps read the
# first call's loss after the warm-up calls, step 7's, and compared it with the twin's step 1, 14% higher: every graph
# failed, right ones included; results/logs-h200-2026-11-27-lease4/README.md. Reports until 2026-11-28 captured with
# a runner that warmed up before its first call, which they record as `first_step`.)
GRAPH_LOSS_TOL = 0.1
# warm-up steps before a training step's capture: the benchmark's graphs' (`graph_of`) and the trainer's step graph's,
# whose first replay is step GRAPH_WARMUP + 1, which every training path's recorded losses reach
GRAPH_WARMUP = step_graph.WARMUP_STEPS
# a path replaying CUDA graphs (ours' or timm's whole step, the trainer's, Inductor's forward and backward) ends in
# one of these; each suffix names a path computing the same steps as the path without it (its twin)
REPLAYED_SUFFIXES = ("_graph", "_stepgraph", "_cudagraphs")
TWIN_SUFFIXES = (*REPLAYED_SUFFIXES, "_fast", "_tuned")
TRAIN_SECTIONS = ("train_compiled", "train_tuned")  # where compiled training paths are timed beside timm compiled
# Paths whose steps are another path's with other layers, checked against it as a twin (`_train_checked`): the hybrid
# depthwise layers compute the flipped ones' step, a stride-2 layer's input gradient by Triton's kernel
SAME_STEPS = {"ours_compiled_hybrid_tuned_graph": "ours_compiled_fast_tuned_graph"}


def _loss_row(report: dict, cand: str, section: str) -> dict | None:
    """Training path ``cand``'s row with its losses: from ``section`` first (a merged report's sections may come from
    different calls), else from another training section (a path built once has the same losses in each)."""
    order = (section, *(s for s in TRAIN_SECTIONS if s != section))
    return next((report[s][cand] for s in order if "first_loss" in report.get(s, {}).get(cand, {})), None)


def _same_step_losses(report: dict, cand: str, twin: str, section: str) -> tuple[float | None, float | None]:
    """``cand``'s and ``twin``'s losses at the latest step of their models both recorded (None, None where there is
    none): a row's `losses` start at its `first_step` (1; in reports until 2026-11-28, for a step replayed as a CUDA
    graph, the step after its runner's warm-up steps). A late step tells a step that trains from one that does not:
    the first is a forward pass at initialisation, about ln(classes) whatever the layers' backward does."""
    rows = [_loss_row(report, c, section) for c in (cand, twin)]
    if None in rows:
        return None, None
    spans = [(row.get("first_step", 1), row.get("losses") or [row["first_loss"]]) for row in rows]
    step = min(first + len(losses) for first, losses in spans) - 1
    if step < max(first for first, _ in spans):
        return None, None
    mine, theirs = (losses[step - first] for first, losses in spans)
    return mine, theirs


def _train_checked(report: dict, cand: str, section: str = "train_compiled") -> bool:
    """False for a training path that computes its twin's step otherwise (TWIN_SUFFIXES: replayed as a CUDA graph,
    fast layers, tuned, Inductor's CUDA graphs) unless its loss at the latest step both recorded is finite and within
    FIRST_LOSS_TOL of the twin's (ours: the same weights; timm's fresh ones, GRAPH_LOSS_TOL) and the twin checks
    out, down the chain; and for one with other depthwise layers whose gradient check is missing, failed or off, or
    whose loss is off its twin's with PyTorch's layers (see DW_NUMERICS). A path of SAME_STEPS has its twin named."""
    twin = SAME_STEPS.get(cand) or next((cand.removesuffix(s) for s in TWIN_SUFFIXES if cand.endswith(s)), None)
    if twin is not None:
        loss, ref = _same_step_losses(report, cand, twin, section)
        tol = FIRST_LOSS_TOL if cand.startswith("ours") else GRAPH_LOSS_TOL
        ok = loss is not None and ref is not None and abs(loss - ref) <= tol * abs(ref)  # NaN: False
        return ok and _train_checked(report, twin, section)
    for suffix, (sec, key) in DW_NUMERICS.items():
        if cand.endswith(suffix):
            row = report.get(sec, {}).get(key, {})
            errors = row.get("fp64_grad_max_abs_over_max") if isinstance(row, dict) else None
            if not errors:
                return False
            impl = suffix[1:].removesuffix("_dw")
            loss, ref = _same_step_losses(report, cand, cand.removesuffix(suffix), section)
            if loss is not None and ref is not None and not abs(loss - ref) <= FIRST_LOSS_TOL * abs(ref):
                return False
            return errors[impl] <= DW_GRAD_SLACK * errors["conv"] + DW_GRAD_FLOOR
    return True


def _replayed(path: str) -> bool:
    """Whether a training path replays CUDA graphs (ours' whole step, the trainer's, or Inductor's forward and
    backward)."""
    return path.endswith(REPLAYED_SUFFIXES)


def best_training(report: dict) -> dict:
    """The training target (issue 7): our fastest checked compiled step, whichever layers, graph or tuning, against
    timm compiled timed in the same section (side by side), and against timm's fastest checked compiled step there
    (like for like: for a step of ours that replays CUDA graphs, only where one of timm's that does was timed and
    checked beside it). Of several sections, the one where our step ran fastest (not the best ratio: a section whose
    timm compiled ran slow would win that)."""
    best: dict = {"best_ours_train": None, "best_ours_train_vs_timm_compiled": None}
    best["best_ours_train_vs_timm_best_compiled"] = None
    found = []
    for sec in TRAIN_SECTIONS:
        rows = report.get(sec, {})
        rates = {c: _speed(report, sec, c) for c in rows if isinstance(rows[c], dict) and c[:4] in ("ours", "timm")}
        rates = {c: v for c, v in rates.items() if v and _train_checked(report, c, sec)}
        ours = {c: v for c, v in rates.items() if c.startswith("ours")}
        timm = {c: v for c, v in rates.items() if c.startswith("timm")}
        if ours and "timm_compiled" in timm:
            name = max(ours, key=ours.get)
            found.append((ours[name], sec, name, timm))
    if found:
        rate, sec, name, timm = max(found)
        alike = not _replayed(name) or any(_replayed(c) for c in timm)
        # as for inference: the path and its rate apart, the ratio a number (scripts/update_readme.py prints them)
        best["best_ours_train"] = {"path": name, "images_per_s": rate, "section": sec}
        best["best_ours_train_vs_timm_compiled"] = rate / timm["timm_compiled"]
        best["best_ours_train_vs_timm_best_compiled"] = rate / max(timm.values()) if alike else None
    return best


def ratios(report: dict) -> dict:
    """ours/timm speed (images/s, or 1/latency at batch 1) per comparable pair; None where either is missing."""
    # ratio -> (section, ours, timm): each pair timed alternately in that one section
    pairs = {
        "inference_eager_fp32": ("inference_eager", "ours_fp32", "timm_fp32"),
        "inference_eager_bf16_cl": ("inference_eager", "ours_bf16_cl_eager", "timm_bf16_cl"),
        "inference_triton_vs_timm_eager_bf16_cl": ("inference_eager", "ours_bf16_cl_triton", "timm_bf16_cl"),
        "inference_compiled": ("inference_compiled", "ours_bf16_cl_compiled", "timm_bf16_cl_compiled"),
        "inference_triton_vs_timm_compiled": ("inference_compiled", "ours_bf16_cl_triton", "timm_bf16_cl_compiled"),
        "train_eager": ("train_eager", "ours_eager", "timm_eager"),
        "train_compiled": ("train_compiled", "ours_compiled", "timm_compiled"),
        "train_eager_triton_dw": ("train_eager", "ours_eager_triton_dw", "timm_eager"),
        "train_compiled_triton_dw": ("train_compiled", "ours_compiled_triton_dw", "timm_compiled"),
        "train_compiled_taps_dw": ("train_compiled", "ours_compiled_taps_dw", "timm_compiled"),
        # like for like: both steps compiled and replayed whole as one CUDA graph
        "train_compiled_graph": ("train_compiled", "ours_compiled_graph", "timm_compiled_graph"),
        "train_compiled_fast": ("train_compiled", "ours_compiled_fast", "timm_compiled"),
        "train_compiled_fast_graph": ("train_compiled", "ours_compiled_fast_graph", "timm_compiled_graph"),
        # ours tuned against timm compiled as such, and (with --tune-timm) like for like: both compiled with
        # Inductor's coordinate-descent tuning and replayed as CUDA graphs
        "train_tuned_graph_vs_timm_compiled": ("train_tuned", "ours_compiled_fast_tuned_graph", "timm_compiled"),
        "train_tuned_graph": ("train_tuned", "ours_compiled_fast_tuned_graph", "timm_compiled_tuned_graph"),
        # `mobilenets train --step-graph`'s own step (the trainer's StepGraph), against timm compiled as such
        "train_tuned_trainer_vs_timm_compiled": ("train_tuned", "ours_compiled_fast_tuned_stepgraph", "timm_compiled"),
        # --hybrid: the same graphed step with the stride-2 depthwise input gradients by Triton's kernel
        "train_tuned_hybrid_graph_vs_timm_compiled": (
            "train_tuned",
            "ours_compiled_hybrid_tuned_graph",
            "timm_compiled",
        ),
    }
    out: dict = {"note": "ours speed / timm speed; > 1 means ours is faster"}
    for key, (sec, ours_path, timm_path) in pairs.items():
        a, p = _speed(report, sec, ours_path), _speed(report, sec, timm_path)
        out[key] = a / p if a and p else None
    out.update(best_training(report))
    # batch 1: our fastest path (eager, compiled or Triton, each direct or as a CUDA graph) against timm's fastest
    lat = report.get("latency_batch1", {})
    rates = {k: _speed(report, "latency_batch1", k) for k in lat}
    fastest = {}
    for side in ("ours", "timm"):
        side_rates = {k: v for k, v in rates.items() if k.startswith(side) and v}
        fastest[side] = max(side_rates, key=side_rates.get) if side_rates else None
    ours_b1, timm_b1 = fastest["ours"], fastest["timm"]
    out["batch1_best_vs_timm_best"] = rates[ours_b1] / rates[timm_b1] if ours_b1 and timm_b1 else None
    # which paths those are, and their latencies (the target: ours no slower than timm's best)
    out["batch1_best"] = (
        {"ours": ours_b1, "ours_ms": 1e3 / rates[ours_b1], "timm": timm_b1, "timm_ms": 1e3 / rates[timm_b1]}
        if ours_b1 and timm_b1
        else None
    )
    # each path's rate from the section that timed it beside timm compiled where there is one
    compiled = report.get("inference_compiled", {})
    best = {
        c: _speed(report, "inference_compiled" if isinstance(compiled.get(c), dict) else "inference_eager", c)
        for c in ("ours_bf16_cl_eager", "ours_bf16_cl_triton", "ours_bf16_cl_triton_graph", "ours_bf16_cl_compiled",
                  "ours_bf16_cl_compiled_graph")
    }  # fmt: skip
    best = {k: v for k, v in best.items() if v and _output_checked(report, k)}
    bound = report.get("hbm_bound", {}).get("bound_images_per_s")
    if best:
        name = max(best, key=best.get)
        out["best_ours_inference"] = {"path": name, "images_per_s": best[name]}
        out["fraction_of_hbm_bound"] = best[name] / bound if bound else None
        # issue 7's reference is timm compiled as such (58.9k img/s there); like for like, timm's best compiled path
        timm = _speed(report, "inference_compiled", "timm_bf16_cl_compiled")
        graph = "timm_bf16_cl_compiled_graph"  # held to the same check as ours
        timm_graph = _speed(report, "inference_compiled", graph) if _output_checked(report, graph) else None
        timm_best = max(filter(None, [timm, timm_graph]), default=None)
        out["best_ours_vs_timm_compiled"] = best[name] / timm if timm else None
        out["best_ours_vs_timm_best_compiled"] = best[name] / timm_best if timm_best else None
    else:
        out["best_ours_inference"] = out["fraction_of_hbm_bound"] = None
        out["best_ours_vs_timm_compiled"] = out["best_ours_vs_timm_best_compiled"] = None
    return out


def summary(report: dict) -> list[str]:
    """One line per section and candidate (images/s, ms per call, or why not), for a reader of the log's tail."""
    lines = []
    for sec in SECTIONS:
        rows = report.get(sec, {})
        if "skipped" in rows or "error" in rows:
            lines.append(f"{sec}: {rows.get('skipped') or rows.get('error')}"[:200])
            continue
        for cand, row in rows.items():
            if not isinstance(row, dict):
                continue
            if "images_per_s" in row:
                lines.append(f"{sec:18s} {cand:26s} {row['images_per_s']:>12,.0f} img/s {row['median_ms']:9.3f} ms")
            elif "pass" in row:
                lines.append(f"{sec:18s} {cand:26s} err {row['max_abs_over_ref_max']:.4f} pass={row['pass']}")
            elif "by_category_ms" in row:
                cats = ", ".join(f"{k} {v:.2f}" for k, v in list(row["by_category_ms"].items())[:4])
                lines.append(f"{sec:18s} {cand:26s} {row['ms_per_call']:9.3f} ms/call: {cats}"[:200])
            elif "skipped" in row or "error" in row:
                lines.append(f"{sec:18s} {cand:26s} {row.get('skipped') or row.get('error')}"[:200])
    return lines


def save(b: Bench) -> None:
    for f in b.out_files:
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, json.dumps(b.report, indent=2, default=str))


def join_profiles(earlier: dict, later: dict) -> dict:
    """Two calls' profile sections as one: each path's entry from the later call, unless there it failed and the
    earlier call profiled it; ``section_s`` summed."""
    joined = dict(earlier)
    for key, entry in later.items():
        if key == "section_s":
            joined[key] = round(earlier.get(key, 0.0) + entry, 1)
        elif not (isinstance(entry, dict) and "error" in entry and key in earlier):
            joined[key] = entry
    return joined


def merge_reports(paths: list[Path]) -> dict:
    """One report from several runs' JSON of one lease (calls cut short, or sections run apart): each section from
    the last file in which it completed (no ``skipped``, no ``error``), its source in ``section_sources``, except the
    profile, whose per-path entries from every such file are joined (`join_profiles`); the ratios
    recomputed. Each ratio still compares paths timed alternately in one section of one process; only the HBM bound
    and the numerics may come from another call. Runs on another GPU, with another torch, timm or triton, or at
    another batch, resolution or smoke setting are refused."""
    reports = [(path, json.loads(path.read_text())) for path in paths]
    first = reports[0][1]["environment"]
    for path, r in reports[1:]:
        for key in ("gpu", "torch", "timm", "triton"):
            if r["environment"].get(key) != first.get(key):
                raise SystemExit(f"--merge {path}: {key}={r['environment'].get(key)!r}, not {first.get(key)!r}")
        for key in ("batch", "resolution", "smoke"):  # what every section's rates and the HBM bound depend on
            if r.get(key) != reports[0][1].get(key):
                raise SystemExit(f"--merge {path}: {key}={r.get(key)!r}, not {reports[0][1].get(key)!r}")
    dropped = (*SECTIONS, "ratios", "wall_s", "triton_tuning", "triton_tuning_source")  # the tuning: set below
    merged: dict = {k: v for k, v in reports[0][1].items() if k not in dropped}
    merged["merged_from"] = [
        {"file": path.name, "command": r["environment"].get("command"), "commit": r["environment"].get("commit"),
         "wall_s": r.get("wall_s")}
        for path, r in reports
    ]  # fmt: skip
    merged["section_sources"] = {}
    for name in SECTIONS:
        merged[name] = {"skipped": "in none of the merged runs"}
        for path, r in reports:
            section = r.get(name, {})
            if not isinstance(section, dict) or "skipped" in section or "error" in section:
                continue
            if not set(section) - {"section_s"}:  # nothing measured
                continue
            if name == "profile" and name in merged["section_sources"]:  # keyed by path: calls profiling other
                merged[name] = join_profiles(merged[name], section)  # paths (training, inference) add up
                merged["section_sources"][name] += f", {path.name}"
                continue
            merged[name] = section
            merged["section_sources"][name] = path.name
            # the layer choices the Triton path was timed with: those of the process whose inference_compiled
            # section (the 1.7x target's) is kept, else inference_eager's
            if name in ("inference_eager", "inference_compiled") and r.get("triton_tuning"):
                merged["triton_tuning"] = r["triton_tuning"]
                merged["triton_tuning_source"] = path.name
    merged["ratios"] = ratios(merged)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of real images for the numerics check")
    parser.add_argument("--weights", help="our weights folder for the numerics check (default: random init)")
    parser.add_argument(
        "--numerics-weights", help="also check the fast paths' numerics on these trained weights (our format)"
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: exercise every code path quickly")
    parser.add_argument("--time-budget", type=float, default=200.0, help="seconds from start for all sections")
    parser.add_argument(
        "--no-triton-graph",
        action="store_true",
        help="leave out the Triton path replayed as a CUDA graph (its faults before 05edf9d poisoned the process)",
    )
    parser.add_argument(
        "--no-graphs",
        action="store_true",
        help="leave out every path replayed as a CUDA graph (before 05edf9d they faulted the process on the H200)",
    )
    parser.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--numerics-images", type=int, default=64)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--train-dw-variants",
        action="store_true",
        help="also time ours with the Triton depthwise op and the taps (both slower on the H200 leases)",
    )
    parser.add_argument(
        "--tune-timm",
        action="store_true",
        help="train_tuned: also time timm compiled with Inductor's coordinate-descent tuning, direct and as a CUDA "
        "graph (like for like; its tuning costs TUNED_TIMM_S more)",
    )
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="train_tuned: also time ours with --depthwise hybrid (the stride-2 input gradients by Triton's kernel), "
        "tuned and replayed as one CUDA graph, checked against the flipped layers' graphed step (HYBRID_S more)",
    )
    parser.add_argument(
        "--train-paths",
        type=lambda v: [p.strip() for p in v.split(",") if p.strip()],
        help="comma-separated: time only these training paths (e.g. timm_compiled,ours_compiled,ours_compiled_fast,"
        "ours_compiled_fast_graph); a path counts only with its chain of twins timed too (each the name without its "
        f"last {', '.join(TWIN_SUFFIXES)})",
    )
    parser.add_argument(
        "--triton-configs", type=int, default=0, help="tune the fused kernel over the first N configs (0: all)"
    )
    parser.add_argument("--out", help="JSON path (default results/gpu-vs-timm-<gpu>[-smoke].json)")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="measure nothing: merge these runs' results (one lease, later files win per section) into --out",
    )
    parser.add_argument("--note", help="with --merge: a caveat kept in the merged report (shown in the README)")
    parser.add_argument("--preflight-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.merge:
        if not args.out:
            sys.exit("--merge needs --out")
        for path in args.merge:
            if not path.is_file():
                sys.exit(f"--merge {path}: no such file")
        merged = merge_reports(args.merge)
        if args.note:
            merged["note"] = args.note
        atomic_write_text(Path(args.out), json.dumps(merged, indent=2, default=str))
        for line in summary(merged):
            print(line)
        print(f"ratios: {json.dumps(merged['ratios'])}")
        return
    if args.triton_configs:  # in the preflight child too: it compiles what the run will tune
        kernels.FUSED_CONFIGS[:] = kernels.FUSED_CONFIGS[: args.triton_configs]
    if args.preflight_child:
        preflight_child(args.resolution, args.device, args.batch)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` sends TERM: save in `finally` below
    if args.smoke:
        args.batch, args.resolution, args.rounds, args.iters, args.warmup = 2, 64, 1, 2, 1
        args.numerics_images = min(args.numerics_images, 4)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --smoke to exercise the code paths")
    if args.sections and set(args.sections.split(",")) - set(SECTIONS):
        sys.exit(f"--sections: unknown {sorted(set(args.sections.split(',')) - set(SECTIONS))}")
    if args.images and not any(
        p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in Path(args.images).rglob("*")
    ):  # a folder not carried to this machine: the numerics would quietly run on random input
        sys.exit(f"--images {args.images}: no JPEG or PNG files there")
    log(f"start: {' '.join(sys.argv)}")
    import timm

    torch.backends.cudnn.benchmark = True
    b = Bench(args)
    env = environment(args.device)
    tag = (env["gpu"] if args.device == "cuda" else "cpu").replace(" ", "_")
    name = f"gpu-vs-timm-{tag}{'-smoke' if args.smoke else ''}.json"
    b.out_files = [Path(args.out) if args.out else RESULTS / name]
    if os.environ.get("OUT"):
        b.out_files.append(Path(os.environ["OUT"]) / name)
    b.report.update(
        environment=env,
        batch=args.batch,
        resolution=args.resolution,
        rounds=args.rounds,
        iters=args.iters,
        smoke=args.smoke,
        time_budget_s=args.time_budget,
        estimated_s=ESTIMATED_S,
    )
    save(b)
    try:
        run_sections(b, timm)
    finally:
        b.report["wall_s"] = round(time.perf_counter() - T0, 1)
        b.report["ratios"] = ratios(b.report)
        save(b)
        for line in summary(b.report):
            log(line)
        log(f"ratios: {json.dumps(b.report['ratios'])}")
        log(f"wrote {', '.join(map(str, b.out_files))} after {b.report['wall_s']}s")


if __name__ == "__main__":
    main()
