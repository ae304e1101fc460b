"""Latency lookup table: predict any (alpha, resolution)'s latency by summing measured per-layer latencies.

As in NetAdapt (Yang et al. 2018, Section 3.3, "layer-wise look-up tables") and FBNet (Wu et al. 2019, Section 3.3):
each distinct layer shape -- stem conv, depthwise 3x3, pointwise 1x1 (conv + folded BN + activation), and the head
(global average pool + classifier) -- is run alone on the target runtime, and a fixed per-inference overhead (the
same runtime running a trivial graph) is measured once. A layer's entry is its own latency minus that overhead, and

    latency(model) = overhead + scale x sum over the model's layers of entry(layer shape).

``scale`` corrects the one systematic bias of isolated timing: a layer run alone over and over finds its weights
and input hot in cache, while inside the network they were just evicted by the previous layers, so the raw sum
under-predicts (here by 10-25%). It is fitted once per table (least squares through the origin, on overhead-removed
latencies) from end-to-end measurements of the paper's four diagonal grid models (`ANCHORS`); with
``calibrate=False`` the table is the plain NetAdapt sum (scale 1).

Tables are stored as JSON keyed by the environment (hardware, runtime, threads, library versions), so one file can
hold tables for several machines and runtimes; shapes missing from the table are measured on demand and saved.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_text
from .complexity import conv_out, count_complexity
from .mobilenet_v1 import LayerDef, _build_layer, build_plan
from .spec import ModelSpec

LUT_RUNTIMES = ("torch", "torch-cl", "ort", "openvino", "openvino-bf16")
DEFAULT_PATH = Path(os.environ.get("MOBILENETS_CACHE", Path.home() / ".cache" / "mobilenets")) / "latency-lut.json"
OVERHEAD = "overhead"
ANCHORS = ((0.25, 128), (0.5, 160), (0.75, 192), (1.0, 224))  # calibration models: the grid's diagonal
PREDICT_COLUMNS = ("model", "alpha", "resolution", "runtime", "threads", "predicted_ms", "fps", "layers", "measured")


def layer_keys(spec: ModelSpec) -> list[str]:
    """The model's layers as LUT keys, in order (repeated shapes repeat): 'kind:in:out:k:stride:dilation:HxW'."""
    plan = build_plan(spec)
    h = w = spec.resolution
    keys = []
    for layer in [plan.stem] + [layer for block in plan.blocks for layer in block]:
        keys.append(f"{layer.kind}:{layer.in_ch}:{layer.out_ch}:{layer.kernel}:{layer.stride}:{layer.dilation}:{h}x{w}")
        h, w = conv_out(h, layer.stride), conv_out(w, layer.stride)
    keys.append(f"head:{plan.num_features}:{spec.num_classes}:{h}x{w}")
    return keys


def env_key(runtime: str, threads: int, env: dict | None = None) -> str:
    """The table a measurement belongs to: hardware, runtime, threads and the versions that change kernels."""
    from .bench import environment, hardware_tag

    env = env or environment()
    ver = {"torch": env["torch"], "ort": env["onnxruntime"], "openvino": env["openvino"]}[runtime.split("-")[0]]
    return f"{hardware_tag(env)}|{runtime}|t{threads}|{ver}"


class _Head(torch.nn.Module):
    def __init__(self, ch: int, classes: int) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(ch, classes) if classes else torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class _Alone(torch.nn.Module):
    """One layer as a model the runners accept (``fuse()`` and a ``spec`` with the input shape for ONNX export)."""

    def __init__(self, net: torch.nn.Module, in_ch: int, hw: int) -> None:
        super().__init__()
        self.net = net.eval()
        self.spec = SimpleNamespace(in_chans=in_ch, resolution=hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def fuse(self) -> _Alone:
        from .layers import fold_bn

        return _Alone(fold_bn(self.net), self.spec.in_chans, self.spec.resolution)


def layer_module(key: str, spec: ModelSpec | None = None) -> _Alone:
    """The layer a key names, built exactly as the model builds it (same conv/BN/activation modules)."""
    spec = spec or ModelSpec()
    parts = key.split(":")
    h, w = (int(v) for v in parts[-1].split("x"))
    if parts[0] == OVERHEAD:
        return _Alone(torch.nn.ReLU(), 1, 8)
    if parts[0] == "head":
        return _Alone(_Head(int(parts[1]), int(parts[2])), int(parts[1]), h)
    kind, cin, cout, k, s, d = parts[0], *map(int, parts[1:6])
    groups = cin if kind == "dw" else 1
    layer = LayerDef(kind, kind, cin, cout, k, s, d, groups)
    return _Alone(_build_layer(layer, spec), cin, h)


def measure_key(key: str, runtime: str, threads: int, *, min_runs: int = 30, min_time: float = 0.3) -> float:
    """Median ms of one layer alone on ``runtime`` (including the per-call overhead)."""
    from .bench import time_calls
    from .runtimes import make_runner

    module = layer_module(key if key != OVERHEAD else f"{OVERHEAD}:8x8")
    runner = make_runner(module, runtime, threads=threads)
    hw = module.spec.resolution
    x = np.random.default_rng(0).standard_normal((1, module.spec.in_chans, hw, hw), dtype=np.float32)
    return float(np.median(time_calls(lambda: runner(x), min_runs=min_runs, min_time=min_time, warmup=3)) * 1e3)


@dataclass
class LatencyLUT:
    """Per-environment tables ``{env_key: {"overhead": ms, "layers": {layer key: ms}}}`` backed by a JSON file."""

    path: Path | None = None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> LatencyLUT:
        p = Path(path) if path else DEFAULT_PATH
        if not p.exists():
            return cls(p)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"latency table {str(p)!r} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "layers" in v for v in data.values()):
            raise ValueError(f"latency table {str(p)!r} is not a mobilenets latency LUT")
        return cls(p, data)

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.tables, indent=1, sort_keys=True) + "\n")

    def table(self, key: str) -> dict[str, Any]:
        return self.tables.setdefault(key, {"overhead": None, "scale": None, "layers": {}})


