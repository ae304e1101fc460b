"""benchmarks/train_gpu.py (issue 4's GPU training run, issue 7's end-to-end rate) runs once on a lent GPU: its CPU
run must get through training, the synthetic step and the results row with every option it offers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mobilenets.train_config import load_yaml

from .conftest import REPO, data_path

SCRIPT = REPO / "benchmarks" / "train_gpu.py"


def _run(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--data", str(data_path("imagenette")), "--device", "cpu", "--epochs", "1",
           "--max-per-class", "2", "--batch-size", "8", "--resolution", "32", "--workers", "1", "--time-budget", "0",
           "--no-write", "--out", str(tmp_path / "run"), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_gpu_runs_with_the_fast_training_layers_on_cpu(tmp_path):
    """--depthwise flipped (whose results-file name once raised KeyError after the training) and --pad-stem reach
    the trainer, and the row carries the synthetic step's rate and the ratio to it."""
    run = _run(tmp_path, "--depthwise", "flipped", "--pad-stem")
    assert run.returncode == 0, run.stderr[-2000:]
    row = json.loads(run.stdout[run.stdout.rindex("\n{") :])  # the last row printed: after the synthetic step
    assert row["synthetic_step_images_per_s"] > 0 and row["end_to_end_over_synthetic"] > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step_graph"] is None and summary["global_steps"] == 2  # 10 classes x 2 images, batch 8
    config = load_yaml(tmp_path / "run" / "config.yaml")  # the run's resolved config, as the trainer saved it
    assert (config["depthwise"], config["pad_stem"], config["step_graph"]) == ("flipped", True, False)


def test_train_gpu_refuses_a_step_graph_off_cuda_in_one_line(tmp_path):
    run = _run(tmp_path, "--step-graph")
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0, run.stderr[-2000:]
    assert "train_gpu.py: step_graph is not allowed on cpu: CUDA graphs need a CUDA device" in run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_train_gpu_on_a_machine_without_cuda_says_so_in_one_line(tmp_path):
    """Its default --device cuda, on a CPU-only machine, is named in one line before anything is decoded (it was a
    ValueError traceback from the trainer)."""
    cmd = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0, run.stderr[-2000:]
    assert "train_gpu.py: device='cuda' is not allowed: CUDA is not available" in run.stderr
    assert not (tmp_path / "run").exists()
