"""`TrainConfig`: every training option with its default, in one dataclass.

Precedence: dataclass default < recipe YAML (``--config configs/paper.yaml``) < explicit command-line option.
Unknown YAML keys are an error; ``resume`` in a YAML file is ignored (`INVOCATION_FIELDS`: a run's config.yaml is a
recipe for a fresh run). The CLI options are generated from the fields (name, type, help text in the field
metadata), so a default lives in exactly one place. The resolved config is saved in every run folder and checkpoint.

Paths (`PATH_FIELDS`: ``data``, ``out``, ``init``, a weights folder as ``teacher``, ``teacher_weights``, a checkpoint
file as ``resume``) are read from the working directory, whether typed on the command line or in a YAML file: as a
shell reads them, and as timm's train.py reads a path in its ``--config`` file. (Reading a hand-written recipe's
``data: imgs`` beside the YAML file instead would quietly point every existing recipe that names one at another
folder of the same name.) A run records them absolute (`TrainConfig.absolute_paths`) in its
config.yaml, checkpoints, env.json (with the working directory its typed command ran in) and summary.json (its
weights, which are published, name the run folder relative to themselves: `weights.training_run`), so ``--config
RUN/config.yaml`` names the files that run used from any directory; a torchvision model name
as ``teacher`` (``resnet18``) is no path and is kept. A resume compares paths by what they name (`same_path`:
``--init w`` in /x and ``--init /x/w`` are the same weights), and a run saved by earlier versions, whose config.yaml
and checkpoints hold paths as typed, resumes, and serves as a recipe, from the directory it was started in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .cores import THREADS_LIMIT, usable_cores

OPTIMIZERS = ("rmsprop", "rmsprop_torch", "sgd", "nesterov", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")
AMP_MODES = ("none", "bf16", "fp16")
CACHE_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")
DEPTHWISE = ("conv", "triton", "taps", "flipped", "hybrid")  # dwconv.IMPLEMENTATIONS
TEACHER_RESOLUTIONS = ("own", "student")  # trainer.adapt_teacher's: AtOwnResolution, or none
SUBSAMPLE_RULES = ("hash", "first")  # data.subsample's


# --workers when none is given, capped by `default_workers` at the cores this process may run on
DEFAULT_WORKERS = 4


def default_workers() -> int:
    """`DEFAULT_WORKERS`, or fewer where this process may run on fewer cores (`cores.usable_cores`): more worker
    processes than cores only contend, and torch's DataLoader warns about each loader that asks for them ("Our
    suggested max number of worker in current system is 2", ``torch/utils/data/dataloader.py``
    ``check_worker_number_rationality``, which counts the same CPU affinity: ``torch._utils.cpu_count``). An explicit
    ``--workers`` is kept."""
    return min(DEFAULT_WORKERS, usable_cores())


# How help texts state that default (train's and eval's --workers: one wording, from the constant)
DEFAULT_WORKERS_WORDS = f"{DEFAULT_WORKERS}, or the cores this process may run on if fewer"


class ConfigError(ValueError):
    """A bad training option; the message names the option, the value and what is allowed."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Defaults follow the `modern`-neutral middle ground; configs/paper.yaml and configs/modern.yaml overlay them."""

    # --- data ---
    data: str | None = _f(None, "dataset root holding train/<class>/* and val/<class>/* (ImageFolder layout)")
    train_split: str = _f("train", "name of the training split folder under --data")
    val_split: str = _f("val", "name of the validation split folder under --data")
    classes: list[str] | None = _f(
        None,
        "use only these class folders, space- or comma-separated ('a\\, b', quoted, for a comma in a name; "
        "default: all)",
    )
    max_per_class: int | None = _f(
        None, "use at most this many training images per class, picked as --subsample says (default: all)"
    )
    max_val_per_class: int | None = _f(
        None, "use at most this many validation images per class, picked as --subsample says (default: all)"
    )
    subsample: str = _f(
        "hash",
        "which images --max-per-class and --max-val-per-class keep: hash (those whose paths in their class folder "
        "hash lowest: a spread over the folder, the same for every seed and machine) | first (the first in path "
        "order, as runs before this option took them; in Imagenette, its ILSVRC2012_val_* files)",
    )
    cache: str = _f("auto", "hold decoded uint8 images in memory: auto (when they fit --cache-budget-gb), on, off")
    cache_budget_gb: float = _f(4.0, "memory budget for the in-memory image cache, GiB")
    workers: int | None = _f(
        None,
        "DataLoader worker processes (0 = load in the main process); decode threads on device (default: "
        f"{DEFAULT_WORKERS_WORDS})",
    )
    data_on_device: bool = _f(
        False, "decode train/val once and hold them on the training device (GPU), augmenting there (device_data.py)"
    )
    keep_data_on_device: bool = _f(
        False, "with --data-on-device: keep the decoded splits resident after training, for a next run in this process"
    )
    gpu_decode: bool = _f(
        False, "with --data-on-device on a GPU: decode baseline JPEGs there (nvjpeg, batched), other files on CPU"
    )
    # --- augmentation (paper Section 3.2: "less regularization and data augmentation") ---
    scale_min: float = _f(0.08, "RandomResizedCrop smallest crop area as a fraction of the image")
    ratio_min: float = _f(3 / 4, "RandomResizedCrop smallest aspect ratio")
    ratio_max: float = _f(4 / 3, "RandomResizedCrop largest aspect ratio")
    hflip: bool = _f(True, "random horizontal flips")
    mixup_alpha: float = _f(0.0, "MixUp: blend each batch with a shuffled copy, lambda ~ Beta(a, a) (0 = off)")
    cutmix_alpha: float = _f(0.0, "CutMix: paste a box from a shuffled copy, lambda ~ Beta(a, a) (0 = off)")
    # --- model ---
    model: str = _f("mobilenet_v1_100", "registered model name (see `mobilenets list`)")
    alpha: float | None = _f(None, "width multiplier (overrides the model's)")
    resolution: int | None = _f(None, "training and evaluation input size (overrides the model's)")
    act: str | None = _f(None, "activation: relu (paper) or relu6")
    dropout: float | None = _f(None, "dropout before the classifier (overrides the model's)")
    init: str | None = _f(
        None,
        "start from these weights (our format); the head keeps their rows when they name every class folder (by "
        "label, or ImageNet wnid), and is reset otherwise (a note says which); they fix the architecture: a --model, "
        "--alpha or --act they do not have is an error; not the resolution: --resolution, else the one --model "
        "states (mobilenet_v1_075_160), else theirs; a resume reads the model from its checkpoint, not from them",
    )
    freeze_backbone: bool = _f(False, "train only the classifier (linear probe); backbone BatchNorm stays in eval mode")
    backbone_lr_mult: float = _f(1.0, "learning-rate multiplier for the backbone (discriminative fine-tuning)")
    freeze_bn: bool = _f(False, "keep every BatchNorm in eval mode (running statistics, not batch statistics)")
    sync_bn: bool = _f(False, "SyncBatchNorm across processes (GPU only: PyTorch has no CPU SyncBatchNorm)")
    # --- distillation (paper Section 4.5, 4.7) ---
    teacher: str | None = _f(None, "teacher: a torchvision model name or a folder of our weights")
    teacher_weights: str | None = _f(None, "state_dict file for a torchvision teacher (nothing is downloaded)")
    distill_temperature: float = _f(4.0, "softmax temperature for the distillation loss")
    distill_weight: float = _f(0.5, "weight of the distillation term; (1 - weight) goes to the label loss")
    teacher_resolution: str = _f(
        "own",
        "what a teacher of our weights sees: own (a batch below its resolution resized up to it: a 0.75-192 teacher "
        "fed 128 px scored 95.6% on Imagenette val, 94.3% as is, at 2.24x its MACs) | student (the batch as it is)",
    )
    # --- optimisation ---
    epochs: int = _f(10, "training epochs (with --time-budget: at most this many)")
    time_budget: float = _f(
        0.0,
        "seconds of wall time for the whole run, set-up (decoding, model, compile) included, Python's start-up not: "
        "the number of epochs, at most --epochs, is planned "
        "after each epoch to fit, and a cosine schedule's length follows it (budget.py; not bit-reproducible; 0 = off)",
    )
    batch_size: int = _f(
        64,
        "global batch size (split evenly over processes); every step's batch is full, an epoch's last incomplete one "
        "is dropped (a note says so, with a --batch-size that uses them, where that leaves over 5% of the images out)",
    )
    eval_batch_size: int | None = _f(None, "evaluation batch size per process (default: --batch-size)")
    eval_every: int = _f(1, "evaluate on the val split every this many epochs (and always after the last)")
    optimizer: str = _f("rmsprop", "rmsprop (TensorFlow semantics) | rmsprop_torch | sgd | nesterov | adamw")
    lr: float = _f(0.045, "learning rate at a global batch of --lr-base-batch")
    lr_base_batch: int = _f(0, "batch size --lr is quoted for; scaled linearly to --batch-size (0 = no scaling)")
    momentum: float = _f(0.9, "momentum (sgd, nesterov, rmsprop)")
    rmsprop_decay: float = _f(0.9, "RMSProp moving-average decay of squared gradients")
    eps: float | None = _f(
        None, "optimizer epsilon; default 1.0 for RMSProp (inside the square root, as in TF-slim), 1e-8 for AdamW"
    )
    betas: list[float] = _f([0.9, 0.999], "AdamW betas")
    weight_decay: float = _f(4e-5, "L2 weight decay (decoupled for AdamW)")
    wd_depthwise: bool = _f(False, "apply weight decay to depthwise filters")
    wd_norm_bias: bool = _f(False, "apply weight decay to BatchNorm parameters and biases")
    schedule: str = _f("exponential", "learning-rate schedule after warm-up: exponential | cosine | constant")
    lr_decay: float = _f(0.94, "exponential schedule: multiply the rate by this ...")
    lr_decay_epochs: float = _f(2.0, "... every this many epochs (staircase)")
    min_lr_ratio: float = _f(0.0, "cosine schedule: final rate as a fraction of the peak rate")
    warmup_epochs: float = _f(0.0, "linear warm-up length in epochs")
    label_smoothing: float = _f(0.0, "label smoothing for the cross-entropy")
    ema_decay: float = _f(0.0, "exponential moving average of the weights and BatchNorm statistics, per step (0 = off)")
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value (0 = off)")
    # --- speed ---
    device: str = _f("auto", "auto | cpu | cuda")
    amp: str = _f("none", "mixed precision: none | bf16 | fp16")
    channels_last: bool = _f(False, "NHWC memory layout")
    compile: bool = _f(False, "torch.compile the model")
    compile_tuning: bool = _f(
        False,
        "with --compile: Inductor's coordinate-descent tuning of its generated kernels' launch configs (a slower "
        "first step: about 3 minutes for a 1.0-224 step on an H200, where it made the step replayed as a CUDA graph 6% "
        "faster)",
    )
    compile_cudagraphs: bool = _f(
        False,
        "with --compile, CUDA, one process: Inductor replays the compiled forward and backward passes as CUDA graphs "
        "(torch.compile's mode reduce-overhead), leaving fewer launches to Python; the optimizer step stays its own",
    )
    step_graph: bool = _f(
        False,
        "CUDA, one process, SGD/Nesterov/AdamW, amp none or bf16: replay the whole training step (forward, loss, "
        "backward, clipping, optimizer step) as one CUDA graph, captured after 3 eager steps; the same steps (up to "
        "rounding), launched at once. The H200 benchmark's fastest step, 1.32x timm's compiled one, was such a graph "
        "with --compile --compile-tuning --depthwise flipped --pad-stem",
    )
    depthwise: str = _f(
        "conv",
        "depthwise convolutions as: conv (PyTorch's, cuDNN on CUDA) | triton (CUDA: Triton kernels for the forward and "
        "both gradients) | taps (nine strided products that --compile fuses with the BatchNorm) | flipped (conv, "
        "with a stride-1 layer's input gradient as a forward conv with the rotated kernel) | hybrid (flipped, with a "
        "stride-2 layer's input gradient by a Triton kernel on CUDA) (dwconv.py)",
    )
    pad_stem: bool = _f(
        False, "zero-pad the stem's input channels to 8, for cuDNN's tensor-core kernels (layers.ChannelPaddedConv2d)"
    )
    cudnn_benchmark: bool = _f(
        True, "CUDA: cuDNN times its algorithms on the first step of each layer shape (off under --deterministic)"
    )
    threads: int | None = _f(None, f"torch CPU threads per process, {THREADS_LIMIT} (default: PyTorch's choice)")
    # --- run control ---
    out: str | None = _f(None, "run folder (checkpoints, metrics.jsonl, summary.json, plots, weights)")
    seed: int = _f(0, "random seed (model init, sampling, augmentation)")
    deterministic: bool = _f(False, "deterministic algorithms (bit-identical resume on CPU)")
    save_every: int = _f(0, "also checkpoint every this many steps (0 = only at the end of each epoch)")
    checkpoint_every: int = _f(
        1, "end-of-epoch checkpoint every this many epochs (and after the last): fewer writes for big models"
    )
    keep_checkpoints: int = _f(2, "how many newest checkpoints to keep")
    resume: str | None = _f(
        None,
        "'auto' (newest valid checkpoint in --out) or a checkpoint file; command line only (a --config file's is "
        "ignored)",
    )
    max_steps: int | None = _f(
        None,
        "stop after this many optimizer steps in all (for smoke tests); an epoch it stops before its end is said "
        "and recorded as partial (metrics.jsonl's stopped_at_step)",
    )
    log_every: int = _f(50, "plain-log line every this many steps (when not on a terminal)")
    quiet: bool = _f(
        False,
        "no progress or information lines; warnings and errors (stderr) and the final result line (stdout: best and "
        "final top-1, the weights folder) are still printed",
    )

    def validate(self) -> TrainConfig:
        for name, annotation in _field_types().items():  # TrainConfig(...) from Python code is checked as the CLI
            setattr(self, name, _typed(name, getattr(self, name), annotation))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("amp", self.amp, AMP_MODES)
        _choice("cache", self.cache, CACHE_MODES)
        _choice("device", self.device, DEVICES)
        _choice("depthwise", self.depthwise, DEPTHWISE)
        _choice("teacher_resolution", self.teacher_resolution, TEACHER_RESOLUTIONS)
        _choice("subsample", self.subsample, SUBSAMPLE_RULES)
        for name in ("epochs", "batch_size", "keep_checkpoints", "log_every", "eval_every", "checkpoint_every"):
            _number(name, getattr(self, name), lambda v: v >= 1, "an integer >= 1", integer=True)
        for name in ("eval_batch_size", "max_per_class", "max_val_per_class", "max_steps"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), lambda v: v >= 1, "an integer >= 1", integer=True)
        if self.threads is not None:
            from .cores import check_threads

            check_threads(self.threads, ConfigError)
        if self.workers is None:  # recorded in the run's config.yaml as used (a runtime field: no resume compares it)
            self.workers = default_workers()
        for name in ("workers", "save_every", "lr_base_batch"):
            _number(name, getattr(self, name), lambda v: v >= 0, "an integer >= 0", integer=True)
        # torch.manual_seed takes at most 2**64 - 1, and the sampler seeds each epoch with seed + epoch
        _number("seed", self.seed, lambda v: 0 <= v <= MAX_SEED, "an integer in [0, 2**63 - 1]", integer=True)
        _number("lr", self.lr, lambda v: v > 0, "a positive number")
        if self.init and self.resolution is None:  # recorded as trained, so a resume and config.yaml say it too
            self.resolution = _named_resolution(self.model)
        if self.alpha is not None:
            _number("alpha", self.alpha, lambda v: 0 < v <= 2, "a number in (0, 2]")
        if self.resolution is not None:
            _number("resolution", self.resolution, lambda v: v >= 32, "an integer >= 32", integer=True)
        if self.dropout is not None:
            _number("dropout", self.dropout, lambda v: 0 <= v < 1, "a number in [0, 1)")
        _number("backbone_lr_mult", self.backbone_lr_mult, lambda v: v >= 0, "a number >= 0")
        _number("cache_budget_gb", self.cache_budget_gb, lambda v: v >= 0, "a number >= 0")
        _number("scale_min", self.scale_min, lambda v: 0 < v <= 1, "a number in (0, 1]")
        _number("ratio_max", self.ratio_max, lambda v: v > 0, "a positive number")
        _number(
            "ratio_min",
            self.ratio_min,
            lambda v: 0 < v <= self.ratio_max,
            f"a number in (0, ratio_max={self.ratio_max:g}]",
        )
        for name in ("momentum", "rmsprop_decay", "min_lr_ratio", "distill_weight"):
            _number(name, getattr(self, name), lambda v: 0 <= v <= 1, "a number in [0, 1]")
        # at 1 every target is the uniform distribution, whatever the label: the run would learn nothing from them
        _number("label_smoothing", self.label_smoothing, lambda v: 0 <= v < 1, "a number in [0, 1)")
        _number("ema_decay", self.ema_decay, lambda v: 0 <= v < 1, "a number in [0, 1)")
        _number("lr_decay", self.lr_decay, lambda v: 0 < v <= 1, "a number in (0, 1]")
        _number("lr_decay_epochs", self.lr_decay_epochs, lambda v: v > 0, "a positive number")
        if self.eps is None:  # the optimizer's own default, recorded in the run's config.yaml as used
            self.eps = DEFAULT_EPS[self.optimizer]
        for name in ("eps", "distill_temperature"):
            _number(name, getattr(self, name), lambda v: v > 0, "a positive number")
        for name in ("time_budget", "weight_decay", "warmup_epochs", "grad_clip", "mixup_alpha", "cutmix_alpha"):
            _number(name, getattr(self, name), lambda v: v >= 0, "a number >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas={self.betas!r} is not allowed: betas must be two numbers in [0, 1)")
        if self.resume not in (None, "auto") and not Path(self.resume).is_file():
            there = Path(self.resume)  # a folder or a path not there: said which, where both read "must be ... a file"
            what = "a folder" if there.is_dir() else "no such file" if there.suffix else ""
            why = f" ({what}{'; --resume auto takes the newest in --out' if there.is_dir() else ''})" if what else ""
            raise ConfigError(f"resume={self.resume!r} is not allowed: resume must be 'auto' or a checkpoint file{why}")
        for name in ("compile_tuning", "compile_cudagraphs"):
            if getattr(self, name) and not self.compile:
                raise ConfigError(f"{name} needs --compile (it changes what torch.compile generates)")
        if self.teacher_weights and not self.teacher:
            raise ConfigError("teacher_weights needs --teacher (a torchvision model name)")
        for name in ("distill_weight", "distill_temperature"):  # set away from the default, it was meant to act
            if not self.teacher and getattr(self, name) != _DEFAULTS[name]:
                raise ConfigError(f"{name}={getattr(self, name):g} needs --teacher (without one nothing is distilled)")
        if not self.teacher and self.teacher_resolution != _DEFAULTS["teacher_resolution"]:
            raise ConfigError(f"teacher_resolution={self.teacher_resolution!r} needs --teacher (without one no "
                              "teacher sees anything)")  # fmt: skip
        if self.gpu_decode and not self.data_on_device:
            raise ConfigError("gpu_decode=True needs --data-on-device (it decodes into the splits held on the GPU)")
        if self.keep_data_on_device and not self.data_on_device:  # it was ignored: no split is held to keep
            raise ConfigError("keep_data_on_device=True needs --data-on-device (it keeps the splits held on the GPU)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def experiment(self) -> dict[str, Any]:
        """The fields that decide what a run trains (data slice, model, recipe, seed), without `RUNTIME_FIELDS`:
        two runs that agree here are the same experiment, wherever and however fast they ran. ``subsample`` is left
        out where no split is subsampled: it then picks nothing."""
        limited = self.max_per_class is not None or self.max_val_per_class is not None
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items()
                if k not in RUNTIME_FIELDS and (k != "subsample" or limited)}  # fmt: skip

    def differences(self, saved: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
        """How a run saved with config ``saved`` (its config.yaml or checkpoint) differs from this one as an
        experiment (`experiment`, less ``ignore``): "k=there there, here here" per field; empty when it is the
        same. A field the saved run did not record (older code) does not count, unless its absence meant a setting
        other than today's default (`_as_it_ran`), nor does a path written another way that names the same file
        (`same_path`; a relative one saved by earlier versions is read from here)."""
        saved = _as_it_ran(json.loads(json.dumps(saved)))
        return [f"{k}={saved[k]!r} there, {v!r} here" for k, v in self.experiment().items()
                if k not in ignore and k in saved and not _same_value(k, saved[k], v)]  # fmt: skip

    def absolute_paths(self) -> TrainConfig:
        """A copy whose paths (`PATH_FIELDS`) are absolute, read from the working directory (the module docstring's
        rule): what a run records, so that its config.yaml names the same files from any directory. A ``teacher``
        that names nothing here is a torchvision model name (`teacher_is_weights`) and stays as it is, and
        so does ``resume: auto``. Links are not followed and ``..`` is kept (``Path.absolute``): the path means what
        the typed one did (a link's ``..`` is not its lexical parent), and a link moved to a new dataset is followed
        later as the typed path would be."""
        changes = {}
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if not value or (name == "resume" and value == "auto"):
                continue
            if name == "teacher" and not teacher_is_weights(value):  # a torchvision model's name
                continue
            changes[name] = str(Path(value).absolute())
        return dataclasses.replace(self, **changes)


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}  # (list fields' are factories: not compared here)
MAX_SEED = 2**63 - 1  # `TrainConfig.seed`'s largest


