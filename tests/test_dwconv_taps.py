"""The taps depthwise convolution (dwconv.depthwise3x3_taps, --depthwise taps) against PyTorch's convolution:
forward, both gradients, every geometry MobileNet uses, bf16 rounding, swapping, and Inductor's fusion of it."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets import MobileNetV1, dwconv
from mobilenets.layers import Conv2dSame, ConvBNAct
from mobilenets.train_config import DEPTHWISE


def _grads(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    y = layer(x)
    y.backward(upstream)
    return y.detach(), x.grad, layer.weight.grad.clone()


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("size", [(9, 12), (8, 7)])
@pytest.mark.parametrize("tf_same", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kind", [dwconv.TapsDepthwiseConv2d, dwconv.FlippedDepthwiseConv2d])
def test_swapped_depthwise_matches_conv2d_forward_and_both_gradients(stride, dilation, size, tf_same, layout, kind):
    """The taps, and the flipped layer (tests/test_train_speed_layers.py), against PyTorch's convolution in float64:
    the nine-term sums in another order, nothing else."""
    torch.manual_seed(0)
    plain = Conv2dSame if tf_same else nn.Conv2d
    pad = 0 if tf_same else dilation
    ref = plain(6, 6, 3, stride, pad, dilation, groups=6, bias=False).double()
    swapped = kind.from_conv(copy.deepcopy(ref))
    assert isinstance(swapped, Conv2dSame) == tf_same
    x = torch.randn(3, 6, *size, dtype=torch.float64).contiguous(memory_format=layout)
    y_ref = ref(x)
    upstream = torch.randn_like(y_ref)
    y0, dx0, dw0 = _grads(ref, x, upstream)
    y1, dx1, dw1 = _grads(swapped, x, upstream)
    assert y1.shape == y0.shape
    for a, b in ((y1, y0), (dx1, dx0), (dw1, dw0)):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max(), (a - b).abs().max()


def test_taps_under_bf16_autocast_accumulate_in_fp32_and_round_once():
    """The products take the fp32 weight, so each output is its exact sum rounded once to bf16 (within one bf16 ulp,
    2^-8 of its value): rounding the weights or the partial sums to bf16 would miss by more where taps cancel."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False)
    taps = dwconv.TapsDepthwiseConv2d.from_conv(conv)
    x = torch.randn(4, 32, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = taps(x)
    assert y.dtype == torch.bfloat16
    exact = F.conv2d(x.bfloat16().double(), conv.weight.double(), padding=1, groups=32)
    err = (y.double() - exact).abs()
    assert (err <= 2**-8 * exact.abs() + 1e-30).all(), err.max()
    # the same inputs through bf16 weights and bf16 sums: the check above tells them apart
    xp, w = F.pad(x.bfloat16(), (1, 1, 1, 1)), conv.weight.bfloat16()
    naive = sum(xp[:, :, i : i + 10, j : j + 10] * w[:, 0, i, j].view(1, -1, 1, 1) for i in range(3) for j in range(3))
    assert not ((naive.double() - exact).abs() <= 2**-8 * exact.abs() + 1e-30).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_taps_save_only_the_input_and_the_weight_for_backward(stride):
    """No padded copy of the input: every activation autograd keeps is a view of ``x`` itself (the products are
    padded, not the input), so the layer adds no activation memory of its own to training."""
    conv = nn.Conv2d(8, 8, 3, stride, 1, groups=8, bias=False)
    taps = dwconv.TapsDepthwiseConv2d.from_conv(conv)
    x = torch.randn(2, 8, 9, 10, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        taps(x)
    big = [t for t in saved if t.dim() == 4 and t.shape[0] == 2]
    assert big and all(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in big)
    assert all(t.numel() <= x.numel() for t in saved)


def test_taps_refuse_mixed_dtypes_outside_autocast_as_conv2d_does():
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False)
    taps = dwconv.TapsDepthwiseConv2d.from_conv(conv)
    x = torch.randn(1, 4, 5, 5, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):
        conv(x)
    with pytest.raises(RuntimeError, match="input dtype torch.bfloat16 is not the weight's torch.float32"):
        taps(x)


def test_use_depthwise_swaps_every_layer_keeps_the_weights_and_swaps_back():
    torch.manual_seed(0)
    assert tuple(dwconv.IMPLEMENTATIONS) == DEPTHWISE  # the config's choices are the implementations
    model = MobileNetV1(alpha=0.25, num_classes=5, tf_padding=True).eval()
    swapped = copy.deepcopy(model)
    assert dwconv.use_depthwise(swapped, "taps") == 13
    assert dwconv.use_depthwise(swapped, "taps") == 0  # already swapped
    assert all(isinstance(b.dw.conv, dwconv.TapsDepthwiseConv2d) for b in swapped.blocks)
    same = [isinstance(b.dw.conv, Conv2dSame) for b in swapped.blocks]
    assert same == [isinstance(b.dw.conv, Conv2dSame) for b in model.blocks] and sum(same) == 4
    assert list(swapped.state_dict()) == list(model.state_dict())
    assert not any(m.training for m in swapped.modules())  # swapped after .eval(): still all in eval mode
    x = torch.randn(2, 3, 67, 50)  # odd and even sizes: TF 'SAME' pads asymmetrically
    assert torch.allclose(swapped(x), model(x), atol=1e-5, rtol=1e-4)
    # from taps to Triton is one swap; "conv" puts PyTorch's own layers back, 'SAME' ones as Conv2dSame; every swap
    # keeps the parameter itself (an optimizer built before it still updates the layer)
    weights = [b.dw.conv.weight for b in swapped.blocks]
    assert dwconv.use_depthwise(swapped, "triton") == 13
    assert dwconv.use_depthwise(swapped, "conv") == 13
    assert [type(b.dw.conv) for b in swapped.blocks] == [type(b.dw.conv) for b in model.blocks]
    assert all(b.dw.conv.weight is w for b, w in zip(swapped.blocks, weights, strict=True))
    # swapping draws nothing from the global random stream (a run's labels and augmentation stay the same)
    torch.manual_seed(1)
    dwconv.use_depthwise(swapped, "taps")
    after_swap = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_swap)
    with pytest.raises(ValueError, match="depthwise='cudnn' is not allowed"):
        dwconv.use_depthwise(swapped, "cudnn")
    reflect = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False, padding_mode="reflect"))
    assert dwconv.use_depthwise(reflect, "taps") == 0  # zero padding only: another mode is left to PyTorch