Measurer = Callable[[str], float]


def fill(table: dict[str, Any], keys: Iterable[str], measure: Measurer) -> int:
    """Measure the overhead and every key missing from ``table``; the number of new measurements."""
    new = 0
    if table.get("overhead") is None:
        table["overhead"] = measure(OVERHEAD)
        new += 1
    for key in dict.fromkeys(keys):
        if key not in table["layers"]:
            table["layers"][key] = max(measure(key) - table["overhead"], 0.0)
            new += 1
    return new


def layer_sum(table: dict[str, Any], keys: list[str]) -> float:
    """The sum of the layers' entries (a key missing from the table is a KeyError naming it)."""
    missing = [k for k in keys if k not in table["layers"]]
    if missing or table.get("overhead") is None:
        raise KeyError(f"latency table lacks {missing[:3] or ['overhead']} ({len(missing)} shapes missing)")
    return sum(table["layers"][k] for k in keys)


def predict_from_table(table: dict[str, Any], keys: list[str]) -> float:
    """overhead + scale x the sum of the layers' entries (scale 1 until calibrated)."""
    return table["overhead"] + (table.get("scale") or 1.0) * layer_sum(table, keys)


def fit_scale(sums: list[float], measured_minus_overhead: list[float]) -> float:
    """Least-squares k in measured - overhead = k x sum (a line through the origin)."""
    s, m = np.asarray(sums, dtype=float), np.asarray(measured_minus_overhead, dtype=float)
    return float((s * m).sum() / (s * s).sum())


def calibrate(table: dict[str, Any], measure: Measurer, measure_model: Callable[[float, int], float]) -> int:
    """Fit the table's scale from end-to-end latencies of the `ANCHORS` models; the number of new measurements."""
    new = 0
    sums, target = [], []
    for alpha, res in ANCHORS:
        keys = layer_keys(ModelSpec(alpha=alpha, resolution=res))
        new += fill(table, keys, measure)
        sums.append(layer_sum(table, keys))
        target.append(measure_model(alpha, res) - table["overhead"])
        new += 1
    table["scale"] = fit_scale(sums, target)
    table["anchors"] = [list(a) for a in ANCHORS]
    return new


def measure_model(alpha: float, resolution: int, runtime: str, threads: int) -> float:
    """Median ms of the whole model end to end (the `bench` timing loop)."""
    from .bench import time_calls
    from .registry import create_model
    from .runtimes import make_runner

    runner = make_runner(create_model(ModelSpec(alpha=alpha, resolution=resolution)).eval(), runtime, threads=threads)
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    return float(np.median(time_calls(lambda: runner(x), min_runs=50, min_time=1.0, warmup=5)) * 1e3)


def predict_latency(
    alpha: float,
    resolution: int,
    *,
    runtime: str = "ort",
    threads: int = 1,
    lut: LatencyLUT | None = None,
    measure: Measurer | None = None,
    measure_whole: Callable[[float, int], float] | None = None,
    calibrated: bool = True,
    env: dict | None = None,
    save: bool = True,
    **spec_fields: Any,
) -> tuple[float, int]:
    """(predicted batch-1 latency in ms, shapes newly measured) for the model (alpha, resolution, ...).

    Missing layer shapes are measured on this machine with ``runtime`` and ``threads`` (or by ``measure``, a
    callable key -> ms, for tests and other devices) and saved to the table's file. With ``calibrated`` the table's
    scale is fitted on first use (``measure_whole(alpha, resolution) -> ms`` measures the anchors end to end).
    """
    if runtime not in LUT_RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not allowed for latency tables: one of {', '.join(LUT_RUNTIMES)}")
    spec = ModelSpec(alpha=alpha, resolution=resolution, **spec_fields)
    lut = lut if lut is not None else LatencyLUT.load()
    table = lut.table(env_key(runtime, threads, env))
    keys = layer_keys(spec)
    measure = measure or (lambda k: measure_key(k, runtime, threads))
    new = fill(table, keys, measure)
    if calibrated and table.get("scale") is None:
        whole = measure_whole or (lambda a, r: measure_model(a, r, runtime, threads))
        new += calibrate(table, measure, whole)
    if new and save:
        lut.save()
    if calibrated:
        return predict_from_table(table, keys), new
    return table["overhead"] + layer_sum(table, keys), new


def predict_rows(cfg, path: str | os.PathLike | None = None) -> list[dict]:
    """`bench --lut`: predicted latency for each model x runtime x threads of a `BenchConfig`."""
    from .bench import build, spec_label

    lut = LatencyLUT.load(path)
    rows = []
    for threads in cfg.threads:
        for runtime in cfg.runtimes:
            for name in cfg.models:
                _, spec, _ = build(name)
                ms, new = predict_latency(spec.alpha, spec.resolution, runtime=runtime, threads=threads, lut=lut)
                rows.append({"model": spec_label(spec), "alpha": spec.alpha, "resolution": spec.resolution,
                             "runtime": runtime, "threads": threads, "predicted_ms": ms, "fps": 1000.0 / ms,
                             "layers": len(layer_keys(spec)), "measured": new,
                             "macs_M": count_complexity(spec).macs / 1e6})  # fmt: skip
    return rows


def rel_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured > 0 and math.isfinite(predicted) else math.inf
