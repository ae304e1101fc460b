"""Training to a wall-clock budget (``--time-budget``): how many epochs fit, re-planned after every epoch.

A user with five minutes of GPU wants the best model those five minutes give, and the number of epochs that fit
depends on the machine. With a budget the trainer measures its epochs and sets the number to run, at most
``--epochs``, so that the run, timed from the start of its set-up (after the process group starts: data, model,
every epoch with its evaluations and checkpoints), ends a reserve before the budget; the reserve is for the final
weights, summary and plot. The cosine schedule's length is the planned number of epochs, so its rate still reaches
its floor when the time is up, which is what Li et al. 2020 ("Budgeted Training: Rethinking Deep Neural Network
Training Under Resource Constraints", ICLR) found matters most under a budget (the exponential and constant
schedules do not depend on the length). A plan that ends inside the warm-up is logged with a warning: its rate never
decays. The plan depends on measured times, so a budgeted run is not reproducible bit for bit; a resumed run keeps
its plan, with or without ``--time-budget``.

The plan is re-made after each epoch's training from the mean of the latest epochs measured (`WINDOW`; a mean, as
the plan predicts their sum, so an occasional checkpoint or pause is paid for). The first epoch and the first
evaluation of a process are set aside once others are measured: they pay one-time start-up such as cuDNN
autotuning and compilation. A plan made inside the warm-up does not change the rates: warm-up is counted in steps.

`step_rate` measures a training step on one resident batch: the GPU benchmark's no-data-path reference, and how
``reproduce --time-budget`` compares this GPU with the one its cost model was measured on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .train_config import TrainConfig

# Kept free for what follows the last epoch (final weights, summary, plot) and for the estimates' error.
RESERVE_S = 2.0
RESERVE_FRACTION = 0.02
WINDOW = 10  # epochs (and evaluations) an estimate averages: recent enough to follow a machine that slows down


def evaluations(done: int, total: int, eval_every: int) -> int:
    """Evaluations in epochs ``done..total`` (1-based, both included): every ``eval_every``-th and the last."""
    if total < done:
        return 0
    periodic = total // eval_every - (done - 1) // eval_every
    return periodic + (total % eval_every != 0)


def epochs_within(left_s: float, done: int, ceiling: int, epoch_s: float, eval_s: float, eval_every: int) -> int:
    """The most epochs in all, ``done..ceiling``, whose remaining cost fits in ``left_s`` seconds, just after epoch
    ``done`` (1-based) trained and before its evaluation: each further epoch costs ``epoch_s`` and each evaluation
    still to run (`evaluations`, the final one included) ``eval_s``. ``done`` when not even that fits: stop now."""

    def cost(total: int) -> float:
        return (total - done) * epoch_s + evaluations(done, total, eval_every) * eval_s

    lo, hi = done, ceiling  # cost grows with total: find the largest total with cost <= left_s
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= left_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class EpochPlanner:
    """Measures a run's epochs and plans how many fit in ``budget_s`` (see the module docstring)."""

    budget_s: float
    ceiling: int
    eval_every: int
    epoch_walls: list[float] = field(default_factory=list)  # per epoch of this process: wall less its evaluation
    eval_walls: list[float] = field(default_factory=list)

    @property
    def reserve_s(self) -> float:
        return RESERVE_S + RESERVE_FRACTION * self.budget_s

    @staticmethod
    def _mean(walls: list[float]) -> float:
        """Mean of the latest `WINDOW` of ``walls``, the first (start-up) set aside once there are others."""
        recent = (walls[1:] if len(walls) > 1 else walls)[-WINDOW:]
        return sum(recent) / len(recent)

    def record(self, epoch_s: float, eval_s: float | None) -> None:
        """An epoch's wall time less its evaluation, and the evaluation's (None: not evaluated)."""
        self.epoch_walls.append(epoch_s)
        if eval_s is not None:
            self.eval_walls.append(eval_s)

    def estimate(self, current_train_s: float) -> float:
        """Seconds per epoch without evaluation, from this process's epochs and the one just trained."""
        return self._mean([*self.epoch_walls, current_train_s])

    def plan(self, elapsed_s: float, done: int, current_train_s: float, eval_guess_s: float) -> dict:
        """The plan after epoch ``done`` trained in ``current_train_s``, ``elapsed_s`` into the run: the epochs in
        all and the estimates behind them. ``eval_guess_s`` stands in for an evaluation's cost until one is timed."""
        epoch_s = self.estimate(current_train_s)
        eval_s = self._mean(self.eval_walls) if self.eval_walls else eval_guess_s
        left = self.budget_s - self.reserve_s - elapsed_s
        epochs = epochs_within(left, done, self.ceiling, epoch_s, eval_s, self.eval_every)
        return {"epochs": epochs, "epoch_s": epoch_s, "eval_s": eval_s, "left_s": left}


def step_rate(cfg: TrainConfig, num_classes: int, steps: int = 30) -> float:
    """Images/s of ``cfg``'s training step on one random batch already on the device: the rate with no data path
    at all, after 5 warm-up steps (autotuning, lazy loading, compiling, a step graph's capture). The step is the
    trainer's own `engine.optimizer_step`, set up as the trainer sets it: model and depthwise layers, optimizer,
    autocast (fp16's gradient scaler), layout, batch, label smoothing, clipping, ``--compile`` with its options,
    ``--step-graph``, cuDNN autotuning as ``cfg.cudnn_benchmark`` says. Left out: the weight EMA's update, the
    learning rate's, and the epoch's running sums."""
    import torch

    from . import step_graph
    from .engine import StepContext, optimizer_step, setup_distributed
    from .optim import build_optimizer, scaled_lr
    from .trainer import AMP_DTYPES, build_model, compiled

    env = setup_distributed(cfg.device)
    step_graph.check(cfg, env.world_size, env.device)
    model = build_model(cfg, [str(i) for i in range(num_classes)]).to(env.device)  # its layers as cfg says
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg, scaled_lr(cfg))
    net = compiled(model, cfg)
    res = model.spec.resolution
    x = torch.randn(cfg.batch_size, 3, res, res, device=env.device)
    x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
    y = torch.randint(0, num_classes, (cfg.batch_size,), device=env.device)
    ctx = StepContext(optimizer=opt, lr_at=None, set_lr=None, env=env, amp_dtype=AMP_DTYPES[cfg.amp],
                      scaler=torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None,
                      label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip)  # fmt: skip
    step = step_graph.attach(ctx, net) if cfg.step_graph else partial(optimizer_step, net, ctx=ctx)
    model.train()
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark and not cfg.deterministic
    try:
        for _ in range(5):
            step(x, y)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        sync()
    finally:
        torch.backends.cudnn.benchmark = before
    return steps * cfg.batch_size / (time.perf_counter() - t0)
