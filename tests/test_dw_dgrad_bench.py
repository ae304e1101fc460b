"""benchmarks/dw_dgrad.py's CPU smoke run (TRITON_INTERPRET=1): the stride-2 layers it finds, its three paths'
agreement with cuDNN's fp32 input gradient, and the report it writes (its GPU timings need an H100/H200)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilenets import kernels

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "dw_dgrad.py"


@pytest.mark.slow
def test_smoke_run_checks_every_stride2_layer_and_writes_its_report(tmp_path):
    if not kernels.triton_available():
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report_file,) = tmp_path.glob("dw-dgrad-*-smoke.json")
    report = json.loads(report_file.read_text())
    # paper Table 1: the stride-2 depthwise layers take 64, 128, 256 and 512 channels at 1/2, 1/4, 1/8, 1/16 of 32 px
    assert [r["input_nchw"] for r in report["rows"]] == [
        [2, 64, 16, 16],
        [2, 128, 8, 8],
        [2, 256, 4, 4],
        [2, 512, 2, 2],
    ]
    for row in report["rows"]:
        assert row["bytes"] == 2 * (row["input_nchw"][1] * row["input_nchw"][2] * row["input_nchw"][3] * 5 // 4) * 2
        for name in ("cudnn", "taps", "parity"):
            # bf16 inputs against cuDNN's fp32 gradient: 8 mantissa bits, a handful of products per pixel
            assert 0 < row[name]["max_abs_over_max_vs_cudnn_fp32"] <= 2e-2, (name, row)
            assert row[name]["median_ms"] > 0 and len(row[name]["runs_ms"]) == 1
            assert row[name]["graphed"] == {"skipped": "CUDA graphs need CUDA"}  # the GPU's time alone: CUDA only
    assert report["graphed_total_ms"] == dict.fromkeys(("cudnn", "taps", "parity"))
    assert report["tuning"] == []  # the interpreter runs one fixed config: nothing is tuned off CUDA
    assert "--smoke" in report["command"] and report["environment"]["torch"]
    # cuDNN's baseline is the algorithm the training steps run (they autotune), not its heuristic's first guess
    assert report["cudnn_benchmark"] is True


def test_refuses_a_device_where_the_kernels_cannot_run(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script runs on it")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stderr and not list(tmp_path.iterdir())


def test_a_capture_that_fails_is_recorded_not_raised():
    """The graphed timings run for the first time on a lent GPU: a path whose capture fails keeps its eager timings,
    with the error in its row, rather than ending the run (here: no CUDA at all)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the capture would succeed")
    from tests.conftest import load_script

    module = load_script("benchmarks/dw_dgrad.py")
    calls = []
    replay = module.captured(lambda: calls.append(1), 3)
    assert isinstance(replay, str) and replay, replay
