"""`mobilenets bench --models PATH`: an exported ONNX file, a weights folder or a training run's folder is timed as
given (the files come from the real `mobilenets export`), with its size, resolution, MACs and an unknown top-1; a
path bench cannot run, or a runtime that cannot run the file, is a one-line error naming both."""

import json
import os
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import accuracy, bench, export
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


def test_the_progress_line_counts_a_refused_runtime_as_skipped_not_measured(files, capsys):
    """``bench --models m.int8.onnx --runtimes ort-int8,openvino`` measured one row and skipped openvino, but its last
    progress line said ``bench: 2/2 measured``."""
    cfg = bench.BenchConfig(models=str(files["int8"]), runtimes=("ort-int8", "torch"), threads=1,
                            **{**TINY, "progress": True})  # fmt: skip
    assert len(bench.run_bench(cfg)) == 1
    done = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bench: ")]
    assert done[-1].startswith("bench: 1/2 measured, 1 skipped in "), done


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
        # a link to nothing said "this is neither": what is missing is its target, named
        (lambda d, f: _link(d / "broken", d / "gone.onnx"), "ort", ["broken", "no such file or folder", "gone.onnx"]),
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


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


CLI_TINY = ["--runtimes", "ort", "--min-runs", "3", "--min-time", "0", "--batch", "0", "--format", "json",
            "--no-progress"]  # fmt: skip


def test_cli_a_path_holding_a_comma_is_given_with_an_escaped_comma(files, tmp_path, capsys, monkeypatch):
    """``--models`` split on every comma, so ``--models "a,b/w"`` said "model 'a' is not allowed" (not the path given)
    and such a path could not be given at all. Its words are split as train's list options are
    (`train_config.comma_parts`): ``\\,`` is a comma inside an item; items may also be separate words (a glob)."""
    folder = tmp_path / "a,b" / "w"
    mobilenets.save(mobilenets.load(files["weights"]), folder)
    escaped = str(folder).replace(",", "\\,")
    assert main(["bench", "--models", f"{files['fp32']},{escaped}", "0.25-64", *CLI_TINY]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["file"]) for r in rows] == [(str(files["fp32"]), str(files["fp32"].resolve())),
                                                       (str(folder), str(folder.resolve())),
                                                       ("mobilenet_v1_025_64", None)]  # fmt: skip
    # a missing one is named whole
    err = _one_line_error(["--models", str(tmp_path / "x\\,y" / "m.onnx")], capsys, monkeypatch)
    assert f"model {str(tmp_path / 'x,y' / 'm.onnx')!r} is not allowed: no such file or folder" in err, err


def test_a_home_path_after_a_comma_is_expanded_and_its_row_names_it_as_typed(files, tmp_path, monkeypatch, capsys):
    """The shell expands ``~`` at a word's start only: ``--models 0.25-64,~/m.onnx`` reached bench as typed and said
    "no such file or folder". The row's ``model`` is the path as typed (as ``./m.onnx`` stays), ``file`` the
    resolved path."""
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(files["fp32"], tmp_path / "m.onnx")
    found = bench.resolve_model("~/m.onnx")
    assert isinstance(found, bench.ModelPath) and found.given == "~/m.onnx" and found.path == tmp_path / "m.onnx"
    assert main(["bench", "--models", "0.25-64,~/m.onnx", *CLI_TINY]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["file"]) for r in rows] == [("mobilenet_v1_025_64", None),
                                                       ("~/m.onnx", str((tmp_path / "m.onnx").resolve()))]  # fmt: skip


def test_rows_of_two_files_of_one_name_are_two_rows_of_a_merged_results_file(tmp_path):
    """`row_key` left out ``file``: ``bench --models m.onnx --out r`` run in two folders replaced the first folder's
    row with the second's. A path's rows are keyed by their file too; rows without one (named models, rows written
    before the column) are keyed as before, so a named model measured again still replaces its row."""
    first, second, named = _row("0.25-96"), _row("0.25-96"), _row("0.25-64")
    first.update(model="m.onnx", file="/a/m.onnx", latency_ms_median=1.0)
    second.update(model="m.onnx", file="/b/m.onnx", latency_ms_median=2.0)
    bench.write_results([first, named], tmp_path / "r")
    again = {**named, "latency_ms_median": 3.0}
    bench.write_results([second, again], tmp_path / "r", say=print)
    rows = bench.read_results(tmp_path / "r.json")
    assert [(r["model"], r["file"], r["latency_ms_median"]) for r in rows] == [
        ("m.onnx", "/a/m.onnx", 1.0), ("0.25-64", None, 3.0), ("m.onnx", "/b/m.onnx", 2.0)
    ]  # fmt: skip
    bench.write_results([{**second, "latency_ms_median": 4.0}], tmp_path / "r", say=print)  # the same file: replaced
    assert [r["latency_ms_median"] for r in bench.read_results(tmp_path / "r.json")] == [1.0, 3.0, 4.0]


