"""`select`: equals brute force over random candidate tables, ties and impossible budgets as documented; accuracy."""

import json
import math
import os
import random
import re
from pathlib import Path

import pytest

from mobilenets import accuracy, lut
from mobilenets.cli import main
from mobilenets.complexity import count_complexity
from mobilenets.registry import grid_name
from mobilenets.select import Constraints, SearchSpace, choose, latency_source, select
from mobilenets.spec import ModelSpec


def random_table(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        params = rng.choice([0.5e6, 1.3e6, 2.6e6, 4.2e6])
        rows.append({
            "name": f"m{i}", "alpha": rng.choice([0.25, 0.5, 0.75, 1.0]), "resolution": rng.choice([128, 160, 224]),
            "top1": rng.choice([50.0, 60.0, 60.0, 65.5, 70.0]),  # repeated values: ties happen
            "latency_ms": rng.choice([1.0, 2.0, 2.0, 5.0, 10.0, 20.0]), "macs": rng.choice([50e6, 150e6, 300e6, 569e6]),
            "params": params, "weights_MB": params * 4 / 2**20, "weights_int8_MB": params / 2**20,
        })  # fmt: skip
    return rows


def random_constraints(rng: random.Random) -> Constraints:
    def maybe(values):
        return rng.choice([None, *values])

    return Constraints(
        latency_ms=maybe([1.5, 3.0, 8.0, 30.0]), fps=maybe([30.0, 100.0, 500.0]), max_mb=maybe([2.0, 6.0, 20.0]),
        size_dtype=rng.choice(["fp32", "int8"]), max_macs=maybe([100e6, 400e6]), max_params=maybe([1e6, 3e6]),
        min_top1=maybe([55.0, 66.0]),
    )  # fmt: skip


def feasible(c: dict, k: Constraints) -> bool:
    lat_bounds = [b for b in (k.latency_ms, 1000 / k.fps if k.fps else None) if b is not None]
    size = c["weights_int8_MB"] if k.size_dtype == "int8" else c["weights_MB"]
    return (
        all(c["latency_ms"] <= b for b in lat_bounds)
        and (k.max_mb is None or size <= k.max_mb)
        and (k.max_macs is None or c["macs"] <= k.max_macs)
        and (k.max_params is None or c["params"] <= k.max_params)
        and (k.min_top1 is None or c["top1"] >= k.min_top1)
    )


def better(a: dict, b: dict) -> bool:
    """The documented order, spelled out: more accurate; then faster; fewer MACs; fewer params; smaller alpha, res."""
    for field, sign in (("top1", -1), ("latency_ms", 1), ("macs", 1), ("params", 1), ("alpha", 1), ("resolution", 1)):
        if a[field] != b[field]:
            return sign * a[field] < sign * b[field]
    return False


def brute_force(table, k):
    ok = [c for c in table if feasible(c, k)]
    best = [c for c in ok if not any(better(d, c) for d in ok)]
    return ok, best


def test_choose_equals_brute_force_on_random_tables():
    rng = random.Random(1234)
    impossible = 0
    for _ in range(400):
        table, k = random_table(rng, rng.randint(1, 25)), random_constraints(rng)
        ok, best = brute_force(table, k)
        ranked = choose(table, k)
        assert sorted(c["name"] for c in ranked) == sorted(c["name"] for c in ok)
        if not ok:
            impossible += 1
            assert ranked == []
            continue
        assert ranked[0] in best  # several only when every field ties
        for a, b in zip(ranked, ranked[1:], strict=False):
            assert not better(b, a)
    assert 20 < impossible < 380  # both outcomes were exercised


def test_ties_break_on_latency_then_macs():
    base = {"alpha": 0.5, "resolution": 160, "top1": 60.0, "params": 1e6, "weights_MB": 4.0, "weights_int8_MB": 1.0}
    a = {**base, "name": "slow", "latency_ms": 5.0, "macs": 50e6}
    b = {**base, "name": "fast", "latency_ms": 4.0, "macs": 90e6}
    c = {**base, "name": "fast-fewer-macs", "latency_ms": 4.0, "macs": 80e6}
    assert [r["name"] for r in choose([a, b, c], Constraints())] == ["fast-fewer-macs", "fast", "slow"]


def fake_latency(alpha, res):
    return alpha * res / 10.0, "predicted"


def test_select_end_to_end_and_impossible_budget():
    sel = select(Constraints(latency_ms=10.0, max_mb=8.0), latency=fake_latency)
    assert sel.candidates == 16 * 9 and sel.chosen is not None
    c = sel.chosen
    assert c["latency_ms"] <= 10.0 and c["weights_MB"] <= 8.0 and c["fps"] == pytest.approx(1000 / c["latency_ms"])
    assert "--alpha" in sel.commands[0] and f"--resolution {c['resolution']}" in sel.commands[0]
    assert all(r["top1"] <= c["top1"] for r in sel.runners_up) and len(sel.runners_up) == 4  # top=5: 1 + 4
    alone = select(Constraints(latency_ms=10.0, max_mb=8.0), latency=fake_latency, top=1)
    assert alone.chosen == c and alone.runners_up == []  # --top 1: the chosen model only
    none = select(Constraints(latency_ms=0.5), latency=fake_latency)
    assert none.chosen is None and none.feasible == 0
    assert (none.fastest["alpha"], none.fastest["resolution"]) == (0.25, 96)
    assert none.fastest["latency_ms"] == pytest.approx(2.4)
    assert none.smallest["alpha"] == 0.25


@pytest.mark.parametrize(
    "kw", [dict(latency_ms=0), dict(fps=-3), dict(max_mb=float("nan")), dict(min_top1=120), dict(size_dtype="fp8")]
)
def test_bad_constraints_rejected(kw):
    with pytest.raises(ValueError):
        Constraints(**kw).validate()


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: Constraints(latency_ms=True), "latency_ms=True"),  # was a bound of 1 ms
        (lambda: Constraints(max_params=True), "max_params=True"),
        (lambda: SearchSpace(res_min=100.7), "res_min=100.7"),  # was searched from 100
        (lambda: SearchSpace(res_step=16.5), "res_step=16.5"),  # was searched by 16
        (lambda: SearchSpace(alpha_step=True), "alpha_step=True"),  # was a step of 1.0: alpha 0.25 alone
    ],
)
def test_bools_and_fractional_resolutions_are_not_silently_converted(make, words):
    with pytest.raises(ValueError, match=re.escape(f"{words} is not allowed")):
        make().validate()


@pytest.mark.parametrize("fraction", [0.7, 1.0, 1])
def test_min_top1_fraction_is_an_error_not_a_floor_under_one_percent(fraction):
    """top-1 is in percent in `select` (70 for 70%); train() summaries give fractions, so 0.7 is a likely slip."""
    with pytest.raises(ValueError, match=r"min_top1=.* is not allowed: top-1 is in percent here: 70 for 70%"):
        Constraints(min_top1=fraction).validate()
    assert Constraints(min_top1=0).validate().min_top1 == 0  # 0 (no floor) and real percentages stay valid
    assert Constraints(min_top1=70).validate().min_top1 == 70


def test_search_space():
    assert len(SearchSpace().candidates()) == 16 * 9
    assert SearchSpace(0.5, 0.5, 0.05, 128, 160, 32).candidates() == [(0.5, 128), (0.5, 160)]
    with pytest.raises(ValueError, match="empty"):
        SearchSpace(alpha_min=0.9, alpha_max=0.3).candidates()


def test_accuracy_table_and_interpolation():
    model = accuracy.table_model()
    assert model.predict(0.75, 160) == (65.3, "tfslim")
    top1, how = model.predict(0.6, 176)
    assert how == "interpolated" and model.predict(0.5, 160)[0] < top1 < model.predict(0.75, 192)[0]
    # on a table row the log-linear fit is within a point of the published values
    for (a, r), (_, _, published, _) in accuracy.paper.TFSLIM_IMAGENET.items():
        assert abs(model._row(a, r)[0] - published) < 1.0
    assert model.predict(0.25, 96)[1] == "extrapolated"
    assert accuracy.table_model("paper").predict(1.0, 224)[0] == 70.6


def test_paper_accuracy_source_names_the_tfslim_values_it_borrows():
    """The paper prints 8 of the 16 grid models' top-1 (Tables 6, 7, 9); the others are TF-slim's and say so."""
    model = accuracy.table_model("paper")
    assert model.predict(1.0, 224) == (70.6, "paper") and model.predict(0.5, 224) == (63.7, "paper")
    assert model.predict(1.0, 160) == (67.2, "paper") and model.predict(0.5, 160) == (60.2, "paper")
    assert model.predict(0.5, 128) == (56.3, "tfslim") and model.predict(0.75, 192) == (67.2, "tfslim")
    printed = [k for k in accuracy.paper.TFSLIM_IMAGENET if model.predict(*k)[1] == "paper"]
    assert len(printed) == 8 and model.predict(0.6, 176)[1] == "interpolated"


def test_read_summary_formats(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text(json.dumps({"spec": {"alpha": 0.5, "resolution": 128}, "best_top1": 0.81}))
    assert accuracy.read_summary(p) == (0.5, 128, 81.0)
    q = tmp_path / "s2.json"
    q.write_text(json.dumps({"config": {"spec": {"alpha": 0.25, "resolution": 96}}, "metrics": {"top1": 70.5}}))
    model = accuracy.from_summaries([p, q])
    assert model.predict(0.5, 128) == (81.0, "measured") and model.predict(0.4, 112)[1] == "interpolated"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spec": {"alpha": 0.5}}))
    with pytest.raises(ValueError, match="bad.json"):
        accuracy.read_summary(bad)


@pytest.mark.parametrize(
    "data,words",
    [({"spec": "0.5-160", "top1": 0.6}, "spec='0.5-160' is not allowed"), ({"config": "x", "top1": 0.6}, "lacks")],
)
def test_a_summary_whose_spec_is_not_an_object_is_one_clear_error(data, words, tmp_path):
    """A spec written as a string (or a config that is not an object) was an AttributeError traceback."""
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(words)):
        accuracy.read_summary(p)


def test_run_accuracy_is_the_final_epochs_averaged_over_runs_of_one_grid_model(tmp_path):
    """What a run's model/ holds is its final epoch (best_top1 is another folder's, and optimistic); seeds of one
    model average; a Shallow or Conv MobileNet run (a reproduce folder has them) is not a grid point."""

    def summary(name, **fields):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"model": {"alpha": 0.5, "resolution": 128, **fields.pop("spec", {})}, **fields}))
        return path

    seed0 = summary("s0", final_top1=0.70, best_top1=0.80)
    seed1 = summary("s1", final_top1=0.74, best_top1=0.75)
    shallow = summary("shallow", final_top1=0.99, spec={"variant": "shallow"})
    assert accuracy.read_summary(seed0) == (0.5, 128, pytest.approx(70.0))
    with pytest.raises(accuracy.NotOnGrid, match="shallow MobileNet"):
        accuracy.read_summary(shallow)
    said = []
    model = accuracy.from_summaries([seed0, seed1, shallow], say=said.append)
    assert model.points == {(0.5, 128): pytest.approx(72.0)}
    assert len(said) == 2 and "shallow.json" in said[0] and "left out" in said[0] and "too few" in said[1]
    with pytest.raises(ValueError, match="no accuracy file of a standard MobileNet among the 1 given"):
        accuracy.from_summaries([shallow])


