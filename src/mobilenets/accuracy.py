"""Expected ImageNet top-1 of any (alpha, resolution): published tables, interpolation, or the user's own runs.

Sources:

- ``tfslim`` (default): TF-slim's released float checkpoints, the 16-model grid (`paper.TFSLIM_IMAGENET`).
- ``paper``: the paper's Tables 6 and 7 (alpha row at 224, resolution column at alpha 1.0) completed with TF-slim's
  table for the grid points the paper does not print (`paper.published_top1`).
- summary.json files written by training runs (`from_summaries`): of several runs of one model, the best recipe's
  (seeds of one recipe averaged), recipes told apart by the config.yaml beside each summary (`best_recipe`).

Off-grid models are interpolated log-linearly in MACs, the trade-off the paper observes (Section 4.2, Figure 4:
"accuracy drops off smoothly ... log linear" in mult-adds). Within each table row (fixed alpha) a least-squares line
top1 = a + b ln(MACs) is fitted over its resolutions; a candidate's top-1 is its row fits evaluated at the two
bracketing alphas, then interpolated between them linearly in ln(MACs). Grid points return the table value itself.
Outside the table's alpha or resolution range the same lines are extended and the source says ``extrapolated``.

Too few points to extrapolate from give no estimate (top-1 None, source ``unknown``) rather than a copied value:
another alpha needs measured points at 2+ alphas, another resolution needs 2+ distinct MACs among the points (runs of
one model, seeds or fine-tunes of 0.25-96 say, tell nothing of 0.75-192).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import paper
from .atomic import not_a_file
from .complexity import count_complexity
from .spec import ModelSpec

SOURCES = ("tfslim", "paper")


def model_macs(alpha: float, resolution: int) -> int:
    return count_complexity(ModelSpec(alpha=alpha, resolution=resolution)).macs


@dataclass
class AccuracyModel:
    """Top-1 (%) for (alpha, resolution) from known points ``{(alpha, res): top1}`` and their label."""

    points: dict[tuple[float, int], float]
    label: str = "tfslim"
    num_classes: int = 1000  # the classifier the points were measured with (sizes of the candidates follow it)
    point_labels: dict[tuple[float, int], str] = field(default_factory=dict)  # a point's source, where not ``label``
    # what measured points are of (`task_name`: "10 classes #1a2b3c4d"), so that results of two `bench --accuracy`
    # runs on different datasets, merged into one file, are told apart; None for the published ImageNet tables
    task: str | None = None
    # the folder of a `mobilenets train` run that measured a point (its model/ and a readable config.yaml beside
    # summary.json; of several runs of one model, the first given of the recipe kept: `best_recipe`): the model is
    # trained already, so `select` exports that run's weights and retrains from its recipe rather than print the
    # default recipe into the run's own folder
    run_dirs: dict[tuple[float, int], str] = field(default_factory=dict)
    # the points whose run (``run_dirs``) trained from --init weights: those fix the alpha (README "Training"), so
    # its recipe trains no other alpha (`recipe_run`)
    init_runs: frozenset[tuple[float, int]] = frozenset()
    _rows: dict[float, tuple[float, float]] = field(default_factory=dict, repr=False)
    _has_slope: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("an accuracy model needs at least one (alpha, resolution, top1) point")
        by_alpha: dict[float, list[tuple[float, float]]] = {}
        for (a, r), top1 in self.points.items():
            by_alpha.setdefault(a, []).append((math.log(model_macs(a, r)), top1))
        all_pts = [p for pts in by_alpha.values() for p in pts]
        self._has_slope = len({x for x, _ in all_pts}) > 1
        global_slope = _fit(all_pts)[1] if self._has_slope else 0.0
        for a, pts in by_alpha.items():
            # One resolution only: borrow the slope of all points so the row still varies with resolution.
            self._rows[a] = (
                _fit(pts) if len({x for x, _ in pts}) > 1 else (pts[0][1] - global_slope * pts[0][0], global_slope)
            )

    def _row(self, alpha: float, resolution: int) -> tuple[float, float]:
        """(top1, ln MACs) of the fitted row ``alpha`` at ``resolution``."""
        a, b = self._rows[alpha]
        x = math.log(model_macs(alpha, resolution))
        return a + b * x, x

    def predict(self, alpha: float, resolution: int) -> tuple[float | None, str]:
        """(top1 %, source) where source is the label (known point), 'interpolated' or 'extrapolated'; (None,
        'unknown') where the points are too few to say (see the module docstring)."""
        key = (float(alpha), int(resolution))
        if key in self.points:
            return self.points[key], self.point_labels.get(key, self.label)
        alphas = sorted(self._rows)
        if not self.can_predict(alpha):
            return None, "unknown"
        resolutions = sorted({r for _, r in self.points})
        inside = alphas[0] <= alpha <= alphas[-1] and resolutions[0] <= resolution <= resolutions[-1]
        how = "interpolated" if inside else "extrapolated"
        if alpha in self._rows or len(alphas) == 1:
            return self._row(alpha if alpha in self._rows else alphas[0], resolution)[0], how
        lo = max([a for a in alphas if a < alpha], default=alphas[0])
        hi = min([a for a in alphas if a > alpha], default=alphas[-1])
        if lo == hi:  # outside the alpha range: extend the nearest two rows' segment
            lo, hi = (alphas[0], alphas[1]) if alpha < alphas[0] else (alphas[-2], alphas[-1])
        (p_lo, x_lo), (p_hi, x_hi) = self._row(lo, resolution), self._row(hi, resolution)
        x = math.log(model_macs(alpha, resolution))
        return p_lo + (p_hi - p_lo) * (x - x_lo) / (x_hi - x_lo), how

    def can_predict(self, alpha: float) -> bool:
        """Whether an unmeasured model of ``alpha`` gets an estimate: its alpha was measured or 2+ alphas were (so
        alpha's effect is known), and the points span 2+ MACs (so resolution's effect is)."""
        return (alpha in self._rows or len(self._rows) > 1) and self._has_slope

    def recipe_run(self, alpha: float, resolution: int) -> tuple[str | None, str]:
        """(the run folder whose recipe trains an unmeasured model, '') or (None, why there is none). Its top-1 is
        fitted to these runs, so the default recipe from scratch would not give it: a run's config.yaml trains it
        at another ``--alpha``/``--resolution``, except a --init run's at another alpha (`init_runs`: the weights
        fix it). Of those, a run of the same alpha first, then the nearest in ln(MACs) (the points the estimate
        leans on most), then the most accurate."""
        x = math.log(model_macs(alpha, resolution))
        fits = [k for k in self.run_dirs if k[0] == alpha or k not in self.init_runs]
        if fits:
            best = min(fits, key=lambda k: (k[0] != alpha, abs(math.log(model_macs(*k)) - x), -self.points[k]))
            return self.run_dirs[best], ""
        if self.run_dirs:
            alphas = ", ".join(f"{a:g}" for a in sorted({a for a, _r in self.run_dirs}))
            why = f"their --init weights fix alpha {alphas}"
        else:
            why = "none records its recipe (config.yaml and model/ beside its summary.json)"
        return None, (
            f"note: the expected top-1 is fitted to your runs, but no run's recipe trains alpha {alpha:g} "
            f"({why}): the train line is the default recipe, which would not give that figure"
        )

    def coverage_note(self) -> str:
        """Empty, or a one-line note on the models this accuracy model leaves without an estimate."""
        if self._has_slope and len(self._rows) > 1:
            return ""
        from .registry import grid_name

        names = ", ".join(grid_name(a, r) for a, r in sorted(self.points))
        what = "other models" if not self._has_slope else "other alphas"
        return (
            f"the {self.label} accuracy points cover {names} only: too few to extrapolate from (2+ alphas and "
            f"2+ resolutions needed), so {what} get no top-1 (None); select ranks them after the models that have "
            "one, more MACs first"
        )


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x."""
    x, y = np.array(points, dtype=float).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def table_model(source: str = "tfslim") -> AccuracyModel:
    """The published-table accuracy model (see the module docstring for the two sources). With ``paper``, the grid
    points the paper does not print keep TF-slim's value and say so (source ``tfslim``)."""
    points = {k: v[2] for k, v in paper.TFSLIM_IMAGENET.items()}
    labels: dict[tuple[float, int], str] = {}
    if source == "paper":
        labels = dict.fromkeys(points, "tfslim")
        for (a, r, variant), top1 in paper.published_top1().items():
            if variant == "standard":
                points[(a, r)] = top1
                labels.pop((a, r), None)
    elif source != "tfslim":
        raise ValueError(f"accuracy source={source!r} is not allowed: source must be one of {', '.join(SOURCES)}")
    return AccuracyModel(points, source, point_labels=labels)