def test_ctrl_c_leaves_out_of_pending_the_runtimes_a_file_is_refused_on(files, monkeypatch):
    """After Ctrl-C, `BenchInterrupted.pending` (which names the results file as the whole run would) listed torch
    for an ONNX file that torch cannot run (`ModelPath.cannot_run`): the whole run writes no torch row, and the name
    said torch. Refused pairs are left out; a named model's are kept."""

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "measure", interrupt)
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: 50.0)
    cfg = bench.BenchConfig(models=str(files["fp32"]), runtimes=("ort", "torch"), threads=1, **TINY)
    with pytest.raises(bench.BenchInterrupted) as caught:
        bench.run_bench(cfg)
    assert caught.value.pending == [{"runtime": "ort", "threads": 1}]
    cfg = bench.BenchConfig(models=(str(files["fp32"]), "0.25-64"), runtimes=("ort", "torch"), threads=1, **TINY)
    with pytest.raises(bench.BenchInterrupted) as caught:
        bench.run_bench(cfg)
    assert caught.value.pending == [{"runtime": "ort", "threads": 1}] * 2 + [{"runtime": "torch", "threads": 1}]


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


def test_the_printed_table_says_each_row_s_resolution_and_classes(files, capsys, tmp_path):
    """A file's name says neither its input size (a --dynamic-hw or --resolution export is timed at the size it
    records) nor its classes (42 here, beside a 1000-class named model): the table did not say them either. Rows
    record ``classes`` (the last column: an older results file without it is still recognised and merged)."""
    argv = ["bench", "--models", f"{files['fp32']},0.25-64", "--runtimes", "ort", "--min-runs", "3", "--min-time",
            "0", "--batch", "0", "--no-progress"]  # fmt: skip
    old = {k: v for k, v in _row("0.25-96").items() if k != "classes"}  # written before the column
    bench.write_results([old], tmp_path / "r")
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    header, _rule, *lines = capsys.readouterr().out.splitlines()
    cols = header.split()
    assert cols[:4] == ["model", "resolution", "classes", "runtime"], header
    table = {line.split()[0]: line.split() for line in lines}
    assert table[str(files["fp32"])][1:3] == [str(ONNX_RES), str(SPEC.num_classes)]
    assert table["mobilenet_v1_025_64"][1:3] == ["64", "1,000"]  # the table groups thousands
    rows = bench.read_results(tmp_path / "r.json")  # the older row kept beside the new ones
    assert [(r["model"], r.get("classes")) for r in rows] == [
        ("0.25-96", None), (str(files["fp32"]), SPEC.num_classes), ("mobilenet_v1_025_64", 1000)
    ]  # fmt: skip
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == ",".join(bench.COLUMNS)


def _row(model: str) -> dict:
    """A results row of this machine (so that a later run's rows merge with it) for ``model``."""
    spec = bench.resolve_model(model)
    row = dict.fromkeys(bench.COLUMNS)
    row.update(model=model, alpha=spec.alpha, resolution=spec.resolution, runtime="ort", threads=1, batch=0,
               latency_ms_median=1.0, classes=1000, **bench.environment())  # fmt: skip
    return {k: row[k] for k in bench.COLUMNS}


# --- a real training run's folder: its measured top-1 ------------------------------------------------------------

