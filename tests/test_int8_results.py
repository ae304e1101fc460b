"""benchmarks/int8.py: what its results files record (no timing asserted)."""

from __future__ import annotations

import argparse
import csv
import json

from mobilenets import bench
from tests.conftest import load_script


def _module():
    return load_script("benchmarks/int8.py", "int8_bench")


def test_every_int8_row_records_the_machine_and_versions(tmp_path):
    """Each CSV/JSON row names the CPU, cores, threads and versions beside its figures, as the bench rows do."""
    int8 = _module()
    env = int8.run_environment()
    assert set(env) == set(bench.environment()) | {"onnx"} and env["cpu"] and env["torch"]
    timing = {"median_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.5, "calls": 200}
    accuracy = {"top1_pct": 41.0, "agree_with_fp32_pct": 97.5}
    row = int8.result_row("0.25-128", "converted", "openvino int8-per-channel", timing, base_ms=3.0, size_mb=0.51234,
                          accuracy=accuracy, val_images=64, threads=1, env=env)  # fmt: skip
    assert {k: row[k] for k in env} == env and row["threads"] == 1 and row["batch"] == 1
    assert (row["runtime"], row["precision"], row["speedup_vs_ort_fp32"]) == ("openvino", "int8-per-channel", 1.5)
    assert (row["size_mb"], row["top1_pct"], row["agree_with_ort_fp32_pct"]) == (0.512, 41.0, 97.5)
    speed_only = int8.result_row("1.0-224", "random", "ort fp32", timing, base_ms=2.0, size_mb=17.0, accuracy={},
                                 val_images=64, threads=1, env=env)  # fmt: skip
    assert speed_only["top1_pct"] is None and speed_only["val_images"] is None and speed_only["cpu"] == env["cpu"]

    int8.RESULTS = tmp_path  # this module instance only: the files go to tmp_path, not the repo's results/
    args = argparse.Namespace(threads=1, quick=True, calib=16, val_count=64, rounds=2, block=5, cpu=None)
    int8.write([row, speed_only], {}, args, env)
    (stem,) = {p.with_suffix("") for p in tmp_path.iterdir()}
    with stem.with_suffix(".csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r[k] == str(v) for r in rows for k, v in env.items() if v is not None)
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["env"] == env and all({k: r[k] for k in env} == env for r in saved["rows"])
    assert env["cpu"] in stem.with_suffix(".md").read_text().splitlines()[0]
