"""What a checkpoint costs the training loop: written in line (`engine.save_checkpoint`) or in the background
(`engine.CheckpointWriter`, what the trainer uses), for a model's full training state (weights, SGD momentum).

The #4 run on the H200 (results/train-gpu-nvidia-h200-imagenette-160px.json) checkpointed after each of its 351
epochs of about 0.56 s; its wall time held about 30 s that neither training nor evaluation nor decoding accounts for.
This times, alternately in one process, the seconds the training thread spends per checkpoint each way, the
background write's own duration (until `wait` returns), and the file's size.

    python benchmarks/checkpoint_cost.py                       # 1.0 MobileNet, 1000 classes, 10 rounds
    python benchmarks/checkpoint_cost.py --classes 10 --rounds 5 --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import environment, hardware_tag  # noqa: E402
from mobilenets.engine import CheckpointWriter, checkpoint_path, rng_state, save_checkpoint  # noqa: E402
from mobilenets.registry import create_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v1_100")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--dir", help="where to write the checkpoints (default: a temporary folder); its disk is timed")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = create_model(args.model, num_classes=args.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()  # momentum buffers exist, as in a checkpoint after the first epoch

    def state(step: int) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": step, "step_in_epoch": 0,
                "global_step": step, "rng": rng_state(), "config": {}}  # fmt: skip

    times: dict[str, list[float]] = {"inline_s": [], "background_on_thread_s": [], "background_write_s": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        writer = CheckpointWriter(folder, keep=2)
        step = 0
        for _ in range(args.rounds):  # alternately: inline, background
            step += 1
            t = time.perf_counter()
            save_checkpoint(folder, state(step), keep=2)
            times["inline_s"].append(time.perf_counter() - t)
            step += 1
            t = time.perf_counter()
            writer.save(state(step))
            times["background_on_thread_s"].append(time.perf_counter() - t)
            writer.wait()
            times["background_write_s"].append(time.perf_counter() - t)
        size = checkpoint_path(folder, step).stat().st_size
    median = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "what": "seconds per checkpoint on the training thread: inline vs background (CheckpointWriter), alternating",
        "caveat": "the training thread is idle while the writer works here: the writer's CPU and GIL use during real "
        "training (which competes with it on a small CPU) is not counted, so the background figure is a lower bound",
        "model": args.model,
        "classes": args.classes,
        "checkpoint_mib": round(size / 2**20, 1),
        "rounds": args.rounds,
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "inline_over_background_on_thread": round(median["inline_s"] / median["background_on_thread_s"], 1),
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "environment": {**environment(), "torch_threads": 1, "command": " ".join(["python", *sys.argv])},
    }
    print(json.dumps({k: v for k, v in row.items() if k not in ("all_s", "environment")}, indent=2))
    if args.write:
        out = REPO / "results" / f"checkpoint-cost-{hardware_tag(row['environment'])}.json"
        atomic_write_text(out, json.dumps(row, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
