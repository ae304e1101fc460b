"""Latency lookup table: predict any (alpha, resolution)'s latency by summing measured per-layer latencies.

As in NetAdapt (Yang et al. 2018, Section 3.3, "layer-wise look-up tables") and FBNet (Wu et al. 2019, Section 3.3,
a table per building block): each distinct shape -- stem conv, depthwise separable block (granularity "block", the
default, FBNet) or its depthwise 3x3 and pointwise 1x1 separately (granularity "layer", NetAdapt), and the head
(global average pool + classifier), all with folded BN and activation -- is run alone on the target runtime, and a
fixed per-inference overhead (the same runtime running a trivial graph) is measured once. An entry is its own
latency minus that overhead, and

    latency(model) = overhead + scale x sum over the model's layers of entry(layer shape).

A calibration corrects the systematic bias of isolated timing. Measured here (1 thread, whole model and its isolated
entries timed alternately in one process, so machine drift hits both alike): the isolated sum under-predicts the whole
model by x1.07-1.37 with torch eager and by x0.79-1.25 with ONNX Runtime, depending on the model, while the same blocks
timed inside the running model (perf_counter between blocks) sum to within 4% of it. Alone a block runs the same input
and weights over and over, hot in cache; inside the network its weights were evicted by the rest of the model since the
last inference (the classifier head, 2.9 MB of weights at alpha 0.7, runs x4 slower there, a 358x358 block +20%, an
early activation-heavy block +10-30%). With ONNX Runtime an isolated entry also pays a session run and, when its
channels are multiples of the CPU's NCHWc channel block, probably (not profiled) a reorder to and from the blocked
layout at its graph's boundaries, which the network does once: the aligned 0.25 models' whole is x0.8 their isolated
sum. Evicting the caches between isolated calls does not reproduce the network (at alpha 0.7 an 8 MB flush changed
little, a 64 MB one matched the head but a 128 MB one over-shot every layer), so the difference is fitted on anchor
models: one factor (the median ratio), a factor plus a per-entry cost, or the "memory" form -- the sum at face value
plus a cost per weight MiB, a cost per activation MiB of blocked-layout entries and an offset (`key_features`) --
whichever predicts the anchors better leave-one-out (`fit_calibration`), on `ANCHORS`: the paper grid's diagonal and 8
models drawn at random from `select`'s search space, most of them with channel counts that are not multiples of 8; with
``calibrated=False`` the table is the plain sum (overhead + sum).

The fit is only right if the anchors are timed the way the predicted models are: timings on these shared vCPUs drift by
10-30% over seconds, and entries timed a minute after the anchors fitted torch scales of 1.17-1.35 against in-network
ratios of 1.30-1.39 for the models predicted. So every figure -- entries, anchors, the benchmark's test models -- is the
minimum over rounds of round-robin passes (`time_rounds`), and `calibrate` times the overhead, the anchors' entries,
the predicted models' own entries, the anchors and (for a benchmark) the predicted models end to end in the same
rounds.

Tables are stored as JSON keyed by the environment (hardware, runtime, threads, library versions), so one file can
hold tables for several machines and runtimes; shapes missing from the table are measured on demand and saved. A
measurement saves its timings so far as it goes (every `SAVE_EVERY_S`, atomically) and when interrupted (Ctrl-C,
SIGTERM, a closed pipe), and the next run goes on from them (`time_rounds`' ``saved``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_text, check_writable, locked, not_a_file
from .complexity import conv_out, count_complexity
from .layers import DepthwiseSeparable
from .mobilenet_v1 import LayerDef, _build_layer, build_plan
from .progress import progress_lines
from .spec import ModelSpec, on_grid

LUT_RUNTIMES = ("torch", "torch-cl", "ort", "openvino", "openvino-bf16")
DEFAULT_PATH = Path(os.environ.get("MOBILENETS_CACHE", Path.home() / ".cache" / "mobilenets")) / "latency-lut.json"
OVERHEAD = "overhead"
# Calibration models: the paper grid's diagonal, plus 8 drawn at random (numpy default_rng(0), without replacement)
# from `select`'s search space (alpha 0.25-1.0 step 0.05 x resolution 96-224 step 16) minus the diagonal and the
# accuracy benchmark's test models (which are never used for fitting). Drawn like the models we predict, because the
# in-model slowdown differs between them: most have channel counts that are not multiples of 8 (x1.02-1.25 with ORT
# against x0.79-1.04 for the aligned grid) and resolutions that are not multiples of 32.
ANCHORS = ((0.25, 128), (0.5, 160), (0.75, 192), (1.0, 224),
           (0.25, 144), (0.25, 192), (0.3, 128), (0.45, 96),
           (0.45, 208), (0.6, 208), (0.7, 176), (0.85, 192))  # fmt: skip
CALIBRATION_ROUNDS = 3
FILL_ROUNDS = 3
# classes beside resolution, as bench's measured table shows them: the table times the standard 1000-way head
PREDICT_COLUMNS = ("model", "alpha", "resolution", "classes", "runtime", "threads", "predicted_ms", "fps", "layers",
                   "measured")  # fmt: skip


GRANULARITIES = ("block", "layer")


def layer_keys(spec: ModelSpec, granularity: str = "block") -> list[str]:
    """The model's entries as LUT keys, in order (repeated shapes repeat).

    ``layer`` (NetAdapt): stem, each depthwise and each pointwise conv, head: 'kind:in:out:k:stride:dilation:HxW'.
    ``block`` (FBNet, default): stem, each depthwise separable block as one entry 'block:in:out:stride:dilation:HxW'
    (the runtimes fuse or re-layout across dw -> pw, which a per-layer table cannot see), head.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r} is not allowed: one of {', '.join(GRANULARITIES)}")
    plan = build_plan(spec)
    h = w = spec.resolution
    s = plan.stem
    keys = [f"{s.kind}:{s.in_ch}:{s.out_ch}:{s.kernel}:{s.stride}:{s.dilation}:{h}x{w}"]
    h, w = conv_out(h, s.stride), conv_out(w, s.stride)
    for block in plan.blocks:
        if granularity == "block" and len(block) == 2:
            dw, pw = block
            keys.append(f"block:{dw.in_ch}:{pw.out_ch}:{dw.stride}:{dw.dilation}:{h}x{w}")
        else:
            for layer in block:
                k = f"{layer.kind}:{layer.in_ch}:{layer.out_ch}:{layer.kernel}:{layer.stride}:{layer.dilation}:{h}x{w}"
                keys.append(k)
                h, w = conv_out(h, layer.stride), conv_out(w, layer.stride)
            continue
        h, w = conv_out(h, block[0].stride), conv_out(w, block[0].stride)
    keys.append(f"head:{plan.num_features}:{spec.num_classes}:{h}x{w}")
    return keys


