"""Cold one-image classification on a CPU device: `python -m mobilenets.lite` against `mobilenets predict`.

lite needs numpy, Pillow and onnxruntime; predict imports torch and torchvision. Each run is a fresh process, as a
camera trap or a cron job on a Raspberry Pi runs it. (The first line is --help's and the results file's "what".)

Model: the real uint8 TFLite 0.25-128 ImageNet classifier (shared/data/mobilenet-weights/tflite), converted by
`mobilenets convert` and exported fp32 by `mobilenets export` into a temporary folder; image: the hen photo of
shared/data/imagenet-sample. Both commands run at ``--threads`` (default 1), alternately (lite, predict, lite,
predict, ...), ``--runs`` times each; the wall time of each process is measured from this script (start to exit:
interpreter start, imports, model load, decode, one inference, printing). The top-1 label each printed is recorded
beside it, so a faster run that classified differently would show.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/lite_cold_start.py [--runs 5] [--threads 1]
Writes results/lite-cold-start-<hw>-t<threads>.json with the command, versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import environment, hardware_tag  # noqa: E402
from mobilenets.data import shared_data_root  # noqa: E402

DATA = shared_data_root()
TFLITE = DATA / "mobilenet-weights" / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
PHOTO = DATA / "imagenet-sample" / "n01514859_hen.JPEG"


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    """(seconds from start to exit, the first class line printed) of one fresh process; a failure stops the run."""
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    lines = [line.strip() for line in done.stdout.splitlines() if "%" in line]
    return seconds, lines[0] if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="cold processes per command (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="model threads of both commands (default 1)")
    args = ap.parse_args()
    for path in (TFLITE, PHOTO):
        if not path.is_file():
            sys.exit(f"{path}: not found (set MOBILENETS_DATA to the shared data folder)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cli = [sys.executable, "-m", "mobilenets"]
    with tempfile.TemporaryDirectory(prefix="lite-cold-") as tmp:
        weights, onnx_file = Path(tmp) / "w025", Path(tmp) / "t025.onnx"
        for step in (["convert", str(TFLITE), "--out", str(weights)],
                     ["export", str(weights), "--out", str(onnx_file), "--threads", str(args.threads)]):  # fmt: skip
            subprocess.run([*cli, *step], check=True, capture_output=True, env=env)
        commands = {
            "lite": [
                sys.executable,
                "-m",
                "mobilenets.lite",
                str(onnx_file),
                str(PHOTO),
                "--threads",
                str(args.threads),
                "--topk",
                "1",
            ],  # fmt: skip
            "predict": [*cli, "predict", str(onnx_file), str(PHOTO), "--threads", str(args.threads), "--topk", "1"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        top1: dict[str, set[str]] = {name: set() for name in commands}
        for run in range(args.runs):
            for name, argv in commands.items():
                seconds, line = timed(argv, env)
                times[name].append(seconds)
                top1[name].add(line)
                print(f"run {run + 1}/{args.runs} {name}: {seconds:.2f} s  {line}", file=sys.stderr)
    rows = [{"command": name, "median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs": v,
             "top1_printed": sorted(top1[name])} for name, v in times.items()]  # fmt: skip
    ratio = rows[1]["median_s"] / rows[0]["median_s"]
    report = {
        "what": __doc__.splitlines()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": f"{TFLITE.name} converted, exported fp32 (ONNX)",
        "image": PHOTO.name,
        "threads": args.threads,
        "rows": rows,
        "predict_over_lite": ratio,
        "environment": environment(),
    }
    out = REPO / "results" / f"lite-cold-start-{hardware_tag()}-t{args.threads}.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    for row in rows:
        print(f"{row['command']}: median {row['median_s']:.2f} s ({row['min_s']:.2f}-{row['max_s']:.2f})")
    print(f"predict / lite: {ratio:.1f}x; wrote {out}")


if __name__ == "__main__":
    main()
