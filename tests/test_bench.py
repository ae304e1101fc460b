"""`mobilenets bench`: row schema, positive finite figures, results files, unavailable runtimes, CLI errors."""

import io
import json
import math
import re
import sys

import numpy as np
import pytest
import torch

from mobilenets import accuracy, bench
from mobilenets.cli import main
from mobilenets.runtimes import RUNTIME_INFO, RuntimeUnavailable, make_runner

TINY = dict(min_runs=3, min_time=0.0, batch=2, peak_gflops=50.0, progress=False)
NUMERIC = ("latency_ms_median", "latency_ms_p90", "latency_ms_min", "fps", "throughput_ips", "weights_MB",
           "weights_fp32_MB", "macs_M", "params_M", "fp32_limit_ms", "limit_fraction", "probe_gflops")  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    notes = []
    cfg = bench.BenchConfig(models=("0.25-64", "mobilenet_v1_025_128"), runtimes=("torch", "ort", "cuda"), **TINY)
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
        assert r["backend"] is None  # a CPU runtime; the cuda ones name their gpu.fast_inference backend
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
    import torch

    assert torch.cuda.is_available() or any("skipped cuda" in n and "CUDA" in n for n in notes)


def test_results_files_round_trip(rows, tmp_path):
    rows, _ = rows
    csv_path, json_path = bench.write_results(rows, tmp_path / "r.csv", meta={"command": "x"})
    assert csv_path.read_text().splitlines()[0] == ",".join(bench.COLUMNS)
    assert len(csv_path.read_text().splitlines()) == len(rows) + 1
    assert bench.read_results(json_path) == json.loads(json.dumps(rows))
    name = bench.results_name(rows)
    assert name.startswith("bench-") and "torch+ort" in name and name.endswith("-t1-b2")


def test_int8_runtime_rows_through_the_export_plugin():
    pytest.importorskip("onnxruntime.quantization")
    cfg = bench.BenchConfig(models=("0.25-64",), runtimes=("ort-int8",), **TINY)
    (row,) = bench.run_bench(cfg)
    assert row["dtype"] == "int8" and row["latency_ms_median"] > 0
    # int8 weights ~ a quarter of fp32 (plus QDQ scales and the graph)
    assert row["weights_int8_MB"] == row["weights_MB"] < 0.5 * row["weights_fp32_MB"]


def test_int8_rows_say_their_expected_top1_is_the_fp32_weights():
    """An ort-int8 row carried the fp32 model's expected top-1 (TF-slim's table) under the same source as the fp32
    row, as if it were the INT8 model's, which nobody measured on ImageNet. The figure is kept (the best there is),
    its source says whose it is; the fp32 row's is unchanged."""
    pytest.importorskip("onnxruntime.quantization")
    cfg = bench.BenchConfig(models=("0.25-128",), runtimes=("ort", "ort-int8"), **TINY)
    fp32, int8 = sorted(bench.run_bench(cfg), key=lambda r: r["dtype"])
    assert (fp32["dtype"], int8["dtype"]) == ("fp32", "int8") and fp32["top1"] == int8["top1"] is not None
    assert fp32["top1_source"] == "tfslim" and int8["top1_source"] == "tfslim, of fp32 weights"
    assert bench.top1_basis(int8["top1_source"]) == "tfslim" and int8["top1_table"] == "tfslim"
    assert bench.top1_source_for(None, "int8") is None
    assert bench.top1_source_for("interpolated", "fp32") == "interpolated"  # bf16's: the next test


def test_bf16_and_fp16_rows_say_their_top1_is_the_fp32_weights(monkeypatch):
    """openvino-bf16 and cuda-bf16 rows carried the fp32 model's top-1 as their own, while INT8 rows said whose it
    is (`bench.FP32_WEIGHTS`). The runner is stubbed (bf16 needs an AVX512_BF16 CPU or a GPU): what is tested is the
    row's label."""
    monkeypatch.setattr(bench, "make_runner", lambda model, runtime, **kw: make_runner(model, "torch"))
    cfg = bench.BenchConfig(models="0.25-128", runtimes=("openvino-bf16",), **TINY).validate()
    model, spec, label = bench.build("0.25-128")
    table = accuracy.accuracy_model()
    row = bench.measure(model, spec, "openvino-bf16", threads=1, cfg=cfg, label=label, accuracy=table)
    assert row["dtype"] == "bf16" and row["top1"] == 41.5 and row["top1_source"] == "tfslim, of fp32 weights"
    assert bench.top1_basis(row["top1_source"]) == "tfslim"
    for dtype, labelled in (("bf16", True), ("fp16", True), ("int8", True), ("fp32", False)):
        assert (bench.top1_source_for("interpolated", dtype) == "interpolated, of fp32 weights") == labelled


