"""Latency lookup table: sums per-layer entries correctly, caches by environment, calibrates, measures for real."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenets import lut
from mobilenets.mobilenet_v1 import build_plan
from mobilenets.spec import ModelSpec

ENV = {"cpu": "Test CPU", "cores": 4, "gpu": "none", "torch": "2.x", "onnxruntime": "1.x", "openvino": "2026"}
PER_KIND = {"overhead": 0.05, "conv": 0.3, "dw": 0.1, "pw": 0.2, "head": 0.4, "block": 0.5}


class Counter:
    def __init__(self):
        self.calls = []

    def __call__(self, key):
        self.calls.append(key)
        return PER_KIND[key.split(":")[0]]


def test_the_suite_keeps_its_latency_table_out_of_the_users_cache():
    """select's default table is per machine and kept (~/.cache/mobilenets): a test that timed shapes into it, or read
    one a user's select saved there, would depend on what ran before. conftest points $MOBILENETS_CACHE elsewhere."""
    from .conftest import CACHE

    assert lut.DEFAULT_PATH.parent == Path(CACHE) and Path.home() not in lut.DEFAULT_PATH.parents


def test_layer_keys_follow_the_plan():
    spec = ModelSpec(alpha=0.6, resolution=176)
    blocks = lut.layer_keys(spec)
    assert len(blocks) == 1 + 13 + 1 and blocks[1] == "block:19:38:1:1:88x88" and blocks[2] == "block:38:76:2:1:88x88"
    assert blocks[-1] == "head:614:1000:6x6" and blocks[-2] == "block:614:614:1:1:6x6"
    keys = lut.layer_keys(spec, "layer")
    assert len(keys) == 1 + 2 * 13 + 1
    assert keys[0] == "conv:3:19:3:2:1:176x176" and keys[-1] == "head:614:1000:6x6"
    assert len(set(keys)) < len(keys)  # the five 14x14x512-like blocks repeat one shape
    plan = build_plan(spec)
    assert [k.split(":")[0] for k in keys[1:-1]] == [layer.kind for block in plan.blocks for layer in block]


def test_prediction_is_overhead_plus_sum_of_layers():
    measure, table = Counter(), lut.LatencyLUT()
    ms, new = lut.predict_latency(
        1.0, 224, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False, granularity="layer"
    )
    o = PER_KIND["overhead"]
    expected = o + (0.3 - o) + 13 * (0.1 - o) + 13 * (0.2 - o) + (0.4 - o)  # entries have the overhead removed
    assert ms == pytest.approx(expected)
    assert new == 1 + len(set(lut.layer_keys(ModelSpec(), "layer")))  # each shape once, in every round
    assert len(measure.calls) == lut.FILL_ROUNDS * new and set(measure.calls) == {
        lut.OVERHEAD,
        *lut.layer_keys(ModelSpec(), "layer"),
    }
    blocks, _ = lut.predict_latency(1.0, 224, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    assert blocks == pytest.approx(o + (0.3 - o) + 13 * (0.5 - o) + (0.4 - o))  # a separate table, per block


def test_progress_lines_say_how_far_and_how_long_at_most_every_half_minute():
    """Timings at t = 10, 20, ..., 100 s of 10 in all: a line at 30 s (3/10, 70 s left at that rate), 60 s, 90 s and
    the end; none in between."""
    said, now = [], [0.0]
    report = lut.progress_lines(said.append, "latency table", clock=lambda: now[0])
    for done in range(1, 11):
        now[0] = 10.0 * done
        report(done, 10)
    assert said == ["latency table: 3/10 timings, 30 s, about 70 s left", "latency table: 6/10 timings, 60 s, about "
                    "40 s left", "latency table: 9/10 timings, 1.5 min, about 10 s left",
                    "latency table: 10 timings done in 1.7 min"]  # fmt: skip
    seen = []
    best = lut.time_rounds("abc", lambda k: 1.0, 2, progress=lambda d, t: seen.append((d, t)))
    assert best == dict.fromkeys("abc", 1.0)
    assert seen == [(i, 6) for i in range(1, 7)]


def test_cache_by_environment_and_file_round_trip(tmp_path):
    path = tmp_path / "lut.json"
    measure = Counter()
    table = lut.LatencyLUT.load(path)
    said = []
    first, n = lut.predict_latency(0.5, 160, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False,
                                   say=said.append)  # fmt: skip
    assert said[0] == (f"latency table: measuring {n} layer shape(s) on ort, 1 thread(s), {lut.FILL_ROUNDS} rounds "
                       "(once per machine; saved for next time)")  # fmt: skip
    assert len(said) == 2 and said[1].startswith(f"latency table: {n * lut.FILL_ROUNDS} timings done in ")
    calls = len(measure.calls)
    again, new = lut.predict_latency(0.5, 160, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False,
                                     say=said.append)  # fmt: skip
    assert (again, new, len(measure.calls)) == (first, 0, calls)  # cached: nothing measured
    assert len(said) == 2  # and nothing said
    reloaded = lut.LatencyLUT.load(path)
    assert lut.predict_latency(0.5, 160, runtime="ort", lut=reloaded, measure=measure, env=ENV, calibrated=False) == (
        first,
        0,
    )
    # same shapes, another runtime, thread count or machine: separate tables, measured again
    for kw in (dict(runtime="torch"), dict(threads=2), dict(env={**ENV, "cpu": "Other CPU"})):
        args = dict(runtime="ort", threads=1, env=ENV) | kw
        _, new = lut.predict_latency(0.5, 160, lut=reloaded, measure=measure, calibrated=False, **args)
        assert new == n
    assert len(json.loads(path.read_text())) == 4
    assert all(k.endswith("|block") for k in json.loads(path.read_text()))
    # an off-grid model reuses nothing but the overhead and adds its own shapes
    _, new = lut.predict_latency(0.6, 176, runtime="ort", lut=reloaded, measure=measure, env=ENV, calibrated=False)
    assert 0 < new < n


def test_two_processes_filling_one_table_at_once_lose_no_entry(tmp_path):
    """Two `select`s measuring at the same time: each loaded the file before the other saved, and the later save
    dropped the earlier one's entries (11 + 9 shapes measured, 11 kept). Save merges into the file as it is now."""
    path = tmp_path / "lut.json"
    code = ("import sys, time\nfrom mobilenets import lut\n"
            "table = lut.LatencyLUT.load(sys.argv[1])\n"
            "time.sleep(1.5)  # both processes have loaded the file before either saves\n"
            "lut.predict_latency(0.25, int(sys.argv[2]), lut=table, measure=lambda key: 1.0, calibrated=False, "
            "rounds=1)\n")  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), res]) for res in ("64", "96")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    (table,) = json.loads(path.read_text()).values()
    for res in (64, 96):
        assert set(lut.layer_keys(ModelSpec(alpha=0.25, resolution=res))) <= set(table["layers"]), res


