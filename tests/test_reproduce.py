"""`mobilenets reproduce`: verdict rules on synthetic numbers, and the quick budget end to end on real images."""

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from mobilenets.reproduce import (
    BUDGETS,
    ReproduceConfig,
    ReproduceError,
    Run,
    experiment_rows,
    finished_runs,
    group_runs,
    plan_runs,
    read_summary,
    reproduce,
    run_cost,
    verdict,
    verdict_words,
)

from .conftest import REPO, data_path


def _rows(pairs, val_images=None):
    return [
        {"row": label, "top1": {"mean": top1}, "macs_M": macs, "paper_top1": 0.0, "paper_macs_M": macs,
         "val_images": val_images}
        for label, top1, macs in pairs
    ]  # fmt: skip


def image_folders(root: Path, classes, per_class: int) -> Path:
    """``root``/train and ``root``/val, each class folder with ``per_class`` blank 40x40 JPEGs."""
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 40)).save(root / split / cls / f"{i}.jpg")
    return root


def test_shared_runs_are_trained_once():
    budget = BUDGETS["full"]
    runs = plan_runs(["table4", "table5", "table6", "table7", "grid"], budget)
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys)) == 18  # 16-model grid + conv + shallow
    assert sum(r.model == "mobilenet_v1_100" and r.resolution == 224 for r in runs) == 1
    assert [row[2] for row in experiment_rows("table7", budget)] == [224, 192, 160, 128]
    assert [row[2] for row in experiment_rows("table7", BUDGETS["quick"])] == [56, 48, 40, 32]


def test_grid_rows_and_plots_name_models_as_the_paper_prints_them(tmp_path, monkeypatch):
    """The grid's rows read "1 MobileNet-224" where Tables 6-7 (and `mobilenets paper`) print "1.0 MobileNet-224":
    one model, two names in one report. Every label now comes from `paper.printed_name`."""
    import matplotlib.axes

    from mobilenets.paper import compare
    from mobilenets.reproduce import write_plots

    budget = BUDGETS["full"]
    grid = [row[0] for row in experiment_rows("grid", budget)]
    assert grid[:5] == ["1.0 MobileNet-224", "1.0 MobileNet-192", "1.0 MobileNet-160", "1.0 MobileNet-128",
                        "0.75 MobileNet-224"] and grid[-1] == "0.25 MobileNet-128"  # fmt: skip
    for table in ("table6", "table7"):
        assert {row[0] for row in experiment_rows(table, budget)} <= set(grid)
    assert list(dict.fromkeys(r["row"] for r in compare() if r["table"] == "fig4-5")) == grid
    rows = [
        {"row": label, "model": model, "top1": {"mean": top1}, "macs_M": macs, "params_M": 1.0, "paper_top1": top1,
         "paper_macs_M": macs}
        for label, model, _res, top1, macs in experiment_rows("grid", budget)
    ]  # fmt: skip
    drawn = []  # (legend label, points) of each line drawn

    def plot(ax, xs, ys, *args, label=None, **kwargs):
        drawn.append((label, len(xs)))

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    monkeypatch.setattr(matplotlib.axes.Axes, "legend", lambda ax, **kwargs: None)  # nothing drawn to list
    results = {"experiments": {"grid": {"rows": rows}}, "budget": {"smoke": False}, "num_classes": 10}
    write_plots(results, tmp_path)
    assert drawn[:4] == [("1.0 MobileNet", 4), ("0.75 MobileNet", 4), ("0.5 MobileNet", 4), ("0.25 MobileNet", 4)]
    assert len(drawn) == 16 and all(n == 4 for _label, n in drawn)


def test_verdict_rules():
    assert verdict("table4", _rows([("Conv MobileNet", 80.0, 4000), ("MobileNet", 79.0, 470)]))["holds"]
    assert verdict("table4", _rows([("Conv MobileNet", 80.0, 4000), ("MobileNet", 75.0, 470)]))["holds"] is False
    assert verdict("table5", _rows([("0.75 MobileNet", 70.0, 325), ("Shallow MobileNet", 68.0, 307)]))["holds"]
    assert verdict("table5", _rows([("0.75 MobileNet", 66.0, 325), ("Shallow MobileNet", 68.0, 307)]))["holds"] is False
    smooth = _rows([("1.0", 70, 569), ("0.75", 68, 325), ("0.5", 64, 149), ("0.25", 50, 41)])
    assert verdict("table6", smooth)["holds"]
    no_drop = _rows([("1.0", 70, 569), ("0.75", 66, 325), ("0.5", 62, 149), ("0.25", 60, 41)])
    assert verdict("table6", no_drop)["holds"] is False
    rising = _rows([("224", 70, 569), ("192", 73, 418), ("160", 67, 290), ("128", 64, 186)])
    assert verdict("table7", rising)["holds"] is False
    grid = _rows([(str(m), 10 * math.log(m), m) for m in (14, 21, 41, 49, 77, 110, 150, 186, 569)])
    assert verdict("grid", grid)["r2_loglinear"] == pytest.approx(1.0) and verdict("grid", grid)["holds"]
    falling = _rows([(str(m), 90 - 10 * math.log(m), m) for m in (14, 21, 41, 49, 77, 110, 150, 186, 569)])
    assert verdict("grid", falling)["r2_loglinear"] == pytest.approx(1.0)  # a perfect line, the wrong way
    assert verdict("grid", falling)["holds"] is False
    table4 = verdict("table4", _rows([("Conv MobileNet", 80.0, 4866), ("MobileNet", 79.0, 569)]))
    assert table4["macs_ratio"] == pytest.approx(4866 / 569)


def test_verdicts_weigh_the_noise_of_the_validation_set():
    # 1 point between two ~70% models on 400 images (standard error 2.3 points each) is noise
    close = [("0.75 MobileNet", 70.0, 325), ("Shallow MobileNet", 69.0, 307)]
    v = verdict("table5", _rows(close, val_images=400))
    assert v["holds"] is None and "includes 0" in v["inconclusive"]
    assert v["gap_95ci"][0] < 0 < v["gap_95ci"][1]
    assert verdict("table5", _rows(close, val_images=400_000))["holds"] is True  # the same gap on 1000x the images
    assert (
        verdict("table5", _rows(close))["holds"] is True
        and "point estimates" in verdict("table5", _rows(close))["noise"]
    )
    # table 4's threshold is a 2-point loss: 1.5 points lost on 4,000 images cannot be told from 2
    v = verdict("table4", _rows([("Conv MobileNet", 80.0, 4866), ("MobileNet", 78.5, 569)], val_images=4000))
    assert v["holds"] is None and v["gap_95ci"][0] < -2 < v["gap_95ci"][1]
    v = verdict("table4", _rows([("Conv MobileNet", 80.0, 4866), ("MobileNet", 72.0, 569)], val_images=4000))
    assert v["holds"] is False
    # a flat line is no drop: inconclusive, not "holds"; a significant rise anywhere fails it
    flat = _rows([("224", 70.0, 569), ("192", 70.2, 418), ("160", 69.9, 290), ("128", 69.8, 186)], val_images=4000)
    assert verdict("table7", flat)["holds"] is None
    falls = _rows([("224", 76.0, 569), ("192", 74.0, 418), ("160", 71.0, 290), ("128", 66.0, 186)], val_images=4000)
    assert verdict("table7", falls)["holds"] is True
    rises = _rows([("224", 76.0, 569), ("192", 81.0, 418), ("160", 71.0, 290), ("128", 66.0, 186)], val_images=4000)
    assert verdict("table7", rises)["holds"] is False and verdict("table7", rises)["significant_rises_points"] == [5.0]
    # every model at chance (10 classes, 80 images): nothing to judge
    chance = _rows([("Conv MobileNet", 12.5, 4866), ("MobileNet", 10.0, 569)], val_images=80)
    v = verdict("table4", chance, num_classes=10)
    assert v["holds"] is None and "chance" in v["inconclusive"]
    assert (
        verdict("table4", _rows([("Conv MobileNet", 40.0, 4866), ("MobileNet", 10.0, 569)], 80), 10)["holds"] is False
    )
    # 100% on both sides still has an error (Agresti-Coull), and is not mistaken for an unknown image count
    perfect = verdict("table5", _rows([("0.75 MobileNet", 100.0, 325), ("Shallow MobileNet", 100.0, 307)], 80))
    assert perfect["holds"] is None and perfect["gap_95ci"][0] < 0 < perfect["gap_95ci"][1] and "noise" not in perfect
    # several seeds: their spread widens the interval when it exceeds the validation set's noise
    spread = _rows([("0.75 MobileNet", 70.0, 325), ("Shallow MobileNet", 68.0, 307)], 400_000)
    assert verdict("table5", spread)["holds"] is True
    spread[0]["top1"] = {"mean": 70.0, "values": [66.0, 74.0]}
    spread[1]["top1"] = {"mean": 68.0, "values": [64.0, 72.0]}
    assert verdict("table5", spread)["holds"] is None


