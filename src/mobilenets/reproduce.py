"""Re-run the paper's trade-off experiments on real images and judge each claim from the measured numbers.

Claims (Howard et al. 2017, Section 4.1-4.2):
- Table 4: depthwise separable MobileNet loses only ~1 point against the full-convolution model (70.6 vs 71.7)
  at ~8.5x fewer mult-adds.
- Table 5: at similar cost, thinner (alpha 0.75) beats shallower (Table 5 "Shallow MobileNet") by ~3 points.
- Tables 6-7, Figures 4-5: accuracy falls smoothly (about log-linearly in mult-adds) as alpha and resolution shrink,
  with a sharper drop at alpha 0.25.

Every model is trained with one recipe (the paper's rule: the same hyperparameters for every size); a run shared by
several experiments (1.0 at full resolution appears in four) is trained once; finished runs are reused on resume.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import CreationRefused, atomic_open, atomic_write_text, read_metrics
from .complexity import count_complexity
from .paper import MODEL_ROWS, TFSLIM_IMAGENET, printed_name
from .registry import PAPER_ALPHAS, PAPER_RESOLUTIONS, grid_name, model_spec
from .spec import SpecError

if TYPE_CHECKING:
    from .train_config import TrainConfig

EXPERIMENTS = ("table4", "table5", "table6", "table7", "grid")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Budget:
    """How much training each model gets. ``resolutions`` stand in for the paper's 224/192/160/128 (same rho)."""

    name: str
    resolutions: tuple[int, int, int, int]
    epochs: int
    batch_size: int
    max_per_class: int | None
    max_val_per_class: int | None
    seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False


BUDGETS = {
    # A few CPU minutes in all: tiny images, a slice of the data, one short epoch. Proves the pipeline, not the claims.
    # No warm-up: the recipe's 2 epochs would leave its one epoch's rate rising throughout (and each run warning so).
    "quick": Budget("quick", (56, 48, 40, 32), epochs=1, batch_size=32, max_per_class=16, max_val_per_class=8,
                    seeds=(0,), train={"device": "cpu", "workers": 2, "data_on_device": True, "threads": 2,
                                       "warmup_epochs": 0},
                    smoke=True),
    # The real experiment (one H100/H200): full train split at the paper's resolutions; both splits decoded once per
    # run and held on the GPU (device_data.py); bf16 + channels_last; several runs at once (small models alone
    # leave an H100 mostly idle). No weight EMA: the cosine schedule ends at zero, and an EMA horizon longer than a
    # short run would only lag. Weight decay 1e-4 (the modern recipe's 4e-5 is ImageNet's; Imagenette is 130x smaller).
    # Validation every 5 epochs and after the last: the report uses the final top-1, and each pass over val would add,
    # by an estimate (3,925 images forward against 9,469 forward and backward), about 14% to a training epoch.
    # Checkpoints at the same epochs: Conv MobileNet's (model + momentum, 216 MB) took 0.7-0.8 s to write on the dev
    # machine, 15 s over 20 epochs; an interrupted run redoes at most 4 epochs.
    "full": Budget("full", PAPER_RESOLUTIONS, epochs=30, batch_size=256, max_per_class=None, max_val_per_class=None,
                   seeds=(0,), train={"device": "cuda", "amp": "bf16", "channels_last": True, "workers": 8,
                                      "data_on_device": True, "keep_data_on_device": True, "ema_decay": 0.0,
                                      "weight_decay": 1e-4, "eval_every": 5,
                                      "checkpoint_every": 5}),
}  # fmt: skip


class ReproduceError(ValueError):
    """A reproduce run cannot go on as asked (e.g. its output folder holds runs of another experiment)."""


@dataclass(frozen=True)
class Run:
    """One training run: a registered model at an input resolution and a seed."""

    model: str
    resolution: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.model}-r{self.resolution}-s{self.seed}"


def experiment_rows(experiment: str, budget: Budget) -> list[tuple[str, str, int, float, float]]:
    """(row label, model name, resolution, paper top-1, paper MACs in M) for one experiment under ``budget``."""
    r = budget.resolutions
    res_of = dict(zip(PAPER_RESOLUTIONS, r, strict=True))
    if experiment == "grid":
        rows = []
        for alpha in PAPER_ALPHAS:
            for paper_res in PAPER_RESOLUTIONS:
                macs, _params, top1, _top5 = TFSLIM_IMAGENET[(alpha, paper_res)]
                rows.append((printed_name(alpha, paper_res), grid_name(alpha), res_of[paper_res], top1, macs))
        return rows
    names = {
        "Conv MobileNet": "mobilenet_v1_conv", "MobileNet": "mobilenet_v1_100", "0.75 MobileNet": "mobilenet_v1_075",
        "Shallow MobileNet": "mobilenet_v1_shallow",
    }  # fmt: skip
    rows = []
    for label, kwargs, macs, _params, top1, _flag in MODEL_ROWS[experiment.removeprefix("table")]:
        name = names.get(label) or grid_name(kwargs.get("alpha", 1.0))
        rows.append((label, name, res_of[kwargs.get("resolution", 224)], top1, macs))
    return rows


def tfslim_macs_differences() -> list[str]:
    """The grid models whose MACs TF-slim's table (`paper.TFSLIM_IMAGENET`, the grid's "paper MACs" column) prints
    otherwise than the paper's count and ours, at ImageNet's 1000 classes: beyond rounding (1M), as alpha 0.75's
    317/233/162/104 against 325/239/166/107 and 0.25-192's 34 against 30. The report says so under the grid's table,
    where the column sits beside our MACs without a word otherwise."""
    out = []
    for (alpha, res), (printed, *_rest) in TFSLIM_IMAGENET.items():
        ours = count_complexity(model_spec(grid_name(alpha), resolution=res)).macs / 1e6
        if abs(ours - printed) > 1:
            out.append(f"{printed_name(alpha, res)}: {printed} (ours {ours:.0f})")
    return out


def plan_runs(experiments: list[str], budget: Budget) -> list[Run]:
    """Every distinct run the experiments need, each once."""
    runs: dict[str, Run] = {}
    for experiment in experiments:
        for _label, model, res, _top1, _macs in experiment_rows(experiment, budget):
            for seed in budget.seeds:
                run = Run(model, res, seed)
                runs.setdefault(run.key, run)
    return list(runs.values())


def run_config(run: Run, data: Path, out: Path, budget: Budget, recipe: Path) -> TrainConfig:
    """The TrainConfig of one run: the recipe, then the budget, then the run's model, resolution and seed. The data
    folder is recorded as an absolute path (`data_difference` compares it from any working directory)."""
    from .train_config import resolve

    return resolve(
        str(recipe), data=str(data.resolve()), out=str(out / "runs" / run.key), model=run.model,
        resolution=run.resolution, seed=run.seed, epochs=budget.epochs, batch_size=budget.batch_size,
        max_per_class=budget.max_per_class, max_val_per_class=budget.max_val_per_class, resume="auto", quiet=True,
        **budget.train,
    )  # fmt: skip


