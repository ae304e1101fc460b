"""`mobilenets bench`: row schema, positive finite figures, results files, unavailable runtimes, CLI errors."""

import json
import math

import pytest

from mobilenets import bench
from mobilenets.cli import main
from mobilenets.runtimes import RUNTIME_INFO, RuntimeUnavailable, make_runner

TINY = dict(min_runs=3, min_time=0.0, batch=2, peak_gflops=50.0, progress=False)
NUMERIC = ("latency_ms_median", "latency_ms_p90", "latency_ms_min", "fps", "throughput_ips", "weights_MB",
           "weights_fp32_MB", "macs_M", "params_M", "fp32_limit_ms", "limit_fraction", "probe_gflops")  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    notes = []
    cfg = bench.BenchConfig(models=("0.25-64", "mobilenet_v1_025_128"), runtimes=("torch", "ort", "ort-int8"), **TINY)
    out = bench.run_bench(cfg, notes=notes)
    return out, notes


def test_rows_have_schema_and_positive_finite_figures(rows):
    rows, notes = rows
    assert [(r["model"], r["runtime"]) for r in rows] == [
        ("mobilenet_v1_025_64", "torch"), ("mobilenet_v1_025_128", "torch"),
        ("mobilenet_v1_025_64", "ort"), ("mobilenet_v1_025_128", "ort"),
    ]  # fmt: skip
    for r in rows:
        assert list(r) == list(bench.COLUMNS)
        for k in NUMERIC:
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r[k])
        assert r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["fps"] == pytest.approx(1000 / r["latency_ms_median"])
        assert r["realtime"] == (r["fps"] >= 24.0) and r["runs"] >= 3 and r["batch"] == 2
        assert r["fp32_limit_ms"] == pytest.approx(2 * r["macs_M"] * 1e6 / 50e9 * 1e3)
        assert r["peak_mem_MB"] is None or r["peak_mem_MB"] >= 0
        assert r["cpu"] and r["cores"] >= 1 and r["torch"] and r["dtype"] == "fp32" and r["threads"] == 1
        assert r["top1_source"] in ("tfslim", "extrapolated") and 0 < r["top1"] < 100
    grid = next(r for r in rows if r["model"] == "mobilenet_v1_025_128" and r["runtime"] == "torch")
    assert grid["top1"] == 41.5 and grid["macs_M"] == pytest.approx(13.57, abs=0.01)
    # fp32 safetensors of 0.25: ~0.47M weights + BN -> ~1.8 MB; the ONNX file is about the same size
    assert 1.7 < grid["weights_fp32_MB"] < 2.0
    assert any("skipped ort-int8" in n and "export issue" in n for n in notes)


def test_results_files_round_trip(rows, tmp_path):
    rows, _ = rows
    csv_path, json_path = bench.write_results(rows, tmp_path / "r.csv", meta={"command": "x"})
    assert csv_path.read_text().splitlines()[0] == ",".join(bench.COLUMNS)
    assert len(csv_path.read_text().splitlines()) == len(rows) + 1
    assert bench.read_results(json_path) == json.loads(json.dumps(rows))
    name = bench.results_name(rows)
    assert name.startswith("bench-") and "torch+ort" in name and name.endswith("-t1-b2")


def test_unavailable_runtimes_raise_one_line_reason():
    model, _, _ = bench.build("0.25-64")
    with pytest.raises(RuntimeUnavailable, match="export issue"):
        make_runner(model, "ort-int8")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeUnavailable, match="CUDA"):
            make_runner(model, "cuda-fp16")
    assert {RUNTIME_INFO[r].dtype for r in RUNTIME_INFO} == {"fp32", "bf16", "fp16", "int8"}


def test_time_calls_stops_at_runs_or_time():
    calls = []
    t = bench.time_calls(lambda: calls.append(1), min_runs=7, min_time=100, warmup=2)
    assert len(t) == 7 and len(calls) == 9
    t = bench.time_calls(lambda: calls.append(1), min_runs=10**9, min_time=0.05, warmup=0)
    assert 3 <= len(t) < 10**9


def test_resolve_model():
    spec = bench.resolve_model("0.6-176")
    assert (spec.alpha, spec.resolution) == (0.6, 176)
    assert bench.resolve_model("mobilenet_v1_050_160").alpha == 0.5
    assert bench.resolve_model("timm:mobilenetv1_100") == "timm:mobilenetv1_100"
    with pytest.raises(ValueError, match="'resnet'"):
        bench.resolve_model("resnet")


def test_cli_bench_writes_csv_json_and_plots(tmp_path, capsys):
    code = main(["bench", "--models", "0.25-64", "--runtimes", "ort", "--min-runs", "3", "--min-time", "0",
                 "--batch", "2", "--out", str(tmp_path / "b"), "--plots", str(tmp_path), "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "mobilenet_v1_025_64" in out and "latency_ms_median" in out
    assert (tmp_path / "b.csv").exists() and (tmp_path / "b.json").exists()
    assert len(list(tmp_path.glob("*.png"))) == 2 and "FP32 peak" in err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--threads", "0"], ["threads"]),
        (["--runtimes", "tensorflow"], ["runtime='tensorflow'"]),
        (["--models", "resnet50"], ["'resnet50'"]),
        (["--min-runs", "0"], ["min_runs=0"]),
        (["--target-fps", "-1"], ["target_fps"]),
        (["--batch", "-2"], ["batch=-2"]),
        (["--accuracy", "/nonexistent/summary.json", "--models", "0.25-64"], ["/nonexistent/summary.json"]),
    ],
)
def test_cli_bench_bad_values_exit_2(argv, words, capsys):
    code = main(["bench", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), err


def test_cli_bench_lut_reads_the_table(tmp_path, capsys):
    from mobilenets import lut
    from mobilenets.spec import ModelSpec

    keys = lut.layer_keys(ModelSpec(alpha=0.25, resolution=64))
    table = {"overhead": 0.25, "scale": 1.5, "layers": dict.fromkeys(keys, 0.01)}
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({lut.env_key("torch", 1): table}))
    code = main(["bench", "--lut", "--models", "0.25-64", "--runtimes", "torch", "--lut-file", str(path),
                 "--format", "json"])  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 0 and row["measured"] == 0 and row["layers"] == len(keys) == 28
    assert row["predicted_ms"] == pytest.approx(0.25 + 1.5 * 0.01 * 28)


def test_pareto_front():
    from mobilenets.plots import pareto_front

    pts = [(1.0, 50.0), (2.0, 49.0), (2.0, 60.0), (3.0, 60.0), (4.0, 70.0), (0.5, 40.0)]
    assert pareto_front(pts) == [(0.5, 40.0), (1.0, 50.0), (2.0, 60.0), (4.0, 70.0)]
