"""Latency lookup table vs measurement: >= 8 off-grid MobileNets, ORT and torch, 1 thread, on this CPU.

Builds a fresh table (results/latency-lut-<hw>.json), predicts the models (raw NetAdapt sum and anchor-calibrated;
`lut.predict_many`: their shapes are timed together, round-robin), then measures all of them end to end, round-robin
in `ROUNDS` rounds. Layers, anchors and test models use the same statistic: the lowest of 5 block medians, blocks of
>= 30 ms for layers and models alike (`lut.block_ms`), minimum over rounds spread in time (the 2 vCPUs are shared with
other work whose slow phases last seconds); the plain `bench` median is recorded beside, and the first round's
figure too. The off-grid models are never used for fitting (`lut.ANCHORS` are drawn apart from them).
Writes results/lut-<hw>-ort+torch-t1.{csv,json,md}.
Target (issue 5): median absolute error <= 10%.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/lut_accuracy.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mobilenets import bench, lut
from mobilenets.formatting import render
from mobilenets.spec import ModelSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
OFF_GRID = ((0.3, 112), (0.35, 208), (0.45, 144), (0.55, 192), (0.6, 176), (0.7, 128), (0.8, 160), (0.85, 208),
            (0.9, 96), (0.95, 112))  # fmt: skip
RUNTIMES = ("ort", "torch")
ROUNDS = lut.CALIBRATION_ROUNDS  # the test models are timed exactly as the anchors are
NOTES = """Where the isolated sum goes wrong (see `lut` module docstring): timed alternately in one process, whole model
vs the sum of its isolated blocks, the whole model is x1.3 (torch eager) / x1.1-1.2 (ORT) slower, while the same
blocks timed inside the running model sum to within 4% of it: alone, a block's weights and input stay hot in cache.
The ratio differs between models (larger for unaligned channel counts: ORT x1.02-1.25 vs x0.79-1.04 for the 0.25-1.0
grid models), hence a calibration fitted on anchors drawn at random from the same search space (`lut.ANCHORS`),
with a per-layer term where it predicts the anchors better leave-one-out (ORT's per-session-run cost of an isolated
entry). The rest of the error is the machine: the 2 vCPUs are shared and slow phases of 10-30% last seconds, so an
entry or a model timed in one phase and compared with another timed in another is off by that much (0.45-144 once
read +30% on both runtimes; timed interleaved its ratio was the usual 1.09 / 1.22; successive passes over the same
15 entries summed 4.55-6.09 ms with torch).

