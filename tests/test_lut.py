"""Latency lookup table: sums per-layer entries correctly, caches by environment, calibrates, measures for real."""

import json
import math

import pytest

from mobilenets import lut
from mobilenets.mobilenet_v1 import build_plan
from mobilenets.spec import ModelSpec

ENV = {"cpu": "Test CPU", "cores": 4, "gpu": "none", "torch": "2.x", "onnxruntime": "1.x", "openvino": "2026"}
PER_KIND = {"overhead": 0.05, "conv": 0.3, "dw": 0.1, "pw": 0.2, "head": 0.4}


class Counter:
    def __init__(self):
        self.calls = []

    def __call__(self, key):
        self.calls.append(key)
        return PER_KIND[key.split(":")[0]]


def test_layer_keys_follow_the_plan():
    spec = ModelSpec(alpha=0.6, resolution=176)
    keys = lut.layer_keys(spec)
    assert len(keys) == 1 + 2 * 13 + 1
    assert keys[0] == "conv:3:19:3:2:1:176x176" and keys[-1] == "head:614:1000:6x6"
    assert len(set(keys)) < len(keys)  # the five 14x14x512-like blocks repeat one shape
    plan = build_plan(spec)
    assert [k.split(":")[0] for k in keys[1:-1]] == [layer.kind for block in plan.blocks for layer in block]


def test_prediction_is_overhead_plus_sum_of_layers():
    measure, table = Counter(), lut.LatencyLUT()
    ms, new = lut.predict_latency(1.0, 224, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    o = PER_KIND["overhead"]
    expected = o + (0.3 - o) + 13 * (0.1 - o) + 13 * (0.2 - o) + (0.4 - o)  # entries have the overhead removed
    assert ms == pytest.approx(expected)
    assert new == len(measure.calls) == 1 + len(set(lut.layer_keys(ModelSpec())))  # each shape measured once


def test_cache_by_environment_and_file_round_trip(tmp_path):
    path = tmp_path / "lut.json"
    measure = Counter()
    table = lut.LatencyLUT.load(path)
    first, _ = lut.predict_latency(0.5, 160, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    n = len(measure.calls)
    again, new = lut.predict_latency(0.5, 160, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    assert (again, new, len(measure.calls)) == (first, 0, n)  # cached: nothing measured
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
    # an off-grid model reuses nothing but the overhead and adds its own shapes
    _, new = lut.predict_latency(0.6, 176, runtime="ort", lut=reloaded, measure=measure, env=ENV, calibrated=False)
    assert 0 < new < n


def test_calibration_recovers_the_scale():
    measure, table = Counter(), lut.LatencyLUT()
    key = lut.env_key("ort", 1, ENV)

    def whole(alpha, res):  # a device where every layer costs 1.3x its isolated time
        t = table.table(key)
        return t["overhead"] + 1.3 * lut.layer_sum(t, lut.layer_keys(ModelSpec(alpha=alpha, resolution=res)))

    ms, _ = lut.predict_latency(0.6, 176, runtime="ort", lut=table, measure=measure, measure_whole=whole, env=ENV)
    assert table.tables[key]["scale"] == pytest.approx(1.3)
    raw, _ = lut.predict_latency(0.6, 176, runtime="ort", lut=table, measure=measure, env=ENV, calibrated=False)
    o = table.tables[key]["overhead"]
    assert ms - o == pytest.approx(1.3 * (raw - o))


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


def test_real_measurement_on_torch(tmp_path):
    path = tmp_path / "lut.json"
    ms, new = lut.predict_latency(0.25, 64, runtime="torch", lut=lut.LatencyLUT.load(path), calibrated=False)
    assert math.isfinite(ms) and ms > 0 and new == 1 + len(set(lut.layer_keys(ModelSpec(alpha=0.25, resolution=64))))
    (table,) = json.loads(path.read_text()).values()
    assert table["overhead"] > 0 and all(v >= 0 for v in table["layers"].values())