def _true_sum(alpha, res):
    o = PER_KIND["overhead"]
    return sum(PER_KIND[k.split(":")[0]] - o for k in lut.layer_keys(ModelSpec(alpha=alpha, resolution=res)))


def test_calibration_recovers_the_scale():
    measure, table = Counter(), lut.LatencyLUT()
    key = lut.env_key("ort", 1, ENV)  # the default granularity, per block
    o = PER_KIND["overhead"]

    def whole(alpha, res):  # a device where every layer costs 1.3x its isolated time
        return o + 1.3 * _true_sum(alpha, res)

    ms, _ = lut.predict_latency(0.6, 176, runtime="ort", lut=table, measure=measure, measure_whole=whole, env=ENV)
    t = table.tables[key]
    assert t["scale"] == pytest.approx(1.3) and t["intercept"] == pytest.approx(t["overhead"]) and t["per_layer"] == 0
    raw, _ = lut.predict_latency(0.6, 176, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    assert ms - o == pytest.approx(1.3 * (raw - o))
    # the predicted model's own shapes are timed in the calibration's rounds, beside the anchors' entries, and not
    # again afterwards
    anchor_keys = {k for a in lut.ANCHORS for k in lut.layer_keys(ModelSpec(alpha=a[0], resolution=a[1]))}
    own = set(lut.layer_keys(ModelSpec(alpha=0.6, resolution=176)))
    per_round = len({lut.OVERHEAD} | anchor_keys | own)
    assert len(measure.calls) == lut.CALIBRATION_ROUNDS * per_round
    for r in range(lut.CALIBRATION_ROUNDS):
        assert set(measure.calls[r * per_round : (r + 1) * per_round]) == {lut.OVERHEAD} | anchor_keys | own


def test_calibrated_counts_go_to_the_models_that_needed_them():
    """The calibration's own shapes and anchors count for the first model; each model counts its own new shapes."""
    measure, table = Counter(), lut.LatencyLUT()
    specs = [ModelSpec(alpha=0.6, resolution=176), ModelSpec(alpha=0.9, resolution=96)]
    o = PER_KIND["overhead"]
    got = lut.predict_many(specs, runtime="ort", lut=table, measure=measure, measure_whole=lambda a, r: o +
                           1.3 * _true_sum(a, r), env=ENV)  # fmt: skip
    timed = len(set(measure.calls)) + len(lut.ANCHORS)  # every shape (and the overhead) once, every anchor once
    own = [set(lut.layer_keys(s)) for s in specs]
    assert [n for _, n in got][1] == len(own[1] - own[0]) and sum(n for _, n in got) == timed
    assert lut.predict_many(specs, runtime="ort", lut=table, measure=measure, env=ENV) == [(ms, 0) for ms, _ in got]
    assert lut.env_key("torch", 1, ENV) not in table.tables
    calls = len(measure.calls)
    assert lut.predict_many([], runtime="ort", lut=table, measure=measure, env=ENV) == []
    assert len(measure.calls) == calls  # nothing to predict, nothing timed


def test_calibration_rounds_keep_the_minimum():
    """A slow phase (here each figure's first timing, 1.5x slower) must not enter the fit; the anchors are timed the
    way predicted models are: all their entries round-robin, then the anchors round-robin."""
    o = PER_KIND["overhead"]
    calls = []

    def measure(key):
        calls.append(key)
        return PER_KIND[key.split(":")[0]] * (1.5 if calls.count(key) == 1 else 1.0)

    def whole(alpha, res):
        calls.append((alpha, res))
        return (o + 1.2 * _true_sum(alpha, res)) * (1.5 if calls.count((alpha, res)) == 1 else 1.0)

    table = {"overhead": None, "scale": None, "intercept": None, "layers": {}}
    checks = [(0.6, 176), (0.9, 96), lut.ANCHORS[0]]  # an anchor asked for again is timed once
    own = lut.layer_keys(ModelSpec(alpha=0.6, resolution=176)) + lut.layer_keys(ModelSpec(alpha=0.9, resolution=96))
    n, checked = lut.calibrate(table, measure, whole, rounds=3, keys=own, models=checks, block=16)
    unique = {k for a, r in lut.ANCHORS for k in lut.layer_keys(ModelSpec(alpha=a, resolution=r))} | set(own)
    assert n == 1 + len(unique) + len(lut.ANCHORS) + 2 and len(calls) == 3 * n
    per_round = 1 + len(unique) + len(lut.ANCHORS) + 2
    for r in range(3):  # each round: every entry, then every anchor, then the extra models
        one = calls[r * per_round : (r + 1) * per_round]
        assert all(isinstance(c, str) for c in one[: 1 + len(unique)])
        assert one[1 + len(unique) :] == [*lut.ANCHORS, (0.6, 176), (0.9, 96)]
    assert checked == {m: pytest.approx(o + 1.2 * _true_sum(*m)) for m in checks}  # their minimum over rounds
    assert table["layers"][own[-2]] == pytest.approx(PER_KIND["block"] - o)
    assert table["overhead"] == pytest.approx(o) and table["scale"] == pytest.approx(1.2)
    assert table["layers"]["block:32:64:1:1:112x112"] == pytest.approx(PER_KIND["block"] - o)
    assert [m for _, _, m in table["anchors"]] == pytest.approx([o + 1.2 * _true_sum(a, r) for a, r in lut.ANCHORS])
    assert table["fit"]["method"] == "median" and table["block_channels"] == 16
    with pytest.raises(ValueError, match="rounds=0"):
        lut.calibrate(table, measure, whole, rounds=0)


def test_time_rounds():
    seen = []
    got = lut.time_rounds(["a", "b", "a", (1, 2)], lambda *x: seen.append(x) or 10.0 - len(seen), rounds=2)
    assert seen == [("a",), ("b",), (1, 2)] * 2 and got == {"a": 6.0, "b": 5.0, (1, 2): 4.0}
    assert lut.time_rounds([], lambda k: 1.0, rounds=3) == {}


def test_fit_scale_is_the_median_ratio():
    # ratios (m - 0.1) / s: 1.2, 1.3, 2.5 (an anchor caught in a slow phase) -> 1.3, the outlier ignored
    assert lut.fit_scale([1.0, 2.0, 4.0], [1.3, 2.7, 10.1], 0.1) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="sums"):
        lut.fit_scale([0.0, 1.0], [1.0, 2.0], 0.1)


