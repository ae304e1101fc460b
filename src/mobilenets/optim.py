"""Optimizers, parameter groups, learning-rate schedules and the weight EMA used by training.

- Parameter groups: the paper (Section 3.2) puts "very little or no weight decay (l2 regularization) on the depthwise
  filters since there are so few parameters in them"; TF-slim's ``mobilenet_v1_arg_scope(regularize_depthwise=False)``
  uses none, and TF-slim regularizes only conv/FC weights (not BatchNorm or biases). Both are options here.
- `RMSpropTF`: RMSProp as TensorFlow 1 defines it (the paper trained with TF's RMSProp, Section 3.2): the mean square
  starts at 1, epsilon is added inside the square root and the learning rate is applied inside the momentum buffer.
  PyTorch's ``torch.optim.RMSprop`` differs on all three, which matters with the recipe's epsilon of 1.0.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .train_config import DEFAULT_EPS, TrainConfig


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow-1 RMSProp: ms = d*ms + (1-d)*g^2 (ms starts at 1); mom = m*mom + lr*g/sqrt(ms+eps); w -= mom."""

    def __init__(self, params, lr: float, decay: float = 0.9, momentum: float = 0.9, eps: float = 1.0, weight_decay=0):
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])  # TF: L2 loss term, gradient wd * w
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
                update = grad / (ms + group["eps"]).sqrt()
                mom.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(mom)
        return loss


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, cfg: TrainConfig, base_lr: float) -> list[dict]:
    """Split trainable parameters into (backbone | head) x (decayed | not decayed) groups."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_head = mod_name.split(".")[0] == "classifier"
            if isinstance(module, nn.modules.batchnorm._BatchNorm) or p_name == "bias":
                decay = cfg.wd_norm_bias
            elif _is_depthwise(module):
                decay = cfg.wd_depthwise
            else:
                decay = True
            groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        lr = base_lr * (1.0 if is_head else cfg.backbone_lr_mult)
        out.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": lr, "base_lr": lr})
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig, base_lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, base_lr)
    if not groups:
        raise ValueError("no trainable parameters (is everything frozen?)")
    eps = cfg.eps if cfg.eps is not None else DEFAULT_EPS[cfg.optimizer]  # set by TrainConfig.validate()
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=base_lr, decay=cfg.rmsprop_decay, momentum=cfg.momentum, eps=eps)
    if cfg.optimizer == "rmsprop_torch":
        return torch.optim.RMSprop(groups, lr=base_lr, alpha=cfg.rmsprop_decay, momentum=cfg.momentum, eps=eps)
    # on CUDA one fused kernel updates every parameter (PyTorch's fused SGD/AdamW); CPU keeps the default path,
    # whose results the bit-identical resume tests pin
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
    if cfg.optimizer in ("sgd", "nesterov"):
        nesterov = cfg.optimizer == "nesterov"
        return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.momentum, nesterov=nesterov, **fused)
    return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(cfg.betas), eps=eps, **fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping the implementation this optimizer was built with: PyTorch restores
    each group's ``fused``/``foreach``/``capturable`` from the checkpoint, so a CPU checkpoint resumed on CUDA would
    run unfused and a CUDA one resumed on CPU would ask for the fused kernel there. A rate saved as a tensor (a
    ``--step-graph`` run's) comes back as a number; a run with the graph makes it a tensor again."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for key in ("fused", "foreach", "capturable"):
            if key in group:
                group[key] = optimizer.defaults.get(key)
        if isinstance(group["lr"], torch.Tensor):  # saved by a --step-graph run (`step_graph.prepare_optimizer`)
            group["lr"] = float(group["lr"])


def scaled_lr(cfg: TrainConfig) -> float:
    """Linear scaling rule (Goyal et al. 2017) from ``lr_base_batch`` to the actual global batch."""
    return cfg.lr * cfg.batch_size / cfg.lr_base_batch if cfg.lr_base_batch else cfg.lr


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int, epochs: int | None = None) -> float:
    """Multiplier of the peak rate at optimizer ``step`` (0-based): linear warm-up, then the schedule, whose length
    is ``epochs`` (default ``cfg.epochs``; what ``--time-budget`` planned, budget.py)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "exponential":  # TF-slim exponential_decay(staircase=True), counted from the start
        return cfg.lr_decay ** math.floor(step / max(1, round(cfg.lr_decay_epochs * steps_per_epoch)))
    total = max(1, (epochs or cfg.epochs) * steps_per_epoch - warmup)
    progress = min(1.0, (step - warmup) / total)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set each group's rate to its ``base_lr`` x ``factor``; returns the largest. A rate held as a tensor
    (`step_graph.prepare_optimizer`) is filled in place, where a captured step reads it."""
    rates = []
    for group in optimizer.param_groups:
        rate = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(rate)
        else:
            group["lr"] = rate
        rates.append(rate)
    return max(rates)


class ModelEMA:
    """Exponential moving average of the parameters and of the floating-point buffers (BatchNorm's running mean and
    variance), updated after every optimizer step; integer buffers (``num_batches_tracked``) are copied.

    Used by the MobileNetV2/V3 and EfficientNet recipes (TF-slim ``moving_average_decay``); evaluated and saved
    instead of the raw weights when enabled. The decay warms up as TensorFlow's ``ExponentialMovingAverage`` does
    with ``num_updates``: update ``n`` (from 0) uses ``min(decay, (1 + n) / (10 + n))``, so the average forgets the
    random initialisation within the first hundreds of steps instead of keeping, at 0.9998, most of it for thousands
    (after 180 steps a fixed 0.9998 still weighs the initial weights by 0.9998^180 = 0.96). The update count is part
    of the state, so a resumed run continues the same schedule.

    The BatchNorm statistics are averaged with the weights because averaged weights normalised with the raw model's
    latest statistics are a mismatched pair: those statistics describe the activations of the raw weights, not of
    the average. The references do the same: TF-slim's ``train_image_classifier.py`` averages
    ``slim.get_model_variables()``, which holds ``batch_norm``'s moving_mean/moving_variance (model variables), and
    evaluates with the averages of all of them; timm's ``ModelEmaV3`` lerps every floating-point entry of the
    state_dict and copies the others (``exclude_buffers=False``, its default); torchvision's reference
    ``ExponentialMovingAverage`` is an ``AveragedModel(use_buffers=True)``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # what `update` writes, gathered once: the average's own tensors, which `load_state_dict` copies into and
        # nothing replaces. The model's are gathered at each update: they may be other tensors or modules by then
        # (``.to()`` replaces a module's buffers; the trainer's SyncBatchNorm conversion, after this copy, its
        # BatchNorm modules)
        params, buffers = list(self.module.parameters()), list(self.module.buffers())
        self._floats = [i for i, b in enumerate(buffers) if b.is_floating_point()]
        self._counts = [i for i, b in enumerate(buffers) if not b.is_floating_point()]
        self._params = len(params)
        self._averaged = params + [buffers[i] for i in self._floats]
        self._copied = [buffers[i] for i in self._counts]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One update in two multi-tensor calls (as timm's ModelEmaV3 does), not one call per tensor: a lerp of the
        parameters and floating-point buffers, a copy of the integer buffers. 1.0 MobileNet has 83 parameters, 54
        BatchNorm statistics and 27 counters, 164 kernel launches a step otherwise, beside a `--step-graph` replay's
        one. The same arithmetic: on CPU the multi-tensor ops run the per-tensor ones. The average's tensors are
        gathered once (`__init__`), not walked for at every step: on 1.0-224, CPU, one thread, that walk and the
        split of the buffers were 0.3 ms of an update's 1.3 ms."""
        params, buffers = list(model.parameters()), list(model.buffers())
        if len(params) != self._params:
            raise ValueError(f"the EMA holds {self._params} parameters, the model {len(params)}")
        if len(buffers) != len(self._floats) + len(self._counts):
            raise ValueError(f"the EMA holds {len(self._floats) + len(self._counts)} buffers, the model {len(buffers)}")
        if self._averaged:  # the multi-tensor ops refuse empty lists
            torch._foreach_lerp_(self._averaged, params + [buffers[i] for i in self._floats], 1 - self.current_decay())
        if self._copied:
            torch._foreach_copy_(self._copied, [buffers[i] for i in self._counts])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if "module" not in state:  # a checkpoint from before the warm-up: the bare averaged weights, decay fixed
            self.module.load_state_dict(state)
            self.updates = 10**9
            return
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
