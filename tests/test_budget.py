"""Training to a wall-clock budget (``--time-budget``, budget.py): the plan's arithmetic, and a real run that fits."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mobilenets import trainer as trainer_module
from mobilenets.budget import EpochPlanner, epochs_within, evaluations, step_rate
from mobilenets.engine import all_reduce_min_int, cleanup_distributed, find_resume, setup_distributed
from mobilenets.optim import lr_factor
from mobilenets.train_config import ConfigError
from mobilenets.trainer import train

from .test_train import CLASSES4, copy_subset, tiny_cfg, torchrun


def test_evaluations_count_every_nth_epoch_and_the_last():
    for every in (1, 2, 3, 7):
        for done in range(1, 15):
            for total in range(max(1, done - 2), 30):  # none when total < done: nothing is left to run
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
    # a plan that costs exactly the time left fits: 5 more epochs of 1 s and 6 evaluations of 0.5 s in 8 s
    assert epochs_within(8.0, 1, 20, 1.0, 0.5, 1) == 6


def test_planner_sets_the_first_epoch_aside_and_keeps_a_reserve():
    planner = EpochPlanner(budget_s=100.0, ceiling=1000, eval_every=1)
    first = planner.plan(elapsed_s=20.0, done=1, current_train_s=15.0, eval_guess_s=1.0)
    # alone, the slow first epoch is all there is to go on: (100 - 4 reserve - 20 - 1 final eval) / (15 + 1) = 4.7
    assert first["epochs"] == 1 + 4 and first["epoch_s"] == 15.0
    planner.epoch_walls.append(15.0)
    planner.eval_walls.append(0.5)
    second = planner.plan(elapsed_s=36.0, done=2, current_train_s=1.0, eval_guess_s=9.0)
    assert second["epoch_s"] == 1.0 and second["eval_s"] == 0.5  # the measured evaluation replaces the guess
    left = 100.0 - 4.0 - 36.0  # the reserve: 2 s and 2% of the 100 s budget
    assert second["left_s"] == pytest.approx(left)
    assert second["epochs"] == 2 + int((left - 0.5) // 1.5)
    assert planner.plan(elapsed_s=99.0, done=3, current_train_s=1.0, eval_guess_s=1.0)["epochs"] == 3  # stop now
    planner.epoch_walls += [1.0] * 20 + [3.0] * 9
    planner.eval_walls += [0.7, 0.9]
    later = planner.plan(elapsed_s=50.0, done=32, current_train_s=3.0, eval_guess_s=9.0)
    assert later["epoch_s"] == pytest.approx(3.0) and later["eval_s"] == pytest.approx(0.8)  # the latest 10; no 1st


class SimClock:
    """The trainer's clock in these tests: time moves only when the test says, so the plan is exact arithmetic."""

    def __init__(self) -> None:
        self.now, self.epochs = 0.0, 0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim_clock(monkeypatch):
    """Epochs take 1 s of simulated time (the first 5 s, 4 of them in its first step, like cuDNN autotuning) and
    evaluations 0.5 s, on the clock the trainer reads; the real training and evaluation still run."""
    clock = SimClock()
    real_train, real_eval = trainer_module.train_one_epoch, trainer_module.evaluate

    def train_one_epoch(*args, **kw):
        stats, step, stopped = real_train(*args, **kw)
        first = clock.epochs == 0
        clock.now += 5.0 if first else 1.0
        clock.epochs += 1
        return {**stats, "first_step_s": 4.0 if first else 0.0}, step, stopped

    def evaluate(*args, **kw):
        clock.now += 0.5
        return real_eval(*args, **kw)

    monkeypatch.setattr(trainer_module._Run, "clock", clock)
    monkeypatch.setattr(trainer_module, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    return clock


def test_a_budgeted_run_fits_its_budget_and_sizes_its_schedule(tmp_path, sim_clock):
    """30 s for up to 400 epochs: the run ends within the budget less the reserve, and not a whole epoch early (one
    more epoch and its evaluation would not have fitted); the last epoch is evaluated; the cosine schedule was sized
    to the plan, so the last rate is that schedule's last; the checkpoint holds the plan, and resuming the finished
    run without --time-budget keeps it (no further epochs, no 400-epoch schedule)."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    cfg = tiny_cfg(data, tmp_path / "r", epochs=400, time_budget=30.0, schedule="cosine", warmup_epochs=1, eval_every=3)
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    usable = 30.0 - EpochPlanner(30.0, 400, 3).reserve_s
    assert usable - 1.5 < summary["wall_time_s"] <= usable
    assert len(rows) == summary["epochs"] == summary["time_budget"]["planned_epochs"] == sim_clock.epochs
    assert summary["time_budget"]["epoch_s"] == 1.0 and summary["time_budget"]["eval_s"] == 0.5
    evaluated = [r["epoch"] for r in rows if r["val_top1"] is not None]
    assert evaluated == [*range(3, len(rows), 3), len(rows)]
    steps = summary["global_steps"]
    assert rows[-1]["lr"] == pytest.approx(cfg.lr * lr_factor(cfg, steps - 1, 4, epochs=len(rows)))
    assert rows[-1]["lr"] < 0.01 * cfg.lr  # with the 400-epoch schedule it would still be near the peak
    _, state = find_resume(tmp_path / "r")
    assert state["plan"]["epochs"] == len(rows)
    again = train(tiny_cfg(data, tmp_path / "r", epochs=400, schedule="cosine", warmup_epochs=1, resume="auto"))
    assert again["epochs"] == len(rows) and again["global_steps"] == steps
    assert again["time_budget"] == summary["time_budget"]


def test_a_run_that_ends_before_its_first_plan_still_records_its_budget(tmp_path):
    """--max-steps ending the first epoch early: no epoch ended, so nothing was planned, and summary.json said
    ``time_budget: None`` as if no --time-budget had been given. It records the budget and the epoch limit, with
    the plan's figures None (no epoch to estimate them from)."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    summary = train(tiny_cfg(data, tmp_path / "r", epochs=5, time_budget=600.0, max_steps=1))
    assert summary["global_steps"] == 1  # of 4 in the first epoch
    assert summary["time_budget"] == {
        "budget_s": 600.0, "max_epochs": 5, "planned_epochs": None, "epoch_s": None, "eval_s": None
    }  # fmt: skip
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["time_budget"] == summary["time_budget"]
    assert train(tiny_cfg(data, tmp_path / "free", max_steps=1))["time_budget"] is None  # no budget: none


def test_the_first_epochs_start_up_does_not_shrink_the_plan(sim_clock):
    """After a 5 s first epoch alone, its other steps (1 s for 3 of 4 steps) stand for an epoch: 1.33 s, not 5 s."""
    run = trainer_module._Run(tiny_cfg("d", "o", epochs=400, time_budget=30.0), setup_distributed("cpu"))
    run.t_start, run.wall_before, run.val_ds, run.train_ds = 0.0, 0.0, [0] * 8, [0] * 32
    run.steps_per_epoch = 4
    sim_clock.now = 5.0
    run._replan(1, 5.0, {"train_steps": 4, "first_step_s": 4.0}, 4)
    assert run.plan["epoch_s"] == pytest.approx(4 / 3) and run.plan["eval_s"] == pytest.approx(1 / 3)
    assert run.epochs == epochs_within(30.0 - run.planner.reserve_s - 5.0, 1, 400, 4 / 3, 1 / 3, 1)
    assert run.epochs > 12  # 5 s epochs would allow (30 - 2.6 - 5) / (5 + 0.33) = 4


def test_an_epoch_resumed_mid_way_is_planned_as_a_whole_epoch(sim_clock):
    """Resumed with 2 of its 4 steps left (the row counts all 4, this process ran 2): the second step's 0.5 s
    stands for each of the epoch's 4 steps, 2 s per epoch, not the 0.5 s of what was left."""
    run = trainer_module._Run(tiny_cfg("d", "o", epochs=400, time_budget=30.0), setup_distributed("cpu"))
    run.t_start, run.wall_before, run.val_ds, run.train_ds = 0.0, 0.0, [0] * 8, [0] * 32
    run.steps_per_epoch = 4
    sim_clock.now = 5.0
    run._replan(1, 1.5, {"train_steps": 4, "first_step_s": 1.0}, 2)
    assert run.plan["epoch_s"] == pytest.approx(2.0)


def test_a_plan_past_its_budget_says_by_how_much(sim_clock, monkeypatch):
    """Planned after the budget less its reserve is spent, the line said '1 epochs in all ... -12 s left'."""
    said = []
    run = trainer_module._Run(tiny_cfg("d", "o", epochs=400, time_budget=30.0), setup_distributed("cpu"))
    monkeypatch.setattr(run, "say", said.append)
    run.t_start, run.wall_before, run.val_ds, run.train_ds = 0.0, 0.0, [0] * 8, [0] * 32
    run.steps_per_epoch = 4
    sim_clock.now = 40.0
    run._replan(1, 5.0, {"train_steps": 4, "first_step_s": 1.0}, 4)
    over = 40.0 - (30.0 - run.planner.reserve_s)
    assert run.epochs == 1 and len(said) == 1
    assert said[0].startswith("time budget 30 s: 1 epoch in all (at most 400); ")
    assert said[0].endswith(f"s per evaluation, {over:.0f} s over it")


def test_budget_validation():
    with pytest.raises(ConfigError, match="time_budget=-1"):
        tiny_cfg("d", "o", time_budget=-1).validate()


def _min_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ["WORLD_SIZE"] = "2"
    env = setup_distributed("cpu")
    try:
        Path(out, f"{rank}.txt").write_text(str(all_reduce_min_int(40 - 7 * rank, env)))
    finally:
        cleanup_distributed()


def test_processes_agree_on_the_smallest_plan(tmp_path):
    """Two gloo processes with plans of 40 and 33 epochs both take 33 (the run's loop bound must be the same)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_min_worker, args=(port, str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"{r}.txt").read_text() for r in (0, 1)] == ["33", "33"]


@pytest.mark.slow
def test_a_budgeted_two_process_gloo_run_ends_together(tmp_path):
    """Under torchrun each process times its own epochs and plans; they end after the same epoch (a process that went
    on would wait in its next all-reduce until the subprocess timeout fails the test)."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 32, 4)
    args = ["--data", str(data), "--out", str(tmp_path / "r"), "--alpha", "0.25", "--resolution", "64"]
    args += ["--batch-size", "16", "--epochs", "300", "--time-budget", "12", "--workers", "0", "--threads", "1"]
    args += ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine", "--quiet"]
    run = torchrun(["train", *args])
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == summary["time_budget"]["planned_epochs"]


def test_step_rate_times_the_configured_training_step(tmp_path, monkeypatch):
    """The reference rate of train_gpu.py and reproduce --time-budget's calibration, here a tiny CPU step: the
    trainer's own step (`engine.optimizer_step`, spied on), with the run's clipping and label smoothing, 5 warm-up
    steps and the timed ones; --step-graph is refused off CUDA as the trainer refuses it."""
    from mobilenets import budget, engine

    real, seen, clock = engine.optimizer_step, [], [100.0]

    def spy(model, images, targets, ctx):
        seen.append(ctx)
        clock[0] += 0.25  # each step takes 0.25 s on budget's clock
        return real(model, images, targets, ctx)

    monkeypatch.setattr(engine, "optimizer_step", spy)
    monkeypatch.setattr(budget, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = tiny_cfg(tmp_path, tmp_path / "o", batch_size=4, grad_clip=0.5, label_smoothing=0.2)
    assert step_rate(cfg, num_classes=3, steps=2) == 4 / 0.25  # images/s of the timed steps only, not the warm-up
    assert len(seen) == 5 + 2
    assert {(c.grad_clip, c.label_smoothing, c.amp_dtype, c.scaler) for c in seen} == {(0.5, 0.2, None, None)}  # fp32
    with pytest.raises(ConfigError, match="^step_graph is not allowed on cpu: CUDA graphs need a CUDA device$"):
        step_rate(tiny_cfg(tmp_path, tmp_path / "o", batch_size=4, step_graph=True), num_classes=3)


@pytest.mark.parametrize("epochs", [400, 3])
def test_a_plan_inside_the_warm_up_warns_under_quiet(sim_clock, capsys, epochs):
    """A --time-budget plan ending inside the warm-up said so inside its information line, which --quiet hides (its
    help: warnings are still printed), and said nothing where --epochs itself was inside the warm-up (the check before
    the first epoch leaves a budgeted run to its plan). A warning line of its own, shown by a quiet run."""
    cfg = tiny_cfg("d", "o", epochs=epochs, time_budget=30.0, warmup_epochs=5, quiet=True)
    run = trainer_module._Run(cfg, setup_distributed("cpu"))
    run.t_start, run.wall_before, run.val_ds, run.train_ds = 0.0, 0.0, [0] * 8, [0] * 32
    run.steps_per_epoch = 4
    sim_clock.now = 20.0
    run._replan(1, 5.0, {"train_steps": 4, "first_step_s": 1.0}, 4)
    assert run.epochs <= 5
    said = capsys.readouterr().err.splitlines()
    plan = f"{run.epochs} epoch" + ("s" if run.epochs != 1 else "")
    assert said == [f"warning: a plan of {plan} ends inside the 5-epoch warm-up, so the rate never decays (more "
                    "time or a shorter --warmup-epochs)"], said  # fmt: skip
