"""The 16-model grid on this CPU, every available runtime, threads 1 and 2, beside timm's mobilenetv1_100.

Writes under results/ (names carry hardware, runtimes, threads, batch):
- bench-<hw>-<runtimes>-t1+2-b32.{csv,json}: one `mobilenets bench` row per model x runtime x threads, with the
  FP32 physical limit (2 x MACs / measured sgemm peak) and the matmul probe taken beside each thread count;
- ours-vs-timm-<hw>-t1+2.json: ours (mobilenet_v1_100) and timm's mobilenetv1_100 timed alternately
  (A B A B blocks) on each runtime and thread count, with the ratio;
- overhead-bench-vs-direct-<hw>-t1.json: `bench`'s timed call vs the runtime called directly, alternately;
- bench-<hw>-report.md: the tables generated from those files (fraction of the limit per runtime).

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/bench_grid.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mobilenets import bench
from mobilenets.runtimes import RuntimeUnavailable, make_runner, torch_threads

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUNTIMES = ("torch", "torch-cl", "ort", "openvino", "openvino-bf16", "ort-int8", "openvino-int8")
# torch.compile (with freezing) costs 5-30 s per model and input shape here, and its compiled code is specialised to
# the thread count: it runs at 1 thread, latency only (no batch-32 recompile), to keep the run within ~25 minutes.
COMPILE_MODELS = bench.GRID + ("timm:mobilenetv1_100",)
PEER = "timm:mobilenetv1_100"


def grid_rows(args, peak: float, notes: list[str]) -> list[dict]:
    models = bench.GRID + (PEER,)
    cfg = bench.BenchConfig(
        models=models if not args.quick else models[:2] + (PEER,),
        runtimes=RUNTIMES,
        threads=(1, 2),
        batch=32,
        min_runs=args.min_runs,
        min_time=args.min_time,
        peak_gflops=peak,
    )
    rows = bench.run_bench(cfg, notes=notes)
    if args.skip_compile:
        return rows
    compile_cfg = replace(cfg, models=COMPILE_MODELS if not args.quick else (PEER,), runtimes=("compile",))
    rows += bench.run_bench(replace(compile_cfg, threads=(1,), batch=0), notes=notes)
    return rows


def alternate_pair(runtime: str, threads: int, rounds: int) -> dict | None:
    """Ours vs timm on one runtime, timed A B A B in blocks of 5 calls."""
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    runners = {}
    try:
        for name in ("mobilenet_v1_100", PEER):
            model, _, _ = bench.build(name)
            runners[name] = make_runner(model, runtime, threads=threads)
    except RuntimeUnavailable as exc:
        return {"runtime": runtime, "threads": threads, "skipped": str(exc)}
    probe = bench.matmul_gflops(threads, seconds=0.3)
    t = bench.alternate({k: (lambda r=r: r(x)) for k, r in runners.items()}, rounds=rounds, block=5)
    ours, peer = (float(np.median(t[k]) * 1e3) for k in ("mobilenet_v1_100", PEER))
    return {
        "runtime": runtime,
        "threads": threads,
        "ours_ms": ours,
        "timm_ms": peer,
        "timm_over_ours": peer / ours,
        "runs_each": len(t[PEER]),
        "probe_gflops": probe,
        # a --rerun replaces some pairs and keeps the file's env (the first run's): each pair names its own run
        "commit": bench.git_commit(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def overhead(rounds: int) -> list[dict]:
    """`bench`'s measured call (Runner wrapper, the loop of `time_calls`) vs the bare runtime call, alternately."""
    import onnxruntime as ort

    out = []
    model, _, _ = bench.build("mobilenet_v1_100")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    runner = make_runner(model, "ort", threads=1)
    sess = runner.info["session"]
    assert isinstance(sess, ort.InferenceSession)
    name = sess.get_inputs()[0].name
    torch_runner = make_runner(model, "torch", threads=1)
    net = model.fuse()
    xt = torch.from_numpy(x)

    def bare_torch():
        with torch.inference_mode():
            net(xt)

    for runtime, wrapped, bare in (
        ("ort", lambda: runner(x), lambda: sess.run(None, {name: x})),
        ("torch", lambda: torch_runner(x), bare_torch),
    ):
        # Alternate whole measurements: bench.time_calls on the Runner vs the bare call timed by a plain loop; torch
        # at the runner's 1 thread throughout (as run_bench holds it), so neither call switches the thread count
        ours, direct = [], []
        with torch_threads(1):
            for _ in range(rounds):
                ours.append(np.median(bench.time_calls(wrapped, min_runs=20, min_time=10, warmup=2)))
                t = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    bare()
                    t.append(time.perf_counter() - t0)
                direct.append(np.median(t))
        o, d = float(np.median(ours) * 1e3), float(np.median(direct) * 1e3)
        out.append({"runtime": runtime, "threads": 1, "bench_ms": o, "direct_ms": d, "bench_over_direct": o / d})
    return out


