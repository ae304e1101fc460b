"""A whole training step (forward, loss, backward, gradient clipping, optimizer step) replayed as one CUDA graph:
``mobilenets train --step-graph``.

It follows PyTorch's whole-network capture (the CUDA semantics notes, "Whole-network capture"): a few eager steps
on a side stream, then one capture; every later step copies its batch into the captured input tensors and replays
the graph, one launch instead of the step's hundreds. On the H200 leases of 2026-11-27 the same capture of
gpu_vs_timm's step saved 0.55-0.61 ms of launch gaps per batch-256 step of 1.0-224, and made ours' step 1.32x timm's
compiled one (results/logs-h200-2026-11-27-lease4/README.md).

What the graph holds fixed is what the trainer must feed it as tensors:
- the learning rate: each group's ``lr`` becomes a float32 tensor on the device (`prepare_optimizer`), which
  `optim.set_lr` fills in place, since the optimizer's kernels read it where it lay at capture (fused SGD and
  AdamW take a tensor rate; PyTorch issue #106802);
- the batch: each step's images and targets are copied into the captured ones, so their shapes must stay those of
  the captured step: a batch of another shape runs eagerly, outside the graph;
- the weights, gradients and optimizer state: updated in place by the replays. The warm-up steps create the
  optimizer's state before the capture, and the step leaves gradients unset before its backward
  (``zero_grad(set_to_none=True)``), so the captured backward writes them rather than adding to them.

Every step trains on its own batch: the warm-up steps are the run's first steps, not repeats of one batch (as
`gpu.CudaGraphRunner`'s are), and the capture itself runs nothing, so the first replay is the next step. A run with
the graph therefore takes the same sequence of steps as one without it, up to rounding: the kernels multiply by
the float32 rate where, given a number, they take it as a double. What the step does with host values (a
gradient scaler's inf checks, RMSpropTF's Python arithmetic, several processes' collectives) cannot be captured:
`refusal` names them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch

from .engine import optimizer_step
from .train_config import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from .engine import StepContext
    from .train_config import TrainConfig

# eager steps before the capture (PyTorch's whole-network example uses 3): lazy initialisation, cuDNN's autotuning,
# torch.compile's first call and the optimizer's state all happen before the graph records addresses
WARMUP_STEPS = 3
# optimizers whose step reads a tensor learning rate on the device without a host sync (fused on CUDA)
GRAPHABLE_OPTIMIZERS = ("sgd", "nesterov", "adamw")


def refusal(*, optimizer: str, amp: str, world_size: int, device: torch.device, compile_cudagraphs: bool) -> str | None:
    """Why a run with these settings cannot replay its step as a CUDA graph (a sentence naming the setting), or None."""
    if device.type != "cuda":
        return f"step_graph is not allowed on {device}: CUDA graphs need a CUDA device"
    if world_size > 1:
        return (f"step_graph is not allowed with {world_size} processes: DistributedDataParallel's bucketed "
                "all-reduce is not captured here; drop --step-graph")  # fmt: skip
    if optimizer not in GRAPHABLE_OPTIMIZERS:
        return (f"step_graph is not allowed with optimizer={optimizer!r}: its step reads the learning rate as a host "
                f"number; use one of {', '.join(GRAPHABLE_OPTIMIZERS)}")  # fmt: skip
    if amp == "fp16":
        return ("step_graph is not allowed with amp='fp16': the gradient scaler checks for inf on the host each step; "
                "use amp='bf16'")  # fmt: skip
    if compile_cudagraphs:
        return ("step_graph is not allowed with compile_cudagraphs: the step graph already captures the compiled "
                "passes; keep one of the two")  # fmt: skip
    return None


def check(cfg: TrainConfig, world_size: int, device: torch.device) -> None:
    """Raise `ConfigError` with `refusal`'s reason where ``cfg.step_graph`` is set and cannot be honoured."""
    why = cfg.step_graph and refusal(optimizer=cfg.optimizer, amp=cfg.amp, world_size=world_size, device=device,
                                     compile_cudagraphs=cfg.compile_cudagraphs)  # fmt: skip
    if why:
        raise ConfigError(why)


def attach(ctx: StepContext, model: nn.Module) -> StepGraph:
    """Replay ``ctx``'s `engine.optimizer_step` on ``model`` (compiled or not) as a step graph: the optimizer's rates
    become tensors (`prepare_optimizer`) and ``ctx.graph`` is set, so `engine.train_step` replays it. Call it after
    the optimizer's state is loaded (a resume): the graph reads that state where it lies at capture."""
    prepare_optimizer(ctx.optimizer, ctx.env.device)
    ctx.graph = StepGraph(partial(optimizer_step, model, ctx=ctx))
    return ctx.graph