RUN_CLASSES = ["n01440764", "n02979186"]  # tench, cassette player


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real `mobilenets train` run folder (summary.json, config.yaml, model/ as the trainer writes them): 2
    Imagenette classes, 8 train and 4 val images each, 0.25-32, one epoch (about 2 s)."""
    import os
    import shutil

    from mobilenets.train_config import resolve
    from mobilenets.trainer import train

    from .conftest import data_path

    src, data = data_path("imagenette"), tmp_path_factory.mktemp("run-data")
    for split, n in (("train", 8), ("val", 4)):
        for c in RUN_CLASSES:
            (data / split / c).mkdir(parents=True)
            for f in sorted(os.listdir(src / split / c))[:n]:
                shutil.copy(src / split / c / f, data / split / c / f)
    out = tmp_path_factory.mktemp("bench-run")
    cfg = resolve(data=str(data), out=str(out), alpha=0.25, resolution=32, batch_size=8, epochs=1, workers=0,
                  threads=1, optimizer="sgd", lr=0.05, schedule="constant", weight_decay=0.0, quiet=True)  # fmt: skip
    summary = train(cfg)
    assert summary["final_top1"] is not None and summary["val_images"] == 8
    return out, summary


def test_a_run_folder_row_carries_the_top1_its_run_measured_and_says_whose(trained_run):
    """A `mobilenets train` run folder's rows had no top-1, though its summary.json holds the final top-1 of exactly
    the weights in RUN/model. They carry it now, named as the run's measurement on its classes and val images, and
    an INT8 runtime's row says it is the fp32 weights' (`bench.of_fp32_weights`), as a table's top-1 does."""
    pytest.importorskip("onnxruntime.quantization")
    run, summary = trained_run
    notes = []
    cfg = bench.BenchConfig(models=(str(run), str(run / "model")), runtimes=("torch", "ort-int8"), **TINY)
    rows = bench.run_bench(cfg, notes=notes)
    assert [(r["model"], r["dtype"]) for r in rows] == [(str(run), "fp32"), (str(run / "model"), "fp32"),
                                                        (str(run), "int8"), (str(run / "model"), "int8")]  # fmt: skip
    task = accuracy.task_name(2, tuple(RUN_CLASSES))
    source = f"run: {run / 'summary.json'}, {task}, 8 val images"
    for r in rows:
        assert r["top1"] == pytest.approx(100 * summary["final_top1"]) and r["top1"] is not None
        assert r["top1_source"] == (source if r["dtype"] == "fp32" else source + bench.FP32_WEIGHTS)
        assert bench.top1_basis(r["top1_source"]) == source
        assert (r["top1_table"], r["top1_task"]) == ("measured", task)  # the user's runs', not TF-slim's table's
    assert not [n for n in notes if "summary.json" in n]
    # from the re-read: `bench --models .` inside RUN/model found no run (Path('.').name is '')
    here = os.getcwd()
    try:
        os.chdir(run / "model")
        top1, why = accuracy.weights_run_top1(".")
    finally:
        os.chdir(here)
    assert why == "" and top1 is not None and top1.top1 == pytest.approx(100 * summary["final_top1"])


def test_weights_without_their_run_and_an_onnx_export_of_them_still_have_no_top1(trained_run, tmp_path):
    """The run's top-1 is of RUN/model as the run left it: the same weights copied out of the run, exported to ONNX,
    or a summary.json that is not of these weights (another top-1 than config.json records: an earlier state of the
    run), carry none; the last says why in one note."""
    import shutil

    run, _summary = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(run / "model", copy / "model")  # a folder named model, but no run around it
    onnx = tmp_path / "m.onnx"
    assert main(["export", str(run / "model"), "--format", "onnx", "--out", str(onnx)]) == 0
    stale = tmp_path / "stale"
    shutil.copytree(run, stale)
    data = json.loads((stale / "summary.json").read_text())
    (stale / "summary.json").write_text(json.dumps({**data, "final_top1": data["final_top1"] / 2 + 0.01}))
    notes = []
    models = (str(copy / "model"), str(copy), str(onnx), str(stale))
    rows = bench.run_bench(bench.BenchConfig(models=models, runtimes=("ort",), **TINY), notes=notes)
    assert [r["model"] for r in rows] == list(models)
    for r in rows:
        assert r["top1"] is None and r["top1_source"] is None, r["model"]
    (note,) = [n for n in notes if "summary.json" in n]
    assert note.startswith(f"note: {stale}: {stale / 'summary.json'} is not of the weights in ") and "\n" not in note


def test_a_run_without_a_final_top1_says_so_once(trained_run, tmp_path):
    import shutil

    stale = tmp_path / "novals"
    shutil.copytree(trained_run[0], stale)
    data = json.loads((stale / "summary.json").read_text())
    (stale / "summary.json").write_text(json.dumps({**data, "final_top1": None}))  # best_top1 is model_best's
    notes = []
    rows = bench.run_bench(bench.BenchConfig(models=str(stale), runtimes=("torch", "ort"), **TINY), notes=notes)
    assert [r["top1"] for r in rows] == [None, None]
    assert [n for n in notes if "summary.json" in n] == [f"note: {stale}: {stale / 'summary.json'}: no final_top1 "
                                                         "(the run validated no epoch): no measured top-1"]  # fmt: skip