def report(rows: list[dict], pairs: list[dict], over: list[dict], peak: float, stem: str) -> str:
    from mobilenets.formatting import render

    lines = [f"# `mobilenets bench` on {rows[0]['cpu']} ({rows[0]['cores']} vCPUs)\n"]
    lines.append(f"Generated by `benchmarks/bench_grid.py` from `{stem}.json`. FP32 peak {peak:.1f} GFLOP/s per core ")
    lines.append("(1-thread sgemm probe); FP32 limit = 2 x MACs / (peak x threads). Medians of batch-1 latency.\n")
    lines.append("## Fraction of the FP32 limit per runtime (limit / measured; 1.0 = at the limit), 1.0-224\n")
    best = [r for r in rows if r["model"] == "mobilenet_v1_100"]
    cols = ["runtime", "threads", "dtype", "latency_ms_median", "fp32_limit_ms", "limit_fraction", "probe_gflops"]
    lines.append(render(best, "md", cols) + "\n")
    lines.append("## Fraction of the limit over the grid (median over the 16 models)\n")
    summary = []
    for rt, th in dict.fromkeys((r["runtime"], r["threads"]) for r in rows):
        fr = [
            r["limit_fraction"]
            for r in rows
            if (r["runtime"], r["threads"]) == (rt, th) and r["limit_fraction"] and not r["model"].startswith("timm:")
        ]
        summary.append({"runtime": rt, "threads": th, "models": len(fr), "median_fraction": float(np.median(fr))})
    lines.append(render(summary, "md") + "\n")
    lines.append("## Ours vs timm mobilenetv1_100 (random init), alternating A B A B, batch 1\n")
    lines.append(render([p for p in pairs if "ours_ms" in p], "md") + "\n")
    lines.append("## `bench` overhead vs the runtime called directly (1.0-224, 1 thread, alternating)\n")
    lines.append(render(over, "md") + "\n")
    lines.append("## All rows (1 thread)\n")
    cols = ["model", "runtime", "latency_ms_median", "latency_ms_p90", "fps", "throughput_ips", "peak_mem_MB",
            "weights_MB", "macs_M", "top1", "fp32_limit_ms", "limit_fraction"]  # fmt: skip
    lines.append(render([r for r in rows if r["threads"] == 1], "md", cols) + "\n")
    lines.append("## All rows (2 threads; see probe_gflops for the machine state)\n")
    lines.append(render([r for r in rows if r["threads"] == 2], "md", cols + ["probe_gflops"]) + "\n")
    return "\n".join(lines)