Open (torch): in this benchmark the anchors' in-model ratio (whole / isolated sum; median 1.17-1.35 over five runs)
mostly comes out below the test models' measured later in the same run (1.30-1.39), so torch predictions run low.
Timed together in a fresh process, anchors and test models agree (1.12-1.32), and ageing a process with other
measurements did not move them; the cause is not found. It keeps torch's median error near the 10% line (4.6-13.1%).
"""


def whole_runner(alpha: float, res: int, runtime: str):
    from mobilenets import create_model
    from mobilenets.runtimes import make_runner

    runner = make_runner(create_model(ModelSpec(alpha=alpha, resolution=res)).eval(), runtime, threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, res, res), dtype=np.float32)
    return lambda: runner(x)


def plain_median(fn) -> float:
    """The `bench` statistic (median of >= 50 runs or 2 s), recorded beside the robust one for transparency."""
    return float(np.median(bench.time_calls(fn, min_runs=50, min_time=2.0)) * 1e3)


def main() -> int:
    t0 = time.time()
    env = bench.environment()
    hw = bench.hardware_tag(env)
    table = lut.LatencyLUT.load(RESULTS / f"latency-lut-{hw}.json")
    table.tables = {}  # fresh: measured now, in this run
    assert not set(OFF_GRID) & set(lut.ANCHORS), "the test models must not be calibration anchors"
    rows = []
    for runtime in RUNTIMES:
        specs = [ModelSpec(alpha=alpha, resolution=res) for alpha, res in OFF_GRID]
        predicted = lut.predict_many(specs, runtime=runtime, threads=1, lut=table, env=env)  # shapes timed together
        raws = lut.predict_many(specs, runtime=runtime, threads=1, lut=table, env=env, calibrated=False)
        for (alpha, res), (pred, new), (raw, _) in zip(OFF_GRID, predicted, raws, strict=True):
            rows.append({"runtime": runtime, "alpha": alpha, "resolution": res, "predicted_ms": pred,
                         "raw_sum_ms": raw, "shapes_measured": new})  # fmt: skip
            print(rows[-1], flush=True)
        runners = {(r["alpha"], r["resolution"]): whole_runner(r["alpha"], r["resolution"], runtime) for r in rows
                   if r["runtime"] == runtime}  # fmt: skip
        times: dict = {}
        for _ in range(ROUNDS):
            for model, fn in runners.items():
                times.setdefault(model, []).append(lut.block_ms(fn))
        for r in rows:
            if r["runtime"] != runtime:
                continue
            fn, t = runners[r["alpha"], r["resolution"]], times[r["alpha"], r["resolution"]]
            measured = min(t)
            r.update({"measured_ms": measured, "error_pct": 100 * (r["predicted_ms"] - measured) / measured,
                      "raw_error_pct": 100 * (r["raw_sum_ms"] - measured) / measured, "first_round_ms": t[0],
                      "plain_median_ms": plain_median(fn)})  # fmt: skip
            print(r, flush=True)
    cols = ("runtime", "alpha", "resolution", "measured_ms", "predicted_ms", "error_pct", "raw_sum_ms",
            "raw_error_pct", "shapes_measured", "first_round_ms", "plain_median_ms")  # fmt: skip
    rows = [{c: r[c] for c in cols} for r in rows]
    summary = []
    for runtime in RUNTIMES:
        rs = [r for r in rows if r["runtime"] == runtime]
        t = table.tables[lut.env_key(runtime, 1, env)]
        loo = t["fit"]["loo_median_pct"]
        err, raw = [abs(r["error_pct"]) for r in rs], [abs(r["raw_error_pct"]) for r in rs]
        summary.append({"runtime": runtime, "models": len(rs), "fit": t["fit"]["method"], "scale": t["scale"],
                        "per_layer_ms": t["per_layer"], "overhead_ms": t["overhead"],
                        "anchor_loo_median_pct": "/".join(f"{k} {v:.1f}" for k, v in loo.items()),
                        "median_abs_error_pct": float(np.median(err)), "max_abs_error_pct": float(max(err)),
                        "raw_median_abs_error_pct": float(np.median(raw))})  # fmt: skip
    stem = RESULTS / f"lut-{hw}-{'+'.join(RUNTIMES)}-t1"
    rounds = {"benchmark": ROUNDS, "calibration": lut.CALIBRATION_ROUNDS, "fill": lut.FILL_ROUNDS}
    meta = {"command": "python " + " ".join(sys.argv), "env": env, "seconds": time.time() - t0, "anchors": lut.ANCHORS,
            "rounds": rounds}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=2))
    stem.with_suffix(".csv").write_text(render(rows, "csv") + "\n")
    md = [f"# Latency lookup table vs measured, {env['cpu']} ({env['cores']} vCPUs), 1 thread\n",
          f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s. Calibration anchors: {lut.ANCHORS}; the "
          "test models below are not anchors. Prediction = overhead + scale x sum of the isolated per-block entries + "
          "per_layer x their number (15), fitted on the anchors only: `fit` is the form `lut.fit_calibration` chose by "
          "leave-one-out over the anchors (median = one factor, the median anchor ratio; per_layer = both terms, "
          "relative least squares). Every figure (entries, anchors, "
          f"test models) is the minimum over {ROUNDS} rounds spread in time of `lut.block_ms` (lowest of 5 block "
          "medians, blocks >= 30 ms); `first_round_ms` is "
          "the first round alone, `plain_median_ms` the `bench` median.\n", NOTES, render(summary, "md"), "",
          render(rows, "md")]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(render(summary, "table"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