def train_run(run: Run, data: Path, out: Path, budget: Budget, recipe: Path, log) -> dict[str, Any]:
    """Train one run (or reuse its finished summary.json); resumes an interrupted run from its checkpoint. The
    caller has checked that a saved run is of the same experiment (`check_same_experiment`)."""
    from .trainer import train

    cfg = run_config(run, data, out, budget, recipe)
    summary_file = Path(cfg.out) / "summary.json"
    if summary_file.is_file():
        log(f"{run.key}: finished earlier, reusing {summary_file}")
        return read_summary(summary_file)
    log(f"{run.key}: training ({budget.epochs} epoch(s) at {run.resolution}px)")
    summary = train(cfg)
    if summary is None:
        summary = read_summary(summary_file)
    return summary


def read_summary(path: Path) -> dict[str, Any]:
    """A finished run's summary.json; a damaged one (edited, or from a full disk) is one line naming it and the way
    out, not a JSON parser's message without a path."""
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReproduceError(f"{path}: not a readable run summary ({exc}); remove that run's folder ({path.parent}) "
                             "to train it again") from exc  # fmt: skip
    if not isinstance(summary, dict):
        raise ReproduceError(f"{path}: not a run summary (a JSON {type(summary).__name__}); remove that run's "
                             f"folder ({path.parent}) to train it again")  # fmt: skip
    return summary


def saved_config(folder: Path) -> dict[str, Any] | None:
    """The resolved config a run saved in ``folder`` (its config.yaml); None when no run started there."""
    import yaml

    saved_file = folder / "config.yaml"
    if not saved_file.is_file():
        return None
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReproduceError(f"{saved_file}: unreadable ({exc}); remove that run folder to train it again") from exc
    return saved if isinstance(saved, dict) else {}


def check_recipe(cfg: TrainConfig) -> None:
    """What the runs' settings ask of this machine (a GPU-only option on a CPU, a batch BatchNorm cannot use), checked
    once before any run, as `train` checks its own: every run of a reproduction shares them (`run_config`). Each run
    used to fail with the same error in turn."""
    from .engine import resolve_device
    from .trainer import check_settings

    check_settings(cfg, world_size=1, device=resolve_device(cfg.device))


def experiment_differences(folder: Path, cfg: TrainConfig, ignore: frozenset[str] = frozenset()) -> list[str]:
    """How the run saved in ``folder`` (`saved_config`) differs from ``cfg`` as an experiment
    (`TrainConfig.differences`, ``ignore`` aside); empty when there is no saved run or it is the same experiment."""
    saved = saved_config(folder)
    return [] if saved is None else cfg.differences(saved, ignore=ignore)


def data_difference(folder: Path, data: Path) -> str | None:
    """How the data folder of the run saved in ``folder`` differs from ``data``: None when it is the same folder or
    the saved one no longer exists (a dataset moved since: the experiment's fields decide). Two datasets that both
    exist are two experiments, whatever their training settings."""
    from .train_config import same_path

    there = (saved_config(folder) or {}).get("data")  # absolute; as typed (read from here) in earlier versions' runs
    if not there or not Path(there).exists() or same_path(there, data):
        return None
    return f"data={there!r} there, {str(data.resolve())!r} here"


def check_same_experiment(
    runs: list[Run], data: Path, out: Path, budget: Budget, recipe: Path, *, same_data: bool = True
) -> None:
    """Run folders from an earlier invocation are reused (finished), resumed (interrupted) or reported only if they
    trained the same experiment (with ``same_data``, on the same data folder too: `data_difference`); otherwise one
    error names them and what differs, before anything trains, and nothing is overwritten. Without ``same_data`` (a
    report of runs made elsewhere) the way out is the runs' own options, not removing them to train again."""
    from .train_config import first_differences

    # a report trains nothing: runs saved before `subsample` was recorded (the first files in path order) are
    # reported as they trained, as reproduce has no option to name that rule by
    ignore = frozenset() if same_data else frozenset({"subsample"})
    bad = {}
    for run in runs:
        folder = out / "runs" / run.key
        differ = experiment_differences(folder, run_config(run, data, out, budget, recipe), ignore)
        moved = data_difference(folder, data) if same_data else None
        differ = [moved, *differ] if moved else differ
        if differ:
            bad[folder] = first_differences(differ)
    if bad:
        (folder, why), *rest = bad.items()
        others = f" (and {len(rest)} more run folder(s) like it)" if rest else ""
        way_out = "or remove those run folders to train them again" if same_data else "or the options they trained with"
        raise ReproduceError(f"{folder} holds a run of another experiment ({why}){others}: give another --out, "
                             f"{way_out}")  # fmt: skip


def recorded_settings(runs: list[Run], out: Path, budget: Budget) -> tuple[dict[str, Any], str | None]:
    """(the budget's training overrides, the data folder) as the first saved run in ``out`` recorded them
    (`saved_config`). A report written without training shows these: this code's overrides can differ in what does
    not change the experiment (how often a run evaluated or checkpointed), and the runs' are the ones that happened.
    Overrides the run did not record (older code) are left out; so is ``threads`` where the run left it to PyTorch
    (`share_cores` sets it only for several processes, which this budget, not yet shared, does not show)."""
    for run in runs:
        saved = saved_config(out / "runs" / run.key)
        if saved:
            keys = [*budget.train, *(["threads"] if saved.get("threads") is not None else [])]
            return {k: saved[k] for k in keys if k in saved}, saved.get("data")
    return dict(budget.train), None


