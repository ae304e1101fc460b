"""What agreeing on a SIGTERM's stop step costs a torchrun job per optimizer step (`stopping.StopAgreement`).

Under torchrun every process reads, at each step's end, the MAX of every process's stop request as it was at the
previous step's end: a 1-element all-reduce on a gloo group of its own, launched asynchronously and waited one step
later. This times 2-process gloo runs on the CPU of a small model, alternately with the agreement and without it
(its calls replaced by ones that agree on nothing and communicate nothing), A B A B: the median interval between
two steps of one epoch in each run (rank 0's clock; the intervals ending at an epoch's first two steps are left out:
the first waits for the loader and follows the evaluation) as steps/s, and the host seconds each `at_step_end` call
took. The GPU path (NCCL for the gradients, the agreement still on gloo) is not timed here.

    flock /tmp/mobilenets-cpu.lock python benchmarks/stop_agreement_cost.py                # 4 rounds, 0.25 @ 32 px
    python benchmarks/stop_agreement_cost.py --rounds 2 --resolution 64 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import environment, hardware_tag  # noqa: E402
from mobilenets.data import shared_data_root  # noqa: E402

# `mobilenets` whose rank 0 writes each step's end time (perf_counter) and each at_step_end call's host seconds to
# $STOP_BENCH_OUT; with STOP_BENCH_AGREE=0 the agreement's calls agree on nothing and communicate nothing
LAUNCHER = """
import json, os, sys, time
from mobilenets import engine, stopping
from mobilenets.cli import main

ends, calls = [], []
step = engine.train_step

def timed_step(model, images, labels, ctx, global_step):
    result = step(model, images, labels, ctx, global_step)
    ends.append((global_step + 1, time.perf_counter()))  # the host's end of the step (CPU: the work's end too)
    return result

engine.train_step = timed_step
if os.environ["STOP_BENCH_AGREE"] == "0":
    stopping.StopAgreement.at_step_end = lambda self: False
    stopping.StopAgreement.at_epoch_end = lambda self: False
else:
    agree = stopping.StopAgreement.at_step_end

    def timed_agree(self):
        t = time.perf_counter()
        try:
            return agree(self)
        finally:
            calls.append(time.perf_counter() - t)

    stopping.StopAgreement.at_step_end = timed_agree
status = main(sys.argv[1:])
if os.environ["RANK"] == "0":
    with open(os.environ["STOP_BENCH_OUT"], "w") as f:
        json.dump({"ends": ends, "calls": calls}, f)
sys.exit(status)
"""


def step_intervals(ends: list[list[float]], steps_per_epoch: int) -> list[float]:
    """Seconds between consecutive steps of one epoch: the intervals ending at an epoch's first and second steps are
    left out (global steps count from 1; every class is assumed to hold ``--per-class`` images)."""
    return [
        t1 - t0
        for (s0, t0), (s1, t1) in zip(ends, ends[1:], strict=False)
        if s1 == s0 + 1 and (s0 - 1) // steps_per_epoch == (s1 - 1) // steps_per_epoch and (s0 - 1) % steps_per_epoch
    ]


def one_run(args, launcher: Path, folder: Path, agree: bool) -> dict:
    out = folder / f"run-{'on' if agree else 'off'}"
    times = folder / "times.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
           str(launcher), "train", "--data", args.data, "--out", str(out), "--alpha", str(args.alpha),
           "--resolution", str(args.resolution), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
           "--classes", *args.classes, "--max-per-class", str(args.per_class), "--max-val-per-class", "2",
           "--workers", "0", "--threads", "1", "--device", "cpu", "--keep-checkpoints", "1", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "STOP_BENCH_OUT": str(times),
           "STOP_BENCH_AGREE": "1" if agree else "0"}  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    recorded = json.loads(times.read_text())
    subprocess.run(["rm", "-rf", str(out)], check=True)
    steps_per_epoch = args.per_class * len(args.classes) // args.batch_size
    gaps = step_intervals(recorded["ends"], steps_per_epoch)
    return {"steps_per_s": 1 / statistics.median(gaps), "intervals": len(gaps), "calls_s": recorded["calls"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="runs each way, alternated (with, without, with, ...)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8, help="over every process")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=100, help="training images per class")
    p.add_argument("--classes", nargs="+", default=["n01440764", "n02979186"])
    p.add_argument("--data", default=str(shared_data_root() / "imagenette"))
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        launcher = Path(tmp) / "launch.py"
        launcher.write_text(LAUNCHER)
        for _ in range(args.rounds):
            for way in ("with", "without"):
                runs[way].append(one_run(args, launcher, Path(tmp), agree=way == "with"))
                print(f"{way}: {runs[way][-1]['steps_per_s']:.2f} steps/s", file=sys.stderr)
    median = {way: statistics.median(r["steps_per_s"] for r in rs) for way, rs in runs.items()}
    calls = [c for r in runs["with"] for c in r["calls_s"]]
    row = {
        "what": "steps/s of a torchrun job on the CPU (gloo) with and without the SIGTERM stop agreement, alternated; "
        "per run the median interval between two steps of an epoch",
        "nproc": args.nproc,
        "model": f"mobilenet_v1 alpha {args.alpha:g} at {args.resolution} px",
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "median_steps_per_s": {way: round(v, 3) for way, v in median.items()},
        "with_over_without": round(median["with"] / median["without"], 4),
        "steps_per_s": {way: [round(r["steps_per_s"], 3) for r in rs] for way, rs in runs.items()},
        "at_step_end_host_s": {"median": statistics.median(calls), "max": max(calls), "calls": len(calls)},
        "environment": {**environment(), "torch_threads": 1, "command": " ".join(["python", *sys.argv])},
    }
    print(json.dumps({k: v for k, v in row.items() if k != "environment"}, indent=2))
    if args.write:
        out = REPO / "results" / f"stop-agreement-cost-{hardware_tag(row['environment'])}.json"
        atomic_write_text(out, json.dumps(row, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