SUMS = [0.4, 1.5, 3.0, 5.0, 8.0, 11.0, 2.2]


def test_fit_calibration_picks_the_per_layer_term_when_entries_carry_a_cost():
    # a runtime where each of the 15 isolated entries pays 10 us the network does not, and layers run 1.1x slower
    measured = [0.006 + 1.1 * s - 15 * 0.010 for s in SUMS]
    fit = lut.fit_calibration(SUMS, [15] * len(SUMS), measured, 0.006)
    assert (
        fit["method"] == "per_layer" and fit["scale"] == pytest.approx(1.1) and fit["per_layer"] == pytest.approx(-0.01)
    )
    loo = fit["loo_median_pct"]
    assert loo["per_layer"] == pytest.approx(0, abs=1e-9) and loo["median"] > 1.0
    table = {
        "overhead": 0.006,
        "intercept": 0.006,
        "scale": fit["scale"],
        "per_layer": fit["per_layer"],
        "layers": {"a": 2.0},
    }
    assert lut.predict_from_table(table, ["a"] * 3) == pytest.approx(0.006 + 1.1 * 6.0 - 3 * 0.01)


def test_fit_calibration_keeps_the_median_against_an_outlier():
    measured = [0.006 + 1.3 * s for s in SUMS]
    measured[2] *= 1.6  # one anchor timed in a slow phase
    fit = lut.fit_calibration(SUMS, [15] * len(SUMS), measured, 0.006)
    assert fit["method"] == "median" and fit["scale"] == pytest.approx(1.3) and fit["per_layer"] == 0.0
    exact = lut.fit_calibration(SUMS, [15] * len(SUMS), [0.006 + 1.3 * s for s in SUMS], 0.006)
    assert exact["method"] == "median"  # a tie goes to the simpler fit
    assert lut.fit_calibration(SUMS[:2], [15, 15], measured[:2], 0.006)["loo_median_pct"] == {}  # too few to choose