# the final epoch's top-1 first: what the run's model/ folder holds and `reproduce` reports (best_top1 is the best
# evaluated epoch's, saved apart in model_best/, and optimistic as an estimate)
TOP1_KEYS = ("final_top1", "top1", "best_top1", "val_top1", "acc1")


def read_summary(path: str | os.PathLike) -> tuple[float, int, float]:
    """(alpha, resolution, top1 %) of a training run's summary.json (see `read_run`)."""
    return read_run(path)[:3]


class Run(NamedTuple):
    """What `read_run` reads of a training run's summary.json."""

    alpha: float
    resolution: int
    top1: float  # %
    num_classes: int
    classes: tuple[str, ...] | None  # the validation classes' names (``per_class_top1``), where the file has them
    epochs: int | None


def read_run(path: str | os.PathLike, *, grid: bool = True) -> Run:
    """(alpha, resolution, top1 %, num_classes, class names, epochs) from a training run's summary.json.

    The spec is read from ``spec`` (a `ModelSpec` dict), ``config.spec`` / ``model.spec``, ``model`` (as written
    by ``mobilenets train``), or top-level
    ``alpha``/``resolution``; top-1 from the first of ``final_top1``, ``top1``, ``best_top1``, ``val_top1``,
    ``acc1`` (top level or under ``metrics``/``best``); a fraction in [0, 1] is read as a ratio and scaled to %.
    Only the standard MobileNet is on the alpha x resolution grid: a run of another variant (Shallow, Conv) or depth
    multiplier is a `NotOnGrid` error, unless not ``grid`` (a run's own top-1 of its own weights: `weights_run_top1`).
    """
    p = Path(path)
    if (what := not_a_file(p)) is not None:
        raise ValueError(f"accuracy file {str(p)!r} {what}, expected a run's summary.json file")
    if not p.is_file():
        raise FileNotFoundError(f"accuracy file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"accuracy file {str(p)!r} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"accuracy file {str(p)!r} must hold a JSON object")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    # `mobilenets train` writes the ModelSpec dict itself under "model"
    spec = data.get("spec") or config.get("spec") or model.get("spec") or (model if "alpha" in model else data)
    if not isinstance(spec, dict):
        raise ValueError(f"accuracy file {str(p)!r}: spec={spec!r} is not allowed: spec must be a JSON object with "
                         "alpha and resolution")  # fmt: skip
    alpha, res = spec.get("alpha"), spec.get("resolution")
    variant, depth = spec.get("variant", "standard"), spec.get("depth_multiplier", 1)
    if grid and (variant != "standard" or depth != 1):
        raise NotOnGrid(f"accuracy file {str(p)!r}: a {variant} MobileNet (depth multiplier {depth}) is not on the "
                        "alpha x resolution grid")  # fmt: skip
    top1 = None
    for where in (data, data.get("metrics") or {}, data.get("best") or {}):
        top1 = next((where[k] for k in TOP1_KEYS if isinstance(where.get(k), int | float)), None)
        if top1 is not None:
            break
    if not isinstance(alpha, int | float) or not isinstance(res, int) or top1 is None:
        raise ValueError(
            f"accuracy file {str(p)!r} lacks alpha/resolution (under 'spec') or a top-1 key ({', '.join(TOP1_KEYS)})"
        )
    top1 = float(top1) * (100.0 if top1 <= 1.0 else 1.0)
    if not 0 <= top1 <= 100:
        raise ValueError(f"accuracy file {str(p)!r}: top-1 {top1} is not a percentage")
    ModelSpec(alpha=float(alpha), resolution=res)  # validates
    classes = spec.get("num_classes", 1000)
    names = data.get("per_class_top1")
    epochs = data.get("epochs")
    return Run(
        float(alpha),
        res,
        top1,
        classes if isinstance(classes, int) and classes > 0 else 1000,
        tuple(sorted(names)) if isinstance(names, dict) and names else None,
        epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None,
    )


