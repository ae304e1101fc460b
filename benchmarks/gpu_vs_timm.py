"""GPU speed, ours vs timm ``mobilenetv1_100``, in one process, same batch/dtype/layout, alternating (issue 7).

Measures: inference throughput at batch 256 (fp32, bf16, bf16 + channels_last, compiled; ours: eager, compile,
fused Triton), batch-1 latency with CUDA graphs, the training step at batch 256 (bf16 autocast, channels_last,
fused SGD; eager and compiled), numerics of every fast path against eager fp32 (real images with --images), the
HBM copy bandwidth and the resulting activation-traffic bound. Writes JSON (environment included) after every step to
results/gpu-vs-timm-<gpu>.json (and $OUT when set), so a run cut short still leaves its numbers.

    python benchmarks/gpu_vs_timm.py [--images DIR] [--batch 256] [--rounds 5] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mobilenets import MobileNetV1, count_complexity  # noqa: E402
from mobilenets.gpu import fast_inference  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def environment() -> dict:
    import importlib

    from mobilenets.bench import environment as machine

    versions = {}
    for name in ("torchvision", "timm", "triton"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - record whatever is missing
            versions[name] = f"unavailable: {exc}"
    props = torch.cuda.get_device_properties(0)
    return {
        **machine(),
        "gpu_memory_gb": round(props.total_memory / 2**30, 1),
        "sm_count": props.multi_processor_count,
        "cuda": torch.version.cuda,
        **versions,
        "command": " ".join(sys.argv),
    }


def time_ms(fn, x, iters: int) -> float:
    """Mean milliseconds per call over ``iters`` calls, timed with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def alternate(candidates: dict, x, *, rounds: int, iters: int, warmup: int = 5) -> dict:
    """Warm each candidate up, then time them in turn (A B C, A B C, ...): median ms and spread per candidate."""
    for name, fn in candidates.items():
        log(f"  warm-up {name}")
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(time_ms(fn, x, iters))
    return {
        name: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)} for name, v in samples.items()
    }


