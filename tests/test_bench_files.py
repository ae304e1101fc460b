"""`mobilenets bench --models PATH`: an exported ONNX file, a weights folder or a training run's folder is timed as
given (the files come from the real `mobilenets export`), with its size, resolution, MACs and an unknown top-1; a
path bench cannot run, or a runtime that cannot run the file, is a one-line error naming both."""

import json
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import bench, export
from mobilenets.cli import main
from mobilenets.complexity import count_complexity
from mobilenets.registry import create_model
from mobilenets.spec import ModelSpec

TINY = dict(min_runs=3, min_time=0.0, batch=2, peak_gflops=50.0, progress=False)
SPEC = ModelSpec(alpha=0.25, resolution=96, num_classes=42)  # 42 classes: no registered model's cost
ONNX_RES = 80  # exported at another resolution than the weights': the row's must be the graph's


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A `mobilenets train`-like run folder (weights in RUN/model) and its fp32 and INT8 exports, made by the CLI."""
    root = tmp_path_factory.mktemp("bench-files")
    torch.manual_seed(0)
    mobilenets.save(create_model(SPEC).eval(), root / "run" / "model")
    fp32, int8 = root / "m.onnx", root / "m-int8.onnx"
    weights = str(root / "run" / "model")
    assert main(["export", weights, "--format", "onnx", "--resolution", str(ONNX_RES), "--out", str(fp32)]) == 0
    pytest.importorskip("onnxruntime.quantization")
    argv = ["export", weights, "--format", "onnx", "--int8", "--calib-synthetic", "--out", str(int8)]
    assert main(argv) == 0
    return {"run": root / "run", "weights": root / "run" / "model", "fp32": fp32, "int8": int8}


def _no_export(monkeypatch):
    """Fail the test if bench exported or quantized anything: a given file is timed as it is."""

    def refuse(*args, **kwargs):
        raise AssertionError("bench exported or quantized a model instead of timing the file given")

    monkeypatch.setattr(export, "export_onnx", refuse)
    monkeypatch.setattr(export, "quantize", refuse)


def test_an_exported_onnx_file_is_timed_as_it_is(files, monkeypatch):
    _no_export(monkeypatch)
    notes = []
    (row,) = bench.run_bench(bench.BenchConfig(models=str(files["fp32"]), runtimes=("ort",), **TINY), notes=notes)
    assert row["model"] == str(files["fp32"]) and row["file"] == str(files["fp32"].resolve())
    assert (row["runtime"], row["dtype"], row["alpha"], row["resolution"]) == ("ort", "fp32", 0.25, ONNX_RES)
    size = files["fp32"].stat().st_size / 2**20
    assert row["weights_MB"] == row["weights_fp32_MB"] == pytest.approx(size) and row["weights_int8_MB"] is None
    cost = count_complexity(SPEC.replace(resolution=ONNX_RES))  # of 42 classes, at the graph's size
    assert row["macs_M"] == pytest.approx(cost.macs / 1e6) and row["params_M"] == pytest.approx(cost.params / 1e6)
    # TF-slim's table is of TF-slim's weights, not these: the top-1 is unknown, not 0.25-80's
    assert row["top1"] is None and row["top1_source"] is None
    assert row["latency_ms_median"] > 0 and row["throughput_ips"] > 0
    assert not [n for n in notes if n.startswith("skipped")]


def test_an_int8_file_runs_on_the_int8_runtime_unquantized_and_other_runtimes_say_why_not(files, monkeypatch):
    _no_export(monkeypatch)
    notes = []
    cfg = bench.BenchConfig(models=str(files["int8"]), runtimes=("torch", "ort", "ort-int8"), threads=1, **TINY)
    (row,) = bench.run_bench(cfg, notes=notes)
    assert (row["runtime"], row["dtype"], row["resolution"]) == ("ort-int8", "int8", SPEC.resolution)
    size = files["int8"].stat().st_size / 2**20
    assert row["weights_MB"] == row["weights_int8_MB"] == pytest.approx(size) and row["weights_fp32_MB"] is None
    assert row["top1"] is None and row["top1_source"] is None
    skipped = [n for n in notes if n.startswith("skipped")]
    assert len(skipped) == 2 and all("\n" not in n and str(files["int8"]) in n for n in skipped)
    assert skipped[0].startswith("skipped torch for ") and "ONNX file" in skipped[0]
    assert skipped[1].startswith("skipped ort for ") and "INT8 export" in skipped[1] and "ort-int8" in skipped[1]


def test_a_run_folder_and_its_weights_folder_build_the_saved_model(files):
    run, weights = str(files["run"]), str(files["weights"])
    model, spec, label = bench.build(run)
    saved = mobilenets.load(weights).state_dict()
    assert label == run and spec == mobilenets.load(weights).spec and spec.num_classes == 42
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())  # its weights, not a fresh init
    cfg = bench.BenchConfig(models=(run, weights), runtimes=("torch", "ort"), **TINY)
    rows = bench.run_bench(cfg)
    assert [(r["model"], r["runtime"]) for r in rows] == [(run, "torch"), (weights, "torch"), (run, "ort"),
                                                          (weights, "ort")]  # fmt: skip
    for r in rows:
        assert r["file"] == str(files["weights"].resolve()) and r["resolution"] == SPEC.resolution
        assert r["macs_M"] == pytest.approx(count_complexity(SPEC).macs / 1e6) and r["top1"] is None


def test_a_name_wins_over_a_folder_of_that_name_and_dot_slash_names_the_folder(files, tmp_path, monkeypatch):
    """The grid's names keep meaning what they meant: a folder called 0.25-64 in the working directory does not
    change `--models 0.25-64`; ./0.25-64 is the folder (README, bench)."""
    monkeypatch.chdir(tmp_path)
    mobilenets.save(mobilenets.load(files["weights"]), tmp_path / "0.25-64")
    named = bench.resolve_model("0.25-64")
    assert isinstance(named, ModelSpec) and (named.alpha, named.resolution, named.num_classes) == (0.25, 64, 1000)
    found = bench.resolve_model("./0.25-64")
    assert isinstance(found, bench.ModelPath) and found.kind == "weights" and found.spec == SPEC


def _one_line_error(argv, capsys, monkeypatch) -> str:
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured before the error"))
    code = main(["bench", "--no-progress", "--min-runs", "3", "--min-time", "0", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mobilenets bench: error: "), err
    return err


@pytest.mark.parametrize(
    "make,runtimes,words",
    [
        (lambda d, f: d / "missing.onnx", "ort", ["missing.onnx", "no such file or folder"]),
        (lambda d, f: d / "no" / "folder", "ort", ["no such file or folder"]),
        (lambda d, f: _write(d / "notes.txt", "x"), "ort", ["notes.txt", "neither"]),
        (lambda d, f: _write(d / "junk.onnx", "not onnx"), "ort", ["junk.onnx", "not a readable ONNX model"]),
        (lambda d, f: _mkdir(d / "empty"), "ort", ["empty", "not a mobilenets weights folder"]),
        (lambda d, f: f["fp32"], "torch", ["m.onnx", "torch", "ONNX file", "ort, openvino"]),
        (lambda d, f: f["fp32"], "ort-int8,openvino-int8", ["m.onnx", "ort-int8", "fp32 export", "--int8"]),
        (lambda d, f: f["int8"], "ort,openvino", ["m-int8.onnx", "ort", "INT8 export", "ort-int8, openvino-int8"]),
    ],
)
def test_cli_a_path_or_runtime_bench_cannot_use_is_one_line_naming_it(make, runtimes, words, files, tmp_path,
                                                                       capsys, monkeypatch):  # fmt: skip
    err = _one_line_error(["--models", str(make(tmp_path, files)), "--runtimes", runtimes], capsys, monkeypatch)
    assert all(w in err for w in words), err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_cli_bench_of_a_file_beside_a_name_prints_both_rows_and_one_note_per_refused_runtime(files, capsys):
    argv = ["bench", "--models", f"{files['fp32']},0.25-64", "--runtimes", "torch,ort", "--min-runs", "3",
            "--min-time", "0", "--batch", "2", "--format", "json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["model"], r["runtime"]) for r in rows] == [
        ("mobilenet_v1_025_64", "torch"), (str(files["fp32"]), "ort"), ("mobilenet_v1_025_64", "ort")
    ]  # fmt: skip
    assert rows[1]["resolution"] == ONNX_RES and rows[1]["file"] == str(files["fp32"].resolve())
    refused = [line for line in err.splitlines() if line.startswith("skipped")]
    assert refused == [line for line in refused if line.startswith(f"skipped torch for {files['fp32']}: ")]
    assert len(refused) == 1
