"""Choose the most accurate MobileNet that meets a budget (latency / FPS / weights size / MACs / params) here.

The paper offers alpha and rho "to choose the right sized model for their application from the resource and
accuracy tradeoffs" (Section 3, Figures 4-5) but measures no device. We search alpha x resolution (default alpha
0.25..1.0 step 0.05 x resolution 96..224 step 16), predict each candidate's top-1 with `accuracy.AccuracyModel`
(published table, log-linear in MACs off the grid; or the user's runs), its cost with the analytic counter, its
latency from a bench results file (measured) or the latency lookup table (predicted), and keep the feasible ones.

Ranking (documented, and what the tests check against brute force): highest expected top-1; ties broken by lower
latency, then fewer MACs, then fewer parameters, then smaller alpha, then smaller resolution. Weights size, in MiB
(2**20 bytes; the ``*_MB`` keys are MiB): fp32 = 4 bytes per parameter (BatchNorm folded, biases included); int8 =
the INT8 ONNX file `export.quantize` writes for the runtime (`int8_onnx_bytes`; OpenVINO's quantizes every conv,
the others keep the first two fp32).
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import accuracy as acc
from .complexity import count_complexity
from .spec import MIN_RESOLUTION, NAMED_LAYER_FIELDS, ModelSpec, SpecError, grid_name

SIZE_DTYPES = {"fp32": 4, "int8": 1}
BENCH_CLASSES = 1000  # `mobilenets bench` times the standard models with their ImageNet classifier
MIB = 2**20
# INT8 QDQ ONNX file (export.quantize: per-channel symmetric int8 weights, the first fp32_head convs fp32, logits fp32),
# measured on `mobilenets export --int8` files of alpha 0.25, 0.5 and 1.0 x 10 (wnid labels), 42 and 1000 classes x
# fp32_head 0 and 2 (onnx 1.x / onnxruntime 1.22 quantizer): every estimate within 200 bytes of its file
INT8_BYTES_PER_CHANNEL = 17  # per quantized output channel: int32 bias and its zero point, scales, weight zero point
INT8_GRAPH_BYTES = 54_950  # nodes, activation scales/zero points, metadata but the labels, every conv quantized
INT8_FP32_CONV_BYTES = 950  # graph bytes one conv kept fp32 saves: no Q/DQ nodes, scales or zero points of its own


@dataclass(frozen=True)
class SearchSpace:
    """alpha from ``alpha_min`` to ``alpha_max`` by ``alpha_step``; resolution likewise (multiples of ``res_step``)."""

    alpha_min: float = 0.25
    alpha_max: float = 1.0
    alpha_step: float = 0.05
    res_min: int = 96
    res_max: int = 224
    res_step: int = 16

    def validate(self) -> SearchSpace:
        for name in ("alpha_min", "alpha_max", "alpha_step", "res_min", "res_max", "res_step"):
            value = getattr(self, name)
            if not _is_positive(value):
                raise ValueError(f"{name}={value!r} is not allowed: {name} must be a positive number")
            if name.startswith("res_") and not isinstance(value, int):  # 100.7 was searched from 100, 16.5 by 16
                raise ValueError(f"{name}={value!r} is not allowed: {name} must be a positive integer (pixels)")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"alpha_min={self.alpha_min} > alpha_max={self.alpha_max}: the search space is empty")
        if self.res_min > self.res_max:
            raise ValueError(f"res_min={self.res_min} > res_max={self.res_max}: the search space is empty")
        if self.alpha_max > 2:
            raise ValueError(f"alpha_max={self.alpha_max:g} is not allowed: alpha must stay <= 2 (ModelSpec's limit)")
        if self.res_min < MIN_RESOLUTION:
            raise ValueError(f"res_min={self.res_min} is not allowed: resolution must be >= {MIN_RESOLUTION} "
                             "(ModelSpec's limit)")  # fmt: skip
        return self

    def candidates(self) -> list[tuple[float, int]]:
        self.validate()
        n = int(math.floor((self.alpha_max - self.alpha_min) / self.alpha_step + 1e-9)) + 1
        alphas = [round(self.alpha_min + i * self.alpha_step, 4) for i in range(n)]
        resolutions = list(range(int(self.res_min), int(self.res_max) + 1, int(self.res_step)))
        return [(a, r) for a in alphas for r in resolutions]


def _is_positive(value: Any) -> bool:
    """A finite int or float > 0, not a bool (True would be a bound of 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_percent(name: str, value: float | None) -> None:
    """A top-1 floor in percent: None, 0 or (1, 100]; a fraction such as 0.7 (70%? 0.7%?) is an error."""
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be a percentage in [0, 100]")
    if 0 < value <= 1:
        raise ValueError(
            f"{name}={value!r} is not allowed: top-1 is in percent here: 70 for 70% (give {value * 100:g} if you "
            f"meant {value * 100:g}%)"
        )


@dataclass(frozen=True)
class Constraints:
    """Upper bounds (None = unconstrained). ``fps`` means latency <= 1000 / fps; with ``latency_ms`` both hold.

    ``min_top1`` is a floor on expected top-1 **in percent** (70 for 70%), as in the candidates and the paper's
    tables; `train` summaries and `evaluate_weights` give fractions (0.70), so a value in (0, 1] is refused rather
    than read as a floor of under 1%."""

    latency_ms: float | None = None
    fps: float | None = None
    max_mb: float | None = None
    size_dtype: str | None = None  # the size ``max_mb`` judges; None: the runtime's (`size_dtype_for`), fp32 alone
    max_macs: float | None = None  # multiply-accumulates (paper convention), e.g. 300e6
    max_params: float | None = None  # parameters, paper convention (conv + FC weights)
    min_top1: float | None = None

    def validate(self) -> Constraints:
        for name in ("latency_ms", "fps", "max_mb", "max_macs", "max_params"):
            value = getattr(self, name)
            if value is not None and not _is_positive(value):
                raise ValueError(f"{name}={value!r} is not allowed: {name} must be a positive number")
        if self.size_dtype is not None and self.size_dtype not in SIZE_DTYPES:
            raise ValueError(f"size_dtype={self.size_dtype!r} is not allowed: one of {', '.join(SIZE_DTYPES)}")
        check_percent("min_top1", self.min_top1)
        return self

    @property
    def max_latency_ms(self) -> float | None:
        bounds = [b for b in (self.latency_ms, 1000.0 / self.fps if self.fps else None) if b is not None]
        return min(bounds) if bounds else None

    def violations(self, c: dict[str, Any]) -> list[str]:
        """What a candidate row breaks (empty = feasible)."""
        out = []
        limit = self.max_latency_ms
        if limit is not None and not (c["latency_ms"] is not None and c["latency_ms"] <= limit):
            out.append(f"latency {c['latency_ms']:.2f} ms > {limit:.2f} ms")
        size = c["weights_int8_MB" if self.sizes == "int8" else "weights_MB"]
        if self.max_mb is not None and size > self.max_mb:
            out.append(f"{self.sizes} weights {size:.2f} MiB > {self.max_mb} MiB")
        if self.max_macs is not None and c["macs"] > self.max_macs:
            out.append(f"{c['macs'] / 1e6:.1f}M MACs > {self.max_macs / 1e6:.1f}M")
        if self.max_params is not None and c["params"] > self.max_params:
            out.append(f"{c['params'] / 1e6:.3f}M params > {self.max_params / 1e6:.3f}M")
        if self.min_top1 is not None and not known_top1(c):
            out.append(f"top-1 unknown (min {self.min_top1}%)")
        elif self.min_top1 is not None and c["top1"] < self.min_top1:
            out.append(f"top-1 {c['top1']:.1f}% < {self.min_top1}%")
        return out

    @property
    def sizes(self) -> str:
        """The size dtype ``max_mb`` judges: ``size_dtype``, fp32 where it is None (`select` sets the runtime's)."""
        return self.size_dtype or "fp32"

    def int8_fits(self, c: dict[str, Any]) -> bool:
        """Whether ``c`` breaks an fp32 ``max_mb`` that its INT8 export meets."""
        budget = self.max_mb
        return self.sizes == "fp32" and budget is not None and c["weights_MB"] > budget >= c["weights_int8_MB"]

    def failures(self, c: dict[str, Any], int8_way: str = "--size-dtype int8") -> str:
        """The limits a candidate breaks, one line ('' if none), with the way out where there is one: an fp32 size
        over ``max_mb`` whose INT8 export fits suggests ``int8_way`` (`int8_way`: the INT8 runtime to size and time
        that file on, or ``--size-dtype int8`` where the runtime is one)."""
        out = self.violations(c)
        if self.int8_fits(c):
            i = next(i for i, v in enumerate(out) if v.startswith("fp32 weights"))
            out[i] += f" (int8 {c['weights_int8_MB']:.2f} MiB fits: {int8_way})"
        return "; ".join(out)

    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None


def size_dtype_for(runtime: str) -> str:
    """The weights size a budget on ``runtime`` judges by default: int8 on an INT8 runtime (ort-int8, openvino-int8),
    which runs the INT8 export, the file a user of it ships; else fp32. It was fp32 whatever the runtime:
    ``select --fps 24 --max-mb 4 --runtime ort-int8`` chose 0.25-160 (1.78 MiB fp32 / 0.58 MiB int8) while the INT8
    file of 0.5-160 (1.44 MiB) fits."""
    from .runtimes import RUNTIME_INFO

    return "int8" if runtime in RUNTIME_INFO and RUNTIME_INFO[runtime].dtype == "int8" else "fp32"


def int8_way(runtime: str) -> str:
    """How to judge a candidate by its INT8 export's size on ``runtime`` (`Constraints.failures`' hint): on an INT8
    runtime, ``--size-dtype int8``; else the INT8 runtime of its engine (`int8_runtimes`), which sizes that file and
    times it too (an fp32 runtime's latency is not the INT8 file's)."""
    if size_dtype_for(runtime) == "int8":
        return "--size-dtype int8"
    return " or ".join(f"--runtime {n}" for n in int8_runtimes(runtime))


def int8_runtimes(runtime: str) -> list[str]:
    """The INT8 runtimes that run the INT8 export of a model ``runtime`` runs in another dtype: its engine's (ort ->
    ort-int8, any openvino -> openvino-int8); torch and cuda run no INT8 file: both ONNX ones."""
    from .runtimes import RUNTIME_INFO

    engine = RUNTIME_INFO[runtime].engine if runtime in RUNTIME_INFO else None
    ways = [n for n, r in RUNTIME_INFO.items() if r.dtype == "int8" and r.engine == engine]
    return ways or [n for n, r in RUNTIME_INFO.items() if r.dtype == "int8"]


def known_top1(c: dict[str, Any]) -> bool:
    """Whether the row has a top-1 estimate (NaN: too few accuracy points to extrapolate to it)."""
    return c.get("top1") is not None and not math.isnan(c["top1"])


def rank_key(c: dict[str, Any]) -> tuple:
    """The documented ranking: top-1 desc, then latency, MACs, params, alpha, resolution ascending. Rows without a
    top-1 estimate come after those with one, more MACs first (accuracy grows with MACs: paper Section 4.2)."""
    lat = c["latency_ms"] if c.get("latency_ms") is not None else 0.0
    first = -c["top1"] if known_top1(c) else -c["macs"]
    return (not known_top1(c), first, lat, c["macs"], c["params"], c["alpha"], c["resolution"])


def choose(candidates: Sequence[dict], constraints: Constraints) -> list[dict]:
    """The feasible candidates, best first (`rank_key`)."""
    constraints.validate()
    return sorted((c for c in candidates if not constraints.violations(c)), key=rank_key)


def candidate(
    alpha: float, resolution: int, accuracy: acc.AccuracyModel, fp32_head: int | None = None
) -> dict[str, Any]:
    """A candidate row without latency: name, cost, size, expected accuracy and its provenance. The INT8 size is of
    the export that keeps ``fp32_head`` convs fp32 (default `export.FP32_HEAD`; `runtimes.int8_fp32_head`)."""
    from .bench import spec_label

    spec = ModelSpec(alpha=alpha, resolution=resolution, num_classes=accuracy.num_classes)
    cost = count_complexity(spec)
    top1, source = accuracy.predict(alpha, resolution)
    return {
        "name": spec_label(spec),
        "alpha": alpha,
        "resolution": resolution,
        "classes": accuracy.num_classes,  # the classifier top-1, MACs, params and sizes are of
        "top1": round(top1, 2) if top1 is not None else math.nan,  # NaN, not None: rows stay numeric in tables
        "top1_source": source,
        "latency_ms": None,
        "latency_source": None,
        "latency_classes": None,  # the classifier the latency was measured or predicted with (None: not said)
        "fps": None,
        "macs": cost.macs,
        "params": cost.params,
        "weights_MB": folded_params(cost) * SIZE_DTYPES["fp32"] / MIB,
        "weights_int8_MB": int8_onnx_bytes(cost, accuracy.num_classes, fp32_head) / MIB,
    }


def int8_onnx_bytes(cost, num_classes: int = 1000, fp32_head: int | None = None) -> float:
    """Bytes of the INT8 ONNX file `export.quantize` writes, layer by layer as it quantizes: the first ``fp32_head``
    convs (default `export.FP32_HEAD`) keep fp32 weights and bias; the other convs and the FC store int8 weights
    plus, per output channel, an int32 bias and scales/zero points; then the graph and its metadata (measured), whose
    class labels are the default names of ``num_classes`` (`labels.resolve_labels`). A trained model's own class names
    are stored twice (its spec and its labels) and are not known here: Imagenette's ten wnids make the file about 140
    bytes larger than this estimate."""
    import json

    from .export import FP32_HEAD
    from .labels import resolve_labels

    head = FP32_HEAD if fp32_head is None else fp32_head
    labels = json.dumps(list(resolve_labels(ModelSpec(num_classes=num_classes))))
    total = INT8_GRAPH_BYTES - INT8_FP32_CONV_BYTES * head + len(labels.encode())
    for i, layer in enumerate(x for x in cost.layers if x.params):
        bias = (layer.params_all - layer.params) // (1 if "Fully" in layer.layer_type else 2)
        total += 4 * (layer.params + bias) if i < head else layer.params + INT8_BYTES_PER_CHANNEL * bias
    return total


def folded_params(cost) -> int:
    """Parameters stored after BatchNorm folding: conv/FC weights plus one bias per output channel."""
    return sum(layer.params + (layer.params_all - layer.params) // (1 if "Fully" in layer.layer_type else 2)
               for layer in cost.layers)  # fmt: skip


LatencyFn = Callable[[float, int], tuple[float, str]]


def measured_latency(rows: Sequence[dict], runtime: str, threads: int) -> dict[tuple[float, int], float]:
    """(alpha, resolution) -> measured median ms from bench rows of this runtime and thread count, of standard
    MobileNets only (`bench_row_model`): Shallow and Conv MobileNet and timm peers, all at alpha 1.0 and 224, measured
    another network than the candidate of that alpha and resolution."""
    out = {}
    for r in rows:
        if r["runtime"] == runtime and int(r["threads"]) == threads:
            model, _why = bench_row_model(r)
            if model is not None:
                out[model] = float(r["latency_ms_median"])
    return out


def bench_row_model(row: dict) -> tuple[tuple[float, int] | None, str]:
    """((alpha, resolution) of the standard MobileNet a bench row measured, '') or (None, why it is none).

    The row's name is read by `registry.model_spec`, so every name of the same model matches: bench's
    ``mobilenet_v1_040`` (`grid_name`: no suffix at 224), ``mobilenet_v1_040_224`` and ``0.4-224``; only an exact
    `grid_name` matched before, and a row named otherwise was dropped without a word (select then timed a latency
    table for a model the file measured). The name must agree with the row's alpha and resolution fields (a name
    stating no resolution, ``mobilenet_v1_075``, takes the row's, as `registry.create_model` does). A timm peer
    (``timm:...``) or another variant (Shallow, Conv MobileNet) is no candidate, as expected: why is ''. A name the
    registry cannot read, or one contradicting the row's fields, is a reason `unmatched_bench_rows` reports. So is a
    row of a file or folder given to bench (``file``: `bench.ModelPath`): it timed those weights or that export (of
    their classes, their export's settings), not the model select would have exported for the candidate."""
    from .bench import PEER_PREFIX
    from .registry import model_spec, named_resolution

    name, alpha, resolution = row["model"], float(row["alpha"]), int(row["resolution"])
    if name.startswith(PEER_PREFIX):
        return None, ""
    if row.get("file"):
        return None, (f"{name!r} is a file or folder given to bench ({row['file']}), timed as it is, not the model "
                      "select exports for a candidate")  # fmt: skip
    try:
        spec, stated = model_spec(name), named_resolution(name)
    except SpecError:
        return None, f"{name!r} names no MobileNet `mobilenets bench` or the registry knows"
    standard = ModelSpec(alpha=spec.alpha)
    if any(getattr(spec, f) != getattr(standard, f) for f in NAMED_LAYER_FIELDS):
        return None, ""  # mobilenet_v1_shallow, mobilenet_v1_conv: another network than every candidate
    if not math.isclose(spec.alpha, alpha, rel_tol=1e-9) or stated not in (None, resolution):
        named = f"alpha {spec.alpha:g}" + (f" at {stated}" if stated is not None else "")
        return None, f"{name!r} is {named}, but the row says alpha {alpha:g} at {resolution}"
    return (alpha, resolution), ""


def unmatched_bench_rows(files: dict[str, tuple[list[dict], float]], runtime: str, threads: int) -> list[str]:
    """Why each bench row of ``runtime`` and ``threads`` that names no candidate model, and is no peer or other
    variant, was not used (`bench_row_model`): said rather than silently dropped."""
    out = []
    for path, (rows, _mtime) in files.items():
        for i, row in enumerate(rows):
            if row["runtime"] == runtime and int(row["threads"]) == threads:
                why = bench_row_model(row)[1]
                if why:
                    out.append(f"{path} row {i + 1}: {why}")
    return out


def _row_time(row: dict, file_mtime: float) -> float:
    """When a bench row was measured: its ``timestamp`` (UTC, as `bench.measure` writes it), else its file's mtime."""
    import calendar
    import time

    try:
        return float(calendar.timegm(time.strptime(str(row["timestamp"]), "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, ValueError):
        return file_mtime


def read_bench_files(bench_files: Sequence[str]) -> dict[str, tuple[list[dict], float]]:
    """Each bench file's rows and modification time, read once for `newest_measurements` and `other_hardware`."""
    import os

    from . import bench

    out = {}
    for f in bench_files:
        rows = bench.read_results(f)  # first: a missing file is its one clear error, not os.stat's
        for i, row in enumerate(rows):
            check_bench_row(f, i, row)
        out[f] = rows, os.path.getmtime(f)
    return out


def check_bench_row(path: str, index: int, row: dict) -> None:
    """A ValueError naming the file, row and value where a bench row's fields that `select` reads are not what bench
    writes (a hand-edited file): a null threads or alpha was a traceback, and a latency of 0, -1 or NaN a model that
    met every budget (and, through the measured / predicted factor, made every prediction 0, negative or NaN)."""

    def bad(key: str, what: str) -> ValueError:
        return ValueError(f"bench results file {str(path)!r}, row {index + 1}: {key}={row[key]!r} is not allowed: "
                          f"{key} must be {what}")  # fmt: skip

    for key in ("model", "runtime"):
        if not isinstance(row[key], str):
            raise bad(key, "a string")
    for key in ("resolution", "threads"):
        if not isinstance(row[key], int) or isinstance(row[key], bool) or row[key] < 1:
            raise bad(key, "a positive integer")
    for key in ("alpha", "latency_ms_median"):
        if not _is_positive(row[key]):
            raise bad(key, "a positive number")


def newest_measurements(
    files: dict[str, tuple[list[dict], float]], runtime: str, threads: int
) -> tuple[dict[tuple[float, int], float], int]:
    """(alpha, resolution) -> median ms of the newest row per (model, runtime, threads) over the bench ``files``
    (`read_bench_files`), and how many older rows of ``runtime`` and ``threads`` were superseded (a re-run's numbers
    replace the first run's). The throughput batch is not in the key: the latency is batch 1's whatever ``--batch``
    was, and with it in the key an older row of another batch could outlast the newer one (the later file given
    won)."""
    newest: dict[tuple, tuple[float, dict]] = {}
    superseded = 0
    for rows, mtime in files.values():
        for row in rows:
            model = bench_row_model(row)[0] or row["model"]  # two names of one model: the newer row supersedes
            key = (model, row["runtime"], int(row["threads"]))
            when = _row_time(row, mtime)
            if key in newest:
                superseded += row["runtime"] == runtime and int(row["threads"]) == threads  # the rows select reads
                if when < newest[key][0]:
                    continue
            newest[key] = (when, row)
    return measured_latency([row for _, row in newest.values()], runtime, threads), superseded


def other_hardware(files: dict[str, tuple[list[dict], float]], runtime: str, threads: int) -> tuple[set[str], str]:
    """(the hardware names, `bench.hardware_tag`, of the bench ``files``' rows of ``runtime`` and ``threads`` measured
    on another machine than this one, this machine's name); rows that do not name their hardware are not counted."""
    from . import bench

    here = bench.hardware_tag(bench.machine())
    tags = {
        bench.hardware_tag(row)
        for rows, _mtime in files.values()
        for row in rows
        if row["runtime"] == runtime and int(row["threads"]) == threads and {"cpu", "cores", "gpu"} <= set(row)
    }
    return tags - {here}, here


def attach_latency(rows: list[dict], latency: LatencyFn, required: bool = True) -> None:
    """Each row's latency from ``latency``; unless ``required`` (no latency bound: it is shown, not checked), rows it
    cannot give (`LatencySource.can_give`: a runtime without a table, not in the bench files) keep None."""
    can_give = getattr(latency, "can_give", None)
    if not required and can_give is not None:
        rows = [c for c in rows if can_give(c["alpha"], c["resolution"])]
    prepare = getattr(latency, "prepare", None)  # a LatencySource measures the missing shapes of all rows at once
    if prepare is not None:
        prepare([(c["alpha"], c["resolution"]) for c in rows])
    classes = getattr(latency, "classes", None)  # a LatencySource says which classifier its latencies are of
    for c in rows:
        ms, source = latency(c["alpha"], c["resolution"])
        c.update(latency_ms=ms, latency_source=source, latency_classes=classes, fps=1000.0 / ms if ms > 0 else math.inf)


@dataclass
class Selection:
    chosen: dict | None
    runners_up: list[dict]
    feasible: int
    candidates: int
    constraints: Constraints
    runtime: str
    threads: int
    fastest: dict | None = None
    smallest: dict | None = None
    commands: list[str] | None = None
    export_files: list[str] | None = None  # what the printed export writes, its --out first (`export_files`)
    commands_from: str | None = None  # the run folder that trained the chosen model, whose weights `commands` export
    recipe_from: str | None = None  # the run whose recipe `commands` train an unmeasured model by (`recipe_run`)
    recipe_note: str = ""  # why a top-1 fitted to the user's runs comes with the default recipe (`recipe_run`)
    accuracy_note: str = ""
    top1_note: str = ""  # whose top-1 the rows carry, where it is not the runtime's model's (`fp32_weights_note`)
    size_note: str = ""  # which weights size ``max_mb`` judged, and why (`size_note`)
    int8_note: str = ""  # a better candidate whose INT8 export meets an fp32 size budget (`int8_note`)
    latency_note: str = ""  # latencies of the fp32 model beside an INT8 size and export (`int8_latency_note`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constraints"] = asdict(self.constraints)
        for row in (d["chosen"], *d["runners_up"], d["fastest"], d["smallest"]):
            if row is not None and not known_top1(row):
                row["top1"] = None  # JSON has no NaN
        return d


# the significant bits (stored mantissa + 1) a bf16 or fp16 runtime rounds each fp32 weight and activation to
SIGNIFICANT_BITS = {"bf16": 8, "fp16": 11}


def fp32_weights_note(runtime: str, dtype: str) -> str:
    """One line saying that the expected top-1 of a runtime that does not run fp32 is its fp32 weights' ('' for fp32
    runtimes; `bench.of_fp32_weights`, the rule its table label follows too): the tables and runs are of fp32 models,
    and no top-1 at INT8, bf16 or fp16 is measured here. For INT8 it cites what was measured on Imagenette
    (`bench.FP32_WEIGHTS`); for bf16/fp16 nothing was, so it says only that the rounding's loss is usually small."""
    from .bench import of_fp32_weights

    if not of_fp32_weights(dtype):
        return ""
    if dtype == "int8":
        return (
            f"note: top-1 is the fp32 weights' ({runtime} runs them quantized to INT8, whose ImageNet top-1 is not "
            "measured; on Imagenette the per-channel INT8 exports of two models were within 0.61 points of fp32: "
            "results/int8-*.md)"
        )
    bits = f", {SIGNIFICANT_BITS[dtype]} significant bits" if dtype in SIGNIFICANT_BITS else ""
    return (
        f"note: top-1 is the fp32 weights' ({runtime} runs them rounded to {dtype}{bits}; the top-1 lost to that "
        "rounding is usually small but is not measured here)"
    )


def commands_for(
    c: dict, fp32_head: int | None = None, run_dir: str | None = None, int8: bool = False, recipe: str | None = None
) -> list[str]:
    """The commands of `production`, without the files they write."""
    return production(c, fp32_head, run_dir, int8, recipe)[0]


def production(
    c: dict, fp32_head: int | None = None, run_dir: str | None = None, int8: bool = False, recipe: str | None = None
) -> tuple[list[str], list[str]]:
    """(the commands, the files their export writes: `export_files`, ``--out`` first). The files are returned, not
    read back from the printed line (the CLI parsed it with shlex to name the fp32 model an INT8 export leaves
    beside it: a second copy of `export_files`' rule), so what select says of them is this function's answer.

    How to produce the chosen model with the training and export subcommands (issues 4 and 6): train, then one
    export, of the model the selection was for: ``int8`` (an INT8 runtime, or ``--size-dtype int8``) the INT8 export
    keeping ``fp32_head`` convs fp32 (default export's; the one the INT8 size and a bench of the runtime describe),
    else the fp32 one. Both used to be printed, and the INT8 export writes, beside its ``NAME.int8.onnx``
    (`export.default_out`'s name, the README's), the same fp32 model as ``NAME.fp32.onnx`` (`export.fp32_companion`):
    the fp32 line was a second copy of it, and the INT8 line needed calibration data an fp32 deployment does not.

    ``recipe``: where the chosen model's top-1 is fitted to the user's runs, the run whose recipe trains it
    (`AccuracyModel.recipe_run`): the train line is ``--config RUN/config.yaml --alpha A --resolution R`` (a fine-tune
    keeps its --init weights, whose alpha ``recipe_run`` chose equal) and the export calibrates on the training images
    that config.yaml records; the default recipe from scratch would not give a top-1 fitted to fine-tunes.

    ``run_dir``: the `mobilenets train` run that measured the chosen model's top-1 (`AccuracyModel.run_dirs`). That
    model is trained already: its weights are exported from ``RUN/model``, calibrated on the training images its
    config.yaml records (`recorded_train_folder`), and the train line repeats the run's own recipe (``--config
    RUN/config.yaml``, README "Training") into a new folder; the default recipe would not give the figure, and
    ``--out RUN`` is refused (it holds the run's checkpoints). Train folders and export files are ones that do not
    exist yet, so the commands can be run again beside their first outputs: train refuses a folder holding an earlier
    run's checkpoints or summary, and export a file holding another model's export. The train folder and the export
    share one name (`free_stem`: ``runs/NAME-2`` -> ``NAME-2.onnx``, or ``NAME-2.int8.onnx`` and the
    ``NAME-2.fp32.onnx`` it writes too); the run's retrain keeps its ``-again`` folder (`free_folder`)."""
    from .export import FP32_HEAD

    a, r = f"{c['alpha']:g}", c["resolution"]
    name = c["name"]
    if run_dir is None:
        name = free_stem(name, lambda stem: [f"runs/{stem}", *export_files(stem, int8)])
    else:
        name = free_stem(name, lambda stem: export_files(stem, int8))
    run = f"runs/{name}"
    head = "" if fp32_head in (None, FP32_HEAD) else f" --int8-fp32-head {fp32_head}"
    model = f"{run}/model"  # train saves weights in RUN/model
    calib = "DATA_ROOT/train"
    train = f"mobilenets train --data DATA_ROOT --alpha {a} --resolution {r} --out {run}"
    if recipe is not None and run_dir is None:
        calib = shlex.quote(recorded_train_folder(recipe) or calib)
        train = (f"mobilenets train --config {shlex.quote(f'{recipe}/config.yaml')} --alpha {a} --resolution {r} "
                 f"--out {run}")  # fmt: skip
    if run_dir is not None:
        model = shlex.quote(f"{run_dir}/model")
        calib = shlex.quote(recorded_train_folder(run_dir) or calib)
        again = free_folder(f"runs/{c['name']}-again", "")
        train = f"mobilenets train --config {shlex.quote(f'{run_dir}/config.yaml')} --out {again}"
    files = export_files(name, int8)
    export = (f"mobilenets export {model} --format onnx --int8{head} --calib {calib} --out {files[0]}" if int8
              else f"mobilenets export {model} --format onnx --out {files[0]}")  # fmt: skip
    return ([export, train] if run_dir is not None else [train, export]), files


def export_files(stem: str, int8: bool) -> list[str]:
    """The files select's export of ``stem`` writes, its ``--out`` first: ``stem.onnx``, or ``stem.int8.onnx`` (the
    name `export.default_out` gives) and the fp32 model it keeps beside it (`export.fp32_companion`)."""
    from pathlib import Path

    from .export import fp32_companion

    if not int8:
        return [f"{stem}.onnx"]
    out = f"{stem}.int8.onnx"
    return [out, str(fp32_companion(Path(out)))]


def free_stem(stem: str, paths: Callable[[str], list[str]], sep: str = "-") -> str:
    """``stem``, else the first ``name`` of ``stem{sep}2``, ``stem{sep}3``, ... for which nothing is at any of
    ``paths(name)`` (relative to the working directory, where the printed commands run)."""
    import os

    n, name = 1, stem
    while any(os.path.lexists(p) for p in paths(name)):
        n += 1
        name = f"{stem}{sep}{n}"
    return name


def free_folder(path: str, sep: str) -> str:
    """``path`` if nothing is there, else the first of ``path{sep}2``, ``path{sep}3``, ... that is free (relative
    to the working directory, where the printed command runs): ``runs/m-again`` -> ``runs/m-again2``. The rule of
    `free_stem`, for one path."""
    return free_stem(path, lambda name: [name], sep)


def recorded_train_folder(run_dir: str) -> str | None:
    """The training images a run used, as its config.yaml records them: ``data`` joined with ``train_split``
    (`TrainConfig`; absolute since runs record paths so, a relative one of an older run read from the working
    directory env.json records); None where the run records no data root (or no readable config.yaml)."""
    import json
    import os

    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), str) or not cfg["data"]:
        return None
    split = cfg.get("train_split") if isinstance(cfg.get("train_split"), str) else "train"
    data = cfg["data"]
    if not os.path.isabs(data):
        try:
            with open(os.path.join(run_dir, "env.json"), encoding="utf-8") as f:
                cwd = json.load(f).get("cwd")
        except (OSError, ValueError, AttributeError):
            cwd = None
        data = os.path.join(cwd, data) if isinstance(cwd, str) else data
    return os.path.join(data, split)


def select(
    constraints: Constraints,
    *,
    space: SearchSpace = SearchSpace(),
    accuracy: acc.AccuracyModel | None = None,
    latency: LatencyFn | None = None,
    runtime: str = "ort",
    threads: int = 1,
    top: int = 5,
) -> Selection:
    """Search ``space`` for the best model under ``constraints``. ``latency(alpha, res) -> (ms, source)`` is called
    for every candidate when a latency bound is set, otherwise only for the models shown. A ``size_dtype`` of None
    is the runtime's (`size_dtype_for`); the selection's constraints carry the one used."""
    constraints.validate()
    given = constraints.size_dtype is not None
    constraints = replace(constraints, size_dtype=constraints.size_dtype or size_dtype_for(runtime))
    if top < 1:
        raise ValueError(f"top={top!r} is not allowed: top must be an integer >= 1 (the chosen model and runners-up)")
    accuracy = accuracy or acc.table_model()
    from .bench import top1_source_for
    from .runtimes import RUNTIME_INFO, int8_fp32_head

    head = int8_fp32_head(runtime)  # the INT8 export a bench of ``runtime`` times (OpenVINO's quantizes every conv)
    rows = [candidate(a, r, accuracy, head) for a, r in space.candidates()]
    dtype = RUNTIME_INFO[runtime].dtype if runtime in RUNTIME_INFO else "fp32"
    for c in rows:  # the same label a bench row of the runtime carries
        c["top1_source"] = top1_source_for(c["top1_source"], dtype)
    if constraints.needs_latency():
        if latency is None:
            raise ValueError("a latency/FPS bound needs a latency source (a bench results file or the lookup table)")
        attach_latency(rows, latency)
    ranked = choose(rows, constraints)
    note = accuracy.coverage_note()  # which models get no top-1 ('' for the published tables: they cover the grid)
    sel = Selection(ranked[0] if ranked else None, ranked[1:top], len(ranked), len(rows), constraints, runtime,
                    threads, accuracy_note=note, top1_note=fp32_weights_note(runtime, dtype),
                    size_note=size_note(constraints, runtime, given))  # fmt: skip
    if sel.chosen is None:
        smallest = min(rows, key=lambda c: (c["weights_MB"], c["macs"]))
        fastest = min(rows, key=lambda c: (c["latency_ms"], c["macs"])) if rows[0]["latency_ms"] is not None else None
        if fastest is None:
            fastest = min(rows, key=lambda c: (c["macs"], c["params"]))
        sel.fastest, sel.smallest = fastest, smallest
    else:
        key = (sel.chosen["alpha"], sel.chosen["resolution"])
        sel.commands_from = accuracy.run_dirs.get(key)
        if accuracy.label == "measured" and key not in accuracy.points and known_top1(sel.chosen):  # fitted to runs
            sel.recipe_from, sel.recipe_note = accuracy.recipe_run(*key)
        int8 = dtype == "int8" or constraints.size_dtype == "int8"  # the model sized (timed: `int8_latency_note`)
        sel.commands, sel.export_files = production(sel.chosen, head, sel.commands_from, int8, sel.recipe_from)
    shown = [x for x in (sel.chosen, *sel.runners_up, sel.fastest, sel.smallest) if x is not None]
    if latency is not None and not constraints.needs_latency():
        attach_latency(shown, latency, required=False)
    way = int8_way(runtime)
    for c in shown:
        c["fails"] = constraints.failures(c, way)
    sel.int8_note = int8_note(rows, sel.chosen, constraints, way)
    if any(c.get("latency_ms") is not None for c in shown):  # no latency shown: nothing to say it is not the file's
        sel.latency_note = int8_latency_note(constraints, runtime, dtype)
    return sel


def size_note(constraints: Constraints, runtime: str, given: bool) -> str:
    """One line saying which weights size ``max_mb`` judged and why ('' without a size budget): it follows the
    runtime unless ``--size-dtype`` was ``given`` (`size_dtype_for`). A bf16/fp16 runtime is said to load the fp32
    weights and compute rounded (`runtimes`: OpenVINO's bf16 precision hint, the cuda model cast): "runs fp32
    weights" was not what it computes, though the fp32 file is the size that matters."""
    if constraints.max_mb is None:
        return ""
    from .runtimes import RUNTIME_INFO

    dtype = constraints.sizes
    computes = RUNTIME_INFO[runtime].dtype if runtime in RUNTIME_INFO else "fp32"
    runs = {"int8": "runs the INT8 export", "fp32": "runs fp32 weights"}.get(computes)
    runs = runs or f"loads the fp32 weights and computes rounded to {computes}"  # bf16/fp16: the file is fp32
    why = "--size-dtype says" if given else f"{runtime} {runs}"
    other = "fp32" if dtype == "int8" else "int8"
    return (f"sizes: {dtype} weights <= {constraints.max_mb:g} MiB, as {why} (--size-dtype {other} judges the {other} "
            "file)")  # fmt: skip


def int8_note(rows: Sequence[dict], chosen: dict | None, constraints: Constraints, way: str) -> str:
    """A line naming the best candidate that fails only an fp32 size budget its INT8 export meets, where it would
    rank above the chosen one (or nothing was chosen), with how to judge it by that file (``way``: `int8_way`); ''
    otherwise. The rows shown carry the hint in their ``fails``, but a candidate failing the budget is never shown
    beside a chosen one: the way to a more accurate model, if one ships the INT8 file, was not seen."""
    blocked = [c for c in rows if constraints.int8_fits(c) and len(constraints.violations(c)) == 1]
    if not blocked:
        return ""
    best = min(blocked, key=rank_key)
    if chosen is not None and rank_key(best) >= rank_key(chosen):
        return ""
    top1 = f"expected top-1 {best['top1']:.1f}%" if known_top1(best) else "top-1 unknown"
    return (f"note: {len(blocked)} candidate(s) fail only the fp32 size budget while their INT8 export fits, the best "
            f"{best['name']} ({top1}; fp32 {best['weights_MB']:.2f} MiB, int8 {best['weights_int8_MB']:.2f} MiB): "
            f"{way} judges them by that file")  # fmt: skip


def int8_latency_note(constraints: Constraints, runtime: str, dtype: str) -> str:
    """A line saying, where ``--size-dtype int8`` is given on a ``runtime`` that does not run the INT8 file (its
    ``dtype`` is not int8), that the sizes and the export printed are the INT8 file's but the latencies are not: they
    are of the model ``runtime`` runs, fp32 weights; which INT8 runtime times that file, and that it needs bench files
    (no lookup table predicts an INT8 runtime: `lut.LUT_RUNTIMES`). '' otherwise."""
    from .lut import LUT_RUNTIMES

    if dtype == "int8" or constraints.sizes != "int8":
        return ""
    ways = int8_runtimes(runtime)
    model = "fp32 weights" + ("" if dtype == "fp32" else f" computed in {dtype}")
    needs = "" if set(ways) <= set(LUT_RUNTIMES) else " (it needs --bench files measuring it: no lookup table does)"
    return (f"note: sizes and the export are of the INT8 file (--size-dtype int8), but latency_ms is {runtime}'s, of "
            f"{model}, not that file's: {' or '.join(f'--runtime {n}' for n in ways)} times it{needs}")  # fmt: skip


class LatencySource:
    """``(alpha, resolution) -> (ms, source)``: measured latency from bench results files where they have the model,
    else the lookup table's prediction (``say`` hears when shapes missing from the table are about to be measured,
    and how far the measuring is).

    Predictions next to measurements are put on the measurements' footing: multiplied by the median over the measured
    models of measured / predicted (the table's own scale was fitted at another time, and a prediction of 4.64 ms
    for 0.75-176 beside 8.01 ms measured for the smaller 0.75-160 chose the wrong model); ``say`` hears the factor.
    `prepare` predicts many models at once, so that a first use measures all their missing shapes together
    (`lut.predict_many`: one announcement, one progress count) rather than one model's shapes after another's.

    ``classes`` is the classifier every latency is of: the ``num_classes`` of the model to deploy (the table times
    that head's shape), but `BENCH_CLASSES` where the bench files measured any standard MobileNet by name on the
    runtime and threads (`bench_row_model`), in the search space or not (the factor is worked out on every one), so
    that measured and predicted latencies, and the factor between them, compare models with the same classifier; no
    head is corrected for. Rows of files and folders given to bench (of their own classes), peers and other variants
    are not used, and do not change ``classes``."""

    def __init__(
        self,
        runtime: str,
        threads: int,
        bench_files: Sequence[str] = (),
        lut_path: str | None = None,
        say: Callable[[str], None] | None = None,
        num_classes: int = BENCH_CLASSES,
    ) -> None:
        from . import lut

        self.runtime, self.threads, self.say = runtime, threads, say
        files = read_bench_files(bench_files)
        self.measured, superseded = newest_measurements(files, runtime, threads)
        self.classes = BENCH_CLASSES if self.measured else num_classes
        unmatched = unmatched_bench_rows(files, runtime, threads)
        if unmatched and say is not None:
            say(f"note: {len(unmatched)} bench row(s) of {runtime}, {threads} thread(s) not used, as they are of no "
                f"candidate: {'; '.join(unmatched[:3])}"
                + (" ..." if len(unmatched) > 3 else ""))  # fmt: skip
        foreign, here = other_hardware(files, runtime, threads) if files else (set(), "")
        if foreign and say is not None:  # `select` means this machine: a file from another one is taken as given
            say(f"note: bench rows of {runtime}, {threads} thread(s) were measured on {', '.join(sorted(foreign))}, "
                f"not on this machine ({here}): their latencies are used as they are")  # fmt: skip
        if files and not self.measured and say is not None:  # --bench given, and none of it used: say why
            held = sorted({f"{r['runtime']} x{r['threads']}" for rows, _mtime in files.values() for r in rows})
            say(f"note: the bench files hold no standard MobileNet row of {runtime}, {threads} thread(s) (they hold "
                f"{', '.join(held) or 'no rows'}): every latency comes from the lookup table")  # fmt: skip
        if superseded and say is not None:
            say(f"note: {superseded} bench row(s) superseded by a newer measurement of the same model, runtime "
                "and threads (newest wins: row timestamp, else file mtime)")  # fmt: skip
        self.table = lut.LatencyLUT.load(lut_path)
        self.predicted: dict[tuple[float, int], float] = {}
        self.ratio: float | None = None  # measured / predicted, worked out on the first prediction asked for

    def can_give(self, alpha: float, resolution: int) -> bool:
        """Whether a bench file measured the model or the lookup table can predict it on this runtime."""
        from . import lut

        return (alpha, resolution) in self.measured or self.runtime in lut.LUT_RUNTIMES

    def prepare(self, models: Iterable[tuple[float, int]]) -> None:
        """Predict every model of ``models`` that no bench file measured (and, to scale them, the measured ones)."""
        todo = [m for m in dict.fromkeys(models) if m not in self.measured]
        if todo:  # every model measured: no table, so runtimes without one (ort-int8, ...) work from bench files
            self._predict_all(todo + list(self.measured))

    def _predict_all(self, models: list[tuple[float, int]]) -> None:
        from . import lut

        todo = [m for m in dict.fromkeys(models) if m not in self.predicted]
        if not todo:
            return
        if self.runtime not in lut.LUT_RUNTIMES:
            lacking = [m for m in todo if m not in self.measured]
            missing = [grid_name(a, r) for a, r in lacking]
            raise ValueError(
                f"runtime={self.runtime!r} has no measurement of {', '.join(missing[:3])}"
                + (f" ({len(missing)} models)" if len(missing) > 3 else "")
                + f" in the bench files, and the lookup table cannot predict {self.runtime}: measure them with "
                f"`{bench_command(self.runtime, self.threads, lacking)}` and add --bench FILE.json, or narrow the "
                "search"
            )
        specs = [ModelSpec(alpha=a, resolution=r, num_classes=self.classes) for a, r in todo]
        kw = dict(runtime=self.runtime, threads=self.threads, lut=self.table, say=self.say)
        for m, (ms, _new) in zip(todo, lut.predict_many(specs, **kw), strict=True):
            self.predicted[m] = ms

    def _predict(self, alpha: float, resolution: int) -> float:
        self._predict_all([(alpha, resolution)])
        return self.predicted[(alpha, resolution)]

    def __call__(self, alpha: float, resolution: int) -> tuple[float, str]:
        if (alpha, resolution) in self.measured:
            return self.measured[(alpha, resolution)], "measured"
        if self.measured and self.ratio is None:
            self.ratio = statistics.median(ms / self._predict(a, r) for (a, r), ms in self.measured.items())
            if self.say is not None:
                self.say(f"note: lookup-table predictions x{self.ratio:.2f}: the median measured / predicted latency "
                         f"of the {len(self.measured)} model(s) measured in the bench files")  # fmt: skip
        ms = self._predict(alpha, resolution)
        return (ms * self.ratio, f"predicted x{self.ratio:.2f}") if self.ratio is not None else (ms, "predicted")


def bench_command(runtime: str, threads: int, models: Iterable[tuple[float, int]]) -> str:
    """The `mobilenets bench` command that measures ``models`` as select reads them: the same runtime and thread count
    (rows of other threads are not used), latency only (``--batch 0``: select reads no throughput), as the alpha x
    resolution product that covers them (a line as short for a whole search space as for a few models, and every
    model of a search space is in it). An engineer copies it as printed: a ``--models ...`` placeholder, or a command
    without --threads or the search's alphas, measured models select then still lacked."""
    alphas = ",".join(f"{a:g}" for a in sorted({a for a, _r in models}))
    resolutions = ",".join(str(r) for r in sorted({r for _a, r in models}))
    return (f"mobilenets bench --runtimes {runtime} --threads {threads} --alpha {alphas} --resolution {resolutions} "
            "--batch 0 --out FILE.json")  # fmt: skip


latency_source = LatencySource  # the name the CLI and callers of the function this class replaced use


SHOW_COLUMNS = ("name", "alpha", "resolution", "classes", "top1", "top1_source", "latency_ms", "latency_source",
                "fps", "weights_MB", "weights_int8_MB", "macs", "params", "fails")  # fmt: skip


def head_note(rows: Sequence[dict]) -> str:
    """A line saying that the latencies are of another classifier than the other figures ('' when they are not)."""
    heads = {(c["classes"], c["latency_classes"]) for c in rows if c.get("latency_classes") is not None}
    other = sorted({lat for classes, lat in heads if lat != classes})
    if not other:
        return ""
    classes = ", ".join(str(n) for n in sorted({n for n, _lat in heads}))
    return (f"note: latency_ms and fps are of {', '.join(map(str, other))}-class models (as `mobilenets bench` times "
            f"them); top-1, sizes, MACs and params are of the {classes}-class model (classes) you deploy, whose "
            "classifier is not timed or corrected for")  # fmt: skip