def hbm_bandwidth_gbs(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth (read + write) in GB/s."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = min(time_ms(lambda _: b.copy_(a), None, 10) for _ in range(3))
    return 2 * nbytes / (ms / 1e3) / 1e9


def activation_values(model: MobileNetV1) -> int:
    """Values written by conv layers per image (stem, every depthwise and pointwise output), from the cost model."""
    total = 0
    for layer in count_complexity(model.spec).layers:
        if layer.layer_type and layer.layer_type != "Fully Connected":
            h, w, c = (int(v) for v in layer.output_size.split(" x "))
            total += h * w * c
    return total


def load_images(folder: str | None, spec, n: int) -> torch.Tensor:
    if folder:
        from mobilenets.preprocess import load_batch

        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if paths:
            return load_batch(paths, spec).cuda()
    torch.manual_seed(0)
    return torch.randn(n, 3, spec.resolution, spec.resolution, device="cuda")


def inference_candidates(ours: MobileNetV1, peer: torch.nn.Module) -> dict:
    def cl(m):
        return m.to(memory_format=torch.channels_last)

    peer_fp32 = peer
    peer_bf16 = _clone(peer).to(torch.bfloat16)
    peer_bf16_cl = cl(_clone(peer).to(torch.bfloat16))
    peer_compiled = torch.compile(cl(_clone(peer).to(torch.bfloat16)), mode="max-autotune-no-cudagraphs")

    def run(m, dtype, layout):
        @torch.inference_mode()
        def f(x):
            return m(x.to(dtype).contiguous(memory_format=layout))

        return f

    return {
        "timm_fp32": run(peer_fp32, torch.float32, torch.contiguous_format),
        "timm_bf16": run(peer_bf16, torch.bfloat16, torch.contiguous_format),
        "timm_bf16_cl": run(peer_bf16_cl, torch.bfloat16, torch.channels_last),
        "timm_bf16_cl_compile": run(peer_compiled, torch.bfloat16, torch.channels_last),
        "ours_bf16_cl_eager": fast_inference(ours, backend="eager", dtype="bf16"),
        "ours_bf16_cl_compile": fast_inference(ours, backend="compile", dtype="bf16"),
        "ours_bf16_cl_triton": fast_inference(ours, backend="triton", dtype="bf16"),
    }


def _clone(m):
    import copy

    return copy.deepcopy(m)


def numerics(candidates: dict, reference, x) -> dict:
    with torch.inference_mode():
        ref = reference(x).float()
        out = {}
        for name, fn in candidates.items():
            y = fn(x).float()
            out[name] = {
                "max_abs": (y - ref).abs().max().item(),
                "ref_max_abs": ref.abs().max().item(),
                "top1_agreement": (y.argmax(1) == ref.argmax(1)).float().mean().item(),
            }
    return out


def train_step_fn(model, *, compile_model: bool, batch: int, res: int):
    model = model.cuda().train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5, fused=True)
    net = torch.compile(model) if compile_model else model
    target = torch.randint(0, 1000, (batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(net(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of real images for the numerics check")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import timm

    torch.backends.cudnn.benchmark = True
    env = environment()
    out_files = [RESULTS / f"gpu-vs-timm-{env['gpu'].replace(' ', '_')}.json"]
    if os.environ.get("OUT"):
        out_files.append(Path(os.environ["OUT"]) / out_files[0].name)
    report: dict = {"environment": env, "batch": args.batch, "resolution": 224}

    def save():
        for f in out_files:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(report, indent=2))

    def section(name, fn):
        log(f"{name} ...")
        try:
            report[name] = fn()
        except Exception as exc:  # noqa: BLE001 - keep measuring the rest, record the failure
            report[name] = {"error": repr(exc), "traceback": traceback.format_exc()[-2000:]}
        log(f"{name}: {json.dumps(report[name])[:600]}")
        save()

    ours = MobileNetV1(num_classes=1000).eval()
    peer = timm.create_model("mobilenetv1_100", pretrained=False).cuda().eval()
    ours_cuda = _clone(ours).cuda().eval()
    values = activation_values(ours)

    section("hbm", lambda: {"copy_gbs": hbm_bandwidth_gbs(), "activation_values_per_image": values})

    def bound():
        bw = report["hbm"]["copy_gbs"] * 1e9
        bytes_per_image = 2 * values * 2  # bf16, each activation written once and read once
        return {"bytes_per_image": bytes_per_image, "images_per_s": bw / bytes_per_image}

    section("bound", bound)
    x = torch.randn(args.batch, 3, 224, 224, device="cuda")
    candidates = inference_candidates(ours, peer)

    def throughput():
        res = alternate(candidates, x, rounds=args.rounds, iters=args.iters)
        for r in res.values():
            r["images_per_s"] = args.batch / (r["median_ms"] / 1e3)
        best_timm = max(v["images_per_s"] for k, v in res.items() if k.startswith("timm"))
        best_ours = max(v["images_per_s"] for k, v in res.items() if k.startswith("ours"))
        return {
            "results": res,
            "best_ours_over_best_timm": best_ours / best_timm,
            "fraction_of_bound": best_ours / report["bound"]["images_per_s"],
        }

    section("inference_batch", throughput)
    images = load_images(args.images, ours.spec, 64)

    def check():
        def ref(t):
            return ours_cuda(t)

        return numerics({k: v for k, v in candidates.items() if k.startswith("ours")}, ref, images)

    section("numerics_vs_eager_fp32", check)

    def batch1():
        one = torch.randn(1, 3, 224, 224, device="cuda")
        peer_graph = torch.compile(
            _clone(peer).to(torch.bfloat16).to(memory_format=torch.channels_last), mode="max-autotune"
        )

        @torch.inference_mode()
        def timm_graph(t):
            return peer_graph(t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))

        cands = {
            "timm_compile_cudagraphs": timm_graph,
            "ours_triton_cudagraph": fast_inference(ours, backend="triton", cuda_graph_batch=1),
            "ours_compile_cudagraph": fast_inference(ours, backend="compile", cuda_graph_batch=1),
            "ours_eager_cudagraph": fast_inference(ours, backend="eager", cuda_graph_batch=1),
        }
        return alternate(cands, one, rounds=args.rounds, iters=200, warmup=20)

    section("latency_batch1", batch1)

    if not args.skip_train:

        def training():
            xt = torch.randn(args.batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
            cands = {
                "timm_eager": train_step_fn(
                    timm.create_model("mobilenetv1_100"), compile_model=False, batch=args.batch, res=224
                ),
                "timm_compile": train_step_fn(
                    timm.create_model("mobilenetv1_100"), compile_model=True, batch=args.batch, res=224
                ),
                "ours_eager": train_step_fn(MobileNetV1(), compile_model=False, batch=args.batch, res=224),
                "ours_compile": train_step_fn(MobileNetV1(), compile_model=True, batch=args.batch, res=224),
            }
            res = alternate(cands, xt, rounds=args.rounds, iters=10, warmup=5)
            for r in res.values():
                r["images_per_s"] = args.batch / (r["median_ms"] / 1e3)
            res["ours_compile_over_timm_compile"] = (
                res["ours_compile"]["images_per_s"] / res["timm_compile"]["images_per_s"]
            )
            return res

        section("train_step", training)
    log(f"wrote {', '.join(map(str, out_files))}")


if __name__ == "__main__":
    main()