# the options that name files or folders (the module docstring's rule; ``teacher`` only where it names one,
# `teacher_is_weights`)
PATH_FIELDS = ("data", "out", "init", "teacher", "teacher_weights", "resume")


def teacher_is_weights(teacher: str) -> bool:
    """Whether ``teacher`` is our weights (a folder, or a file, that exists here, read from the working directory)
    rather than a torchvision model's name (``resnet18``). The one rule every reader of ``teacher`` goes by: the
    trainer builds, checks and warns by it (`trainer.load_teacher`), a run records only such a teacher as a path
    (`TrainConfig.absolute_paths`) and a resume compares it as one (`_same_value`, `_as_it_ran`). A name that is also
    a file or folder here is that path, as a shell would read it."""
    return Path(teacher).exists()


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder, each read from the working directory and with its links
    followed: ``imgs`` in /x, ``/x/imgs`` and ``/x/link-to-imgs`` do. Neither needs to exist."""
    return Path(a).resolve() == Path(b).resolve()


def _as_it_ran(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the fields added since it was saved filled in where their absence meant a setting other
    than today's default: what that run did, so that a resume compares it. A distillation run saved before
    ``teacher_resolution`` fed a teacher of our weights (a folder; a torchvision name is never resized) the
    student's batch as it was (``student``); resumed under ``own`` it would change its teacher's targets mid-run. A
    run saved before ``subsample`` with --max-per-class or --max-val-per-class took each class's first files in path
    order (``first``); resumed under ``hash`` it would go on with other images."""
    teacher = saved.get("teacher")
    if isinstance(teacher, str) and teacher_is_weights(teacher) and "teacher_resolution" not in saved:
        saved = {**saved, "teacher_resolution": "student"}
    limited = saved.get("max_per_class") is not None or saved.get("max_val_per_class") is not None
    if limited and "subsample" not in saved:
        saved = {**saved, "subsample": "first"}
    return saved