def run(capsys, *argv):
    code = main(["select", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_select_size_budget_json_with_lut(capsys, tmp_path):
    # A ready latency table for this machine's torch/1-thread key: every layer 0.1 ms, overhead 0.5 ms, scale 2.
    space = ("--alpha-range", "0.25,0.5,0.25", "--res-range", "96,128,32", "--runtime", "torch")
    keys = {k for a in (0.25, 0.5) for r in (96, 128) for k in lut.layer_keys(ModelSpec(alpha=a, resolution=r))}
    table = {"overhead": 0.5, "scale": 2.0, "layers": dict.fromkeys(keys, 0.1)}
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): table}))
    code, out, _ = run(capsys, "--max-mb", "4", "--max-macs", "100M", "--json", "--lut-file", str(tmp_path / "l.json"),
                       *space)  # fmt: skip
    sel = json.loads(out)
    assert code == 0 and sel["chosen"]["weights_MB"] <= 4 and sel["chosen"]["macs"] <= 100e6
    assert (sel["chosen"]["alpha"], sel["chosen"]["resolution"]) == (0.25, 128) and sel["candidates"] == 4  # 0.5: 5 MB
    n_layers = 1 + 13 + 1  # stem, 13 depthwise separable blocks, head
    assert sel["chosen"]["latency_source"] == "predicted"
    assert sel["chosen"]["latency_ms"] == pytest.approx(0.5 + 2.0 * 0.1 * n_layers)


def test_cli_select_measured_latency_and_impossible(capsys, tmp_path):
    rows = [{"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1,
             "latency_ms_median": 1.0}]  # fmt: skip
    f = tmp_path / "bench.json"
    f.write_text(json.dumps({"rows": rows}))
    args = ("--bench", str(f), "--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16")
    code, out, _ = run(capsys, "--latency-ms", "2", *args)
    assert code == 0 and "mobilenet_v1_025_128" in out and "measured" in out and "mobilenets train" in out
    code, out, _ = run(capsys, "--latency-ms", "0.5", *args)
    assert code == 1 and "no model" in out and "1.00" in out


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--latency-ms", "0"], ["latency_ms=0.0"]),
        (["--fps", "-5"], ["fps=-5.0"]),
        (["--max-mb", "-1"], ["max_mb"]),
        (["--alpha-range", "1.0,0.5,0.05"], ["alpha_min=1.0 > alpha_max=0.5"]),
        (["--alpha-range", "0.25,3,0.25"], ["alpha_max=3 is not allowed: alpha must stay <= 2"]),
        (["--res-range", "16,224,16"], ["res_min=16 is not allowed: resolution must be >= 32"]),
        (["--res-range", "96,224"], ["MIN,MAX,STEP"]),
        (["--runtime", "tflite"], ["runtime='tflite'"]),
        (["--threads", "0"], ["threads=0"]),
        (["--min-top1", "101"], ["min_top1"]),
        (["--min-top1", "0.7"], ["min_top1=0.7", "top-1 is in percent here: 70 for 70%"]),
        (["--max-macs", "lots"], ["'lots'"]),
        (["--max-mb", "4", "--bench", "/nonexistent/bench.json"], ["bench results file '/nonexistent/bench.json'"]),
        (["--max-mb", "4", "--bench", "ROWS_WITHOUT_RUNTIME"], ["is not a bench results file", "runtime, threads"]),
    ],
)
def test_cli_select_bad_values_exit_2(argv, words, capsys, tmp_path):
    bare = tmp_path / "bare.json"  # latency alone was a KeyError traceback in select
    bare.write_text(json.dumps([{"model": "mobilenet_v1_050_160", "latency_ms_median": 1.0}]))
    code, _, err = run(capsys, *[str(bare) if a == "ROWS_WITHOUT_RUNTIME" else a for a in argv])
    assert code == 2 and all(w in err for w in words), err


def test_printed_commands_parse_with_the_real_cli(tmp_path):
    """The train/export commands `select` prints are valid for the train and export subcommands."""
    import shlex

    from mobilenets.cli import build_parser
    from mobilenets.select import commands_for

    parser, _ = build_parser()
    cmds = commands_for({"name": "mobilenet_v1_065_192", "alpha": 0.65, "resolution": 192})
    parsed = [parser.parse_args(shlex.split(c)[1:]) for c in cmds]
    assert parsed[0].command == "train" and parsed[0].alpha == 0.65 and parsed[0].resolution == 192
    assert all(p.command == "export" for p in parsed[1:])
    assert parsed[1].weights == f"{parsed[0].out}/model"  # train writes its final weights to RUN_DIR/model


def test_select_bench_newest_measurement_wins_and_superseded_rows_are_named(capsys, tmp_path):
    """Two bench files of the same (model, runtime, threads, batch): the re-run's numbers win, whatever the order the
    shell's glob gives the files in; the note counts the superseded rows."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1,
           "batch": 32}  # fmt: skip
    old = {**row, "latency_ms_median": 1.0, "timestamp": "2026-01-01T00:00:00Z"}
    new = {**row, "latency_ms_median": 3.0, "timestamp": "2026-02-01T00:00:00Z"}
    (tmp_path / "b-new.json").write_text(json.dumps({"rows": [new]}))
    (tmp_path / "b-old.json").write_text(json.dumps({"rows": [old]}))
    files = [str(tmp_path / "b-new.json"), str(tmp_path / "b-old.json")]  # the older file last: it used to win
    args = ("--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--json")
    code, out, err = run(capsys, "--latency-ms", "5", "--bench", *files, *args)
    assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 3.0
    assert "note: 1 bench row(s) superseded" in err
    # no timestamps: the file's mtime decides
    for name, ms, mtime in (("m-old.json", 1.0, 1_000_000), ("m-new.json", 3.0, 2_000_000)):
        (tmp_path / name).write_text(json.dumps({"rows": [{**row, "latency_ms_median": ms}]}))
        os.utime(tmp_path / name, (mtime, mtime))
    files = [str(tmp_path / "m-new.json"), str(tmp_path / "m-old.json")]
    code, out, _ = run(capsys, "--latency-ms", "5", "--bench", *files, *args)
    assert json.loads(out)["chosen"]["latency_ms"] == 3.0


def test_select_bench_newest_measurement_wins_across_throughput_batches(capsys, tmp_path):
    """The latency is batch 1's whatever --batch the bench ran: a re-run at another batch supersedes the first run
    too (with the batch in the key the older row outlasted it when its file came last)."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1}
    old = {**row, "batch": 1, "latency_ms_median": 9.0, "timestamp": "2026-01-01T00:00:00Z"}
    new = {**row, "batch": 32, "latency_ms_median": 3.0, "timestamp": "2026-02-01T00:00:00Z"}
    (tmp_path / "b-new.json").write_text(json.dumps({"rows": [new]}))
    (tmp_path / "b-old.json").write_text(json.dumps({"rows": [old]}))
    args = ("--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--latency-ms", "5", "--json")
    for files in (["b-new.json", "b-old.json"], ["b-old.json", "b-new.json"]):
        code, out, err = run(capsys, "--bench", *[str(tmp_path / f) for f in files], *args)
        assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 3.0, files
        assert "note: 1 bench row(s) superseded" in err


def test_superseded_rows_of_other_runtimes_and_threads_are_not_counted(capsys, tmp_path):
    """Re-runs of another runtime or thread count are none of this selection's business: no note about them."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1}
    old = {**row, "latency_ms_median": 9.0, "timestamp": "2026-01-01T00:00:00Z"}
    new = {**row, "latency_ms_median": 3.0, "timestamp": "2026-02-01T00:00:00Z"}
    (tmp_path / "old.json").write_text(json.dumps({"rows": [{**old, "threads": 2}, {**old, "runtime": "torch"}]}))
    (tmp_path / "new.json").write_text(json.dumps({"rows": [new, {**new, "threads": 2}, {**new, "runtime": "torch"}]}))
    args = ("--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--latency-ms", "5", "--json")
    code, out, err = run(capsys, "--bench", str(tmp_path / "old.json"), str(tmp_path / "new.json"), *args)
    assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 3.0 and "superseded" not in err, err


@pytest.mark.parametrize(
    "edit,words",
    [
        ({"latency_ms_median": None}, "latency_ms_median=None"),  # a traceback
        ({"latency_ms_median": "fast"}, "latency_ms_median='fast'"),  # Python's message, no file named
        ({"latency_ms_median": 0}, "latency_ms_median=0"),  # met every budget, scaled every prediction to 0
        ({"latency_ms_median": -1.0}, "latency_ms_median=-1.0"),
        ({"threads": None}, "threads=None"),
        ({"alpha": None}, "alpha=None"),
    ],
)
def test_a_hand_edited_bench_row_is_one_line_naming_file_row_and_value(edit, words, capsys, tmp_path):
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1,
           "latency_ms_median": 3.0}  # fmt: skip
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"rows": [row, {**row, **edit}]}))
    code, out, err = run(capsys, "--latency-ms", "5", "--bench", str(f), "--alpha-range", "0.25,0.25,0.05",
                         "--res-range", "128,128,16")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"bench results file {str(f)!r}, row 2: {words} is not allowed" in err


def test_a_nan_latency_in_a_bench_file_is_refused(capsys, tmp_path):
    """JSON's NaN (json.dumps writes it): the factor scaling the predictions became NaN, and no model met a budget."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 1,
           "latency_ms_median": math.nan}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    code, _, err = run(capsys, "--fps", "30", "--bench", str(tmp_path / "b.json"), "--alpha-range", "0.25,0.25,0.05",
                       "--res-range", "128,128,16")  # fmt: skip
    assert code == 2 and "row 1: latency_ms_median=nan is not allowed" in err