def env_key(runtime: str, threads: int, env: dict | None = None, granularity: str = "block") -> str:
    """The table a measurement belongs to: hardware, runtime, threads, the versions that change kernels, and the
    table's granularity (its calibration scale belongs to it)."""
    from .bench import environment, hardware_tag

    env = env or environment()
    ver = {"torch": env["torch"], "ort": env["onnxruntime"], "openvino": env["openvino"]}[runtime.split("-")[0]]
    return f"{hardware_tag(env)}|{runtime}|t{threads}|{ver}|{granularity}"


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
    if parts[0] == "block":
        cin, cout, st, d = map(int, parts[1:5])
        net = DepthwiseSeparable(cin, cout, stride=st, dilation=d, act=spec.act, tf_padding=spec.tf_padding)
        return _Alone(net, cin, h)
    kind, cin, cout, k, s, d = parts[0], *map(int, parts[1:6])
    groups = cin if kind == "dw" else 1
    layer = LayerDef(kind, kind, cin, cout, k, s, d, groups)
    return _Alone(_build_layer(layer, spec), cin, h)


BLOCK_S = 0.03  # seconds per timing block, for layers and whole models alike


def block_ms(fn: Callable[[], Any], *, blocks: int = 5, block: int = 10, block_s: float = BLOCK_S) -> float:
    """`bench.robust_ms` (lowest of ``blocks`` block medians) with blocks of at least ``block_s`` seconds rather than
    a fixed count, so a 0.2 ms layer and a 10 ms model are timed over windows of the same length. With fixed counts a
    layer's blocks (a few ms) slip between the bursts of other work on the shared vCPUs that a model's blocks (0.1 s)
    cannot, biasing the entries low against the models by an amount that depends on how busy the machine is."""
    from .bench import robust_ms

    t0 = time.perf_counter()
    for _ in range(3):  # warm-up, and the call's duration
        fn()
    per_call = (time.perf_counter() - t0) / 3
    return robust_ms(fn, blocks=blocks, block=max(block, math.ceil(block_s / max(per_call, 1e-6))), warmup=0)


class KeyTimer:
    """``key -> ms`` of one layer alone on ``runtime`` (including the per-call overhead): the lowest of ``blocks``
    block medians (`block_ms`), so a burst of other work on a shared machine does not enter the table. Each
    layer's runner is built once and kept until `close`, so a key timed in several rounds is exported and loaded
    once."""

    def __init__(self, runtime: str, threads: int, *, blocks: int = 5, block: int = 10) -> None:
        self.runtime, self.threads, self.blocks, self.block = runtime, threads, blocks, block
        self._runners: dict[str, Callable[[], Any]] = {}

    def _runner(self, key: str) -> Callable[[], Any]:
        from .runtimes import make_runner

        module = layer_module(key if key != OVERHEAD else f"{OVERHEAD}:8x8")
        hw = module.spec.resolution
        x = np.random.default_rng(0).standard_normal((1, module.spec.in_chans, hw, hw), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="mobilenets-lut-") as tmp:  # the runtimes hold the graph once built
            onnx = self.runtime.startswith(("ort", "openvino"))
            onnx_path = _layer_onnx(module.fuse(), x, Path(tmp) / "layer.onnx") if onnx else None
            runner = make_runner(module, self.runtime, threads=self.threads, onnx_path=onnx_path)
        return lambda: runner(x)

    def __call__(self, key: str) -> float:
        if key not in self._runners:
            self._runners[key] = self._runner(key)
        return block_ms(self._runners[key], blocks=self.blocks, block=self.block)

    def close(self) -> None:
        self._runners.clear()


def measure_key(key: str, runtime: str, threads: int, *, blocks: int = 5, block: int = 10) -> float:
    """ms of one layer alone on ``runtime`` (see `KeyTimer`)."""
    return KeyTimer(runtime, threads, blocks=blocks, block=block)(key)


