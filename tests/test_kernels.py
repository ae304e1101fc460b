"""Numerics of the Triton kernels on CPU (TRITON_INTERPRET=1) against their PyTorch reference and the model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilenets import MobileNetV1, kernels
from mobilenets.gpu import FusedMobileNetV1, fast_inference


@pytest.fixture(scope="module")
def interpreted():
    if not kernels.triton_available():
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = Path(__file__).with_name("kernel_check.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_fused_kernel_matches_reference_per_layer(interpreted):
    for case in interpreted["layers"]:
        assert case["shape_ok"], case
        # fp32: IEEE dot, so only summation order differs; bf16: inputs rounded to 8 mantissa bits (2^-8 relative)
        tol = 1e-5 if "float32" in case["case"][-1] else 2e-2 * max(1.0, case["ref_max_abs"])
        assert case["fused_max_abs"] <= tol, case


@pytest.mark.slow
def test_fused_model_matches_eager_model(interpreted):
    for case in interpreted["models"]:
        assert case["triton_max_abs"] <= 1e-4 * max(1.0, case["logit_scale"]), case
        assert case["reference_max_abs"] <= 1e-4 * max(1.0, case["logit_scale"]), case


def test_reference_path_on_cpu_matches_model():
    model = MobileNetV1(alpha=0.5, num_classes=7, output_stride=16).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.allclose(FusedMobileNetV1(model)(x), model(x), atol=1e-5)


def test_fast_inference_validates_arguments():
    model = MobileNetV1(alpha=0.25)
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        fast_inference(model, backend="tensorrt")
    with pytest.raises(ValueError, match="dtype='int4'"):
        fast_inference(model, dtype="int4")


def test_eager_fast_path_runs_on_cpu_in_fp32():
    model = MobileNetV1(alpha=0.25, num_classes=5).eval()
    run = fast_inference(model, backend="eager", dtype="fp32", device="cpu")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_backend_on_gpu_matches_fp32_within_bf16_tolerance():
    model = MobileNetV1(num_classes=1000).eval()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    ref = model.cuda()(x).float()
    for backend in ("triton", "compile"):
        out = fast_inference(model, backend=backend, dtype="bf16")(x).float()
        assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