def _same_value(name: str, there: Any, here: Any) -> bool:
    """Whether field ``name`` is the same in a saved config (``there``) and this one: equal, or paths naming the same
    file (`same_path`). A ``teacher`` that names nothing here is a torchvision model's name: compared by its text."""
    if there == here:
        return True
    if name not in PATH_FIELDS or not isinstance(there, str) or not isinstance(here, str):
        return False
    return (name != "teacher" or teacher_is_weights(here)) and same_path(there, here)


def first_differences(differ: list[str]) -> str:
    """`TrainConfig.differences` for a message: the first four, and how many more."""
    return "; ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")


# How and where a run executes, not what it trains: paths, threads, caching, the data's placement and decoder,
# kernels and compilation, logging, evaluation and checkpoint intervals. The recipe is the same; the random streams
# (CPU or CUDA generators, per-sample or per-batch augmentation, Inductor's dropout), the summation order and (with
# nvjpeg) a few levels of some pixels may differ.
RUNTIME_FIELDS = frozenset(
    ("data", "out", "cache", "cache_budget_gb", "workers", "data_on_device", "keep_data_on_device", "gpu_decode",
     "eval_batch_size", "eval_every", "device", "channels_last", "compile", "compile_tuning", "compile_cudagraphs",
     "step_graph", "depthwise", "pad_stem", "cudnn_benchmark", "threads", "deterministic", "sync_bn", "save_every",
     "checkpoint_every", "keep_checkpoints", "resume", "log_every", "quiet")
)  # fmt: skip


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed: {name} must be one of {', '.join(choices)}")


