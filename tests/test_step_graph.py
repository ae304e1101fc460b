"""`mobilenets train --step-graph` (step_graph.py): the whole training step replayed as one CUDA graph.

On CPU: what the graph needs from the trainer (learning rates as tensors filled in place, checkpoints that resume
either way) and the settings it refuses. With CUDA (marked gpu): the graph trains the same steps as the eager step,
falls back to it for a batch of another shape, and a run with it resumes where it stopped."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from mobilenets import MobileNetV1
from mobilenets import trainer as trainer_module
from mobilenets.engine import DistEnv, StepContext, optimizer_step
from mobilenets.optim import load_optimizer_state, set_lr
from mobilenets.step_graph import StepGraph, prepare_optimizer
from mobilenets.train_config import ConfigError
from mobilenets.trainer import train
from mobilenets.weights import read_state_dict

from .conftest import data_path
from .test_train import CLASSES4, tiny_cfg

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@pytest.mark.parametrize(
    "settings, env, needle",
    [
        ({}, DistEnv(), "step_graph is not allowed on cpu: CUDA graphs need a CUDA device"),
        ({}, DistEnv(world_size=2, device=CUDA), "step_graph is not allowed with 2 processes"),
        ({"optimizer": "rmsprop"}, DistEnv(device=CUDA), "step_graph is not allowed with optimizer='rmsprop'"),
        (
            {"optimizer": "rmsprop_torch"},
            DistEnv(device=CUDA),
            "step_graph is not allowed with optimizer='rmsprop_torch'",
        ),
        ({"amp": "fp16"}, DistEnv(device=CUDA), "step_graph is not allowed with amp='fp16': the gradient scaler"),
        (
            {"compile": True, "compile_cudagraphs": True},
            DistEnv(device=CUDA),
            "step_graph is not allowed with compile_cudagraphs",
        ),
    ],
)
def test_step_graph_is_refused_where_the_step_cannot_be_captured(tmp_path, settings, env, needle):
    cfg = tiny_cfg(tmp_path, tmp_path / "o", step_graph=True, **settings)
    with pytest.raises(ConfigError, match=f"^{needle}") as exc:
        trainer_module._Run(cfg, env)._settings()  # settings only: refused before anything is built
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adamw"])
def test_a_step_graph_run_is_allowed_on_one_cuda_process(tmp_path, optimizer):
    cfg = tiny_cfg(tmp_path, tmp_path / "o", step_graph=True, optimizer=optimizer, amp="bf16", compile=True)
    trainer_module._Run(cfg, DistEnv(device=CUDA))._settings()  # settings only: no CUDA call


def _groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Two groups with their own rates, as `optim.param_groups` makes (backbone and head)."""
    params = list(model.parameters())
    return [{"params": params[:-2], "lr": lr, "base_lr": lr}, {"params": params[-2:], "lr": 2 * lr, "base_lr": 2 * lr}]


def test_tensor_rates_are_filled_in_place_and_train_as_numbers_do():
    """A captured optimizer step reads each rate where it lay at capture: `set_lr` must fill the same tensors, with
    the schedule's values, and an SGD step with them must equal the step with plain numbers (float32 weights take
    the rate as float32 either way)."""
    torch.manual_seed(0)
    a = MobileNetV1(alpha=0.25, resolution=32, num_classes=3)
    b = copy.deepcopy(a)
    kw = dict(momentum=0.9, nesterov=True, weight_decay=1e-4)
    opt_a = torch.optim.SGD(_groups(a, 0.1), lr=0.1, **kw)
    opt_b = torch.optim.SGD(_groups(b, 0.1), lr=0.1, **kw)
    prepare_optimizer(opt_b, torch.device("cpu"))
    rates = [g["lr"] for g in opt_b.param_groups]
    assert all(r.dtype == torch.float32 and r.shape == () for r in rates)
    for factor in (0.3, 1.0, 0.77, 0.05):
        assert set_lr(opt_a, factor) == set_lr(opt_b, factor) == pytest.approx(0.2 * factor)
        assert [g["lr"] for g in opt_b.param_groups] == rates  # the same tensors, never new ones
        assert [float(r) for r in rates] == pytest.approx([0.1 * factor, 0.2 * factor], rel=1e-7)
        x, y = torch.randn(2, 3, 32, 40), torch.tensor([0, 2])
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert "capturable" not in opt_b.param_groups[0]  # SGD has no such flag; its fused step is capturable
    # on CUDA only the fused step reads a tensor rate on the device (the foreach one calls .item(), which a capture
    # refuses): an unfused optimizer is refused before any CUDA call
    with pytest.raises(ValueError, match="^SGD is not fused: a captured step needs the fused one$"):
        prepare_optimizer(torch.optim.SGD(_groups(a, 0.1), lr=0.1), CUDA)


def test_a_step_graph_checkpoint_resumes_with_number_rates_and_the_built_optimizer_s_flags():
    """A --step-graph run saves tensor rates and AdamW's capturable=True: loaded, the rates are numbers again and
    the flags the optimizer was built with (a run with the graph makes them tensors and capturable once more)."""
    model = MobileNetV1(alpha=0.25, resolution=32, num_classes=3)
    saved = torch.optim.AdamW(_groups(model, 0.01), lr=0.01)
    prepare_optimizer(saved, torch.device("cpu"))
    assert all(g["capturable"] and isinstance(g["lr"], torch.Tensor) for g in saved.param_groups)
    set_lr(saved, 0.5)
    fresh = torch.optim.AdamW(_groups(model, 0.01), lr=0.01)
    load_optimizer_state(fresh, saved.state_dict())
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([0.005, 0.01])
    assert all(type(g["lr"]) is float and g["capturable"] is False for g in fresh.param_groups)