def test_select_on_a_runtime_without_latency_tables_works_from_bench_files(capsys, tmp_path):
    """ort-int8 has no lookup table; when the bench files measured every candidate none is needed."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort-int8", "threads": 1,
           "batch": 32, "latency_ms_median": 0.6}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    args = ("--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--json")
    code, out, _ = run(capsys, "--fps", "200", "--runtime", "ort-int8", "--bench", str(tmp_path / "b.json"), *args)
    assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 0.6


def test_select_on_an_int8_runtime_says_its_top1_is_the_fp32_weights(capsys, tmp_path):
    """The expected top-1 is TF-slim's fp32 figure; select on ort-int8 showed it as the INT8 model's. The chosen line
    and the table's top1_source now say it is the fp32 weights', and a note line (the JSON's top1_note) says why;
    fp32 runtimes are unchanged."""
    rows = [{"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": rt, "threads": 1,
             "batch": 32, "latency_ms_median": 0.6} for rt in ("ort-int8", "ort")]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    args = ("--fps", "200", "--bench", str(tmp_path / "b.json"), "--alpha-range", "0.25,0.25,0.05", "--res-range",
            "128,128,16")  # fmt: skip
    code, out, _ = run(capsys, *args, "--runtime", "ort-int8")
    assert code == 0 and "expected top-1 41.5% (tfslim, of fp32 weights), 0.60 ms" in out.splitlines()[0]
    assert out.count("tfslim, of fp32 weights") == 2  # the chosen line and its table row
    assert "note: top-1 is the fp32 weights' (ort-int8 runs them quantized to INT8" in out  # and why, in one line
    code, out, _ = run(capsys, *args, "--runtime", "ort-int8", "--max-mb", "0.01")  # nothing fits: still said
    assert code == 1 and "note: top-1 is the fp32 weights'" in out
    code, out, _ = run(capsys, *args, "--runtime", "ort-int8", "--json")
    got = json.loads(out)
    assert got["chosen"]["top1_source"] == "tfslim, of fp32 weights" and got["chosen"]["top1"] == 41.5
    assert got["top1_note"].startswith("note: top-1 is the fp32 weights' (ort-int8 runs them quantized to INT8")
    code, out, _ = run(capsys, *args, "--runtime", "ort", "--json")
    got = json.loads(out)
    assert got["chosen"]["top1_source"] == "tfslim" and got["top1_note"] == ""


def test_runs_of_different_tasks_are_refused_and_of_different_recipes_noted(tmp_path):
    """Top-1 of 10 classes and of 1000, or of two 10-class sets, fit no one line: an error naming both files."""

    def run(name, alpha, classes, epochs, top1=0.7, **extra):
        path = tmp_path / f"{name}.json"
        model = {"alpha": alpha, "resolution": 128, "num_classes": len(classes)}
        path.write_text(json.dumps({"model": model, "final_top1": top1, "epochs": epochs,
                                    "per_class_top1": dict.fromkeys(classes, top1), **extra}))  # fmt: skip
        return path

    ten = [f"n{i:08d}" for i in range(10)]
    a, b = run("a", 0.25, ten, 30), run("b", 0.5, ten, 30, top1=0.8)
    said = []
    model = accuracy.from_summaries([a, b], say=said.append)
    assert model.num_classes == 10 and model.predict(0.5, 128) == (pytest.approx(80.0), "measured")
    assert not any("epochs" in s for s in said)
    with pytest.raises(ValueError, match=rf"^accuracy files '{a}' \(10 classes\) and '{tmp_path / 'c.json'}' "
                                         r"\(1000\) measure different tasks: give runs on one dataset$"):  # fmt: skip
        accuracy.from_summaries([a, run("c", 0.5, [f"c{i}" for i in range(1000)], 30)])
    other = ten[:9] + ["n99999999"]
    with pytest.raises(ValueError, match=r"were validated on different classes \(not in both: n00000009, n99999999\)"):
        accuracy.from_summaries([a, b, run("d", 0.75, other, 30)])
    model = accuracy.from_summaries([a, b, run("e", 0.75, ten, 90)], say=said.append)
    assert said == [f"note: the runs of different models followed different recipes (differing in epochs): "
                    f"mobilenet_v1_025_128 ({a}, 30 epochs), mobilenet_v1_050_128 ({b}, 30 epochs), "
                    f"mobilenet_v1_075_128 ({tmp_path / 'e.json'}, 90 epochs); their top-1s mix recipes"]  # fmt: skip
    assert model.predict(0.75, 128) == (pytest.approx(70.0), "measured")


def test_a_run_naming_no_classes_hides_no_second_class_set_and_the_task_ignores_their_order(tmp_path):
    """Runs were checked against the first run only: a first summary without per_class_top1 (older code, a
    hand-written one) let runs of two 10-class sets through as one task, named (`top1_task`) after one of them. The
    classes are checked against the first run that names them. The task's digest is of the names, whatever order a
    summary lists them in."""

    def run(name, alpha, classes):
        path = tmp_path / f"{name}.json"
        extra = {"per_class_top1": dict.fromkeys(classes, 0.5)} if classes else {}
        path.write_text(json.dumps({"model": {"alpha": alpha, "resolution": 128, "num_classes": 10},
                                    "final_top1": 0.5, **extra}))  # fmt: skip
        return path

    ten = [f"n{i:08d}" for i in range(10)]
    bare, first, other = run("bare", 0.25, None), run("first", 0.5, ten), run("other", 0.75, ten[:9] + ["n99999999"])
    with pytest.raises(ValueError, match=rf"^accuracy files '{first}' and '{other}' were validated on different "):
        accuracy.from_summaries([bare, first, other])
    task = accuracy.from_summaries([bare, first, run("reversed", 0.75, ten[::-1])]).task
    assert task == accuracy.from_summaries([first]).task == accuracy.task_name(10, tuple(ten))
    assert task != accuracy.task_name(10, tuple(ten[:9] + ["n99999999"]))


def test_runs_of_one_model_give_other_models_no_top1_and_their_class_count(tmp_path):
    """Two 3-class fine-tunes of 0.25-96 say nothing of 0.75-192: no copied top-1; sizes are of 3-class models."""
    paths = []
    for i, top1 in enumerate((0.7, 0.7766)):
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps({"model": {"alpha": 0.25, "resolution": 96, "num_classes": 3},
                                         "final_top1": top1}))  # fmt: skip
    said = []
    model = accuracy.from_summaries(paths, say=said.append)
    assert model.predict(0.25, 96) == (pytest.approx(73.83), "measured")
    assert model.predict(0.75, 192) == (None, "unknown") and model.predict(0.25, 128) == (None, "unknown")
    assert model.num_classes == 3 and any("too few to extrapolate" in s for s in said)
    sel = select(Constraints(max_mb=1.0), accuracy=model, space=SearchSpace(0.25, 0.5, 0.25, 96, 128, 32))
    assert (sel.chosen["name"], sel.chosen["top1"]) == ("mobilenet_v1_025_96", pytest.approx(73.83))
    assert [r["name"] for r in sel.runners_up] == ["mobilenet_v1_025_128"]  # 0.5 at 3 classes: 3.1 MB
    d = sel.to_dict()
    assert d["runners_up"][0]["top1"] is None and "too few to extrapolate" in d["accuracy_note"]
    three = count_complexity(ModelSpec(alpha=0.25, resolution=96, num_classes=3))
    assert sel.chosen["params"] == three.params
    assert select(Constraints(max_mb=1.0)).accuracy_note == ""  # the published table covers the grid
    # without the measured model in the space: the most MACs among the unknowns
    sel = select(Constraints(max_mb=4.0), accuracy=model, space=SearchSpace(0.5, 0.5, 0.25, 96, 160, 32))
    assert sel.chosen["name"] == "mobilenet_v1_050_160" and math.isnan(sel.chosen["top1"])


def test_cli_notes_are_said_once_and_name_something(capsys, tmp_path):
    """The coverage note goes to stderr once (it was printed again on stdout), and a table run prints no bare
    'note: tfslim' line."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"model": {"alpha": 0.25, "resolution": 96, "num_classes": 3}, "final_top1": 0.7}))
    space = ("--alpha-range", "0.25,0.5,0.25", "--res-range", "96,128,32", "--max-mb", "1", "--runtime", "torch")
    table = {"overhead": 0.5, "scale": 1.0,
             "layers": {k: 0.1 for a in (0.25, 0.5) for r in (96, 128)
                        for k in lut.layer_keys(ModelSpec(alpha=a, resolution=r))}}  # fmt: skip
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): table}))
    code, out, err = run(capsys, *space, "--lut-file", str(tmp_path / "l.json"), "--accuracy", str(path))
    assert code == 0 and (out + err).count("too few to extrapolate") == 1
    code, out, err = run(capsys, *space, "--max-mb", "4", "--lut-file", str(tmp_path / "l.json"))
    notes = [line for line in out.splitlines() if line.startswith("note:")]  # but the INT8 export's way out
    assert code == 0 and "note: tfslim" not in out and [n for n in notes if "INT8 export fits" not in n] == []


@pytest.mark.parametrize("alpha,classes,runtime", [(0.25, 1000, "ort-int8"), (0.25, 42, "openvino-int8"),
                                                   (0.5, 10, "openvino-int8")])  # fmt: skip
def test_int8_size_estimate_is_the_runtime_s_real_int8_export_within_200_bytes(alpha, classes, runtime, tmp_path):
    """select's INT8 size is the file `mobilenets export --int8` writes, with the fp32 head the runtime's INT8 model
    keeps (OpenVINO's quantizes every conv): it was 1.1 kB low for 0.25-128 under openvino-int8 (the bench's own
    file), and 1.8 kB low against `export --int8 --int8-fp32-head 0`, as it assumed two fp32 convs."""
    pytest.importorskip("onnxruntime")
    import shlex

    import torch

    from mobilenets import weights
    from mobilenets.registry import create_model

    spec = ModelSpec(alpha=alpha, resolution=64, num_classes=classes)  # the input size changes no stored byte
    torch.manual_seed(0)
    weights.save(create_model(spec).eval(), tmp_path / "w")
    model = accuracy.AccuracyModel({(alpha, 64): 50.0}, "measured", num_classes=classes)
    sel = select(Constraints(), accuracy=model, space=SearchSpace(alpha, alpha, 0.05, 64, 64, 16), runtime=runtime)
    (line,) = [x for x in sel.commands if " --int8" in x]  # an INT8 runtime: the one export printed is INT8
    export = shlex.split(line)[1:]  # the printed INT8 export, on these weights
    export[export.index("export") + 1] = str(tmp_path / "w")
    export[export.index("--calib") : export.index("--calib") + 2] = ["--calib-synthetic", "--calib-count", "2"]
    export[export.index("--out") + 1] = str(tmp_path / "m.int8.onnx")
    assert main(export) == 0
    written = (tmp_path / "m.int8.onnx").stat().st_size
    assert sel.chosen["weights_int8_MB"] * 2**20 == pytest.approx(written, abs=200)


def test_impossible_budget_says_which_limit_each_candidate_fails_and_suggests_int8(capsys, tmp_path):
    sel = select(Constraints(fps=24, latency_ms=10, max_mb=1), latency=lambda a, r: (a * r / 2.0, "predicted"))
    assert sel.chosen is None
    # 0.25-96: 12 ms > 10 ms (the tighter of 1000/24 and 10); fp32 1.78 MiB > 1 MiB but its INT8 export fits
    # on ort (the default runtime), which runs fp32 weights: the INT8 runtime that sizes and times that file
    assert sel.fastest["fails"] == "latency 12.00 ms > 10.00 ms; fp32 weights 1.78 MiB > 1 MiB (int8 0.58 MiB fits: " \
        "--runtime ort-int8)"  # fmt: skip
    assert sel.smallest["fails"].startswith("latency 12.00 ms > 10.00 ms")
    int8 = select(Constraints(latency_ms=10, max_mb=1, size_dtype="int8"), latency=lambda a, r: (a * r / 2.0, "p"))
    assert int8.fastest["fails"] == "latency 12.00 ms > 10.00 ms"

    # the CLI table shows it (a ready latency table: nothing measured)
    keys = {k for a in (0.25, 0.5) for k in lut.layer_keys(ModelSpec(alpha=a, resolution=96))}
    table = {"overhead": 0.5, "scale": 1.0, "layers": dict.fromkeys(keys, 0.1)}
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): table}))
    code, out, _ = run(capsys, "--max-mb", "1", "--max-macs", "1M", "--alpha-range", "0.25,0.5,0.25", "--res-range",
                       "96,96,16", "--runtime", "torch", "--lut-file", str(tmp_path / "l.json"))  # fmt: skip
    assert code == 1 and "fp32 weights 1.78 MiB > 1.0 MiB (int8 0.58 MiB fits: --runtime ort-int8 or --runtime " \
        "openvino-int8)" in out  # torch runs no INT8 file: both INT8 runtimes  # fmt: skip
    assert "7.7M MACs > 1.0M" in out


