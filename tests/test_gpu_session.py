"""benchmarks/gpu_session.sh runs on a lent GPU: a wrong stage, or a machine without CUDA, is refused in one line
before it copies, measures or bundles anything."""

from __future__ import annotations

import os
import re
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


# seconds before gpu_vs_timm.py's first section: its start (imports, models, images: 3.3 s on the H200 leases of
# 2026-11-28) rounded up, and the Triton preflight where one runs, cold (the header's 34 s: a fresh machine's cache)
START_S, COLD_PREFLIGHT_S = 5, 34


def _gpu_vs_timm_plans() -> list[tuple[int, set[str], list[str]]]:
    """(GPU_VS_TIMM_BUDGET, sections, other arguments) of each gpu_vs_timm.py call the header plans."""
    header = "".join(line[1:] for line in SCRIPT.read_text().splitlines() if line.startswith("#"))
    found = re.findall(r'GPU_VS_TIMM_BUDGET=(\d+) .*?GPU_VS_TIMM_ARGS="--sections\s+([\w,]+)([^"]*)"', header)
    return [(int(budget), set(sections.split(",")), rest.split()) for budget, sections, rest in found]


def test_each_planned_gpu_vs_timm_call_has_the_budget_for_its_sections():
    """A section whose estimate exceeds the time left is skipped, its call's device time spent for nothing: the
    #7 plan gave train_tuned --hybrid (390 + 60 s) a budget of 480 s after a Triton preflight of 10-34 s."""
    pytest.importorskip("timm", reason="gpu_vs_timm.py needs timm")
    from .conftest import load_script

    module = load_script("benchmarks/gpu_vs_timm.py")
    plans = _gpu_vs_timm_plans()
    assert any("--hybrid" in rest for _, _, rest in plans), plans
    for budget, sections, rest in plans:
        hybrid = "--hybrid" in rest
        preflight = COLD_PREFLIGHT_S if module.uses_triton(sections, "--train-dw-variants" in rest, hybrid) else 0
        extra = (module.HYBRID_S * hybrid + module.TUNED_TIMM_S * ("--tune-timm" in rest)) * ("train_tuned" in sections)
        needed = START_S + preflight + sum(module.ESTIMATED_S[s] for s in sections) + extra
        assert budget >= needed, (budget, needed, sections, rest)
