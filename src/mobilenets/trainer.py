"""`train(cfg)` and `evaluate_weights(...)`: the whole run, assembled from data.py, optim.py and engine.py.

A run folder (``cfg.out``) ends up holding:
  config.yaml (resolved TrainConfig, paths absolute: train_config's docstring), env.json (git commit, library
  versions, hardware, world size, the command as typed and its working directory),
  checkpoints/ckpt-<step>.pt, metrics.jsonl (one line per epoch), summary.json, curves.png,
  model/ and model_best/ (our weights format: `mobilenets.load(RUN_DIR / "model")`; the spec records the class
  names as labels and the normalisation used).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import kernels, step_graph
from . import weights as weights_io
from .atomic import FolderInUse, atomic_write_text, check_writable, lock_folder, name_file, read_metrics
from .budget import EpochPlanner
from .complexity import count_complexity
from .data import (
    BadFiles,
    DataError,
    ImageFolderDataset,
    Split,
    cache_side,
    check_trainable,
    collate,
    fuller_batch,
    left_out_note,
    left_out_report,
    scan_dataset,
    scan_split,
    should_cache,
)
from .data import train_transform as make_train_transform
from .device_data import (
    DeviceEvalLoader,
    DeviceTrainLoader,
    is_resident,
    load_to_device,
    release_resident,
    square_bytes,
)
from .dwconv import use_depthwise
from .engine import (
    CKPT_DIR,
    CheckpointWriter,
    DistEnv,
    Progress,
    ResumableSampler,
    ShardSampler,
    StepContext,
    all_reduce_min_int,
    broadcast_buffers,
    cleanup_distributed,
    evaluate,
    find_resume,
    gather_bad,
    gather_objects,
    list_checkpoints,
    load_checkpoint,
    log,
    rank_seed,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_distributed,
    train_one_epoch,
    unwrap,
)
from .formatting import counted, metric, rank_prefix
from .labels import class_indices, known_labels
from .layers import pad_stem
from .mobilenet_v1 import MobileNetV1, strip_wrapper_prefixes
from .optim import ModelEMA, build_optimizer, load_optimizer_state, lr_factor, scaled_lr, set_lr
from .preprocess import check_rgb, eval_transform
from .registry import create_model, grid_name, model_spec
from .spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from .stopping import TOGETHER_S, StopAgreement, StoppableLoader, StopRequest, Terminated, say_now, sigterm_stops
from .train_config import (
    ConfigError,
    TrainConfig,
    default_workers,
    first_differences,
    init_disagreements,
    teacher_is_weights,
)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"  # deterministic cuBLAS needs a fixed workspace (CUDA docs)


def train(cfg: TrainConfig) -> dict[str, Any] | None:
    """Train as ``cfg`` says; returns the summary on rank 0 (None on other ranks). Works under torchrun."""
    cfg.validate()
    if not cfg.data or not cfg.out:
        raise ConfigError("training needs --data ROOT and --out RUN_DIR")
    # what the run reads, writes and records names the same files from any directory (train_config's docstring)
    cfg = cfg.absolute_paths()
    env = setup_distributed(cfg.device)
    run = None
    with sigterm_stops(StopRequest()) as stop:  # a SIGTERM while the write below lands is a second one: said
        try:
            run = _Run(cfg, env, stop)
            with process_settings():
                return run.run()
        except BaseException:
            if run is not None:
                run.checkpoints.settle()  # a write started before the failure lands (or says why not)
            raise
        finally:
            if run is not None:
                run.release()
            if cfg.data_on_device and not cfg.keep_data_on_device:
                release_resident()  # the decoded splits would otherwise hold GPU memory after this run
            cleanup_distributed()


# --- model ------------------------------------------------------------------------------------------------------


@contextmanager
def process_settings() -> Iterator[None]:
    """The process-wide torch settings a run makes (`_Run._settings`: threads, deterministic algorithms, cuDNN's
    autotuner, cuBLAS's workspace variable) as the caller had them again afterwards, as `evaluate_weights` does for
    threads. A `train()` call from Python used to leave them changed, e.g. deterministic mode on for all that followed.
    (The seeds a run sets are not undone: torch's and Lightning's seeding do not either.)"""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cublas = os.environ.get(CUBLAS_WORKSPACE)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:  # a switch is not free (OpenMP rebuilds its team): only when changed
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if cublas is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = cublas


def _due(epoch: int, every: int, epochs: int) -> bool:
    """Whether 0-based ``epoch`` ends a period of ``every`` epochs or is the last (``--eval-every``,
    ``--checkpoint-every``)."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def inductor_options(tuning: bool, cudagraphs: bool) -> dict | None:
    """torch.compile's Inductor options for ``--compile-tuning`` and ``--compile-cudagraphs`` (None: its defaults).
    As options, not ``mode``, since torch.compile takes one or the other: reduce-overhead is ``triton.cudagraphs``.
    The tuning gave the H200's fastest step (benchmarks/gpu_vs_timm.py's train_tuned)."""
    options = {}
    if tuning:
        options["coordinate_descent_tuning"] = True
    if cudagraphs:
        options["triton.cudagraphs"] = True
    return options or None


def compiled(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``model`` under torch.compile with ``cfg``'s Inductor options (`inductor_options`) where ``cfg.compile`` is set,
    else ``model`` itself."""
    if not cfg.compile:
        return model
    return torch.compile(model, options=inductor_options(cfg.compile_tuning, cfg.compile_cudagraphs))


def build_model(
    cfg: TrainConfig, classes: list[str], say=lambda msg: None, *, resumed: ModelSpec | None = None
) -> MobileNetV1:
    """`model_for` with its depthwise layers as ``cfg.depthwise`` says (`dwconv.use_depthwise`) and its stem's input
    channels padded with ``cfg.pad_stem`` (`layers.pad_stem`): the model a run trains, and the one
    `budget.step_rate` times."""
    model = model_for(cfg, classes, say, resumed=resumed)
    use_depthwise(model, cfg.depthwise)
    if cfg.pad_stem:
        pad_stem(model)
    if cfg.depthwise == "taps" and not cfg.compile:
        say("warning: --depthwise taps without --compile runs each depthwise layer as about 25 tensor operations "
            "(9 products, their borders, 8 sums), each a pass over memory (on a GPU, slower than --depthwise conv): "
            "the taps are for Inductor to fuse")  # fmt: skip
    return model


def model_for(
    cfg: TrainConfig, classes: list[str], say=lambda msg: None, *, resumed: ModelSpec | None = None
) -> MobileNetV1:
    """A fresh model from the registry, or ``--init`` weights: their head's rows for the class folders when the
    weights name them all (`head_rows`: by label or ImageNet wnid, picked and reordered), else the head reset when
    the classes differ (their count, or the names the weights record).

    With ``--init`` the weights fix the architecture: a model, width or activation asked for besides them must agree
    (`check_init_agrees`). A resume of an ``--init`` run passes its checkpoint's spec as ``resumed``: the model is
    built from it alone, as the checkpoint's state then replaces every weight (the ``--init`` folder may be gone)."""
    labels = tuple(classes)
    if cfg.init and resumed is not None:  # the checkpoint's state replaces the weights: only their spec is needed
        check_init_agrees(cfg, resumed)
        return create_model(resumed)
    if cfg.init:
        model = weights_io.load(cfg.init, **({"resolution": cfg.resolution} if cfg.resolution else {}))
        check_init_agrees(cfg, model.spec)
        if (cfg.resolution or not model.spec.name) and model.spec.variant == "standard":  # converted: unnamed
            model.spec = model.spec.replace(name=grid_name(model.spec.alpha, model.spec.resolution))
        rows = head_rows(model.spec, classes)
        if rows is not None:
            say(f"note: the --init head keeps its rows for all {len(classes)} class folders (picked from its "
                f"{len(known_labels(model.spec))} labels, in the folders' order)")  # fmt: skip
            keep_head_rows(model, rows)
        elif model.num_classes != len(classes) or ((known := known_labels(model.spec)) and tuple(known) != labels):
            # (known: its labels, or ImageNet's for an unlabelled 1000/1001-way head, which names classes too)
            _say_head_reset(model.spec, classes, say)
            model.reset_classifier(len(classes))  # (as many) other classes: its rows would score the wrong ones
        else:  # its labels are the folders, or its unnamed outputs as many as they are
            how = "its labels are the folders" if known_labels(model.spec) else "its outputs name no classes"
            say(f"note: the --init head keeps its rows for all {len(classes)} class folders ({how}, in order)")
        model.spec = model.spec.replace(labels=labels)
        if cfg.dropout is not None:
            model.spec = model.spec.replace(dropout=cfg.dropout)
            model.head_drop.p = cfg.dropout
        return model
    return create_model(requested_spec(cfg, num_classes=len(classes), labels=labels))  # grid-named


def requested_spec(cfg: TrainConfig, **fields: Any) -> ModelSpec:
    """The `ModelSpec` ``--model`` names with ``--alpha``, ``--resolution``, ``--act`` and ``--dropout`` applied (and
    ``fields``): what a fresh run builds, and what `check_sources` validates before the run folder is made, so that
    any value the spec refuses (``--model mobilenet_v1_999``, ``--act gelu``) leaves no folder holding only .lock."""
    overrides = {k: getattr(cfg, k) for k in ("alpha", "resolution", "act", "dropout") if getattr(cfg, k) is not None}
    return model_spec(cfg.model, **overrides, **fields)


def head_rows(spec, classes: list[str]) -> list[int] | None:
    """The classifier row of each class folder, in the folders' order, when the weights name every one of them (by
    label, or by ImageNet wnid for an ImageNet head: `labels.class_indices`, as `eval` and a teacher match them) in
    another order or among other classes; None when their rows already are the folders' or some folder is unknown."""
    names = known_labels(spec)
    if not names or tuple(names) == tuple(classes):
        return None
    found, unknown = class_indices(list(classes), names)
    return None if unknown else [found[c] for c in classes]


def _say_head_reset(spec, classes: list[str], say) -> None:
    """Tell why the head is reset: one whose weights name some of the class folders is reset as a whole (`head_rows`
    keeps rows only when they name every one), so a fine-tune on partly new classes does not pass for one that kept
    them; one that names none of them, or no classes, is replaced by a new head, said too (it was silent, and a
    fine-tune from a new head needs more steps than one from kept rows)."""
    names = known_labels(spec)
    found, unknown = class_indices(list(classes), names) if names else ({}, [])
    if not found:
        if names:
            why = f"none of the {len(classes)} class folders are among its {len(names)} labels"
        elif spec.num_classes == 0:  # a feature extractor (Keras include_top=False, timm num_classes=0)
            why = "its weights have no classifier (a feature extractor)"
        else:
            why = f"its {spec.num_classes} outputs name no classes"
        say(f"note: the --init head is replaced by a new {len(classes)}-way head: {why}")
    else:
        say(f"note: the --init head is reset: {len(unknown)} of the {len(classes)} class folders are not among its "
            f"{len(names)} labels (first: {unknown[0]!r}), so the rows of the {len(found)} it names are not kept "
            "either")  # fmt: skip


@torch.no_grad()
def keep_head_rows(model: MobileNetV1, rows: list[int]) -> None:
    """A classifier of the trained rows ``rows`` only, in that order: fine-tuning ImageNet weights on Imagenette's
    wnid folders starts from their trained scores for those 10 classes (as `PickOutputs` restricts a teacher), not
    from a random head."""
    old = model.classifier
    model.reset_classifier(len(rows))
    index = torch.tensor(rows, dtype=torch.long, device=old.weight.device)
    model.classifier.weight.copy_(old.weight.index_select(0, index))
    model.classifier.bias.copy_(old.bias.index_select(0, index))


CALIBRATION_IMAGES, CALIBRATION_BATCH = 128, 32


def identity_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorms that only add their bias in eval mode (weight 1, mean 0, var + eps = 1): how converted weights
    whose BN was folded into the convs (TFLite files, `convert.StateBuilder.put_identity_bn`) keep the ConvBNAct
    structure."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
        and m.affine
        and m.running_mean is not None
        and bool(torch.all(m.weight == 1) and torch.all(m.running_mean == 0))
        # exactly 1 - eps as the converter writes it (float32): a fresh BatchNorm's variance of 1 is not an identity
        and bool(torch.all(m.running_var == 1.0 - torch.tensor(m.eps, dtype=m.running_var.dtype)))
    ]


@torch.no_grad()
def restore_batchnorm_statistics(model: nn.Module, batches) -> int:
    """Give identity BatchNorms (`identity_batchnorms`) the statistics of their inputs, so fine-tuning can train them.

    In training mode a BatchNorm normalises by the batch's own statistics. An identity BN then divides activations by
    their spread, which the folded weights never expected: fine-tuning converted TFLite weights trained to chance.
    Here each such BN gets, from one eval-mode pass over ``batches`` (images at the model's input), its input's
    per-channel mean m and variance v as running statistics, weight sqrt(v + eps) and bias m + its bias. Eval outputs
    are unchanged (x - m) / sqrt(v + eps) * sqrt(v + eps) + m + b = x + b, and a training batch like ``batches``
    normalises to nearly the same. Returns how many BatchNorms were set (0: nothing to do)."""
    bns = identity_batchnorms(model)
    if not bns:
        return 0
    sums: dict[nn.Module, list] = {bn: [0.0, 0.0, 0] for bn in bns}

    def record(bn, inputs, _output):
        x = inputs[0].double()
        acc = sums[bn]
        acc[0] = acc[0] + x.sum((0, 2, 3))
        acc[1] = acc[1] + (x * x).sum((0, 2, 3))
        acc[2] += x.numel() // x.shape[1]

    hooks = [bn.register_forward_hook(record) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    restored = 0
    for bn, (total, squares, count) in sums.items():
        if not count:
            continue
        restored += 1
        mean = total / count
        var = (squares / count - mean * mean).clamp(min=0.0)
        bn.bias.add_(mean.to(bn.bias.dtype))
        bn.weight.copy_(torch.sqrt(var + bn.eps).to(bn.weight.dtype))
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
    return restored


def spread(items: list, count: int) -> list:
    """Up to ``count`` of ``items`` evenly spaced from the first to near the last (class-ordered samples: every
    class)."""
    n, k = len(items), min(len(items), count)
    return [items[i * n // k] for i in range(k)]


def bn_calibration_batches(split, spec, device: torch.device, count: int = CALIBRATION_IMAGES):
    """Up to ``count`` training images, evenly strided over the split (so over its classes), center-cropped at the
    model's input as for evaluation, in batches on ``device``: the same images on every DDP rank."""
    subset = Split(split.root, split.classes, spread(split.samples, count))
    ds = ImageFolderDataset(subset, eval_transform(spec, spec.resolution), replace_bad=True)
    loader = DataLoader(ds, batch_size=CALIBRATION_BATCH, num_workers=0, collate_fn=collate)
    for images, _labels, _bad in loader:
        if images.numel():
            yield images.to(device)


def freeze_backbone(model: MobileNetV1) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier."))


def bn_to_eval(model: nn.Module, only_frozen: bool) -> None:
    """BatchNorm in eval mode: everywhere (freeze_bn) or where its parameters are frozen (linear probe)."""
    for m in model.modules():
        frozen = not any(p.requires_grad for p in m.parameters())
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (not only_frozen or frozen):
            m.eval()


class Renormalise(nn.Module):
    """A teacher behind an input adapter: the student's normalised batch, (x - m_s) / s_s, becomes the teacher's own
    normalisation, (x - m_t) / s_t, by one per-channel affine map."""

    def __init__(self, teacher: nn.Module, student: tuple, own: tuple) -> None:
        super().__init__()
        (m_s, s_s), (m_t, s_t) = ([torch.tensor(v).view(1, 3, 1, 1) for v in pair] for pair in (student, own))
        self.teacher = teacher
        self.register_buffer("scale", s_s / s_t)
        self.register_buffer("shift", (m_s - m_t) / s_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x * self.scale + self.shift)


class AtOwnResolution(nn.Module):
    """A teacher behind an input adapter: a student's batch smaller than the teacher's own resolution (the one its
    weights were trained at, its spec's) is resized up to it (bilinear) before the teacher sees it. The view stays
    the student's (the same crop), the scale of objects in pixels becomes the teacher's: a network loses accuracy
    when objects appear smaller than in training (Touvron et al. 2019, "Fixing the train-test resolution
    discrepancy"). Measured on Imagenette val with converted TF-slim MobileNets (top-1 over the 10 classes / the
    1000): the 0.75-192 fed 128 px crops scored 94.3/55.5% directly, 95.6/59.4% resized to 192 (97.6/66.6% at 192);
    from 96 px 87.4/41.1% vs 92.9/52.6%. Smaller teachers gain less (0.25-128 from 96 px lost 1 point), but every
    teacher's temperature-4 distribution came 2-4x closer to its own at its resolution (KL). Cost: about
    (own / student)^2 the teacher's MACs, 2.24x from 128 to 192 (its classifier's do not grow); on one CPU thread,
    batch 64, that teacher's forward took 3.2x as long (549 -> 1755 ms, the resize 35 ms of it) and a 0.25-128
    student's distillation step 2.4x (872 -> 2079 ms). These figures: benchmarks/teacher_resolution.py,
    results/teacher-resolution-amd-epyc-2c-t1.json. A larger batch is left as it is: a network scores better a
    little above its training resolution (Touvron et al.); resized down, these teachers lost top-1 (commit a7c791e,
    measured outside the repository).
    """

    def __init__(self, teacher: nn.Module, resolution: int) -> None:
        super().__init__()
        self.teacher, self.resolution = teacher, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < self.resolution:  # the shorter side to the teacher's (a training batch is square)
            scale = self.resolution / min(h, w)
            size = (round(h * scale), round(w * scale))
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.teacher(x)


class PickOutputs(nn.Module):
    """A teacher's logits for the dataset's classes only, in the dataset's order: a 1000-way ImageNet teacher on
    Imagenette's 10 wnid folders gives 10 logits, whose softmax is its distribution restricted to those classes."""

    def __init__(self, teacher: nn.Module, indices: list[int]) -> None:
        super().__init__()
        self.teacher, self.num_classes = teacher, len(indices)
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x).index_select(1, self.indices)


def build_teacher(cfg: TrainConfig, classes: list[str], device: torch.device, student_norm: tuple) -> nn.Module:
    """Our weights folder, or a torchvision model by name (random weights unless ``teacher_weights``; no download).

    The teacher must predict the dataset's classes: ours by its labels, a torchvision model by its head's size. Our
    teacher's outputs are matched to the class folders by name, or by ImageNet wnid for an ImageNet head
    (`labels.class_indices`, as `eval` matches them), and only those are kept, in the folders' order (`PickOutputs`).
    It sees the student's batches, renormalised to its own mean/std when they differ (ours: its spec's; torchvision's:
    ImageNet's). Ours sees a batch smaller than its own resolution (its spec's) resized up to it (`AtOwnResolution`),
    unless ``teacher_resolution`` is ``student`` (a cheaper step: the teacher's forward at the student's MACs).
    A torchvision model by name sees the student's batch as it is: its weights come from a file that records no
    resolution (most of torchvision's ImageNet weights are 224's, but a teacher fine-tuned on the dataset may be at
    any), so none is guessed.
    """
    return adapt_teacher(load_teacher(cfg, classes), cfg, student_norm, device)


@dataclasses.dataclass
class LoadedTeacher:
    """A teacher read and checked against the class folders (`load_teacher`), before the adapters that need the
    student's spec (`adapt_teacher`): its module, its own (mean, std), and its own resolution where known."""

    module: nn.Module
    own: tuple
    resolution: int | None


def load_teacher(cfg: TrainConfig, classes: list[str]) -> LoadedTeacher:
    """The teacher ``--teacher`` names, read, matched to ``classes`` and checked (its labels, ``--teacher-weights``,
    its head's size): every way it can be refused, and nothing that needs the student, so that `_Run.run` calls it
    before the run folder is held (a refused teacher left a new --out holding only .lock) and before the costlier
    set-up (the --init BatchNorm pass). `build_teacher` has the rules."""
    resolution = None  # the teacher's own input size, where known
    if teacher_is_weights(cfg.teacher):
        teacher = weights_io.load(Path(cfg.teacher))
        own = (tuple(teacher.spec.mean), tuple(teacher.spec.std))
        resolution = teacher.spec.resolution
        labels = list(known_labels(teacher.spec))  # unnamed (not 1000/1001-way): only its head's size counts
        if labels and labels != list(classes):
            found, unknown = class_indices(list(classes), labels)
            sized = not teacher.spec.labels and teacher.spec.num_classes == len(classes)  # folders not ImageNet's:
            if unknown and not sized:  # an unnamed head of the dataset's size is taken by its size, as before
                raise ConfigError(
                    f"teacher={cfg.teacher!r} predicts other classes than the dataset's: {len(unknown)} class "
                    f"folder(s) match none of its {len(labels)} labels (first: {unknown[0]!r})"
                )
            if not unknown:
                teacher = PickOutputs(teacher, [found[c] for c in classes])
    else:
        import torchvision

        _check_torchvision_teacher(cfg.teacher)
        teacher = torchvision.models.get_model(cfg.teacher, weights=None, num_classes=len(classes))
        own = (IMAGENET_MEAN, IMAGENET_STD)  # torchvision's classifiers
        if cfg.teacher_weights:
            _load_teacher_weights(teacher, cfg, len(classes))
    out = getattr(teacher, "num_classes", None)
    if out is not None and out != len(classes):
        raise ConfigError(f"teacher={cfg.teacher!r} has {out} classes, the dataset has {len(classes)}")
    return LoadedTeacher(teacher, own, resolution)


def adapt_teacher(loaded: LoadedTeacher, cfg: TrainConfig, student_norm: tuple, device: torch.device) -> nn.Module:
    """A checked teacher (`load_teacher`) behind its input adapters for a student of mean/std ``student_norm``
    (`AtOwnResolution`, `Renormalise`), on ``device``, frozen."""
    teacher, own, resolution = loaded.module, loaded.own, loaded.resolution
    if resolution is not None and cfg.teacher_resolution == "own":
        teacher = AtOwnResolution(teacher, resolution)
    if tuple(map(tuple, student_norm)) != tuple(map(tuple, own)):
        teacher = Renormalise(teacher, student_norm, own)
    return teacher.to(device).eval().requires_grad_(False)


def check_sources(cfg: TrainConfig) -> None:
    """The model spec the options ask for valid (`requested_spec`), the weights ``--init`` and ``--teacher`` name,
    read as far as their config.json, or the torchvision model ``--teacher`` names, known: before the run folder is
    held, a wrong one left a new --out holding only .lock. (`load_teacher` then checks the teacher against the class
    folders, also before the folder is held.)

    A resume does not need the ``--init`` folder: its checkpoint holds the weights and the model's spec
    (`model_for`), so a folder gone since is left to `_Run._resumed_spec` when there is a checkpoint to resume."""
    requested_spec(cfg)
    init = Path(cfg.init) if cfg.init else None
    run = checkpoints_run(init) if init is not None else None
    if run is not None:
        resume = f", or --resume {init} --out NEW to go on with that run" if init.is_file() else ""
        raise ConfigError(f"init={cfg.init!r} is not allowed: it is a run's checkpoints, not weights; give the run "
                          f"folder ({run}) or its model_best{resume}")  # fmt: skip
    if init is not None and init.exists():
        saved = weights_io.read_config(cfg.init)["spec"]
        check_rgb(saved, cfg.init)  # the training images are RGB: a 1-channel --init failed after the folder was made
        check_init_agrees(cfg, saved)
    elif cfg.init and not may_resume(cfg):
        raise ConfigError(f"init={cfg.init!r}: no such file or folder")
    if cfg.teacher and teacher_is_weights(cfg.teacher):
        check_rgb(weights_io.read_config(cfg.teacher)["spec"], cfg.teacher)
    elif cfg.teacher:
        _check_torchvision_teacher(cfg.teacher)


def may_resume(cfg: TrainConfig) -> bool:
    """Whether the run has a checkpoint to resume (``--resume auto`` with one in --out, or a ``--resume FILE`` that
    is there), as far as the files show before any is read."""
    if cfg.resume == "auto":
        return bool(list_checkpoints(cfg.out))
    return bool(cfg.resume) and Path(cfg.resume).is_file()


def checkpoints_run(init: Path) -> Path | None:
    """The run folder whose checkpoints ``init`` is (``RUN/checkpoints``, or a ``.pt`` file in it), or None. Only
    those: a run folder or weights kept under a folder of that name (``--out checkpoints/run1``) are weights to
    --init, where any path with ``checkpoints`` as its name or its parent's was refused as a run's checkpoints."""
    if init.is_dir() and init.name == CKPT_DIR:
        return init.parent if weights_io.run_weights(init) == init and not (init / "config.json").is_file() else None
    return init.parent.parent if init.is_file() and init.parent.name == CKPT_DIR and init.suffix == ".pt" else None


def check_init_agrees(cfg: TrainConfig, saved: ModelSpec) -> None:
    """A ConfigError, one line naming both values, when ``--model``, ``--alpha`` or ``--act`` asks for another
    architecture than the ``--init`` weights (of spec ``saved``) have: they fix it, and the run used to train theirs
    with a note that ``--quiet`` hid (``--init w075 --alpha 0.5`` trained alpha 0.75), where ``create_model(...,
    weights=DIR)`` refuses the same mismatch with a WeightsError. A value that agrees, or none, is fine; so is the
    default model name, which cannot be told from one typed, and a recipe's value, which `train_config.resolve`
    leaves to the weights (a recipe is for fresh models: configs/*.yaml say ``act: relu``)."""
    asked = {k: getattr(cfg, k) for k in ("alpha", "act") if getattr(cfg, k) is not None}
    if cfg.model != TrainConfig().model:
        asked = {"model": cfg.model, **asked}
    ours, theirs = init_disagreements(saved, asked)
    if ours:
        raise ConfigError(
            f"{', '.join(ours)} {'is' if len(ours) == 1 else 'are'} not allowed with init={cfg.init!r}: those weights "
            f"are for {', '.join(theirs)} (they fix the architecture: leave the option out, or give their value)"
        )


def _check_torchvision_teacher(name: str) -> None:
    """A ConfigError for a ``--teacher`` that is neither a weights path here nor a torchvision model: one that reads
    as a path (a separator, a leading ``.`` or ``~``, a file extension) is named as a path not found, where it was
    refused as a model name; a name close to a torchvision one is given with it."""
    import difflib

    import torchvision

    known = torchvision.models.list_models()
    if name in known:
        return
    base, _, tag = name.partition(".")
    if tag and base in known and not Path(name).exists():  # timm's name.pretrained_tag (resnet50.a1_in1k)
        raise ConfigError(f"teacher={name!r} is not allowed: teacher must be a weights folder or a torchvision model "
                          f"name; {base} is one (nothing is downloaded: give --teacher {base} --teacher-weights FILE "
                          "for its trained weights)")  # fmt: skip
    if "/" in name or os.sep in name or name.startswith((".", "~")) or Path(name).suffix:
        raise ConfigError(f"teacher={name!r}: no such file or folder (a weights folder of ours, from the working "
                          f"directory {os.getcwd()})")  # fmt: skip
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(
        f"teacher={name!r} is not allowed: teacher must be a weights folder or a torchvision model name{hint}"
    )


def _load_teacher_weights(teacher: nn.Module, cfg: TrainConfig, num_classes: int) -> None:
    """``--teacher-weights`` (a state_dict file, or a dict holding one under "state_dict") into a torchvision teacher;
    a file that is none, or weights of another model or head, is one ConfigError line naming the file."""
    name = f"teacher_weights={cfg.teacher_weights!r}"
    try:
        state = torch.load(cfg.teacher_weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for damaged or foreign files
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch's first sentence
        raise ConfigError(
            f"{name} is not allowed: not a readable state_dict file ({type(exc).__name__}: {first})"
        ) from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{name} is not allowed: it holds a {type(state).__name__}, not a state_dict of tensors")
    # saved from a DDP-wrapped, AveragedModel or torch.compile'd model: each key's wrapper prefixes go (as timm)
    state = dict(strip_wrapper_prefixes(state))
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        size = next((ln for ln in lines if "size mismatch" in ln), None)
        if size is None:  # missing or unexpected keys: another architecture
            # keys that all match fail on a tensor torch cannot copy (sparse, meta): its own last line says which
            why = key_mismatch(teacher.state_dict(), state) or lines[-1][:200]
            raise ConfigError(f"{name} are not weights of {cfg.teacher} ({why})") from exc
        raise ConfigError(
            f"{name} do not fit {cfg.teacher} with {num_classes} classes ({size}): a teacher must be trained on the "
            "dataset's classes (fine-tune it first, e.g. with --init on our format)"
        ) from exc


def key_mismatch(expected: dict, given: dict) -> str:
    """How a state_dict's keys differ from a model's, in one short clause: how many are missing and unexpected, and
    the first of each. torch's message lists every key, and cut to a length it ended mid-key (``"laye``)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    parts = [f"{len(missing)} missing key(s), first {missing[0]!r}"] if missing else []
    parts += [f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}"] if unexpected else []
    return "; ".join(parts)


# --- provenance -------------------------------------------------------------------------------------------------


def git_commit(here: Path | None = None) -> dict[str, Any]:
    """The commit of the git checkout that tracks this package's files (`bench.checkout`), and whether tracked files
    differ from it; None for both where none does (a copy installed into a user's project venv)."""
    from .bench import checkout

    found = checkout(here or Path(__file__).resolve().parent)
    return {"commit": None, "dirty": None} if found is None else {"commit": found[0], "dirty": found[1]}


def environment(env: DistEnv) -> dict[str, Any]:
    import numpy
    import PIL
    import torchvision

    from . import __version__
    from .bench import cpu_model  # platform.platform() names the kernel, not the CPU

    info = {
        "git": git_commit(),
        "versions": {
            "mobilenets": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
        },
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": env.world_size,
        "device": str(env.device),
    }
    if env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
    return info


def split_fingerprint(split) -> dict[str, Any]:
    """What a run read from a split: its image count and a SHA-256 of its files' paths relative to the split folder,
    with their labels, in order; two runs on the same files in the same classes share it, wherever the folder is."""
    import hashlib

    digest = hashlib.sha256()
    for path, label in split.samples:
        digest.update(f"{Path(path).relative_to(split.root).as_posix()}\t{label}\n".encode())
    return {"images": len(split.samples), "classes": len(split.classes), "files_sha256": digest.hexdigest()}


def nothing_read(root: str | os.PathLike, bad: BadFiles) -> DataError:
    """The one-line error for a split of which no file could be read (``bad``: its unreadable files)."""
    first = f"; first: {bad.first[0]}" if bad.first else ""
    return DataError(f"{root}: no image could be read ({bad.count} unreadable files{first}); check the files "
                     "(truncated downloads, non-images)")  # fmt: skip


# --- the run ----------------------------------------------------------------------------------------------------


# what a run writes in its folder (the module docstring), probed before it starts (`_Run._check_outputs`)
RUN_FOLDERS = ("checkpoints", "model", "model_best")
RUN_FILES = (".lock", "config.yaml", "env.json", "metrics.jsonl", "summary.json", "curves.png")


def check_settings(cfg: TrainConfig, world_size: int, device: torch.device) -> None:
    """What ``cfg`` asks of the processes and device it would run on (batch split, BatchNorm's two images, the
    GPU-only options), checked before any work: `_Run._settings`, and `reproduce` once for all its runs."""
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is not allowed: it must split evenly over {world_size} processes"
        )
    if cfg.batch_size // world_size < 2 and not cfg.freeze_bn:  # BatchNorm's batch statistics need two
        raise ConfigError(f"batch_size={cfg.batch_size} is not allowed: BatchNorm needs at least 2 images per "
                          f"process ({world_size} process(es)), or --freeze-bn")  # fmt: skip
    if cfg.sync_bn and device.type != "cuda":
        raise ConfigError("sync_bn=True is not allowed on CPU: PyTorch's SyncBatchNorm supports only GPUs")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp='fp16' is not allowed on CPU: use amp='bf16' (or none)")
    if cfg.compile_cudagraphs and world_size > 1:
        raise ConfigError("compile_cudagraphs is not allowed with several processes: Inductor's CUDA graphs are "
                          "untried under DistributedDataParallel here; drop --compile-cudagraphs")  # fmt: skip
    if cfg.compile_cudagraphs and device.type != "cuda":
        raise ConfigError(f"compile_cudagraphs is not allowed on {device}: CUDA graphs need a CUDA "
                          "device (Inductor would quietly run without them)")  # fmt: skip
    step_graph.check(cfg, world_size, device)
    if cfg.depthwise == "triton" and not kernels.runs_on(device):
        raise ConfigError(
            f"depthwise='triton' is not allowed on {device}: it needs triton and a CUDA device "
            f"(triton {'is' if kernels.triton_available() else 'is not'} installed)"
        )


class _Run:
    clock = staticmethod(time.perf_counter)  # the run's time source (--time-budget's tests drive a simulated one)

    def __init__(self, cfg: TrainConfig, env: DistEnv, stop: StopRequest | None = None) -> None:
        self.cfg, self.env = cfg, env
        self.stop = stop or StopRequest()  # what a SIGTERM asked (`stopping`): `train` installs its handler
        self.agreement: StopAgreement | None = None  # under torchrun, what every process's SIGTERMs asked (`run`)
        self.out = Path(cfg.out)
        self.say = lambda msg: log(env, cfg.quiet, msg)
        self.epochs = cfg.epochs  # what --time-budget plans (budget.py); --epochs otherwise
        self.planner = EpochPlanner(cfg.time_budget, cfg.epochs, cfg.eval_every) if cfg.time_budget else None
        self.plan: dict | None = None  # the latest plan: epochs, and the estimates behind them
        self.checkpoints = CheckpointWriter(self.out, cfg.keep_checkpoints)  # written in the background
        self.graph: step_graph.StepGraph | None = None  # --step-graph's, once the run starts training

    # set-up
    def _settings(self) -> None:
        cfg = self.cfg
        check_settings(cfg, self.env.world_size, self.env.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        elif self.env.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cfg.cudnn_benchmark
        seed_everything(self.cfg.seed)

    def _data(self, spec) -> None:
        cfg, env = self.cfg, self.env
        train_dir, val_dir = (Path(cfg.data) / split for split in (cfg.train_split, cfg.val_split))
        if train_dir.resolve() == val_dir.resolve():  # (a link to the other split too)
            raise ConfigError(f"val_split={cfg.val_split!r} is not allowed: it is the training split's folder "
                              f"({val_dir}), so the run would be scored on the images it trains on")  # fmt: skip
        train_split, val_split = scan_dataset(
            cfg.data, cfg.train_split, cfg.val_split, cfg.classes, cfg.max_per_class, cfg.max_val_per_class,
            cfg.subsample,
        )  # fmt: skip
        check_trainable(train_split, cfg.batch_size, "--batch-size")
        for name, split in ((cfg.train_split, train_split), (cfg.val_split, val_split)):
            if split.left_out:
                self.say(left_out_note(name, split.left_out))
        self.classes = train_split.classes
        self.train_split, self.val_split = train_split, val_split
        self.fingerprint = {"train": split_fingerprint(train_split), "val": split_fingerprint(val_split)}
        self.per_rank_batch = cfg.batch_size // env.world_size

    def _loaders(self, spec) -> None:
        cfg, env = self.cfg, self.env
        res = spec.resolution
        side = cache_side(res, spec.crop_pct)
        if cfg.data_on_device:
            return self._device_loaders(spec, res, side)
        tf_train = make_train_transform(spec, res, cfg.scale_min, (cfg.ratio_min, cfg.ratio_max), cfg.hflip)
        shrink = {"cache_side": side, "interpolation": spec.interpolation}
        self.train_ds = ImageFolderDataset(self.train_split, tf_train, seed=cfg.seed, replace_bad=True, **shrink)
        self.val_ds = ImageFolderDataset(self.val_split, eval_transform(spec, res), seed=cfg.seed, **shrink)
        self.cache_info = {}
        for name, ds in (("train", self.train_ds), ("val", self.val_ds)):
            use, need = should_cache(cfg.cache, ds.samples, side, cfg.cache_budget_gb)
            self.cache_info[name] = {"cached": use, "estimated_bytes": need}
            if use:
                t0 = time.perf_counter()
                ds.build_cache(threads=max(1, cfg.workers))
                unreadable = sum(img is None for img in ds.cache)
                self.cache_info[name]["unreadable"] = unreadable  # as the device path's: the files it holds none of
                self.say(
                    f"cached {len(ds) - unreadable} {name} images in memory ({need / 2**20:.0f} MiB, "
                    f"{time.perf_counter() - t0:.1f} s)"
                    + (f"; {unreadable} unreadable, skipped where sampled" if unreadable else "")
                )
                readable = {label for (_path, label), img in zip(ds.samples, ds.cache, strict=True) if img is not None}
                empty = [c for i, c in enumerate(ds.split.classes) if i not in readable]
                if empty:  # other classes' images stand in for its files: the run never sees it
                    self.say(f"warning: {name} class(es) {', '.join(empty)}: no readable image")
        pin = env.device.type == "cuda"
        self.sampler = ResumableSampler(self.train_ds, env, shuffle=True, seed=cfg.seed, drop_last=True)
        # their workers leave a SIGTERM sent to the whole job (Slurm, systemd) to this process (`stopping`)
        self.train_loader = StoppableLoader(
            self.train_ds,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            num_workers=cfg.workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.val_loader = StoppableLoader(
            self.val_ds,
            batch_size=cfg.eval_batch_size or self.per_rank_batch,
            sampler=ShardSampler(len(self.val_ds), env),
            num_workers=cfg.workers,
            collate_fn=collate,
            pin_memory=pin,
        )
        self.steps_per_epoch = len(self.sampler) // self.per_rank_batch

    def _device_loaders(self, spec, res: int, side: int) -> None:
        """Both splits decoded once and held on ``env.device``; batches are augmented there (device_data.py)."""
        cfg, env = self.cfg, self.env
        splits = (self.train_split.samples, self.val_split.samples)
        square = dict(interpolation=spec.interpolation, align_crop=res)  # val crops are then the eval transform's
        reuse = all(is_resident(samples, side, env.device, **square) for samples in splits)
        if not reuse:
            release_resident()  # an earlier run's splits (another side or other files) make room
        need = square_bytes(len(self.train_split.samples) + len(self.val_split.samples), side)
        if env.device.type == "cuda" and not reuse:
            free, _total = torch.cuda.mem_get_info(env.device)
            if need > 0.5 * free:
                raise ConfigError(
                    f"data_on_device=True is not allowed here: the decoded splits need {need / 2**30:.1f} GiB at "
                    f"{side}x{side}, more than half of the {free / 2**30:.1f} GiB free on {env.device}"
                )
        self.train_ds = ImageFolderDataset(self.train_split, None, seed=cfg.seed)  # sample paths for bad-file reports
        self.val_ds = ImageFolderDataset(self.val_split, None, seed=cfg.seed)
        t0 = time.perf_counter()
        threads = max(1, cfg.workers)
        on_gpu = cfg.gpu_decode and env.device.type == "cuda"
        if cfg.gpu_decode and not on_gpu:
            self.say(f"gpu_decode: training on {env.device}, not a GPU; decoding on {threads} CPU threads")

        def load(samples):
            return load_to_device(samples, side, env.device, threads=threads, decode_on_device=on_gpu, **square)

        train = load(splits[0])
        if len(train) == 0:  # every process decodes the whole split: all stop here together, before the val split
            raise nothing_read(self.train_split.root, self._bad_report(train.bad, self.train_ds))
        val = load(splits[1])
        how = "reused the resident" if reuse else "decoded"
        phases = [f"{p} {train.seconds[p] + val.seconds[p]:.1f} s" for p in ("decode", "to_device") if not reuse]
        by_gpu = train.decoded_on_device + val.decoded_on_device
        nvjpeg = f", {by_gpu} of them by nvjpeg" if on_gpu and not reuse else ""
        self.say(
            f"{how} {len(train)} train + {len(val)} val images on {env.device} "
            f"({(train.nbytes + val.nbytes) / 2**20:.0f} MiB at {side}x{side}, {time.perf_counter() - t0:.1f} s"
            f"{': ' + ', '.join(phases) if phases else ''}; {threads} threads{nvjpeg})"
        )
        self.cache_info = {
            name: {"cached": True, "on_device": str(env.device), "bytes": d.nbytes, "unreadable": len(d.bad)}
            for name, d in (("train", train), ("val", val))
        }
        self.sampler = ResumableSampler(range(len(train)), env, shuffle=True, seed=cfg.seed, drop_last=True)
        self.train_loader = DeviceTrainLoader(
            train, self.sampler, self.per_rank_batch, res, mean=spec.mean, std=spec.std,
            scale=(cfg.scale_min, 1.0), ratio=(cfg.ratio_min, cfg.ratio_max), hflip=cfg.hflip, seed=cfg.seed,
            rank=env.rank,
        )  # fmt: skip
        self.val_loader = DeviceEvalLoader(
            val, cfg.eval_batch_size or self.per_rank_batch, res, mean=spec.mean, std=spec.std, rank=env.rank,
            world_size=env.world_size,
        )  # fmt: skip
        self.steps_per_epoch = len(self.sampler) // self.per_rank_batch

    def _model(self) -> None:
        cfg, env = self.cfg, self.env
        resumed = self._resumed_spec()
        model = build_model(cfg, self.classes, self.say, resumed=resumed)
        if cfg.init:  # the weights decide the architecture: the run's config.yaml records what trains, not what was
            # asked (a resume with the same command resolves the same, so it is compared like for like)
            s = model.spec
            self.cfg = dataclasses.replace(cfg, model=s.name or cfg.model, alpha=s.alpha, act=s.act)
        if cfg.freeze_backbone:
            freeze_backbone(model)
            if not cfg.init:  # as a teacher without weights: the run does what was asked, and learns little
                self.say("warning: --freeze-backbone without --init trains only the head, on the random features of "
                         "an untrained backbone (a linear probe starts from --init WEIGHTS)")  # fmt: skip
        self.model = model.to(env.device)
        if cfg.init and resumed is None and not (cfg.freeze_backbone or cfg.freeze_bn):  # before the optimizer, EMA
            restored = restore_batchnorm_statistics(
                self.model, bn_calibration_batches(self.train_split, model.spec, env.device)
            )
            if restored:
                self.say(
                    f"--init weights have {restored} folded (identity) BatchNorms: set to the statistics of up to "
                    f"{CALIBRATION_IMAGES} training images so that they train (eval outputs unchanged)"
                )
            kept = len(identity_batchnorms(self.model))
            if kept:  # no readable calibration image
                self.say(
                    f"warning: {kept} folded (identity) BatchNorms of the --init weights kept as they are: training "
                    "mode would normalise them by batch statistics; --freeze-bn keeps them exact"
                )
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg, scaled_lr(cfg))
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        wrapped: nn.Module = self.model
        if cfg.sync_bn and env.distributed:
            wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        if env.distributed:
            wrapped = nn.parallel.DistributedDataParallel(
                wrapped, device_ids=[env.local_rank] if env.device.type == "cuda" else None
            )
        self.wrapped = compiled(wrapped, cfg)
        self.eval_net = compiled(self.model, cfg) if env.distributed else self.wrapped  # `_eval_model`
        self.teacher = None
        if cfg.teacher:
            spec = unwrap(self.model).spec
            norm = (tuple(spec.mean), tuple(spec.std))
            self.teacher = adapt_teacher(self.loaded_teacher, cfg, norm, env.device)
            self.loaded_teacher = None
            if not teacher_is_weights(cfg.teacher) and not cfg.teacher_weights:
                self.say(f"warning: teacher {cfg.teacher} has random weights (no --teacher-weights): its soft "
                         "targets carry nothing to distil")  # fmt: skip

    def _resumed_spec(self) -> ModelSpec | None:
        """With ``--init``, the spec of the checkpoint a resume starts from (`_find_resume`), which `model_for` builds
        the model from: the checkpoint holds every weight, so the ``--init`` folder is not read again (and may be
        gone: said). None for a fresh run, or a checkpoint that records no spec (older ones: the folder is read)."""
        cfg = self.cfg
        if not cfg.init or self.found is None:
            if cfg.init and not Path(cfg.init).exists():  # `check_sources` let it pass for a checkpoint not resumed
                raise ConfigError(f"init={cfg.init!r}: no such file or folder")
            return None
        path, state = self.found
        if state.get("spec") is None:
            if not Path(cfg.init).exists():
                raise ConfigError(f"init={cfg.init!r}: no such file or folder, and {path} records no model spec to "
                                  "resume without it")  # fmt: skip
            return None
        if not Path(cfg.init).exists():
            self.say(f"note: init={cfg.init!r} is gone: the resume does not need it, {path} holds the weights")
        return ModelSpec.from_dict(state["spec"])

    def _refuse_earlier_checkpoints(self) -> None:
        """A fresh run beside an earlier run's checkpoints would lose its own (the newest steps are kept) and a later
        --resume auto could pick the earlier run's; a finished run whose checkpoints were removed (its summary.json
        kept) would lose its weights, metrics and summary to the new run, with --resume auto too, which finds no
        checkpoint: every process stops before decoding or writing anything. Called with the folder held (`_lock`),
        so a live run's folder, which holds checkpoints too, has been named busy rather than as one to resume."""
        checkpoints = list_checkpoints(self.out)
        finished = not checkpoints and self.cfg.resume in (None, "auto") and (self.out / "summary.json").is_file()
        stale = bool(checkpoints) and not self.cfg.resume
        if all_reduce_min_int(0 if stale or finished else 1, self.env) == 0:
            if finished:
                raise ConfigError(
                    f"out={str(self.out)!r} holds a finished run (summary.json) without checkpoints: a new run would "
                    "replace its weights and metrics; give another --out (or remove that folder) to start afresh"
                )
            raise ConfigError(
                f"out={str(self.out)!r} holds checkpoints of an earlier run ({self.out / 'checkpoints'}): add "
                "--resume auto to continue it, or give another --out (or remove that folder) to start afresh"
            )

    def _lock(self) -> None:
        """Hold the run folder (`atomic.lock_folder`, on the main process) from before a resume reads a checkpoint to
        the end of the run; every process stops when another run holds it, or when the main process cannot write
        the run's outputs (`_check_outputs`). With the folder held, temporary files a killed checkpoint write left
        behind are nobody's: they are removed."""
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"out={str(self.out)!r} is not allowed: it is a file (give a folder for the run)")
        self.held = None
        busy, failed = "", None
        if self.env.is_main:
            try:
                self._check_outputs()
                self.held = lock_folder(self.out)
            except FolderInUse as exc:
                busy = str(exc)
            except OSError as exc:  # a file in the way, no permission, a read-only filesystem, ...
                failed = exc
        code = all_reduce_min_int(-1 if failed else 0 if busy else 1, self.env)
        if code == -1:  # an OSError: the machine's failure, status 1 (a file in the way: the command line's, 2)
            raise failed or OSError(f"out={str(self.out)!r}: the main process cannot write the run there")
        if code == 0:
            raise ConfigError(f"out={str(self.out)!r} is not allowed now: {busy or 'another run holds it'} (wait for "
                              "it to end, or give another --out)")  # fmt: skip
        if self.env.is_main:
            # killed saves' temporary files (`atomic_open`'s, and .tmp ones of earlier versions): this run holds the
            # folder's lock, so no other process is writing there
            for pattern in (".*.partial-*", ".*.tmp"):
                for stale in (self.out / "checkpoints").glob(pattern):
                    stale.unlink(missing_ok=True)

    def _check_outputs(self) -> None:
        """An `OSError` naming the first output of the run (`RUN_FOLDERS`, `RUN_FILES`) that cannot be written (a
        file in the way, a folder where a file goes, no permission, a read-only filesystem), before anything is
        decoded or trained: the run used to fail there at its first checkpoint or at its end. `atomic.check_writable`
        probes and creates nothing."""
        try:
            check_writable(self.out, folder=True)
        except OSError as exc:
            made = "written" if self.out.is_dir() else "made there"
            # type(exc): OSError(ENOENT, ...) would turn /proc's CreationRefused into a FileNotFoundError (status 2)
            raise type(exc)(exc.errno, f"the run folder cannot be {made} ({exc.strerror})", str(self.out)) from None
        for name, folder in [*((n, True) for n in RUN_FOLDERS), *((n, False) for n in RUN_FILES)]:
            try:
                check_writable(self.out / name, folder=folder)
            except OSError as exc:
                why = "is a folder" if isinstance(exc, IsADirectoryError) else exc.strerror  # not "name the file"
                shown = name + "/" if folder else name
                raise type(exc)(exc.errno, f"{why} (the run writes its {shown} there; give another --out)",
                              exc.filename) from None  # fmt: skip

    def release(self) -> None:
        """Let go of the run folder (`_lock`), which a later run in this process may take, and of the step graph.
        The folder stays held while a checkpoint is still being written (after a second Ctrl-C): a resume started
        meanwhile would remove its staging file as a killed write's."""
        held, self.held = getattr(self, "held", None), None
        if held is not None:
            self.checkpoints.then(held.close)
        if self.graph is not None:
            self.graph.close()

    # the share of an epoch's images that drop_last may leave unused before a note suggests another --batch-size:
    # below it (Imagenette's 9469 at 256 leave 253, 2.7%) the note would be noise on every run
    UNUSED_NOTE_SHARE = 0.05

    def _say_unused_images(self) -> None:
        """Say, once at the start, how many training images each epoch leaves unused and which --batch-size uses
        them, when that is a sizable share: the loader drops the last incomplete batch (drop_last, so that every
        step's BatchNorm batch is full), and 100 images at the default 64 trained 64 an epoch, silently."""
        # the images the sampler draws from: with --data-on-device, the readable ones only
        images, world = len(self.sampler.dataset), self.env.world_size
        unused = images - self.steps_per_epoch * self.per_rank_batch * world
        if unused <= self.UNUSED_NOTE_SHARE * images:
            return
        better = fuller_batch(images, self.cfg.batch_size, world)
        left = images - images // better * better
        steps = self.steps_per_epoch
        fix = f": --batch-size {better} uses {'them all' if not left else f'all but {left}'}" if left < unused else ""
        self.say(f"note: {unused} of the {images} training images go unused each epoch (--batch-size "
                 f"{self.cfg.batch_size} makes {steps} full batch{'es' if steps != 1 else ''}, the rest is "
                 f"dropped){fix}")  # fmt: skip

    def _find_resume(self) -> None:
        """The checkpoint a resume starts from (``self.found``: path and state, or None), loaded and checked against
        this run's settings and files before anything is decoded: a damaged one, or one of another run, stops the run
        at once."""
        self.found = None
        if not self.cfg.resume:
            return
        if self.cfg.resume == "auto":
            self.found = find_resume(self.out)
        else:
            self.found = (Path(self.cfg.resume), load_checkpoint(self.cfg.resume))
        if self.found is None:
            self.say(f"--resume auto: no checkpoint in {self.out / 'checkpoints'}, starting from scratch")
            return
        path, state = self.found
        self._check_resumed_config(path, state.get("config"))
        self._check_resumed_data(path, state.get("data"))

    def _resume(self) -> None:
        """Apply the checkpoint `_find_resume` chose to the model, optimizer and schedule."""
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.carried: dict | None = None
        self.best = {"top1": -1.0, "epoch": None}
        self.wall_before = 0.0
        self.resumed_from = None
        if self.found is None:
            self._rank_rng(None)
            return
        path, state = self.found
        self.found = None  # the state's tensors are the model's and optimizer's from here on
        for note in self._resume_notes(state):
            self.say(f"note: {note}")
        unwrap(self.model).load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self._rank_rng(state)
        self.start_epoch, self.start_step = state["epoch"], state["step_in_epoch"]
        self._check_resumed_length(path, state["global_step"])
        # the interrupted epoch's totals so far (older checkpoints have none: that epoch's row then covers the rest)
        self.carried = state.get("epoch_totals") if self.start_step else None
        self.global_step = state["global_step"]
        if path.resolve().parent == (self.out / "checkpoints").resolve():
            self.best = self._saved_best(state.get("best", self.best))
        else:  # another folder's checkpoint: its best epoch's weights are in that folder, not in this one's model_best/
            self.say(f"note: {path} is another run folder's checkpoint: {self.out} keeps the best of its own epochs")
        self.wall_before = state.get("wall_time_s", 0.0)
        if state.get("plan"):  # a budgeted run keeps its planned length, resumed with --time-budget or not
            self.plan = state["plan"]
            self.epochs = min(self.cfg.epochs, self.plan["epochs"])
        self.resumed_from = str(path)
        self.say(self._resumed_message(path))

    def _resumed_message(self, path: Path) -> str:
        """Where a resume goes on: in which epoch, after which of its steps; or, for a run that had already finished
        (its last epoch, or --max-steps, reached), that nothing is left to train, and what the resume then does
        (`run`: the weights and summary written again, the model scored first where the summary is not its own),
        where it used to give the epoch after the run's last ("epoch 7, step 0 of the epoch" for 6 epochs)."""
        if self.start_epoch >= self.epochs or self._steps_done():
            done = (f"step {self.global_step} of --max-steps {self.cfg.max_steps}" if self._steps_done()
                    else f"{self.start_epoch} of {self.epochs} epoch(s), {self.global_step} steps")  # fmt: skip
            return (f"resumed from {path}: the run is already complete ({done}); nothing left to train, its model/ "
                    "and summary.json are written again from it")  # fmt: skip
        where = f"after step {self.start_step} of its {self.steps_per_epoch}" if self.start_step else "from its start"
        return f"resumed from {path}: epoch {self.start_epoch + 1}/{self.epochs}, {where}"

    def _rank_rng(self, state: dict | None) -> None:
        """Each process's random stream from here on (the dropout masks; augmentation and MixUp seed their own). The
        processes are seeded alike so that they build the same model, and drawing alike from there they dropped the
        same units of their own images, every step. Process r > 0 is reseeded here (`engine.rank_seed`); rank 0 goes
        on as a single process does. A checkpoint brings back every process's state; one saved by another process
        count, or before they were saved, gives rank 0 its state and the others fresh seeds."""
        rank, world = self.env.rank, self.env.world_size
        saved = (state or {}).get("rng_ranks")
        if saved is not None and len(saved) == world:
            set_rng_state(saved[rank])
            return
        if state is not None:
            set_rng_state(state["rng"])
        if rank:
            seed_everything(rank_seed(self.cfg.seed, rank, state["global_step"] if state else 0))

    def _check_resumed_length(self, path: Path, global_step: int) -> None:
        """A resume may lengthen or shorten the run, but not below where the checkpoint is: model/ would then hold a
        later state than the summary's last epoch (or step limit) says."""
        begun = self.start_epoch + (self.start_step > 0)
        where = f"in epoch {begun}" if self.start_step else f"after epoch {begun}"
        if self.cfg.epochs < begun:
            raise ConfigError(f"epochs={self.cfg.epochs} is not allowed: {path} was saved {where}; resume with "
                              f"--epochs {begun} or more, or give another --out to start afresh")  # fmt: skip
        if self.cfg.max_steps is not None and self.cfg.max_steps < global_step:
            raise ConfigError(f"max_steps={self.cfg.max_steps} is not allowed: {path} was saved at step {global_step}; "
                              f"resume with --max-steps {global_step} or more")  # fmt: skip

    # what a resume may change: how long to train (epochs, time budget, a step limit); everything else
    # (RUNTIME_FIELDS aside) decides what the run trains; the checkpoint's model and optimizer state were made for it
    RESUMABLE = frozenset(("epochs", "time_budget", "max_steps"))

    def _check_resumed_config(self, path: Path, saved: dict | None) -> None:
        if not saved:
            return
        # with --init the weights decide model, alpha and act (`_model` records them): a checkpoint written before it
        # did holds what was asked instead, so those are left to the weights' own check (load_state_dict's shapes)
        ignore = self.RESUMABLE | (frozenset(("model", "alpha", "act")) if self.cfg.init else frozenset())
        differ = self.cfg.differences(saved, ignore=ignore)
        if not differ:
            return
        # a run saved before `subsample` was recorded took the first files in path order, and its config.yaml does
        # not say so (`train_config._as_it_ran`): name the option that gives it them again
        older = any(d.startswith("subsample=") for d in differ) and "subsample" not in saved
        way = "resume with that run's settings (its config.yaml" + (", and --subsample first)" if older else ")")
        raise ConfigError(f"resume={str(path)!r} was saved by a run with other settings ({first_differences(differ)}): "
                          f"{way}, or give another --out to start afresh")  # fmt: skip

    def _check_resumed_data(self, path: Path, saved: dict | None) -> None:
        """--data may move (it is a path), but the run must go on with the files it trained on: another folder, or
        one with files added or removed, would mix two datasets in one run. Older checkpoints record none."""
        differ = []
        for name, now in self.fingerprint.items():
            was = (saved or {}).get(name)
            if was is not None and was != now:
                same_size = (was["images"], was["classes"]) == (now["images"], now["classes"])
                differ.append(f"{name}: {was['images']} images in {was['classes']} classes there, {now['images']} in "
                              f"{now['classes']} here" + (" (other files)" if same_size else ""))  # fmt: skip
        if differ and self._listed_every_file(saved):
            return
        if differ:
            raise ConfigError(
                f"resume={str(path)!r} was saved by a run on other images ({'; '.join(differ)}): resume with the "
                "data it trained on, or give another --out to start afresh"
            )

    def _listed_every_file(self, saved: dict) -> bool:
        """Whether the checkpoint's run listed these folders as runs did before files not named as images were left
        out (every visible file a sample, `scan_split`'s ``every_file``): then it goes on, on the images alone (its
        non-images were read as unreadable and stood in for), where it was refused as a run on other images."""
        if not (self.train_split.left_out or self.val_split.left_out):
            return False
        cfg = self.cfg
        old = scan_dataset(cfg.data, cfg.train_split, cfg.val_split, cfg.classes, cfg.max_per_class,
                           cfg.max_val_per_class, cfg.subsample, every_file=True)  # fmt: skip
        if any(split_fingerprint(split) != saved.get(name) for name, split in zip(("train", "val"), old, strict=True)):
            return False
        left = len(self.train_split.left_out) + len(self.val_split.left_out)
        self.say(
            f"note: the checkpoint's run took {left} file(s) not named as images for samples (read as "
            "unreadable, stood in for); left out now, so the epochs from here are not bit-identical"
        )
        return True

    def _resume_notes(self, state: dict) -> list[str]:
        """What a resume changes that it allows: a longer or shorter schedule, and (CPU) another thread or process
        count, which changes the summation order or the BatchNorm batches, so the run is no longer bit-identical to
        an uninterrupted one. Older checkpoints record neither count: no note. Only the cosine schedule's length is
        its epochs: the exponential one (the paper recipe's) decays every ``lr_decay_epochs`` whatever the total,
        so a longer run resumed goes on at the rates an uninterrupted one would have had, and nothing is said."""
        notes, saved = [], state.get("config") or {}
        if saved.get("epochs") not in (None, self.cfg.epochs) and self.cfg.schedule == "cosine":
            notes.append(f"epochs={self.cfg.epochs} here, {saved['epochs']} when checkpointed: the {self.cfg.schedule} "
                         "learning-rate schedule is stretched to the new length from this step on")  # fmt: skip
        if state.get("world_size") not in (None, self.env.world_size):
            notes.append(f"{self.env.world_size} process(es) here, {state['world_size']} when checkpointed: the "
                         "BatchNorm batches change; the run is not bit-identical to an uninterrupted one")  # fmt: skip
        threads = torch.get_num_threads()
        if self.env.device.type == "cpu" and state.get("threads") not in (None, threads):
            notes.append(f"{threads} thread(s) here, {state['threads']} when checkpointed: the summation order "
                         "changes, so the run is not bit-identical to an uninterrupted one")  # fmt: skip
        return notes

    def _saved_best(self, best: dict) -> dict:
        """The best score to beat after a resume: the checkpoint's, or that of ``model_best/`` when it was saved at a
        later epoch (``checkpoint_every`` > 1: the resume redoes that epoch). Those weights were evaluated and saved,
        so they are kept, and the summary's best describes the weights on disk."""
        try:
            prov = weights_io.read_config(self.out / "model_best")["provenance"]
        except (FileNotFoundError, weights_io.WeightsError, KeyError):  # none saved yet, or not ours: nothing to keep
            return best
        top1, epoch = prov.get("val_top1"), prov.get("epoch")
        if top1 is None or epoch is None or epoch <= self.start_epoch or top1 <= best["top1"]:
            return best
        self.say(f"model_best/ holds epoch {epoch} (val top-1 {top1:.4f}), saved after this checkpoint: kept as best")
        return {"top1": top1, "top5": prov.get("val_top5"), "epoch": epoch}

    def _checkpoint(self, epoch: int, step_in_epoch: int, totals: dict | None = None) -> None:
        """Save where the run is; mid-epoch, ``totals`` are the epoch's so far (`engine.epoch_totals`). Every process
        calls it (its random state is gathered); the main process writes."""
        rngs = gather_objects(rng_state(), self.env)
        if not self.env.is_main:
            return
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rngs[0],
            "rng_ranks": rngs if self.env.distributed else None,  # each process's (`_rank_rng`)
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "epoch_totals": totals if step_in_epoch else None,
            "global_step": self.global_step_now,
            "best": self.best,
            "wall_time_s": self.elapsed(),
            "plan": self.plan,
            "config": self.cfg.to_dict(),
            "spec": unwrap(self.model).spec.to_dict(),
            "world_size": self.env.world_size,  # for a resume's notes (`_resume_notes`)
            "data": self.fingerprint,  # for a resume's check of the files (`_check_resumed_data`)
            "threads": torch.get_num_threads(),
        }
        self.checkpoints.save(state)

    def _write_meta(self) -> None:
        import yaml

        metrics = self.out / "metrics.jsonl"
        # drop epochs a resumed run will redo, so each epoch is listed once (read by every process: a damaged file
        # stops them all here, not the main process alone); a fresh run keeps none
        rows = read_metrics(metrics, torn_last=self._torn_metrics) if self.resumed_from and metrics.exists() else []
        kept = [ln for ln, row in rows if self._keeps_row(row)]
        if not self.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        # the command as typed, and where: its relative paths are read from there (config.yaml holds them absolute)
        command = {"command": [Path(sys.argv[0]).name, *sys.argv[1:]], "cwd": os.getcwd()}
        info = {**environment(self.env), **command, "data": self.fingerprint}
        atomic_write_text(self.out / "env.json", json.dumps(info, indent=2) + "\n")
        if metrics.exists():
            atomic_write_text(metrics, "".join(ln + "\n" for ln in kept))

    def _keeps_row(self, row: dict) -> bool:
        """Whether a resume keeps this metrics row: its epoch is not trained again. A resume with no step left to
        train (--max-steps reached) redoes no epoch: it keeps the rows up to its checkpoint's step, the stopped
        epoch's partial row included, which is the one its summary's final scores come from (`_finish`)."""
        if self._steps_done() and isinstance(row.get("global_step"), int):  # (rows of old versions had no step)
            return row["global_step"] <= self.global_step
        return row["epoch"] <= self.start_epoch

    def _torn_metrics(self, path: Path, line: int) -> None:
        self.say(f"note: {path}: line {line}, the last, is incomplete (an interrupted write): dropped, the resumed "
                 "run writes its epoch again")  # fmt: skip

    def _append_metrics(self, row: dict) -> None:
        path = self.out / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk's write names no file: the message names the log
            name_file(exc, path)
            raise

    def _bad_report(self, bad_local: list, ds: ImageFolderDataset) -> BadFiles:
        """This process's unreadable files of ``ds``, gathered from every process (a collective), as a report."""
        return _bad_files(gather_bad(bad_local, self.env), ds)

    def _eval_model(self) -> nn.Module:
        """What `_validate` scores: the EMA, or the model, never its DistributedDataParallel wrapper. DDP's first
        forward after training broadcasts rank 0's buffers, a collective that a process with no val image (fewer
        images than processes) never joins: the others waited in it for ever. `broadcast_buffers` does that
        broadcast on every process before each evaluation."""
        return self.ema.module if self.ema is not None else self.eval_net

    def _save_weights(self, folder: str, metrics: dict) -> None:
        if not self.env.is_main:
            return
        model = self.ema.module if self.ema is not None else unwrap(self.model)
        prov = {
            "trained_by": "mobilenets train",
            # relative to the weights: published weights name no directory of the trainer's (`weights.training_run`)
            "run_dir": os.path.relpath(self.out, self.out / folder),
            "epoch": metrics.get("epoch"),
            "val_top1": metrics.get("val_top1"),
            "val_top5": metrics.get("val_top5"),
            "ema": self.ema is not None,
        }
        weights_io.save(model, self.out / folder, provenance=prov)

    def elapsed(self) -> float:
        """Wall time of the run so far, set-up included, over every process that worked on it (resumes)."""
        return self.wall_before + self.clock() - self.t_start

    def _replan(self, done: int, train_s: float, stats: dict, steps: int) -> None:
        """``--time-budget``: after epoch ``done`` trained ``steps`` steps in ``train_s`` in this process (fewer than
        an epoch's after a mid-epoch resume), set how many epochs the run has in all (budget.py); every process takes
        the smallest plan, so they stop together."""
        first = stats.get("first_step_s")
        if not self.planner.epoch_walls and steps > 1 and first is not None and first < train_s:
            # the process's first epoch, alone, would over-estimate the rest (its first step pays compilation and
            # autotuning): the other steps, scaled to a whole epoch, stand for it
            train_s = (train_s - first) * self.steps_per_epoch / (steps - 1)
        guess = train_s * len(self.val_ds) / max(1, len(self.train_ds))  # evaluating an image costs less than training
        plan = self.planner.plan(self.elapsed(), done, train_s, guess)
        epochs = all_reduce_min_int(plan["epochs"], self.env)
        if self.plan is None or abs(epochs - self.epochs) > max(2, 0.05 * self.epochs):  # not every +-1 epoch
            self.say(
                f"time budget {self.cfg.time_budget:g} s: {counted(epochs, 'epoch')} in all (at most "
                f"{self.cfg.epochs}); {plan['epoch_s']:.2f} s per epoch, {plan['eval_s']:.2f} s per evaluation, "
                + (f"{plan['left_s']:.0f} s left" if plan["left_s"] >= 0 else f"{-plan['left_s']:.0f} s over it")
            )
            if epochs <= self.cfg.warmup_epochs:  # a line of its own, which --quiet shows (`engine.log`)
                self.say(f"warning: a plan of {counted(epochs, 'epoch')} ends inside the "
                         f"{self.cfg.warmup_epochs:g}-epoch warm-up, so the rate never decays (more time or a shorter "
                         "--warmup-epochs)")  # fmt: skip
        self.epochs = epochs
        self.plan = {
            "epochs": epochs,
            "epoch_s": plan["epoch_s"],
            "eval_s": plan["eval_s"],
            "budget_s": self.planner.budget_s,
        }

    def run(self) -> dict[str, Any] | None:
        cfg, env = self.cfg, self.env
        self.t_start = self.clock()  # the run's wall time counts its set-up (decoding, model, compile)
        self._settings()
        self._data(None)  # the split scan's checks (cheap) before the folder is held, so a bad dataset leaves none
        check_sources(cfg)  # and so do weights that are not there
        # and a teacher refused (its classes, --teacher-weights, its head), before the --init BatchNorm pass too
        self.loaded_teacher = load_teacher(cfg, list(self.classes)) if cfg.teacher else None
        named = cfg.resume not in (None, "auto")  # a checkpoint file named: read and checked before the folder is
        if named:  # held, so an unreadable or foreign one leaves no new --out behind (auto reads the held folder's)
            self._find_resume()
        self._lock()  # before any decoding: a second run in a busy folder stops at once
        self._refuse_earlier_checkpoints()
        if not named:
            self._find_resume()  # a damaged or foreign checkpoint stops the run before decoding too
        self._model()
        spec = unwrap(self.model).spec
        self._loaders(spec)
        if self.steps_per_epoch == 0:
            raise DataError(f"{self.train_split.root}: too few images for one batch per process")
        self._say_unused_images()
        self._resume()
        if not cfg.time_budget and cfg.epochs <= cfg.warmup_epochs:  # (a time budget's plan says it itself)
            self.say(f"warning: epochs={cfg.epochs} ends inside the {cfg.warmup_epochs:g}-epoch warm-up: the "
                     "learning rate only rises, never decays (more --epochs or a shorter --warmup-epochs)")  # fmt: skip
        self._write_meta()
        amp_dtype = AMP_DTYPES[cfg.amp]
        self.global_step_now = self.global_step
        cur = {"epoch": self.start_epoch}

        def on_step(global_step: int, step_in_epoch: int, totals) -> None:
            self.global_step_now = global_step
            if step_in_epoch == self.steps_per_epoch:  # the epoch's end saves (and stops, `_stop_if_asked`) itself
                return
            # and so does the --max-steps step's, after the epoch's row (where the summary's final scores come from)
            last = cfg.max_steps is not None and global_step >= cfg.max_steps
            agreed = self.agreement.at_step_end() if self.agreement else None  # every process, every such step
            if (cfg.save_every and global_step % cfg.save_every == 0) or (self._asked(agreed) and not last):
                self._checkpoint(cur["epoch"], step_in_epoch, totals())  # totals(): on every process
                if not last:
                    self._stop_if_asked(global_step, agreed)

        ctx = StepContext(
            optimizer=self.optimizer,
            lr_at=lambda s: lr_factor(cfg, s, self.steps_per_epoch, epochs=self.epochs),
            set_lr=set_lr,
            env=env,
            amp_dtype=amp_dtype,
            scaler=self.scaler,
            ema=self.ema,
            teacher=self.teacher,
            distill_temperature=cfg.distill_temperature,
            distill_weight=cfg.distill_weight if self.teacher else 0.0,
            label_smoothing=cfg.label_smoothing,
            mixup_alpha=cfg.mixup_alpha,
            cutmix_alpha=cfg.cutmix_alpha,
            mix_seed=cfg.seed,
            num_classes=len(self.classes),
            grad_clip=cfg.grad_clip,
            channels_last=cfg.channels_last,
            max_steps=cfg.max_steps,
            on_step=on_step,
            prepare=(lambda m: bn_to_eval(m, only_frozen=not cfg.freeze_bn))
            if (cfg.freeze_bn or cfg.freeze_backbone)
            else None,
        )
        if cfg.step_graph:  # after the resume: the graph reads the optimizer's state where it lies at capture
            self.graph = step_graph.attach(ctx, self.wrapped)
        self.say(
            f"training {spec.name or cfg.model} alpha={spec.alpha:g} resolution={spec.resolution} on "
            f"{self._train_images_said()} / {len(self.classes)} classes, {self.steps_per_epoch} steps/epoch, "
            f"world size {env.world_size}, device {env.device}"
        )
        # SIGTERM stops the run at a step's end, with a checkpoint; under torchrun at one every process agrees on
        if env.distributed:
            self.agreement = StopAgreement(self.stop)  # (a collective: every process, here)
            prefix = rank_prefix(env.rank)
            deferred = self.stop.deferred(lambda msg: say_now(prefix + msg), together_s=TOGETHER_S)
        else:
            deferred = self.stop.deferred()
        with deferred:
            history, last_train_bad, last_val = self._epochs(ctx, amp_dtype, cur)
        last_val_bad = None
        if not history and last_val is None and self.global_step and not self._summary_is_current():
            # a resume with nothing left to train, of a run stopped before it wrote its summary (or of another
            # folder's finished checkpoint, which this folder has no best of yet): score it once
            self.say("summary.json does not describe the checkpoint: scoring it on the val split")
            last_val, last_val_bad = self._validate(amp_dtype)
            if last_val["top1"] > self.best["top1"]:
                self.best = {"top1": last_val["top1"], "top5": last_val["top5"], "epoch": self._epochs_reached([])}
                self._save_weights("model_best", {"epoch": self.best["epoch"], "val_top1": last_val["top1"],
                                                  "val_top5": last_val["top5"]})  # fmt: skip
        summary = self._finish(spec, history, last_val, last_train_bad, last_val_bad)
        # every process returns once the main one has written the run's files, which a caller on any process may
        # then read; a failure to write them fails every process (the others as "another process ... stopped")
        all_reduce_min_int(1, env)
        return summary

    def _train_images_said(self) -> str:
        """The training images as the run's first line counts them: the readable ones where the cache or the device
        path has read every file (with the unreadable ones beside them), else the files, of which the unreadable ones
        are known only once an epoch has met them. "on 100 images" was said of 100 files, 3 of them corrupt."""
        files = len(self.train_ds)
        unreadable = (self.cache_info.get("train") or {}).get("unreadable")
        if unreadable is None:
            return counted(files, "image file")
        skipped = f" ({counted(unreadable, 'unreadable file')} skipped)" if unreadable else ""
        return f"{counted(files - unreadable, 'image')}{skipped}"

    def _epochs(self, ctx: StepContext, amp_dtype, cur: dict) -> tuple[list[dict], BadFiles, dict | None]:
        """Train the epochs left (`run`), each scored and saved as --eval-every and --checkpoint-every say:
        (metrics rows, the last epoch's unreadable train files, the last evaluation). A SIGTERM asked for
        (`stopping`) ends it at the next step's end (under torchrun, the one after: `StopAgreement`), or at this
        epoch's, with a checkpoint there."""
        cfg, env = self.cfg, self.env
        history: list[dict] = []
        last_train_bad, last_val = BadFiles(), None
        epoch = self.start_epoch
        while epoch < self.epochs and not self._steps_done():  # --time-budget re-plans self.epochs after each epoch
            t_epoch = self.clock()
            cur["epoch"] = epoch
            self.sampler.set_epoch(epoch)
            self.train_ds.set_epoch(epoch)
            self.sampler.start = self.start_step * self.per_rank_batch if epoch == self.start_epoch else 0
            first = self.start_step if epoch == self.start_epoch else 0
            progress = Progress(  # the epoch's steps, a resumed one's first included (step 10/10 at its end)
                self.steps_per_epoch,
                f"epoch {epoch + 1}/{self.epochs}",
                enabled=env.is_main and not cfg.quiet,
                log_every=cfg.log_every,
                done=first,
            )
            # the totals of an epoch resumed mid-way: added by one process, as they are every process's sum
            carried = self.carried if epoch == self.start_epoch and env.is_main else None
            stats, self.global_step, stopped = train_one_epoch(
                self.wrapped, self.train_loader, ctx, progress, self.global_step, first, carried
            )
            totals = stats.pop("epoch_totals")
            carried_steps = (carried or {}).get("steps", 0)  # this process's steps are the rest
            progress.close()
            self.global_step_now = self.global_step
            # every process's files, gathered once already by the epoch's totals: gathering them again here was a
            # second collective each epoch for the same list
            last_train_bad = _bad_files(totals["bad"], self.train_ds)
            # a bad file's item is the next readable one in the split (`data.ImageFolderDataset`), so an epoch without
            # a single image means no file could be read: going on would save random weights as a finished run
            # (``train_images`` is summed over the processes, so all of them stop here together)
            if stats["train_images"] == 0:
                raise nothing_read(self.train_split.root, last_train_bad)
            if self.planner is not None and not stopped:
                self._replan(epoch + 1, self.clock() - t_epoch, stats, stats["train_steps"] - carried_steps)
            t_eval, eval_s = self.clock(), None
            if _due(epoch, cfg.eval_every, self.epochs) or stopped:
                val, val_bad = self._validate(amp_dtype)
                last_val = val
                eval_s = self.clock() - t_eval
            else:  # --eval-every: no evaluation this epoch
                val, val_bad = dict.fromkeys(("loss", "top1", "top5", "images_per_s")), BadFiles()
            # --max-steps reached before the epoch's end: the row is of part of the epoch, and says which
            done = first + stats["train_steps"] - carried_steps
            partial = stopped and done < self.steps_per_epoch
            row = {
                "epoch": epoch + 1,
                "global_step": self.global_step,
                "stopped_at_step": done if partial else None,  # the epoch's last step trained, where partial
                **stats,
                "val_loss": val["loss"],
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_images_per_s": val["images_per_s"],
                "skipped_train": last_train_bad.to_dict(),
                "skipped_val": val_bad.to_dict(),
            }
            history.append(row)
            improved = val["top1"] is not None and val["top1"] > self.best["top1"]
            if improved:
                self.best = {"top1": val["top1"], "top5": val["top5"], "epoch": epoch + 1}
            if env.is_main:
                self._append_metrics(row)
                if improved:
                    self._save_weights("model_best", row)
            evaluated = (
                f"val top-1 {val['top1']:.4f} top-5 {metric(val['top5'])} loss {val['loss']:.4f}"
                if val["top1"] is not None
                else "not evaluated"
            )
            where = f" (stopped at step {done} of {self.steps_per_epoch}, --max-steps)" if partial else ""
            self.say(
                f"epoch {epoch + 1}/{self.epochs}{where}: train loss {stats['train_loss']:.4f}, {evaluated}, "
                f"{stats['train_images_per_s']:.1f} img/s"
                + (
                    f"; skipped {last_train_bad.count} train / {val_bad.count} val files "
                    f"(first: {(last_train_bad.first + val_bad.first)[0]})"
                    if last_train_bad.count + val_bad.count
                    else ""
                )
            )
            agreed = self.agreement.at_epoch_end() if self.agreement else None  # every process, every epoch
            if stopped:  # --max-steps reached mid-epoch: the checkpoint records where
                self._checkpoint(epoch + (done >= self.steps_per_epoch), done % self.steps_per_epoch, totals)
                self._stop_if_asked(self.global_step, agreed)  # as at an epoch's end: a resume finishes the run
                break
            if _due(epoch, cfg.checkpoint_every, self.epochs) or self._asked(agreed):
                self._checkpoint(epoch + 1, 0)
                self._stop_if_asked(self.global_step, agreed)
            if self.planner is not None:
                self.planner.record(self.clock() - t_epoch - (eval_s or 0.0), eval_s)
            epoch += 1
        return history, last_train_bad, last_val

    def _asked(self, agreed: bool | None) -> bool:
        """Whether SIGTERM asked the run to stop here: in one process, as the request is now; under torchrun,
        ``agreed``, what every process agreed on at this point (`stopping.StopAgreement`): one process's own request
        alone would stop it without the others, which would then fail in their next collective."""
        return self.stop.requested if agreed is None else agreed

    def _stop_if_asked(self, global_step: int, agreed: bool | None = None) -> None:
        """End the run as SIGTERM asked (`stopping`, `_asked`), once the checkpoint just saved at ``global_step`` is
        on disk. Called right after that checkpoint only: a SIGTERM landing after the check that decided not to save
        one is the next step's to act on (called after every step, it stopped the run at a step with no checkpoint,
        saying it had one), and one landing while it was saved is this step's (in one process; under torchrun the
        next agreement's)."""
        if self._asked(agreed):
            self.checkpoints.wait()
            if self.agreement is not None:
                self.agreement.all_stop()  # the others end once the main process's checkpoint is on disk
            raise Terminated(f"stopped after step {global_step}, where a checkpoint was saved")

    def _epochs_reached(self, history: list[dict]) -> int:
        """The epochs the run has begun in all: those of the checkpoint resumed (a mid-epoch one counts its epoch)
        and those trained since. Not this folder's metrics rows: a resume from another folder's checkpoint has only
        the rows of the epochs it trained."""
        return max([self.start_epoch + (self.start_step > 0), *(row["epoch"] for row in history)])

    def _summary_is_current(self) -> bool:
        """Whether summary.json describes the state resumed (its global step): a run lengthened after it finished
        and stopped before its new summary holds the earlier finish's, whose per-class top-1 is another model's.
        Every process gets the same answer (the evaluation that follows a no is a collective)."""
        try:
            current = json.loads((self.out / "summary.json").read_text()).get("global_steps") == self.global_step
        except (OSError, ValueError, AttributeError):  # none, unreadable, or not an object
            current = False
        return all_reduce_min_int(int(current), self.env) == 1

    def _steps_done(self) -> bool:
        """Whether --max-steps is reached already (a resume of a run that stopped there trains no further step)."""
        return self.cfg.max_steps is not None and self.global_step >= self.cfg.max_steps

    def _validate(self, amp_dtype) -> tuple[dict, BadFiles]:
        """Score the model to be saved on the val split (every process its share): (metrics, unreadable files).

        Evaluation leaves the random state as it found it (the val loader draws worker seeds from it), so a run
        stopped and evaluated where an uninterrupted one is not still resumes identically."""
        env = self.env
        with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
            broadcast_buffers(self._eval_model(), env)  # what every process scores is what rank 0 saves
            val = evaluate(
                self._eval_model(),
                self.val_loader,
                len(self.classes),
                env,
                amp_dtype=amp_dtype,
                channels_last=self.cfg.channels_last,
            )
        bad = self._bad_report(val.pop("bad"), self.val_ds)
        if not val["images"]:  # summed over processes: all stop; a top-1 of 0 over no image is no score to save
            raise nothing_read(self.val_split.root, bad)
        return val, bad

    def _budget_summary(self) -> dict | None:
        """summary.json's ``time_budget``: the budget and the latest plan (a resume without --time-budget keeps the
        plan it was made for); None without a budget. A run that ended (--max-steps, a SIGTERM) before its first
        epoch did was planned nothing yet: its budget is recorded all the same, the plan's figures None."""
        plan = self.plan or ({"budget_s": self.cfg.time_budget} if self.cfg.time_budget else None)
        if plan is None:
            return None
        return {
            "budget_s": plan["budget_s"],
            "max_epochs": self.cfg.epochs,
            "planned_epochs": plan.get("epochs"),
            "epoch_s": plan.get("epoch_s"),
            "eval_s": plan.get("eval_s"),
        }

    def _finish(self, spec, history: list[dict], last_val: dict | None, train_bad: BadFiles, val_bad=None):
        self.checkpoints.wait()  # the last checkpoint is on disk when train() returns
        if not self.env.is_main:
            return None
        wall = self.elapsed()
        metrics = self.out / "metrics.jsonl"  # none in a new folder resumed from a finished run's last checkpoint
        all_rows = [row for _ln, row in read_metrics(metrics)] if metrics.exists() else []
        epochs = self._epochs_reached(history)
        final = all_rows[-1] if all_rows else {}
        if not all_rows and last_val is not None:  # scored once (`run`), listed in no row of this folder
            final = {"epoch": epochs, "val_loss": last_val["loss"], "val_top1": last_val["top1"],
                     "val_top5": last_val["top5"], "val_images_per_s": last_val["images_per_s"],
                     "skipped_val": val_bad.to_dict() if val_bad is not None else None}  # fmt: skip
        self._save_weights("model", final)
        cost = count_complexity(spec)
        # a resume with no epoch left to train evaluates nothing: keep what the finished run measured
        previous = self.out / "summary.json"
        earlier = json.loads(previous.read_text()) if last_val is None and previous.is_file() else {}
        summary = {
            "model": spec.to_dict(),
            "macs": cost.macs,
            "params": cost.params,
            "best_top1": self.best.get("top1"),
            "best_top5": self.best.get("top5"),
            "best_epoch": self.best.get("epoch"),
            "final_top1": final.get("val_top1"),
            "final_top5": final.get("val_top5"),
            "final_val_loss": final.get("val_loss"),
            "val_images": last_val["images"] if last_val else earlier.get("val_images"),  # final_top1's denominator
            "epochs": epochs,
            # the last epoch's step where --max-steps stopped it before its end (None: it ended), as its row says
            "last_epoch_stopped_at_step": final.get("stopped_at_step"),
            "global_steps": self.global_step,
            "wall_time_s": wall,
            "time_budget": self._budget_summary(),
            "train_images_per_s": (
                sum(r["train_images"] for r in all_rows) / max(1e-9, sum(r["train_time_s"] for r in all_rows))
            )
            if all_rows
            else None,
            "eval_images_per_s": final.get("val_images_per_s"),
            "per_class_top1": dict(zip(self.classes, last_val["per_class_top1"], strict=True))
            if last_val
            else earlier.get("per_class_top1"),
            "skipped_files": {"train": train_bad.to_dict(), "val": final.get("skipped_val")},
            # files not named as images, never read as samples (`data.scan_split`)
            "left_out_files": {
                "train": left_out_report(self.train_split.left_out),
                "val": left_out_report(self.val_split.left_out),
            },
            "cache": self.cache_info,
            "world_size": self.env.world_size,
            "device": str(self.env.device),
            # --step-graph, since this process started: its eager warm-up steps, the steps replayed, and the steps run
            # eagerly after the capture for a batch of another shape
            "step_graph": {
                "warmup_steps": self.graph.warm_calls,
                "replayed_steps": self.graph.replays,
                "eager_steps": self.graph.eager_calls,
            }
            if self.graph
            else None,
            "resumed_from": self.resumed_from,
            "weights": str(self.out / "model"),
            "best_weights": str(self.out / "model_best"),
        }
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        try:
            from .plots import plot_training_curves

            plot_training_curves(all_rows, self.out / "curves.png", title=f"{spec.name or self.cfg.model}")
        except ImportError:
            pass
        return summary


def _bad_files(found, ds: ImageFolderDataset) -> BadFiles:
    """``found``, (index, reason) pairs of ``ds``'s unreadable files as `gather_bad` merges them, as a report."""
    report = BadFiles()
    for index, reason in found:
        report.add(ds.samples[int(index)][0], str(reason))
    return report


# --- evaluation of saved weights --------------------------------------------------------------------------------


def evaluate_weights(
    weights: str | os.PathLike,
    data: str | os.PathLike,
    *,
    classes: list[str] | None = None,
    resolution: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Top-1/top-5/loss/per-class accuracy/images/s of saved weights (our folder, or an exported .onnx file, INT8
    included, run by ONNX Runtime) on an image-folder split (``ROOT/val``).

    Folder classes are matched to the model's labels by name; without labels, the sorted folder order is used.
    ``classes`` scores only those class folders (train's ``--classes``): a model trained on some of a split's.
    Under torchrun each process scores its share of the images (`ShardSampler`) and every process returns the sums
    over all of them: each image counted once. ``workers=None`` loads with train's default
    (`train_config.default_workers`: no more worker processes than the cores this process may run on).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is not allowed: batch_size must be an integer >= 1")
    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers={workers!r} is not allowed: workers must be an integer >= 0")
    from .cores import check_threads
    from .runtimes import torch_threads

    if threads is not None:
        check_threads(threads, ConfigError)
    if resolution is not None and resolution < 1:
        raise ConfigError(f"resolution={resolution!r} is not allowed: resolution must be a positive integer")

    started = not torch.distributed.is_initialized()  # a process group this call starts (torchrun), it ends
    with torch_threads(threads):  # the caller's thread count comes back afterwards
        try:
            return _evaluate(weights, data, classes, resolution, batch_size, workers, device, threads)
        finally:
            if started:
                cleanup_distributed()


class OnnxClassifier(nn.Module):
    """An exported ONNX classifier (`infer.load_predictor`, ONNX Runtime) as a module of NCHW float tensors, so that
    `engine.evaluate` scores it as it scores our models: an INT8 export is judged by its accuracy, not only by its
    agreement with fp32."""

    def __init__(self, predictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.predictor.run(x.numpy()))


def _open_for_eval(weights, resolution: int | None, device: str, threads: int | None):
    """(model, spec, env): our weights folder on ``device``, or an exported .onnx file under ONNX Runtime (CPU; a
    fixed-size graph fixes the resolution, a ``--dynamic-hw`` one takes ``resolution`` as our weights do)."""
    path = Path(weights)
    if not (path.is_file() and path.suffix.lower() == ".onnx"):
        env = setup_distributed(device)
        model = weights_io.load(weights, **({"resolution": resolution} if resolution else {})).to(env.device)
        return model, model.spec, env
    from .export import onnx_input_size
    from .infer import load_predictor

    if device == "cuda":
        raise ConfigError(f"device='cuda' is not allowed for {path}: ONNX files are evaluated by ONNX Runtime on CPU")
    predictor = load_predictor(path, "ort", threads)
    spec = predictor.spec
    if resolution and resolution != spec.resolution:
        if onnx_input_size(path) != (None, None):
            raise ConfigError(f"resolution={resolution} is not allowed for {path}: its graph takes "
                              f"{spec.resolution}x{spec.resolution} images")  # fmt: skip
        spec = spec.replace(resolution=resolution)
    return OnnxClassifier(predictor), spec, setup_distributed("cpu")


def _evaluate(weights, data, classes, resolution, batch_size: int, workers: int, device: str, threads) -> dict:
    weights = weights_io.run_weights(weights)  # a run folder: its model/, named so in the result as predict names it
    model, spec, env = _open_for_eval(weights, resolution, device, threads)
    if (Path(data) / "train").is_dir() and (Path(data) / "val").is_dir():
        raise DataError(f"{data} holds train/ and val/: evaluate one split, e.g. --data {Path(data) / 'val'}")
    if spec.num_classes == 0:  # it said "3 class folders but the model has 0 classes"
        raise DataError(f"{weights}: no classifier to evaluate (num_classes=0: a feature extractor, such as Keras' "
                        f"no-top weights); train a head on it first: mobilenets train --init {weights}")  # fmt: skip
    check_rgb(spec, weights)
    split = scan_split(data, classes)
    # a 1000/1001-way head saved without class names has ImageNet's (labels.known_labels): match folders to them
    labels = known_labels(spec)
    if labels:
        index, unknown = class_indices(split.classes, labels)
        if unknown:
            raise DataError(
                f"{data}: class folder(s) {', '.join(unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                + " are not among the model's labels (its class names, or ImageNet wnids for a model with the "
                "ImageNet classes; --classes scores only the folders named)"
            )
        split.samples = [(p, index[split.classes[lbl]]) for p, lbl in split.samples]
    elif len(split.classes) > spec.num_classes:
        raise DataError(f"{data}: {len(split.classes)} class folders but the model has {spec.num_classes} classes")
    ds = ImageFolderDataset(split, eval_transform(spec, spec.resolution))
    loader = DataLoader(
        ds, batch_size=batch_size, sampler=ShardSampler(len(ds), env), num_workers=workers, collate_fn=collate
    )
    result = evaluate(model, loader, spec.num_classes, env)
    bad = _bad_files(gather_bad(result.pop("bad"), env), ds)
    if not result["images"]:  # a top-1 of 0 over no image would read as a score
        raise nothing_read(data, bad)
    # an unnamed head scores folder k with output k (sorted, as ImageFolder): per-class results go by folder name
    names = list(labels) if labels else list(split.classes)
    present = sorted({lbl for _, lbl in split.samples})
    shown = [names[i] for i in present]
    # ImageNet names two classes "crane" (a bird and a machine): a shared name keeps its output index beside it
    shown = [f"{n} [{i}]" if shown.count(n) > 1 else n for n, i in zip(shown, present, strict=True)]
    result["per_class_top1"] = {n: result["per_class_top1"][i] for n, i in zip(shown, present, strict=True)}
    result.pop("per_class_count")
    result.update(weights=str(weights), data=str(data), resolution=spec.resolution, skipped_files=bad.to_dict(),
                  left_out_files=left_out_report(split.left_out))  # fmt: skip
    return result