def test_a_runs_model_best_row_carries_its_best_top1(trained_run, tmp_path):
    """`bench --models RUN/model_best` had no top-1, though summary.json holds ``best_top1``, the top-1 of exactly
    those weights. It carries it (named best_top1 in its source), under the same checks as RUN/model's final_top1:
    a summary whose best_top1 is not what model_best/'s config.json records gives none and says why."""
    import shutil

    from mobilenets.weights import read_config

    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    data = json.loads((run / "summary.json").read_text())
    recorded = read_config(run / "model_best")["provenance"]["val_top1"]
    assert data["best_top1"] == recorded  # what the check compares
    # final_top1 gone: were model_best's top-1 read from it (or RUN/model's read from best_top1), these would differ
    (run / "summary.json").write_text(json.dumps({**data, "final_top1": None}))
    notes = []
    cfg = bench.BenchConfig(models=(str(run / "model_best"), str(run)), runtimes=("torch",), **TINY)
    best, final = bench.run_bench(cfg, notes=notes)
    task = accuracy.task_name(2, tuple(RUN_CLASSES))
    assert best["top1"] == pytest.approx(100 * data["best_top1"]) and final["top1"] is None
    assert best["top1_source"] == f"run: {run / 'summary.json'} best_top1, {task}, 8 val images"
    assert (best["top1_table"], best["top1_task"]) == ("measured", task)
    assert [n for n in notes if "summary.json" in n] == [f"note: {run}: {run / 'summary.json'}: no final_top1 (the "
                                                         "run validated no epoch): no measured top-1"]  # fmt: skip
    (run / "summary.json").write_text(json.dumps({**data, "best_top1": data["best_top1"] / 2 + 0.01}))
    top1, why = accuracy.weights_run_top1(run / "model_best")
    assert top1 is None and why.startswith(f"{run / 'summary.json'} is not of the weights in {run / 'model_best'}")


def test_plots_and_select_treat_a_run_folder_row_as_the_runs_measurement(trained_run, tmp_path, capsys, monkeypatch):
    """The accuracy plot puts a run folder's row in the panel of the run's task (not on TF-slim's ImageNet axis), as
    a measured (filled) point; select, which times the candidates it exports, does not take the run's latency for
    the 0.25-32 candidate's (that of the row bench named 0.25-32) and says why in its note."""
    pytest.importorskip("matplotlib")
    from mobilenets import plots

    run, _summary = trained_run
    cfg = bench.BenchConfig(models=(str(run), "0.25-32"), runtimes=("ort",), **TINY)
    rows = bench.run_bench(cfg)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, p, **k: figures.append(fig) or p)
    plots.accuracy_vs_latency(rows, tmp_path / "a.png")
    panels = [ax for ax in figures[0].axes if ax.get_lines()]
    task = accuracy.task_name(2, tuple(RUN_CLASSES))
    assert [ax.get_ylabel() for ax in panels] == [
        "expected ImageNet top-1 (%):\nTF-slim's published table",
        f"top-1 (%): your runs ({task})",  # the run's own measurement: nothing interpolated (it said so)
    ]
    (measured,) = [line for line in panels[1].get_lines() if line.get_marker() == "o"]
    assert measured.get_markerfacecolor() != "none"  # the run's own measurement, not an estimate
    assert measured.get_xydata()[0][1] == pytest.approx(rows[0]["top1"])
    rows[0]["latency_ms_median"] = 999.0  # were it taken for the candidate's, the chosen line would show it
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    argv = ["select", "--runtime", "ort", "--bench", str(tmp_path / "b.json"), "--alpha-range", "0.25,0.25,0.05",
            "--res-range", "32,32,16", "--latency-ms", "1000", "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    (note,) = [line for line in err.splitlines() if "not used" in line]
    assert f"{str(run)!r} is a file or folder given to bench" in note
    chosen = json.loads(out)["chosen"]
    assert (chosen["latency_ms"], chosen["latency_source"]) == (rows[1]["latency_ms_median"], "measured")