def _number(name: str, value: Any, ok, allowed: str, integer: bool = False) -> None:
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


# epsilon per optimizer when --eps is not given: TF-slim's RMSProp setting (--opt_epsilon 1.0, as Inception-v3),
# PyTorch's and Loshchilov & Hutter's AdamW 1e-8 (1.0 there would swamp the second-moment estimate)
DEFAULT_EPS = {"rmsprop": 1.0, "rmsprop_torch": 1.0, "sgd": 1.0, "nesterov": 1.0, "adamw": 1e-8}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, is_list) of an annotation such as ``int | None`` or ``list[str] | None``."""
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    inner = args[0]
    if typing.get_origin(inner) is list:
        return typing.get_args(inner)[0], True
    return inner, False


# PyYAML reads YAML 1.1, whose floats need a dot: ``lr: 1e-3`` would be the string "1e-3" (then refused as not a
# number), where YAML 1.2, JSON and the command line's --lr 1e-3 read 0.001
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")


def _recipe_loader():
    """yaml.SafeLoader that also reads exponent-only numbers (``1e-3``, ``4E-5``) as floats, and refuses an option
    given twice (``lr`` twice, or ``label-smoothing`` beside ``label_smoothing``): PyYAML would keep the last."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            lines: dict[str, int] = {}
            for key_node, _value in node.value:
                key, line = str(self.construct_object(key_node)).replace("-", "_"), key_node.start_mark.line + 1
                if key in lines:
                    raise ConfigError(f"{key} is given twice (lines {lines[key]} and {line})")
                lines[key] = line
            return super().construct_mapping(node, deep)

    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    return RecipeLoader