def _layer_onnx(module: torch.nn.Module, x: np.ndarray, path: Path) -> Path:
    """A plain ONNX export of one layer (the model exporter's metadata needs a whole-model spec)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])  # fmt: skip
    return path


# a table's numbers that a prediction reads (`predict_from_table`); each may be missing or null until measured
TABLE_NUMBERS = ("overhead", "scale", "intercept", "per_layer", "ms_per_weight_mb", "ms_per_blocked_mb",
                 "block_channels")  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad_entry(table: dict[str, Any]) -> str | None:
    """What is wrong with one environment's table (``layers`` not an object of finite numbers, a number field that is
    not one), or None."""
    layers = table["layers"]
    if not isinstance(layers, dict):
        return f"layers is a JSON {type(layers).__name__}, not an object of layer times"
    if (key := next((k for k, v in layers.items() if not _is_number(v)), None)) is not None:
        return f"layer {key!r} is {layers[key]!r}, not a finite number of ms"
    if name := next((n for n in TABLE_NUMBERS if table.get(n) is not None and not _is_number(table[n])), None):
        return f"{name} is {table[name]!r}, not a finite number"
    partial = table.get("partial", {})
    if not isinstance(partial, dict):
        return f"partial is a JSON {type(partial).__name__}, not an object of unfinished timings"
    if (key := next((k for k, v in partial.items() if not _is_timing(v)), None)) is not None:
        return f"partial timing {key!r} is {partial[key]!r}, not [ms, rounds timed]"
    return None


def _is_timing(value: Any) -> bool:
    """An unfinished measurement's figure (`time_rounds`' ``saved``): [lowest ms, rounds timed >= 1]."""
    return (isinstance(value, list) and len(value) == 2 and _is_number(value[0]) and isinstance(value[1], int)
            and not isinstance(value[1], bool) and value[1] >= 1)  # fmt: skip


def _merge_timings(held: dict[str, list], ours: dict[str, list]) -> dict[str, list]:
    """Two processes' unfinished timings of one table: per item the one timed in more rounds (then the lower)."""
    merged = dict(held)
    for name, (ms, n) in ours.items():
        if name not in merged or (n, -ms) > (merged[name][1], -merged[name][0]):
            merged[name] = [ms, n]
    return merged


@dataclass
class LatencyLUT:
    """Per-environment tables ``{env_key: {"overhead": ms, "layers": {layer key: ms}}}`` backed by a JSON file.

    A table being measured also holds ``"partial": {item: [lowest ms, rounds timed]}``, the timings of a measurement
    not finished yet (`predict_many` saves them as it goes, and on an interruption): the next run goes on from them.
    A file without it (older ones) reads as before, and older code reading a file with it measures from scratch."""

    path: Path | None = None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per table, the unfinished timings this process has used up (now entries): dropped from the file's on saving
    finished: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> LatencyLUT:
        p = Path(path) if path else DEFAULT_PATH
        if (what := not_a_file(p)) is not None:
            raise ValueError(f"latency table {str(p)!r} {what}, expected a latency table JSON file")
        if not p.exists():
            return cls(p)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"latency table {str(p)!r} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "layers" in v for v in data.values()):
            raise ValueError(f"latency table {str(p)!r} is not a mobilenets latency LUT")
        for key, table in data.items():  # a hand-edited entry stopped a prediction with a TypeError traceback
            if (bad := _bad_entry(table)) is not None:
                raise ValueError(f"latency table {str(p)!r} is not a mobilenets latency LUT: {key!r} {bad}")
        return cls(p, data)

    def save(self) -> None:
        """Write the tables, merged into what the file holds now: another process (a second `select` measuring at
        the same time) may have saved entries since this one loaded it, and a plain write dropped them. Under an
        exclusive lock (`atomic.locked`) each table's layers are the union, and this process's calibration is kept
        unless only the file's table is calibrated."""
        if self.path is None:
            return
        with locked(self.path):
            disk = LatencyLUT.load(self.path).tables if self.path.exists() else {}
            for key, table in self.tables.items():
                held = disk.get(key)
                merged = table
                if held is not None:
                    base = held if table.get("scale") is None and held.get("scale") is not None else table
                    merged = {**base, "layers": {**held["layers"], **table["layers"]}}
                self.tables[key] = self._with_timings(key, merged, (held or {}).get("partial", {}), table)
            self.tables = {**disk, **self.tables}
            atomic_write_text(self.path, json.dumps(self.tables, indent=1, sort_keys=True) + "\n")

    def save_timings(self, key: str) -> None:
        """Write the unfinished timings of table ``key`` (``partial``) into the file, merged with the file's (another
        process may be measuring the same table), and nothing else: the file's entries and calibration stay as they
        are. Atomic (`atomic_write_text`) and under the lock `save` takes, so an interrupted or killed measurement
        leaves either the previous file or this one."""
        if self.path is None:
            return
        with locked(self.path):
            disk = LatencyLUT.load(self.path).tables if self.path.exists() else {}
            held = disk.get(key) or {"overhead": None, "scale": None, "intercept": None, "layers": {}}
            disk[key] = self._with_timings(key, held, held.get("partial", {}), self.tables[key])
            atomic_write_text(self.path, json.dumps(disk, indent=1, sort_keys=True) + "\n")

    def _with_timings(self, key: str, table: dict, held: dict[str, list], ours: dict) -> dict[str, Any]:
        """``table`` with the unfinished timings of the file (``held``) and of this process (``ours``) merged, less
        those this process has made entries of, and, once the table is calibrated, those of items it holds."""
        timings = _merge_timings(held, ours.get("partial", {}))
        done = self.finished.get(key, set())
        if table.get("scale") is not None:  # calibrated: what a fill or calibration left of its items is done with
            done = done | set(table["layers"]) | {n for n in timings if n == OVERHEAD or n.startswith("model:")}
        timings = {n: v for n, v in timings.items() if n not in done}
        out = {k: v for k, v in table.items() if k != "partial"}
        return {**out, "partial": timings} if timings else out

    def table(self, key: str) -> dict[str, Any]:
        return self.tables.setdefault(key, {"overhead": None, "scale": None, "intercept": None, "layers": {}})


Measurer = Callable[[str], float]


Progress = Callable[[int, int], None]  # (timings done, timings in all)


