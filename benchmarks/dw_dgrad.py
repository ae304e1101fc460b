"""The input gradient of MobileNet's stride-2 depthwise layers: cuDNN's against the two Triton kernels.

What it decides (issue 7): whether ``--depthwise hybrid`` (`dwconv.HybridDepthwiseConv2d`: the stride-2 layers' input
gradient by Triton's `_dgrad_s2_kernel`) beats ``--depthwise flipped``, whose stride-2 layers run cuDNN's
``dgrad2d_c1_k1_nhwc`` (1.21 ms of a 15.5 ms training step on the H200, four calls). For each stride-2 depthwise
layer of a model (``--alpha``, ``--resolution``) at ``--batch`` in bf16 channels_last, it times, alternately in
``--rounds`` rounds of ``--iters`` calls each:

- ``cudnn``: ``aten.convolution_backward`` asked for the input gradient only (what the flipped layer's backward runs
  at stride 2, with its weight gradient), with cuDNN's autotuning on (``cudnn.benchmark``), as in the training steps
  it stands for (gpu_vs_timm.py's, the trainer's ``cudnn_benchmark`` default): without it cuDNN takes its heuristic's
  algorithm, which need not be the one that took the 1.21 ms;
- ``taps``: `dwconv._dgrad_kernel` (nine masked taps per input pixel; ``--depthwise triton``'s until now);
- ``parity``: `dwconv._dgrad_s2_kernel`, its tile config tuned on its first call per shape (`kernels._run_tuned`; every
  candidate's time is in the report's ``tuning``).

On a GPU each path is also captured as one CUDA graph of ``--iters`` calls and its replays timed (``graphed``): the
GPU's time alone, as the training step's graph (`step_graph.StepGraph`) runs these kernels. Called eagerly, a kernel
shorter than its launch path times the host instead: `dwconv.input_grad`'s Python and ATen work took 20 us per call
on a CPU before Triton's launch, where the last two layers' gradients need 15-30 us at the H200's bandwidth.

Each row has the median ms, the bytes the gradient pass must move (the output gradient read, the input gradient
written: its floor), that traffic's GB/s and fraction of a device-to-device copy's bandwidth measured in the same run,
and the largest difference from cuDNN's input gradient in fp32 relative to its largest value.

    python benchmarks/dw_dgrad.py [--alpha 1.0] [--resolution 224] [--batch 256] [--rounds 5] [--iters 20]
    TRITON_INTERPRET=1 python benchmarks/dw_dgrad.py --smoke    # CPU: batch 2, 32 px, 1 round, the script's check

Writes results/dw-dgrad-<hw>.json (``--out``), with the command, versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from mobilenets import MobileNetV1, dwconv, kernels  # noqa: E402
from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import environment, hardware_tag  # noqa: E402

PATHS = ("cudnn", "taps", "parity")


def stride2_layers(alpha: float, resolution: int) -> list[tuple[int, int, int]]:
    """(channels, height, width) of the input of each stride-2 3x3 depthwise layer (paper Table 1: four at 1.0-224)."""
    model = MobileNetV1(alpha=alpha, resolution=resolution).eval()
    shapes = []
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape[1:])))
        for m in model.modules()
        if dwconv.is_depthwise3x3(m) and m.stride[0] == 2
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    for hook in hooks:
        hook.remove()
    return shapes


def gradient_paths(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> dict:
    """Each path as a no-argument callable returning the input gradient of a stride-2, padding-1 layer."""
    c = x.shape[1]

    def cudnn():
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [2, 2], [1, 1], [1, 1], False, [0, 0], c, [True, False, False]
        )[0]

    return {
        "cudnn": cudnn,
        "taps": lambda: dwconv.input_grad(grad, x, weight, 2, 1, False, "taps"),
        "parity": lambda: dwconv.input_grad(grad, x, weight, 2, 1, False, "parity"),
    }


def timer(cuda: bool):
    """ms per call of ``fn`` over ``iters`` calls: CUDA events on a GPU (kernels._cuda_ms), the wall clock on CPU."""
    if cuda:
        return kernels._cuda_ms

    def wall_ms(fn, iters: int) -> float:
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t) * 1e3 / iters

    return wall_ms


def captured(fn, iters: int):
    """``iters`` calls of ``fn`` (already run: compiled, tuned, cuDNN's algorithm chosen) captured as one CUDA graph;
    its ``replay``, or the error's repr where the capture failed (the eager timings stand without it)."""
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(iters):
                fn()
        graph.replay()  # the first replay uploads the graph
        return graph.replay
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        return repr(exc)[:300]


def copy_gbs(device: str, nbytes: int, ms_of) -> float:
    """Device-to-device copy bandwidth (bytes read + written) in GB/s: the bound the rows are a fraction of."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = min(ms_of(lambda: dst.copy_(src), 10) for _ in range(3))
    return 2 * nbytes / (ms / 1e3) / 1e9


def measure(args, device: str) -> dict:
    cuda = device == "cuda"
    ms_of = timer(cuda)
    dtype = torch.bfloat16
    bound = copy_gbs(device, (2 << 30) if cuda else (16 << 20), ms_of)
    rows = []
    for c, h, w in stride2_layers(args.alpha, args.resolution):
        torch.manual_seed(0)
        cl = torch.channels_last
        x32 = torch.randn(args.batch, c, h, w, device=device).contiguous(memory_format=cl)
        w32 = torch.randn(c, 1, 3, 3, device=device) / 3
        grad32 = torch.randn(args.batch, c, -(-h // 2), -(-w // 2), device=device).contiguous(memory_format=cl)
        reference = gradient_paths(x32, w32, grad32)["cudnn"]()
        paths = gradient_paths(x32.to(dtype), w32.to(dtype), grad32.to(dtype))
        errors, times, graphed = {}, {name: [] for name in PATHS}, {name: [] for name in PATHS}
        for name, fn in paths.items():  # first call: compiles, tunes (parity), checks
            errors[name] = ((fn().float() - reference).abs().max() / reference.abs().max()).item()
        replays = {name: captured(fn, args.iters) for name, fn in paths.items()} if cuda else {}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                times[name].append(ms_of(fn, args.iters))
                if callable(replays.get(name)):
                    graphed[name].append(ms_of(replays[name], 1) / args.iters)
        nbytes = (x32.numel() + grad32.numel()) * x32.new_empty((), dtype=dtype).element_size()
        row = {"input_nchw": [args.batch, c, h, w], "bytes": nbytes}
        for name in PATHS:
            ms = statistics.median(times[name])
            gbs = nbytes / (ms / 1e3) / 1e9
            row[name] = {"median_ms": ms, "runs_ms": times[name], "gbs": gbs, "of_copy_bandwidth": gbs / bound,
                         "max_abs_over_max_vs_cudnn_fp32": errors[name]}  # fmt: skip
            g = statistics.median(graphed[name]) if graphed[name] else None
            row[name]["graphed"] = (
                {"median_ms": g, "runs_ms": graphed[name], "of_copy_bandwidth": nbytes / (g / 1e3) / 1e9 / bound}
                if g
                else {"skipped": replays.get(name, "CUDA graphs need CUDA")}
            )
        for name in ("taps", "parity"):
            row[f"cudnn_over_{name}"] = row["cudnn"]["median_ms"] / row[name]["median_ms"]
        del replays  # the graphs' memory pools go before the next layer's
        rows.append(row)
        line = ", ".join(f"{n} {row[n]['median_ms']:.3f} ms" for n in PATHS)
        line += "".join(
            f", {n} graphed {row[n]['graphed']['median_ms']:.3f}" for n in PATHS if "median_ms" in row[n]["graphed"]
        )
        print(f"{row['input_nchw']}: {line}", flush=True)
    totals = {name: sum(r[name]["median_ms"] for r in rows) for name in PATHS}
    graphed = {name: [r[name]["graphed"].get("median_ms") for r in rows] for name in PATHS}
    graphed_totals = {name: sum(ms) if None not in ms else None for name, ms in graphed.items()}
    floor_ms = sum(r["bytes"] for r in rows) / (bound * 1e9) * 1e3
    return {"copy_gbs": bound, "rows": rows, "total_ms": totals, "floor_ms_at_copy_bandwidth": floor_ms,
            "cudnn_over_parity_total": totals["cudnn"] / totals["parity"], "graphed_total_ms": graphed_totals,
            "tuning": [t for t in kernels.tuning_report() if t["layer"] == "dw_dgrad_s2"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--iters", type=int, default=20, help="calls per path and round (default 20)")
    ap.add_argument("--smoke", action="store_true", help="batch 2, 32 px, 1 round of 1 call (the CPU check)")
    ap.add_argument("--out", default=str(REPO / "results"), help="folder of the JSON report (default results/)")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.resolution, args.rounds, args.iters = 2, 32, 1, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # the training steps' setting: cuDNN's fastest algorithm, not its guess
    if not kernels.runs_on(device):
        sys.exit(f"dw_dgrad.py: the Triton kernels cannot run on {device}: they need triton, and CUDA or "
                 "TRITON_INTERPRET=1")  # fmt: skip
    for name in ("batch", "resolution", "rounds", "iters"):
        if getattr(args, name) < 1:
            sys.exit(f"dw_dgrad.py: --{name} {getattr(args, name)} is not allowed: it must be at least 1")
    report = {
        "what": __doc__.splitlines()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": {"alpha": args.alpha, "resolution": args.resolution, "batch": args.batch, "dtype": "bfloat16"},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (TRITON_INTERPRET=1)",
        **measure(args, device),
        "environment": environment(),
    }
    tag = torch.cuda.get_device_name().replace(" ", "_") if device == "cuda" else f"{hardware_tag()}-smoke"
    out = Path(args.out) / f"dw-dgrad-{tag}.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    totals = report["total_ms"]
    floor = f"floor {report['floor_ms_at_copy_bandwidth']:.3f} at {report['copy_gbs']:.0f} GB/s"
    graphed = report["graphed_total_ms"]
    replayed = ", ".join(f"{n} {graphed[n]:.3f}" for n in PATHS if graphed[n] is not None)
    eager = ", ".join(f"{n} {totals[n]:.3f}" for n in PATHS)
    print(f"total ms: {eager}" + (f"; graphed: {replayed}" if replayed else "") + f"; {floor}; wrote {out}")


if __name__ == "__main__":
    main()