def test_unavailable_runtimes_raise_one_line_reason(monkeypatch):
    model, _, _ = bench.build("0.25-64")
    import torch

    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # an onnxruntime without its quantizer
    with pytest.raises(RuntimeUnavailable, match="ort-int8: onnxruntime.quantization cannot be imported"):
        make_runner(model, "ort-int8")

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
        (["--cuda-backend", "tensorrt"], ["cuda_backend='tensorrt'", "eager, compile, triton"]),
        (["--runtimes", "torch,ort", "--cuda-backend", "triton"], ["cuda_backend='triton'", "without a cuda runtime"]),
        (["--accuracy", "/nonexistent/summary.json", "--models", "0.25-64"], ["/nonexistent/summary.json"]),
        (["--alpha", "0.5,-0.5"], ["alpha=-0.5 is not allowed"]),
        (["--alpha", "nan"], ["alpha=nan is not allowed"]),
    ],
)
def test_cli_bench_bad_values_exit_2(argv, words, capsys):
    code = main(["bench", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), err


@pytest.mark.parametrize(
    "argv,words",
    [(["--models", ""], ["models=''"]), (["--alpha", ",", "--resolution", "128"], ["alphas=''"]),
     (["--resolution", ""], ["resolutions=''"])],
)  # fmt: skip
def test_cli_bench_empty_model_lists_are_errors_not_the_grid(argv, words, capsys, monkeypatch):
    """An empty --models (a shell variable left unset, say) measured the paper's 16-model grid, for minutes."""
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("measured the grid"))
    code = main(["bench", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), err


@pytest.mark.parametrize("lut", [False, True])
def test_cli_bench_empty_threads_list_is_named(lut, capsys):
    """`--threads ,` was 'max() arg is an empty sequence', naming neither the option nor what it wants."""
    code = main(["bench", "--no-progress", "--models", "0.25-64", "--threads", ",", *(["--lut"] if lut else [])])
    err = capsys.readouterr().err
    assert code == 2 and err == "mobilenets bench: error: threads is empty: name at least one thread count\n", err


def test_a_model_runtime_or_thread_count_given_twice_is_measured_once():
    cfg = bench.config_from(["0.25-64", "0.5-96", "0.25-64"], runtimes=["ort", "torch", "ort"], threads=[1, 2, 1])
    assert cfg.models == ("0.25-64", "0.5-96") and cfg.runtimes == ("ort", "torch") and cfg.threads == (1, 2)
    assert bench.config_from(alphas=[0.25, 0.25], resolutions=[64]).models == ("0.25-64",)


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
    assert code == 0 and row["measured"] == 0 and row["layers"] == len(keys) == 15  # stem, 13 blocks, head
    assert row["classes"] == 1000  # the head the table times, as bench's measured rows say theirs
    assert row["predicted_ms"] == pytest.approx(0.25 + 1.5 * 0.01 * 15)


@pytest.mark.parametrize("option", ["--out", "--plots", "--accuracy", "--target-fps"])
def test_cli_bench_lut_refuses_options_it_would_not_use(option, tmp_path, capsys, monkeypatch):
    """--lut printed its predictions and returned: --out wrote no results file, --plots no figure, and --accuracy and
    --target-fps changed nothing, silently."""
    from mobilenets import lut

    monkeypatch.setattr(lut, "KeyTimer", lambda *a, **k: pytest.fail("measured before refusing"))
    value = "30" if option == "--target-fps" else str(tmp_path / "res")
    code = main(["bench", "--lut", "--models", "0.25-64", "--runtimes", "ort", "--lut-file", str(tmp_path / "l.json"),
                 option, value])  # fmt: skip
    err = capsys.readouterr().err
    shown = {"--target-fps": "30.0", "--accuracy": repr([value])}.get(option, repr(value))
    name = option[2:].replace("-", "_")
    assert code == 2 and err.count("\n") == 1 and f"{name}={shown} is not allowed with --lut" in err, err
    assert err.rstrip().endswith(f"or {option}")


@pytest.mark.parametrize(
    "argv,words", [(["--threads", "0"], ["threads=(0,)"]), (["--threads", "-1"], ["threads=(-1,)"])]
)
def test_cli_bench_lut_bad_values_exit_2_before_measuring(argv, words, tmp_path, capsys, monkeypatch):
    """--lut checks the options as a measured run does: threads 0 (ONNX Runtime's "all cores") or -1 started
    measuring a whole table of their own, for minutes, under that thread count."""
    from mobilenets import lut

    monkeypatch.setattr(lut, "KeyTimer", lambda *a, **k: pytest.fail("measured with bad options"))
    code = main(["bench", "--lut", "--models", "0.25-64", "--runtimes", "ort", "--lut-file", str(tmp_path / "l.json"),
                 *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), err


@pytest.mark.parametrize("model", ["mobilenet_v1_shallow", "mobilenet_v1_conv", "timm:mobilenetv1_100"])
def test_cli_bench_lut_refuses_models_it_cannot_predict(model, tmp_path, capsys, monkeypatch):
    """The table holds standard MobileNets' shapes: Shallow (10 blocks) and Conv MobileNet (8.6x the MACs) were
    predicted as 1.0-224 under their own names, and timm's peer was printed as mobilenet_v1_100."""
    from mobilenets import lut

    monkeypatch.setattr(lut, "KeyTimer", lambda *a, **k: pytest.fail("measured a model it cannot predict"))
    code = main(["bench", "--lut", "--models", model, "--runtimes", "ort", "--lut-file", str(tmp_path / "l.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"model {model!r} is not allowed with --lut" in err, err


def test_pareto_front():
    from mobilenets.plots import pareto_front

    pts = [(1.0, 50.0), (2.0, 49.0), (2.0, 60.0), (3.0, 60.0), (4.0, 70.0), (0.5, 40.0)]
    assert pareto_front(pts) == [(0.5, 40.0), (1.0, 50.0), (2.0, 60.0), (4.0, 70.0)]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_runner_times_a_resident_batch_and_matches_fp32():
    """Trained weights (TF's 0.25 MobileNet-128) on real photos: random weights are too sensitive to bf16."""
    import numpy as np
    import torch

    from mobilenets.convert.from_tflite import import_tflite
    from mobilenets.preprocess import load_batch

    from .conftest import data_path

    model, _ = import_tflite(data_path("mobilenet-weights", "tflite", "mobilenet_v1_0.25_128_quant.tflite"))
    photos = sorted(data_path("imagenet-sample").glob("*.JPEG"))[:8]
    x = load_batch(photos, model.spec).numpy()
    ref = model.eval()(torch.from_numpy(x)).detach().numpy()
    runner = make_runner(model, "cuda-bf16")
    assert runner.info["backend"] == "eager"
    out = runner(x)
    # the rule of benchmarks/gpu_vs_timm.py: within 5% of the largest logit, or 1.5x the error of a plain bf16 cast
    # of the folded model (4.2% for these weights and photos on CPU)
    with torch.inference_mode():
        cast = model.fuse().cuda().to(torch.bfloat16)(torch.from_numpy(x).cuda().to(torch.bfloat16)).float().cpu()
    allowed = max(0.05, 1.5 * float(np.abs(cast.numpy() - ref).max() / np.abs(ref).max()))
    assert np.abs(out - ref).max() <= allowed * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.75
    for backend in ("compile", "triton"):  # the other backends bench --cuda-backend offers, same rule
        other = make_runner(model, "cuda-bf16", backend=backend)
        assert other.info["backend"] == backend and not other.info.get("cuda_graph_failed")
        assert np.abs(other(x) - ref).max() <= allowed * np.abs(ref).max(), backend


@pytest.mark.parametrize(
    "kw,field,expected",
    [
        (dict(models="0.25-128"), "models", ("0.25-128",)),
        (dict(runtimes="ort"), "runtimes", ("ort",)),
        (dict(threads=1), "threads", (1,)),
        (dict(threads=[1, 2]), "threads", (1, 2)),
        (dict(accuracy_files="summary.json"), "accuracy_files", ("summary.json",)),
    ],
)
def test_config_takes_one_value_where_a_sequence_is_expected(kw, field, expected):
    cfg = bench.BenchConfig(**{"models": ("0.25-64",), **kw}).validate()
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(threads=1.5), "threads=1.5 is not allowed: threads must be an integer or a sequence of them"),
        (dict(threads=True), "threads=True is not allowed"),
        (dict(threads=("1",)), "threads=('1',) is not allowed: threads must be integers >= 1"),
        (dict(models=5), "models=5 is not allowed: models must be a model name or a sequence of them"),
        (dict(models=(5,)), "models=5 is not allowed"),
    ],
)
def test_config_of_the_wrong_type_is_one_clear_error(kw, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        bench.BenchConfig(**kw).validate()


def test_run_bench_leaves_the_callers_torch_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # neither the bench's 1 thread nor the core count it used to reset to
    try:
        (row,) = bench.run_bench(bench.BenchConfig(models="0.25-64", runtimes="torch", threads=1, **TINY))
        assert row["threads"] == 1 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_peak_probe_takes_the_fastest_librarys_sgemm(monkeypatch):
    """torch's MKL and ONNX Runtime's MLAS differ by CPU (112 against 249 GFLOP/s per core on an AVX-512 EPYC): a
    limit from the slower one was beaten 2x by ONNX Runtime's MobileNet, a 'limit_fraction' near 2."""
    before = torch.get_num_threads()
    measured = bench.sgemm_gflops(1, n=64, seconds=0.01)
    assert set(measured) == {"torch", "onnxruntime"}
    assert all(math.isfinite(v) and v > 0 for v in measured.values()), measured
    assert torch.get_num_threads() == before
    monkeypatch.setattr(bench, "sgemm_gflops", lambda *a, **k: {"torch": 110.0, "onnxruntime": 250.0})
    assert bench.matmul_gflops(1) == 250.0
    notes: list[str] = []
    cfg = bench.BenchConfig(models="0.25-64", runtimes="torch", threads=1, **{**TINY, "peak_gflops": None})
    (row,) = bench.run_bench(cfg, notes=notes)
    assert "FP32 peak: 250.0 GFLOP/s per core (fastest sgemm of torch 110.0, onnxruntime 250.0)" in notes[0]
    assert row["fp32_limit_ms"] == pytest.approx(2 * row["macs_M"] * 1e6 / 250e9 * 1e3)


class _ThreadsSeen(torch.nn.Module):
    """A stand-in model whose forward records torch's thread count while the runner runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def fuse(self) -> "_ThreadsSeen":
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return x


def test_torch_runner_uses_its_threads_per_call_and_restores_the_callers():
    import numpy as np

    from mobilenets.runtimes import torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        model = _ThreadsSeen()
        runner = make_runner(model, "torch", threads=1)
        assert torch.get_num_threads() == 3  # building the runner changes nothing
        runner(np.zeros((1, 3, 8, 8), np.float32))
        assert model.seen == [1] and torch.get_num_threads() == 3 and runner.info["threads"] == 1
        with pytest.raises(RuntimeError, match="inside"), torch_threads(2):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 3  # restored on an error too
    finally:
        torch.set_num_threads(before)


def test_results_file_of_the_same_setup_is_merged_not_overwritten(rows, tmp_path):
    """`bench --out DIR/` twice with other --models names the same file: the first run's rows must survive."""
    rows, _ = rows
    first = [r for r in rows if r["runtime"] == "ort"]  # two models
    again = {**first[1], "latency_ms_median": 123.0}  # the second model measured again
    other = {**first[0], "model": "mobilenet_v1_025_96", "resolution": 96}  # and a model not measured before
    bench.write_results(first, tmp_path / "r", meta={"command": "first"})
    said = []
    csv_path, json_path = bench.write_results([again, other], tmp_path / "r", meta={"command": "2"}, say=said.append)
    merged = bench.read_results(json_path)
    assert [(r["model"], r["latency_ms_median"]) for r in merged] == [
        (first[0]["model"], first[0]["latency_ms_median"]), (again["model"], 123.0), ("mobilenet_v1_025_96",
        first[0]["latency_ms_median"])]  # fmt: skip
    assert len(csv_path.read_text().splitlines()) == len(merged) + 1
    meta = json.loads(json_path.read_text())["meta"]
    assert meta["merged"] == {"kept": 1, "replaced": 1} and meta["command"] == "2"
    assert meta["earlier_runs"] == [{"command": "first"}]  # the kept row's run is still described
    assert said and "kept its 1 row(s)" in said[0] and "replaced 1" in said[0]
    # another backend of the same runtime is another measurement, kept beside it; merge=False writes exactly the rows
    triton = {**again, "backend": "triton", "latency_ms_median": 7.0}
    bench.write_results([triton], tmp_path / "r", meta={"command": "3"}, say=said.append)
    runs = json.loads(json_path.read_text())["meta"]["earlier_runs"]
    assert [r["command"] for r in runs] == ["first", "2"] and "earlier_runs" not in runs[1]  # flat, oldest first
    assert [(r["model"], r.get("backend")) for r in bench.read_results(json_path)][-2:] == [
        ("mobilenet_v1_025_96", again.get("backend")), (again["model"], "triton")]  # fmt: skip
    bench.write_results([triton], tmp_path / "r", merge=False)
    assert bench.read_results(json_path) == [json.loads(json.dumps(triton, default=str))]
    # a plain list of rows has no metadata to keep: no empty entry
    json_path.write_text(json.dumps(json.loads(json.dumps(first, default=str))))
    bench.write_results([other], tmp_path / "r", meta={"command": "4"}, say=said.append)
    assert json.loads(json_path.read_text())["meta"]["earlier_runs"] == []
    # rows of other hardware are not mixed in: replaced as before, but no longer without a word
    foreign = [{**r, "cpu": "another cpu"} for r in first]
    said.clear()
    before = len(bench.read_results(json_path))
    bench.write_results(foreign, tmp_path / "r", say=said.append)
    assert [r["cpu"] for r in bench.read_results(json_path)] == ["another cpu"] * 2
    assert said == [f"note: {json_path} existed with {before} row(s) of other hardware ({first[0]['cpu']} "
                    f"x{first[0]['cores']}, gpu none): replaced them"]  # fmt: skip


def test_shallow_and_conv_rows_get_no_top1_of_the_standard_model():
    """The accuracy tables and runs describe the standard alpha x resolution grid: Shallow MobileNet (paper Table 5:
    65.3%) is not 1.0-224 (TF-slim 70.9%), and its row above the Pareto front would say it is."""
    model, spec, label = bench.build("mobilenet_v1_shallow")
    cfg = bench.BenchConfig(models=(label,), runtimes=("torch",), **{**TINY, "batch": 0})
    row = bench.measure(model, spec, "torch", threads=1, cfg=cfg, label=label, accuracy=accuracy.table_model())
    assert row["model"] == "mobilenet_v1_shallow" and (row["top1"], row["top1_source"]) == (None, None)


def test_accuracy_model_at_its_edges(tmp_path):
    """`accuracy.AccuracyModel` where its rules meet: no point is an error; the table's smallest alpha between two
    printed resolutions is inside the table (interpolated); runs of one alpha at two resolutions estimate that
    alpha's other resolutions but no other alpha, and the note says which is missing; a row measured at one
    resolution borrows the slope fitted to all the points; and a run's top-1 of exactly 100% is a percentage."""
    with pytest.raises(ValueError, match="at least one"):
        accuracy.AccuracyModel({})
    assert accuracy.table_model().predict(0.25, 200)[1] == "interpolated"
    one_alpha = accuracy.AccuracyModel({(0.5, 128): 60.0, (0.5, 160): 64.0}, "measured")
    assert one_alpha.predict(0.5, 192)[0] > 64.0 and one_alpha.predict(0.75, 128) == (None, "unknown")
    assert "so other alphas get no top-1" in one_alpha.coverage_note()
    assert "so other models get no top-1" in accuracy.AccuracyModel({(0.5, 128): 60.0}, "measured").coverage_note()
    points = {(0.5, 128): 60.0, (0.5, 160): 64.0, (0.25, 128): 45.0}
    x = {k: math.log(accuracy.model_macs(*k)) for k in [*points, (0.25, 160)]}
    slope = np.polyfit([x[k] for k in points], list(points.values()), 1)[0]
    expected = 45.0 + slope * (x[(0.25, 160)] - x[(0.25, 128)])
    assert accuracy.AccuracyModel(points, "measured").predict(0.25, 160)[0] == pytest.approx(expected)
    # three alphas, each row a line through its two points: a measured alpha's other resolution is on its own row,
    # an alpha beyond them on the segment of the last two rows
    grid = {
        (0.5, 128): 60.0,
        (0.5, 160): 64.0,
        (0.75, 128): 66.0,
        (0.75, 160): 69.0,
        (1.0, 128): 67.0,
        (1.0, 160): 70.0,
    }
    x = {(a, r): math.log(accuracy.model_macs(a, r)) for a in (0.5, 0.75, 1.0, 1.25) for r in (128, 160, 192)}
    model = accuracy.AccuracyModel(grid, "measured")
    own_row = 66.0 + 3.0 * (x[0.75, 192] - x[0.75, 128]) / (x[0.75, 160] - x[0.75, 128])
    assert model.predict(0.75, 192) == (pytest.approx(own_row), "extrapolated")
    beyond = 66.0 + 1.0 * (x[1.25, 128] - x[0.75, 128]) / (x[1.0, 128] - x[0.75, 128])
    assert model.predict(1.25, 128) == (pytest.approx(beyond), "extrapolated")
    for top1 in (100.0, 100.5):
        summary = {"spec": {"alpha": 0.5, "resolution": 128}, "final_top1": top1}
        (tmp_path / f"{top1}.json").write_text(json.dumps(summary))
    assert accuracy.read_summary(tmp_path / "100.0.json") == (0.5, 128, 100.0)
    with pytest.raises(ValueError, match=r"top-1 100.5 is not a percentage"):
        accuracy.read_summary(tmp_path / "100.5.json")
    # runs validated on other classes: the message names three of the four that are not in both, and says more are
    runs = []
    for name, classes in (("a", "cdefghijkl"), ("b", "cdefghijmn")):
        runs.append(tmp_path / f"{name}.json")
        spec = {"alpha": 0.5, "resolution": 128, "num_classes": 10}
        runs[-1].write_text(json.dumps({"spec": spec, "final_top1": 50.0, "per_class_top1": dict.fromkeys(classes, 1)}))
    with pytest.raises(ValueError, match=r"\(not in both: k, l, m, \.\.\.\)"):
        accuracy.from_summaries(runs)


def test_openvino_runs_each_batch_size_on_a_static_shape_compile():
    """Our ONNX exports have a dynamic batch axis, and OpenVINO runs a dynamic-shape model 5-9% slower at batch 1
    (benchmarks' figure, not tested here): each input shape must run on a model compiled for exactly that shape."""
    import numpy as np

    pytest.importorskip("openvino")
    model, spec, _ = bench.build("0.25-64")
    runner = make_runner(model, "openvino", threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        want = model.fuse()(torch.from_numpy(x)).numpy()
    for batch in (x[:1], x, x[:1]):
        got = runner(batch)
        assert np.allclose(got, want[: len(batch)], rtol=1e-3, atol=1e-3 * np.abs(want).max())
    compiled = runner.info["compiled"]
    assert sorted(compiled) == [(1, 3, 64, 64), (2, 3, 64, 64)]  # one compile per shape, reused
    for shape, (net, _) in compiled.items():
        assert net.input(0).get_partial_shape().is_static and tuple(net.input(0).get_shape()) == shape
    with pytest.raises(ValueError, match=r"input shape \(1, 3, 48, 48\) is not allowed: .* takes"):
        runner(x[:1, :, :48, :48])  # OpenVINO alone returned an empty (1, 0) array for it


def test_a_peer_of_unknown_macs_has_no_macs_and_no_limit_rather_than_zero():
    """Only timm's mobilenetv1_100 has a MAC count here: another peer's row must not claim 0 MACs and a 0 ms limit."""
    model, spec, _ = bench.build("0.25-64")  # stands in for a peer: only the label tells measure() what it is
    cfg = bench.BenchConfig(models=("0.25-64",), runtimes=("torch",), **{**TINY, "batch": 0})
    row = bench.measure(model, spec, "torch", threads=1, cfg=cfg, label="timm:other_net", peak_gflops=50.0)
    assert row["macs_M"] is None and row["fp32_limit_ms"] is None and row["limit_fraction"] is None
    assert row["params_M"] > 0
    known = bench.measure(model, spec, "torch", threads=1, cfg=cfg, label="timm:mobilenetv1_100", peak_gflops=50.0)
    assert known["macs_M"] > 0 and known["fp32_limit_ms"] > 0


def test_a_slow_first_call_is_startup_not_latency(monkeypatch):
    """torch.compile compiles on the first call (seconds): that call is `startup_s`, outside the latency, even with
    no warm-up calls. A stand-in runner sleeps 0.3 s on its first call only."""
    import time

    from mobilenets.runtimes import Runner

    def slow_first(*args, **kwargs):
        runner, calls = make_runner(*args, **kwargs), []

        def run(x):
            calls.append(1)
            if len(calls) == 1:
                time.sleep(0.3)
            return runner(x)

        return Runner(runner.name, run, runner.info)

    monkeypatch.setattr(bench, "make_runner", slow_first)
    model, spec, label = bench.build("0.25-64")
    cfg = bench.BenchConfig(models=(label,), runtimes=("torch",), warmup=0, **{**TINY, "batch": 0})
    row = bench.measure(model, spec, "torch", threads=1, cfg=cfg, label=label, peak_gflops=50.0)
    assert row["startup_s"] >= 0.3 and row["runs"] == 3
    assert row["latency_ms_p90"] < 100  # with the sleep among 3 timed calls, p90 would be 240 ms or more


def test_a_row_of_another_batch_merges_into_a_results_file_rather_than_replacing_it(rows, tmp_path):
    """The grid's file holds batch-32 rows and batch-0 compile rows: re-measuring one compile row into it (batch 0)
    wiped the other rows without a word, because the file's batches were not all the new rows' batch."""
    rows, _ = rows
    grid = [{**r, "batch": 32} for r in rows] + [{**rows[0], "runtime": "compile", "batch": 0}]
    bench.write_results(grid, tmp_path / "grid", meta={"command": "grid"})
    again = {**grid[-1], "latency_ms_median": 1.0}
    said = []
    _, json_path = bench.write_results([again], tmp_path / "grid", meta={"command": "again"}, say=said.append)
    merged = bench.read_results(json_path)
    assert len(merged) == len(grid) and merged[-1]["latency_ms_median"] == 1.0
    assert said and f"kept its {len(rows)} row(s)" in said[0] and "replaced 1" in said[0]


def test_a_results_file_another_process_is_writing_is_merged_after_it(tmp_path):
    """Two benches writing one file: the second read the file before the first had written it, and then dropped the
    first one's rows. write_results holds the file's lock from reading to writing."""
    import subprocess

    base = {"alpha": 0.25, "runtime": "ort", "threads": 1, "cpu": "cpu x", "cores": 2, "gpu": "none", "batch": 1}
    first = {**base, "model": "mobilenet_v1_025_64", "resolution": 64, "latency_ms_median": 1.0}
    second = {**base, "model": "mobilenet_v1_025_96", "resolution": 96, "latency_ms_median": 2.0}
    path, ready = tmp_path / "r.json", tmp_path / "ready"
    holder = ("import json, sys, time\nfrom pathlib import Path\nfrom mobilenets import atomic\n"
              "rows = [json.loads(sys.argv[3])]\n"
              "with atomic.locked(sys.argv[1]):\n    Path(sys.argv[2]).touch()\n    time.sleep(1.5)\n"
              "    atomic.atomic_write_text(sys.argv[1], json.dumps({'meta': {}, 'rows': rows}))\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path), str(ready), json.dumps(first)])
    while not ready.exists():
        assert proc.poll() is None, "the lock holder died"
    bench.write_results([second], tmp_path / "r", say=[].append)
    assert proc.wait(timeout=60) == 0
    assert {r["model"] for r in bench.read_results(path)} == {first["model"], second["model"]}


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_measuring(monkeypatch):
    """The floor per image of 1.0-224 in fp32: its 3x224x224 input and the 112x112x32 -> 112x112x64 pointwise
    layer's input and output (paper Table 1, the largest pair). A batch whose floor passes the free memory is
    refused naming the batch and the largest batch that fits; one that fits, a peer, and a machine whose free
    memory is unknown are not."""
    floor = 4 * (3 * 224 * 224 + 112 * 112 * (32 + 64))
    assert bench.batch_memory_floor(bench.resolve_model("mobilenet_v1_100"), 4) == floor
    assert bench.batch_memory_floor(bench.resolve_model("mobilenet_v1_100"), 1) == floor - 3 * 112 * 112 * (32 + 64)
    cfg = bench.BenchConfig(models=("mobilenet_v1_100", "0.25-128"), runtimes=("torch",), batch=1000)
    bench.check_batch_fits(cfg, free=lambda device: 1000 * floor)  # exactly fits
    bench.check_batch_fits(cfg, free=lambda device: None)
    with pytest.raises(ValueError, match=r"^batch=1000 is not allowed here: mobilenet_v1_100 on torch .* a batch "
                                         r"above 999 cannot fit$"):  # fmt: skip
        bench.check_batch_fits(cfg, free=lambda device: 1000 * floor - 1)
    default = bench.BenchConfig(models=("mobilenet_v1_100",), runtimes=("torch",))  # batch 32 on the CPU
    with pytest.raises(ValueError, match="^batch=32 is not allowed here"):
        bench.check_batch_fits(default, free=lambda device: 31 * floor)
    asked = []
    bench.check_batch_fits(bench.BenchConfig(models=("mobilenet_v1_100",), runtimes=("torch",), batch=0),
                           free=asked.append)  # fmt: skip
    assert asked == []  # no throughput, nothing to check


def test_cli_bench_refuses_a_batch_beyond_this_machines_memory_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: pytest.fail("measured before refusing"))
    monkeypatch.setattr(bench, "sgemm_gflops", lambda *a, **k: pytest.fail("measured before refusing"))
    code = main(["bench", "--models", "mobilenet_v1_025", "--runtimes", "torch", "--batch", "10000000000",
                 "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("mobilenets bench: error: batch=10000000000 is not allowed here: mobilenet_v1_025 on torch")
    assert not list(tmp_path.iterdir())


def test_cli_bench_out_keeps_files_that_are_not_bench_results(tmp_path, capsys, monkeypatch):
    """--out mydata replaced the user's mydata.csv and mydata.json; it is now refused before measuring. An
    existing folder named without a trailing separator gets the run-named files inside it, not beside it."""
    measured = []
    real = bench.run_bench
    monkeypatch.setattr(bench, "run_bench", lambda cfg, **k: measured.append(cfg) or real(cfg, **k))
    argv = ["bench", "--models", "0.25-64", "--runtimes", "ort", "--min-runs", "3", "--min-time", "0", "--batch", "0",
            "--no-progress"]  # fmt: skip
    for name, text in (("mine.csv", "precious\n"), ("mine.json", "{}\n")):
        (tmp_path / name).write_text(text)
        code = main([*argv, "--out", str(tmp_path / "mine")])
        err = capsys.readouterr().err
        assert code == 2 and err.strip() == (f"mobilenets bench: error: out='{tmp_path / name}' is not allowed: that "
                                             "file exists and is not a bench results file (give another --out, or "
                                             "move the file)")  # fmt: skip
        assert (tmp_path / name).read_text() == text and not measured
        (tmp_path / name).unlink()
    assert main([*argv, "--out", str(tmp_path / "ours")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ours.csv")]) == 0  # our own files: merged, as before
    assert "existed: kept its 0 row(s)" in capsys.readouterr().err and len(measured) == 2
    (tmp_path / "folder").mkdir()
    assert main([*argv, "--out", str(tmp_path / "folder")]) == 0
    inside = sorted(p.name for p in (tmp_path / "folder").iterdir() if not p.name.startswith("."))  # not the lock
    assert [p.rsplit(".", 1)[1] for p in inside] == ["csv", "json"] and inside[0].startswith("bench-")
    assert not (tmp_path / "folder.csv").exists()


def test_cli_bench_that_measures_nothing_is_one_line_and_more_threads_than_cores_are_refused(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code = main(["bench", "--models", "0.25-64", "--runtimes", "cuda", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.startswith("mobilenets bench: error: nothing measured (skipped cuda: ")
    assert err.count("\n") == 1
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured"))
    code = main(["bench", "--models", "0.25-64", "--runtimes", "ort", "--threads", "1,3", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("mobilenets bench: error: threads=3 is not allowed here: this process may run on 2 "
                                 "core(s); measure at most 2 thread(s)\n")  # fmt: skip


def test_a_containers_memory_limit_counts_its_working_set_not_its_file_cache(tmp_path):
    """cgroup v2: memory.max less (memory.current less inactive_file), in this process's own group."""
    (tmp_path / "cgroup").write_text("0::/job/42\n")
    group = tmp_path / "fs" / "job" / "42"
    group.mkdir(parents=True)
    gib = 2**30

    def headroom(limit, current, inactive):
        (group / "memory.max").write_text(f"{limit}\n")
        (group / "memory.current").write_text(f"{current}\n")
        (group / "memory.stat").write_text(f"anon 5\nfile 9\ninactive_file {inactive}\nactive_file 3\n")
        return bench._cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs")

    assert headroom(4 * gib, 4 * gib - 100, gib) == gib + 100  # a cache-full container: the cache is reclaimable
    assert headroom(gib, 2 * gib, 0) == 0  # over its limit: nothing, not a negative size
    assert headroom("max", gib, 0) is None
    (tmp_path / "cgroup").write_text("12:memory:/job/42\n")  # cgroup v1: no 0:: line
    assert bench._cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs") is None


def test_a_json_that_is_an_empty_list_is_no_bench_results_file(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text("[]\n")
    with pytest.raises(ValueError, match="that file exists and is not a bench results file"):
        bench.check_results_file(mine)
    mine.write_text('{"meta": {}, "rows": []}\n')  # ours, of a run that measured nothing
    bench.check_results_file(mine)


def test_ctrl_c_mid_bench_prints_and_writes_the_rows_measured_before_it(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the third measurement lost the two rows already measured (no table, no file), minutes of a grid:
    they are now printed, written with a note saying the run was cut short, and plotted, and the status is 130. The
    files are named as the whole run's would be (torch+ort, not torch), so the same command run again replaces them."""
    real = bench.measure
    calls = []

    def measure(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bench, "measure", measure)
    argv = ["bench", "--models", "0.25-64,0.25-96", "--runtimes", "torch,ort", "--min-runs", "3", "--min-time", "0",
            "--batch", "0", "--no-progress", "--out", f"{tmp_path}/", "--plots", str(tmp_path)]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 130 and "mobilenet_v1_025_96" in out and " ort " not in out
    assert err.rstrip().endswith("interrupted after 2 of 4 measurements (Ctrl-C); the 2 row(s) measured are above "
                                 "and written")  # fmt: skip
    stem = "bench-" + bench.hardware_tag() + "-torch+ort-t1-b0"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        f"{stem}-accuracy-vs-latency.png", f"{stem}-latency-vs-macs.png", f"{stem}.csv", f"{stem}.json"]  # fmt: skip
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["mobilenet_v1_025_64", "mobilenet_v1_025_96"]
    assert any("interrupted after 2 of 4" in n for n in data["meta"]["notes"])
    monkeypatch.setattr(bench, "measure", real)  # the same command again, not interrupted: it replaces them
    assert main(argv) == 0
    assert len(list(tmp_path.glob("*.json"))) == 1 and "kept its 0 row(s)" in capsys.readouterr().err
    assert len(bench.read_results(tmp_path / f"{stem}.json")) == 4
    monkeypatch.setattr(bench, "measure", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["bench", "--models", "0.25-64", "--runtimes", "torch", "--no-progress"]) == 130  # nothing measured
    assert capsys.readouterr().err.strip() == "mobilenets bench: interrupted"


@pytest.mark.skipif(bench.reset_peak_memory() is None, reason="needs Linux's /proc/self/clear_refs and VmHWM")
def test_peak_memory_is_the_runners_not_the_export_or_int8_calibration_that_made_its_file(monkeypatch):
    """The peak was reset before the ONNX export and INT8 calibration, so an int8 row read 198 MiB where the fp32
    row of 0.5-160 read 45 (the runner alone: 19): here an export that touches 300 MiB on its way must not count."""
    import numpy as np

    from mobilenets import export

    real = export.export_onnx

    def heavy_export(*a, **k):
        scratch = np.ones(300 * 2**20, dtype=np.uint8)  # written, so resident
        del scratch
        return real(*a, **k)

    monkeypatch.setattr(export, "export_onnx", heavy_export)
    model, spec, label = bench.build("0.25-64")
    cfg = bench.BenchConfig(models=(label,), runtimes=("ort",), **{**TINY, "batch": 0})
    row = bench.measure(model, spec, "ort", threads=1, cfg=cfg, label=label, peak_gflops=50.0)
    assert 0 <= row["peak_mem_MB"] < 150


def test_plot_axes_label_log_ticks_as_plain_numbers(tmp_path, monkeypatch):
    """Two models of 133 and 150M MACs: matplotlib labelled every minor tick of the log MACs axis '1.34x10^2', and the
    labels overlapped into one unreadable line. They are plain numbers now, on both plots' log axes."""
    pytest.importorskip("matplotlib")
    from mobilenets import plots

    figures = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, **k: figures.append(fig) or real(fig, path, **k))
    base = {"runtime": "ort", "threads": 1, "cpu": "cpu x", "top1_table": "tfslim"}
    rows = [{**base, "model": "mobilenet_v1_060_176", "macs_M": 133.4, "latency_ms_median": 4.2, "fp32_limit_ms": 1.05,
             "top1": 63.0},
            {**base, "model": "mobilenet_v1_050", "macs_M": 149.5, "latency_ms_median": 0.4, "fp32_limit_ms": 1.18,
             "top1": 63.3}]  # fmt: skip
    plots.bench_plots(rows, tmp_path, stem="b")
    assert len(figures) == 2
    for fig, axes in zip(figures, ("xy", "x"), strict=True):
        fig.canvas.draw()
        ax = fig.axes[0]
        for name in axes:
            axis = getattr(ax, f"{name}axis")
            labels = [t.get_text() for t in axis.get_ticklabels(minor=True) + axis.get_ticklabels()]
            shown = [t for t in labels if t]
            assert shown and all(re.fullmatch(r"\d+(\.\d+)?", t) for t in shown), (name, shown)
    assert "134" in [t.get_text() for t in figures[0].axes[0].xaxis.get_ticklabels(minor=True)]


def test_the_latency_plot_is_titled_with_the_device_the_rows_ran_on(tmp_path, monkeypatch):
    """The H200 bench's plot was titled 'Latency vs MACs on Intel(R) Xeon(R) Processor', its host's CPU."""
    pytest.importorskip("matplotlib")
    from mobilenets import plots

    titles = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.append(fig.axes[0].get_title()) or real(fig, path))
    base = {"model": "mobilenet_v1_050", "threads": 1, "macs_M": 149.5, "latency_ms_median": 0.3, "top1": 63.3,
            "cpu": "Intel(R) Xeon(R) Processor", "gpu": "NVIDIA H200"}  # fmt: skip
    plots.latency_vs_macs([{**base, "runtime": "cuda", "device": "cuda"}], tmp_path / "gpu.png")
    plots.latency_vs_macs([{**base, "runtime": "ort", "device": "cpu"}], tmp_path / "cpu.png")
    plots.latency_vs_macs([{**base, "runtime": "cuda", "device": "cuda"}, {**base, "runtime": "ort", "device": "cpu"}],
                          tmp_path / "both.png")  # fmt: skip
    assert titles == ["Latency vs MACs on NVIDIA H200", "Latency vs MACs on Intel(R) Xeon(R) Processor",
                      "Latency vs MACs on NVIDIA H200 and Intel(R) Xeon(R) Processor"]  # fmt: skip


def _accuracy_figure(rows, path, monkeypatch):
    """The figure `plots.accuracy_vs_latency` draws of ``rows`` (and writes to ``path``)."""
    from mobilenets import plots

    figures = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, p, **k: figures.append(fig) or real(fig, p, **k))
    assert plots.accuracy_vs_latency(rows, path) == path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return figures[0]


def _points(ax) -> set[tuple[float, float]]:
    """The (latency, top-1) points an accuracy panel draws (its markers, not the FPS line or the fronts)."""
    return {(x, y) for line in ax.get_lines() if line.get_marker() == "o" for x, y in line.get_xydata()}


def test_the_accuracy_plot_puts_top1s_of_different_sources_in_separate_labelled_panels(tmp_path, monkeypatch):
    """A results file merged over two benches (the published table's ImageNet top-1s, then `--accuracy` runs on 10
    classes) drew both on one 'top-1' axis, with one Pareto front through both: 90% on 10 classes read as beating
    every ImageNet model. Each source now has its own panel, named in its label, with its own points and front."""
    pytest.importorskip("matplotlib")
    base = {"runtime": "ort", "threads": 1, "cpu": "cpu x", "device": "cpu"}
    table = [
        {**base, "model": m, "latency_ms_median": ms, "top1": t, "top1_source": "tfslim", "top1_table": "tfslim"}
        for m, ms, t in (("mobilenet_v1_025_128", 1.0, 41.5), ("mobilenet_v1_050_160", 3.0, 59.1))
    ]
    runs = [{**base, "model": m, "latency_ms_median": ms, "top1": t, "top1_source": s, "top1_table": "measured"}
            for m, ms, t, s in (("mobilenet_v1_025_96", 0.6, 88.0, "measured"),
                                ("mobilenet_v1_075_128", 4.0, 92.5, "interpolated"))]  # fmt: skip
    fig = _accuracy_figure([*table, *runs], tmp_path / "mixed.png", monkeypatch)
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 2
    labels = [ax.get_ylabel() for ax in panels]
    assert labels == ["expected ImageNet top-1 (%):\nTF-slim's published table",
                      "top-1 (%): your runs, interpolated between them"]  # fmt: skip
    assert _points(panels[0]) == {(1.0, 41.5), (3.0, 59.1)} and _points(panels[1]) == {(0.6, 88.0), (4.0, 92.5)}
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in panels]  # each its own front
    assert legends == [["ort x1 (Pareto front)", "24 FPS"],
                       ["ort x1 (Pareto front)", "top-1 estimated (off the table)", "24 FPS"]]  # fmt: skip
    # the estimated top-1 (interpolated between runs) is a hollow point, the measured one a filled point
    faces = {tuple(xy): line.get_markerfacecolor() for line in panels[1].get_lines() if line.get_marker() == "o"
             for xy in line.get_xydata()}  # fmt: skip
    assert faces[(4.0, 92.5)] == "none" and faces[(0.6, 88.0)] != "none"
    assert "one panel per top-1 source" in panels[0].get_title()
    # an INT8 runtime's top-1s are the fp32 weights': its legend says so, and its estimated one is still hollow
    int8 = [{**r, "runtime": "ort-int8", "dtype": "int8", "top1_source": r["top1_source"] + bench.FP32_WEIGHTS}
            for r in runs]  # fmt: skip
    (panel,) = [ax for ax in _accuracy_figure(int8, tmp_path / "int8.png", monkeypatch).axes if ax.get_lines()]
    assert [t.get_text() for t in panel.get_legend().get_texts()][0] == "ort-int8 x1 (Pareto front; fp32 weights' " \
        "top-1)"  # fmt: skip
    faces = {tuple(xy): line.get_markerfacecolor() for line in panel.get_lines() if line.get_marker() == "o"
             for xy in line.get_xydata()}  # fmt: skip
    assert faces[(4.0, 92.5)] == "none" and faces[(0.6, 88.0)] != "none"
    # the two ImageNet tables are both 'expected ImageNet top-1': their panels name them
    paper = [{**r, "model": r["model"] + "_p", "top1_table": "paper", "top1_source": "interpolated"} for r in table]
    fig = _accuracy_figure([*table, *paper], tmp_path / "tables.png", monkeypatch)
    assert [ax.get_ylabel().split("\n")[1] for ax in fig.axes] == ["TF-slim's published table",
                                                                   "the paper's Tables 6-7"]  # fmt: skip


def test_rows_of_runs_on_two_datasets_name_each_and_are_drawn_apart(tmp_path, monkeypatch):
    """Two `bench --accuracy` runs, on runs of two 10-class sets, merged into one results file: their rows said only
    "measured", so one panel and one Pareto front mixed two tasks. Each row now names its task (`top1_task`: the
    class count and a digest of the class names the runs were validated on), and each task gets its own panel."""
    pytest.importorskip("matplotlib")

    def summary(name, alpha, classes, top1):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"model": {"alpha": alpha, "resolution": 128, "num_classes": len(classes)},
                                    "final_top1": top1, "per_class_top1": dict.fromkeys(classes, top1)}))  # fmt: skip
        return path

    first, second = [f"n{i:08d}" for i in range(10)], [f"n{i:08d}" for i in range(10, 20)]
    tasks = []
    for classes in (first, second):
        acc = accuracy.from_summaries([summary("a", 0.25, classes, 0.8), summary("b", 0.5, classes, 0.9)])
        model, spec, label = bench.build("0.25-64")
        cfg = bench.BenchConfig(models=(label,), runtimes=("torch",), **{**TINY, "batch": 0})
        row = bench.measure(model, spec, "torch", threads=1, cfg=cfg, label=label, accuracy=acc)
        assert (row["top1_table"], row["top1_source"]) == ("measured", "extrapolated")
        tasks.append(row["top1_task"])
    assert tasks[0] != tasks[1] and all(re.fullmatch(r"10 classes #[0-9a-f]{8}", t) for t in tasks), tasks
    assert accuracy.task_name(10, None) == "10 classes"  # runs whose summaries list no class names
    base = {"runtime": "ort", "threads": 1, "cpu": "cpu x", "device": "cpu", "top1_table": "measured",
            "top1_source": "measured"}  # fmt: skip
    rows = [
        {**base, "model": "mobilenet_v1_025_96", "latency_ms_median": 0.6, "top1": 88.0, "top1_task": tasks[0]},
        {**base, "model": "mobilenet_v1_050_96", "latency_ms_median": 1.0, "top1": 61.0, "top1_task": tasks[1]},
    ]
    fig = _accuracy_figure(rows, tmp_path / "two.png", monkeypatch)
    # each panel holds its runs' own points only: nothing interpolated, and the label no longer says so
    assert [ax.get_ylabel() for ax in fig.axes] == [f"top-1 (%): your runs ({t})" for t in sorted(tasks)]
    assert [_points(ax) for ax in fig.axes] == [{(0.6, 88.0)}, {(1.0, 61.0)}][:: 1 if tasks[0] < tasks[1] else -1]


def test_the_accuracy_plot_of_one_source_is_labelled_as_before(tmp_path, monkeypatch):
    """One source, one panel with the label it always had; rows written before top1_table (the H200 results) read
    their table from a grid point's top1_source, and rows naming no table say so rather than claim ImageNet."""
    pytest.importorskip("matplotlib")
    base = {"model": "mobilenet_v1_025_128", "runtime": "ort", "threads": 1, "latency_ms_median": 1.0, "top1": 41.5}
    title = "Accuracy vs measured latency (paper Fig. 4 against time)"
    for rows, ylabel in (
        ([{**base, "top1_source": "tfslim", "top1_table": "tfslim"}], "expected ImageNet top-1 (%)"),
        ([{**base, "top1_source": "paper", "top1_table": "paper"}], "expected ImageNet top-1 (%)"),
        ([{**base, "top1_source": "interpolated", "top1_table": "measured"}],
         "top-1 (%): your runs, interpolated between them"),
        # a run folder's row (or a run's own model under --accuracy): measured, so not "interpolated"
        ([{**base, "top1_source": "run: r/summary.json, 2 classes", "top1_table": "measured"}], "top-1 (%): your runs"),
        ([{**base, "top1_source": "measured, of fp32 weights", "top1_table": "measured"}], "top-1 (%): your runs"),
        ([{**base, "top1_source": "interpolated, of fp32 weights", "top1_table": "measured"}],
         "top-1 (%): your runs, interpolated between them"),
        ([{**base, "top1_source": "tfslim"}], "expected ImageNet top-1 (%)"),  # no top1_table column
        ([{**base, "top1_source": "interpolated"}], "top-1 (%), source not recorded"),
    ):  # fmt: skip
        fig = _accuracy_figure(rows, tmp_path / "one.png", monkeypatch)
        assert [(ax.get_ylabel(), ax.get_title()) for ax in fig.axes] == [(ylabel, title)], rows
        assert _points(fig.axes[0]) == {(1.0, 41.5)}


def test_rows_name_no_commit_for_a_package_that_is_not_a_file_of_the_surrounding_repository(tmp_path):
    """Installed into a project's .venv (inside the project's git checkout, untracked), bench rows recorded the
    project's commit as the measured code's. Only a checkout that tracks the package's files names its commit."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "README").write_text("a project\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    installed = tmp_path / ".venv" / "site-packages" / "mobilenets"
    installed.mkdir(parents=True)
    (installed / "bench.py").write_text("")
    assert bench.git_commit(installed) is None
    head = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert bench.git_commit(tmp_path) == head  # a folder with tracked files: its commit
    assert re.fullmatch(r"[0-9a-f]{7}(-dirty)?", bench.git_commit())  # this checkout


def test_bench_progress_off_a_terminal_is_plain_lines(capsys):
    """Off a terminal (a log file, CI; pytest's capture is one) the progress is lines, not tqdm's bar, which redraws
    itself with carriage returns into one long overwritten line; on the way a line at most every ``every_s``."""
    cfg = bench.BenchConfig(models=["0.25-64"], runtimes=["torch"], threads=[1], **{**TINY, "progress": True})
    assert len(bench.run_bench(cfg)) == 1
    err = capsys.readouterr().err
    assert "\r" not in err and re.search(r"^bench: 1/1 measured in \d+\.\d min$", err, flags=re.M), err
    out = io.StringIO()
    lines = bench._progress(3, True, stream=out, every_s=0.0)
    for name in ("a", "b", "c"):
        lines.set_description(name)
        lines.update(1)
    lines.close()
    said = out.getvalue().splitlines()
    assert [s.split(" (")[0] for s in said[:2]] == ["bench: 1/3 measured", "bench: 2/3 measured"], said
    assert "(b)" in said[1] and "left" in said[1] and said[2].startswith("bench: 3/3 measured in"), said
    out = io.StringIO()  # a job that measured nothing (a runtime refused or unavailable) is said as skipped
    lines = bench._progress(3, True, stream=out, every_s=0.0)
    for name, measured in (("a", False), ("b", True), ("c", True)):
        lines.set_description(name)
        lines.update(1, measured=measured)
    lines.close()
    said = out.getvalue().splitlines()
    assert [s.split(" (")[0] for s in said[:2]] == ["bench: 0/3 measured, 1 skipped", "bench: 1/3 measured, 1 skipped"]
    assert "(b)" in said[1] and "left" in said[1] and said[2].startswith("bench: 2/3 measured, 1 skipped in "), said
    quiet = io.StringIO()
    bench._progress(3, False, stream=quiet).close()  # --no-progress: nothing
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("runtime", ["openvino-bf16", "cuda-bf16", "cuda-fp16", "ort-int8", "ort", "cuda"])
def test_the_accuracy_legend_says_fp32_weights_exactly_where_the_rows_top1_source_does(tmp_path, monkeypatch, runtime):
    """The legend said "fp32 weights' top-1" for INT8 series only, while bf16 and fp16 rows' top1_source says it too
    (`bench.top1_source_for`): both now follow `bench.of_fp32_weights`."""
    pytest.importorskip("matplotlib")
    dtype = RUNTIME_INFO[runtime].dtype
    rows = [{"model": m, "runtime": runtime, "threads": 1, "cpu": "cpu x", "device": "cpu", "dtype": dtype,
             "latency_ms_median": ms, "top1": t, "top1_source": bench.top1_source_for("tfslim", dtype),
             "top1_table": "tfslim"} for m, ms, t in (("mobilenet_v1_025_128", 1.0, 41.5),
                                                      ("mobilenet_v1_050_160", 3.0, 59.1))]  # fmt: skip
    (panel,) = [ax for ax in _accuracy_figure(rows, tmp_path / "a.png", monkeypatch).axes if ax.get_lines()]
    legend = [t.get_text() for t in panel.get_legend().get_texts()][0]
    labelled = rows[0]["top1_source"].endswith(bench.FP32_WEIGHTS)
    assert labelled == (dtype != "fp32")
    weights = "; fp32 weights' top-1" if labelled else ""
    assert legend == f"{runtime} x1 (Pareto front{weights})"
    # a row that records no dtype (written before the column) is not labelled either way
    assert not bench.of_fp32_weights(None)
