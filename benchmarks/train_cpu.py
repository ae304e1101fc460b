"""CPU training benchmark (issue 4): 0.25 and 0.5 MobileNet at a low resolution on Imagenette, a few epochs.

Records val top-1/top-5, wall time and training images/s per model in
results/train-cpu-<cpu>-imagenette-<R>px-<threads>t.json (+ .csv), with the command, versions and hardware.
Run it under the shared lock: ``flock /tmp/mobilenets-cpu.lock python benchmarks/train_cpu.py``.
One torch thread by default: on the shared 2-core machine 2-thread timings swing by 10x.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from mobilenets.bench import cpu_model
from mobilenets.data import shared_data_root
from mobilenets.train_config import resolve
from mobilenets.trainer import environment, train

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_root()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-per-class", type=int, default=None, help="subsample the train split (default: all)")
    p.add_argument("--config", default=str(REPO / "configs" / "modern.yaml"))
    p.add_argument("--lr", type=float, default=0.2, help="peak rate at --batch-size (no scaling)")
    p.add_argument("--data", default=str(DATA / "imagenette"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    hw = cpu_model().replace(" ", "-").lower()
    stem = f"train-cpu-{hw}-imagenette-{args.resolution}px-{args.threads}t"
    rows = []
    overrides = dict(lr_base_batch=0, warmup_epochs=1, ema_decay=0.0)  # on top of --config, recorded in each row
    for alpha in args.alphas:
        with tempfile.TemporaryDirectory() as out:
            cfg = resolve(
                args.config,
                data=args.data,
                out=out,
                alpha=alpha,
                resolution=args.resolution,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                workers=0,
                threads=args.threads,
                max_per_class=args.max_per_class,
                quiet=False,
                log_every=50,
                **overrides,
            )
            s = train(cfg)
            metrics = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        rows.append(
            {
                "model": s["model"]["name"],
                "alpha": alpha,
                "resolution": args.resolution,
                "epochs": args.epochs,
                "train_images": metrics[-1]["train_images"],
                "batch_size": args.batch_size,
                "threads": args.threads,
                "recipe": Path(args.config).name,
                "lr": args.lr,
                "recipe_overrides": overrides,
                "val_top1": s["final_top1"],
                "val_top5": s["final_top5"],
                "best_top1": s["best_top1"],
                "wall_time_s": round(s["wall_time_s"], 1),
                "train_images_per_s": round(s["train_images_per_s"], 1),
                "eval_images_per_s": round(s["eval_images_per_s"], 1),
                "macs": s["macs"],
                "params": s["params"],
                "top1_per_epoch": [None if m["val_top1"] is None else round(m["val_top1"], 4) for m in metrics],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    env = environment(type("E", (), {"world_size": 1, "device": torch.device("cpu")})())
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "hardware": {"cpu": hw, **env},
        "note": "training images/s includes augmentation from an in-memory uint8 cache; wall time includes "
        "caching the decoded dataset and evaluating after every epoch",
        "rows": rows,
    }
    out_dir = REPO / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        skip = ("top1_per_epoch", "recipe_overrides")  # lists and dicts: in the JSON
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k not in skip], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
