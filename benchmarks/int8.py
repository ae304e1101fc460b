"""INT8 vs fp32 on this CPU: latency (batch 1, 1 thread), size on disk, Imagenette top-1, per-channel vs per-tensor.

Models:
- 0.25-128 and 0.75-192: the real uint8 TFLite ImageNet classifiers (shared/data/mobilenet-weights/tflite) converted
  to our format (float weights = the dequantized TFLite weights); top-1 on Imagenette val, 1000-way (argmax over the
  1000 ImageNet classes; the background output is ignored).
- 1.0-224: no real weights exist here. Latency and size only: random conv weights with BatchNorm statistics
  re-estimated on 64 Imagenette train images, so activations have a realistic scale (a fresh init decays into
  denormal floats, which would distort fp32 timings). Accuracy is not measurable for it.

INT8 = `mobilenets export --int8`: QDQ, int8 symmetric weights (per-channel or per-tensor), uint8 activations,
MinMax calibration on CALIB Imagenette *train* images (disjoint from val), fixed seed.
Latency: every runner is called in alternating blocks (fp32, int8, fp32, ...) in one process; median of all calls.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/int8.py [--val-count N] [--quick]
Writes results/int8-<hw>-b1-t<threads>.{json,csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mobilenets
from mobilenets.data import shared_data_root  # noqa: E402
from mobilenets.export import (
    calibration_batches,
    export_onnx,
    ort_run,
    ort_session,
    pick_images,
    quantize_int8,
)
from mobilenets.runtimes import openvino_runner

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_root()
RESULTS = REPO / "results"
TFLITE = DATA / "mobilenet-weights" / "tflite"
MODELS = {
    "0.25-128": TFLITE / "mobilenet_v1_0.25_128_quant.tflite",
    "0.75-192": TFLITE / "mobilenet_v1_0.75_192_quant.tflite",
    "1.0-224": None,
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown-cpu"


def versions() -> dict:
    import onnx
    import onnxruntime
    import openvino

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "mobilenets_commit": commit,
    }


def build(name: str, work: Path, calib_train: list[Path]) -> tuple[mobilenets.MobileNetV1, str]:
    src = MODELS[name]
    if src is not None:
        from mobilenets.convert import convert

        model, _ = convert(src)
        return model.eval(), f"converted from {src.name}"
    spec = mobilenets.ModelSpec(
        alpha=1.0, resolution=224, act="relu6", tf_padding=True, num_classes=1001, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    model = mobilenets.create_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for x in calibration_batches(calib_train[:64], spec, count=64, batch=16, progress=False):
            model(torch.from_numpy(x))
    return model.eval(), "random conv weights, BN statistics re-estimated on 64 Imagenette train images (no accuracy)"


def time_alternating(runners: dict, x: np.ndarray, rounds: int, block: int) -> dict:
    """Alternate blocks of calls over the runners; per runner: median/p10/p90 of all calls in ms."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(5):
            run(x)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(block):
                t0 = time.perf_counter()
                run(x)
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {
        k: {
            "median_ms": round(float(np.median(v)), 3),
            "p10_ms": round(float(np.percentile(v, 10)), 3),
            "p90_ms": round(float(np.percentile(v, 90)), 3),
            "calls": len(v),
        }
        for k, v in times.items()
    }


def imagenette_val(count: int | None, seed: int) -> tuple[list[Path], np.ndarray]:
    rows = list(csv.DictReader((DATA / "imagenette" / "manifest.csv").open()))
    rows = [r for r in rows if r["split"] == "val"]
    if count and count < len(rows):
        idx = np.sort(np.random.default_rng(seed).permutation(len(rows))[:count])
        rows = [rows[i] for i in idx]
    return [DATA / "imagenette" / r["path"] for r in rows], np.array([int(r["imagenet_index"]) for r in rows])


