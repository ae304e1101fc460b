"""Run by tests/test_kernels.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it at import time)."""

import contextlib
import copy
import json
import sys

import torch

from mobilenets import MobileNetV1, dwconv, kernels
from mobilenets.gpu import FusedMobileNetV1
from mobilenets.layers import Conv2dSame


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
    # the first tiles the GPU tunes over (kernels.FUSED_CONFIGS / SPLIT_CONFIGS), on sizes none of them divides
    # (masked rows and channels), in both half precisions
    production = [
        (48, 72, 9, 9, 1, 1, None, "relu", torch.float16),
        (40, 24, 9, 10, 2, 1, None, "relu6", torch.bfloat16),
    ]
    torch.manual_seed(0)
    for i, (c, cout, h, w, s, d, pad, act, dtype) in enumerate(cases + production):
        bm, bk, bn, warps, stages = kernels.FUSED_CONFIGS[0] if i >= len(cases) else (16, 16, 16, 4, 2)
        sm, sc, swarps = kernels.SPLIT_CONFIGS[0] if i >= len(cases) else (16, 16, 4)
        x = torch.randn(2, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
        dw, db = torch.randn(c, 1, 3, 3) * 0.3, torch.randn(c) * 0.1
        pw, pb = torch.randn(cout, c, 1, 1) * 0.3, torch.randn(cout) * 0.1
        ref = kernels.depthwise_separable_reference(x.float(), dw, db, pw, pb, stride=s, dilation=d, pad=pad, act=act)
        args = [t.to(dtype) for t in (kernels.prepare_depthwise(dw), db, kernels.prepare_pointwise(pw), pb)]
        geometry = dict(stride=s, dilation=d, pad=pad, act=act)
        y = kernels.depthwise_separable(
            x, *args, **geometry, block_m=bm, block_k=bk, block_n=bn, num_warps=warps, num_stages=stages
        )
        y_split = kernels.depthwise_separable(
            x, *args, **geometry, plan="split", block_m=sm, block_k=sc, num_warps=swarps
        )
        # the split plan's depthwise kernel on 2-d pixel blocks: a production block, then a small one (several
        # blocks per image, masked at its edges)
        first_block = next(cfg for cfg in kernels.SPLIT_CONFIGS if len(cfg) == 4)
        tbm, tbc, twarps, tw = first_block if i >= len(cases) else (8, 16, 4, 4)
        tiled_dw = kernels.depthwise(
            x, args[0], args[1], **geometry, block_m=tbm, block_c=tbc, num_warps=twarps, tile_w=tw
        )
        tiled = kernels.pointwise(tiled_dw, args[2], args[3], act=act)
        rows = None
        if s == 1 and d == 1:  # the row-reuse depthwise kernel: a production tile, then a small one (several blocks)
            rr, rc, rbc, rwarps = kernels.ROWS_CONFIGS[0] if i >= len(cases) else (4, 4, 16, 4)
            rows = kernels.depthwise_separable(
                x, *args, **geometry, plan="split_rows", block_m=rr, block_n=rc, block_k=rbc, num_warps=rwarps
            )
        out.append(
            {
                "case": [c, cout, h, w, s, d, pad, act, str(dtype)],
                "tiles": {"fused": [bm, bk, bn], "split": [sm, sc]},
                "fused_max_abs": (y.float() - ref).abs().max().item(),
                "split_max_abs": (y_split.float() - ref).abs().max().item(),
                "split_channels_last": y_split.is_contiguous(memory_format=torch.channels_last),
                "tiled_max_abs": (tiled.float() - ref).abs().max().item(),
                "tiled_block": [tbm, tw],
                "rows_max_abs": None if rows is None else (rows.float() - ref).abs().max().item(),
                "rows_channels_last": rows is None or rows.is_contiguous(memory_format=torch.channels_last),
                "ref_max_abs": ref.abs().max().item(),
                "shape_ok": tuple(y.shape) == tuple(ref.shape) == tuple(y_split.shape),
            }
        )
    return out


def stem_cases():
    """The first-layer kernel against `stem_reference` on the same rounded values, over input layouts and dtypes."""
    out = []
    torch.manual_seed(0)
    cases = [  # Cin, Cout, H, W, stride, pad, act, input dtype, input layout, weight dtype, block_m
        (3, 32, 13, 11, 2, None, "relu", torch.float32, "nchw", torch.float32, 16),
        (3, 8, 12, 12, 2, (0, 1, 0, 1), "relu6", torch.float32, "nchw", torch.bfloat16, kernels.STEM_CONFIGS[0][0]),
        (3, 24, 9, 10, 1, None, "relu", torch.float16, "nhwc", torch.float16, 32),
        (4, 16, 10, 9, 2, None, "none", torch.float32, "strided", torch.bfloat16, 64),
    ]
    for cin, cout, h, w, s, pad, act, in_dtype, layout, dtype, bm in cases:
        x = torch.randn(2, cin, h, 2 * w) * 2
        x = x[..., ::2] if layout == "strided" else x[..., :w].contiguous()  # a view with a column stride of 2
        x = x.to(in_dtype)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        weight, bias = (torch.randn(cout, cin, 3, 3) * 0.3).to(dtype), (torch.randn(cout) * 0.1).to(dtype)
        # the same values in fp32: the input rounded to the layer's dtype, as the kernel loads it
        ref = kernels.stem_reference(x.to(dtype).float(), weight.float(), bias.float(), stride=s, pad=pad, act=act)
        y = kernels.stem(x, kernels.prepare_stem(weight), bias, stride=s, pad=pad, act=act, block_m=bm)
        out.append(
            {
                "case": [cin, cout, h, w, s, pad, act, str(in_dtype), layout, str(dtype), bm],
                "max_abs": (y.float() - ref).abs().max().item(),
                "ref_max_abs": ref.abs().max().item(),
                "ref_min": ref.min().item(),
                "shape_ok": tuple(y.shape) == tuple(ref.shape),
                "channels_last": y.is_contiguous(memory_format=torch.channels_last),
                "dtype_ok": y.dtype == dtype,
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


def conv_reference(c: int, h: int, w: int, stride: int, dilation: int, tf_same: bool):
    """A 3x3 depthwise ``nn.Conv2d`` (``layers.Conv2dSame`` for 'SAME') on a random channels_last (3, c, h, w) input,
    and PyTorch's autograd for a random output gradient: (conv, x, x with its gradient, output, output gradient,
    weight gradient); the conv's own gradient is cleared for the layer under test."""
    s, d = stride, dilation
    conv = Conv2dSame(c, c, 3, s, 0, d, c, bias=False) if tf_same else torch.nn.Conv2d(c, c, 3, s, d, d, c, bias=False)
    x = torch.randn(3, c, h, w).contiguous(memory_format=torch.channels_last)
    ref_x = x.clone().requires_grad_()
    ref = conv(ref_x)
    grad = torch.randn_like(ref)
    (ref * grad).sum().backward()
    ref_gw, conv.weight.grad = conv.weight.grad, None
    return conv, x, ref_x, ref, grad, ref_gw


def dwconv_cases():
    """The Triton depthwise op's output, input gradient and weight gradient against F.conv2d's autograd."""
    out = []
    torch.manual_seed(0)
    cases = [  # C, H, W, stride, dilation, TensorFlow SAME, dtype
        (16, 9, 12, 1, 1, False, torch.float32),
        (24, 10, 7, 2, 1, False, torch.float32),
        (8, 8, 8, 2, 1, True, torch.float32),  # SAME on an even size: pad (0, 1)
        (8, 7, 9, 2, 1, True, torch.float32),
        (8, 6, 6, 1, 2, False, torch.float32),
        (70, 5, 5, 1, 1, False, torch.float32),  # channels past one 64-wide block
        (32, 9, 9, 2, 1, False, torch.bfloat16),
    ]
    for c, h, w, s, d, tf, dtype in cases:
        conv, x, ref_x, ref, grad, ref_gw = conv_reference(c, h, w, s, d, tf)
        tconv = dwconv.TritonDepthwiseConv2d.from_conv(conv)
        tx = x.to(dtype).requires_grad_()
        y = tconv(tx)
        (y.float() * grad).sum().backward()
        out.append(
            {
                "case": [c, h, w, s, d, tf, str(dtype)],
                "y_max_abs": (y.float() - ref).abs().max().item(),
                "dx_max_abs": (tx.grad.float() - ref_x.grad).abs().max().item(),
                "dw_max_abs": (conv.weight.grad - ref_gw).abs().max().item(),
                "scales": [ref.abs().max().item(), ref_x.grad.abs().max().item(), ref_gw.abs().max().item()],
                "channels_last": y.is_contiguous(memory_format=torch.channels_last),
                "same_parameter": tconv.weight is conv.weight,
            }
        )
    return out


@contextlib.contextmanager
def counted_launches(*names: str):
    """Count the launches (``kernel[grid](...)``) of `dwconv`'s Triton kernels ``names`` while in the block: yields
    {name: launches so far}, which the block may reset."""
    launches = dict.fromkeys(names, 0)

    class Counted:
        def __init__(self, name):
            self.name, self.kernel = name, getattr(dwconv, name)

        def __getitem__(self, grid):
            launches[self.name] += 1
            return self.kernel[grid]

    originals = {name: getattr(dwconv, name) for name in names}
    try:
        for name in names:
            setattr(dwconv, name, Counted(name))
        yield launches
    finally:
        for name, kernel in originals.items():
            setattr(dwconv, name, kernel)


def dwconv_partial_grad_case():
    """Only the gradients autograd asks for are computed: kernel launches counted with the weight frozen (a linear
    probe) and with an input that needs no gradient."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, 1, 1, 1, 16, bias=False)
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    ref_x = x.clone().requires_grad_()
    conv(ref_x).square().sum().backward()
    ref_dx, ref_dw = ref_x.grad, conv.weight.grad
    tconv = dwconv.TritonDepthwiseConv2d.from_conv(conv)
    out = {}
    with counted_launches("_dgrad_kernel", "_wgrad_kernel") as launches:
        conv.weight.grad = None
        conv.weight.requires_grad_(False)
        tx = x.clone().requires_grad_()
        tconv(tx).square().sum().backward()
        out["frozen"] = dict(launches, dx_max_abs=(tx.grad - ref_dx).abs().max().item(), dw=conv.weight.grad)
        launches.update(dict.fromkeys(launches, 0))
        conv.weight.requires_grad_(True)
        tconv(x).square().sum().backward()
        out["input_no_grad"] = dict(launches, dw_max_abs=(conv.weight.grad - ref_dw).abs().max().item())
    out["frozen"]["dw"] = out["frozen"]["dw"] is None
    out["scales"] = [ref_dx.abs().max().item(), ref_dw.abs().max().item()]
    return out


def dwconv_opcheck_cases():
    """torch.library.opcheck of the three custom ops (fake vs real sizes and strides, autograd registration, schema)
    on NCHW and channels_last inputs and weights: errors as strings, None where a check passed."""
    torch.manual_seed(0)
    ops = torch.ops.mobilenets
    out = []
    for x_cl, w_cl in ((False, False), (True, True)):
        for s, d, tf in ((1, 1, False), (2, 1, True), (1, 2, False)):
            fmt = torch.channels_last
            x = torch.randn(2, 8, 7, 6)
            w = torch.randn(8, 1, 3, 3)
            x, w = (x.contiguous(memory_format=fmt) if x_cl else x), (w.contiguous(memory_format=fmt) if w_cl else w)
            grad = torch.randn_like(ops.depthwise3x3(x, w, s, d, tf))
            row = {"case": [x_cl, w_cl, s, d, tf]}
            for name, args in (
                ("depthwise3x3", (x.requires_grad_(), w.requires_grad_(), s, d, tf)),
                ("depthwise3x3_dgrad", (grad, x.detach(), w.detach(), s, d, tf)),
                ("depthwise3x3_wgrad", (grad, x.detach(), w.detach(), s, d, tf)),
            ):
                try:
                    torch.library.opcheck(getattr(ops, name).default, args)
                    row[name] = None
                except Exception as exc:  # noqa: BLE001 - reported, the test asserts None
                    row[name] = repr(exc)[:500]
            out.append(row)
    return out


def dwconv_model_case():
    """One training step of a model with Triton depthwise layers, eager and under torch.compile (aot_eager: the
    op's fake and autograd registrations are traced), against the same model with PyTorch's convolutions."""
    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, dropout=0.0)  # Inductor draws dropout masks from its own RNG
    triton_model = copy.deepcopy(model)
    swapped = dwconv.use_depthwise(triton_model, "triton")
    # 20x18: a small non-square input whose last layers are still 2x2 (blocks 6-11) and 1x1 (12-13), as at
    # 32x32, with odd sizes (9, 5, 3) on the way; the interpreter's cost follows the first layers' pixels (a third of
    # 32x32's), and this case runs five training steps through it
    x = torch.randn(4, 3, 20, 18).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([1, 3, 0, 4])

    def grads(m, fn):
        m.zero_grad()
        loss = torch.nn.functional.cross_entropy(fn(x), labels)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in m.parameters()])

    ref_loss, ref_g = grads(model, model)
    loss, g = grads(triton_model, triton_model)
    compiled = torch.compile(triton_model, backend="aot_eager", fullgraph=True)
    c_loss, c_g = grads(triton_model, compiled)
    # Inductor, as training compiles (channels_last weights): it also asserts the ops' output sizes and strides
    triton_model.to(memory_format=torch.channels_last)
    i_loss, i_g = grads(triton_model, torch.compile(triton_model, backend="inductor", fullgraph=True))
    torch._dynamo.reset()
    triton_model.to(memory_format=torch.contiguous_format)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the layer reads the autocast state: traced, no graph break
        bf16_loss, _ = grads(triton_model, triton_model)
        bf16_c_loss, _ = grads(triton_model, torch.compile(triton_model, backend="aot_eager", fullgraph=True))
    return {
        "autocast_loss_diff": abs(bf16_loss - ref_loss),
        "autocast_compiled_loss_diff": abs(bf16_c_loss - bf16_loss),
        "swapped": swapped,
        "same_keys": list(model.state_dict()) == list(triton_model.state_dict()),
        "loss_diff": abs(loss - ref_loss),
        "grad_max_abs": (g - ref_g).abs().max().item(),
        "compiled_loss_diff": abs(c_loss - ref_loss),
        "compiled_grad_max_abs": (c_g - ref_g).abs().max().item(),
        "inductor_loss_diff": abs(i_loss - ref_loss),
        "inductor_grad_max_abs": (i_g - ref_g).abs().max().item(),
        "grad_scale": ref_g.abs().max().item(),
    }


def dwconv_hybrid_cases():
    """`dwconv.HybridDepthwiseConv2d` at stride 2 (Triton's `_dgrad_s2_kernel` for the input gradient, PyTorch's
    forward and weight gradient) against ``nn.Conv2d``'s autograd: PyTorch's padding and 'SAME' on even and odd sizes,
    fp32 and bf16 autocast, eager and compiled (Inductor, as training compiles); with the launches of each dgrad
    kernel counted."""
    torch.manual_seed(0)
    out = []
    with counted_launches("_dgrad_s2_kernel", "_dgrad_kernel") as launches:
        cases = [  # C, H, W, TensorFlow SAME, autocast, compiled
            (24, 10, 7, False, False, False),
            (8, 8, 8, True, False, False),  # SAME on an even size: pad (0, 1)
            (8, 7, 9, True, False, False),  # odd: (1, 1)
            (70, 9, 6, False, False, False),  # channels past one 64-wide block
            (32, 12, 10, False, True, False),
            (16, 10, 9, True, False, True),
        ]
        for c, h, w, tf, amp, compiled in cases:
            conv, x, ref_x, ref, grad, ref_gw = conv_reference(c, h, w, 2, 1, tf)
            layer = dwconv.HybridDepthwiseConv2d.from_conv(conv)
            run = torch.compile(layer, backend="inductor", fullgraph=True) if compiled else layer
            launches.update(dict.fromkeys(launches, 0))
            hx = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                y = run(hx)
            (y.float() * grad).sum().backward()
            out.append(
                {
                    "case": [c, h, w, tf, amp, compiled],
                    "same_class": isinstance(layer, Conv2dSame) == tf,
                    "y_dtype": str(y.dtype),
                    "y_max_abs": (y.float() - ref).abs().max().item(),
                    "dx_max_abs": (hx.grad.float() - ref_x.grad).abs().max().item(),
                    "dw_max_abs": (conv.weight.grad - ref_gw).abs().max().item(),
                    "scales": [ref.abs().max().item(), ref_x.grad.abs().max().item(), ref_gw.abs().max().item()],
                    "launches": dict(launches),
                }
            )
            torch._dynamo.reset()
    return out


def profile_labels_case():
    """The profiler ranges the raw Triton launches open while a profiler records (`kernels.on_device`): the keys of
    ``key_averages`` that name a Triton kernel, and whether any launch opened one with no profiler running."""
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    w, b = kernels.prepare_depthwise(torch.randn(8, 1, 3, 3)), torch.randn(8)
    stem_w, stem_b = kernels.prepare_stem(torch.randn(8, 3, 3, 3)), torch.randn(8)
    img = torch.randn(2, 3, 9, 9)

    def launch():
        kernels.depthwise(x, w, b, stride=2, block_m=16, block_c=8)
        kernels.depthwise_rows(x, w, b, rows=2, cols=4, block_c=8)
        kernels.stem(img, stem_w, stem_b, stride=2, block_m=16)

    launch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        launch()
    return {
        "labels": sorted({e.key for e in prof.key_averages() if e.key.startswith("triton::")}),
        "unprofiled_is_plain_device": type(kernels.on_device(x, "dw")).__name__ != "ExitStack",
    }


if __name__ == "__main__":
    json.dump(
        {
            "layers": layer_cases(),
            "stem": stem_cases(),
            "models": [model_case(False), model_case(True)],
            "dwconv": dwconv_cases(),
            "dwconv_model": dwconv_model_case(),
            "dwconv_partial_grad": dwconv_partial_grad_case(),
            "dwconv_opcheck": dwconv_opcheck_cases(),
            "dwconv_hybrid": dwconv_hybrid_cases(),
            "profile_labels": profile_labels_case(),
        },
        sys.stdout,
    )
