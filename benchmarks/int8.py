"""INT8 vs fp32 on this CPU: latency (batch 1, 1 thread), size on disk, Imagenette top-1, per-channel vs per-tensor.

Models:
- 0.25-128 and 0.75-192: the real uint8 TFLite ImageNet classifiers (shared/data/mobilenet-weights/tflite) converted
  to our format (float weights = the dequantized TFLite weights); top-1 on Imagenette val, 1000-way (argmax over the
  1000 ImageNet classes; the background output is ignored).
- 1.0-224: no real weights exist here. Latency and size only: random conv weights with BatchNorm statistics
  re-estimated on 64 Imagenette train images, so activations have a realistic scale (a fresh init decays into
  denormal floats, which would distort fp32 timings). Accuracy is not measurable for it.

INT8 = `mobilenets export --int8`: QDQ, int8 symmetric weights (per-channel or per-tensor), uint8 activations,
MinMax calibration on CALIB Imagenette *train* images (disjoint from val), fixed seed. `int8-per-channel` and
`int8-per-tensor` are the export default (stem + first depthwise conv kept fp32, `FP32_HEAD`);
`int8-per-channel-all` quantizes every conv (`--int8-fp32-head 0`).
Latency: every runner is called in alternating blocks (fp32, int8, fp32, ...) in one process; median of all calls.

Floor analysis (`--floor MODEL`, default 0.25-128; the evidence for why a small model gains less from INT8):
- session floor: an ONNX Runtime session holding one Identity node on the same input, timed with the others;
- graph floor: the same network exported at resolution 32 (same nodes, 1/16 of the multiply-adds), fp32 and INT8;
- per-node profile: ONNX Runtime's profiler (`SessionOptions.enable_profiling`), median kernel time per layer over
  PROFILE_CALLS calls for fp32 and both INT8 variants. The profiler inflates every kernel a little (its per-node sums
  exceed the unprofiled latency), so read it as attribution, not as latency.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/int8.py [--cpu 0] [--val-count N] [--quick]
Writes results/int8-<hw>-b1-t<threads>.{json,csv,md}; every row records the machine and versions
(`run_environment`: `mobilenets.bench.environment`'s fields, as the bench rows, plus onnx).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mobilenets
from mobilenets.bench import environment
from mobilenets.data import shared_data_root  # noqa: E402
from mobilenets.export import (
    FP32_HEAD,
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
# name -> (per_channel, fp32_head)
INT8_VARIANTS = {
    "int8-per-channel": (True, FP32_HEAD),
    "int8-per-channel-all": (True, 0),
    "int8-per-tensor": (False, FP32_HEAD),
}
FLOOR_RESOLUTION = 32
PROFILE_CALLS = 300


def run_environment() -> dict:
    """The machine and versions every row records: `mobilenets.bench.environment` (cpu, cores, gpu, torch,
    onnxruntime, openvino, python, commit), the fields of every bench row, plus onnx, which builds the INT8 graphs."""
    import onnx

    return {**environment(), "onnx": onnx.__version__}


def result_row(name: str, origin: str, key: str, timing: dict, *, base_ms: float, size_mb: float, accuracy: dict,
               val_images: int, threads: int, env: dict) -> dict:  # fmt: skip
    """One results row: ``key`` is '<runtime> <precision>'; ``timing`` a `time_alternating` entry; ``accuracy``
    `top1`'s entry for the key ({} when not measured); ``env`` from `run_environment`, recorded in the row."""
    runtime, kind = key.split(" ", 1)
    return {
        "model": name,
        "weights": origin,
        "runtime": runtime,
        "precision": kind,
        "batch": 1,
        "threads": threads,
        **timing,
        "speedup_vs_ort_fp32": round(base_ms / timing["median_ms"], 2),
        "size_mb": round(size_mb, 3),
        "top1_pct": accuracy.get("top1_pct"),
        "agree_with_ort_fp32_pct": accuracy.get("agree_with_fp32_pct"),
        "val_images": val_images if accuracy else None,
        **env,
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


def identity_onnx(path: Path, res: int) -> Path:
    """One Identity node on a (1, 3, res, res) float input: what a session.run costs with no work in it."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 3, res, res]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def layer_of(node: str, op: str) -> str:
    """Our layer name for an ONNX Runtime node name (fp32 NCHWc and INT8 QLinear names differ), else the op type."""
    if m := re.search(r"blocks\.(\d+)/(dw|pw)", node):
        return f"b{int(m[1]):02d}.{m[2]}"
    for part in ("stem", "classifier", "global_pool"):
        if f"/{part}" in node:
            return part
    return f"glue:{op}"


def profile_layers(path: Path, x: np.ndarray, threads: int, calls: int) -> dict[str, dict]:
    """Per layer: median kernel time (us) over ``calls`` profiled runs and the ONNX Runtime op(s) that ran it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(20):
        sess.run(None, {"input": x})
    for _ in range(calls):
        sess.run(None, {"input": x})
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink()
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][20:]
    per: dict[str, dict[tuple[str, str], list[float]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per.setdefault(layer_of(e["name"], op), {}).setdefault((e["name"], op), []).append(e["dur"])
    out = {}
    for layer, nodes in per.items():
        # each node ran 20 warm-up + `calls` times: keep the last `calls`; a layer's time is the sum over its nodes
        us = sum(float(np.median(v[-calls:])) for v in nodes.values())
        out[layer] = {"us": round(us, 1), "ops": "+".join(sorted({op for _, op in nodes}))}
    out["(model_run, profiled)"] = {"us": round(float(np.median(runs)), 1), "ops": ""}
    return out


def floor_analysis(model, name: str, paths: dict, work: Path, calib_train: list[Path], args) -> dict:
    """Session floor, graph floor at FLOOR_RESOLUTION and per-layer profile of fp32 and INT8 for one model."""
    spec = model.spec
    res = spec.resolution
    x = np.random.default_rng(0).standard_normal((1, 3, res, res)).astype(np.float32)
    small = {"fp32": export_onnx(model, work / f"{name}.r{FLOOR_RESOLUTION}.fp32.onnx", resolution=FLOOR_RESOLUTION)}
    for kind in ("int8-per-channel", "int8-per-channel-all"):
        per_channel, head = INT8_VARIANTS[kind]
        batches = calibration_batches(calib_train[:32], spec, count=min(32, len(calib_train)), progress=False)
        small[kind] = quantize_int8(
            small["fp32"],
            work / f"{name}.r{FLOOR_RESOLUTION}.{kind}.onnx",
            (torch.nn.functional.interpolate(torch.from_numpy(b), size=FLOOR_RESOLUTION).numpy() for b in batches),
            per_channel=per_channel,
            fp32_head=head,
        )
    runners = {f"{kind} @{res}": ort_run(ort_session(p, args.threads)) for kind, p in paths.items()}
    runners[f"identity @{res}"] = ort_run(ort_session(identity_onnx(work / "identity.onnx", res), args.threads))
    lat = time_alternating(runners, x, args.rounds, args.block)
    xs = np.random.default_rng(0).standard_normal((1, 3, FLOOR_RESOLUTION, FLOOR_RESOLUTION)).astype(np.float32)
    small_runners = {f"{k} @{FLOOR_RESOLUTION}": ort_run(ort_session(p, args.threads)) for k, p in small.items()}
    lat.update(time_alternating(small_runners, xs, args.rounds, args.block))
    kinds = ("fp32", "int8-per-channel-all", "int8-per-channel")
    prof = {k: profile_layers(paths[k], x, args.threads, args.profile_calls) for k in kinds}
    return {"model": name, "latency": lat, "profile": prof, "profile_calls": args.profile_calls}


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
    ap.add_argument("--cpu", type=int, help="pin the process to this CPU (the other vCPU here is shared)")
    ap.add_argument("--floor", default="0.25-128", help="model for the floor analysis ('' = none)")
    ap.add_argument("--profile-calls", type=int, default=PROFILE_CALLS)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = ap.parse_args()
    if args.quick:
        args.calib, args.val_count, args.rounds, args.block, args.profile_calls = 16, 64, 2, 5, 20
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(args.threads)
    work = Path("/tmp/mobilenets-int8-bench")
    work.mkdir(exist_ok=True)
    calib_train = pick_images(DATA / "imagenette" / "train", args.calib, seed=0)
    val_files, val_labels = imagenette_val(args.val_count, seed=1)
    env = run_environment()
    rows: list[dict] = []
    floor: dict = {}
    for name in args.models:
        model, origin = build(name, work, calib_train)
        spec = model.spec
        paths = {"fp32": export_onnx(model, work / f"{name}.fp32.onnx")}
        for kind, (per_channel, head) in INT8_VARIANTS.items():
            t0 = time.perf_counter()
            batches = calibration_batches(calib_train, spec, count=len(calib_train), progress=False)
            out = work / f"{name}.{kind}.onnx"
            paths[kind] = quantize_int8(paths["fp32"], out, batches, per_channel=per_channel, fp32_head=head)
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
            size_mb = paths[key.split(" ", 1)[1]].stat().st_size / 1e6
            row = result_row(name, origin, key, t, base_ms=base, size_mb=size_mb, accuracy=acc.get(key, {}),
                             val_images=len(val_files), threads=args.threads, env=env)  # fmt: skip
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        if name == args.floor:
            floor = floor_analysis(model, name, paths, work, calib_train, args)
        write(rows, floor, args, env)  # after every model, so a crash late in the run keeps the finished models
    return 0


def results_meta(rows: list[dict], floor: dict, args, env: dict) -> dict:
    """The JSON results file: command, ``env`` (as the rows record it), settings, rows and floor analysis."""
    return {
        "command": " ".join(["python", "benchmarks/int8.py", *sys.argv[1:]]),
        "env": env,
        "settings": {
            "batch": 1,
            "threads": args.threads,
            "calibration": f"{args.calib} Imagenette train images (seed 0), MinMax, uint8 activations, int8 weights",
            "val": "Imagenette val, all 3,925 images"
            if not args.val_count
            else f"{args.val_count} val images (seed 1)",
            "timing": f"{args.rounds} rounds x {args.block} calls per runner, alternating; 5 warm-up calls",
            "cpu_pinning": f"CPU {args.cpu}" if args.cpu is not None else "none",
            "int8_variants": {k: f"per_channel={pc}, fp32_head={h}" for k, (pc, h) in INT8_VARIANTS.items()},
            "top1": "1000-way argmax (TF-slim background output ignored) against the ImageNet index of the wnid",
        },
        "rows": rows,
        "floor": floor,
    }


def write(rows: list[dict], floor: dict, args, env: dict) -> None:
    hw = env["cpu"].replace(" ", "-").lower()
    stem = RESULTS / f"int8-{hw}-b1-t{args.threads}{'-quick' if args.quick else ''}"
    RESULTS.mkdir(exist_ok=True)
    meta = results_meta(rows, floor, args, env)
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ["model", "runtime", "precision", "median_ms", "p10_ms", "p90_ms", "speedup_vs_ort_fp32", "size_mb"]
    cols += ["top1_pct", "agree_with_ort_fp32_pct"]
    lines = [
        f"# INT8 vs fp32, batch 1, {args.threads} thread(s), {env['cpu']} ({env['cores']} vCPUs)",
        "",
        f"Command: `{meta['command']}`; environment (also in every CSV/JSON row): {json.dumps(env)}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")
    lines += ["", *(f"- {k}: {v}" for k, v in meta["settings"].items())]
    lines.append("- 1.0-224 has no real weights here: latency and size only, accuracy not measurable.")
    if floor:
        lines += floor_md(floor)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json/.csv/.md")


def floor_md(floor: dict) -> list[str]:
    lat, prof, name = floor["latency"], floor["profile"], floor["model"]
    res = next(iter(lat)).split("@")[1]
    fp32 = lat[f"fp32 @{res}"]["median_ms"]
    best = min(lat[f"{k} @{res}"]["median_ms"] for k in INT8_VARIANTS)
    lines = [
        "",
        f"## Why {name} gains less: floors and per-layer profile (ONNX Runtime, same process, same settings)",
        "",
        "| runner | median_ms | p10_ms | p90_ms |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v['median_ms']} | {v['p10_ms']} | {v['p90_ms']} |" for k, v in lat.items()]
    target = fp32 / 2.5
    small = {k: v["median_ms"] for k, v in lat.items() if k.endswith(f"@{FLOOR_RESOLUTION}")}
    lines += [
        "",
        f"- 2.5x over ORT fp32 ({fp32} ms) means <= {target:.3f} ms; the fastest INT8 variant here: {best} ms "
        f"= {fp32 / best:.2f}x.",
        f"- The same graphs at {FLOOR_RESOLUTION}x{FLOOR_RESOLUTION} (1/{(int(res) // FLOOR_RESOLUTION) ** 2} of "
        "the multiply-adds, the same nodes) still take "
        + ", ".join(f"{k.split(' @')[0]} {v} ms" for k, v in small.items())
        + f": that part of the INT8 latency barely shrinks with the work (per-node dispatch, quantize/layout glue), "
        f"and it alone is {min(small[k] for k in small if k.startswith('int8')) / target:.0%} of the {target:.3f} ms "
        "budget.",
        "",
        f"Per-layer kernel time, us (ORT profiler, median of {floor['profile_calls']} batch-1 calls; op types in "
        "brackets):",
        "",
        "| layer | " + " | ".join(prof) + " |",
        "|---|" + "---|" * len(prof),
    ]
    layers = sorted({layer for p in prof.values() for layer in p}, key=_layer_order)
    for layer in layers:
        cells = [f"{p[layer]['us']} ({p[layer]['ops']})" if layer in p else "-" for p in prof.values()]
        lines.append(f"| {layer} | " + " | ".join(cells).replace(" ()", "") + " |")
    sums = [sum(v["us"] for k, v in p.items() if not k.startswith("(")) for p in prof.values()]
    lines.append("| (sum of kernels) | " + " | ".join(f"{s:.1f}" for s in sums) + " |")
    # An optimistic bound for any choice of which layers to quantize: every layer at the faster of its fp32 and
    # INT8 kernel, and the fp32<->INT8 conversions between them free.
    f, q = prof["fp32"], prof["int8-per-channel-all"]
    real = [k for k in layers if not k.startswith(("glue", "(")) and k in f and k in q]
    bound = sum(min(f[k]["us"], q[k]["us"]) for k in real)
    fsum = sum(f[k]["us"] for k in real)
    pw = [k for k in real if k.endswith(".pw")]
    dw = [k for k in real if k.endswith(".dw") or k == "stem"]
    pw_f, pw_q = sum(f[k]["us"] for k in pw), sum(q[k]["us"] for k in pw)
    dw_f, dw_q = sum(f[k]["us"] for k in dw), sum(q[k]["us"] for k in dw)
    lines += [
        "",
        f"- Layer by layer, INT8 beats fp32 only on the pointwise convs (sum {pw_f:.0f} us fp32 vs {pw_q:.0f} us "
        f"INT8); the stem and depthwise convs are slower in INT8 ({dw_f:.0f} us fp32 vs {dw_q:.0f} us INT8).",
        f"- Bound for any per-layer fp32/INT8 mix: each layer at its faster kernel, conversions free: {bound:.0f} us "
        f"vs {fsum:.0f} us all-fp32 = {fsum / bound:.2f}x at most, below 2.5x before any glue or session overhead.",
    ]
    return lines


def _layer_order(layer: str) -> tuple:
    order = ["stem", "b", "global_pool", "classifier", "glue", "("]
    return next(i for i, p in enumerate(order) if layer.startswith(p)), layer


if __name__ == "__main__":
    sys.exit(main())