def test_key_features_count_weights_and_activations():
    mib = 4 / 2**20  # fp32 bytes -> MiB
    w, a, aligned = lut.key_features("block:32:64:2:1:112x112", block=16)
    assert w == pytest.approx((32 * 9 + 32 + 32 * 64 + 64) * mib)
    assert a == pytest.approx((32 * 112**2 + 64 * 56**2) * mib)
    assert aligned and not lut.key_features("block:22:44:1:1:64x64", block=16)[2]
    assert lut.key_features("block:24:48:1:1:64x64", block=8)[2] and not lut.key_features("block:24:48:1:1:8x8")[2]
    w, a, aligned = lut.key_features("conv:3:32:3:2:1:224x224", block=16)
    assert w == pytest.approx((3 * 32 * 9 + 32) * mib) and a == pytest.approx((3 * 224**2 + 32 * 112**2) * mib)
    assert aligned  # the stem's 3 input channels do not count
    assert not lut.key_features("conv:24:64:3:1:1:8x8")[2]  # a full conv reading 24 channels is not the RGB stem
    assert lut.key_features("overhead") == (0.0, 0.0, False)
    assert not any(lut.key_features(k, block=0)[2] for k in ("block:32:64:2:1:112x112", "head:1024:1000:7x7"))
    assert lut.block_channels("torch") == 0 and lut.block_channels("ort") in (8, 16)
    assert lut.key_features("dw:32:32:3:1:1:8x8")[0] == pytest.approx((32 * 9 + 32) * mib)
    assert lut.key_features("pw:32:64:1:1:1:8x8")[0] == pytest.approx((32 * 64 + 64) * mib)
    w, a, aligned = lut.key_features("head:1024:1000:7x7")
    assert w == pytest.approx((1024 * 1000 + 1000) * mib) and a == pytest.approx((1024 * 49 + 1000) * mib) and aligned
    keys = ["block:32:64:2:1:112x112", "block:22:44:1:1:64x64"]
    weights, blocked = lut.memory_features(keys, 16)
    assert weights == pytest.approx(sum(lut.key_features(k)[0] for k in keys))
    assert blocked == pytest.approx(lut.key_features(keys[0])[1])  # only the aligned entry's activations


def test_fit_calibration_picks_the_memory_terms_when_bytes_explain_the_difference():
    # a runtime where each weight MiB costs 0.1 ms more inside the network and each blocked activation MiB 0.05 ms
    # less: no single factor follows it, the memory form does
    feats = [(1.8, 2.7), (5.1, 0.0), (9.8, 17.6), (16.1, 31.7), (2.3, 0.0), (4.3, 0.0), (8.7, 0.0)]
    measured = [0.006 + s + 0.1 * w - 0.05 * b + 0.02 for s, (w, b) in zip(SUMS, feats, strict=True)]
    fit = lut.fit_calibration(SUMS, [15] * len(SUMS), measured, 0.006, memory=feats)
    assert fit["method"] == "memory" and fit["loo_median_pct"]["memory"] == pytest.approx(0, abs=1e-9)
    assert (fit["scale"], fit["per_layer"]) == (1.0, 0.0) and fit["offset"] == pytest.approx(0.02)
    assert fit["ms_per_weight_mb"] == pytest.approx(0.1) and fit["ms_per_blocked_mb"] == pytest.approx(-0.05)
    assert min(fit["loo_median_pct"]["median"], fit["loo_median_pct"]["per_layer"]) > 1.0
    table = {"overhead": 0.006, "intercept": 0.006 + fit["offset"], "scale": 1.0, "per_layer": 0.0,
             "ms_per_weight_mb": fit["ms_per_weight_mb"], "ms_per_blocked_mb": fit["ms_per_blocked_mb"],
             "block_channels": 16, "layers": {"block:32:64:2:1:112x112": 2.0,
                                              "block:22:44:1:1:64x64": 1.0}}  # fmt: skip
    keys = list(table["layers"])
    weights, blocked = lut.memory_features(keys, 16)
    assert lut.predict_from_table(table, keys) == pytest.approx(0.026 + 3.0 + 0.1 * weights - 0.05 * blocked)
    assert "memory" not in lut.fit_calibration(SUMS, [15] * len(SUMS), measured, 0.006)["loo_median_pct"]
    # its three terms need five anchors: each one left out, four remain to fit them (three would fit anything)
    assert lut.fit_calibration(SUMS[:5], [15] * 5, measured[:5], 0.006, memory=feats[:5])["method"] == "memory"
    assert (
        "memory" not in lut.fit_calibration(SUMS[:4], [15] * 4, measured[:4], 0.006, memory=feats[:4])["loo_median_pct"]
    )
    with pytest.raises(ValueError, match="memory features for 2 anchors"):
        lut.fit_calibration(SUMS, [15] * len(SUMS), measured, 0.006, memory=feats[:2])