def test_predictions_beside_measurements_are_scaled_to_them(capsys, tmp_path):
    """Measured 0.5-128 took 8 ms, the table predicts it 0.5 + 15 x 0.1 = 2 ms: a predicted 0.5-160 (more MACs, also
    2 ms in this flat table) must not be chosen under 5 ms as if it were faster than the measured smaller model."""
    keys = {k for a in (0.25, 0.5) for r in (128, 160) for k in lut.layer_keys(ModelSpec(alpha=a, resolution=r))}
    table = {"overhead": 0.5, "scale": 1.0, "layers": dict.fromkeys(keys, 0.1)}
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): table}))
    row = {"model": "mobilenet_v1_050_128", "alpha": 0.5, "resolution": 128, "runtime": "torch", "threads": 1,
           "latency_ms_median": 8.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    said = []
    fn = latency_source("torch", 1, [str(tmp_path / "b.json")], str(tmp_path / "l.json"), say=said.append)
    assert fn(0.5, 128) == (8.0, "measured")
    assert fn(0.5, 160) == (pytest.approx(8.0), "predicted x4.00")
    assert any("x4.00" in s and "1 model(s) measured" in s for s in said)
    sel = select(Constraints(latency_ms=5), space=SearchSpace(0.25, 0.5, 0.25, 128, 160, 32), latency=fn)
    assert sel.chosen is None and sel.fastest["latency_ms"] == pytest.approx(8.0)  # unscaled: 0.5-160 at 2 ms


def test_a_first_select_measures_every_candidate_s_missing_shapes_together(capsys, tmp_path, monkeypatch):
    """A calibrated table with no layers: the search over four models measures all their shapes in one go (one
    announcement, one progress count, each shape timed FILL_ROUNDS times), not one model's shapes after another's."""
    timed = []

    class FakeTimer:
        def __init__(self, runtime, threads):
            pass

        def __call__(self, key):
            timed.append(key)
            return 0.1

        def close(self):
            pass

    monkeypatch.setattr(lut, "KeyTimer", FakeTimer)
    table = {"overhead": 0.5, "scale": 1.0, "layers": {}}
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): table}))
    code, out, err = run(capsys, "--latency-ms", "100", "--alpha-range", "0.25,0.5,0.25", "--res-range", "96,128,32",
                         "--runtime", "torch", "--lut-file", str(tmp_path / "l.json"))  # fmt: skip
    keys = {k for a in (0.25, 0.5) for r in (96, 128) for k in lut.layer_keys(ModelSpec(alpha=a, resolution=r))}
    assert code == 0 and sorted(timed) == sorted(list(keys) * lut.FILL_ROUNDS)
    lines = err.splitlines()
    assert [s for s in lines if "measuring" in s] == [
        f"latency table: measuring {len(keys)} layer shape(s) on torch, 1 thread(s), {lut.FILL_ROUNDS} rounds "
        "(once per machine; saved for next time)"
    ]
    assert sum("timings done" in s for s in lines) == 1


def test_shallow_conv_and_peer_rows_do_not_stand_in_for_the_standard_model(capsys, tmp_path):
    """Shallow and Conv MobileNet and timm's peer are benched at alpha 1.0 and 224 too: their latency is not the
    1.0-224 candidate's (a faster Shallow row let 1.0-224 through a budget it misses)."""
    row = {"alpha": 1.0, "resolution": 224, "runtime": "ort", "threads": 1}
    rows = [{**row, "model": "mobilenet_v1_100", "latency_ms_median": 14.0},
            {**row, "model": "mobilenet_v1_shallow", "latency_ms_median": 7.0},
            {**row, "model": "mobilenet_v1_conv", "latency_ms_median": 90.0},
            {**row, "model": "timm:mobilenetv1_100", "latency_ms_median": 8.0}]  # fmt: skip
    for order in (rows, rows[::-1]):
        (tmp_path / "b.json").write_text(json.dumps({"rows": order}))
        args = ("--bench", str(tmp_path / "b.json"), "--alpha-range", "1,1,0.05", "--res-range", "224,224,16")
        code, out, _ = run(capsys, "--latency-ms", "9", "--json", *args)
        assert code == 1 and json.loads(out)["fastest"]["latency_ms"] == 14.0


def test_cli_a_runtime_the_table_cannot_predict_needs_bench_files(capsys, tmp_path):
    """compile has no lookup table: without --bench it is one line saying how to measure it; with a bench file of
    it, select uses the measured rows."""
    code, _, err = run(capsys, "--max-mb", "4", "--runtime", "compile")
    assert code == 2 and "runtime='compile' is not allowed without --bench" in err and err.count("\n") == 1
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "compile", "threads": 1,
           "latency_ms_median": 3.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    code, out, _ = run(capsys, "--latency-ms", "5", "--runtime", "compile", "--bench", str(tmp_path / "b.json"),
                       "--alpha-range", "0.25,0.25,0.25", "--res-range", "128,128,32", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["chosen"]["latency_source"] == "measured"
    code, _, err = run(capsys, "--latency-ms", "5", "--runtime", "compile", "--bench", str(tmp_path / "b.json"),
                       "--alpha-range", "0.25,0.25,0.25", "--res-range", "128,160,32")  # fmt: skip
    assert code == 2 and "runtime='compile' has no measurement of mobilenet_v1_025_160 in the bench files" in err


def test_bench_rows_of_another_machine_are_named_not_taken_silently(tmp_path):
    """`select` picks a model for this machine: rows that a bench file measured on other hardware (the committed
    results, say) are still used, but the user hears whose they are."""
    from mobilenets import bench

    row = {"model": "mobilenet_v1_050_128", "alpha": 0.5, "resolution": 128, "runtime": "torch", "threads": 1,
           "latency_ms_median": 8.0, "cpu": "Other Vendor Chip 9000", "cores": 64, "gpu": "none"}  # fmt: skip
    here = {**row, **{k: v for k, v in bench.environment().items() if k in ("cpu", "cores", "gpu")}}
    for rows, noted in (([row], True), ([here], False)):
        (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
        said = []
        fn = latency_source("torch", 1, [str(tmp_path / "b.json")], str(tmp_path / "l.json"), say=said.append)
        assert fn(0.5, 128) == (8.0, "measured")
        assert any("other-vendor-chip-9000-64c" in s and "not on this machine" in s for s in said) == noted, said


def test_bench_files_without_a_row_of_the_runtime_and_threads_asked_are_named_not_ignored_silently(tmp_path):
    """--bench with 2-thread rows and --threads 1 (the default): none of the file is used, and the user hears so and
    what the file holds, rather than reading predictions as if the file had been taken."""
    keys = set(lut.layer_keys(ModelSpec(alpha=0.5, resolution=128)))
    (tmp_path / "l.json").write_text(
        json.dumps({lut.env_key("torch", 1): {"overhead": 0.5, "scale": 1.0, "layers": dict.fromkeys(keys, 0.1)}})
    )
    row = {"model": "mobilenet_v1_050_128", "alpha": 0.5, "resolution": 128, "runtime": "torch", "threads": 2,
           "latency_ms_median": 8.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    for threads, noted in ((1, True), (2, False)):
        said = []
        fn = latency_source("torch", threads, [str(tmp_path / "b.json")], str(tmp_path / "l.json"), say=said.append)
        assert (
            any("hold no standard MobileNet row of torch, 1 thread(s)" in s and "torch x2" in s for s in said) == noted
        )
        if threads == 1:
            assert fn(0.5, 128) == (pytest.approx(2.0), "predicted")


def test_latencies_say_which_classifier_they_are_of_beside_a_10_class_model(capsys, tmp_path):
    """Runs of 10 classes: top-1, sizes, MACs and params are of the 10-class model; bench rows timed the 1000-class
    model, and every latency (the table's too, scaled to them) is then of 1000 classes and says so. Without bench
    files the table predicts the 10-class model itself, its own head timed (here 0.1 ms against 5 ms for 1000)."""
    summary = tmp_path / "s.json"
    summary.write_text(json.dumps({"model": {"alpha": 0.25, "resolution": 128, "num_classes": 10}, "final_top1": 0.8}))
    specs = [ModelSpec(alpha=0.25, resolution=r, num_classes=n) for r in (96, 128) for n in (10, 1000)]
    layers = {k: (5.0 if k.startswith("head:") and k.split(":")[2] == "1000" else 0.1)
              for s in specs for k in lut.layer_keys(s)}  # fmt: skip
    (tmp_path / "l.json").write_text(json.dumps({lut.env_key("torch", 1): {"overhead": 0.5, "scale": 1.0,
                                                                           "layers": layers}}))  # fmt: skip
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "torch", "threads": 1,
           "latency_ms_median": 4.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    space = ("--alpha-range", "0.25,0.25,0.25", "--res-range", "96,128,32", "--runtime", "torch", "--latency-ms", "9")
    args = (*space, "--lut-file", str(tmp_path / "l.json"), "--accuracy", str(summary))

    code, out, _ = run(capsys, *args, "--bench", str(tmp_path / "b.json"), "--json")
    chosen = json.loads(out)["chosen"]
    ten = count_complexity(ModelSpec(alpha=0.25, resolution=128, num_classes=10))
    assert code == 0 and (chosen["classes"], chosen["params"], chosen["macs"]) == (10, ten.params, ten.macs)
    assert (chosen["latency_ms"], chosen["latency_source"], chosen["latency_classes"]) == (4.0, "measured", 1000)
    code, out, _ = run(capsys, *args, "--bench", str(tmp_path / "b.json"))
    assert "10 classes): expected top-1 80.0%" in out and "4.00 ms (measured, 1000-class model, torch" in out
    assert "note: latency_ms and fps are of 1000-class models" in out and "of the 10-class model" in out

    code, out, _ = run(capsys, *args, "--json")
    chosen = json.loads(out)["chosen"]
    assert (chosen["latency_classes"], chosen["latency_source"]) == (10, "predicted")
    assert chosen["latency_ms"] == pytest.approx(0.5 + 0.1 * (1 + 13 + 1))  # the 10-class head's 0.1 ms
    code, out, _ = run(capsys, *args)
    assert "(predicted, torch" in out and "note: latency_ms" not in out
    # a row of a file given to bench (`file`: its own classes, here a 10-class export) is no candidate's latency, so
    # it does not put the latencies on 1000 classes either (README: "where --bench measured a standard MobileNet")
    given = {**row, "model": "m.onnx", "file": str(tmp_path / "m.onnx")}
    (tmp_path / "f.json").write_text(json.dumps({"rows": [given]}))
    code, out, err = run(capsys, *args, "--bench", str(tmp_path / "f.json"), "--json")
    chosen = json.loads(out)["chosen"]
    assert (chosen["latency_classes"], chosen["latency_source"]) == (10, "predicted") and "is a file or folder" in err


def test_select_s_runtime_help_says_which_runtimes_need_bench_files():
    """Only the lookup table's runtimes are predicted; the help said "runtime the latency refers to", and `select
    --runtime ort-int8` without --bench was the first a user learnt of it."""
    from mobilenets.cli import build_parser
    from mobilenets.lut import LUT_RUNTIMES
    from mobilenets.runtimes import RUNTIMES

    parser = build_parser()[0]
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and "select" in a.choices)
    (runtime,) = [a for a in sub.choices["select"]._actions if "--runtime" in a.option_strings]
    text = runtime.help
    assert "lookup table predicts " + ", ".join(LUT_RUNTIMES) + ";" in text
    need = text[text.index("; ", text.index("predicts")) + 2 :]
    assert need.startswith(", ".join(r for r in RUNTIMES if r not in LUT_RUNTIMES) + " need --bench"), text


def test_a_size_budget_on_a_runtime_without_a_table_shows_unmeasured_latencies_as_unknown(capsys, tmp_path):
    """ort-int8 has no lookup table: a size budget (no latency bound) chose a model the bench file did not measure
    and stopped with 'has no measurement'; the latency is only shown there, so it is shown as unknown."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort-int8", "threads": 1,
           "latency_ms_median": 1.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    args = ("--bench", str(tmp_path / "b.json"), "--runtime", "ort-int8", "--alpha-range", "0.25,0.5,0.25",
            "--res-range", "128,160,32", "--max-mb", "1", "--size-dtype", "int8")  # fmt: skip
    code, out, _ = run(capsys, *args, "--json")
    sel = json.loads(out)
    assert code == 0 and sel["chosen"]["name"] == "mobilenet_v1_025_160" and sel["chosen"]["latency_ms"] is None
    assert sel["runners_up"][0]["latency_ms"] == 1.0 and sel["runners_up"][0]["latency_source"] == "measured"
    code, out, _ = run(capsys, *args)
    assert code == 0 and "latency unknown on ort-int8, 1 thread(s) (no bench row)" in out
    code, _, err = run(capsys, *args, "--latency-ms", "5")  # a latency bound needs every candidate's latency
    assert code == 2 and "has no measurement of mobilenet_v1_025_160" in err


@pytest.mark.parametrize("bench_file", [False, True])
def test_cli_the_bench_command_a_missing_runtime_prints_measures_what_select_needs(capsys, tmp_path, bench_file):
    """ort-int8 has no lookup table, so select names the `mobilenets bench` command to run first. It printed
    `--runtime ort-int8 --out FILE.json` (the 16-model grid at 1 thread: none of a 0.35-0.45 search, nor a --threads 2
    one) and `--models ...` (a placeholder): the engineer ran it, and select failed again. The command printed must
    parse as `bench`, at select's runtime and threads, and cover every model select lacks."""
    from mobilenets.cli import build_parser

    args = ("--fps", "24", "--runtime", "ort-int8", "--threads", "2", "--alpha-range", "0.35,0.45,0.05",
            "--res-range", "160,224,32")  # fmt: skip
    if bench_file:  # one candidate measured: the others are missing
        row = {"model": "mobilenet_v1_040", "alpha": 0.4, "resolution": 224, "runtime": "ort-int8", "threads": 2,
               "latency_ms_median": 1.2}  # fmt: skip
        (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
        args += ("--bench", str(tmp_path / "b.json"))
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    command = re.search(r"`mobilenets (bench [^`]*)`", err).group(1).split()
    parsed = build_parser()[0].parse_args(command)
    assert parsed.runtimes == ["ort-int8"] and parsed.threads == [2]
    covered = {(a, r) for a in parsed.alpha for r in parsed.resolution}
    wanted = {(a, r) for a in (0.35, 0.4, 0.45) for r in (160, 192, 224)} - ({(0.4, 224)} if bench_file else set())
    assert wanted <= covered and (0.3, 160) not in covered


def test_cli_an_unknown_top1_shows_as_missing_in_the_table_not_nan(capsys, tmp_path):
    """A model that one's own runs cannot give a top-1 for keeps NaN in its row (rows stay numeric for sorting) and
    null in --json; the table printed 'nan' under top1 beside 'unknown', where every other missing value is '-'."""
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"model": {"alpha": 0.25, "resolution": 128, "num_classes": 10}, "final_top1": 0.5}))
    rows = [{"model": f"mobilenet_v1_025_{r}", "alpha": 0.25, "resolution": r, "runtime": "ort", "threads": 1,
             "latency_ms_median": 1.0} for r in (128, 160)]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    code, out, _ = run(capsys, "--fps", "24", "--bench", str(tmp_path / "b.json"), "--accuracy", str(summary),
                       "--alpha-range", "0.25,0.25,0.25", "--res-range", "128,160,32")  # fmt: skip
    unknown = next(line for line in out.splitlines() if line.startswith("mobilenet_v1_025_160 "))
    assert code == 0 and unknown.split()[4:6] == ["-", "unknown"] and "nan" not in out, out


