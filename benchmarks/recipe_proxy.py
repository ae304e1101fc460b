"""Which regularisation to try on the GPU (issue 4), from a small CPU proxy of its over-fitting regime.

The first H200 run of 1.0 MobileNet-160 (80 epochs, results/train-gpu-nvidia-h200-imagenette-160px-2026-11-26-80ep.json)
ended at 86.5% val top-1 with a train loss of 0.54, next to the 0.50 floor that label smoothing 0.1 sets over 10
classes: it had all but memorised its 9,469 images. (The next, 351 epochs with MixUp/CutMix, reached 92.6%.) This proxy
puts a smaller model in the same state on CPU, 0.5 MobileNet-64 (1.3M parameters) on 100 images per class, and trains it
with each recipe variant below for the same number of epochs, through the same code as the GPU benchmark (trainer.train
with the decoded data held as uint8 tensors, data_on_device), then evaluates on the full val split. It is evidence of
direction, not of the GPU figure: the resolution, width and data size differ.

    python benchmarks/recipe_proxy.py                   # writes results/recipe-proxy-cpu-imagenette-64px.json
    python benchmarks/recipe_proxy.py --variants baseline,mix --seed 1    # adds runs of another seed (NAME@seed1)
    python benchmarks/recipe_proxy.py --variants mix --epochs 300         # another length (NAME@e300)
    python benchmarks/recipe_proxy.py --variants ""     # only recompute by_variant (mean, min, max over seeds)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from mobilenets.atomic import atomic_write_text
from mobilenets.data import shared_data_root
from mobilenets.train_config import resolve
from mobilenets.trainer import train

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 150

# name -> overrides of the GPU benchmark's recipe (benchmarks/train_gpu.py defaults on configs/modern.yaml)
VARIANTS = {
    "baseline": {},
    "mix": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
    "wd5e-4": {"weight_decay": 5e-4},
    "mix+wd5e-4": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "weight_decay": 5e-4},
    "scale0.08": {"scale_min": 0.08},
    "mix+dw-decay": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "wd_depthwise": True},
}


def by_variant(runs: dict) -> dict:
    """Per variant (and epoch count, when not the default): the seeds run, and the mean, min and max of their val
    top-1."""
    groups: dict[str, list[float]] = {}
    for key, run in runs.items():
        groups.setdefault(key.split("@seed")[0], []).append(run["val_top1"])
    return {
        name: {"seeds": len(v), "mean_top1": sum(v) / len(v), "min_top1": min(v), "max_top1": max(v)}
        for name, v in sorted(groups.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))
    }


def save(out: Path, record: dict) -> None:
    record["by_variant"] = by_variant(record["runs"])
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_root() / "imagenette"))
    p.add_argument("--variants", default="baseline,mix,wd5e-4,mix+wd5e-4", help=f"comma list of {sorted(VARIANTS)}")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--per-class", type=int, default=100, help="train images per class")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="runs of other lengths are recorded as NAME@eN")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="runs with another seed are recorded as NAME@seedN")
    p.add_argument("--out", default=str(REPO / "results" / "recipe-proxy-cpu-imagenette-64px.json"))
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")

    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    for run in record["runs"].values():  # runs of an earlier invocation keep the command that made them
        run.setdefault("command", record.get("command"))
    command = " ".join(["python", *sys.argv])
    record.update(
        command=command,
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        setup={k: v for k, v in vars(args).items() if k not in ("variants", "out")},
        base="benchmarks/train_gpu.py defaults on configs/modern.yaml: nesterov lr 0.4 per 256 (scaled), warm-up 2, "
        "cosine to 0, label smoothing 0.1, weight decay 1e-4 (not BN/bias/depthwise), scale_min 0.25, no EMA",
    )
    for name in names:
        scratch = Path(f"/tmp/recipe-proxy/{name}-e{args.epochs}-seed{args.seed}")
        shutil.rmtree(scratch, ignore_errors=True)  # this script's own run folder: every run starts afresh
        options = dict(
            data=args.data,
            out=str(scratch),
            alpha=args.alpha,
            resolution=args.resolution,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=0.4,
            weight_decay=1e-4,
            scale_min=0.25,
            ema_decay=0.0,
            max_per_class=args.per_class,
            eval_every=args.epochs,
            data_on_device=True,
            device="cpu",
            workers=2,
            seed=args.seed,
            resume=None,
            quiet=True,
        )
        cfg = resolve(str(REPO / "configs" / "modern.yaml"), **{**options, **VARIANTS[name]})
        t0 = time.perf_counter()
        summary = train(cfg)
        rows = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
        key = name + (f"@e{args.epochs}" if args.epochs != EPOCHS else "") + (f"@seed{args.seed}" if args.seed else "")
        record["runs"][key] = {
            "overrides": VARIANTS[name],
            "epochs": args.epochs,
            "val_top1": summary["final_top1"],
            "val_top5": summary.get("final_top5"),
            "final_train_loss": rows[-1]["train_loss"],
            "train_loss_every_10": [round(r["train_loss"], 4) for r in rows[9::10]],
            "wall_s": round(time.perf_counter() - t0, 1),
            "command": command,
        }
        print(key, json.dumps(record["runs"][key]), flush=True)
        save(out, record)  # after every run: an interrupted invocation keeps the runs it finished
    if not names:  # --variants "": only the per-variant summary of the runs recorded
        save(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