def rerun(args, path: Path, t0: float, runtimes: tuple[str, ...]) -> int:
    """Replace the rows and ours-vs-timm pairs of ``runtimes`` in an earlier run's results (same peak) and regenerate
    the report and plots: compile after a runner change, the INT8 runtimes once the export issue's plug-in landed."""
    data = json.loads(path.read_text())
    meta, peak = data["meta"], data["meta"]["peak_gflops_per_core"]
    notes: list[str] = []
    compile_only = runtimes == ("compile",)
    threads = (1,) if compile_only else (1, 2)
    cfg = bench.BenchConfig(models=COMPILE_MODELS, runtimes=runtimes, threads=threads, batch=0 if compile_only else 32,
                            min_runs=args.min_runs, min_time=args.min_time, peak_gflops=peak)  # fmt: skip
    rows = [r for r in data["rows"] if r["runtime"] not in runtimes] + bench.run_bench(cfg, notes=notes)
    hw = bench.hardware_tag(rows[0])
    pairs_path = path.parent / f"ours-vs-timm-{hw}-t1+2.json"
    pairs = json.loads(pairs_path.read_text())
    kept = [p for p in pairs["pairs"] if p["runtime"] not in runtimes]
    pairs["pairs"] = kept + [alternate_pair(rt, th, args.rounds) for th in threads for rt in runtimes]
    pairs_path.write_text(json.dumps(pairs, indent=2))
    meta.setdefault("reruns", []).append(
        {"command": "python " + " ".join(sys.argv), "runtimes": runtimes, "seconds": time.time() - t0, "notes": notes}
    )
    runtime_order = {r: i for i, r in enumerate(RUNTIMES + ("compile",))}
    rows.sort(key=lambda r: (r["threads"] if r["runtime"] != "compile" else 3, runtime_order[r["runtime"]]))
    stem = bench.results_name(rows)  # the runtime list in the name changes when new runtimes join
    if stem != path.stem:
        for old in path.parent.glob(f"{path.stem}*"):
            old.unlink()
    bench.write_results(rows, path.parent / stem, meta=meta, merge=False)  # the rerun's rows replace the file
    over = json.loads((path.parent / f"overhead-bench-vs-direct-{hw}-t1.json").read_text())["rows"]
    (path.parent / f"bench-{hw}-report.md").write_text(report(rows, pairs["pairs"], over, peak, stem))
    from mobilenets import plots

    plots.bench_plots(rows, path.parent, stem=stem)
    print(f"{runtimes} rows re-measured in {time.time() - t0:.0f} s")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="two models only (checks the script)")
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--rerun", metavar="JSON", help="re-measure only --runtimes' rows/pairs into this results file")
    p.add_argument("--runtimes", default="compile", help="with --rerun: comma list (default: compile)")
    args = p.parse_args()
    t0 = time.time()
    if args.rerun:
        return rerun(args, Path(args.rerun), t0, tuple(args.runtimes.split(",")))
    peak = max(bench.matmul_gflops(1, seconds=1.0) for _ in range(3))
    notes: list[str] = []
    rows = grid_rows(args, peak, notes)
    extra = () if args.skip_compile else ("compile",)
    pairs = [alternate_pair(rt, th, args.rounds) for th in (1, 2) for rt in RUNTIMES + extra[: 2 - th]]
    over = overhead(max(3, args.rounds // 2))
    stem = bench.results_name(rows) + ("-quick" if args.quick else "")
    hw = bench.hardware_tag(rows[0])
    meta = {"command": "python " + " ".join(sys.argv), "peak_gflops_per_core": peak, "notes": notes,
            "seconds": time.time() - t0}  # fmt: skip
    out = RESULTS if not args.quick else RESULTS / "quick"
    bench.write_results(rows, out / stem, meta=meta, merge=False)  # this grid's rows, as report() shows them
    env = bench.environment()
    (out / f"ours-vs-timm-{hw}-t1+2.json").write_text(json.dumps({"env": env, "pairs": pairs}, indent=2))
    (out / f"overhead-bench-vs-direct-{hw}-t1.json").write_text(json.dumps({"env": env, "rows": over}, indent=2))
    (out / f"bench-{hw}-report.md").write_text(report(rows, pairs, over, peak, stem))
    from mobilenets import plots

    plots.bench_plots(rows, out, stem=stem)
    print(f"done in {time.time() - t0:.0f} s; notes: {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