def test_a_model_measured_by_a_run_is_exported_from_that_run_and_retrained_from_its_recipe(capsys, tmp_path,
                                                                                        monkeypatch):  # fmt: skip
    """A chosen model whose top-1 is a run's measurement was printed the default-recipe `train --alpha ... --out
    runs/NAME` (another recipe than the figure's, into the folder the run occupies: refused as printed); the run is
    trained already: its model/ is exported, and its config.yaml retrains it into a new folder. An interpolated
    top-1 is trained by the recipe of the run of its alpha, at its resolution, into the default folder."""
    import shlex

    from mobilenets.cli import build_parser

    monkeypatch.chdir(tmp_path)  # the printed names are the first free ones here: none of the checkout's files

    def trained(name, alpha, resolution, top1):  # the files `mobilenets train` leaves in its run folder
        folder = tmp_path / "runs" / name
        (folder / "model").mkdir(parents=True)
        (folder / "config.yaml").write_text(f"alpha: {alpha}\nresolution: {resolution}\n")
        spec = {"alpha": alpha, "resolution": resolution, "num_classes": 10}
        (folder / "summary.json").write_text(json.dumps({"model": spec, "final_top1": top1}))
        return folder

    run040, run025 = trained("mobilenet_v1_040", 0.4, 224, 0.10), trained("mobilenet_v1_025_128", 0.25, 128, 0.05)
    # named as bench names them (224 has no suffix): a row of another name is no measurement of it, and select
    # would measure a latency table (about 50 s)
    rows = [{"model": grid_name(0.4, r), "alpha": 0.4, "resolution": r, "runtime": "ort", "threads": 1,
             "latency_ms_median": 1.0} for r in (192, 224)]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))

    def commands(res_range):
        code, out, _ = run(capsys, "--fps", "24", "--bench", str(tmp_path / "b.json"), "--accuracy",
                           str(run040 / "summary.json"), str(run025 / "summary.json"), "--alpha-range", "0.4,0.4,0.1",
                           "--res-range", res_range)  # fmt: skip
        assert code == 0, out
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("to produce it"))
        return lines, [shlex.split(line)[1:] for line in lines[start + 1 :] if line.strip()]

    lines, argvs = commands("192,224,32")
    assert "expected top-1 10.0% (measured)" in lines[0]
    parser = build_parser()[0]
    parsed = [parser.parse_args(argv) for argv in argvs]
    exports = [p for p in parsed if p.command == "export"]
    (retrain,) = [p for p in parsed if p.command == "train"]
    assert len(exports) == 1 and all(p.weights == f"{run040}/model" for p in exports)
    assert retrain.config == f"{run040}/config.yaml" and retrain.out == "runs/mobilenet_v1_040-again"
    assert not {"alpha", "resolution", "data"} & set(vars(retrain))  # the run's recipe, not the default one
    assert any(str(run040) in line for line in lines if line.startswith("to produce it"))

    lines, argvs = commands("192,192,32")  # 0.4-192: interpolated, not trained: trained by 0.4-224's recipe
    assert "(interpolated)" in lines[0]
    parsed = [parser.parse_args(argv) for argv in argvs]
    assert parsed[0].command == "train" and (parsed[0].alpha, parsed[0].resolution) == (0.4, 192)
    assert parsed[0].config == f"{run040}/config.yaml"
    assert parsed[0].out == "runs/mobilenet_v1_040_192" and parsed[1].weights == "runs/mobilenet_v1_040_192/model"


@pytest.mark.parametrize("name", ["mobilenet_v1_040", "mobilenet_v1_040_224", "0.4-224"])
def test_a_bench_row_is_matched_by_the_model_its_name_denotes(capsys, tmp_path, name, monkeypatch):
    """bench writes 0.4-224 as `mobilenet_v1_040`; a row naming it `mobilenet_v1_040_224` or ``0.4-224`` (names the
    registry reads as the same model) was no measurement of it: select silently predicted it instead (here, on
    ort-int8, which has no lookup table, it stopped with 'has no measurement of mobilenet_v1_040')."""
    monkeypatch.chdir(tmp_path)  # the printed names are the first free ones here: none of the checkout's files
    row = {"model": name, "alpha": 0.4, "resolution": 224, "runtime": "ort-int8", "threads": 1,
           "latency_ms_median": 1.5}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    code, out, err = run(capsys, "--fps", "24", "--runtime", "ort-int8", "--bench", str(tmp_path / "b.json"),
                         "--alpha-range", "0.4,0.4,0.05", "--res-range", "224,224,16", "--json")  # fmt: skip
    assert code == 0, err
    chosen = json.loads(out)["chosen"]
    assert (chosen["latency_ms"], chosen["latency_source"]) == (1.5, "measured") and "not used" not in err
    code, out, _ = run(capsys, "--fps", "24", "--runtime", "ort-int8", "--bench", str(tmp_path / "b.json"),
                       "--alpha-range", "0.4,0.4,0.05", "--res-range", "224,224,16")  # fmt: skip
    assert "to produce it (the INT8 export also writes its fp32 model, mobilenet_v1_040.fp32.onnx):" in out