def top1(runners: dict, spec, files: list[Path], labels: np.ndarray) -> dict:
    """1000-way top-1 (%) per runner; images preprocessed once per chunk and fed to every runner."""
    correct = {k: 0 for k in runners}
    agree = {k: 0 for k in runners}
    for start in range(0, len(files), 128):
        chunk = files[start : start + 128]
        x = np.concatenate(list(calibration_batches(chunk, spec, count=len(chunk), batch=32, progress=False)))
        y = labels[start : start + len(chunk)]
        ref = None
        for name, run in runners.items():
            logits = np.concatenate([run(x[i : i + 32]) for i in range(0, len(x), 32)])
            pred = logits[:, 1:].argmax(1) if logits.shape[1] == 1001 else logits.argmax(1)
            correct[name] += int((pred == y).sum())
            ref = pred if ref is None else ref
            agree[name] += int((pred == ref).sum())
    n = len(files)
    return {
        k: {"top1_pct": round(100 * correct[k] / n, 2), "agree_with_fp32_pct": round(100 * agree[k] / n, 2)}
        for k in runners
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=200, help="calibration images from Imagenette train")
    ap.add_argument("--val-count", type=int, default=0, help="Imagenette val images (0 = all 3,925)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = ap.parse_args()
    if args.quick:
        args.calib, args.val_count, args.rounds, args.block = 16, 64, 2, 5
    torch.set_num_threads(args.threads)
    work = Path("/tmp/mobilenets-int8-bench")
    work.mkdir(exist_ok=True)
    calib_train = pick_images(DATA / "imagenette" / "train", args.calib, seed=0)
    val_files, val_labels = imagenette_val(args.val_count, seed=1)
    rows = []
    for name in args.models:
        model, origin = build(name, work, calib_train)
        spec = model.spec
        paths = {"fp32": export_onnx(model, work / f"{name}.fp32.onnx")}
        for kind, per_channel in (("int8-per-channel", True), ("int8-per-tensor", False)):
            t0 = time.perf_counter()
            batches = calibration_batches(calib_train, spec, count=len(calib_train), progress=False)
            paths[kind] = quantize_int8(paths["fp32"], work / f"{name}.{kind}.onnx", batches, per_channel=per_channel)
            print(f"{name}: {kind} quantized in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runners = {}
        for kind, path in paths.items():
            runners[f"ort {kind}"] = ort_run(ort_session(path, args.threads))
            runners[f"openvino {kind}"] = openvino_runner(path, threads=args.threads)
        x = np.random.default_rng(0).standard_normal((1, 3, spec.resolution, spec.resolution)).astype(np.float32)
        lat = time_alternating(runners, x, args.rounds, args.block)
        acc = {}
        if MODELS[name] is not None:
            ordered = {"ort fp32": runners["ort fp32"]}
            ordered.update({k: v for k, v in runners.items() if k != "ort fp32"})
            acc = top1(ordered, spec, val_files, val_labels)
        base = lat["ort fp32"]["median_ms"]
        for key, t in lat.items():
            runtime, kind = key.split(" ", 1)
            row = {
                "model": name,
                "weights": origin,
                "runtime": runtime,
                "precision": kind,
                "batch": 1,
                "threads": args.threads,
                **t,
                "speedup_vs_ort_fp32": round(base / t["median_ms"], 2),
                "size_mb": round(paths[kind].stat().st_size / 1e6, 3),
                "top1_pct": acc.get(key, {}).get("top1_pct"),
                "agree_with_ort_fp32_pct": acc.get(key, {}).get("agree_with_fp32_pct"),
                "val_images": len(val_files) if acc else None,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        write(rows, args)  # after every model, so a crash late in the run keeps the finished models
    return 0


def write(rows: list[dict], args) -> None:
    hw = cpu_name().replace(" ", "-").lower()
    stem = RESULTS / f"int8-{hw}-b1-t{args.threads}{'-quick' if args.quick else ''}"
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "command": " ".join(["python", "benchmarks/int8.py", *sys.argv[1:]]),
        "hardware": {"cpu": cpu_name(), "cores_visible": torch.get_num_threads() and __import__("os").cpu_count()},
        "versions": versions(),
        "settings": {
            "batch": 1,
            "threads": args.threads,
            "calibration": f"{args.calib} Imagenette train images (seed 0), MinMax, uint8 activations, int8 weights",
            "val": "Imagenette val, all 3,925 images"
            if not args.val_count
            else f"{args.val_count} val images (seed 1)",
            "timing": f"{args.rounds} rounds x {args.block} calls per runner, alternating; 5 warm-up calls",
            "top1": "1000-way argmax (TF-slim background output ignored) against the ImageNet index of the wnid",
        },
        "rows": rows,
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ["model", "runtime", "precision", "median_ms", "p10_ms", "p90_ms", "speedup_vs_ort_fp32", "size_mb"]
    cols += ["top1_pct", "agree_with_ort_fp32_pct"]
    lines = [
        f"# INT8 vs fp32, batch 1, {args.threads} thread(s), {cpu_name()}",
        "",
        f"Command: `{meta['command']}`; versions: {json.dumps(meta['versions'])}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")
    lines += ["", *(f"- {k}: {v}" for k, v in meta["settings"].items())]
    lines.append("- 1.0-224 has no real weights here: latency and size only, accuracy not measurable.")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json/.csv/.md")


if __name__ == "__main__":
    sys.exit(main())