def time_rounds(
    items: Iterable[Any],
    measure: Callable[..., float],
    rounds: int,
    progress: Progress | None = None,
    saved: dict[str, list] | None = None,
) -> dict[Any, float]:
    """Each item's minimum over ``rounds`` round-robin passes of ``measure(item)`` (a tuple item is unpacked), so
    every figure has the chance of a quiet moment of the machine (a slow phase lasts seconds, longer than one
    item's timing). The one timing discipline of the table's entries, its anchors and the accuracy benchmark.
    ``progress(done, total)`` hears each timing (`progress_lines` turns it into a line every half minute).

    ``saved`` (``{item_name(item): [lowest ms, rounds timed]}``) is updated after every timing, and an item found in
    it is timed only in the rounds it lacks: a measurement interrupted and saved (`predict_many`) goes on where it
    stopped, its figures still each the minimum over ``rounds`` timings (some from the earlier run)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is not allowed: at least 1")
    todo = list(dict.fromkeys(items))
    saved = {} if saved is None else saved
    names = {item: item_name(item) for item in todo}
    best: dict[Any, float] = {}
    for item in todo:
        if names[item] in saved:
            best[item] = saved[names[item]][0]
    total = sum(rounds - min(saved.get(names[item], (0, 0))[1], rounds) for item in todo)
    done = 0
    for r in range(rounds if todo else 0):
        for item in todo:
            if names[item] in saved and saved[names[item]][1] > r:
                continue
            ms = measure(*item) if isinstance(item, tuple) else measure(item)
            best[item] = min(best.get(item, math.inf), ms)
            saved[names[item]] = [best[item], r + 1]
            done += 1
            if progress is not None:
                progress(done, total)
    return best


def item_name(item: Any) -> str:
    """A `time_rounds` item as a JSON key: a layer key as it is, a model ``(alpha, resolution)`` as
    ``model:alpha:resolution``."""
    return item if isinstance(item, str) else "model:" + ":".join(str(v) for v in item)


def fill(
    table: dict[str, Any],
    keys: Iterable[str],
    measure: Measurer,
    rounds: int = FILL_ROUNDS,
    progress: Progress | None = None,
    saved: dict[str, list] | None = None,
) -> int:
    """Measure the overhead and every key missing from ``table`` (`time_rounds`, going on from ``saved``); the number
    of shapes newly measured."""
    todo = fill_items(table, keys)
    raw = time_rounds(todo, measure, rounds, progress, saved)
    if OVERHEAD in raw:
        table["overhead"] = raw.pop(OVERHEAD)
    for key, ms in raw.items():
        table["layers"][key] = max(ms - table["overhead"], 0.0)
    return len(todo)


def fill_items(table: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """What `fill` times: the overhead unless the table has it, and the keys it lacks."""
    missing = [k for k in dict.fromkeys(keys) if k not in table["layers"]]
    return ([OVERHEAD] if table.get("overhead") is None else []) + missing


def layer_sum(table: dict[str, Any], keys: list[str]) -> float:
    """The sum of the layers' entries (a key missing from the table is a KeyError naming it)."""
    missing = [k for k in keys if k not in table["layers"]]
    if missing or table.get("overhead") is None:
        raise KeyError(f"latency table lacks {missing[:3] or ['overhead']} ({len(missing)} shapes missing)")
    return sum(table["layers"][k] for k in keys)


def block_channels(runtime: str = "ort") -> int:
    """The channel block of ``runtime``'s blocked convolution layout on this CPU, for the memory features: ONNX
    Runtime's (MLAS) NCHWc and OpenVINO's blocked layouts use 16 channels with AVX-512 and 8 otherwise (AVX2; on other
    CPUs a guess). Entries whose channels are multiples of it are reordered to and from the blocked layout at their
    isolated graph's boundaries (see `key_features`). 0 for PyTorch eager, which reorders around every convolution,
    alone or inside the network alike."""
    from .runtimes import cpu_flags

    if not runtime.startswith(("ort", "openvino")):
        return 0
    return 16 if "avx512f" in cpu_flags() else 8


def key_features(key: str, block: int = 16) -> tuple[float, float, bool]:
    """(weight MiB, activation MiB in + out, channels a multiple of ``block``) of one entry, fp32, from its key.

    The features of the "memory" calibration (`fit_calibration`): inside the network a layer's weights come back
    from memory each inference (the rest of the model evicted them; alone they stay hot), a cost per weight byte; and
    a layer whose channels fit the runtime's blocked layout is reordered to and from it at the boundaries of its
    isolated graph but not inside the network, a saving per activation byte. ``block`` 0: no entry is blocked."""
    parts = key.split(":")
    if parts[0] == OVERHEAD:
        return 0.0, 0.0, False
    h, w = (int(v) for v in parts[-1].split("x"))
    if parts[0] == "head":
        cin, classes = int(parts[1]), int(parts[2])
        weights, acts, aligned = cin * classes + classes, cin * h * w + classes, block > 0 and cin % block == 0
    else:
        if parts[0] == "block":
            cin, cout, stride = int(parts[1]), int(parts[2]), int(parts[3])
            weights = cin * 9 + cin + cin * cout + cout  # depthwise 3x3 + bias, pointwise + bias (BN folded)
        else:
            kind, cin, cout, k, stride = parts[0], int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
            weights = (cin * k * k if kind == "dw" else cin * cout * k * k) + cout
        ho, wo = conv_out(h, stride), conv_out(w, stride)
        acts = cin * h * w + cout * ho * wo
        aligned = block > 0 and cout % block == 0 and (cin % block == 0 or cin == 3)  # the stem reads RGB
    return weights * 4 / 2**20, acts * 4 / 2**20, aligned