def test_two_names_of_one_model_supersede_and_unmatched_rows_are_named(capsys, tmp_path):
    """Rows of one model under two names are one model's measurements (the newer wins); a row whose name is no
    model the registry knows, or contradicts its alpha/resolution fields, is named in a note, not silently dropped;
    a timm peer or Shallow MobileNet row is expected not to be a candidate and is not mentioned."""
    base = {"alpha": 0.4, "resolution": 224, "runtime": "ort-int8", "threads": 1}
    rows = [
        {**base, "model": "mobilenet_v1_040", "latency_ms_median": 9.0, "timestamp": "2026-01-01T00:00:00Z"},
        {**base, "model": "mobilenet_v1_040_224", "latency_ms_median": 2.0, "timestamp": "2026-02-01T00:00:00Z"},
        {**base, "model": "my_net", "latency_ms_median": 1.0},
        {**base, "model": "mobilenet_v1_040_160", "latency_ms_median": 1.0},
        {**base, "model": "timm:mobilenetv1_100", "alpha": 1.0, "latency_ms_median": 1.0},
        {**base, "model": "mobilenet_v1_shallow", "alpha": 1.0, "latency_ms_median": 1.0},
    ]
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    code, out, err = run(capsys, "--fps", "24", "--runtime", "ort-int8", "--bench", str(tmp_path / "b.json"),
                         "--alpha-range", "0.4,0.4,0.05", "--res-range", "224,224,16", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 2.0, err
    assert "note: 1 bench row(s) superseded" in err
    (note,) = [line for line in err.splitlines() if "not used" in line]
    assert note.startswith("note: 2 bench row(s) of ort-int8, 1 thread(s) not used") and "row 3: 'my_net'" in note
    assert "row 4: 'mobilenet_v1_040_160' is alpha 0.4 at 160, but the row says alpha 0.4 at 224" in note
    assert "timm" not in note and "shallow" not in note


def trained_run(folder, config: str, env: dict | None = None):
    (folder / "model").mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    if env is not None:
        (folder / "env.json").write_text(json.dumps(env))
    return folder


def test_a_run_s_int8_export_calibrates_on_the_data_its_config_records(tmp_path):
    """With the run that measured the chosen model, the INT8 export printed `--calib DATA_ROOT/train` although the
    run's config.yaml records its data root (absolute) and train split; an older run's relative root is read from
    the working directory its env.json records. A run recording none keeps the placeholder."""
    import shlex

    from mobilenets.select import commands_for

    c = {"name": "mobilenet_v1_040", "alpha": 0.4, "resolution": 224}

    def calib(run_dir):
        (line,) = [x for x in commands_for(c, run_dir=str(run_dir), int8=True) if " --int8" in x]
        argv = shlex.split(line)
        return argv[argv.index("--calib") + 1]

    a = trained_run(tmp_path / "a", "data: /data/my images\ntrain_split: trn\n")
    assert calib(a) == "/data/my images/trn"  # quoted: shlex.split reads it back with its space
    b = trained_run(tmp_path / "b", "data: imgs\n", {"cwd": "/home/u/work"})
    assert calib(b) == "/home/u/work/imgs/train"
    assert calib(trained_run(tmp_path / "c", "alpha: 0.4\n")) == "DATA_ROOT/train"


def test_printed_train_folders_do_not_exist_yet(tmp_path, monkeypatch):
    """`--out runs/NAME-again` was printed whatever was there: train refuses a folder holding an earlier run (a run
    printed twice retrains into the first retrain's folder). The first free name is printed."""
    import shlex

    from mobilenets.select import commands_for

    monkeypatch.chdir(tmp_path)
    c = {"name": "mobilenet_v1_040", "alpha": 0.4, "resolution": 224}
    run_dir = str(trained_run(tmp_path / "r", "alpha: 0.4\n"))

    def outs(**kw):
        return [shlex.split(x)[shlex.split(x).index("--out") + 1] for x in commands_for(c, **kw) if " train " in x]

    assert outs(run_dir=run_dir) == ["runs/mobilenet_v1_040-again"] and outs() == ["runs/mobilenet_v1_040"]
    (tmp_path / "runs" / "mobilenet_v1_040-again").mkdir(parents=True)
    assert outs(run_dir=run_dir) == ["runs/mobilenet_v1_040-again2"]
    (tmp_path / "runs" / "mobilenet_v1_040-again2").mkdir()
    assert outs(run_dir=run_dir) == ["runs/mobilenet_v1_040-again3"]
    (tmp_path / "runs" / "mobilenet_v1_040").mkdir()
    (line,) = [x for x in commands_for(c) if " export " in x]
    assert outs() == ["runs/mobilenet_v1_040-2"] and shlex.split(line)[2] == "runs/mobilenet_v1_040-2/model"


@pytest.mark.parametrize("int8", [False, True])
def test_printed_exports_write_no_file_that_exists_and_share_the_train_folder_s_name(tmp_path, monkeypatch, int8):
    """The train folder was made unique (runs/NAME-2) but the export's --out was not: run twice, the commands'
    export refused `NAME.onnx` (an export of the first run's weights). The export is named as its train folder, and
    every file it writes is free: an INT8 export writes NAME.int8.onnx and NAME.fp32.onnx
    (`export.fp32_companion`)."""
    import shlex

    from mobilenets.cli import build_parser
    from mobilenets.export import fp32_companion
    from mobilenets.select import commands_for

    monkeypatch.chdir(tmp_path)
    c = {"name": "mobilenet_v1_040", "alpha": 0.4, "resolution": 224}
    parser = build_parser()[0]

    def outs(**kw):
        lines = commands_for(c, int8=int8, **kw)
        parsed = {p.command: p for p in (parser.parse_args(shlex.split(x)[1:]) for x in lines)}
        written = [parsed["export"].out, *([str(fp32_companion(Path(parsed["export"].out)))] if int8 else [])]
        return parsed["train"].out, written

    one = ["mobilenet_v1_040.int8.onnx", "mobilenet_v1_040.fp32.onnx"] if int8 else ["mobilenet_v1_040.onnx"]
    assert outs() == ("runs/mobilenet_v1_040", one)
    (tmp_path / one[-1]).write_text("an earlier export")  # INT8: its fp32 companion alone is in the way too
    two = [p.replace("mobilenet_v1_040", "mobilenet_v1_040-2") for p in one]
    assert outs() == ("runs/mobilenet_v1_040-2", two)  # the train folder follows the export's name
    (tmp_path / "runs" / "mobilenet_v1_040-2").mkdir(parents=True)  # and the export the train folder's
    assert outs() == ("runs/mobilenet_v1_040-3", [p.replace("-2", "-3") for p in two])
    run_dir = str(trained_run(tmp_path / "r", "alpha: 0.4\n"))  # a trained run: its export is free too
    assert outs(run_dir=run_dir)[1] == two


@pytest.mark.parametrize("runtime,size_dtype,int8", [("ort", "fp32", False), ("ort", "int8", True),
                                                     ("ort-int8", "fp32", True)])  # fmt: skip
def test_one_export_is_printed_named_as_export_names_it(runtime, size_dtype, int8, tmp_path, monkeypatch):
    """select printed an fp32 export and an INT8 one named `NAME-int8.onnx`; the INT8 export writes that fp32 model
    beside it anyway (`export.fp32_companion`, byte-identical), and export's own name and the README's is
    `NAME.int8.onnx` (`export.default_out`). One export is printed, of the model selected for: INT8 for an INT8
    runtime or an INT8 size budget, else fp32 (which needs no calibration data)."""
    import shlex
    from pathlib import Path

    from mobilenets.cli import build_parser
    from mobilenets.export import ExportConfig, default_out, fp32_companion

    monkeypatch.chdir(tmp_path)  # the printed names are the first free ones here: none of the checkout's files
    sel = select(Constraints(size_dtype=size_dtype), space=SearchSpace(0.5, 0.5, 0.05, 160, 160, 16), runtime=runtime)
    parser = build_parser()[0]
    parsed = [parser.parse_args(shlex.split(x)[1:]) for x in sel.commands]
    (export,) = [p for p in parsed if p.command == "export"]
    assert export.int8 is int8 and (export.calib is not None) is int8
    cfg = ExportConfig(format="onnx", int8=int8)
    assert export.out == default_out(Path(sel.chosen["name"]), cfg).name  # export's own name for these weights
    if int8:
        assert fp32_companion(Path(export.out)).name == "mobilenet_v1_050_160.fp32.onnx"


@pytest.mark.parametrize("runtime, bits", [("openvino-bf16", "bf16, 8 significant bits"),
                                           ("cuda-fp16", "fp16, 11 significant bits")])  # fmt: skip
def test_select_on_a_bf16_or_fp16_runtime_says_why_its_top1_is_the_fp32_weights(capsys, tmp_path, runtime, bits):
    """The table's top1_source said "of fp32 weights" for bf16/fp16 runtimes too, but the note saying why was printed
    for INT8 only: a labelled figure without its reason. The note follows the label's rule now, and says what is
    known of bf16/fp16 (nothing measured here) rather than INT8's Imagenette figure."""
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": runtime, "threads": 1,
           "batch": 32, "latency_ms_median": 0.6}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    args = ("--fps", "200", "--bench", str(tmp_path / "b.json"), "--alpha-range", "0.25,0.25,0.05", "--res-range",
            "128,128,16", "--runtime", runtime)  # fmt: skip
    code, out, _ = run(capsys, *args)
    assert code == 0 and "(tfslim, of fp32 weights)" in out.splitlines()[0]
    (note,) = [line for line in out.splitlines() if line.startswith("note: top-1 is the fp32 weights'")]
    assert f"({runtime} runs them rounded to {bits};" in note and "not measured here" in note
    assert "INT8" not in note and "Imagenette" not in note  # INT8's measured figure is not bf16's
    code, out, _ = run(capsys, *args, "--json")
    got = json.loads(out)
    assert got["chosen"]["top1_source"] == "tfslim, of fp32 weights" and got["top1_note"] == note


def test_the_fp32_weights_note_and_the_top1_label_follow_one_rule_on_every_runtime():
    """select's note and a row's top1_source label are both `bench.of_fp32_weights` of the runtime's dtype: a
    runtime has both or neither (the note covered INT8 only while the label covered bf16 and fp16)."""
    from mobilenets.bench import FP32_WEIGHTS, top1_source_for
    from mobilenets.runtimes import RUNTIME_INFO
    from mobilenets.select import fp32_weights_note

    dtypes = {info.dtype for info in RUNTIME_INFO.values()}
    assert dtypes == {"fp32", "int8", "bf16", "fp16"}  # a new dtype: decide its note's wording
    for runtime, info in RUNTIME_INFO.items():
        note = fp32_weights_note(runtime, info.dtype)
        labelled = top1_source_for("tfslim", info.dtype).endswith(FP32_WEIGHTS)
        assert bool(note) == labelled == (info.dtype != "fp32"), runtime
        assert "\n" not in note and (not note or f"({runtime} runs them" in note)


def _int8_bench(tmp_path, alphas=(0.25, 0.5), resolution=160):
    """A bench file of ort-int8 rows (ort-int8 has no lookup table) for alphas x resolution, all at 10 ms."""
    rows = [{"model": grid_name(a, resolution), "alpha": a, "resolution": resolution, "runtime": "ort-int8",
             "threads": 1, "batch": 0, "latency_ms_median": 10.0} for a in alphas]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    return ("--bench", str(tmp_path / "b.json"), "--runtime", "ort-int8", "--alpha-range", "0.25,0.5,0.25",
            "--res-range", f"{resolution},{resolution},16")  # fmt: skip