class NotOnGrid(ValueError):
    """A run of a model off the standard alpha x resolution grid (another variant or depth multiplier)."""


# `TrainConfig` fields that name the model a run trained, not its recipe (its summary.json says which model: a --init
# run records its weights' model name where a fresh one records the default name and --alpha), and the seed, which
# repeats a recipe: runs that differ only there are one recipe, seeds of it averaged
NOT_RECIPE = frozenset(("model", "alpha", "resolution", "seed"))
UNRECORDED = "recipe (no config.yaml beside one run)"  # what differs where one run records its recipe, another not


class Measured(NamedTuple):
    """A run `from_summaries` reads: its summary, run folder (`run_folder`) and recipe (its config.yaml)."""

    path: str
    run: Run
    folder: str | None
    config: Any  # the `TrainConfig` its config.yaml holds, None where it has none
    saved: dict[str, Any] | None  # that config.yaml's mapping, as `TrainConfig.differences` compares it


def read_recipe(summary: str | os.PathLike, say: Callable[[str], None] | None = None) -> tuple[Any, dict | None]:
    """(TrainConfig, its mapping) of the config.yaml `trainer` writes beside a run's summary.json; (None, None) where
    there is none, or it cannot be read (named to ``say``): the run then compares as one without a recipe
    (`recipe_differences`: by its summary's epochs against another such run, `UNRECORDED` against one with a recipe)."""
    from .train_config import TrainConfig, _as_it_ran, load_yaml

    path = Path(summary).parent / "config.yaml"
    if not path.is_file():
        return None, None
    try:
        saved = _as_it_ran(load_yaml(path))  # an older file's missing fields as that run ran, as a resume reads them
        return TrainConfig(**saved), saved
    except (ValueError, OSError, TypeError) as exc:
        if say is not None:
            say(f"note: {exc}: the recipe of {summary} is not compared")
        return None, None