# --- with CUDA ---------------------------------------------------------------------------------------------------


@pytest.fixture
def deterministic_cudnn():
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Within rounding of the same kernels' sums (the graph replays them): 0.1% of the larger tensor's range."""
    return (a.float() - b.float()).abs().max().item() <= 1e-3 * max(a.float().abs().max().item(), 1e-6)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_a_step_graph_trains_as_the_eager_step_and_runs_other_shapes_eagerly(optimizer, deterministic_cudnn):
    """Eight steps under bf16 autocast, channels_last, clipping, label smoothing and a rate changed every step: the
    graph's losses and weights follow an eager twin's; the first three calls warm up, a batch of another size runs
    eagerly, and the replays go on from the weights it left."""
    torch.manual_seed(0)
    # no dropout: its masks come from the generator the twin shares, a step apart
    model = MobileNetV1(alpha=0.25, resolution=32, num_classes=5, dropout=0.0)
    model = model.to(CUDA).to(memory_format=torch.channels_last)
    twin = copy.deepcopy(model)
    make = torch.optim.SGD if optimizer == "nesterov" else torch.optim.AdamW
    kw = dict(momentum=0.9, nesterov=True, fused=True) if optimizer == "nesterov" else dict(fused=True)
    opts = [make(_groups(m, 0.05), lr=0.05, **kw) for m in (model, twin)]
    prepare_optimizer(opts[0], CUDA)
    ctxs = [StepContext(optimizer=o, lr_at=None, set_lr=set_lr, env=DistEnv(device=CUDA), amp_dtype=torch.bfloat16,
                        grad_clip=1.0, label_smoothing=0.1) for o in opts]  # fmt: skip
    graph = StepGraph(lambda x, y: optimizer_step(model, x, y, ctxs[0]))
    model.train()
    twin.train()
    for step in range(8):
        n = 3 if step == 5 else 4
        x = torch.randn(n, 3, 32, 32, device=CUDA).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 5, (n,), device=CUDA)
        factor = 1.0 - step / 10
        for opt in opts:
            set_lr(opt, factor)
        loss, logits = graph(x, y)
        want, want_logits = optimizer_step(twin, x, y, ctxs[1])
        assert _close(loss, want) and _close(logits, want_logits), (step, float(loss), float(want))
        if graph.graph is not None and n == 4:
            assert loss is graph.static_out[0]  # a replay returns the graph's own tensors
    assert (graph.warm_calls, graph.replays, graph.eager_calls) == (3, 4, 1)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert _close(p, q), name


def _val_subset(dst: Path, n_train: int, n_val: int) -> Path:
    """Two classes' folders from Imagenette's val split alone, which a lent GPU machine holds whole (its train split
    travels in parts, benchmarks/gpu_session.sh)."""
    src = data_path("imagenette", "val")
    for c in CLASSES4[:2]:
        files = sorted(os.listdir(src / c))
        for split, names in (("train", files[:n_train]), ("val", files[n_train : n_train + n_val])):
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for f in names:
                shutil.copy(src / c / f, dst / split / c / f)
    return dst


@pytest.mark.gpu
@needs_cuda
def test_train_with_a_step_graph_matches_eager_training_and_resumes(tmp_path):
    """`train(step_graph=True)`: the same run as without the graph (MixUp/CutMix's soft targets, clipping, a cosine
    rate that changes every step and the model's dropout included: a replay draws the masks the eager step would,
    as CUDA graphs advance the generator's offset by the captured step's draws), within rounding; stopped at step 5
    and resumed, it ends where the uninterrupted run does, the resumed process warming up again."""
    data = _val_subset(tmp_path / "d", 12, 2)  # 24 images, batch 4: 6 steps per epoch, 12 in all
    # two loader workers: their pin-memory thread pins the next batches while step 4 is captured
    kw = dict(device="cuda", workers=2, epochs=2, batch_size=4, resolution=32, deterministic=True,
              amp="bf16", channels_last=True, optimizer="nesterov", schedule="cosine", warmup_epochs=0.5,
              mixup_alpha=0.2, cutmix_alpha=1.0, grad_clip=1.0, label_smoothing=0.1)  # fmt: skip
    train(tiny_cfg(data, tmp_path / "eager", **kw))
    train(tiny_cfg(data, tmp_path / "graph", step_graph=True, **kw))
    train(tiny_cfg(data, tmp_path / "cut", step_graph=True, max_steps=5, **kw))
    train(tiny_cfg(data, tmp_path / "cut", step_graph=True, resume="auto", **kw))
    summaries = {r: json.loads((tmp_path / r / "summary.json").read_text()) for r in ("eager", "graph", "cut")}
    assert summaries["eager"]["step_graph"] is None
    assert summaries["graph"]["step_graph"] == {"warmup_steps": 3, "replayed_steps": 9, "eager_steps": 0}
    assert summaries["cut"]["step_graph"] == {"warmup_steps": 3, "replayed_steps": 4, "eager_steps": 0}
    weights = {r: read_state_dict(tmp_path / r / "model" / "model.safetensors") for r in summaries}
    for run in ("graph", "cut"):
        for k, v in weights["eager"].items():
            if v.is_floating_point():
                assert _close(weights[run][k], v), (run, k)
    rows = {r: [json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in summaries}
    for run in ("graph", "cut"):
        assert [r["train_loss"] for r in rows[run]] == pytest.approx([r["train_loss"] for r in rows["eager"]], rel=1e-3)