def test_a_calibrated_prediction_is_never_below_the_overhead():
    """The memory fit's offset is negative on ONNX Runtime (-0.13 ms in the committed table): the smallest models'
    sums are smaller than that, and a prediction of 0 or below met every budget in `select` (FPS infinite)."""
    keys = ["block:8:16:1:1:48x48", "block:16:32:2:1:48x48"]
    table = {"overhead": 0.005, "intercept": -0.13, "scale": 1.0, "per_layer": 0.0, "ms_per_weight_mb": 0.05,
             "ms_per_blocked_mb": -0.04, "block_channels": 16, "layers": dict.fromkeys(keys, 0.02)}  # fmt: skip
    assert lut.predict_from_table(table, keys) == 0.005
    table["layers"] = dict.fromkeys(keys, 1.0)  # above the floor the fit is untouched
    weights, blocked = lut.memory_features(keys, 16)
    assert lut.predict_from_table(table, keys) == pytest.approx(-0.13 + 2.0 + 0.05 * weights - 0.04 * blocked)


def test_fill_keeps_the_minimum_over_rounds():
    calls = []

    def measure(key):  # each key is slow (2x) the first time it is timed, then quiet
        calls.append(key)
        return PER_KIND[key.split(":")[0]] * (2.0 if calls.count(key) == 1 else 1.0)

    table = {"overhead": None, "layers": {}}
    keys = lut.layer_keys(ModelSpec(alpha=0.5, resolution=128))
    n = lut.fill(table, keys, measure, rounds=3)
    o = PER_KIND["overhead"]
    assert n == 1 + len(set(keys)) and len(calls) == 3 * n
    assert calls[:n] == calls[n : 2 * n]  # round-robin: every key once per round
    assert table["overhead"] == o and all(
        v == pytest.approx(PER_KIND[k.split(":")[0]] - o) for k, v in table["layers"].items()
    )
    assert lut.fill(table, keys, measure, rounds=3) == 0 and len(calls) == 3 * n  # nothing missing, nothing timed