def recipe_differences(a: Measured, b: Measured) -> list[str]:
    """The `TrainConfig` fields in which run ``b``'s recipe differs from run ``a``'s (`TrainConfig.differences`, less
    `NOT_RECIPE`); runs without a config.yaml compare their summaries' epochs, and a run with one beside a run
    without differs in `UNRECORDED`."""
    if a.config is not None and b.config is not None:  # both ways: a field one file lacks is skipped by `differences`
        both = a.config.differences(b.saved, NOT_RECIPE) + b.config.differences(a.saved, NOT_RECIPE)
        return sorted({d.split("=", 1)[0] for d in both})
    if a.config is None and b.config is None:
        return ["epochs"] if None not in (a.run.epochs, b.run.epochs) and a.run.epochs != b.run.epochs else []
    return [UNRECORDED]


def best_recipe(runs: list[Measured], say: Callable[[str], None] | None = None) -> list[Measured]:
    """Of the runs of one model, those of its recipe whose mean top-1 is highest (seeds of one recipe averaged; on a
    tie, the first given), the others named to ``say`` with the fields their recipes differ in. A mean over recipes
    (fine-tunes at 94%, a 1-epoch run at 28%, a random-teacher distillation at 50%: 71%) is the top-1 of no recipe,
    and no command reproduces it; the best is what a user comparing recipes keeps, and `select` retrains it."""
    groups: list[list[Measured]] = []
    for m in runs:
        same = next((g for g in groups if not recipe_differences(g[0], m)), None)
        groups.append([m]) if same is None else same.append(m)
    if len(groups) == 1:
        return runs
    best = max(groups, key=lambda g: _mean([m.run.top1 for m in g]))
    if say is not None:
        from .registry import grid_name

        fields = sorted({f for g in groups if g is not best for f in recipe_differences(best[0], g[0])})
        a, r = runs[0].run.alpha, runs[0].run.resolution
        say(
            f"note: {grid_name(a, r)}: {len(runs)} runs of {len(groups)} recipes (differing in {', '.join(fields)}): "
            f"its top-1 is the best recipe's, {_mean([m.run.top1 for m in best]):.2f}% "
            f"({', '.join(m.path for m in best)}), not the mean of all {_mean([m.run.top1 for m in runs]):.2f}%"
        )
    return best


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def from_summaries(paths, say: Callable[[str], None] | None = None) -> AccuracyModel:
    """An accuracy model from the user's measured runs: exact at those points, log-linear in MACs elsewhere. Of
    several runs of one model, the best recipe's (`best_recipe`: seeds of one recipe averaged, other recipes named
    in a note); runs are of one recipe where their config.yaml files differ in no `TrainConfig.experiment` field
    but `NOT_RECIPE`. Runs off the grid (`NotOnGrid`: a reproduce folder's Shallow and Conv MobileNets) are left
    out, each named to ``say``; none left is an error. Runs of different tasks (class counts, or validation classes
    where the files list them) are an error; models whose runs followed different recipes, a note naming the
    fields (the fit between them mixes recipes)."""
    paths = list(paths)
    runs: dict[tuple[float, int], list[Measured]] = {}
    first: tuple[str, Run] | None = None
    named: tuple[str, Run] | None = None  # the first run that names its classes: later ones must name the same
    for path in paths:
        try:
            run = read_run(path)
        except NotOnGrid as exc:
            if say is not None:
                say(f"note: {exc}: left out")
            continue
        first = first or (str(path), run)
        _check_same_task(named or first, str(path), run)  # a run naming no classes cannot stand for the others'
        named = named or ((str(path), run) if run.classes is not None else None)
        config, saved = read_recipe(path, say)
        runs.setdefault((run.alpha, run.resolution), []).append(Measured(str(path), run, run_folder(path), config,
                                                                         saved))  # fmt: skip
    if first is None:
        raise ValueError(f"no accuracy file of a standard MobileNet among the {len(paths)} given")
    kept = {k: best_recipe(v, say) for k, v in runs.items()}
    _note_mixed_recipes(kept, say)
    # a run whose config.yaml cannot be read (named above) has no recipe to print: `--config` would refuse it
    folders = {k: f[0] for k, v in kept.items() if (f := [m.folder for m in v if m.folder and m.config is not None])}
    inits = frozenset(k for k, v in kept.items() for m in v[:1] if m.config is not None and m.config.init)
    known = named[1].classes if named is not None else None
    model = AccuracyModel({k: _mean([m.run.top1 for m in v]) for k, v in kept.items()}, "measured",
                          first[1].num_classes, task=task_name(first[1].num_classes, known), run_dirs=folders,
                          init_runs=inits)  # fmt: skip
    if model.coverage_note() and say is not None:
        say(f"note: {model.coverage_note()}")
    return model


