"""Training to a wall-clock budget (``--time-budget``, budget.py): the plan's arithmetic, and a real run that fits."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from mobilenets.budget import EpochPlanner, epochs_within, evaluations
from mobilenets.engine import find_resume
from mobilenets.optim import lr_factor
from mobilenets.train_config import ConfigError
from mobilenets.trainer import train

from .test_train import CLASSES4, SRC, copy_subset, tiny_cfg


def test_evaluations_count_every_nth_epoch_and_the_last():
    for every in (1, 2, 3, 7):
        for done in range(1, 15):
            for total in range(done, 30):
                want = sum(1 for e in range(done, total + 1) if e % every == 0 or e == total)
                assert evaluations(done, total, every) == want, (done, total, every)


def test_epochs_within_is_the_largest_plan_that_fits():
    rng = random.Random(0)
    for _ in range(500):
        done, every = rng.randint(1, 20), rng.randint(1, 5)
        ceiling = done + rng.randint(0, 60)
        epoch_s, eval_s, left = rng.uniform(0.1, 3), rng.uniform(0, 2), rng.uniform(-5, 120)
        cost = [(t - done) * epoch_s + evaluations(done, t, every) * eval_s for t in range(done, ceiling + 1)]
        fits = [done + i for i, c in enumerate(cost) if c <= left]
        assert epochs_within(left, done, ceiling, epoch_s, eval_s, every) == (max(fits) if fits else done)


def test_planner_sets_the_first_epoch_aside_and_keeps_a_reserve():
    planner = EpochPlanner(budget_s=100.0, ceiling=1000, eval_every=1)
    first = planner.plan(elapsed_s=20.0, done=1, current_train_s=15.0, eval_guess_s=1.0)
    # alone, the slow first epoch is all there is to go on: (100 - 4 reserve - 20 - 1 final eval) / (15 + 1) = 4.7
    assert first["epochs"] == 1 + 4 and first["epoch_s"] == 15.0
    planner.epoch_walls.append(15.0)
    planner.eval_walls.append(0.5)
    second = planner.plan(elapsed_s=36.0, done=2, current_train_s=1.0, eval_guess_s=9.0)
    assert second["epoch_s"] == 1.0 and second["eval_s"] == 0.5  # the measured evaluation replaces the guess
    left = 100.0 - planner.reserve_s - 36.0
    assert second["left_s"] == pytest.approx(left)
    assert second["epochs"] == 2 + int((left - 0.5) // 1.5)
    assert planner.plan(elapsed_s=99.0, done=3, current_train_s=1.0, eval_guess_s=1.0)["epochs"] == 3  # stop now
    planner.epoch_walls += [1.0] * 20 + [3.0] * 9
    planner.eval_walls += [0.7, 0.9]
    later = planner.plan(elapsed_s=50.0, done=32, current_train_s=3.0, eval_guess_s=9.0)
    assert later["epoch_s"] == pytest.approx(3.0) and later["eval_s"] == pytest.approx(0.8)  # the latest 10; no 1st


def test_budget_validation():
    with pytest.raises(ConfigError, match="time_budget=-1"):
        tiny_cfg("d", "o", time_budget=-1).validate()


def test_a_budgeted_run_ends_in_time_with_its_schedule_run_out(tmp_path):
    """A real CPU run with 400 epochs allowed and 10 s given: it plans fewer epochs, ends within the budget with the
    last one evaluated, its cosine schedule sized to the plan (the last rate near zero), and the plan checkpointed."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    cfg = tiny_cfg(data, tmp_path / "r", epochs=400, time_budget=10.0, schedule="cosine", warmup_epochs=1, eval_every=3)
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    plan = summary["time_budget"]
    assert 3 <= len(rows) == plan["epochs"] == summary["epochs"] < 400
    assert summary["wall_time_s"] <= 10.0
    assert rows[-1]["val_top1"] is not None
    assert [r["epoch"] for r in rows if r["val_top1"] is not None][:-1] == list(range(3, len(rows), 3))
    assert rows[-1]["lr"] < 0.25 * cfg.lr  # with the 400-epoch schedule it would still be near the peak
    steps = summary["global_steps"]
    assert rows[-1]["lr"] == pytest.approx(cfg.lr * lr_factor(cfg, steps - 1, 4, epochs=len(rows)))
    _, state = find_resume(tmp_path / "r")
    assert state["planned_epochs"] == len(rows) and state["wall_time_s"] <= 10.0
    assert torch.isfinite(torch.tensor(summary["final_top1"]))


@pytest.mark.slow
def test_two_process_gloo_run_agrees_on_one_plan(tmp_path):
    """Under DDP each process times its own epochs; they must stop after the same epoch (the smallest plan), or the
    one that goes on waits forever in its next all-reduce (the subprocess timeout fails the test)."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 32, 4)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = ["--data", str(data), "--out", str(tmp_path / "r"), "--alpha", "0.25", "--resolution", "64"]
    args += ["--batch-size", "16", "--epochs", "300", "--time-budget", "12", "--workers", "0", "--threads", "1"]
    args += ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine", "--quiet"]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mobilenets"]
        + ["train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["world_size"] == 2 and 2 <= summary["epochs"] == summary["time_budget"]["epochs"] < 300
    assert summary["wall_time_s"] <= 12.0