def test_a_damaged_run_record_is_one_line_naming_it_and_a_torn_epoch_row_is_no_epoch(tmp_path):
    """A summary.json that is not JSON (edited, a full disk) used to stop reproduce with the parser's message and no
    path; an unfinished run's metrics.jsonl may end in a line its killed process left half-written."""
    done, unfinished = plan_runs(["table7"], BUDGETS["quick"])[:2]
    summary = tmp_path / "runs" / done.key / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"final_top1": 0.5')
    with pytest.raises(ReproduceError, match=rf"^{summary}: not a readable run summary \(.*\); remove that run's"):
        finished_runs([done], tmp_path)
    summary.write_text("[0.5]")
    with pytest.raises(ReproduceError, match=r"not a run summary \(a JSON list\)"):
        read_summary(summary)
    summary.write_text('{"final_top1": 0.5}')
    metrics = tmp_path / "runs" / unfinished.key / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"epoch": 1, "val_top1": 0.25}\n{"epoch": 2, "val_')
    summaries, partial = finished_runs([done, unfinished], tmp_path)
    assert summaries == {done.key: {"final_top1": 0.5}}
    assert partial == {unfinished.key: {"epochs": 1, "last_val_top1": 0.25}}


def test_a_report_of_runs_of_another_budget_names_that_budget(tmp_path):
    """`reproduce --report-only --out results/reproduce-imagenette-nvidia-h200` (the default --budget quick) looked
    for 56 px runs beside 18 finished 224 px ones and said "train first"; it now names the budget they were run with."""
    full = plan_runs(["table7"], BUDGETS["full"])[0]
    summary = tmp_path / "runs" / full.key / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"final_top1": 0.5}')
    with pytest.raises(FileNotFoundError, match=r"no finished run to report; it holds finished runs of --budget full"):
        reproduce(ReproduceConfig(out=str(tmp_path), budget="quick", report_only=True), log=lambda m: None)


def test_a_report_of_other_experiments_runs_does_not_advise_the_budget_given(tmp_path):
    """A quick folder that trained table5 alone, reported for table4 at --budget quick: the hint said "it holds
    finished runs of --budget quick: give that budget", the budget given; and of a full folder of table5 alone,
    "give --budget full", where table4 has no finished run either. It says to train first."""
    shallow = next(r for r in plan_runs(["table5"], BUDGETS["quick"]) if "shallow" in r.model)
    summary = tmp_path / "runs" / shallow.key / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"final_top1": 0.5}')
    config = ReproduceConfig(out=str(tmp_path), budget="quick", experiments=("table4",), report_only=True)
    with pytest.raises(FileNotFoundError, match=r"no finished run to report \(train first, without --report-only\)$"):
        reproduce(config, log=lambda m: None)
    # nor a budget whose finished runs are of other experiments: table5's at full, asked for table4 at quick
    full = next(r for r in plan_runs(["table5"], BUDGETS["full"]) if "shallow" in r.model)
    shutil.move(summary.parent, tmp_path / "runs" / full.key)
    with pytest.raises(FileNotFoundError, match=r"no finished run to report \(train first, without --report-only\)$"):
        reproduce(config, log=lambda m: None)
    with pytest.raises(FileNotFoundError, match=r"it holds finished runs of --budget full: give that budget$"):
        reproduce(replace(config, experiments=("table5",)), log=lambda m: None)