def test_an_int8_runtime_judges_the_size_budget_by_its_int8_export_unless_told_otherwise(capsys, tmp_path):
    """`select --fps 24 --max-mb 4 --runtime ort-int8` chose 0.25-160 (1.78 MiB fp32 / 0.58 int8) by the fp32 size,
    while 0.5-160's INT8 export, the file a user of ort-int8 ships, is 1.44 MiB: the size follows the runtime now,
    says so, and an explicit --size-dtype still wins."""
    args = ("--fps", "24", "--max-mb", "4", *_int8_bench(tmp_path))
    code, out, _ = run(capsys, *args)
    assert code == 0 and out.startswith("chosen: mobilenet_v1_050_160 "), out
    assert "sizes: int8 weights <= 4 MiB, as ort-int8 runs the INT8 export (--size-dtype fp32" in out
    code, out, _ = run(capsys, *args, "--json")
    got = json.loads(out)
    assert got["constraints"]["size_dtype"] == "int8" and got["size_note"].startswith("sizes: int8 weights <= 4 MiB")
    assert got["chosen"]["weights_MB"] > 4 >= got["chosen"]["weights_int8_MB"]
    code, out, _ = run(capsys, *args, "--size-dtype", "fp32", "--json")  # told: the fp32 file
    got = json.loads(out)
    assert got["chosen"]["name"] == "mobilenet_v1_025_160" and got["constraints"]["size_dtype"] == "fp32"
    assert got["size_note"].startswith("sizes: fp32 weights <= 4 MiB, as --size-dtype says")
    # the better model its INT8 export would allow is named, with the way there on this runtime
    assert got["int8_note"].startswith("note: 1 candidate(s) fail only the fp32 size budget while their INT8 export "
                                       "fits, the best mobilenet_v1_050_160 (expected top-1 ")  # fmt: skip
    assert got["int8_note"].endswith("--size-dtype int8 judges them by that file")
    # the library's default follows the runtime too; fp32 runtimes keep fp32
    space = SearchSpace(0.25, 0.5, 0.25, 160, 160, 16)
    assert select(Constraints(max_mb=4), space=space, runtime="openvino-int8").constraints.size_dtype == "int8"
    sel = select(Constraints(max_mb=4), space=space, runtime="ort")
    assert sel.constraints.size_dtype == "fp32" and sel.chosen["name"] == "mobilenet_v1_025_160"


def test_a_better_model_kept_out_only_by_the_fp32_size_is_named_once_and_only_then(capsys, tmp_path):
    """Candidates that fail the budget never appear beside a chosen one, so the `fails` hint that their INT8 export
    fits was never seen: one note names the best of them where it would rank above the chosen model."""
    space = SearchSpace(0.25, 0.5, 0.25, 160, 160, 16)
    sel = select(Constraints(max_mb=4), space=space, runtime="openvino")
    assert sel.int8_note.startswith("note: 1 candidate(s) fail only the fp32 size budget while their INT8 export "
                                    "fits, the best mobilenet_v1_050_160 ")  # fmt: skip
    assert sel.int8_note.endswith(": --runtime openvino-int8 judges them by that file")
    assert select(Constraints(max_mb=6), space=space).int8_note == ""  # nothing kept out
    assert select(Constraints(max_mb=4, size_dtype="int8"), space=space).int8_note == ""  # judged by int8 already
    assert select(Constraints(max_mb=4, max_macs=50e6), space=space).int8_note == ""  # 0.5-160 breaks MACs too
    assert select(Constraints(max_mb=1), space=space).int8_note != ""  # none chosen: the note shows the way


def _bench_file(tmp_path, runtime, alpha=0.5, resolution=160):
    """A bench file measuring one model on ``runtime`` (1 thread, 10 ms): select needs no lookup table for it."""
    row = {"model": grid_name(alpha, resolution), "alpha": alpha, "resolution": resolution, "runtime": runtime,
           "threads": 1, "batch": 0, "latency_ms_median": 10.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    return ("--bench", str(tmp_path / "b.json"), "--runtime", runtime, "--alpha-range", f"{alpha},{alpha},0.05",
            "--res-range", f"{resolution},{resolution},16")  # fmt: skip


@pytest.mark.parametrize("runtime,suffixes", [("ort-int8", [".int8.onnx", ".fp32.onnx"]), ("ort", [".onnx"])])
def test_the_selection_carries_the_files_its_export_writes_and_the_cli_names_them(capsys, tmp_path, monkeypatch,
                                                                                  runtime, suffixes):  # fmt: skip
    """The CLI found the fp32 model an INT8 export leaves beside it by reading the printed line back with shlex and
    applying `export.fp32_companion` again: a second copy of `select.export_files`' rule. The selection carries the
    files its export writes (JSON ``export_files``, ``--out`` first), and the CLI names the companion from them."""
    import shlex

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mobilenet_v1_050_160.fp32.onnx").write_text("an earlier export")  # in an INT8 export's way only
    stem = "mobilenet_v1_050_160-2" if len(suffixes) > 1 else "mobilenet_v1_050_160"
    code, out, err = run(capsys, "--fps", "24", *_bench_file(tmp_path, runtime), "--json")
    got = json.loads(out)
    assert code == 0 and got["export_files"] == [stem + s for s in suffixes], err
    (export,) = [shlex.split(x) for x in got["commands"] if x.startswith("mobilenets export ")]
    assert export[export.index("--out") + 1] == got["export_files"][0]
    code, out, _ = run(capsys, "--fps", "24", *_bench_file(tmp_path, runtime))
    companion = f" (the INT8 export also writes its fp32 model, {stem}.fp32.onnx)" if len(suffixes) > 1 else ""
    assert code == 0 and f"\nto produce it{companion}:\n" in out, out


@pytest.mark.parametrize("runtime,dtype", [("openvino-bf16", "bf16"), ("cuda-bf16", "bf16"), ("cuda-fp16", "fp16")])
def test_the_sizes_line_says_a_bf16_or_fp16_runtime_loads_fp32_weights_and_computes_rounded(runtime, dtype):
    """The sizes line said bf16/fp16 runtimes "run fp32 weights": they load the fp32 file (the size judged, rightly)
    but compute rounded to bf16/fp16 (`runtimes`: OpenVINO's precision hint, the cuda model cast)."""
    space = SearchSpace(0.25, 0.25, 0.05, 160, 160, 16)
    note = select(Constraints(max_mb=4), space=space, runtime=runtime).size_note
    assert note == (f"sizes: fp32 weights <= 4 MiB, as {runtime} loads the fp32 weights and computes rounded to "
                    f"{dtype} (--size-dtype int8 judges the int8 file)")  # fmt: skip
    assert select(Constraints(max_mb=4), space=space, runtime="ort").size_note.startswith(
        "sizes: fp32 weights <= 4 MiB, as ort runs fp32 weights ("
    )


def test_an_int8_size_on_a_runtime_that_runs_fp32_says_the_latency_is_not_the_int8_file_s(capsys, tmp_path):
    """`--size-dtype int8` on ort judged the INT8 file's size and printed its export, but timed ort's fp32 model,
    without a word: the latency shown is not the shipped file's. A note says so and names the INT8 runtime that
    times that file (no lookup table predicts it: it needs bench files)."""
    space = SearchSpace(0.25, 0.5, 0.25, 160, 160, 16)
    tail = "not that file's: {} times it (it needs --bench files measuring it: no lookup table does)"
    expected = {
        "ort": "of fp32 weights, " + tail.format("--runtime ort-int8"),
        "openvino-bf16": "of fp32 weights computed in bf16, " + tail.format("--runtime openvino-int8"),
        "torch": "of fp32 weights, " + tail.format("--runtime ort-int8 or --runtime openvino-int8"),
    }

    def timed(alpha, res):
        return 10.0, "measured"

    for runtime, words in expected.items():
        for k in (Constraints(max_mb=4, size_dtype="int8"), Constraints(size_dtype="int8")):  # no budget: the export
            assert select(k, space=space, runtime=runtime, latency=timed).latency_note == (
                f"note: sizes and the export are of the INT8 file (--size-dtype int8), but latency_ms is {runtime}'s, "
                + words
            )
        # no latency shown (no source given): there is no latency to say is not the file's
        assert select(Constraints(size_dtype="int8"), space=space, runtime=runtime).latency_note == ""
    for runtime, k in (("ort", Constraints(max_mb=4)), ("ort-int8", Constraints(max_mb=4, size_dtype="int8"))):
        assert select(k, space=space, runtime=runtime, latency=timed).latency_note == ""  # timed what is sized
    code, out, _ = run(capsys, "--fps", "24", "--size-dtype", "int8", *_bench_file(tmp_path, "ort"))
    (note,) = [line for line in out.splitlines() if "latency_ms is ort's" in line]
    assert code == 0 and note.endswith(tail.format("--runtime ort-int8")) and " --int8 " in out
    code, out, _ = run(capsys, "--fps", "24", "--size-dtype", "int8", *_bench_file(tmp_path, "ort"), "--json")
    assert json.loads(out)["latency_note"] == note


def test_a_trained_run_s_int8_export_is_said_in_one_parenthesis(capsys, tmp_path, monkeypatch):
    """A run's INT8 export printed 'to produce it (trained already: ...) (the INT8 export also writes ...):', two
    parentheses in a row; the two things said are one parenthesis, split by a semicolon."""
    monkeypatch.chdir(tmp_path)
    run_dir = trained_run(tmp_path / "runs" / "r", "alpha: 0.5\nresolution: 160\n")
    spec = {"alpha": 0.5, "resolution": 160, "num_classes": 10}
    (run_dir / "summary.json").write_text(json.dumps({"model": spec, "final_top1": 0.5}))
    code, out, _ = run(capsys, "--fps", "24", *_bench_file(tmp_path, "ort-int8"), "--accuracy",
                       str(run_dir / "summary.json"))  # fmt: skip
    assert code == 0 and (f"\nto produce it (trained already: {run_dir} measured its top-1; export its weights, or "
                          "retrain it with that run's recipe; the INT8 export also writes its fp32 model, "
                          "mobilenet_v1_050_160.fp32.onnx):\n") in out, out  # fmt: skip


def recipe_run(root, name, alpha, resolution, top1, *, epochs_run=None, **recipe):
    """A run folder as `mobilenets train` leaves it: model/, summary.json, and config.yaml written the trainer's way
    (the validated `TrainConfig`, paths absolute, a --init run's model and alpha the weights': `trainer`)."""
    import yaml

    from mobilenets.train_config import TrainConfig

    folder = root / "runs" / name
    (folder / "model").mkdir(parents=True)
    if recipe.get("init"):
        recipe = {**recipe, "model": grid_name(alpha, resolution), "alpha": alpha}
    else:
        recipe = {"alpha": alpha, **recipe}
    cfg = TrainConfig(data=str(root / "data"), resolution=resolution, out=str(folder), **recipe)
    cfg = cfg.validate().absolute_paths()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    spec = {"alpha": alpha, "resolution": resolution, "num_classes": 5}
    (folder / "summary.json").write_text(json.dumps({"model": spec, "final_top1": top1,
                                                     "epochs": epochs_run or cfg.epochs}))  # fmt: skip
    return folder


def test_runs_of_one_model_by_different_recipes_keep_the_best_recipe_and_name_what_differs(tmp_path):
    """Five runs of 0.25-128 on a 5-class set: two seeds of a fine-tune (94%, 92%), a 1-epoch fine-tune (28%), a
    distillation from an untrained teacher (50%), a linear probe (82%). Their mean, 69.2%, is no recipe's top-1 (it
    was the "measured" figure, with a note on epochs only); the best recipe's (its seeds averaged, 93%) is kept, its
    run retrains it, and the note names the fields the recipes differ in, as config.yaml records them."""
    weights, teacher = tmp_path / "imagenet-025", tmp_path / "teacher"
    weights.mkdir(), teacher.mkdir()
    ft = dict(init=str(weights), lr=0.01, epochs=5)
    runs = [
        recipe_run(tmp_path, "ft0", 0.25, 128, 0.94, **ft),
        recipe_run(tmp_path, "ft1", 0.25, 128, 0.92, seed=1, **ft),  # a seed of the same recipe: averaged
        recipe_run(tmp_path, "short", 0.25, 128, 0.28, **{**ft, "epochs": 1}),
        recipe_run(tmp_path, "distill", 0.25, 128, 0.50, teacher=str(teacher), epochs=5),
        recipe_run(tmp_path, "probe", 0.25, 128, 0.82, freeze_backbone=True, **ft),
        recipe_run(tmp_path, "scratch050", 0.5, 160, 0.60, epochs=5),
    ]
    said = []
    model = accuracy.from_summaries([r / "summary.json" for r in runs], say=said.append)
    assert model.points[(0.25, 128)] == pytest.approx(93.0) and model.points[(0.5, 160)] == pytest.approx(60.0)
    assert model.run_dirs[(0.25, 128)] == str(runs[0]) and model.init_runs == {(0.25, 128)}
    best, mixed = said
    assert best == (f"note: mobilenet_v1_025_128: 5 runs of 4 recipes (differing in epochs, freeze_backbone, init, "
                    f"lr, teacher): its top-1 is the best recipe's, 93.00% ({runs[0]}/summary.json, "
                    f"{runs[1]}/summary.json), not the mean of all 69.20%")  # fmt: skip
    # the models kept differ in recipe too: the fit between them mixes a fine-tune and a run from scratch
    assert mixed.startswith("note: the runs of different models followed different recipes (differing in init, lr):")
    # runs of one recipe alone: averaged, nothing said of recipes
    said.clear()
    model = accuracy.from_summaries([runs[0] / "summary.json", runs[1] / "summary.json"], say=said.append)
    assert model.points == {(0.25, 128): pytest.approx(93.0)} and not any("recipe" in s for s in said)


def test_a_model_fitted_to_fine_tunes_is_trained_by_their_recipe_at_its_resolution(capsys, tmp_path, monkeypatch):
    """0.25-192's top-1 interpolated from fine-tunes (--init) of 0.25 at 128 and 224 was printed with the default
    recipe from scratch (`train --data DATA_ROOT --alpha 0.25 --resolution 192`), which would not give it. The
    train line follows the nearest run of that alpha (--config RUN/config.yaml, another --resolution), and resolves
    to its recipe: its --init weights, lr and epochs. An alpha no run's recipe trains (their --init weights fix
    theirs) gets the default recipe and a note saying it would not give the figure."""
    import shlex

    from mobilenets.cli import build_parser
    from mobilenets.train_config import from_args, init_disagreements

    monkeypatch.chdir(tmp_path)
    w25, w50 = tmp_path / "w025", tmp_path / "w050"
    w25.mkdir(), w50.mkdir()
    r128 = recipe_run(tmp_path, "ft128", 0.25, 128, 0.80, init=str(w25), lr=0.01, epochs=7)
    r224 = recipe_run(tmp_path, "ft224", 0.25, 224, 0.86, init=str(w25), lr=0.01, epochs=7)
    r050 = recipe_run(tmp_path, "ft050", 0.5, 224, 0.90, init=str(w50), lr=0.01, epochs=7)
    rows = [{"model": grid_name(a, r), "alpha": a, "resolution": r, "runtime": "ort", "threads": 1,
             "latency_ms_median": 1.0} for a in (0.25, 0.35) for r in (192,)]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))

    def select_cli(alpha):
        code, out, _ = run(capsys, "--fps", "24", "--bench", str(tmp_path / "b.json"), "--accuracy",
                           *(str(r / "summary.json") for r in (r128, r224, r050)), "--alpha-range",
                           f"{alpha},{alpha},0.1", "--res-range", "192,192,16")  # fmt: skip
        assert code == 0, out
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("to produce it"))
        return lines, start, [shlex.split(line)[1:] for line in lines[start + 1 :] if line.strip()]

    lines, start, argvs = select_cli(0.25)
    assert "(interpolated)" in lines[0] and f"trained by the recipe of {r224}" in lines[start]
    parser = build_parser()[0]
    train, export = (parser.parse_args(argv) for argv in argvs)
    assert train.command == "train" and train.config == f"{r224}/config.yaml" and "data" not in vars(train)
    cfg = from_args(train)  # what `mobilenets train` would run
    assert (cfg.init, cfg.alpha, cfg.resolution, cfg.lr, cfg.epochs) == (str(w25), 0.25, 192, 0.01, 7)
    assert cfg.out == "runs/mobilenet_v1_025_192" and export.weights == "runs/mobilenet_v1_025_192/model"
    # the weights --init names are 0.25s (the run's config.yaml records what trained): --alpha agrees with them
    assert init_disagreements(ModelSpec(alpha=0.25, resolution=224), {"alpha": cfg.alpha}) == ([], [])

    lines, start, argvs = select_cli(0.35)  # interpolated between the alphas; every run fixes its own by --init
    assert "(interpolated)" in lines[0] and "recipe of" not in lines[start]
    note = next(line for line in lines if "no run's recipe trains" in line)
    assert note == ("note: the expected top-1 is fitted to your runs, but no run's recipe trains alpha 0.35 (their "
                    "--init weights fix alpha 0.25, 0.5): the train line is the default recipe, which would not give "
                    "that figure")  # fmt: skip
    assert argvs[0][:4] == ["train", "--data", "DATA_ROOT", "--alpha"]