def _note_mixed_recipes(kept: dict[tuple[float, int], list[Measured]], say: Callable[[str], None] | None) -> None:
    """Name to ``say`` the recipe fields in which the runs kept for different models differ (a longer recipe, or a
    fine-tune, lifts its models: the fit between them mixes that in)."""
    reps = [v[0] for _k, v in sorted(kept.items())]
    fields = sorted({f for m in reps[1:] for f in recipe_differences(reps[0], m)})
    if fields and say is not None:
        from .registry import grid_name

        listed = ", ".join(
            f"{grid_name(m.run.alpha, m.run.resolution)} ({m.path}"
            + (f", {m.run.epochs} epochs)" if m.run.epochs is not None else ")")
            for m in reps
        )
        say(f"note: the runs of different models followed different recipes (differing in {', '.join(fields)}): "
            f"{listed}; their top-1s mix recipes")  # fmt: skip


def run_folder(summary: str | os.PathLike) -> str | None:
    """The folder of the `mobilenets train` run whose ``summary`` this is (as given: relative stays relative), or None
    where summary.json does not sit beside the run's final weights (model/) and resolved config (config.yaml), as
    `trainer` writes them: a summary copied elsewhere or written by hand."""
    folder = Path(summary).parent
    if (folder / "config.yaml").is_file() and (folder / "model").is_dir():
        return str(folder)
    return None


class RunTop1(NamedTuple):
    """A `mobilenets train` run's measured top-1 of the weights in its ``model/`` or ``model_best/`` folder
    (`weights_run_top1`)."""

    top1: float  # %
    source: str  # "run: RUN/summary.json, 10 classes #1a2b3c4d, 500 val images": whose measurement it is
    task: str  # `task_name`: what it was measured on (a bench row's ``top1_task``)