def prepare_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make each parameter group's learning rate a float32 tensor on ``device`` (the fused CUDA kernels read it as
    a float), which `optim.set_lr` then fills in place: a captured optimizer step reads the rate from that tensor's
    memory. AdamW's groups are made ``capturable`` too, which PyTorch requires of an Adam step under capture even
    when fused. On CUDA the optimizer must be fused (the trainer's is: `optim.build_optimizer`)."""
    for group in optimizer.param_groups:
        if device.type == "cuda" and not group.get("fused"):  # the foreach step reads a tensor rate with .item()
            raise ValueError(f"{type(optimizer).__name__} is not fused: a captured step needs the fused one")
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        if "capturable" in group:  # Adam's and AdamW's flag (SGD has none: its fused step is capturable)
            group["capturable"] = True


class StepGraph:
    """``step(images, targets) -> outputs`` run eagerly for the first `WARMUP_STEPS` calls (on a side stream, as
    capture requires), captured on the next and replayed from then on. A call whose inputs differ in shape, dtype or
    memory layout from the captured ones runs ``step`` eagerly (counted in ``eager_calls``).

    The outputs returned by a replay are the graph's own tensors: the next call overwrites them, so read them (or
    clone them) before it."""

    def __init__(self, step: Callable[..., tuple], warmup: int = WARMUP_STEPS) -> None:
        self.step = step
        self.warmup = warmup
        self.warm_calls = 0  # eager calls made before the capture
        self.eager_calls = 0  # eager calls made after it, for inputs unlike the captured ones
        self.replays = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: tuple[torch.Tensor, ...] = ()
        self.static_layout: tuple = ()  # `_layout` of static_in, which a call's inputs must match to replay
        self.static_out: tuple = ()
        self.side: torch.cuda.Stream | None = None  # the warm-up steps' stream
        self.capture_stream: torch.cuda.Stream | None = None

    @staticmethod
    def _layout(inputs: tuple[torch.Tensor, ...]) -> tuple:
        return tuple((t.shape, t.dtype, t.device, t.stride()) for t in inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple:
        if self.graph is not None:
            if self._layout(inputs) != self.static_layout:
                self.eager_calls += 1
                return self.step(*inputs)
            return self._replay(inputs)
        if self.warm_calls < self.warmup:
            self.warm_calls += 1
            return self._on_side_stream(inputs)
        self._capture(inputs)
        return self._replay(inputs)

    def _on_side_stream(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        if self.side is None:  # one for every warm-up step: the allocator caches blocks per stream
            # the high-priority pool: never another graph's capture stream (gpu.CudaGraphRunner says why it matters)
            self.side = torch.cuda.Stream(priority=-1)
        side, here = self.side, torch.cuda.current_stream()
        side.wait_stream(here)
        with torch.cuda.stream(side):
            out = self.step(*inputs)
        here.wait_stream(side)  # everything after, the inputs' and outputs' reuse included, waits for the step
        return out

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        self.static_in = tuple(t.clone() for t in inputs)  # clone keeps the memory format (channels_last)
        self.static_layout = self._layout(self.static_in)
        graph = torch.cuda.CUDAGraph()
        # a stream of its own (gpu.CudaGraphRunner says why: cuBLAS workspaces are kept per stream)
        self.capture_stream = torch.cuda.Stream()
        try:
            # thread_local: the DataLoader's pin-memory thread keeps pinning the next batches meanwhile, and a pinned
            # allocation queries CUDA events, which the default ("global") mode counts as this capture's error (as
            # Inductor's own captures do, torch/_inductor/cudagraph_trees.py)
            with torch.cuda.graph(graph, stream=self.capture_stream, capture_error_mode="thread_local"):
                self.static_out = self.step(*self.static_in)
        except Exception as exc:  # e.g. an op that reads a device value on the host, which capture forbids
            raise RuntimeError(
                f"capturing the training step as a CUDA graph failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); run it without the graph"
            ) from exc
        self.graph = graph  # set last: a capture that raised leaves the runner warming up, not half-captured

    def close(self) -> None:
        """Let go of the graph, its memory pool and the step (whose context may point back here): the trainer calls it
        when the run ends, so that its model and graph go with the run rather than at the next garbage collection."""
        self.graph, self.static_in, self.static_out, self.step = None, (), (), None
        self.side = self.capture_stream = None

    def _replay(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        for static, t in zip(self.static_in, inputs, strict=True):
            static.copy_(t)
        self.graph.replay()
        self.replays += 1
        return self.static_out