def test_a_from_scratch_run_s_recipe_trains_another_alpha():
    """A run without --init fixes no alpha: its recipe trains the nearest model of any alpha (`recipe_run`)."""
    model = accuracy.AccuracyModel({(0.25, 128): 40.0, (0.5, 224): 60.0}, "measured",
                                   run_dirs={(0.25, 128): "runs/a", (0.5, 224): "runs/b"},
                                   init_runs=frozenset({(0.5, 224)}))  # fmt: skip
    assert model.recipe_run(0.5, 160) == ("runs/b", "")  # its own alpha first, though 0.25-128 is nearer in MACs
    assert model.recipe_run(0.35, 224) == ("runs/a", "")  # 0.5's weights fix 0.5: the scratch run's recipe


def test_a_run_whose_config_cannot_be_read_gives_no_recipe_or_retrain_line(tmp_path):
    """A run whose config.yaml does not load (named in a note) was still a recipe to train by: select printed
    ``train --config RUN/config.yaml``, which train refuses. Only runs whose recipe reads are select's run folders."""
    r128 = recipe_run(tmp_path, "a128", 0.25, 128, 0.80, lr=0.01, epochs=7)
    r224 = recipe_run(tmp_path, "a224", 0.25, 224, 0.86, lr=0.01, epochs=7)
    notes: list[str] = []
    model = accuracy.from_summaries([r128 / "summary.json", r224 / "summary.json"])
    assert model.recipe_run(0.25, 192) == (str(r224), "")  # the nearer in MACs, while both read
    (r224 / "config.yaml").write_text("lr: [0.1\n")  # not YAML
    model = accuracy.from_summaries([r128 / "summary.json", r224 / "summary.json"], say=notes.append)
    assert model.recipe_run(0.25, 192) == (str(r128), "") and (0.25, 224) not in model.run_dirs
    assert any(str(r224 / "summary.json") in n and "is not compared" in n for n in notes)


def test_the_printed_recipe_trains_as_printed_from_real_fine_tune_runs(capsys, tmp_path, monkeypatch):
    """End to end: two real 1-step fine-tunes (--init 0.25 weights) of 0.25 at 32 and 64 px on an Imagenette
    subset; select chooses 0.25-48 (interpolated) and the train command it prints, run as printed, fine-tunes the
    same weights at 48 px with that recipe (their config.yaml holds --max-steps 1, so it stays one step)."""
    import shlex

    from mobilenets import MobileNetV1, load, save

    from .conftest import data_path

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):  # hard links: no copy of the shared images
        for c in ("n01440764", "n02979186"):
            (data / split / c).mkdir(parents=True)
            for f in sorted(os.listdir(data_path("imagenette", split, c)))[:n]:
                os.link(data_path("imagenette", split, c, f), data / split / c / f)
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "w025")
    base = ["train", "--data", str(data), "--init", str(tmp_path / "w025"), "--batch-size", "4", "--workers", "0",
            "--threads", "1", "--max-steps", "1", "--lr", "0.01", "--optimizer", "sgd", "--quiet"]  # fmt: skip
    for res in (32, 64):
        assert main([*base, "--resolution", str(res), "--out", f"ft{res}"]) == 0
    rows = [{"model": grid_name(0.25, 48), "alpha": 0.25, "resolution": 48, "runtime": "ort", "threads": 1,
             "latency_ms_median": 1.0}]  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": rows}))
    capsys.readouterr()
    code, out, _ = run(capsys, "--fps", "24", "--bench", "b.json", "--accuracy", "ft32/summary.json",
                       "ft64/summary.json", "--alpha-range", "0.25,0.25,0.1", "--res-range", "48,48,16")  # fmt: skip
    assert code == 0 and "(interpolated)" in out.splitlines()[0], out
    train = next(line.strip() for line in out.splitlines() if line.strip().startswith("mobilenets train"))
    assert train.startswith("mobilenets train --config ft") and "--resolution 48" in train, train
    assert main(shlex.split(train)[1:]) == 0
    trained = load(tmp_path / "runs" / "mobilenet_v1_025_48" / "model")
    assert (trained.spec.alpha, trained.spec.resolution, trained.spec.num_classes) == (0.25, 48, 2)
    saved = json.loads((tmp_path / "runs" / "mobilenet_v1_025_48" / "summary.json").read_text())
    assert saved["global_steps"] == 1


def _recipe_run(folder: Path, top1: float, drop: str | None = None, **fields) -> Path:
    """A run's summary.json beside a config.yaml written as the trainer writes it, less ``drop`` (a field an older
    version did not record)."""
    import yaml

    from mobilenets.train_config import TrainConfig

    (folder / "model").mkdir(parents=True)
    saved = TrainConfig(data=str(folder.parent / "data"), out=str(folder), alpha=0.25, resolution=128,
                        **fields).to_dict()  # fmt: skip
    if drop:
        saved.pop(drop)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    summary = {"model": {"alpha": 0.25, "resolution": 128, "num_classes": 5}, "final_top1": top1, "epochs": 5}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder / "summary.json"


def test_runs_of_one_recipe_group_alike_in_either_order_and_older_files_read_as_they_ran(tmp_path):
    """From the re-read: a config.yaml was read without `_as_it_ran` and compared one way only. Two seeds of one
    distillation saved before `teacher_resolution` were "2 recipes (differing in teacher_resolution)"; and a file
    lacking a field the other sets gave the best recipe in one order, the mean with no note in the other."""
    (tmp_path / "teacher").mkdir()
    seeds = [_recipe_run(tmp_path / f"kd{s}", top1, "teacher_resolution", seed=s, teacher=str(tmp_path / "teacher"))
             for s, top1 in ((0, 0.80), (1, 0.70))]  # fmt: skip
    for order in (seeds, seeds[::-1]):
        said = []
        assert accuracy.from_summaries(order, say=said.append).points == {(0.25, 128): pytest.approx(75.0)}
        assert not [s for s in said if "recipes" in s], said
    mixed = [_recipe_run(tmp_path / "old", 0.60, "lr"), _recipe_run(tmp_path / "new", 0.90, lr=0.5)]
    for order in (mixed, mixed[::-1]):
        said = []
        assert accuracy.from_summaries(order, say=said.append).points == {(0.25, 128): pytest.approx(90.0)}
        assert [s for s in said if "2 runs of 2 recipes (differing in lr)" in s], said
