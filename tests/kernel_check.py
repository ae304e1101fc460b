"""Run by tests/test_kernels.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it at import time)."""

import json
import sys

import torch

from mobilenets import MobileNetV1, kernels
from mobilenets.gpu import FusedMobileNetV1


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def layer_cases():
    out = []
    cases = [  # C, Cout, H, W, stride, dilation, pad, act, dtype
        (16, 32, 9, 12, 1, 1, None, "relu", torch.float32),
        (16, 24, 10, 7, 2, 1, None, "relu6", torch.float32),
        (24, 16, 8, 8, 2, 1, (0, 1, 0, 1), "relu6", torch.float32),  # TensorFlow SAME on an even size
        (8, 16, 6, 6, 1, 2, None, "relu", torch.float32),
        (32, 48, 7, 9, 1, 1, None, "relu", torch.bfloat16),
    ]
    torch.manual_seed(0)
    for c, cout, h, w, s, d, pad, act, dtype in cases:
        x = torch.randn(2, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
        dw, db = torch.randn(c, 1, 3, 3) * 0.3, torch.randn(c) * 0.1
        pw, pb = torch.randn(cout, c, 1, 1) * 0.3, torch.randn(cout) * 0.1
        ref = kernels.depthwise_separable_reference(x.float(), dw, db, pw, pb, stride=s, dilation=d, pad=pad, act=act)
        args = [t.to(dtype) for t in (kernels.prepare_depthwise(dw), db, kernels.prepare_pointwise(pw), pb)]
        y = kernels.depthwise_separable(
            x, *args, stride=s, dilation=d, pad=pad, act=act, block_m=16, block_k=16, block_n=16
        )
        out.append(
            {
                "case": [c, cout, h, w, s, d, pad, act, str(dtype)],
                "fused_max_abs": (y.float() - ref).abs().max().item(),
                "ref_max_abs": ref.abs().max().item(),
                "shape_ok": tuple(y.shape) == tuple(ref.shape),
            }
        )
    return out


def model_case(tf_padding):
    model = MobileNetV1(alpha=0.25, num_classes=10, tf_padding=tf_padding, act="relu6").eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        fused = FusedMobileNetV1(model, use_triton=True)(x)
        fallback = FusedMobileNetV1(model, use_triton=False)(x)
    return {
        "tf_padding": tf_padding,
        "triton_max_abs": (fused - ref).abs().max().item(),
        "reference_max_abs": (fallback - ref).abs().max().item(),
        "logit_scale": ref.abs().max().item(),
    }


if __name__ == "__main__":
    json.dump({"layers": layer_cases(), "models": [model_case(False), model_case(True)]}, sys.stdout)