def test_the_readme_gives_each_budgets_batch_and_warm_up_over_the_recipes():
    """The README says the budgets' settings override the recipe's and listed quick's as "no warm-up" alone: its
    batch 32 (the recipes' 256 and 64, the rate scaled with it) went unsaid. Each budget's sentence gives its batch,
    and a budget without warm-up says so."""
    text = " ".join((REPO / "README.md").read_text().split())
    for name, budget in BUDGETS.items():
        said = re.search(rf"`--budget {name}` trains ([^;.]*)", text)
        assert said and f"at batch {budget.batch_size} " in said[1] + " ", (name, said and said[1])
        assert ("no warm-up" in said[1]) == (budget.train.get("warmup_epochs") == 0), (name, said[1])


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="experiments='table9'"):
        reproduce(ReproduceConfig(experiments=("table9",)))
    with pytest.raises(ValueError, match="experiments=''"):
        reproduce(ReproduceConfig(experiments=()))
    with pytest.raises(ValueError, match="budget='huge'"):
        reproduce(ReproduceConfig(budget="huge"))
    for seeds in (0, True, 1.5):
        with pytest.raises(ValueError, match=f"seeds={seeds!r}"):
            reproduce(ReproduceConfig(seeds=seeds))
    blocker = tmp_path / "file"
    blocker.write_text("")
    data = str(data_path("imagenette"))
    with pytest.raises(ReproduceError, match="cannot create that folder"):
        reproduce(ReproduceConfig(data=data, out=str(blocker / "rep"), budget="quick"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("lr: 0.1\nlabel_smothing: 0.1\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown option\(s\) label_smothing"):
        reproduce(ReproduceConfig(data=data, out=str(tmp_path / "rep"), budget="quick", recipe=str(typo)))
    assert not (tmp_path / "rep").exists()  # refused before any folder was made


def test_train_and_val_of_other_classes_are_one_error_before_any_run(tmp_path, monkeypatch):
    """Different class folders in train/ and val/ stop the command once, before training (each run logged the same
    DataError, 18 times for a full run)."""
    import mobilenets.reproduce as rp
    from mobilenets.data import DataError

    for split, cls in (("train", "gamma"), ("val", "delta")):
        (tmp_path / "d" / split / cls).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "d" / split / cls / "a.jpg")
    monkeypatch.setattr(rp, "train_all", lambda *a, **k: pytest.fail("a run was started"))
    with pytest.raises(DataError, match=r"train and val classes differ \(only in train: \['gamma'\]"):
        reproduce(ReproduceConfig(data=str(tmp_path / "d"), out=str(tmp_path / "o"), budget="quick"))


@pytest.mark.parametrize(("classes", "per_class", "message"), [
    (("gamma", "delta"), 3, r"d/train: 6 images, fewer than one batch of 32$"),
    (("gamma",), 40, r"d/train: one class \(gamma\); a classifier needs at least two$"),
])  # fmt: skip
def test_a_dataset_no_run_can_train_on_is_one_error_before_any_run(tmp_path, monkeypatch, classes, per_class, message):
    """Fewer images than the budget's batch, or one class: each run failed once before the command's error."""
    import mobilenets.reproduce as rp
    from mobilenets.data import DataError

    image_folders(tmp_path / "d", classes, per_class)
    monkeypatch.setattr(rp, "train_all", lambda *a, **k: pytest.fail("a run was started"))
    with pytest.raises(DataError, match=message):
        reproduce(ReproduceConfig(data=str(tmp_path / "d"), out=str(tmp_path / "o"), budget="quick"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the options refused are GPU-only: they run on a GPU")
@pytest.mark.parametrize(("option", "message"), [
    ("step_graph: true", r"step_graph"),
    ("compile: true\ncompile_cudagraphs: true", r"compile_cudagraphs is not allowed on cpu"),
    ("amp: fp16", r"amp='fp16' is not allowed on CPU"),
    ("depthwise: triton", r"depthwise='triton' is not allowed on cpu"),
])  # fmt: skip
def test_a_recipe_this_machine_cannot_run_is_one_error_before_any_run(tmp_path, monkeypatch, option, message):
    """A GPU-only recipe option on a CPU stops the command once, before any run (each run failed with it in turn)."""
    import mobilenets.reproduce as rp

    image_folders(tmp_path / "d", ("gamma", "delta"), 20)
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text(f"{option}\n")
    monkeypatch.setattr(rp, "train_all", lambda *a, **k: pytest.fail("a run was started"))
    with pytest.raises(ValueError, match=message):
        reproduce(ReproduceConfig(data=str(tmp_path / "d"), out=str(tmp_path / "o"), budget="quick",
                                  recipe=str(recipe)))  # fmt: skip
    assert not (tmp_path / "o").exists()  # refused before any folder was made


def test_missing_data_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere/imagenette: not found \(the default: \$MOBILENETS_DATA/"):
        reproduce(ReproduceConfig(out=str(tmp_path / "o"), budget="quick"))
    with pytest.raises(FileNotFoundError, match=r"^\S+/given: not found; give --data ROOT, a folder of train/"):
        reproduce(ReproduceConfig(data=str(tmp_path / "given"), out=str(tmp_path / "o"), budget="quick"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=r"flat: expected train/ and val/ class folders"):
        reproduce(ReproduceConfig(data=str(tmp_path / "flat"), out=str(tmp_path / "o"), budget="quick"))


def test_a_gpu_budget_without_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="budget='full' trains on CUDA, which is not available here"):
        reproduce(ReproduceConfig(data=str(data_path("imagenette")), budget="full"))


@pytest.mark.slow
def test_quick_budget_end_to_end(tmp_path):
    data = data_path("imagenette")
    out = tmp_path / "rep"
    results = reproduce(ReproduceConfig(data=str(data), out=str(out), budget="quick"), log=lambda m: None)
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiments"].keys() == {"table4", "table5", "table6", "table7", "grid"}
    for exp in saved["experiments"].values():
        # judged, or inconclusive with the reason; never incomplete after a full run
        assert isinstance(exp["verdict"]["holds"], bool) or "inconclusive" in exp["verdict"], exp["verdict"]
        for row in exp["rows"]:
            assert 0 <= row["top1"]["mean"] <= 100 and row["macs_M"] > 0
            assert row["val_images"] == 80  # 8 per class, from each run's summary
    report = (out / "report.md").read_text()
    assert "Smoke run" in report and "## table4" in report and "Verdict:" in report and "95% intervals" in report
    for png in ("grid_macs.png", "grid_params.png"):
        assert (out / png).stat().st_size > 10_000 and f"]({png})" in report
    runs_before = {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/summary.json")}
    said: list[str] = []
    reproduce(
        ReproduceConfig(data=str(data), out=str(out), budget="quick", experiments=("table4",)), log=said.append
    )  # resume: nothing retrained
    assert {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/summary.json")} == runs_before
    # the report now holds table4 alone, and says how to get the others back from their (kept) runs
    assert json.loads((out / "results.json").read_text())["experiments"].keys() == {"table4"}
    assert said[-1].startswith("note: the report now covers table4 only; the earlier one also had grid, table5, "
                               "table6, table7: `mobilenets reproduce --report-only --out ")  # fmt: skip
    assert results["budget"]["smoke"] is True
    # other settings: an error before anything trains, even a run that is new, and nothing reported either
    new_run = next((out / "runs").glob("mobilenet_v1_100-r32-*"))
    shutil.rmtree(new_run)
    for report_only in (False, True):
        with pytest.raises(ReproduceError, match=r"epochs=1 there, 2 here.*and \d+ more run folder"):
            reproduce(
                ReproduceConfig(data=str(data), out=str(out), budget="quick", experiments=("table7",), epochs=2,
                                report_only=report_only),
                log=lambda m: None,
            )  # fmt: skip
    assert not new_run.exists()
    runs_before.pop(new_run.name)
    assert {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/summary.json")} == runs_before

    # --report-only: no training; a run without summary.json is unfinished and its experiments are not judged;
    # the recipe overrides shown are those the runs recorded (here one that does not change the experiment)
    shallow = next((out / "runs").glob("mobilenet_v1_shallow-*"))
    (shallow / "summary.json").unlink()
    for cfg_file in (out / "runs").glob("*/config.yaml"):
        cfg_file.write_text(cfg_file.read_text().replace("workers: 2", "workers: 1"))
    part = reproduce(
        ReproduceConfig(data="/nonexistent", out=str(out), budget="quick", experiments=("table4", "table5"),
                        report_only=True),
        log=lambda m: None,
    )  # fmt: skip
    assert not (shallow / "summary.json").exists()  # nothing was retrained
    assert part["experiments"]["table5"]["verdict"]["holds"] is None
    assert verdict_words(part["experiments"]["table5"]["verdict"]) == "not judged (incomplete)"
    assert part["budget"]["train"]["workers"] == 1 and results["budget"]["train"]["workers"] == 2
    assert part["experiments"]["table4"]["verdict"]["holds"] == results["experiments"]["table4"]["verdict"]["holds"]
    assert list(part["unfinished_runs"]) == [shallow.name] and part["unfinished_runs"][shallow.name]["epochs"] == 1
    report = (out / "report.md").read_text()
    assert "**Incomplete**" in report and "not finished" in report and "Verdict: not judged" in report
    with pytest.raises(FileNotFoundError, match="no finished run"):
        reproduce(ReproduceConfig(out=str(tmp_path / "empty"), budget="quick", report_only=True), log=lambda m: None)
    assert not (tmp_path / "empty").exists()  # nothing to report: no folder left behind either


@pytest.mark.slow
def test_parallel_jobs_match_one_process(tmp_path):
    """--jobs 2 trains in spawned processes; on CPU with the same seeds every run ends exactly as in one process."""
    data = data_path("imagenette")
    common = dict(data=str(data), budget="quick", experiments=("table5",), epochs=1)
    one = reproduce(ReproduceConfig(out=str(tmp_path / "one"), **common), log=lambda m: None)
    two = reproduce(ReproduceConfig(out=str(tmp_path / "two"), jobs=2, **common), log=lambda m: None)
    keys = ("final_top1", "best_top1", "final_top5", "epochs")
    assert len(one["runs"]) == 2 and one["runs"].keys() == two["runs"].keys()
    for k, run in one["runs"].items():
        assert [run[x] for x in keys] == [two["runs"][k][x] for x in keys], k
    with pytest.raises(ValueError, match="jobs=0"):
        reproduce(ReproduceConfig(jobs=0, **common))


def test_parallel_jobs_share_the_cores(monkeypatch):
    from mobilenets import cores
    from mobilenets.reproduce import share_cores

    monkeypatch.setattr(cores, "usable_cores", lambda: 16)
    full = BUDGETS["full"]
    assert share_cores(full, 1) is full
    four = share_cores(full, 4)
    assert four.train["threads"] == 4 and four.train["workers"] == 4 and four.train["device"] == "cuda"
    assert share_cores(full, 32).train["threads"] == 1  # never below one thread
    assert share_cores(BUDGETS["quick"], 4).train["threads"] == 2  # a budget's own thread count is kept


def test_parallel_jobs_share_the_cores_this_process_may_run_on(monkeypatch, tmp_path):
    """share_cores divided os.cpu_count(), every core of the machine, where a container's cpuset, Slurm or taskset
    let the process run on a few (its CPU affinity, `cores.usable_cores`): on 4 of 64 cores `--jobs 2` gave each
    run 32 threads, 8 per core it may use, which each run's TrainConfig then refused (`cores.check_threads`: at
    most 4 per core) in the training processes. The share is now of the usable cores, and each run's config holds."""
    from mobilenets import cores
    from mobilenets.reproduce import CONFIGS, run_config, share_cores

    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    two = share_cores(BUDGETS["full"], 2)
    assert two.train["threads"] == 2 and two.train["workers"] == 2
    run = plan_runs(["table5"], two)[0]
    assert run_config(run, tmp_path, tmp_path / "out", two, CONFIGS / "modern.yaml").threads == 2


@pytest.mark.parametrize("jobs", [1, 4, 6, 30])
def test_runs_are_grouped_by_resolution_costliest_first(jobs):
    """Each task holds one resolution (its runs then share the decoded data in one process); tasks are split until
    there are enough for the processes and none of several runs costs more than a process's share; every run is in
    exactly one task."""
    budget = BUDGETS["full"]
    runs = plan_runs(["table4", "table5", "table6", "table7", "grid"], budget)
    tasks = group_runs(runs, jobs, budget)
    assert sorted(r.key for t in tasks for r in t) == sorted(r.key for r in runs)
    assert all(len({r.resolution for r in t}) == 1 for t in tasks)

    def cost(r):
        return run_cost(r, budget)

    totals = [sum(map(cost, t)) for t in tasks]
    assert totals == sorted(totals, reverse=True)
    assert all([cost(r) for r in t] == sorted(map(cost, t), reverse=True) for t in tasks)
    assert len(tasks) >= min(jobs, len(runs))
    assert all(len(t) == 1 or total <= sum(totals) / jobs for t, total in zip(tasks, totals, strict=True))
    if jobs == 1:
        assert len(tasks) == len({r.resolution for r in runs})  # one decode per resolution
    if jobs == 4:  # on a GPU a run's time follows its pixels, not its mult-adds: the six 224 px runs are split up
        assert max(len(t) for t in tasks if t[0].resolution == 224) <= 3
        assert ["mobilenet_v1_conv"] in [[r.model for r in t] for t in tasks]  # the first split off (most MACs)


def test_run_cost_is_seconds_on_a_gpu_and_mult_adds_elsewhere():
    full, quick = BUDGETS["full"], BUDGETS["quick"]
    conv, v1 = Run("mobilenet_v1_conv", 224, 0), Run("mobilenet_v1_100", 224, 0)
    assert run_cost(conv, full) == run_cost(v1, full)  # measured: 3.6 s and 3.7 s per epoch on the H200
    assert run_cost(Run("mobilenet_v1_100", 112, 0), full) < run_cost(v1, full)
    assert run_cost(conv, quick) > 8 * run_cost(v1, quick)  # CPU: mult-adds, 8.5x
    # on CPU Conv MobileNet, 8.5x the mult-adds, is the costliest task
    tasks = group_runs(plan_runs(["table4", "table7"], quick), 2, quick)
    assert [r.model for r in tasks[0]] == ["mobilenet_v1_conv"]


def test_the_gpu_cost_model_fits_the_h200_lease_runs():
    """run_cost against the wall times of the committed H200 runs it was fitted to (30 epochs, 4 processes sharing
    the GPU; the run resumed in a second process is left out): each within 20%, their sum within 5%."""
    from dataclasses import replace

    from .conftest import REPO

    runs_dir = REPO / "results" / "reproduce-imagenette-nvidia-h200-2026-11-26" / "runs"
    b30 = replace(BUDGETS["full"], epochs=30)
    pairs = []
    for summary_file in sorted(runs_dir.glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        if summary["resumed_from"]:
            continue
        model, res, seed = summary_file.parent.name.rsplit("-", 2)
        pairs.append((run_cost(Run(model, int(res[1:]), int(seed[1:])), b30), summary["wall_time_s"]))
    assert len(pairs) == 9
    assert all(abs(est / wall - 1) < 0.2 for est, wall in pairs), pairs
    assert abs(sum(e for e, _ in pairs) / sum(w for _, w in pairs) - 1) < 0.05


def test_the_schedule_estimate_is_the_busiest_process_of_the_pool(monkeypatch):
    """Tasks of 10, 8, 7, 3 and 3 s (plus decoding each) on 2 processes, handed out costliest first to whichever
    is free: 10 | 8, then 7 to the second (15), 3 to the first (13), 3 to the first again (16)."""
    import mobilenets.reproduce as rp

    tasks = [[Run("m", c, 0)] for c in (10, 8, 7, 3, 3)]
    monkeypatch.setattr(rp, "group_runs", lambda runs, jobs, budget: tasks)
    monkeypatch.setattr(rp, "run_cost", lambda run, budget: float(run.resolution))
    monkeypatch.setattr(rp, "GPU_DECODE_S", 0.0)
    assert rp.estimated_wall_s([], 2, BUDGETS["full"]) == 16.0
    assert rp.estimated_wall_s([], 2, BUDGETS["full"], factor=1.5) == 24.0
    assert rp.estimated_wall_s([], 1, BUDGETS["full"]) == 31.0
    monkeypatch.setattr(rp, "GPU_DECODE_S", 1.0)
    assert rp.estimated_wall_s([], 2, BUDGETS["full"]) == 19.0  # 10+1, 3+1, 3+1 on the first


def test_speed_factor_times_the_reference_s_uncompiled_ungraphed_step(tmp_path, monkeypatch):
    """H200_STEP_IMAGES_S was a step launched from Python, uncompiled: a recipe's compile or step graph is left out
    of the step `speed_factor` times (it would count their gain as the GPU's speed, and compile in the budget)."""
    import mobilenets.budget
    import mobilenets.reproduce as rp

    recipe = tmp_path / "fast.yaml"
    modern = (rp.CONFIGS / "modern.yaml").read_text().replace("compile: false", "compile: true")
    recipe.write_text(modern + "\ncompile_tuning: true\nstep_graph: true\ndepthwise: flipped\n")
    timed = []
    monkeypatch.setattr(mobilenets.budget, "step_rate", lambda cfg, num_classes: timed.append(cfg) or 8877.6)
    factor, rate = rp.speed_factor(tmp_path, tmp_path / "out", BUDGETS["full"], recipe)
    assert (factor, rate) == (pytest.approx(rp.H200_STEP_IMAGES_S / 8877.6), 8877.6)
    (cfg,) = timed
    assert (cfg.compile, cfg.compile_tuning, cfg.compile_cudagraphs, cfg.step_graph) == (False, False, False, False)
    assert (cfg.depthwise, cfg.resolution, cfg.optimizer) == ("flipped", 160, "nesterov")  # the recipe's otherwise


def test_time_budget_plans_from_the_measured_speed_and_says_how(tmp_path, monkeypatch):
    """The estimate path with the step timing stubbed (it needs a GPU): the epochs are fit_epochs' for the seconds
    left after timing at that factor; a budget too short for one epoch is an error naming the estimate."""
    from dataclasses import replace

    import mobilenets.reproduce as rp

    full, logged = BUDGETS["full"], []
    runs = plan_runs(list(rp.EXPERIMENTS), full)
    monkeypatch.setattr(rp, "speed_factor", lambda *a: (1.5, 11_837.0))
    cfg = ReproduceConfig(budget="full", time_budget=480, jobs=4)
    budget, record = rp.fit_time_budget(cfg, runs, tmp_path, tmp_path / "out", full, rp.CONFIGS / "modern.yaml",
                                        logged.append)  # fmt: skip
    assert budget.epochs == record["epochs"] == rp.fit_epochs(runs, 4, full, 480, 1.5) > 0
    assert record["speed_factor"] == 1.5 and record["step_images_per_s"] == 11_837.0
    assert record["estimated_s"] == rp.estimated_wall_s(runs, 4, replace(full, epochs=budget.epochs), 1.5) <= 480
    assert rp.estimated_wall_s(runs, 4, replace(full, epochs=budget.epochs + 1), 1.5) > 480
    assert f"{budget.epochs} epoch(s) per run" in logged[-1] and "1.50x the H200's time" in logged[-1]
    lines = rp._time_budget_lines(record)
    assert f"{budget.epochs} epoch(s) per run, the most estimated to fit" in lines[0] and "11,837 img/s" in lines[0]
    with pytest.raises(ReproduceError, match=r"time_budget=30 is too short: one epoch per run takes an estimated"):
        rp.fit_time_budget(replace(cfg, time_budget=30), runs, tmp_path, tmp_path / "o2", full,
                           rp.CONFIGS / "modern.yaml", logged.append)  # fmt: skip
    with pytest.raises(ValueError, match=r"time_budget=True"):
        reproduce(ReproduceConfig(time_budget=True))


def test_a_failed_run_does_not_stop_its_group(monkeypatch):
    """train_group trains every run of its group and raises the first failure only after the last of them."""
    import mobilenets.reproduce as rp

    runs = plan_runs(["table7"], BUDGETS["quick"])[:3]
    trained = []

    def fake_train_run(run, *args):  # stands in for a whole training run; the failure is what is under test
        trained.append(run.key)
        if run is runs[0]:
            raise RuntimeError("CUDA out of memory")
        return {"key": run.key}

    monkeypatch.setattr(rp, "train_run", fake_train_run)
    logged = []
    with pytest.raises(RuntimeError, match="out of memory"):
        rp.train_group(runs, None, None, BUDGETS["quick"], None, logged.append)
    assert trained == [r.key for r in runs] and "failed (RuntimeError" in logged[0]
    assert rp.train_group(runs[1:], None, None, BUDGETS["quick"], None, logged.append) == [
        {"key": r.key} for r in runs[1:]
    ]


def test_a_run_folder_of_another_experiment_is_neither_reused_nor_resumed(tmp_path):
    import yaml

    from mobilenets.reproduce import experiment_differences
    from mobilenets.train_config import resolve

    def cfg(**kw):
        return resolve(None, **{"data": str(tmp_path), "out": str(tmp_path / "run"), "epochs": 30, **kw})

    folder = tmp_path / "run"
    assert experiment_differences(folder, cfg()) == []  # no folder yet: nothing to compare
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg(workers=8).to_dict()))
    # how a run executes is not what it trains
    assert experiment_differences(folder, cfg(workers=2, cudnn_benchmark=False, depthwise="triton")) == []
    assert experiment_differences(folder, cfg(epochs=20)) == ["epochs=30 there, 20 here"]
    assert experiment_differences(folder, cfg(weight_decay=1e-4, seed=3))[1] == "seed=0 there, 3 here"
    (folder / "config.yaml").write_text("epochs: [30\n")
    with pytest.raises(ReproduceError, match=r"config.yaml: unreadable"):
        experiment_differences(folder, cfg())


def test_a_quick_run_saved_before_the_subsample_rule_is_another_experiment(tmp_path):
    """The quick budget's runs take 16 train and 8 val images per class. Saved before `subsample` was recorded, they
    took each class's first files in path order (in Imagenette, ImageNet-val-origin ones only), so a later
    invocation, which picks them by hash, is refused reuse or resumption, naming the rule; a run saved since agrees."""
    import yaml

    from mobilenets.reproduce import check_same_experiment, run_config

    run = plan_runs(["table4"], BUDGETS["quick"])[0]
    recipe = REPO / "configs" / "modern.yaml"
    saved = run_config(run, tmp_path, tmp_path / "out", BUDGETS["quick"], recipe).to_dict()
    folder = tmp_path / "out" / "runs" / run.key
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    check_same_experiment([run], tmp_path, tmp_path / "out", BUDGETS["quick"], recipe)  # saved since: the same
    del saved["subsample"]
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ReproduceError, match=r"holds a run of another experiment \(subsample='first' there, 'hash' "
                                             r"here\): give another --out, or remove those run folders"):  # fmt: skip
        check_same_experiment([run], tmp_path, tmp_path / "out", BUDGETS["quick"], recipe)
    # a report trains nothing: it reports such runs as they trained (reproduce has no option naming the old rule)
    check_same_experiment([run], tmp_path, tmp_path / "out", BUDGETS["quick"], recipe, same_data=False)


def test_runs_on_another_data_folder_are_not_reused_unless_it_moved(tmp_path):
    """Finished runs on dataset A are no result for dataset B: a second invocation with another --data stops before
    training. A folder that no longer exists was moved (same experiment), and a report-only call reports the runs
    wherever they trained."""
    import yaml

    from mobilenets.reproduce import check_same_experiment, run_config

    budget, recipe = BUDGETS["quick"], Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    out = tmp_path / "out"
    runs = plan_runs(["table7"], budget)
    for run in runs:
        folder = out / "runs" / run.key
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(run_config(run, first, out, budget, recipe).to_dict()))
    check_same_experiment(runs, first, out, budget, recipe)  # the same folder: reused
    with pytest.raises(ReproduceError, match=r"another experiment \(data='.*/a' there, '.*/b' here\)"):
        check_same_experiment(runs, second, out, budget, recipe)
    check_same_experiment(runs, second, out, budget, recipe, same_data=False)
    # a report of finished runs asks for their options; removing the runs is a way out only when training them
    with pytest.raises(ReproduceError, match=r"epochs=1 there, 3 here.*--out, or the options they trained with$"):
        check_same_experiment(runs, second, out, replace(budget, epochs=3), recipe, same_data=False)
    with pytest.raises(ReproduceError, match="remove those run folders to train them again"):
        check_same_experiment(runs, first, out, replace(budget, epochs=3), recipe)
    first.rmdir()  # moved away: its runs stand for the folder given now
    check_same_experiment(runs, second, out, budget, recipe)


def test_a_relative_data_folder_is_recorded_absolute(tmp_path, monkeypatch):
    """--data ds from two working directories names two datasets: the runs record where theirs was."""
    import yaml

    from mobilenets.reproduce import check_same_experiment, run_config

    budget, recipe = BUDGETS["quick"], Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    for where in ("a", "b"):
        (tmp_path / where / "ds").mkdir(parents=True)
    out = tmp_path / "out"
    runs = plan_runs(["table7"], budget)
    monkeypatch.chdir(tmp_path / "a")
    for run in runs:
        cfg = run_config(run, Path("ds"), out, budget, recipe)
        assert cfg.data == str(tmp_path / "a" / "ds")
        (out / "runs" / run.key).mkdir(parents=True)
        (out / "runs" / run.key / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    check_same_experiment(runs, Path("ds"), out, budget, recipe)
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ReproduceError, match=r"data='.*/a/ds' there, '.*/b/ds' here"):
        check_same_experiment(runs, Path("ds"), out, budget, recipe)


def test_time_budget_takes_the_most_epochs_the_scaled_estimate_allows():
    """Every run gets the same epochs: the most whose busiest-process estimate, times the GPU's speed factor, fits."""
    from dataclasses import replace

    from mobilenets.reproduce import EXPERIMENTS, estimated_wall_s, fit_epochs

    full = BUDGETS["full"]  # device "cuda": run_cost is GPU seconds, whatever this machine has
    runs = plan_runs(list(EXPERIMENTS), full)
    at20 = estimated_wall_s(runs, 4, replace(full, epochs=20))
    assert fit_epochs(runs, 4, full, at20, 1.0) == 20
    slower = fit_epochs(runs, 4, full, at20, 1.4)  # an H100's HBM is 1.4x slower than an H200's
    assert 0 < slower < 20
    assert estimated_wall_s(runs, 4, replace(full, epochs=slower), 1.4) <= at20
    assert estimated_wall_s(runs, 4, replace(full, epochs=slower + 1), 1.4) > at20
    assert fit_epochs(runs, 4, full, 10.0, 1.0) == 0  # not even one epoch after each run's start-up


def test_time_budget_needs_a_gpu_and_keeps_the_epochs_of_started_runs(tmp_path):
    import yaml

    from mobilenets.reproduce import CONFIGS, fit_time_budget
    from mobilenets.spec import SpecError

    data, out = tmp_path / "data", tmp_path / "out"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
    with pytest.raises(ReproduceError, match=r"^time_budget=60 needs a GPU budget \(--budget full\)"):
        reproduce(ReproduceConfig(data=str(data), out=str(out), budget="quick", time_budget=60))
    assert not out.exists()  # refused before --out (results/reproduce) was made
    with pytest.raises(SpecError, match=r"time_budget=-1"):
        reproduce(ReproduceConfig(data=str(data), out=str(out), time_budget=-1))
    full, logged = BUDGETS["full"], []
    runs = plan_runs(["table4"], full)
    report_only = ReproduceConfig(budget="full", time_budget=600, report_only=True)
    with pytest.raises(ReproduceError, match=r"no run has started .* give --epochs"):
        fit_time_budget(report_only, runs, data, out, full, CONFIGS / "modern.yaml", logged.append)
    (out / "runs" / runs[0].key).mkdir(parents=True)
    (out / "runs" / runs[0].key / "config.yaml").write_text(yaml.safe_dump({"epochs": 7, "workers": 8}))
    # a resumed or report-only invocation keeps the started runs' epochs: no re-plan (none could be timed here)
    for cfg in (report_only, ReproduceConfig(budget="full", time_budget=600, jobs=4)):
        budget, record = fit_time_budget(cfg, runs, data, out, full, CONFIGS / "modern.yaml", logged.append)
        assert budget.epochs == 7 and record == {"seconds": 600, "epochs": 7, "from": "runs already started"}
    assert "have 7 epoch(s); keeping them" in logged[-1]


def test_threads_override_reaches_every_run_and_is_validated(tmp_path, monkeypatch):
    """--threads replaces the budget's intra-op threads (quick fixes 2) in what each training run is given, also
    when the cores are shared between --jobs; 0 is one error naming it."""
    import mobilenets.reproduce as rep
    from mobilenets.spec import SpecError

    data = tmp_path / "data"
    image_folders(data, ("a", "b"), 16)  # the splits are checked before any run: 2 classes, one quick batch of 32
    given = []

    def fake_train_all(runs, data, out, budget, recipe, log, jobs):
        given.append(budget.train)
        raise KeyboardInterrupt  # stop before training: only what the runs were given is checked

    monkeypatch.setattr(rep, "train_all", fake_train_all)
    for jobs, threads, expected in ((1, 1, 1), (2, 3, 3), (1, None, 2)):
        with pytest.raises(KeyboardInterrupt):
            reproduce(ReproduceConfig(data=str(data), out=str(tmp_path / "o"), budget="quick", jobs=jobs,
                                      threads=threads), log=lambda m: None)  # fmt: skip
        assert given[-1]["threads"] == expected
    with pytest.raises(SpecError, match=r"threads=0 is not allowed"):
        reproduce(ReproduceConfig(data=str(data), out=str(tmp_path / "o"), threads=0))


def _results(**environment):
    """A minimal results dict for `render_report`: one finished run, no experiment."""
    budget = {"name": "full", "epochs": 21, "batch_size": 256, "resolutions": [224, 192, 160, 128], "seeds": [0],
              "train": {}, "smoke": False}  # fmt: skip
    return {"budget": budget, "data": "/data", "recipe": "configs/modern.yaml", "num_classes": 10, "experiments": {},
            "runs": {"mobilenet_v1_100-r224-s0": {"wall_time_s": 70.0}}, "unfinished_runs": {}, "wall_time_s": None,
            "environment": environment}  # fmt: skip


def test_the_report_names_the_code_commit_the_runs_recorded(tmp_path):
    from mobilenets.reproduce import render_report, run_commits

    for key, commit, dirty in (("a-r224-s0", "4fab0a07b358605d", False), ("b-r224-s0", "4fab0a07b358605d", False),
                               ("c-r224-s0", "9c1e2d3f4a5b6c7d", True), ("d-r224-s0", None, None)):  # fmt: skip
        (tmp_path / "runs" / key).mkdir(parents=True)
        env = {"git": {"commit": commit, "dirty": dirty}}
        (tmp_path / "runs" / key / "env.json").write_text(json.dumps(env))
    keys = ["a-r224-s0", "b-r224-s0", "c-r224-s0", "d-r224-s0", "e-r224-s0"]  # e: no env.json (older code)
    commits = run_commits(tmp_path, keys)
    assert commits == ["4fab0a07b358", "9c1e2d3f4a5b-dirty"]
    assert "code: mobilenets commit 4fab0a07b358, 9c1e2d3f4a5b-dirty" in render_report(_results(commits=commits), [])
    assert "code: mobilenets commit not recorded" in render_report(_results(), [])


def test_a_smoke_report_says_how_many_epochs_its_runs_had():
    """`--budget quick --epochs 2` wrote "a slice of the data and one short epoch" above "budget: quick: 2 epoch(s)"."""
    from mobilenets.reproduce import render_report

    results = _results()
    for epochs, said in ((1, "a slice of the data and one short epoch."), (2, "a slice of the data and 2 epochs.")):
        smoke = {**results, "budget": {**results["budget"], "name": "quick", "smoke": True, "epochs": epochs}}
        assert said in render_report(smoke, [])


def test_a_rise_within_noise_is_listed_and_the_rule_says_it_is_not_counted():
    from mobilenets.reproduce import RULES

    # the H200 report's Table 7: 192 -> 160 rose 0.9 points on 3,925 images (within noise); the rule allows that,
    # and the verdict must show it rather than read as "rises at no step"
    seq = _rows([("224", 81.94, 569), ("192", 79.90, 418), ("160", 80.79, 290), ("128", 77.53, 186)], 3925)
    v = verdict("table7", seq)
    assert v["holds"] is True and v["significant_rises_points"] == []
    assert v["rises_within_noise_points"] == [pytest.approx(0.89)]
    width = _rows([("1.0", 81.94, 569), ("0.75", 83.06, 325), ("0.5", 81.25, 149), ("0.25", 79.97, 41)], 3925)
    assert verdict("table6", width)["rises_within_noise_points"] == [pytest.approx(1.12)]
    for experiment in ("table6", "table7"):
        assert "rises beyond noise at no step" in RULES[experiment]


def test_the_report_says_its_counts_have_the_trained_classifier():
    """Our params beside the paper's differ by the classifier (3.2M vs 4.2M for 1.0 MobileNet-224 on 10 classes)."""
    from mobilenets.reproduce import render_report

    assert "with the 10-class classifier trained" in render_report(_results(), [])
    assert "with the 3-class classifier trained" in render_report({**_results(), "num_classes": 3}, [])


def test_report_only_reports_every_seed_the_runs_trained(tmp_path):
    """Runs trained with --seeds 2, reported without --seeds: both seeds, not seed 0 alone with a narrower interval."""
    budget, out = replace(BUDGETS["quick"], seeds=(0, 1)), tmp_path / "out"
    for run, top1 in zip(plan_runs(["table5"], budget), (0.5, 0.6, 0.4, 0.3), strict=True):
        _finished_run(out, run, budget, top1, tmp_path)
    results = reproduce(
        ReproduceConfig(out=str(out), budget="quick", experiments=("table5",), report_only=True), log=lambda m: None
    )
    assert results["budget"]["seeds"] == (0, 1) and len(results["runs"]) == 4
    assert [row["top1"]["n"] for row in results["experiments"]["table5"]["rows"]] == [2, 2]


def test_a_report_takes_threads_beyond_this_machines_cores(tmp_path, monkeypatch):
    """`--report-only --threads 64` (a training command's options, reused for its report) runs nothing here, so the
    limit of this machine's cores (4 per core) does not refuse it, as it refuses a run here; 0 is refused either
    way. Threads are a runtime field: the report is of the same runs, whatever threads they trained with."""
    from mobilenets import cores
    from mobilenets.spec import SpecError

    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    out = tmp_path / "out"
    for run, top1 in zip(plan_runs(["table5"], BUDGETS["quick"]), (0.5, 0.6), strict=True):
        _finished_run(out, run, BUDGETS["quick"], top1, tmp_path)
    results = reproduce(ReproduceConfig(out=str(out), budget="quick", experiments=("table5",), report_only=True,
                                        threads=64), log=lambda m: None)  # fmt: skip
    assert len(results["runs"]) == 2 and results["unfinished_runs"] == {}
    with pytest.raises(SpecError, match=r"threads=64 is not allowed: threads must be an integer from 1 to 8 "):
        reproduce(ReproduceConfig(data=str(tmp_path), out=str(tmp_path / "o"), budget="quick", threads=64))
    with pytest.raises(SpecError, match=r"threads=0 is not allowed: threads must be an integer >= 1"):
        reproduce(ReproduceConfig(out=str(out), budget="quick", report_only=True, threads=0))


def _finished_run(out: Path, run: Run, budget, top1: float, data: Path) -> None:
    """A run folder as training leaves it, for a report: its config.yaml and summary.json."""
    import yaml

    from mobilenets.reproduce import CONFIGS, run_config

    folder = out / "runs" / run.key
    folder.mkdir(parents=True)
    cfg = run_config(run, data, out, budget, CONFIGS / "modern.yaml")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    summary = {"final_top1": top1, "val_images": 80, "model": {"labels": list("abcd")}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_report_only_reports_each_model_with_the_seeds_it_was_planned_or_trained_with(tmp_path):
    """Table 5 trained with --seeds 2, then Table 4 with the budget's one seed: a report of both said Table 4's
    seed-1 runs were missing and left it not judged, though no invocation had planned them. Each model now has the
    seeds it was planned (plan.json) or trained with; a planned run that never started is still unfinished."""
    from mobilenets.reproduce import record_plan

    quick = BUDGETS["quick"]
    out, two = tmp_path / "out", replace(quick, seeds=(0, 1))
    out.mkdir()
    record_plan(plan_runs(["table5"], two), out)
    for run in plan_runs(["table5"], two):
        _finished_run(out, run, two, 0.5 + 0.1 * run.seed, tmp_path)
    record_plan(plan_runs(["table4"], quick), out)
    for run in plan_runs(["table4"], quick):
        _finished_run(out, run, quick, 0.7, tmp_path)
    _finished_run(out, Run("mobilenet_v1_100", 56, 1), two, 0.9, tmp_path)  # as table6 --seeds 2 would leave it

    def report():
        return reproduce(ReproduceConfig(out=str(out), budget="quick", experiments=("table4", "table5"),
                                         report_only=True), log=lambda m: None)  # fmt: skip

    results = report()
    assert results["unfinished_runs"] == {}
    seeds = {exp: [row["seeds"] for row in results["experiments"][exp]["rows"]] for exp in ("table4", "table5")}
    assert seeds == {"table4": [[0], [0, 1]], "table5": [[0, 1], [0, 1]]}
    assert results["experiments"]["table4"]["rows"][1]["top1"]["mean"] == pytest.approx(80.0)
    assert verdict_words(results["experiments"]["table4"]["verdict"]) != "not judged (incomplete)"
    text = (out / "report.md").read_text()
    assert "**Incomplete**" not in text and "| 70.00 (seeds 0, 1) |" not in text and "(seeds 0, 1) |" in text
    # a run planned and never started (an invocation killed before it) is reported, as unfinished
    record_plan([Run("mobilenet_v1_conv", 56, 1)], out)
    assert list(report()["unfinished_runs"]) == ["mobilenet_v1_conv-r56-s1"]
    # --seeds says which seeds to report, whatever was planned
    results = reproduce(ReproduceConfig(out=str(out), budget="quick", experiments=("table4",), report_only=True,
                                        seeds=1), log=lambda m: None)  # fmt: skip
    assert [row["seeds"] for row in results["experiments"]["table4"]["rows"]] == [[0], [0]]


def test_report_only_reports_the_epochs_the_runs_were_given(tmp_path):
    """Runs trained with --epochs 2: `reproduce --report-only --out DIR`, the command reproduce itself suggests,
    refused them as another experiment (epochs=2 there, 1 here). Without --epochs a report takes the runs' epochs,
    as it takes their seeds; --epochs given, or runs of several epochs, are still checked."""
    two, out = replace(BUDGETS["quick"], epochs=2), tmp_path / "out"
    for run in plan_runs(["table5"], two):
        _finished_run(out, run, two, 0.5, tmp_path)
    results = reproduce(
        ReproduceConfig(out=str(out), budget="quick", experiments=("table5",), report_only=True), log=lambda m: None
    )
    assert results["budget"]["epochs"] == 2 and len(results["runs"]) == 2
    with pytest.raises(ReproduceError, match="epochs=2 there, 3 here"):
        reproduce(ReproduceConfig(out=str(out), experiments=("table5",), report_only=True, epochs=3))
    three = replace(two, epochs=3)
    _finished_run(out, Run("mobilenet_v1_conv", 56, 0), three, 0.5, tmp_path)
    with pytest.raises(ReproduceError, match=r"runs/mobilenet_v1_\w+-r56-s0 holds a run of another experiment"):
        reproduce(ReproduceConfig(out=str(out), experiments=("table4", "table5"), report_only=True))


def test_the_note_on_dropped_experiments_gives_a_command_that_reports_them(tmp_path):
    """After a report of fewer experiments, reproduce suggests a report-only command for all of them; for runs of
    the full budget it left out --budget, and the command it gave found no run (the quick budget's resolutions)."""
    full, out = BUDGETS["full"], tmp_path / "out"
    for run in plan_runs(["table4", "table5"], full):
        _finished_run(out, run, full, 0.5, tmp_path)
    said: list[str] = []
    for experiments in (("table4", "table5"), ("table4",)):
        reproduce(ReproduceConfig(out=str(out), budget="full", experiments=experiments, report_only=True),
                  log=said.append)  # fmt: skip
    assert said[-1].endswith(f"`mobilenets reproduce --report-only --out {out} --budget full` reports every "
                             "experiment from the finished runs")  # fmt: skip
    results = reproduce(ReproduceConfig(out=str(out), budget="full", report_only=True), log=lambda m: None)
    assert results["runs"].keys() == {run.key for run in plan_runs(["table4", "table5"], full)}


def test_report_only_shows_the_threads_the_runs_were_given(tmp_path):
    """--jobs 4 gave each run cores / jobs threads (share_cores); the report of those runs shows them as training's
    report did (the H200 report's 'threads': 4 was missing from its --report-only rewrite)."""
    import yaml

    from mobilenets.reproduce import CONFIGS, recorded_settings, run_config

    budget, out = BUDGETS["full"], tmp_path / "out"
    shared = replace(budget, train={**budget.train, "threads": 4})
    for given, expected in ((shared, shared.train), (budget, budget.train)):  # threads left to PyTorch: not shown
        shutil.rmtree(out, ignore_errors=True)
        runs = plan_runs(["table4"], given)
        for run in runs:
            (out / "runs" / run.key).mkdir(parents=True)
            cfg = run_config(run, tmp_path, out, given, CONFIGS / "modern.yaml")
            (out / "runs" / run.key / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        assert recorded_settings(runs, out, budget)[0] == expected


def test_a_report_killed_while_plotting_keeps_the_earlier_plot(tmp_path):
    """The grid plots are written atomically: a report killed while it wrote one left a truncated (0-byte) PNG in
    place of the earlier plot. A process rewrites the plots in a loop and is SIGKILLed the moment the file changes."""
    from PIL import Image

    src = REPO / "results" / "reproduce-imagenette-nvidia-h200"
    png = tmp_path / "grid_macs.png"
    shutil.copy(src / "grid_macs.png", png)
    code = (f"import json, pathlib\nfrom mobilenets.reproduce import write_plots\n"
            f"results = json.loads(pathlib.Path({str(src / 'results.json')!r}).read_text())\n"
            f"for _ in range(20):\n    write_plots(results, pathlib.Path({str(tmp_path)!r}))\n")  # fmt: skip
    before = png.stat()
    proc = subprocess.Popen([sys.executable, "-c", code])
    while proc.poll() is None:
        now = png.stat()
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    Image.open(png).load()  # a whole PNG, the earlier one or a new one


def test_the_wall_time_covers_the_runs_trained_not_those_reused(tmp_path, monkeypatch):
    """A rerun that reused every finished run said "wall time: 1 s for 18 training runs": the runs an earlier
    invocation finished are counted apart, with their own wall times."""
    import yaml

    import mobilenets.reproduce as rp

    image_folders(tmp_path / "d", ("gamma", "delta"), 16)
    budget, out = BUDGETS["quick"], tmp_path / "out"
    earlier, fresh = plan_runs(["table5"], budget)
    folder = out / "runs" / earlier.key
    folder.mkdir(parents=True)
    cfg = rp.run_config(earlier, tmp_path / "d", out, budget, rp.CONFIGS / "modern.yaml")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    summary = {"final_top1": 0.5, "val_images": 32, "wall_time_s": 70.0, "model": {"labels": ["delta", "gamma"]}}
    (folder / "summary.json").write_text(json.dumps(summary))

    def fake_train_all(runs, *args):  # the earlier run is read back, the other one "trains"
        return {r.key: {**summary, "wall_time_s": 5.0} if r is fresh else read_summary(folder / "summary.json")
                for r in runs}  # fmt: skip

    monkeypatch.setattr(rp, "train_all", fake_train_all)
    results = reproduce(
        ReproduceConfig(data=str(tmp_path / "d"), out=str(out), budget="quick", experiments=("table5",)),
        log=lambda m: None,
    )
    assert results["reused_runs"] == [earlier.key]
    report = (out / "report.md").read_text()
    assert " s for 1 training runs (1 at once)" in report
    assert (
        "; 1 runs finished by an earlier invocation were reused, not retrained (their own wall times sum to 70 s"
        in report
    )


def test_a_cpu_run_names_the_cpu_it_trained_on(monkeypatch):
    """The quick budget's report said 'on x86_64' (platform.processor() on Linux): the CPU's model name instead."""
    import mobilenets.bench
    from mobilenets.reproduce import _environment

    monkeypatch.setattr(mobilenets.bench, "cpu_model", lambda: "Test CPU 9000")
    assert _environment(BUDGETS["quick"], 1)["hardware"] == "Test CPU 9000"


def test_a_report_of_cpu_runs_names_the_cpu_they_trained_on(tmp_path, monkeypatch):
    """The report-only rewrite of a quick run said "trained on Linux-6.18.44-...-x86_64-with-glibc2.36" (env.json
    had the kernel's platform string, not the CPU): runs now record the CPU's model name, and a report shows it."""
    from types import SimpleNamespace

    import mobilenets.bench
    from mobilenets.reproduce import _run_environment
    from mobilenets.trainer import environment

    monkeypatch.setattr(mobilenets.bench, "cpu_model", lambda: "Test CPU 9000")
    env = environment(SimpleNamespace(world_size=1, device=torch.device("cpu")))
    assert env["cpu"] == "Test CPU 9000"
    (tmp_path / "runs" / "a-r56-s0").mkdir(parents=True)
    (tmp_path / "runs" / "a-r56-s0" / "env.json").write_text(json.dumps(env))
    assert _run_environment(tmp_path, {"a-r56-s0": {}})["hardware"] == "Test CPU 9000"


def test_the_grid_report_says_which_paper_macs_are_tf_slims_and_not_the_papers():
    """The grid's "paper MACs" column copies TF-slim's table, which prints 317 for 0.75 MobileNet-224 where the paper
    (Table 6) and our count give 325: the report put 317 beside our 324.6 without a word."""
    from mobilenets.reproduce import render_report, tfslim_macs_differences

    differ = tfslim_macs_differences()
    assert [d.split(":")[0] for d in differ] == [f"0.75 MobileNet-{r}" for r in (224, 192, 160, 128)] + [
        "0.25 MobileNet-192"
    ]
    assert differ[0] == "0.75 MobileNet-224: 317 (ours 325)" and differ[-1] == "0.25 MobileNet-192: 34 (ours 30)"
    verdict = {"holds": True}
    results = _results()
    grid = {**results, "experiments": {"grid": {"rows": [], "verdict": verdict, "rule": "r"}}}
    table6 = {**results, "experiments": {"table6": {"rows": [], "verdict": verdict, "rule": "r"}}}
    assert "copies TF-slim's table, which prints other MACs" in render_report(grid, [])
    assert "0.75 MobileNet-224: 317 (ours 325)" in render_report(grid, [])
    assert "copies TF-slim's table" not in render_report(table6, [])