# keys of other trainers' recipes (timm's train.py, Keras, Lightning) that a user may bring, and our field for each:
# an unknown key is named with it (closeness of spelling alone offers "amp" for warmup, "batch_size" for image_size)
OTHER_NAMES = {
    "learning_rate": "lr",
    "warmup": "warmup_epochs",
    "wd": "weight_decay",
    "bs": "batch_size",
    "img_size": "resolution",
    "image_size": "resolution",
    "input_size": "resolution",
    "smoothing": "label_smoothing",
    "opt": "optimizer",
    "sched": "schedule",
    "model_ema_decay": "ema_decay",
    "clip_grad": "grad_clip",
}


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe file: a mapping of TrainConfig fields (or their earlier names, `_renamed`). Unknown keys are an
    error naming them."""
    import yaml

    p = Path(path)
    if p.is_dir():  # said "config file not found" of a folder that is there (a run folder: its config.yaml)
        inside = f" (its recipe: {p / 'config.yaml'})" if (p / "config.yaml").is_file() else ""
        raise ConfigError(f"{p}: a folder, not a config file{inside}")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_recipe_loader()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({_yaml_problem(exc)})") from exc
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a YAML text file ({exc.reason} at byte {exc.start})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        data = _renamed(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        import difflib

        def near(key: str) -> str | None:  # a typo's field, or the field a key from another tool's recipes names
            return OTHER_NAMES.get(key) or next(iter(difflib.get_close_matches(key, sorted(known), 1, 0.75)), None)

        said = [f"{k} (did you mean {near(k)}?)" if near(k) else k for k in unknown]
        raise ConfigError(f"{p}: unknown option(s) {', '.join(said)}")
    return data


def _yaml_problem(exc: Exception) -> str:
    """A YAML parser's error on one line: its problem and where (its own message quotes the offending line and a
    caret beneath it, over several lines)."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """Options renamed since runs saved their config.yaml, read as they are called now, so that an earlier run's
    config.yaml is still a recipe (``--config run/config.yaml``, as a refused resume suggests): the boolean
    ``triton_depthwise`` became ``depthwise`` (true: ``triton``; false: PyTorch's own, the default)."""
    if "triton_depthwise" not in data:
        return data
    data = dict(data)
    old = data.pop("triton_depthwise")
    if not isinstance(old, bool):
        raise ConfigError(f"triton_depthwise={old!r} is not allowed: it (now depthwise) must be true or false")
    if old and data.setdefault("depthwise", "triton") != "triton":
        raise ConfigError(f"triton_depthwise=True and depthwise={data['depthwise']!r} disagree: give depthwise only")
    return data


# options a YAML file does not set: how one invocation starts, which a run's config.yaml records with its settings
# (`resume: auto`, or the checkpoint it resumed), so that ``--config RUN/config.yaml --out NEW`` would continue that
# run's checkpoint in NEW instead of training the same recipe afresh; --resume on the command line still does
INVOCATION_FIELDS = frozenset(("resume",))


def _named_resolution(model: str) -> int | None:
    """The resolution ``--model`` states (`registry.named_resolution`: ``mobilenet_v1_075_160``), which ``--init``
    trains at unless ``--resolution`` is given: resolution changes no weight (the paper's rho: weights at 224 fine-tune
    at 160), and a fresh run of that name trains at it. It used to be dropped for the weights' own, silently. A name
    that states none (the default ``mobilenet_v1_100`` among them) leaves the weights' (None). A name that cannot be
    read is left to `trainer.requested_spec`, whose check names it."""
    from .registry import named_resolution
    from .spec import SpecError

    try:
        return named_resolution(model)
    except SpecError:
        return None


# the options that name the architecture, which --init weights fix (`init_disagreements`)
INIT_FIELDS = ("model", "alpha", "act")


def init_disagreements(saved: Any, asked: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what was asked, what the weights are) for each of ``asked``'s `INIT_FIELDS` that weights of spec ``saved``
    are not, as ``name=value`` texts: ``model`` by the `weights.ARCHITECTURE_FIELDS` its name stands for (alpha,
    variant, depth multiplier) less those asked beside it (``alpha``, which overrides the name's, as in a fresh run
    and in ``create_model(name, alpha=..., weights=DIR)``: `weights.check_architecture` compares the name with it
    applied). Empty lists when everything asked agrees."""
    from .registry import model_spec
    from .weights import ARCHITECTURE_FIELDS

    ours, theirs = [], []  # theirs: the fields that differ, each once (the name's exclude those asked beside it)
    for name, value in asked.items():
        if name == "model":
            named = model_spec(value)
            differ = [f for f in ARCHITECTURE_FIELDS if f not in asked and getattr(named, f) != getattr(saved, f)]
            if differ:
                ours.append(f"model={value!r} ({', '.join(f'{f}={getattr(named, f)!r}' for f in differ)})")
                theirs += differ
        elif value != getattr(saved, name):
            ours.append(f"{name}={value!r}")
            theirs.append(name)
    return ours, [f"{f}={getattr(saved, f)!r}" for f in theirs]


def _note_recipe_init_fields(
    config_file: str | None, init: str, recipe: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Say which of a recipe's `INIT_FIELDS` the --init weights disagree with (configs/*.yaml's ``act: relu``
    beside converted relu6 weights): they are left to the weights, which an explicit option is not (`trainer.
    check_init_agrees`). Weights that cannot be read are reported before the run folder is made, not here."""
    from .weights import read_config

    try:
        ours, theirs = init_disagreements(read_config(init)["spec"], recipe)
    except (OSError, ValueError):
        return
    if ours:
        say(f"note: {config_file}: {', '.join(ours)} does not apply to --init weights: training their "
            f"{', '.join(theirs)}")  # fmt: skip


def resolve(
    config_file: str | None = None, *, say: Callable[[str], None] | None = None, **overrides: Any
) -> TrainConfig:
    """Defaults, then the YAML file (less `INVOCATION_FIELDS`, each one set there named to ``say``), then
    ``overrides``; validated."""
    values = load_yaml(config_file) if config_file else {}
    for name in sorted(INVOCATION_FIELDS & {k for k, v in values.items() if v is not None} - set(overrides)):
        if say is not None:
            say(f"note: {config_file}: {name}={values[name]!r} is ignored (a recipe trains afresh; give --{name} to "
                f"{name})")  # fmt: skip
    values = {k: v for k, v in values.items() if k not in INVOCATION_FIELDS}
    recipe = {k: values.pop(k) for k in INIT_FIELDS if values.get(k) is not None and k not in overrides}
    values.update(overrides)
    if not values.get("init"):
        values.update(recipe)
    else:  # a recipe's model, width or activation is for a fresh model: the weights decide; not its model's resolution
        if "model" in recipe and values.get("resolution") is None:  # (no weight), which applies as a fresh run's
            values["resolution"] = _named_resolution(recipe["model"])
        if recipe and say is not None:
            _note_recipe_init_fields(config_file, values["init"], recipe, say)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}")
    return TrainConfig(**values).validate()


