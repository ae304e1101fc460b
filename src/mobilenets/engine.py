"""The training loop's parts: distributed set-up, one epoch of training, evaluation, checkpoints, RNG states.

Distributed: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; we then use DistributedDataParallel with NCCL on GPU
and gloo on CPU. Without those variables the same code runs with world size 1 (README: "Several GPUs and several
machines").
Checkpoints hold everything a bit-identical resume needs (model, optimizer, EMA, scaler, every RNG state, the
sampler position, epoch and step) and are written atomically (`atomic.atomic_write_bytes`): a reader sees a complete
old or complete new file, never a torn one. The trainer writes them in a background thread from a host copy
(`CheckpointWriter`), so the next epoch starts while the file is written.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from .atomic import atomic_write_bytes

# --- distributed ------------------------------------------------------------------------------------------------


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """The device type ``device`` ('auto', 'cpu' or 'cuda') trains on here: 'auto' takes CUDA where there is one."""
    if device not in ("auto", "cpu", "cuda"):  # the process's GPU is its LOCAL_RANK (torchrun), never a named one
        raise ValueError(f"device={device!r} is not allowed: device must be auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is not allowed: CUDA is not available on this machine")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def setup_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment; start the process group (NCCL for CUDA tensors, gloo for CPU) when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # on GPUs NCCL carries CUDA tensors and gloo the small CPU tensors (metric sums, gathered objects)
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
    return DistEnv(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min_int(value: int, env: DistEnv) -> int:
    """The smallest of every process's ``value`` (itself in a single process)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process. Each process's step updates its own copy
    with its own share of the batch; DDP broadcasts rank 0's into the model it wraps before its next forward, but not
    into an unwrapped copy (the EMA), whose sharded evaluation would score the other processes' images with other
    statistics than those of the weights rank 0 saves."""
    if env.distributed:
        for buf in unwrap(model).buffers():
            dist.broadcast(buf, 0)


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_bad(bad, env: DistEnv) -> list[tuple[int, str]]:
    """Every process's unreadable files, as (index, reason) pairs, merged: each index once (a collective), in index
    order. One file may be met by two processes (a sampler's padding) or carried from before a resume as well."""
    return sorted({int(i): str(r) for part in gather_objects(list(bad), env) for i, r in part}.items())


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per process) that can start mid-epoch."""

    def __init__(self, dataset, env: DistEnv, *, shuffle: bool, seed: int, drop_last: bool) -> None:
        super().__init__(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return super().__len__() - self.start


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation sharding without padding: process r takes indices r, r + W, ... so every image counts once."""

    def __init__(self, n: int, env: DistEnv) -> None:
        self.indices = list(range(env.rank, n, env.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --- RNG states -------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of process ``rank``'s own random stream from optimizer step ``step`` on (the trainer's
    `_Run._rank_rng`)."""
    return ((seed * 1_000_003 + rank) * 10_000_019 + step) % (2**63)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- progress ---------------------------------------------------------------------------------------------------


class Progress:
    """tqdm bar on a terminal, plain lines every ``log_every`` steps otherwise (with the epoch's ETA, as the bar
    shows it), nothing when quiet or not rank 0. ``total`` is the epoch's steps and ``done`` those a resumed run
    trained before its checkpoint: steps are counted as the epoch's (step 10/10 at its end, the lines at the same steps
    as an uninterrupted run's, as tqdm's ``initial``), and the ETA from the pace of the steps taken here."""

    def __init__(
        self, total: int, desc: str, *, enabled: bool, log_every: int, stream=None, clock=time.perf_counter, done=0
    ):
        self.stream = stream or sys.stderr
        self.enabled, self.total, self.desc, self.log_every = enabled, total, desc, log_every
        self.bar = None
        self.n = self.done = done
        self.clock = clock
        self.start = clock()
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, file=self.stream, dynamic_ncols=True, leave=True)

    def wants_stats(self) -> bool:
        """Whether the next `update` shows numbers (reading them from the GPU waits for it, so skip otherwise)."""
        nxt = self.n + 1
        return self.enabled and (self.bar is not None or nxt % self.log_every == 0 or nxt == self.total)

    def update(self, **stats: float) -> None:
        self.n += 1
        if not self.enabled:
            return
        text = {k: f"{v:.4g}" for k, v in stats.items()}
        if self.bar is not None:
            if text:
                self.bar.set_postfix(text, refresh=False)
            self.bar.update(1)
        elif self.n % self.log_every == 0 or self.n == self.total:
            eta = (self.clock() - self.start) / (self.n - self.done) * (self.total - self.n)
            print(
                f"{self.desc} step {self.n}/{self.total} "
                + " ".join(f"{k}={v}" for k, v in text.items())
                + f" eta={eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


WARNING = "warning: "  # a line that says the run may not be what was asked: shown even with --quiet


def log(env: DistEnv, quiet: bool, message: str) -> None:
    """``message`` on stderr from the main process. ``quiet`` (--quiet) hides the run's progress and information,
    not its warnings: a run training the head alone on random features said so only to those who had not asked for
    quiet (errors and the final result line are the CLI's, which prints them either way)."""
    if env.is_main and (not quiet or message.startswith(WARNING)):
        print(message, file=sys.stderr, flush=True)


# --- training ---------------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """What `train_one_epoch` needs besides the model and data."""

    optimizer: torch.optim.Optimizer
    lr_at: Any  # step -> factor
    set_lr: Any
    env: DistEnv
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: Any = None
    teacher: nn.Module | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_seed: int = 0
    num_classes: int = 0
    grad_clip: float = 0.0
    channels_last: bool = False
    max_steps: int | None = None
    # callback(global_step, step_in_epoch, totals) after each optimizer step (checkpoints); totals() is `epoch_totals`
    on_step: Any = None
    prepare: Any = None  # callback(model) after model.train(), e.g. to keep frozen BatchNorm in eval mode
    # `step_graph.StepGraph` of `optimizer_step` on this model and context (--step-graph), or None: run it directly
    graph: Any = None


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: KL(teacher_T || student_T) * T^2 (the paper's Section 4.5/4.7 distillation)."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True)
        * t
        * t
    )


MIX_SWITCH_PROB = 0.5  # with both MixUp and CutMix on, each batch uses one of them (timm's default switch prob)


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait for the GPU. ``t.to("cuda")`` from pageable
    memory synchronises the stream first (CUDA's pageable-copy rule: PyTorch copies it with a stream sync), so each
    training step's index or permutation copy would stall the host until the previous step finished, and the GPU
    would then idle while the host launches the next one. Staged in pinned memory, the copy is queued like a kernel
    (the caching host allocator keeps the pinned block until the copy is done)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: int | tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a batch with its own permutation: (images, soft
    targets). lambda ~ Beta(alpha, alpha); CutMix pastes a box of area fraction 1 - lambda (clipped to the image, lambda
    then recomputed from the pasted area, as timm and torchvision do). With both on, each batch picks one with
    probability `MIX_SWITCH_PROB`. Every random number comes from ``seed`` (the trainer passes (run seed, global step,
    rank)), so a resumed run mixes exactly as an uninterrupted one."""
    rng = np.random.default_rng(seed)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < MIX_SWITCH_PROB)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    n = images.shape[0]
    perm = to_device_async(torch.from_numpy(rng.permutation(n)), images.device)
    if use_cutmix:
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.clone()
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        images = images * lam + images[perm] * (1.0 - lam)
    one_hot = F.one_hot(labels, num_classes).float()
    return images, one_hot * lam + one_hot[perm] * (1.0 - lam)


def compute_loss(logits, labels, images, ctx: StepContext) -> torch.Tensor:
    """Cross-entropy with label smoothing (``labels`` are class indices, or soft targets after `mix_batch`), plus the
    distillation term when a teacher is set."""
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=ctx.label_smoothing)
    if ctx.teacher is not None and ctx.distill_weight > 0:
        with torch.no_grad():
            t_logits = ctx.teacher(images).float()
        kd = distillation_loss(logits.float(), t_logits, ctx.distill_temperature)
        loss = (1 - ctx.distill_weight) * loss + ctx.distill_weight * kd
    return loss


def _autocast(ctx: StepContext):
    if ctx.amp_dtype is None:
        return nullcontext()
    return torch.autocast(ctx.env.device.type, dtype=ctx.amp_dtype)


def train_one_epoch(
    model,
    loader,
    ctx: StepContext,
    progress: Progress,
    global_step: int,
    start_step: int = 0,
    carried: dict | None = None,
):
    """One pass over ``loader``. Returns (stats dict, new global step, stopped early); the files found unreadable
    are every process's, in the stats' ``epoch_totals`` (`epoch_totals`, one collective for both).

    ``carried``: the epoch's totals before ``start_step`` (`epoch_totals`, saved by a mid-epoch checkpoint; given to
    one process only, as they are every process's sum), so a resumed epoch reports what the uninterrupted one would.
    The stats' ``epoch_totals`` entry holds the totals at the end, for such a checkpoint."""
    model.train()
    if ctx.prepare is not None:
        ctx.prepare(model)
    dev = ctx.env.device
    carried = carried or {}
    # running sums stay on the device: reading them every step would make the CPU wait for the GPU each step
    loss_sum = torch.tensor(float(carried.get("loss_sum", 0.0)), dtype=torch.float64, device=dev)
    correct = torch.tensor(int(carried.get("correct", 0)), dtype=torch.int64, device=dev)
    # the files found unreadable before the stop, as [index, reason] (checkpoints before 2026-11-28 have none)
    seen, steps = int(carried.get("seen", 0)), int(carried.get("steps", 0))
    bad = [(int(i), str(r)) for i, r in carried.get("bad", [])]
    seen_before = seen
    before_s, here = float(carried.get("time_s", 0.0)), 0
    first_step_s = None
    t0 = time.perf_counter()
    lr = 0.0
    for i, (images, labels, bad_batch) in enumerate(loader, start=start_step):
        bad += bad_batch
        if images.numel() == 0:
            continue  # every file of this batch was unreadable
        loss, logits, targets, lr = train_step(model, images, labels, ctx, global_step)
        global_step += 1
        steps += 1
        here += 1
        if here == 1:  # from the epoch's start (the loader's start included): one-time costs land here
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            first_step_s = time.perf_counter() - t0
        loss_sum += loss.detach().double() * len(targets)
        correct += (logits.detach().argmax(1) == (targets if targets.dim() == 1 else targets.argmax(1))).sum()
        seen += len(targets)
        if progress.wants_stats():  # this session's rate (a resumed epoch's carried images are every process's)
            rate = (seen - seen_before) * ctx.env.world_size / max(time.perf_counter() - t0, 1e-9)
            progress.update(loss=float(loss.detach()), lr=lr, img_s=rate)
        else:
            progress.update()
        if ctx.on_step is not None:
            totals = partial(epoch_totals, loss_sum, correct, seen, steps, t0, before_s, ctx.env, bad)
            ctx.on_step(global_step, i + 1, totals)
        if ctx.max_steps is not None and global_step >= ctx.max_steps:
            break
    else:
        return (
            _stats(loss_sum, correct, seen, steps, lr, t0, ctx.env, first_step_s, before_s, bad),
            global_step,
            False,
        )
    return _stats(loss_sum, correct, seen, steps, lr, t0, ctx.env, first_step_s, before_s, bad), global_step, True


def train_step(model, images, labels, ctx: StepContext, global_step: int):
    """Optimizer step ``global_step`` (0-based) on one batch: the batch to the device, MixUp/CutMix, the layout, the
    learning rate, `optimizer_step` (replayed by ``ctx.graph`` when set), the EMA. Returns (loss, logits, targets,
    learning rate): the targets are the labels on the device, or the soft targets of a mixed batch. With the graph,
    the loss and logits are its own tensors, which the next step overwrites."""
    dev = ctx.env.device
    images = images.to(dev, non_blocking=True)
    targets = labels = labels.to(dev, non_blocking=True)
    if ctx.mixup_alpha > 0 or ctx.cutmix_alpha > 0:
        images, targets = mix_batch(images, labels, ctx.num_classes, mixup_alpha=ctx.mixup_alpha,
                                    cutmix_alpha=ctx.cutmix_alpha,
                                    seed=(ctx.mix_seed, global_step, ctx.env.rank))  # fmt: skip
    if ctx.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    lr = ctx.set_lr(ctx.optimizer, ctx.lr_at(global_step))
    if ctx.graph is not None:
        loss, logits = ctx.graph(images, targets)
    else:
        loss, logits = optimizer_step(model, images, targets, ctx)
    if ctx.ema is not None:
        ctx.ema.update(unwrap(model))
    return loss, logits, targets, lr


def optimizer_step(model, images: torch.Tensor, targets: torch.Tensor, ctx: StepContext):
    """Forward, loss, backward, gradient clipping and the optimizer step: (loss, logits). What `--step-graph`
    captures as one CUDA graph (`step_graph.StepGraph`), so nothing here may read a device value on the host."""
    with _autocast(ctx):
        logits = model(images)
        loss = compute_loss(logits, targets, images, ctx)
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.unscale_(ctx.optimizer)
        _clip(model, ctx.grad_clip)
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        _clip(model, ctx.grad_clip)
        ctx.optimizer.step()
    return loss, logits


def epoch_totals(
    loss_sum, correct, seen: int, steps: int, t0: float, before_s: float, env: DistEnv, bad: list = ()
) -> dict:
    """The epoch's running totals over every process so far (a collective: every process calls it, at the same
    step), as a mid-epoch checkpoint saves them for `train_one_epoch`'s ``carried``. ``bad``: the (index, reason)
    of each file found unreadable so far, gathered from every process, so that a resumed epoch reports the files
    the uninterrupted one would (it reported only those met after the resume)."""
    loss, right = float(loss_sum), int(correct)  # waits for the device's last step
    time_s = time.perf_counter() - t0 + before_s  # before the all-reduce: not another process's lag
    totals = all_reduce_sum(torch.tensor([loss, right, seen], dtype=torch.float64), env)
    found = gather_bad(bad, env)
    return {"loss_sum": float(totals[0]), "correct": int(totals[1]), "seen": int(totals[2]), "steps": steps,
            "time_s": time_s, "bad": [[i, r] for i, r in found]}  # fmt: skip


def _clip(model: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _stats(
    loss_sum, correct, seen, steps, lr, t0, env: DistEnv, first_step_s=None, before_s: float = 0.0, bad: list = ()
) -> dict:
    """The epoch's row from its `epoch_totals` (kept under "epoch_totals" for a mid-epoch checkpoint)."""
    totals = epoch_totals(loss_sum, correct, seen, steps, t0, before_s, env, bad)
    n = max(1, totals["seen"])
    return {
        "epoch_totals": totals,
        "train_loss": totals["loss_sum"] / n,
        "train_top1": totals["correct"] / n,
        "train_images": totals["seen"],
        "train_steps": steps,
        "lr": lr,
        "train_time_s": totals["time_s"],
        "first_step_s": first_step_s,  # this process's; the rest of the epoch is train_time_s minus it
        "train_images_per_s": totals["seen"] / max(totals["time_s"], 1e-9),
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under (Distributed)DataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def evaluate(model, loader, num_classes: int, env: DistEnv, *, amp_dtype=None, channels_last=False) -> dict:
    """Top-1, top-5, mean cross-entropy, per-class accuracy and images/s over ``loader`` (summed over processes).

    Top-5 is None for 5 classes or fewer: every label is then in the top 5, and a score of 1.0 would say nothing.
    ``images`` counts the images scored, not the files: 0 when no file could be read (the scores are then 0, not a
    measurement; the caller says so).

    The sums stay on the model's device until the last batch (float64; counts of 0/1 are exact in any order), so
    the host never waits for the device between batches: one transfer at the end."""
    model.eval()
    dev = env.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    top1 = torch.zeros(num_classes, dtype=torch.float64, device=dev)
    total = torch.zeros(num_classes, dtype=torch.float64, device=dev)
    top5 = torch.zeros((), dtype=torch.float64, device=dev)
    bad: list = []
    k = min(5, num_classes)
    t0 = time.perf_counter()
    for images, labels, bad_batch in loader:
        bad += bad_batch
        if images.numel() == 0:
            continue
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else nullcontext()
        with ctx:
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        # equal logits rank by class index, the lower first (argmax's rule, and predict's): topk's order of ties is
        # unspecified, and an INT8 file with quantized logits has ties at the top on a few percent of photos
        pred = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
        hit1 = (pred[:, 0] == labels).double()
        top1.index_add_(0, labels, hit1)
        total.index_add_(0, labels, torch.ones_like(hit1))
        top5 += (pred == labels[:, None]).any(1).double().sum()
    packed = torch.cat([loss_sum[None], top5[None], top1, total]).cpu()  # waits for the device's last batch
    elapsed = time.perf_counter() - t0
    packed = all_reduce_sum(packed, env)
    loss_sum, top5, top1, total = packed[0], packed[1], packed[2 : 2 + num_classes], packed[2 + num_classes :]
    images = int(total.sum())  # those scored: unreadable files are not among them
    n = max(1.0, float(images))  # (a division by 1, not 0, when none was: the caller says so)
    per_class = torch.where(total > 0, top1 / total.clamp(min=1), torch.full_like(total, float("nan")))
    return {
        "loss": float(loss_sum) / n,
        "top1": float(top1.sum()) / n,
        "top5": float(top5) / n if num_classes > 5 else None,
        "images": images,
        "per_class_top1": [None if torch.isnan(v) else float(v) for v in per_class],
        "per_class_count": [int(v) for v in total],
        "time_s": elapsed,
        "images_per_s": images / max(elapsed, 1e-9),
        "bad": bad,
    }


# --- checkpoints ------------------------------------------------------------------------------------------------

CKPT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")
REQUIRED_KEYS = ("model", "optimizer", "epoch", "step_in_epoch", "global_step", "rng", "config")


def checkpoint_path(run_dir: str | os.PathLike, global_step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"ckpt-{global_step:09d}.pt"


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as checkpoints/ckpt-<global step>.pt, then drop all but the ``keep`` newest."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = checkpoint_path(run_dir, state["global_step"])
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def host_copy(obj: Any) -> Any:
    """``obj`` (dicts, lists and tuples of tensors and plain values, as ``state_dict()`` returns) with every tensor
    copied to host memory: a snapshot that later in-place updates (the next optimizer step) cannot change. A state
    dict's ``_metadata`` (module versions, read by ``load_state_dict``) is kept."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, host_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = dict(obj._metadata)
        return out
    if isinstance(obj, list):
        return [host_copy(v) for v in obj]
    if isinstance(obj, tuple):
        items = [host_copy(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


class CheckpointWriter:
    """`save_checkpoint` off the training loop's path: `save` takes a host snapshot (`host_copy`) and a background
    thread serialises and writes it atomically, fsync included. For 1.0 MobileNet's 32.5 MiB state on the 2-core dev
    machine that leaves 29 ms of 123 on the training thread (benchmarks/checkpoint_cost.py; at least 29: the writer's
    CPU use during training is not counted); on the H200, epochs of Imagenette at 160 px took 0.56 s.

    One write at a time: `save` first waits for the previous one, so a checkpoint is never written behind a newer
    one. A failed write is raised by the next `save` or `wait`; the thread is not a daemon, so an exception leaving
    the trainer still lets a started write finish (`settle`). A process killed while epoch e's checkpoint is still
    being written resumes from epoch e - 1's, redoing one epoch: files are whole either way."""

    def __init__(self, run_dir: str | os.PathLike, keep: int) -> None:
        self.run_dir, self.keep = Path(run_dir), keep
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()  # set by the writer thread when its write ended (`wait`)
        self._after: list[Callable[[], None]] = []  # `then`'s, called when the write under way ends
        self._guard = threading.Lock()  # between `then` and the write's end

    def save(self, state: dict[str, Any]) -> None:
        self.wait()
        snapshot = host_copy(state)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(snapshot, self._done), name="checkpoint-writer")
        self._thread.start()

    def _write(self, snapshot: dict[str, Any], done: threading.Event) -> None:
        try:
            save_checkpoint(self.run_dir, snapshot, self.keep)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = exc
        finally:
            with self._guard:
                done.set()
                after, self._after = self._after, []
            for callback in after:
                callback()

    def then(self, callback: Callable[[], None]) -> None:
        """``callback()`` once the write under way has ended, by the writer thread; at once when none is. How a run
        interrupted twice keeps its folder locked until its last checkpoint is on disk (`trainer._Run.release`)."""
        with self._guard:
            if self._thread is not None and self._thread.ident is not None and not self._done.is_set():
                self._after.append(callback)
                return
        callback()

    def settle(self) -> None:
        """`wait` on the way out of a failed run: the write error, if any, is printed, not raised over the run's."""
        try:
            self.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: the write goes on, and Python waits for it before exiting
            print("interrupted again: the checkpoint being written is finished before the process ends",
                  file=sys.stderr)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - the run's own exception is the one to raise
            print(f"the last checkpoint write failed too: {exc}", file=sys.stderr)

    def wait(self) -> None:
        """Block until the last checkpoint is on disk; raise its write error, if any."""
        if self._thread is not None:
            if self._thread.ident is not None:  # not started when Ctrl-C landed between creating and starting it
                # the event first: a Ctrl-C in join() (Python < 3.13, bpo-45274's handling) releases the running
                # thread's state lock, marking it ended, and the interpreter then exits without waiting for the
                # write: the checkpoint under way was lost, its staging file left
                self._done.wait()
                self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files, newest (highest global step) first. Temporary files of unfinished writes never match."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT_RE.match(p.name).group(1)), reverse=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check one checkpoint; a truncated or foreign file raises ValueError naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for damaged files
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path}: not a mobilenets checkpoint (missing {', '.join(missing)})")
    return state


def find_resume(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and is complete; damaged ones are skipped (with their reason). None when
    there is no checkpoint: the run starts from scratch. When there are checkpoints and none loads, ValueError: a
    start from scratch would then replace the weights and metrics of the run they were saved by."""
    found = list_checkpoints(run_dir)
    for path in found:
        try:
            return path, load_checkpoint(path)
        except ValueError as exc:
            print(f"skipping checkpoint: {exc}", file=sys.stderr)
    if found:
        raise ValueError(
            f"{Path(run_dir) / CKPT_DIR}: none of its {len(found)} checkpoint(s) can be loaded (reasons above); a "
            "start from scratch would replace that run's weights and metrics: give another --out (or remove that "
            "folder) to start afresh"
        )
    return None
