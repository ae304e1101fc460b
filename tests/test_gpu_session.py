"""benchmarks/gpu_session.sh runs on a lent GPU: a wrong stage, or a machine without CUDA, is refused in one line
before it copies, measures or bundles anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_session.sh"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(tmp_path / "out"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [(), ("4",), ("--help",)])
def test_a_stage_other_than_1_2_3_is_refused_before_any_work(tmp_path, args):
    run = _run(tmp_path, *args)
    assert run.returncode == 2 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
    assert f"stage='{args[0] if args else ''}' is not allowed: give 1, 2 or 3" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing bundled


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_stage_on_a_machine_without_cuda_is_refused_in_one_line(tmp_path):
    run = _run(tmp_path, "2")  # stage 2 benchmarks the cuda runtimes
    assert run.returncode == 1 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
    assert "gpu_session.sh: stage 2 needs a CUDA device" in run.stderr
    assert not (tmp_path / "out").exists()