def weights_run_top1(folder: str | os.PathLike) -> tuple[RunTop1 | None, str]:
    """(the measured top-1 of the weights ``folder``, why there is none): where ``folder`` is one of the weights
    folders of a `mobilenets train` run (`run_folder`), its summary.json's top-1 of exactly those weights (as
    `trainer` writes them): ``final_top1`` for ``RUN/model``, ``best_top1`` for ``RUN/model_best`` (the best epoch's
    on the same val split that chose it, so optimistic as an estimate of unseen data; its source says best_top1). The
    why is '' where there is no such run (a weights folder of its own: nothing measured it), else one line naming the
    summary: it is not readable, holds no such top-1 (no validation), or is not of these weights (its model or its
    top-1 differs from what the weights' config.json records: a summary left by an earlier state of the run)."""
    from . import weights

    folder = Path(folder)
    if folder.name in ("", ".."):  # `.` or `..` (bench run inside RUN/model): their parent is the run's only by name
        folder = Path(os.path.abspath(folder))
    summary = folder.parent / "summary.json"
    # the summary.json key of each weights folder a run saves (`trainer`): RUN/model holds the last epoch's weights
    # (final_top1), RUN/model_best the best evaluated epoch's (best_top1)
    key = {weights.RUN_WEIGHTS: "final_top1", "model_best": "best_top1"}.get(folder.name)
    if key is None or not summary.is_file() or run_folder(summary) is None:
        return None, ""
    try:
        run, data = read_run(summary, grid=False), json.loads(summary.read_text())
        config = weights.read_config(folder)
    except (ValueError, OSError) as exc:  # WeightsError is a ValueError
        return None, f"{exc}: no measured top-1"
    measured, spec = data.get(key), config["spec"]
    recorded = (config.get("provenance") or {}).get("val_top1")
    if not isinstance(measured, int | float) or isinstance(measured, bool) or measured < 0:  # -1: trainer's "none"
        return None, f"{summary}: no {key} (the run validated no epoch): no measured top-1"
    if (run.alpha, run.resolution, run.num_classes) != (spec.alpha, spec.resolution, spec.num_classes) or (
        isinstance(recorded, int | float) and not math.isclose(recorded, measured, abs_tol=1e-9)
    ):
        return None, f"{summary} is not of the weights in {folder} (its model or top-1 differs): no measured top-1"
    task = task_name(run.num_classes, run.classes)
    images = data.get("val_images")
    seen = f", {images} val images" if isinstance(images, int) and not isinstance(images, bool) else ""
    which = "" if key == "final_top1" else f" {key}"  # model/'s source reads as it always did
    top1 = float(measured) * (100.0 if measured <= 1.0 else 1.0)  # the trainer writes a fraction (`read_run`)
    return RunTop1(top1, f"run: {summary}{which}, {task}{seen}", task), ""


def task_name(num_classes: int, classes: tuple[str, ...] | None) -> str:
    """A short name of the task runs were measured on: the class count, and where the runs list their validation
    classes, the first 8 hex digits of their names' SHA-1 (two 10-class subsets of ImageNet differ there)."""
    import hashlib

    if not classes:
        return f"{num_classes} classes"
    digest = hashlib.sha1("\n".join(classes).encode()).hexdigest()[:8]
    return f"{num_classes} classes #{digest}"


def _check_same_task(first: tuple[str, Run], path: str, run: Run) -> None:
    """A ValueError naming both files where ``run`` was measured on other classes than the first run: top-1 of 10
    classes and of 1000 (or of two 10-class sets) are different tasks, and no line fits both."""
    where, other = first
    if run.num_classes != other.num_classes:
        raise ValueError(f"accuracy files {where!r} ({other.num_classes} classes) and {path!r} ({run.num_classes}) "
                         "measure different tasks: give runs on one dataset")  # fmt: skip
    if run.classes is not None and other.classes is not None and run.classes != other.classes:
        odd = sorted(set(run.classes) ^ set(other.classes))
        shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
        raise ValueError(f"accuracy files {where!r} and {path!r} were validated on different classes (not in both: "
                         f"{shown}): give runs on one dataset")  # fmt: skip


def accuracy_model(files=None, source: str = "tfslim", say: Callable[[str], None] | None = None) -> AccuracyModel:
    return from_summaries(files, say) if files else table_model(source)