def memory_features(keys: list[str], block: int = 16) -> tuple[float, float]:
    """(weight MiB of all entries, activation MiB of the entries in the blocked layout): `key_features` summed."""
    feats = [key_features(k, block) for k in keys]
    return sum(f[0] for f in feats), sum(f[1] for f in feats if f[2])


def predict_from_table(table: dict[str, Any], keys: list[str]) -> float:
    """intercept + scale x the sum of the entries + per_layer x their number + the memory terms (ms per weight MiB,
    ms per blocked activation MiB; `memory_features`); overhead + sum until calibrated. At least the overhead (the
    runtime running a trivial graph): a fitted negative offset or per-MiB saving took the smallest models to 0 or
    below, which met every latency budget (FPS infinite, written as JSON's invalid ``Infinity``)."""
    scale = table.get("scale") or 1.0
    intercept = table.get("intercept")
    base = table["overhead"] if intercept is None else intercept
    ms = base + scale * layer_sum(table, keys) + (table.get("per_layer") or 0.0) * len(keys)
    per_weight, per_blocked = table.get("ms_per_weight_mb") or 0.0, table.get("ms_per_blocked_mb") or 0.0
    if per_weight or per_blocked:
        weights, blocked = memory_features(keys, table.get("block_channels", 16))
        ms += per_weight * weights + per_blocked * blocked
    return max(ms, table["overhead"])


def fit_scale(sums: list[float], measured: list[float], overhead: float) -> float:
    """The median over the anchors of (measured - overhead) / sum: latency = overhead + scale x sum.

    One multiplicative factor, because the in-model slowdown scales with the layers' own work (timed interleaved:
    x1.22-1.35 torch, x1.09-1.28 ORT for 0.35-208, 0.45-144, 0.7-128), and the median, because one anchor caught in
    a slow phase of the machine must not move it."""
    s, m = np.asarray(sums, dtype=float), np.asarray(measured, dtype=float)
    if len(s) == 0 or np.any(s <= 0):
        raise ValueError(f"cannot fit a scale on layer sums {sums!r}: need at least one, all positive")
    return float(np.median((m - overhead) / s))


def fit_per_layer(sums: list[float], counts: list[int], measured: list[float], overhead: float) -> tuple[float, float]:
    """(scale, per_layer) of latency = overhead + scale x sum + per_layer x entries, least squares in relative error.

    ``per_layer`` is what each isolated entry pays that the layer inside the network does not (or the reverse): with
    ONNX Runtime every entry is a whole ``session.run`` (input/output binding, graph-boundary reorders), a cost the
    trivial-graph overhead does not fully cover, which is why the smallest models' blocks sum to more than the model
    (0.25-128: the whole model is x0.78 of its isolated sum)."""
    s, n, m = (np.asarray(v, dtype=float) for v in (sums, counts, measured))
    if len(s) < 2 or np.any(s <= 0):
        raise ValueError(f"cannot fit scale and per-layer cost on layer sums {sums!r}: need two or more, all positive")
    y = m - overhead
    (scale, per_layer), *_ = np.linalg.lstsq(np.stack([s, n], axis=1) / m[:, None], y / m, rcond=None)
    return float(scale), float(per_layer)


def fit_memory(
    sums: list[float], weights_mb: list[float], blocked_mb: list[float], measured: list[float], overhead: float
) -> tuple[float, float, float]:
    """(ms per weight MiB, ms per blocked activation MiB, offset ms) of latency = overhead + sum + offset + the two
    memory terms (`key_features`), least squares in relative error: the isolated sum kept at face value and the
    in-network difference explained by the bytes that move differently there. Fitted here (12 anchors, 1 thread):
    torch eager +0.15-0.20 ms per weight MiB (5-7 GB/s), ONNX Runtime +0.05-0.12 ms per weight MiB and about -0.04 ms
    per blocked activation MiB."""
    s, w, b, m = (np.asarray(v, dtype=float) for v in (sums, weights_mb, blocked_mb, measured))
    if len(s) < 3:
        raise ValueError(f"cannot fit the memory terms on {len(s)} anchors: need three or more")
    x = np.stack([w, b, np.ones_like(s)], axis=1) / m[:, None]
    (per_weight, per_blocked, offset), *_ = np.linalg.lstsq(x, (m - overhead - s) / m, rcond=None)
    return float(per_weight), float(per_blocked), float(offset)


CALIBRATIONS = ("median", "per_layer", "memory")