def test_taps_model_trains_like_pytorch_convs():
    """One fp32 training forward/backward (batch statistics) from the same weights: the same loss and gradients."""
    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, dropout=0.0)
    taps = copy.deepcopy(model)
    dwconv.use_depthwise(taps, "taps")
    x = torch.randn(4, 3, 40, 33).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([1, 3, 0, 4])
    losses, grads = [], []
    for m in (model, taps):
        loss = F.cross_entropy(m(x), labels)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert abs(losses[0] - losses[1]) <= 1e-5
    # fp32 sums in another order, through BatchNorm over 4 images at 2x2 in the last layers
    assert (grads[1] - grads[0]).abs().max() <= 1e-3 * grads[0].abs().max()


def _conv_calls(code: str) -> int:
    return len(re.findall(r"\b(?:aten\.)?convolution(?:_backward)?\.default\(|extern_kernels\.convolution\(", code))


@pytest.mark.slow
def test_inductor_fuses_the_taps_so_only_the_pointwise_conv_calls_out():
    """Why the option exists: compiled, a depthwise-separable block with taps calls PyTorch's convolution only for
    its 1x1 layer (forward and backward), where the conv block calls it for both; its loss and gradients match."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    block = nn.Sequential(ConvBNAct(16, 16, 3, stride=2, groups=16), ConvBNAct(16, 24, 1))
    block = block.to(memory_format=torch.channels_last)
    taps = copy.deepcopy(block)
    assert dwconv.use_depthwise(taps, "taps") == 1
    x = torch.randn(2, 16, 11, 14).contiguous(memory_format=torch.channels_last)
    results = {}
    for name, m in (("conv", block), ("taps", taps)):
        torch._dynamo.reset()
        compiled = torch.compile(m)

        def step(m=m, compiled=compiled):
            m.zero_grad()
            loss = compiled(x).square().mean()
            loss.backward()
            return loss.detach()

        loss, codes = run_and_get_code(step)
        calls = sum(_conv_calls(code) for code in codes)
        grads = [p.grad.clone() for p in m.parameters()]
        results[name] = (loss, calls, grads)
    (l0, calls0, g0), (l1, calls1, g1) = results["conv"], results["taps"]
    assert calls0 == 4 and calls1 == 2, (calls0, calls1)  # forward + backward per conv layer calling out
    assert abs(l0 - l1) <= 1e-5 * abs(l0)
    for a, b in zip(g1, g0, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