def _typed(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as field ``name`` holds it (ints as floats, a single item as a list, paths as strings), or a
    ConfigError naming it when it is of another type."""
    base, is_list = _base_type(annotation)
    if is_list and base is str and isinstance(value, str | os.PathLike):
        # "a, b" (YAML, Python) is two items, as on the command line (`_comma_items`); a list's items are taken as
        # they are, so a folder whose name holds a comma can still be named
        parts = comma_parts(os.fspath(value))
        if not parts:
            raise ConfigError(f"{name}={value!r} is not allowed: {name} must name at least one item")
        return parts
    if is_list and isinstance(value, tuple):
        value = list(value)
    if is_list and isinstance(value, base | int) and not isinstance(value, bool):
        value = [value]  # a single class folder, say, where a list is expected
    if value is None and type(None) in typing.get_args(annotation):
        return value
    items = value if is_list and isinstance(value, list) else [value]
    if (is_list and not isinstance(value, list)) or not all(_is_a(v, base) for v in items):
        want = f"a list of {_TYPE_WORDS[base]}s" if is_list else _TYPE_WORDS[base]
        raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {want}")
    convert = float if base is float else os.fspath if base is str else lambda v: v
    return [convert(v) for v in items] if is_list else convert(value)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _is_a(value: Any, base: type) -> bool:
    """Whether a YAML/CLI value fits a field of scalar type ``base`` (ints count as floats; booleans as nothing else:
    YAML reads ``no`` as false, but the string "no" is not a boolean, nor is 1)."""
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base is str:  # a pathlib.Path from Python code, for --data, --out, --init ...
        return isinstance(value, str | os.PathLike)
    return isinstance(value, int | float) if base is float else isinstance(value, base)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; defaults shown from the dataclass, absent options stay unset."""
    parser.add_argument("--config", help="recipe YAML overlaying the defaults (e.g. configs/paper.yaml)")
    defaults = TrainConfig()
    types = _field_types()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base, is_list = _base_type(types[f.name])
        default = getattr(defaults, f.name)
        # a list default as it is typed (nargs="+": space- or comma-separated, "--betas 0.9 0.999")
        shown = default if not isinstance(default, (list, tuple)) else " ".join(map(str, default))
        # unset by default (None), or a help text that names its own default ("default: all"): no "(default: None)"
        own = default is None or "(default:" in f.metadata["help"]
        help_text = f.metadata["help"] if own else f"{f.metadata['help']} (default: {shown})"
        # argparse %-formats help texts: a literal % (a measured "6% faster") would end --help in a TypeError
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif is_list:
            add_list_option(parser, flag, base, metavar=f.name.upper(), **kw)
        else:
            parser.add_argument(flag, type=base, metavar=f.name.upper(), **kw)


def add_list_option(parser: argparse.ArgumentParser, flag: str, base: type, **kw: Any) -> None:
    """A list option as train's are: space- or comma-separated items, each a ``base`` (``--classes a b``,
    ``--classes a,b``), one list however many words held them."""
    parser.add_argument(flag, type=_comma_items(base), nargs="+", action=_Joined, **kw)


def comma_parts(text: str) -> list[str]:
    """The items of a comma-separated list, stripped, empty ones dropped (``"a, b,"`` -> ``["a", "b"]``); ``\\,``
    is a comma inside an item (``"rock\\, paper,scissors"`` -> ``["rock, paper", "scissors"]``), for a class
    folder whose name holds one."""
    parts = (part.replace("\\,", ",").strip() for part in re.split(r"(?<!\\),", text))
    return [part for part in parts if part]


def _comma_items(base: type):
    """An argparse ``type`` for one word of a list option: its comma-separated items, each a ``base``. Lists
    elsewhere in the CLI (bench, select) are comma-separated, so ``--classes a,b`` means ``--classes a b``; it
    used to look for one folder named "a,b"."""

    def items(word: str) -> list:
        parts = comma_parts(word)
        if not parts:
            raise ValueError(f"no item in {word!r}")  # argparse: "invalid <type> value"
        return [base(part) for part in parts]

    items.__name__ = base.__name__  # argparse's message for a bad item: "invalid float value: ..."
    return items


class _Joined(argparse.Action):
    """The items of every word of a `_comma_items` list option, in order, as one list."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [item for word in values for item in word])


def from_args(args: argparse.Namespace, say: Callable[[str], None] | None = None) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return resolve(getattr(args, "config", None), say=say, **overrides)