def share_cores(budget: Budget, jobs: int) -> Budget:
    """Split the CPU cores between ``jobs`` training processes (as torchrun does with OMP_NUM_THREADS): each one's
    intra-op and decode threads would otherwise all ask for every core, and the thread launching GPU kernels waits.
    The cores this process may run on (`cores.usable_cores`, as bench and the thread limit count them), not the
    machine's: under a cpuset or taskset ``os.cpu_count()`` gave each run more threads than its cores."""
    from .cores import usable_cores

    if jobs == 1:
        return budget
    share = max(1, usable_cores() // jobs)
    return replace(budget, train={**budget.train, "threads": budget.train.get("threads") or share,
                                  "workers": min(budget.train.get("workers", share), share)})  # fmt: skip


# A run's time on a GPU, fitted to the first H200 lease's 30-epoch runs (4 processes sharing it; the 9 that finished
# in one process, results/reproduce-imagenette-nvidia-h200-2026-11-26/runs): its first epoch took a median 20 s more
# than its later ones (cuDNN autotuning, lazy loading; 5 s for Conv MobileNet), and its wall time fits 20 s + 30 x
# (1.6 s + 2.2 s x (resolution / 224)^2) within 20% each (least squares: 1.57 s and 2.24 s). Per epoch, then, a fixed
# part (steps' launches, evaluation and checkpoint every 5 epochs) and a part in proportion to pixels, whatever the
# model: 0.25 to 1.0 wide and Conv MobileNet's 8.5x mult-adds took the same time. Mult-adds predict CPU time, not
# this. Those wall times left out the set-up (the trainer counts it since): decoding the data, 8.5 s per process and
# resolution on that machine, is GPU_DECODE_S per task in `estimated_wall_s`. The second lease's 21-epoch runs of all
# 18 models (results/reproduce-imagenette-nvidia-h200/runs) took 313 s against an estimate of 416 s: the model is
# pessimistic there, most for the thin models (0.25 wide: 0.4-0.6x their estimate; 1.0 wide: 0.7-1.1x).
GPU_RUN_EXTRA_S, GPU_EPOCH_FIXED_S, GPU_EPOCH_S_PER_224, GPU_DECODE_S = 20.0, 1.6, 2.2, 8.5
# The first lease's training step on one resident batch (1.0 MobileNet-160, batch 256, bf16, channels_last, the
# modern recipe's SGD): results/train-gpu-nvidia-h200-imagenette-160px-2026-11-26-80ep.json's
# synthetic_step_images_per_s. `speed_factor` times that step on the GPU at hand, to scale the estimates above to it.
H200_STEP_IMAGES_S = 17_755.2


def run_cost(run: Run, budget: Budget) -> float:
    """A run's training cost for scheduling: on a GPU an estimate of its seconds (start-up, then epochs of a fixed
    part and one in proportion to pixels), elsewhere its model's mult-adds at its resolution."""
    if uses_gpu(budget):
        return GPU_RUN_EXTRA_S + budget.epochs * (GPU_EPOCH_FIXED_S + GPU_EPOCH_S_PER_224 * (run.resolution / 224) ** 2)
    return run_macs(run)


def estimated_wall_s(runs: list[Run], jobs: int, budget: Budget, factor: float = 1.0) -> float:
    """The busiest process's estimated seconds, scaled by the GPU's `speed_factor`: `train_all` hands the tasks of
    `group_runs` out costliest first, each to the next process that is free (`run_cost` per run, `GPU_DECODE_S` per
    task). The run costs were fitted with 4 processes sharing the GPU: fewer are estimated pessimistically, more
    optimistically."""
    loads = [0.0] * jobs
    for task in group_runs(runs, jobs, budget):
        loads[loads.index(min(loads))] += GPU_DECODE_S + sum(run_cost(run, budget) for run in task)
    return factor * max(loads)


def fit_epochs(runs: list[Run], jobs: int, budget: Budget, seconds: float, factor: float) -> int:
    """The most epochs per run, at most ``budget.epochs``, whose `estimated_wall_s` fits in ``seconds`` (0: not even
    one). Every run gets the same epochs: the paper's rule of one recipe for every model."""
    for epochs in range(budget.epochs, 0, -1):
        if estimated_wall_s(runs, jobs, replace(budget, epochs=epochs), factor) <= seconds:
            return epochs
    return 0


def speed_factor(data: Path, out: Path, budget: Budget, recipe: Path) -> tuple[float, float]:
    """(How many times the H200 lease's time this GPU takes, its images/s) for the training step of
    `H200_STEP_IMAGES_S`, with this budget's settings, cuDNN autotuning on as there (`budget.step_rate`; seconds)."""
    import torch

    from .budget import step_rate

    cfg = run_config(Run("mobilenet_v1_100", 160, 0), data, out, budget, recipe)
    # the reference step ran uncompiled and launched from Python: a recipe's compile or step graph would mix its own
    # gain into the factor (and spend minutes of the budget compiling here)
    rate = step_rate(replace(cfg, compile=False, compile_tuning=False, compile_cudagraphs=False, step_graph=False),
                     num_classes=10)  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the spawned training processes need the memory, not this process's cache
    return H200_STEP_IMAGES_S / rate, rate


def saved_epochs(runs: list[Run], out: Path) -> set[int]:
    """The epochs that the runs already started in ``out/runs`` were given (`saved_config`)."""
    epochs = [(saved_config(out / "runs" / run.key) or {}).get("epochs") for run in runs]
    return {e for e in epochs if isinstance(e, int)}


def record_plan(runs: list[Run], out: Path) -> None:
    """Add ``runs`` to the runs that training invocations planned in ``out`` (``out/plan.json``), before any trains:
    a report of the folder tells a run planned but not finished (missing) from one never planned (`reported_runs`)."""
    keys = [*planned_keys(out), *(run.key for run in runs)]
    atomic_write_text(out / "plan.json", json.dumps({"runs": list(dict.fromkeys(keys))}, indent=2) + "\n")


def planned_keys(out: Path) -> list[str]:
    """The keys of the runs training invocations planned in ``out`` (`record_plan`); [] where none recorded it (older
    code) or the record is unreadable: the runs started there then stand in for the plan."""
    try:
        keys = json.loads((out / "plan.json").read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def reported_runs(runs: list[Run], out: Path) -> list[Run]:
    """The runs a report-only invocation without --seeds reports: ``runs`` (the budget's seeds), then for each of
    their models and resolutions every other seed planned in ``out`` (`planned_keys`) or started in ``out/runs``
    (`saved_config`). Each model is reported with the seeds it was trained with: a model another experiment trained
    with --seeds 2 has two, a model trained with one seed is not missing a second it was never given, and a seed an
    interrupted invocation planned but did not start is reported unfinished."""
    planned = set(planned_keys(out))
    out_runs: dict[str, Run] = {}
    for run in runs:
        prefix = f"{run.model}-r{run.resolution}-s"
        started = [f.name for f in (out / "runs").glob(f"{prefix}*") if saved_config(f) is not None]
        seeds = {int(k.removeprefix(prefix)) for k in [*planned, *started] if k.removeprefix(prefix).isdigit()}
        for seed in sorted(seeds | {run.seed}):
            other = Run(run.model, run.resolution, seed)
            out_runs.setdefault(other.key, other)
    return list(out_runs.values())


def fit_time_budget(cfg: ReproduceConfig, runs: list[Run], data: Path, out: Path, budget: Budget, recipe: Path, log):
    """``--time-budget``: the budget with the most epochs (at most its own) that fit in ``cfg.time_budget`` seconds
    on this GPU, and a record of how they were chosen. Runs already started in ``out`` keep their epochs, whatever the
    ceiling and the clock say (a resumed or report-only invocation must not plan a different experiment)."""
    seconds = cfg.time_budget
    if not uses_gpu(budget):
        raise ReproduceError(gpu_seconds_message(seconds))
    started = saved_epochs(runs, out)
    if len(started) == 1:
        epochs = started.pop()
        log(f"time budget: the runs started in {out / 'runs'} have {epochs} epoch(s); keeping them")
        return replace(budget, epochs=epochs), {"seconds": seconds, "epochs": epochs, "from": "runs already started"}
    if started:  # several: check_same_experiment names what differs
        return budget, {"seconds": seconds, "epochs": budget.epochs, "from": "runs already started (mixed)"}
    if cfg.report_only:
        raise ReproduceError(f"time_budget={seconds:g}: no run has started in {out / 'runs'}; give --epochs")
    t0 = time.perf_counter()
    factor, rate = speed_factor(data, out, budget, recipe)
    left = seconds - (time.perf_counter() - t0)
    epochs = fit_epochs(runs, cfg.jobs, budget, left, factor)
    if epochs == 0:
        one = estimated_wall_s(runs, cfg.jobs, replace(budget, epochs=1), factor)
        raise ReproduceError(
            f"time_budget={seconds:g} is too short: one epoch per run takes an estimated {one:.0f} s on this GPU "
            f"with {cfg.jobs} process(es)"
        )
    estimate = estimated_wall_s(runs, cfg.jobs, replace(budget, epochs=epochs), factor)
    log(
        f"time budget {seconds:g} s: {epochs} epoch(s) per run (at most {budget.epochs}); this GPU trained at "
        f"{rate:,.0f} img/s, {factor:.2f}x the H200's time; estimated {estimate:.0f} s for the busiest process"
    )
    record = {"seconds": seconds, "epochs": epochs, "from": "estimate", "speed_factor": factor,
              "step_images_per_s": rate, "estimated_s": estimate}  # fmt: skip
    return replace(budget, epochs=epochs), record


def gpu_seconds_message(seconds: float) -> str:
    """Why a time budget is refused on a CPU budget (`reproduce` says it before making --out; `fit_time_budget`
    for its own callers)."""
    return f"time_budget={seconds:g} needs a GPU budget (--budget full): its estimate is GPU seconds"


def uses_gpu(budget: Budget) -> bool:
    """Whether the budget's runs train on a GPU (TrainConfig's device rule: 'auto' takes one if there is one)."""
    device = budget.train.get("device", "auto")
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device == "cuda"


def run_macs(run: Run) -> int:
    return count_complexity(model_spec(run.model, resolution=run.resolution)).macs


def group_runs(runs: list[Run], jobs: int, budget: Budget) -> list[list[Run]]:
    """The runs as tasks for ``jobs`` processes, costliest first: one task per resolution (its runs trained one after
    another in one process share the decoded splits, `device_data.load_to_device`); while there are fewer tasks than
    processes, or a task of several runs costs more than a process's share of the whole, its costliest run becomes a
    task of its own (`run_cost`; among equal costs, the one with the most mult-adds: Conv MobileNet at 224)."""
    cost = {run: run_cost(run, budget) for run in runs}
    by_res: dict[int, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (cost[r], run_macs(r)), reverse=True):
        by_res.setdefault(run.resolution, []).append(run)
    tasks = list(by_res.values())

    def total(task: list[Run]) -> float:
        return sum(cost[run] for run in task)

    share = sum(map(total, tasks)) / jobs
    while True:
        several = [t for t in tasks if len(t) > 1]
        big = max(several, key=total, default=None)
        if big is None or (len(tasks) >= jobs and total(big) <= share):
            break
        tasks.remove(big)
        tasks += [big[:1], big[1:]]
    return sorted(tasks, key=total, reverse=True)


def train_group(runs: list[Run], data: Path, out: Path, budget: Budget, recipe: Path, log) -> list[dict[str, Any]]:
    """`train_run` for each run in turn, in this process. A run that fails does not stop the others: they train, and
    the first failure is raised after the last of them (its summary.json is then missing, the others' are written)."""
    summaries, failures = [], []
    for run in runs:
        try:
            summaries.append(train_run(run, data, out, budget, recipe, log))
        except Exception as exc:  # re-raised below, once the rest of the group has trained
            log(f"{run.key}: failed ({type(exc).__name__}: {exc}); training the rest of its group")
            failures.append(exc)
    if failures:
        raise failures[0]
    return summaries


def train_all(runs: list[Run], data: Path, out: Path, budget: Budget, recipe: Path, log, jobs: int) -> dict:
    """Every run's summary. The runs of one resolution train one after another in one process (`group_runs`), so
    with the data held on the GPU each resolution is decoded once per process; ``jobs`` > 1 trains the groups in
    that many spawned processes at once."""
    check_same_experiment(runs, data, out, budget, recipe)  # before any training, not after hours of other runs
    record_plan(runs, out)
    tasks = group_runs(runs, jobs, budget)
    if jobs == 1:
        order = [run for task in tasks for run in task]
        done = dict(zip((run.key for run in order), train_group(order, data, out, budget, recipe, log), strict=True))
        return {run.key: done[run.key] for run in runs}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    summaries: dict[str, dict] = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [(task, pool.submit(train_group, task, data, out, budget, recipe, print)) for task in tasks]
        for task, future in futures:
            for run, summary in zip(task, future.result(), strict=True):
                summaries[run.key] = summary
                log(f"{run.key}: top-1 {100 * summary['final_top1']:.1f}% in {summary['wall_time_s']:.0f} s")
    return {run.key: summaries[run.key] for run in runs}


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2 if len(values) > 1 else None,
            "n": len(values), "values": values}  # fmt: skip


def measured_rows(
    experiment: str,
    budget: Budget,
    runs: list[Run],
    summaries: dict[str, dict],
    num_classes: int,
    val_images: int | None = None,
) -> list[dict]:
    """One row per model of ``experiment``: our top-1 over the seeds of its ``runs`` (None until every one finished),
    those seeds, the validation images it was measured on (the runs' own count, else ``val_images``), MACs, params
    and the paper's figures."""
    rows = []
    for label, model, res, paper_top1, paper_macs in experiment_rows(experiment, budget):
        seeds = [run.seed for run in runs if (run.model, run.resolution) == (model, res)]
        keys = [Run(model, res, s).key for s in seeds]
        tops = [100 * summaries[k]["final_top1"] for k in keys if k in summaries]
        counts = [summaries[k]["val_images"] for k in keys if summaries.get(k, {}).get("val_images")]
        cost = count_complexity(model_spec(model, resolution=res, num_classes=num_classes))
        rows.append({"row": label, "model": model, "resolution": res, "seeds": seeds,
                     "top1": _stats(tops) if len(tops) == len(keys) else None, "macs_M": cost.macs / 1e6,
                     "params_M": cost.params / 1e6, "paper_top1": paper_top1, "paper_macs_M": paper_macs,
                     "val_images": min(counts) if counts else val_images})  # fmt: skip
    return rows


def _loglinear_fit(rows: list[dict], key: str, macs_key: str) -> tuple[float, float]:
    """(slope in points per e-fold of mult-adds, R^2) of top-1 against log(mult-adds)."""
    xs = [math.log(r[macs_key]) for r in rows]
    ys = [r[key] if isinstance(r[key], float | int) else r[key]["mean"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or ss_tot == 0:
        return 0.0, 0.0
    slope = sxy / sxx
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, 1 - ss_res / ss_tot


# The rules each verdict applies (stated in the report so a reader can disagree with them). Differences are judged
# against their noise: each top-1 has the standard error of `_se`; a difference of two models takes the root sum of
# squares (conservative: both models see the same images, which a paired test would exploit). A claim holds or
# fails when the whole 95% interval (Z standard errors either side) says so; an interval that straddles the claim's
# threshold is inconclusive.
Z = 1.96
NOISE = (
    "differences are judged with 95% intervals from the binomial noise of top-1 on the validation images (and, "
    "with several seeds, their spread); an interval across the threshold is inconclusive, and so is an experiment "
    "whose models are all within noise of chance. With one seed, run-to-run variation is not in the interval"
)
RULES = {
    "table4": "holds if the separable model loses less than 2 points against the full-convolution model (the paper: "
    "1.1 points)",
    "table5": "holds if the thinner 0.75 model is more accurate than the shallow model (the paper: +3.1 points)",
    "table6": "holds if top-1 falls from alpha 1.0 to 0.25, rises beyond noise at no step (a rise within noise is "
    "listed, not counted), and drops more from 0.5 to 0.25 than from 0.75 to 0.5",
    "table7": "holds if top-1 falls from resolution 224 to 128 and rises beyond noise at no step (a rise within noise "
    "is listed, not counted)",
    "grid": "holds if top-1 rises with log(mult-adds) and that straight line explains at least 80% of the variance "
    "of top-1 over the 16 models (R^2 >= 0.8); the same fit on TF-slim's ImageNet numbers is shown for reference",
}


def _se(row: dict) -> float:
    """Standard error (points) of a row's mean top-1 over its k seeds; 0 when the number of validation images is
    unknown. Two parts, added in quadrature: the validation set's binomial noise, with the Agresti-Coull adjustment
    ((x + 2) / (n + 4)) so that 0% or 100% still has an error, which more seeds do not shrink (they see the same
    images); and, with several seeds, the standard error of their mean, the run-to-run variation one seed cannot
    show."""
    n, top1 = row.get("val_images"), row["top1"]
    if not n:
        return 0.0
    p = (top1["mean"] / 100 * n + 2) / (n + 4)
    binomial = 100 * math.sqrt(p * (1 - p) / (n + 4))
    values = top1.get("values") or []
    seeds = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return math.hypot(binomial, seeds)


def _judge(value: float, se: float, threshold: float = 0.0) -> bool | None:
    """True when ``value`` is above ``threshold`` beyond Z standard errors, False when below, None when within."""
    if value - Z * se > threshold:
        return True
    if value + Z * se < threshold:
        return False
    return None


def verdict(experiment: str, rows: list[dict], num_classes: int | None = None) -> dict[str, Any]:
    """Judge one experiment's claim from its rows (`measured_rows`) by `RULES`: ``holds`` is True, False or None
    (``incomplete`` or ``inconclusive`` then says why); every number the rule used is returned beside it."""
    done = sum(r["top1"] is not None for r in rows)
    if done < len(rows):  # judged only from complete evidence
        return {"holds": None, "incomplete": f"{done} of {len(rows)} models finished"}
    top = {r["row"]: r["top1"]["mean"] for r in rows}
    se = {r["row"]: _se(r) for r in rows}
    out: dict[str, Any] = {}
    if not all(r.get("val_images") for r in rows):
        out["noise"] = "not estimated (validation image count unknown): point estimates only"
    if num_classes:
        chance = 100 / num_classes
        if all(_judge(top[k], se[k], chance) is not True for k in top):
            return {"holds": None, "inconclusive": f"every model is within noise of chance ({chance:.1f}%)", **out}
    if experiment in ("table4", "table5"):
        a, b = ("MobileNet", "Conv MobileNet") if experiment == "table4" else ("0.75 MobileNet", "Shallow MobileNet")
        gap, gap_se = top[a] - top[b], math.hypot(se[a], se[b])
        threshold = -2.0 if experiment == "table4" else 0.0
        holds = _judge(gap, gap_se, threshold)
        paper = {r["row"]: r["paper_top1"] for r in rows}
        out |= {"holds": holds, "gap_points": gap, "gap_95ci": [gap - Z * gap_se, gap + Z * gap_se],
                "paper_gap_points": paper[a] - paper[b]}  # fmt: skip
        if experiment == "table4":
            macs = {r["row"]: r["macs_M"] for r in rows}
            out["macs_ratio"] = macs[b] / macs[a]
        if holds is None:
            out["inconclusive"] = f"the 95% interval of the gap includes {threshold:g} points"
        return out
    names = [r["row"] for r in rows]  # ordered from the largest model to the smallest
    seq = [top[k] for k in names]
    if experiment in ("table6", "table7"):
        steps = [(seq[i + 1] - seq[i], math.hypot(se[names[i]], se[names[i + 1]])) for i in range(len(seq) - 1)]
        rises = [rise for rise, rise_se in steps if _judge(rise, rise_se) is True]
        noise_rises = [rise for rise, rise_se in steps if rise > 0 and _judge(rise, rise_se) is not True]
        drop = _judge(seq[0] - seq[-1], math.hypot(se[names[0]], se[names[-1]]))
        out |= {"top1_sequence": seq, "significant_rises_points": rises, "rises_within_noise_points": noise_rises,
                "total_drop_points": seq[0] - seq[-1]}  # fmt: skip
        parts = [False if rises or drop is False else drop]
        if experiment == "table6":
            d1, d2 = seq[1] - seq[2], seq[2] - seq[3]
            curve_se = math.sqrt(se[names[1]] ** 2 + 4 * se[names[2]] ** 2 + se[names[3]] ** 2)
            sharper = _judge(d2 - d1, curve_se)
            out |= {"drop_075_to_05": d1, "drop_05_to_025": d2, "sharper_drop_at_025": sharper}
            parts.append(sharper)
        holds = False if False in parts else (None if None in parts else True)
        out["holds"] = holds
        if holds is None:
            out["inconclusive"] = "a drop the rule needs is within noise"
        return out
    slope, r2 = _loglinear_fit(rows, "top1", "macs_M")
    _slope, r2_paper = _loglinear_fit(rows, "paper_top1", "paper_macs_M")
    return out | {"holds": slope > 0 and r2 >= 0.8, "slope_points_per_efold": slope, "r2_loglinear": r2,
                  "r2_loglinear_tfslim_imagenet": r2_paper}  # fmt: skip


@dataclass
class ReproduceConfig:
    """Options of `mobilenets reproduce` (the CLI reads its defaults from here)."""

    data: str | None = None  # default: $MOBILENETS_DATA/imagenette or ../shared/data/imagenette
    out: str = "results/reproduce"
    experiments: tuple[str, ...] = EXPERIMENTS
    budget: str = "quick"
    recipe: str = "modern"  # one recipe for every model; short schedules converge better with it than with RMSProp
    epochs: int | None = None  # override the budget's epochs (recorded in results.json)
    time_budget: float = 0.0  # GPU: the most epochs (at most the budget's or --epochs) estimated to fit these seconds
    jobs: int = 1  # processes training at once; the runs of one resolution go one after another in one process
    report_only: bool = False  # no training: report from the runs already finished in DIR/runs (others: unfinished)
    seeds: int | None = None  # train every model with seeds 0..N-1 (default: the budget's); the report gives the spread
    threads: int | None = None  # intra-op threads per training process (default: the budget's, or the cores / jobs)


def reproduce(cfg: ReproduceConfig, log=print) -> dict[str, Any]:
    """Run (or resume) the experiments, then write DIR/results.json, DIR/report.md and the plots."""
    if not cfg.experiments:
        raise SpecError(f"experiments='' is not allowed: name at least one of {', '.join(EXPERIMENTS)}")
    bad = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if bad:
        raise SpecError(f"experiments={','.join(bad)!r} is not allowed: choose from {', '.join(EXPERIMENTS)}")
    if cfg.budget not in BUDGETS:
        raise SpecError(f"budget={cfg.budget!r} is not allowed: budget must be one of {', '.join(BUDGETS)}")
    budget_ok = isinstance(cfg.time_budget, int | float) and not isinstance(cfg.time_budget, bool)
    if not (budget_ok and math.isfinite(cfg.time_budget) and cfg.time_budget >= 0):
        raise SpecError(f"time_budget={cfg.time_budget!r} is not allowed: time_budget must be a number >= 0 (s)")
    recipe = Path(cfg.recipe) if Path(cfg.recipe).suffix else CONFIGS / f"{cfg.recipe}.yaml"
    if not recipe.is_file():
        raise FileNotFoundError(f"{recipe}: no such recipe file")
    from .train_config import load_yaml

    load_yaml(recipe)  # a mistyped option is one error now, before any folder is made or run planned
    if cfg.jobs < 1:
        raise SpecError(f"jobs={cfg.jobs!r} is not allowed: jobs must be an integer >= 1")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise SpecError(f"epochs={cfg.epochs!r} is not allowed: epochs must be an integer >= 1")
    if cfg.seeds is not None and (isinstance(cfg.seeds, bool) or not isinstance(cfg.seeds, int) or cfg.seeds < 1):
        raise SpecError(f"seeds={cfg.seeds!r} is not allowed: seeds must be an integer >= 1")
    if cfg.threads is not None:  # a report runs nothing here, so this machine's cores set it no limit (it is unused)
        from .cores import check_threads

        check_threads(cfg.threads, SpecError, here=not cfg.report_only)
    data = Path(cfg.data) if cfg.data else default_data()  # after the options: a bad value is named wherever data is
    if not cfg.report_only and not data.is_dir():
        default = (
            ""
            if cfg.data
            else " (the default: $MOBILENETS_DATA/imagenette, else ../shared/data/imagenette beside the checkout)"
        )
        raise FileNotFoundError(
            f"{data}: not found{default}; give --data ROOT, a folder of train/ and val/ class folders"
        )
    if not cfg.report_only and (not (data / "train").is_dir() or not (data / "val").is_dir()):
        raise FileNotFoundError(f"{data}: expected train/ and val/ class folders (ImageFolder layout)")
    budget, out = BUDGETS[cfg.budget], Path(cfg.out)
    if cfg.threads is not None and not cfg.report_only:  # a runtime field (train_config.RUNTIME_FIELDS): earlier
        budget = replace(budget, train={**budget.train, "threads": cfg.threads})  # runs still resume
    if cfg.epochs is not None:
        budget = replace(budget, epochs=cfg.epochs)
    if cfg.seeds is not None:
        budget = replace(budget, seeds=tuple(range(cfg.seeds)))
    if not cfg.report_only and budget.train.get("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SpecError(f"budget={cfg.budget!r} trains on CUDA, which is not available here (use --budget quick "
                            "on a CPU, or --report-only to report runs trained elsewhere)")  # fmt: skip
    if cfg.time_budget and not uses_gpu(budget):  # refused here, before a folder is made (`fit_time_budget`)
        raise ReproduceError(gpu_seconds_message(cfg.time_budget))
    runs = plan_runs(list(cfg.experiments), budget)  # (the runs are the budget's models and seeds, not its threads)
    if not cfg.report_only:  # a report needs runs already there: no empty folder left where there were none
        check_recipe(run_config(runs[0], data, out, budget, recipe))
        try:  # every run writes under it: an unwritable --out is one error now, not one per run
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = f"cannot create that folder ({exc.strerror})"
            if isinstance(exc, FileExistsError | NotADirectoryError):  # a file in the way: the command line's (2)
                raise ReproduceError(f"out={str(out)!r} is not allowed: {why}") from exc
            # refused (permissions, read-only, and ENOENT, which mkdir(parents=True) meets only in a folder that
            # exists, as /proc's): the machine's (1)
            refused = CreationRefused if isinstance(exc, FileNotFoundError) else OSError
            raise refused(exc.errno, why, str(out)) from exc
        budget = share_cores(budget, cfg.jobs)
    start = time.perf_counter()
    if cfg.report_only and cfg.seeds is None:  # the seeds each model was trained with (--seeds: those alone)
        runs = reported_runs(runs, out)
        budget = replace(budget, seeds=tuple(sorted({run.seed for run in runs})))
    if cfg.report_only and cfg.epochs is None and len(started := saved_epochs(runs, out)) == 1:
        budget = replace(budget, epochs=started.pop())  # the runs' epochs (several: check_same_experiment names them)
    names = ", ".join(cfg.experiments)
    planned, trained_on, reused = None, None, []
    if cfg.time_budget:
        budget, planned = fit_time_budget(cfg, runs, data, out, budget, recipe, log)
    if cfg.report_only:
        check_same_experiment(runs, data, out, budget, recipe, same_data=False)  # a report of runs made elsewhere
        train, trained_on = recorded_settings(runs, out, budget)
        budget = replace(budget, train=train)
        summaries, unfinished = finished_runs(runs, out, budget.name, cfg.experiments)
        log(f"report from {len(summaries)} finished of {len(runs)} runs for {names} in {out / 'runs'}")
    else:
        from .data import check_trainable, scan_dataset

        # the splits are checked once here, not once per run (18 lines of the same DataError for a full run)
        train_split, _ = scan_dataset(
            data, max_per_class=budget.max_per_class, max_val_per_class=budget.max_val_per_class
        )
        check_trainable(train_split, budget.batch_size)
        log(f"{len(runs)} distinct training runs for {names} ({budget.name} budget, {cfg.jobs} at once)")
        # finished by an earlier invocation: reused, so this invocation's wall time is not theirs
        reused = [run.key for run in runs if (out / "runs" / run.key / "summary.json").is_file()]
        summaries, unfinished = train_all(runs, data, out, budget, recipe, log, cfg.jobs), {}
    num_classes = len(next(iter(summaries.values()))["model"].get("labels") or []) or 10
    shown = recipe.resolve().relative_to(CONFIGS.parent) if recipe.resolve().is_relative_to(CONFIGS.parent) else recipe
    shown_data = trained_on or str(data)  # report-only: where the runs trained
    results: dict[str, Any] = {"budget": asdict(budget), "data": shown_data, "recipe": str(shown),
                               "num_classes": num_classes, "experiments": {},
                               "runs": {k: _run_record(s) for k, s in summaries.items()},
                               "unfinished_runs": unfinished, "reused_runs": reused, "report_only": cfg.report_only,
                               "time_budget": planned}  # fmt: skip
    counted = Path(trained_on) if trained_on and Path(trained_on).is_dir() else data  # the folder the runs used
    val_images = counted_val_images(counted, budget)  # for runs whose summary predates its "val_images"
    for experiment in cfg.experiments:
        rows = measured_rows(experiment, budget, runs, summaries, num_classes, val_images)
        results["experiments"][experiment] = {"rows": rows, "verdict": verdict(experiment, rows, num_classes),
                                              "rule": RULES[experiment], "noise": NOISE}  # fmt: skip
    results["wall_time_s"] = None if cfg.report_only else time.perf_counter() - start
    results["environment"] = _run_environment(out, summaries) if cfg.report_only else _environment(budget, cfg.jobs)
    results["environment"]["commits"] = run_commits(out, list(summaries))
    out.mkdir(parents=True, exist_ok=True)
    dropped = sorted(set(_reported_experiments(out)) - set(cfg.experiments))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    plots = write_plots(results, out)
    atomic_write_text(out / "report.md", render_report(results, plots))
    log(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    if dropped:  # the earlier report's other experiments are not lost: their runs are still in DIR/runs
        # the options that name these runs (the budget's resolutions, the recipe), where not the defaults
        same = "".join(f" --{k} {getattr(cfg, k)}" for k in ("budget", "recipe")
                       if getattr(cfg, k) != getattr(ReproduceConfig, k))  # fmt: skip
        log(f"note: the report now covers {names} only; the earlier one also had {', '.join(dropped)}: `mobilenets "
            f"reproduce --report-only --out {out}{same}` reports every experiment from the finished runs")  # fmt: skip
    return results


def _reported_experiments(out: Path) -> list[str]:
    """The experiments of the report already in ``out`` (its results.json); [] where none is, or it is unreadable."""
    try:
        return list(json.loads((out / "results.json").read_text())["experiments"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _environment(budget: Budget, jobs: int) -> dict[str, Any]:
    import platform

    import torch

    from .bench import cpu_model  # the CPU's model name: platform.processor() says only "x86_64" on Linux

    cuda = uses_gpu(budget) and torch.cuda.is_available()
    return {"hardware": torch.cuda.get_device_name() if cuda else cpu_model(),
            "torch": torch.__version__, "python": platform.python_version(), "jobs": jobs,
            "command": _command()}  # fmt: skip


def _command() -> str:
    import sys

    name = Path(sys.argv[0]).name if sys.argv else ""
    return " ".join(["mobilenets", *sys.argv[1:]]) if name in ("__main__.py", "mobilenets") else " ".join(sys.argv)


def finished_runs(
    runs: list[Run], out: Path, budget: str | None = None, experiments=EXPERIMENTS
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(summaries of the runs finished in ``out/runs``, {unfinished run: epochs logged and the last val top-1}).
    ``budget``, ``experiments``: those given; an error with no run to report advises another budget only where that
    budget has finished runs of these experiments, never the budget given."""
    summaries, unfinished = {}, {}
    for run in runs:
        folder = out / "runs" / run.key
        if (folder / "summary.json").is_file():
            summaries[run.key] = read_summary(folder / "summary.json")
        else:
            metrics = folder / "metrics.jsonl"
            # a killed run's torn last line is no epoch (`atomic.read_metrics`; any other bad line is named)
            rows = [row for _ln, row in read_metrics(metrics, torn_last=lambda *_: None)] if metrics.is_file() else []
            evaluated = [r["val_top1"] for r in rows if r.get("val_top1") is not None]
            unfinished[run.key] = {"epochs": len(rows), "last_val_top1": evaluated[-1] if evaluated else None}
    if not summaries:
        others = [name for name in budgets_finished(out, experiments) if name != budget]
        hint = (f"; it holds finished runs of --budget {' or '.join(others)}: give that budget" if others
                else " (train first, without --report-only)")  # fmt: skip
        raise FileNotFoundError(f"{out / 'runs'}: no finished run to report{hint}")
    return summaries, unfinished


def budgets_finished(out: Path, experiments=EXPERIMENTS) -> list[str]:
    """The budgets with a finished run of ``experiments`` in ``out/runs``. Run folders are named by the resolution
    trained, so a report-only invocation at the default --budget quick finds none of a full budget's runs (those of
    the committed results/reproduce-imagenette-* folders), which "train first" would misdescribe: 18 finished runs
    are there."""
    return [
        name
        for name, budget in BUDGETS.items()
        if any((out / "runs" / run.key / "summary.json").is_file() for run in plan_runs(list(experiments), budget))
    ]


def _run_environment(out: Path, summaries: dict[str, dict]) -> dict[str, Any]:
    """Where the finished runs were trained, from the env.json each run folder holds."""
    env_file = out / "runs" / next(iter(summaries)) / "env.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    versions = env.get("versions", {})  # a CPU run recorded its CPU's name since "cpu" was added; older, the platform
    return {"hardware": env.get("gpu") or env.get("cpu") or env.get("platform"), "torch": versions.get("torch"),
            "python": versions.get("python"), "jobs": None, "command": _command()}  # fmt: skip


def run_commits(out: Path, keys: list[str]) -> list[str]:
    """The code commits that the finished runs ``keys`` in ``out/runs`` recorded (their env.json), each once, with
    "-dirty" for uncommitted changes: what a report of them is cited with (a resumed run records the later one)."""
    commits = []
    for key in keys:
        env_file = out / "runs" / key / "env.json"
        git = (json.loads(env_file.read_text()) if env_file.is_file() else {}).get("git") or {}
        name = git.get("commit") and git["commit"][:12] + ("-dirty" if git.get("dirty") else "")
        if name and name not in commits:
            commits.append(name)
    return commits


def counted_val_images(data: Path, budget: Budget) -> int | None:
    """How many validation files the budget evaluates on in ``data`` (None when its val/ is not here)."""
    from .data import DataError, scan_split

    try:
        return len(scan_split(data / "val", max_per_class=budget.max_val_per_class).samples)
    except DataError:
        return None


def default_data() -> Path:
    from .data import shared_data_root

    return shared_data_root() / "imagenette"


def _run_record(summary: dict) -> dict:
    keys = ("final_top1", "best_top1", "final_top5", "epochs", "wall_time_s", "train_images_per_s", "device")
    return {k: summary.get(k) for k in keys}


def write_plots(results: dict, out: Path) -> list[str]:
    """Accuracy vs mult-adds (log x) and vs parameters for the 16-model grid: ours beside TF-slim's ImageNet."""
    grid = results["experiments"].get("grid")
    if not grid:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = []
    for x_key, paper_x, label, fname in (("macs_M", "paper_macs_M", "mult-adds (M, log scale)", "grid_macs.png"),
                                         ("params_M", None, "parameters (M)", "grid_params.png")):  # fmt: skip
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, who in zip(axes, ("paper", "ours"), strict=True):
            for alpha in PAPER_ALPHAS:
                # by model, not by label: an older report's rows read "1 MobileNet-224"
                rows = [r for r in grid["rows"] if r["model"] == grid_name(alpha)]
                if who == "ours":
                    rows = [r for r in rows if r["top1"] is not None]
                    xs, ys = [r[x_key] for r in rows], [r["top1"]["mean"] for r in rows]
                else:
                    xs = [r[paper_x] if paper_x else TFSLIM_IMAGENET[(alpha, 224)][1] for r in rows]
                    ys = [r["paper_top1"] for r in rows]
                ax.plot(xs, ys, "o-", label=printed_name(alpha))
            if x_key == "macs_M":
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 20, 50, 100, ... in plain digits
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
            if who == "paper":
                title = "TF-slim ImageNet (paper Fig. 4/5 models)"
            else:
                done = sum(r["top1"] is not None for r in grid["rows"])
                title = (
                    f"ours: {results.get('num_classes', '?')} classes"
                    + (f", {done} of {len(grid['rows'])} models finished" if done < len(grid["rows"]) else "")
                    + (" (smoke run)" if results["budget"]["smoke"] else "")
                )
            ax.set(title=title, xlabel=label, ylabel="top-1 (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_open(out / fname, "wb") as f:  # a killed report keeps the earlier plot, not a truncated one
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
        names.append(fname)
    return names


def _time_budget_lines(planned: dict | None) -> list[str]:
    if not planned:
        return []
    if planned["from"] != "estimate":
        return [
            f"- time budget {planned['seconds']:g} s: {planned['epochs']} epoch(s) per run, from the {planned['from']}"
        ]
    return [f"- time budget {planned['seconds']:g} s: {planned['epochs']} epoch(s) per run, the most estimated to fit "
            f"({planned['estimated_s']:.0f} s for the busiest process): this GPU trained a 1.0 MobileNet-160 step at "
            f"{planned['step_images_per_s']:,.0f} img/s, {planned['speed_factor']:.2f}x the time of the H200 whose "
            "epochs the estimate comes from"]  # fmt: skip


def render_report(results: dict, plots: list[str]) -> str:
    budget, env = results["budget"], results.get("environment", {})
    lines = ["# MobileNet trade-offs re-run on real images", ""]
    if results.get("unfinished_runs"):
        unfinished = results["unfinished_runs"].items()
        left = ", ".join(
            f"{k} ({u['epochs']} of {budget['epochs']} epochs logged"
            + (f", val top-1 then {100 * u['last_val_top1']:.1f}%)" if u["last_val_top1"] is not None else ")")
            for k, u in unfinished
        )
        lines += [f"**Incomplete**: {len(results['unfinished_runs'])} of "
                  f"{len(results['runs']) + len(results['unfinished_runs'])} training runs did not finish: {left}. "
                  "An experiment with an unfinished model is not judged.", ""]  # fmt: skip
    if budget["smoke"]:
        epochs = "one short epoch" if budget["epochs"] == 1 else f"{budget['epochs']} epochs"  # --epochs overrides
        lines += [f"**Smoke run (`--budget quick`)**: tiny images, a slice of the data and {epochs}. It checks "
                  "the pipeline end to end; its accuracies say nothing about the paper's claims.", ""]  # fmt: skip
    lines += [f"- data: `{results['data']}`; recipe: `{results['recipe']}` (the same for every model)",
              f"- budget: {budget['name']}: {budget['epochs']} epoch(s), batch {budget['batch_size']}, resolutions "
              f"{_resolutions_words(budget['resolutions'])}, seeds {', '.join(map(str, budget['seeds']))}; "
              f"recipe overrides: {budget['train']}",
              f"- command: `{env.get('command')}`; code: mobilenets commit "
              f"{', '.join(env.get('commits') or []) or 'not recorded'} (the runs' env.json)",
              *_time_budget_lines(results.get("time_budget")),
              _wall_time_line(results, env),
              f"- verdicts: {NOISE}",
              "- top-1 is the final epoch's validation top-1 (mean over seeds; spread = half the range); MACs and "
              f"params are ours at the resolution trained, with the {results.get('num_classes', '?')}-class "
              "classifier trained, not ImageNet's 1000 (multiply-accumulates, BatchNorm not counted); the paper's "
              "columns are its ImageNet figures (grid: TF-slim's released checkpoints).", ""]  # fmt: skip
    for name, exp in results["experiments"].items():
        v = exp["verdict"]
        lines += [f"## {name}", "", "| model | resolution | top-1 (%) | spread | MACs (M) | params (M) | paper top-1 | "
                  "paper MACs (M) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        mixed = len({tuple(r.get("seeds") or ()) for r in exp["rows"]}) > 1  # report-only: each model's own seeds
        for r in exp["rows"]:
            if r["top1"] is None:
                top1, spread = "not finished", "-"
            else:
                top1 = f"{r['top1']['mean']:.2f}"
                spread = f"{r['top1']['spread']:.2f}" if r["top1"]["spread"] is not None else "-"
            if mixed:
                top1 += f" (seed{'s' if len(r['seeds']) > 1 else ''} {', '.join(map(str, r['seeds']))})"
            lines.append(
                f"| {r['row']} | {r['resolution']} | {top1} | {spread} | "
                f"{r['macs_M']:.1f} | {r['params_M']:.2f} | {r['paper_top1']} | {r['paper_macs_M']} |"
            )
        detail = ", ".join(f"{k} = {_fmt(val)}" for k, val in v.items() if k != "holds")
        lines += ["", f"**Verdict: {verdict_words(v)}** ({detail}). Rule: {exp['rule']}.", ""]
        if name == "grid" and (differ := tfslim_macs_differences()):
            lines += [f"The paper MACs column copies TF-slim's table, which prints other MACs than the paper's count "
                      f"and ours (1000 classes) for: {'; '.join(differ)}.", ""]  # fmt: skip
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    return "\n".join(lines)


def _wall_time_line(results: dict, env: dict) -> str:
    """What this invocation's wall time covers: the runs it trained (or resumed), not those an earlier invocation
    finished and it reused (a rerun that reused all 18 said "1 s for 18 training runs")."""
    runs, where = results["runs"], f"on {env.get('hardware')}, torch {env.get('torch')}"
    if results["wall_time_s"] is None:
        return (f"- report written from the {len(runs)} runs finished in `runs/` (no training in this invocation); "
                f"their own wall times {_run_times(runs)}; trained {where}")  # fmt: skip
    reused = {k: runs[k] for k in results.get("reused_runs") or [] if k in runs}
    line = (f"- wall time: {results['wall_time_s']:.0f} s for {len(runs) - len(reused)} training runs "
            f"({env.get('jobs', 1)} at once) {where}")  # fmt: skip
    if reused:
        line += (f"; {len(reused)} runs finished by an earlier invocation were reused, not retrained (their own "
                 f"wall times {_run_times(reused)})")  # fmt: skip
    return line


def _resolutions_words(resolutions) -> str:
    """The budget's resolutions, and the paper's they stand for when they differ (the quick budget's tiny ones)."""
    said, paper = "/".join(map(str, resolutions)), "/".join(map(str, PAPER_RESOLUTIONS))
    return said if said == paper else f"{said} standing in for {paper}"


def _run_times(runs: dict[str, dict]) -> str:
    times = [r["wall_time_s"] for r in runs.values() if r.get("wall_time_s") is not None]
    if not times:
        return "were not recorded"
    return f"sum to {sum(times):.0f} s (longest {max(times):.0f} s; per run in results.json)"


def verdict_words(v: dict) -> str:
    """holds / does not hold / inconclusive (within noise) / not judged (incomplete), for a `verdict` dict."""
    if v["holds"] is not None:
        return "holds" if v["holds"] else "does not hold"
    return "inconclusive" if "inconclusive" in v else "not judged (incomplete)"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