def fit_calibration(
    sums: list[float],
    counts: list[int],
    measured: list[float],
    overhead: float,
    memory: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Choose between `fit_scale` (one factor), `fit_per_layer` (factor and per-entry cost) and, given each anchor's
    ``memory`` features ((weight MiB, blocked activation MiB), `memory_features`), `fit_memory` by leave-one-out over
    the anchors alone (the median relative error of each anchor predicted from the others), then fit it on all of
    them: ``{"scale", "per_layer", "offset", "ms_per_weight_mb", "ms_per_blocked_mb", "method", "loo_median_pct":
    {method: %}}``. Which form wins varies between runs on this machine (benchmarks/lut_accuracy.py; the README lists
    every committed run); the memory form is there for ONNX Runtime, whose in-network ratio runs from x0.8 for the
    0.25 models to x1.25, which no single factor follows."""
    s, n, m = (np.asarray(v, dtype=float) for v in (sums, counts, measured))
    feats = np.asarray(memory, dtype=float).reshape(-1, 2) if memory is not None else None
    if feats is not None and len(feats) != len(s):
        raise ValueError(f"memory features for {len(feats)} anchors, but {len(s)} sums")

    def fit(method: str, idx: np.ndarray) -> tuple[float, float, float, float, float]:
        """(scale, per_layer, offset, per weight MiB, per blocked MiB)."""
        if method == "median":
            return fit_scale(list(s[idx]), list(m[idx]), overhead), 0.0, 0.0, 0.0, 0.0
        if method == "per_layer":
            return (*fit_per_layer(list(s[idx]), list(n[idx]), list(m[idx]), overhead), 0.0, 0.0, 0.0)
        per_weight, per_blocked, offset = fit_memory(
            list(s[idx]), list(feats[idx, 0]), list(feats[idx, 1]), list(m[idx]), overhead
        )
        return 1.0, 0.0, offset, per_weight, per_blocked

    def predict(params: tuple[float, ...], i: int) -> float:
        scale, per_layer, offset, per_weight, per_blocked = params
        extra = per_weight * feats[i, 0] + per_blocked * feats[i, 1] if feats is not None else 0.0
        return overhead + offset + scale * s[i] + per_layer * n[i] + extra

    everything = np.arange(len(s))
    candidates = [c for c in CALIBRATIONS if c != "memory" or (feats is not None and len(s) >= 5)]
    loo: dict[str, float] = {}
    if len(s) >= 3:
        for method in candidates:
            errors = [abs(predict(fit(method, everything != i), i) - m[i]) / m[i] for i in everything]
            loo[method] = 100 * float(np.median(errors))
    method = min(loo, key=lambda k: (loo[k], CALIBRATIONS.index(k))) if loo else "median"
    all_anchors = np.ones(len(s), dtype=bool)
    params = fit(method, all_anchors)
    if params[0] <= 0 or any(predict(params, i) <= 0 for i in everything):  # not physical: the one-factor fit
        method, params = "median", fit("median", all_anchors)
    keys = ("scale", "per_layer", "offset", "ms_per_weight_mb", "ms_per_blocked_mb")
    return {**dict(zip(keys, params, strict=True)), "method": method, "loo_median_pct": loo}


def calibrate(
    table: dict[str, Any],
    measure: Measurer,
    measure_model: Callable[[float, int], float],
    granularity: str = "block",
    rounds: int = CALIBRATION_ROUNDS,
    *,
    keys: Iterable[str] = (),
    models: Iterable[tuple[float, int]] = (),
    block: int | None = None,
    progress: Progress | None = None,
    saved: dict[str, list] | None = None,
) -> tuple[int, dict[tuple[float, int], float]]:
    """Fit the table's calibration (`fit_calibration`) from end-to-end latencies of the `ANCHORS` models: (the number
    of shapes and models newly measured, ``{model: ms}`` of the extra ``models``; one that is an anchor is timed once).

    Each of ``rounds`` rounds times the overhead, all the anchors' entries and the extra ``keys`` (the shapes of the
    models about to be predicted) round-robin, then every anchor and the extra ``models`` (a benchmark's check) end
    to end (`time_rounds`, minimum per figure): entries, anchors and predicted models share every round, so a slow
    phase of the machine that lasts longer than a round (a minute) inflates all of them rather than one side of the
    ratio. (Timing the predicted models' entries after the calibration let torch's scale fit 1.17-1.35 against test
    models' in-network ratios of 1.30-1.39, a median error of up to 13.8%.) ``block`` is the runtime's channel block
    for the memory features (`block_channels`; default that of ONNX Runtime); ``progress`` hears each timing;
    ``saved`` holds an interrupted calibration's timings to go on from (`time_rounds`)."""
    block = block_channels() if block is None else block
    anchors = {a: layer_keys(ModelSpec(alpha=a[0], resolution=a[1]), granularity) for a in ANCHORS}
    extra_models = [m for m in dict.fromkeys(models) if m not in anchors]
    items = calibration_items(granularity, keys, models)
    timed = time_rounds(
        items, lambda *item: measure_model(*item) if len(item) == 2 else measure(*item), rounds, progress, saved
    )
    whole = {m: timed.pop(m) for m in [*anchors, *extra_models]}
    table["overhead"] = timed.pop(OVERHEAD)
    for key, ms in timed.items():
        table["layers"][key] = max(ms - table["overhead"], 0.0)
    sums = [layer_sum(table, ks) for ks in anchors.values()]
    target = [whole[a] for a in ANCHORS]
    counts = [len(ks) for ks in anchors.values()]
    memory = [memory_features(ks, block) for ks in anchors.values()]
    fitted = fit_calibration(sums, counts, target, table["overhead"], memory)
    table.update(
        intercept=table["overhead"] + fitted["offset"],
        scale=fitted["scale"],
        per_layer=fitted["per_layer"],
        ms_per_weight_mb=fitted["ms_per_weight_mb"],
        ms_per_blocked_mb=fitted["ms_per_blocked_mb"],
        block_channels=block,
    )
    table["fit"] = {"method": fitted["method"], "loo_median_pct": fitted["loo_median_pct"]}
    table["anchors"] = [[a, r, m] for (a, r), m in zip(ANCHORS, target, strict=True)]
    return 1 + len(timed) + len(whole), {m: whole[m] for m in dict.fromkeys(models)}


def calibration_items(granularity: str, keys: Iterable[str] = (), models: Iterable[tuple[float, int]] = ()) -> list:
    """What `calibrate` times each round, in order: the overhead, the anchors' entries and ``keys`` (entries already
    in the table are timed again), then the anchors and the extra ``models`` end to end."""
    anchors = {a: layer_keys(ModelSpec(alpha=a[0], resolution=a[1]), granularity) for a in ANCHORS}
    entries = [OVERHEAD, *(k for ks in anchors.values() for k in ks), *keys]
    return [*dict.fromkeys(entries), *anchors, *(m for m in dict.fromkeys(models) if m not in anchors)]


class ModelTimer:
    """``(alpha, resolution) -> ms`` of the whole model end to end on ``runtime``, with the same statistic as the
    layers (`block_ms`); each model's runner is built once and kept until `close`."""

    def __init__(self, runtime: str, threads: int) -> None:
        self.runtime, self.threads = runtime, threads
        self._runners: dict[tuple[float, int], Callable[[], Any]] = {}

    def __call__(self, alpha: float, resolution: int) -> float:
        from .registry import create_model
        from .runtimes import make_runner

        if (alpha, resolution) not in self._runners:
            model = create_model(ModelSpec(alpha=alpha, resolution=resolution)).eval()
            runner = make_runner(model, self.runtime, threads=self.threads)
            x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
            self._runners[alpha, resolution] = lambda: runner(x)
        return block_ms(self._runners[alpha, resolution], blocks=5, block=10)

    def close(self) -> None:
        self._runners.clear()


def measure_model(alpha: float, resolution: int, runtime: str, threads: int) -> float:
    """ms of the whole model end to end (see `ModelTimer`)."""
    return ModelTimer(runtime, threads)(alpha, resolution)


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
    granularity: str = "block",
    env: dict | None = None,
    save: bool = True,
    rounds: int = FILL_ROUNDS,
    say: Callable[[str], None] | None = None,
    **spec_fields: Any,
) -> tuple[float, int]:
    """(predicted batch-1 latency in ms, shapes newly measured) for the model (alpha, resolution, ...).

    Missing layer shapes are measured on this machine with ``runtime`` and ``threads`` (or by ``measure``, a
    callable key -> ms, for tests and other devices) and saved to the table's file. With ``calibrated`` the table's
    calibration is fitted on first use (``measure_whole(alpha, resolution) -> ms`` measures the anchors end to end),
    and the model's own missing shapes are timed in the calibration's rounds (`calibrate`); otherwise on their own
    (`fill`). Either way in ``rounds`` round-robin rounds; ``say`` hears a line before any measuring starts and how
    far it is every half minute (`progress_lines`).
    """
    spec = ModelSpec(alpha=alpha, resolution=resolution, **spec_fields)
    kw = dict(runtime=runtime, threads=threads, lut=lut, measure=measure, measure_whole=measure_whole, say=say)
    return predict_many(
        [spec], calibrated=calibrated, granularity=granularity, env=env, save=save, rounds=rounds, **kw
    )[0]


def predict_many(
    specs: Iterable[ModelSpec],
    *,
    runtime: str = "ort",
    threads: int = 1,
    lut: LatencyLUT | None = None,
    measure: Measurer | None = None,
    measure_whole: Callable[[float, int], float] | None = None,
    calibrated: bool = True,
    granularity: str = "block",
    env: dict | None = None,
    save: bool = True,
    rounds: int = FILL_ROUNDS,
    say: Callable[[str], None] | None = None,
) -> list[tuple[float, int]]:
    """`predict_latency` for several models at once: their missing shapes are measured together, round-robin, so each
    entry's rounds are spread over the whole measurement (minutes rather than seconds: a slow phase of the shared
    machine then cannot inflate every round of one model's shapes). Each model's count is the shapes first measured
    for it (the calibration's go to the first model)."""
    if runtime not in LUT_RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not allowed for latency tables: one of {', '.join(LUT_RUNTIMES)}")
    all_keys = [layer_keys(spec, granularity) for spec in specs]
    if not all_keys:
        return []
    lut = lut if lut is not None else LatencyLUT.load()
    table_key = env_key(runtime, threads, env, granularity)
    table = lut.table(table_key)
    seen = set(table["layers"]) | ({OVERHEAD} if table.get("overhead") is not None else set())
    counts = []
    for keys in all_keys:  # each model's count: the shapes first measured for it
        fresh = [k for k in dict.fromkeys([OVERHEAD, *keys]) if k not in seen]
        counts.append(len(fresh))
        seen.update(fresh)
    own = [k for keys in all_keys for k in keys]
    calibrating = calibrated and table.get("scale") is None
    measuring = any(counts) or calibrating
    if measuring and (measure is None or (calibrating and measure_whole is None)):  # timed here, on ``threads``
        from .cores import check_threads

        check_threads(threads, use=" to measure the latency table here")
    if save and lut.path is not None and measuring:  # before minutes of measuring, not after
        check_writable(lut.path)
    if not measuring:
        return _predictions(table, all_keys, counts, calibrated)
    # the items this run times (`calibrate`'s, or `fill`'s), and the timings an interrupted run saved of them
    items = {item_name(i) for i in (calibration_items(granularity, own) if calibrating else fill_items(table, own))}
    saved = table.setdefault("partial", {})
    lut.finished.get(table_key, set()).difference_update(items)  # timed again (a calibration after a fill): unfinished
    reused = sum(min(n, rounds) for name, (_, n) in saved.items() if name in items)
    if say is not None:  # minutes on a busy CPU: say so before going quiet
        also = " and calibrating" if calibrating else ""
        again = f"; {reused} timing(s) saved by an interrupted run reused" if reused else ""
        say(f"latency table: measuring {sum(counts)} layer shape(s){also} on {runtime}, {threads} thread(s), "
            f"{rounds} rounds (once per machine; saved for next time){again}")  # fmt: skip
    saving = save and lut.path is not None
    timer = None if measure else KeyTimer(runtime, threads)
    measure, whole = measure or timer, None
    progress = _saving_progress(lut, table_key, progress_lines(say, "latency table") if say else None, saving)
    try:
        with _torch_threads_for(runtime, threads), _sigterm_interrupts():
            if calibrating:  # the models' shapes share the anchors' rounds
                whole = measure_whole or ModelTimer(runtime, threads)
                block = block_channels(runtime)
                n, _ = calibrate(table, measure, whole, granularity, rounds, keys=own, block=block,
                                 progress=progress, saved=saved)  # fmt: skip
                counts[0] += n - sum(counts)  # the anchors' shapes and the anchors go to the first model
            fill(table, own, measure, rounds, progress, saved)
    except BaseException as exc:  # Ctrl-C, SIGTERM, a closed pipe, a failing runtime: keep what was timed
        if saving and saved:
            _keep_timings(lut, table_key, exc, say)
        raise
    finally:
        for built in (timer, whole):
            if isinstance(built, KeyTimer | ModelTimer):
                built.close()
    for name in items:  # entries now
        saved.pop(name, None)
    if not saved:
        del table["partial"]
    lut.finished.setdefault(table_key, set()).update(items)
    if any(counts) and save:
        lut.save()
    return _predictions(table, all_keys, counts, calibrated)


def _predictions(table: dict[str, Any], all_keys: list[list[str]], counts: list[int], calibrated: bool) -> list:
    if calibrated:
        return [(predict_from_table(table, keys), n) for keys, n in zip(all_keys, counts, strict=True)]
    return [(table["overhead"] + layer_sum(table, keys), n) for keys, n in zip(all_keys, counts, strict=True)]


# seconds between two saves of a measurement's timings so far (`predict_many`): a SIGKILL or power cut loses at most
# this much of a 10-minute measurement; each save rewrites the file (about 0.1 MB per table), a few ms
SAVE_EVERY_S = 10.0


def _saving_progress(lut: LatencyLUT, key: str, progress: Progress | None, saving: bool) -> Progress | None:
    """``progress``, also saving table ``key``'s timings so far (`LatencyLUT.save_timings`) every `SAVE_EVERY_S`."""
    if not saving:
        return progress
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        if time.monotonic() - last[0] >= SAVE_EVERY_S and done < total:
            lut.save_timings(key)
            last[0] = time.monotonic()

    return report


def _keep_timings(lut: LatencyLUT, key: str, exc: BaseException, say: Callable[[str], None] | None) -> None:
    """Save an interrupted or failed measurement's timings, and say so for an interruption (Ctrl-C, SIGTERM): an
    error's one line is the command's (the next run says what it reuses); a failure to save is a note on ``exc``,
    not a new error hiding it."""
    timings = sum(n for _, n in lut.tables[key]["partial"].values())
    try:
        lut.save_timings(key)
    except Exception as err:  # noqa: BLE001 - the interruption is what the user must see
        exc.add_note(f"latency table: the {timings} timing(s) made were not saved: {err}")
        return
    if say is not None and isinstance(exc, KeyboardInterrupt):
        with contextlib.suppress(OSError):  # a closed stderr: nothing to say it on
            say(f"latency table: interrupted; {timings} timing(s) saved in {lut.path}: the same command goes on "
                "from them")  # fmt: skip


def _sigterm_interrupts():
    """SIGTERM raises `stopping.Terminated` (a KeyboardInterrupt) in the block, as Ctrl-C does, so that the timings
    are saved on the way out (Python's default ends the process at once); the caller's handler, if it set one, is
    left alone."""
    from .stopping import StopRequest, sigterm_stops

    return sigterm_stops(StopRequest())


def _torch_threads_for(runtime: str, threads: int):
    """torch's thread count held at ``threads`` while a torch runtime is timed (restored after), so that the timed
    calls do not each switch it (`runtimes.torch_threads`); other runtimes set theirs per session."""
    from contextlib import nullcontext

    from .runtimes import RUNTIME_INFO, torch_threads

    return torch_threads(threads) if RUNTIME_INFO[runtime].engine == "torch" else nullcontext()


def predict_rows(cfg, path: str | os.PathLike | None = None) -> list[dict]:
    """`bench --lut`: predicted latency for each model x runtime x threads of a `BenchConfig`, validated first (a
    thread count of 0 or -1 would otherwise start measuring a table of its own). The table predicts the standard
    MobileNet of an alpha and a resolution: a Shallow or Conv MobileNet or a timm peer is an error, not that model's
    prediction under another name."""
    from .bench import resolve_model, spec_label

    cfg = cfg.validate()
    specs = [resolve_model(name) for name in cfg.models]
    for name, spec in zip(cfg.models, specs, strict=True):
        if not isinstance(spec, ModelSpec) or not on_grid(spec):
            raise ValueError(f"model {name!r} is not allowed with --lut: the latency table predicts standard "
                             "MobileNets (an alpha and a resolution) only; measure it without --lut")  # fmt: skip
    plain = [ModelSpec(alpha=spec.alpha, resolution=spec.resolution) for spec in specs]
    lut = LatencyLUT.load(path)
    rows = []
    for threads in cfg.threads:
        for runtime in cfg.runtimes:
            predicted = predict_many(plain, runtime=runtime, threads=threads, lut=lut)  # shapes measured together
            for spec, plain_spec, (ms, new) in zip(specs, plain, predicted, strict=True):
                rows.append({"model": spec_label(spec), "alpha": spec.alpha, "resolution": spec.resolution,
                             "classes": plain_spec.num_classes, "runtime": runtime, "threads": threads,
                             "predicted_ms": ms, "fps": 1000.0 / ms, "layers": len(layer_keys(spec)), "measured": new,
                             "macs_M": count_complexity(spec).macs / 1e6})  # fmt: skip
    return rows