def test_missing_shape_without_measurement_is_named():
    table = {"overhead": 0.1, "scale": 1.0, "layers": {}}
    with pytest.raises(KeyError, match="conv:3:32"):
        lut.predict_from_table(table, lut.layer_keys(ModelSpec()))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="compile"):
        lut.predict_latency(1.0, 224, runtime="compile")
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="x.json"):
        lut.LatencyLUT.load(bad)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"overhead": "z", "layers": {}}, "overhead is 'z', not a finite number"),
        ({"overhead": 0.1, "layers": []}, "layers is a JSON list, not an object"),
        ({"overhead": 0.1, "layers": {"conv:3:32": "slow"}}, "layer 'conv:3:32' is 'slow', not a finite number"),
        ({"overhead": 0.1, "scale": True, "layers": {}}, "scale is True, not a finite number"),
        ({"overhead": None, "layers": {}, "partial": {"overhead": [0.1, 0]}}, "partial timing 'overhead' is [0.1, 0]"),
        ({"overhead": None, "layers": {}, "partial": [1]}, "partial is a JSON list, not an object"),
    ],
)
def test_a_table_with_entries_that_are_not_numbers_is_named_on_loading(tmp_path, capsys, table, words):
    """A hand-edited table (or one from another tool) loaded, and `bench --lut` stopped with a TypeError traceback
    from inside the prediction ('>' not supported between 'str' and 'float')."""
    from mobilenets.cli import main

    path = tmp_path / "lut.json"
    path.write_text(json.dumps({lut.env_key("torch", 1): table}))
    with pytest.raises(ValueError, match=re.escape(words)):
        lut.LatencyLUT.load(path)
    code = main(["bench", "--lut", "--models", "0.25-64", "--runtimes", "torch", "--lut-file", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"latency table '{path}' is not a mobilenets latency LUT" in err


def test_real_measurement_on_torch(tmp_path):
    path = tmp_path / "lut.json"
    ms, new = lut.predict_latency(0.25, 64, runtime="torch", lut=lut.LatencyLUT.load(path), calibrated=False, rounds=1)
    assert math.isfinite(ms) and ms > 0 and new == 1 + len(set(lut.layer_keys(ModelSpec(alpha=0.25, resolution=64))))
    (table,) = json.loads(path.read_text()).values()
    assert table["overhead"] > 0 and all(v >= 0 for v in table["layers"].values())


def test_real_measurement_on_onnx_runtime():
    """select's default runtime: each entry is its layer exported to ONNX alone and timed in an ONNX Runtime session
    (the path `test_real_measurement_on_torch` does not take)."""
    pytest.importorskip("onnxruntime")
    for key in (lut.OVERHEAD, "block:8:16:2:1:32x32", "head:16:10:4x4"):
        ms = lut.measure_key(key, "ort", 1, blocks=1, block=1)
        assert math.isfinite(ms) and ms > 0, key


def test_predict_many_measures_all_models_shapes_together():
    measure, table = Counter(), lut.LatencyLUT()
    specs = [
        ModelSpec(alpha=0.6, resolution=176),
        ModelSpec(alpha=0.9, resolution=96),
        ModelSpec(alpha=0.6, resolution=176),
    ]
    got = lut.predict_many(specs, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    keys = [set(lut.layer_keys(s)) for s in specs]
    assert [n for _, n in got] == [1 + len(keys[0]), len(keys[1] - keys[0]), 0]  # first measured for, overhead once
    per_round = 1 + len(keys[0] | keys[1])
    assert len(measure.calls) == lut.FILL_ROUNDS * per_round
    assert set(measure.calls[:per_round]) == {lut.OVERHEAD} | keys[0] | keys[1]  # one round covers both models
    for spec, (ms, _) in zip(specs, got, strict=True):
        alone, new = lut.predict_latency(
            spec.alpha, spec.resolution, lut=table, measure=measure, env=ENV, calibrated=False
        )
        assert (alone, new) == (pytest.approx(ms), 0)
    assert got[0][0] == got[2][0]


def test_torch_timing_holds_its_thread_count_and_restores_the_callers():
    """The torch entries are timed at the table's thread count, and the caller's count is back afterwards."""
    import torch

    seen = []

    def measure(key):
        seen.append(torch.get_num_threads())
        return PER_KIND[key.split(":")[0]]

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        lut.predict_latency(0.25, 64, runtime="torch", threads=1, lut=lut.LatencyLUT(), measure=measure, env=ENV,
                            calibrated=False, save=False)  # fmt: skip
        assert set(seen) == {1} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_saving_merges_into_the_file_and_keeps_the_calibration_that_was_made(tmp_path):
    """Two `select`s sharing the table file: each save takes the union of the layers, keeps this process's
    calibration, and keeps the file's where only the file's table is calibrated (a process that merely filled
    shapes must not erase another's minutes of calibrating)."""
    path = tmp_path / "lut.json"
    calibrated, filling = lut.LatencyLUT.load(path), lut.LatencyLUT.load(path)
    calibrated.tables["k"] = {"overhead": 0.1, "scale": 1.2, "intercept": 0.1, "layers": {"x": 1.0}}
    calibrated.save()
    filling.tables["k"] = {"overhead": 0.1, "scale": None, "intercept": None, "layers": {"y": 2.0}}
    filling.save()
    assert json.loads(path.read_text())["k"] == {"overhead": 0.1, "scale": 1.2, "intercept": 0.1,
                                                 "layers": {"x": 1.0, "y": 2.0}}  # fmt: skip
    recalibrated = lut.LatencyLUT(path, {"k": {"overhead": 0.1, "scale": 1.4, "intercept": 0.2, "layers": {"z": 3.0}}})
    recalibrated.save()
    assert json.loads(path.read_text())["k"] == {"overhead": 0.1, "scale": 1.4, "intercept": 0.2,
                                                 "layers": {"x": 1.0, "y": 2.0, "z": 3.0}}  # fmt: skip


def test_a_memory_calibration_predicts_a_device_whose_weights_cost_time_in_the_network():
    """torch eager (block 0: no blocked layout) on a device where every weight MiB costs 0.1 ms more inside the
    network, plus 0.02 ms per inference: `calibrate` picks the memory form, and the table then predicts a model
    that is not an anchor as that device runs it (its intercept is the overhead plus the fitted offset, and the
    weight term counts with no blocked-activation term beside it)."""
    o = PER_KIND["overhead"]

    def device(alpha, res):
        keys = lut.layer_keys(ModelSpec(alpha=alpha, resolution=res))
        return o + 0.02 + _true_sum(alpha, res) + 0.1 * lut.memory_features(keys, 0)[0]

    table = lut.LatencyLUT()
    ms, _ = lut.predict_latency(0.6, 176, runtime="torch", lut=table, measure=Counter(), measure_whole=device, env=ENV)
    t = table.tables[lut.env_key("torch", 1, ENV)]
    assert t["fit"]["method"] == "memory" and t["block_channels"] == 0 and t["ms_per_blocked_mb"] == 0
    assert t["intercept"] == pytest.approx(o + 0.02) and t["ms_per_weight_mb"] == pytest.approx(0.1)
    assert ms == pytest.approx(device(0.6, 176))


def test_a_thread_count_that_cannot_run_here_is_refused_before_measuring():
    """Shapes missing from the table are timed on ``threads`` here: 0 or more than the cores is the one-line error
    of every ``--threads`` (`cores.check_threads`), before any layer is built or timed."""
    for threads in (0, 10_000):
        table = lut.LatencyLUT()
        with pytest.raises(ValueError, match=f"threads={threads} is not allowed to measure the latency table here"):
            lut.predict_latency(0.25, 96, runtime="torch", threads=threads, lut=table, calibrated=False, env=ENV)
        assert not table.tables.get(lut.env_key("torch", threads, ENV), {}).get("layers")  # nothing was measured


class Interrupt(Exception):
    pass


def _stop_after(k, measure):
    """``measure`` that raises `Interrupt` at its call number ``k + 1`` (a Ctrl-C after k timings), and counts."""
    calls = []

    def timed(*item):
        if len(calls) == k:
            raise Interrupt
        calls.append(item)
        return measure(*item)

    timed.calls = calls
    return timed


def test_an_interrupted_calibration_goes_on_where_it_stopped_and_ends_as_one_run_would(tmp_path):
    """select's first run measures ~1,200 timings for 10 minutes, and an interruption (Ctrl-C, a closed pipe, a
    failing runtime) kept none of them: the file got the table only at the end. The timings so far are saved on the
    way out; the next run times only the rest, says how many it reused, and the table it ends with is the one an
    uninterrupted run makes (deterministic timings here, so equal in values too), with no unfinished timings left."""
    o = PER_KIND["overhead"]

    def whole(alpha, res):
        return o + 1.3 * _true_sum(alpha, res)

    def both(*item):  # a layer key or a model, as `calibrate` times them
        return whole(*item) if len(item) == 2 else PER_KIND[item[0].split(":")[0]]

    one_go = lut.LatencyLUT(tmp_path / "one.json")
    lut.predict_latency(0.6, 176, lut=one_go, measure=Counter(), measure_whole=whole, env=ENV, rounds=2)
    path = tmp_path / "lut.json"
    items = lut.calibration_items("block", lut.layer_keys(ModelSpec(alpha=0.6, resolution=176)))
    k = len(items) + 7  # in the second round
    first = _stop_after(k, both)
    with pytest.raises(Interrupt):
        lut.predict_latency(0.6, 176, lut=lut.LatencyLUT.load(path), measure=first, measure_whole=first, env=ENV,
                            rounds=2)  # fmt: skip
    (table,) = json.loads(path.read_text()).values()
    assert table["layers"] == {} and table["scale"] is None  # no entry before the phase ends
    assert sum(n for _, n in table["partial"].values()) == k and set(table["partial"]) == {
        lut.item_name(i) for i in items
    }
    said, second = [], _stop_after(10**9, both)
    ms, _ = lut.predict_latency(0.6, 176, lut=lut.LatencyLUT.load(path), measure=second, measure_whole=second,
                                env=ENV, rounds=2, say=said.append)  # fmt: skip
    assert len(second.calls) == 2 * len(items) - k  # only the missing timings
    assert said[0].endswith(f"; {k} timing(s) saved by an interrupted run reused")
    done, expected = json.loads(path.read_text()), json.loads(one_go.path.read_text())
    assert done == expected and "partial" not in done[lut.env_key("ort", 1, ENV)]
    assert ms == lut.predict_latency(0.6, 176, lut=one_go, env=ENV)[0]


def test_saved_timings_merge_with_another_process_and_leave_the_table_alone(tmp_path):
    """Two runs measuring one table: each save keeps per item the timing with more rounds, never touches the
    file's entries or calibration, and a finished run drops only the timings it made entries of."""
    path = tmp_path / "lut.json"
    done = lut.LatencyLUT(path, {"k": {"overhead": 0.1, "scale": None, "intercept": None, "layers": {"x": 1.0}}})
    done.save()
    a, b = lut.LatencyLUT.load(path), lut.LatencyLUT.load(path)
    a.tables["k"]["partial"] = {"y": [2.0, 1], "z": [3.0, 2]}
    a.save_timings("k")
    b.tables["k"]["partial"] = {"y": [1.5, 2], "z": [2.5, 1], "w": [4.0, 1]}
    b.save_timings("k")
    assert json.loads(path.read_text())["k"] == {"overhead": 0.1, "scale": None, "intercept": None,
                                                 "layers": {"x": 1.0},
                                                 "partial": {"y": [1.5, 2], "z": [3.0, 2], "w": [4.0, 1]}}  # fmt: skip
    a.tables["k"]["layers"]["y"], a.tables["k"]["partial"] = 1.4, {"z": [3.0, 2]}
    a.finished["k"] = {"y"}
    a.save()
    assert json.loads(path.read_text())["k"]["partial"] == {"z": [3.0, 2], "w": [4.0, 1]}
    assert json.loads(path.read_text())["k"]["layers"] == {"x": 1.0, "y": 1.4}


CHILD = """
import sys, time
from mobilenets import lut
lut.SAVE_EVERY_S = float(sys.argv[2])
timer = lut.KeyTimer("torch", 1, blocks=1, block=1)  # real timings, short
done = []


def measure(key):
    ms = timer(key)
    done.append(key)
    print("timed", key, flush=True)
    if len(done) == 5:  # the signal finds the fifth timing not yet handed back, whatever the machine's speed
        time.sleep(60)
    return ms


lut.predict_latency(0.25, 32, runtime="torch", lut=lut.LatencyLUT.load(sys.argv[1]), measure=measure,
                    calibrated=False, rounds=2)
"""


@pytest.mark.parametrize(("signal_name", "save_every_s"), [("SIGTERM", 1e9), ("SIGINT", 1e9), ("SIGKILL", 0.0)])
def test_a_real_measurement_killed_keeps_its_timings_for_the_next_run(tmp_path, signal_name, save_every_s):
    """A real measurement (torch, 1 thread) stopped by a signal during its fifth timing: SIGTERM (a batch scheduler,
    `timeout`) and SIGINT (Ctrl-C) save the four done on the way out; SIGKILL, which nothing can catch, finds the
    file as the last periodic save left it (after every timing here), whole (written atomically). The next run times
    only what is missing, and its table has the entries a run in one go has."""
    import signal

    path = tmp_path / "lut.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(save_every_s)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    for _ in range(5):
        assert child.stdout.readline().startswith("timed ")
    child.send_signal(getattr(signal, signal_name))
    child.communicate(timeout=60)
    assert child.returncode != 0
    (table,) = json.loads(path.read_text()).values()
    saved = sum(n for _, n in table["partial"].values())
    keys = lut.layer_keys(ModelSpec(alpha=0.25, resolution=32))
    assert saved == 4 and table["layers"] == {}
    timer, calls = lut.KeyTimer("torch", 1, blocks=1, block=1), []
    reloaded = lut.LatencyLUT.load(path)
    lut.predict_latency(0.25, 32, runtime="torch", lut=reloaded, measure=lambda k: calls.append(k) or timer(k),
                        calibrated=False, rounds=2)  # fmt: skip
    assert len(calls) == 2 * (1 + len(set(keys))) - saved
    (table,) = json.loads(path.read_text()).values()
    assert set(table["layers"]) == set(keys) and table["overhead"] > 0 and "partial" not in table


def test_a_fill_reuses_and_drops_only_the_saved_timings_of_what_it_times(tmp_path):
    """An interrupted calibration saved timings of entries the table already holds (it times them again) and of one
    it lacks. A plain fill (``calibrated=False``) times only the missing one: its line counts only that one's
    timings as reused, and the others stay saved for the calibration that goes on from them (they were dropped, and
    counted as reused though nothing used them)."""
    keys = lut.layer_keys(ModelSpec(alpha=0.25, resolution=128))
    held, missing = keys[:-1], keys[-1]
    path = tmp_path / "lut.json"
    table = {"overhead": 0.05, "scale": None, "intercept": None, "layers": {k: 0.1 for k in held}}
    table["partial"] = {"overhead": [0.04, 1], held[0]: [0.09, 2], missing: [0.4, 1], "model:0.25:128": [3.0, 1]}
    lut.LatencyLUT(path, {lut.env_key("ort", 1, ENV): table}).save()
    said, counter = [], Counter()
    lut.predict_latency(0.25, 128, lut=lut.LatencyLUT.load(path), measure=counter, calibrated=False, env=ENV,
                        rounds=2, say=said.append)  # fmt: skip
    assert counter.calls == [missing]  # its second round only
    assert said[0].endswith("; 1 timing(s) saved by an interrupted run reused")
    (done,) = json.loads(path.read_text()).values()
    assert done["partial"] == {"overhead": [0.04, 1], held[0]: [0.09, 2], "model:0.25:128": [3.0, 1]}
    assert done["layers"][missing] == 0.4 - 0.05


def test_an_interrupted_calibration_saves_the_entries_it_times_again_after_a_fill_in_the_same_process(tmp_path):
    """A plain fill, then a calibration of the same table in one process: the calibration times the filled entries
    again, and an interruption saves those timings too (the fill's finishing them dropped them from every later save
    of the process)."""
    path = tmp_path / "lut.json"
    table = lut.LatencyLUT.load(path)
    lut.predict_latency(0.6, 176, lut=table, measure=Counter(), calibrated=False, env=ENV, rounds=1)
    own = lut.layer_keys(ModelSpec(alpha=0.6, resolution=176))
    timed = _stop_after(len(lut.calibration_items("block", own)), lambda *item: 1.0)  # after the first round
    with pytest.raises(Interrupt):
        lut.predict_latency(0.6, 176, lut=table, measure=timed, measure_whole=timed, env=ENV, rounds=2)
    (saved,) = json.loads(path.read_text()).values()
    assert {lut.OVERHEAD, *own} <= set(saved["partial"])


def test_a_failed_measurement_keeps_its_timings_and_leaves_the_error_its_one_line(tmp_path):
    """A runtime that fails mid-measurement: the timings made are saved, as on a Ctrl-C, but no line says
    "interrupted" beside the command's one-line error (the next run says what it reuses); a Ctrl-C's line stays."""
    path = tmp_path / "lut.json"
    for exc, line in ((RuntimeError("ort failed"), None), (KeyboardInterrupt(), "latency table: interrupted; 3 ")):
        path.unlink(missing_ok=True)
        said, calls = [], []

        def failing(key, exc=exc, calls=calls):
            if len(calls) == 3:
                raise exc
            calls.append(key)
            return 1.0

        with pytest.raises(type(exc)):
            lut.predict_latency(0.25, 128, lut=lut.LatencyLUT.load(path), measure=failing, calibrated=False, env=ENV,
                                say=said.append)  # fmt: skip
        (table,) = json.loads(path.read_text()).values()
        assert sum(n for _, n in table["partial"].values()) == 3
        assert [s.startswith(line) for s in said[1:]] == ([True] if line else [])  # after the line before measuring
