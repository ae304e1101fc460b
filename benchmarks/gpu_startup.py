"""GPU start-up cost of a training run (issues 4 and 8): the first step with and without cuDNN autotuning.

On the H200 every training run's first epoch ran at about 650 img/s against 16,500 img/s afterwards (14-15 s of
one-time cost per run, decode excluded). `mobilenets reproduce` trains 18 models, so that cost decides whether the
full run fits in 10 minutes. The suspects are ``torch.backends.cudnn.benchmark`` (cuDNN times every algorithm for
every new layer shape, forward, backward-data and backward-filter, on the first step) and the depthwise layers in
particular: in the reproduce run Conv MobileNet, which has none, had the shortest first epoch (9 s against 15-29 s).

This runs the library's `trainer.train` in fresh processes (cuDNN's algorithm cache and lazy kernel loading are
per process, so each run starts cold, as each reproduce run meets new shapes), one per variant in turn, round after
round: cuDNN autotuning on and off, each with PyTorch's depthwise convolutions and with the Triton ones (`dwconv`;
their compiled kernels are cached on disk by Triton after the first process). It records each run's first-step
time, first-epoch time and steady images/s, and beside them the same training step's rate on one resident random
batch (`budget.step_rate`, no data path): their ratio is issue 7's end-to-end figure (target >= 0.8), here on real
JPEGs decoded onto the GPU, cropped and flipped there. The first Triton process of a machine also compiles the kernels
(cached on disk for the next), so the throwaway warm-up process runs the first Triton variant listed: the Triton
variants then show a cached start, and the warm-up's first step the compiling one.

    python benchmarks/gpu_startup.py                    # writes results/gpu-startup-<gpu>.json
    python benchmarks/gpu_startup.py --device cpu --smoke --no-write   # exercises the code path on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.data import shared_data_root  # noqa: E402

VARIANTS = {
    "bench": "cudnn.benchmark on (the default), PyTorch's depthwise convolutions",
    "nobench": "cudnn.benchmark off: cuDNN's heuristics pick the algorithms",
    "triton-dw": "cudnn.benchmark on, depthwise layers as Triton kernels (dwconv.py)",
    "triton-dw-nobench": "cudnn.benchmark off, depthwise layers as Triton kernels",
}
# each variant as TrainConfig lines (what `--recipe-out` writes for a recipe YAML)
RECIPE_LINES = {
    "bench": "",
    "nobench": "cudnn_benchmark: false",
    "triton-dw": "depthwise: triton",
    "triton-dw-nobench": "cudnn_benchmark: false\ndepthwise: triton",
}


def child(args) -> None:
    """One cold training run; prints its metrics rows as JSON on the last line."""
    from mobilenets.budget import step_rate
    from mobilenets.reproduce import BUDGETS
    from mobilenets.train_config import resolve
    from mobilenets.trainer import train

    gpu = args.device == "cuda"
    full = BUDGETS["full"].train  # reproduce's settings: no weight EMA, its weight decay and checkpoint interval
    with tempfile.TemporaryDirectory() as out:
        cfg = resolve(
            str(REPO / "configs" / "modern.yaml"),
            ema_decay=full["ema_decay"],
            weight_decay=full["weight_decay"],
            checkpoint_every=full["checkpoint_every"],
            data=args.data,
            out=out,
            model=args.model,
            resolution=args.resolution,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_per_class=args.max_per_class,
            max_val_per_class=args.max_val_per_class,
            eval_every=args.epochs,
            device=args.device,
            workers=args.workers,
            data_on_device=True,
            amp="bf16" if gpu else "none",
            channels_last=gpu,
            cudnn_benchmark=args.variant in ("bench", "triton-dw"),
            depthwise="triton" if args.variant.startswith("triton-dw") else "conv",
            quiet=True,
        )
        t0 = time.perf_counter()
        summary = train(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
        # the same step on one resident random batch, warmed up: the rate with no data path (issue 7's end-to-end
        # target compares the steady rate on real JPEGs with it)
        try:  # a failure here (out of memory, say) must not lose the training figures above
            synthetic = step_rate(cfg, len(summary["per_class_top1"]))
        except Exception as exc:  # noqa: BLE001 - reported as no synthetic rate
            print(f"synthetic step failed: {exc!r}", file=sys.stderr)
            synthetic = None
    print(json.dumps({"wall_s": wall, "epochs": rows, "synthetic_images_per_s": synthetic}))


def run_once(args, variant: str, **overrides) -> dict:
    """One child process; any failure (exit status, timeout, unreadable output) becomes an error row, so the other
    variants still run: one lent GPU session is all there is."""
    settings = {**vars(args), **overrides}
    cmd = [sys.executable, __file__, "--child", "--variant", variant]
    for name in ("data", "model", "resolution", "epochs", "batch_size", "max_per_class", "max_val_per_class"):
        cmd += [f"--{name.replace('_', '-')}", str(settings[name])]
    cmd += ["--device", args.device, "--workers", str(args.workers)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=args.child_timeout
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"no result within --child-timeout {args.child_timeout} s"}
    if proc.returncode:
        return {"variant": variant, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        ep = out["epochs"]
        later = ep[1:]
        steady = sum(e["train_images"] for e in later) / sum(e["train_time_s"] for e in later) if later else None
        synthetic = out.get("synthetic_images_per_s")
        return {
            "variant": variant,
            "process_wall_s": round(time.perf_counter() - t0, 2),
            "train_wall_s": round(out["wall_s"], 2),
            "first_step_s": round(ep[0]["first_step_s"], 3),
            "epoch1_train_s": round(ep[0]["train_time_s"], 3),
            "steps_per_epoch": ep[0]["train_steps"],
            "steady_images_per_s": round(steady, 1) if steady else None,
            "synthetic_images_per_s": round(synthetic, 1) if synthetic else None,
            "end_to_end_over_synthetic": round(steady / synthetic, 3) if steady and synthetic else None,
            "val_top1": ep[-1].get("val_top1"),
        }
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
        return {"variant": variant, "error": f"unreadable child output ({exc!r}): {proc.stdout[-1000:]}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_root() / "imagenette"))
    p.add_argument("--model", default="mobilenet_v1_100")
    p.add_argument("--resolution", type=int, default=160)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-per-class", type=int, default=260, help="a slice: the first step costs the same")
    p.add_argument("--max-val-per-class", type=int, default=30)
    p.add_argument("--rounds", type=int, default=1, help="rounds of every variant, one after another")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU check of the code path")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--recipe-out", help="write the recommended variant's TrainConfig lines (YAML) to this file")
    p.add_argument("--run-epochs", type=int, default=20, help="the run the recommendation is for: epochs ...")
    p.add_argument("--run-images", type=int, default=9469, help="... of this many train images (full Imagenette)")
    p.add_argument("--child-timeout", type=float, default=120.0, help="seconds per training process")
    p.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=True,
        help="first a throwaway 1-epoch process, so no variant pays the machine's cold disk and library caches",
    )  # fmt: skip
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="bench", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        p.error(f"--variants: unknown {sorted(set(variants) - set(VARIANTS))}; choose from {', '.join(VARIANTS)}")
    if args.device == "cpu" and not os.environ.get("TRITON_INTERPRET"):
        dropped = [v for v in variants if v.startswith("triton")]
        variants = [v for v in variants if not v.startswith("triton")]
        if dropped:
            print(f"skipping {', '.join(dropped)}: the Triton kernels need CUDA (or TRITON_INTERPRET=1)")
    if args.smoke:
        args.model, args.resolution, args.epochs, args.batch_size = "mobilenet_v1_025", 64, 2, 16
        args.max_per_class, args.max_val_per_class, args.rounds, args.workers = 4, 2, 1, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --smoke to exercise the code path")
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    out = REPO / "results" / f"gpu-startup-{device.replace(' ', '-').lower()}.json"
    report = {
        "what": "cold training runs (fresh processes), one per variant per round",
        "variants": {v: VARIANTS[v] for v in variants},
        "device": device,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if args.device == "cuda" else None,
        "command": " ".join(["python", *sys.argv]),
        "settings": {k: getattr(args, k) for k in ("model", "resolution", "epochs", "batch_size", "max_per_class")},
        "warmup": None,
        "median": None,
        "recommendation": None,
        "runs": [],
    }
    if args.warmup:  # a Triton variant's, when one is listed: it also fills Triton's disk cache of compiled kernels
        first = next((v for v in variants if v.startswith("triton")), "bench")
        row = run_once(args, first, epochs=1, max_per_class=min(args.max_per_class, 30))
        report["warmup"] = row
        print(f"warm-up (not counted): {json.dumps(row)}", flush=True)
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotated: no variant always first
        for variant in order:
            row = run_once(args, variant)
            report["runs"].append(row)
            report["median"] = medians(report["runs"], variants)
            report["recommendation"] = recommend(report["median"], args.run_epochs, args.run_images)
            print(f"round {r + 1} {variant}: {json.dumps(row)}", flush=True)
            if args.write:  # after every run: a timeout keeps what was measured
                write(report, out)
            if args.recipe_out and report["recommendation"]:
                Path(args.recipe_out).write_text(RECIPE_LINES[report["recommendation"]["variant"]] + "\n")
    print(json.dumps(report["median"], indent=2))
    print(f"recommendation: {json.dumps(report['recommendation'])}")
    if args.write:
        print(f"wrote {out}")


# A variant replaces the default for a whole reproduce run only if it is clearly faster: by both margins below. The
# Triton variants are timed for the record but never chosen automatically: their numerics on the GPU are checked by
# gpu_vs_timm.py, which a lease spent on #8 may not run.
MARGIN_FRACTION, MARGIN_S = 0.05, 5.0
AUTO_CHOICES = ("bench", "nobench")


def recommend(median: dict, epochs: int, images: int) -> dict | None:
    """The default (``bench``) unless another of `AUTO_CHOICES` has an estimated run of ``epochs`` epochs over
    ``images`` images (first step + every epoch at the steady rate) shorter by `MARGIN_FRACTION` and `MARGIN_S`."""
    estimates = {}
    for variant, rate in median["steady_images_per_s"].items():
        first = median["first_step_s"].get(variant)
        if rate and first is not None:
            estimates[variant] = round(first + epochs * images / rate, 1)
    candidates = {v: t for v, t in estimates.items() if v in AUTO_CHOICES}
    if "bench" not in candidates:
        return None
    best = min(candidates, key=candidates.get)
    saved = candidates["bench"] - candidates[best]
    if saved < max(MARGIN_S, MARGIN_FRACTION * candidates["bench"]):
        best = "bench"
    return {
        "variant": best,
        "recipe_lines": RECIPE_LINES[best],
        "rule": (
            f"estimated {epochs} epochs x {images} images (first step + steady rate); the default unless one of "
            f"{', '.join(AUTO_CHOICES)} saves >= {MARGIN_FRACTION:.0%} and >= {MARGIN_S:.0f} s"
        ),
        "estimated_run_s": estimates,
    }


def medians(runs: list[dict], variants: list[str]) -> dict:
    def median(key: str, variant: str):
        vals = [r[key] for r in runs if r["variant"] == variant and r.get(key) is not None]
        return statistics.median(vals) if vals else None

    keys = (
        "first_step_s", "epoch1_train_s", "steady_images_per_s", "synthetic_images_per_s", "end_to_end_over_synthetic",
        "train_wall_s",
    )  # fmt: skip
    return {k: {v: median(k, v) for v in variants} for k in keys}


def write(report: dict, out: Path) -> None:
    """Atomically (a snapshot of results/ taken meanwhile never holds half a file), here and in $OUT."""
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_text(out, text)
    if os.environ.get("OUT"):
        atomic_write_text(Path(os.environ["OUT"]) / out.name, text)


if __name__ == "__main__":
    main()
