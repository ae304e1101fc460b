"""Two training-speed layers that keep PyTorch's kernels but call them differently, against PyTorch's convolution:
the flipped depthwise convolution (dwconv.FlippedDepthwiseConv2d, --depthwise flipped; its forward and both
gradients over every geometry are in tests/test_dwconv_taps.py, beside the taps') and the channel-padded stem
(layers.ChannelPaddedConv2d). Forward, both gradients, the ops their backward runs, autocast and torch.compile."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mobilenets import MobileNetV1, dwconv
from mobilenets.layers import ChannelPaddedConv2d, Conv2dSame, ConvBNAct, pad_input_channels
from tests.test_dwconv_taps import _grads


def _assert_same(pair_a, pair_b, rel: float) -> None:
    for a, b in zip(pair_a, pair_b, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= rel * b.abs().max(), (a - b).abs().max()


class _AtenLog(TorchDispatchMode):
    """The aten ops run under it, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def test_flipped_depthwise_input_gradient_is_a_forward_conv_with_the_rotated_kernel():
    """What the layer is for: at stride 1 its backward runs no input-gradient kernel of PyTorch's, but a forward
    convolution of the output gradient with the weight rotated by 180 degrees; the weight gradient alone comes from
    ``convolution_backward``. At stride 2 the layer is PyTorch's own, which computes both there."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    for stride in (1, 2):
        layer = dwconv.FlippedDepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 3, stride, 1, groups=4, bias=False))
        y = layer(x)
        with _AtenLog() as log:
            y.backward(torch.ones_like(y))
        convs = [args for func, args in log.calls if func is torch.ops.aten.convolution.default]
        backs = [args for func, args in log.calls if func is torch.ops.aten.convolution_backward.default]
        if stride == 1:
            assert len(convs) == 1 and torch.equal(convs[0][1], layer.weight.flip(-2, -1))
            assert len(backs) == 1 and list(backs[0][-1]) == [False, True, False]
        else:
            assert not convs and len(backs) == 1 and list(backs[0][-1])[:2] == [True, True]


def test_hybrid_depthwise_is_the_flipped_layer_where_triton_cannot_run():
    """Off CUDA (no TRITON_INTERPRET) a hybrid layer runs PyTorch's kernels as the flipped one does: at stride 2
    ``convolution_backward`` for both gradients, at stride 1 the rotated forward convolution; 'SAME' layers stay
    ``Conv2dSame``. Its Triton input gradient is checked in tests/test_kernels.py (interpreted)."""
    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, tf_padding=True, dropout=0.0)
    reference = copy.deepcopy(model)
    assert dwconv.use_depthwise(model, "hybrid") == 13
    kinds = [type(b.dw.conv) for b in model.blocks]
    assert kinds.count(dwconv.HybridDepthwiseConv2dSame) == 4 and kinds.count(dwconv.HybridDepthwiseConv2d) == 9
    x = torch.randn(2, 3, 40, 36)
    losses = []
    for m in (reference, model):
        with _AtenLog() as log:
            loss = m(x).square().mean()
            loss.backward()
        losses.append(loss.item())
    backs = [list(args[-1]) for func, args in log.calls if func is torch.ops.aten.convolution_backward.default]
    assert sum(mask[:2] == [True, True] for mask in backs) == 4 + 13  # stride-2 depthwise, pointwise (not the stem)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert (a.grad - b.grad).abs().max() <= 1e-4 * b.grad.abs().max() + 1e-7


def test_flipped_depthwise_computes_only_the_gradients_autograd_asks_for():
    layer = dwconv.FlippedDepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False))
    layer.weight.requires_grad_(False)  # frozen: no weight gradient
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    y = layer(x)
    with _AtenLog() as log:
        y.sum().backward()
    ops = [func for func, _args in log.calls]
    assert torch.ops.aten.convolution_backward.default not in ops and torch.ops.aten.convolution.default in ops
    layer.weight.requires_grad_(True)
    y = layer(torch.randn(1, 4, 5, 5))  # an input that needs no gradient (the first layer's images)
    with _AtenLog() as log:
        y.sum().backward()
    ops = [func for func, _args in log.calls]
    assert torch.ops.aten.convolution.default not in ops and torch.ops.aten.convolution_backward.default in ops
    assert layer.weight.grad is not None


def test_flipped_depthwise_under_bf16_autocast_computes_in_bf16_like_conv2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False)
    flipped = dwconv.FlippedDepthwiseConv2d.from_conv(copy.deepcopy(conv))
    x = torch.randn(2, 8, 7, 7)
    upstream = torch.randn(2, 8, 7, 7, dtype=torch.bfloat16)
    results = []
    for layer in (conv, flipped):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _grads(layer, x, upstream)
        assert out[0].dtype == torch.bfloat16
        results.append(out)
    _assert_same(results[1], results[0], 2e-2)  # bf16 sums in another order: a few bf16 ulps
    # its backward runs in bf16 too: the input gradient's forward conv takes the bf16 gradient and bf16 weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = flipped(x.clone().requires_grad_())
    with _AtenLog() as log:
        y.backward(upstream)
    convs = [args for func, args in log.calls if func is torch.ops.aten.convolution.default]
    assert len(convs) == 1 and convs[0][0].dtype == convs[0][1].dtype == torch.bfloat16


@pytest.mark.slow
def test_both_layers_compile_whole_and_train_like_pytorch_convs():
    """Under torch.compile (one graph: no break at the autograd.Function or at the padded stem's export checks), a
    stem and a depthwise-separable block with the padded stem and the flipped layer give the eager plain block's
    loss and gradients."""
    torch.manual_seed(0)
    block = nn.Sequential(ConvBNAct(3, 8, 3, stride=2), ConvBNAct(8, 8, 3, groups=8), ConvBNAct(8, 12, 1))
    block = block.to(memory_format=torch.channels_last)
    fast = copy.deepcopy(block)
    assert dwconv.use_depthwise(fast, "flipped") == 1
    fast[0].conv = pad_input_channels(fast[0].conv)
    x = torch.randn(2, 3, 18, 20).contiguous(memory_format=torch.channels_last)
    project = torch.randn(2, 12, 9, 10)  # a loss whose gradients do not cancel out (a BatchNorm's, under a square)
    torch._dynamo.reset()
    compiled = torch.compile(fast, fullgraph=True)
    results = []
    for m, run in ((block, block), (fast, compiled)):
        loss = (run(x) * project).mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    (l0, g0), (l1, g1) = results
    assert abs(l0 - l1) <= 1e-5 * abs(l0)
    scale = max(b.abs().max() for b in g0)  # fp32 sums reordered (Inductor, 8 channels): relative to the whole step
    for a, b in zip(g1, g0, strict=True):
        assert (a - b).abs().max() <= 1e-3 * b.abs().max() + 1e-5 * scale


@pytest.mark.parametrize("tf_same", [False, True])
@pytest.mark.parametrize("size", [(11, 10), (8, 9)])
def test_channel_padded_conv_matches_conv2d_forward_and_both_gradients(tf_same, size):
    torch.manual_seed(0)
    kind = Conv2dSame if tf_same else nn.Conv2d
    conv = kind(3, 8, 3, 2, 0 if tf_same else 1, bias=False).double()
    padded = pad_input_channels(copy.deepcopy(conv))
    assert isinstance(padded, ChannelPaddedConv2d) and isinstance(padded, Conv2dSame) == tf_same
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(conv(x))
    _assert_same(_grads(padded, x, upstream), _grads(conv, x, upstream), 1e-12)
    with _AtenLog() as log:
        padded(x)
    conv_inputs = [args[0] for func, args in log.calls if func is torch.ops.aten.convolution.default]
    assert [t.shape[1] for t in conv_inputs] == [ChannelPaddedConv2d.CHANNEL_MULTIPLE]  # the conv sees 8 channels


def test_channel_padded_stem_keeps_the_parameter_and_the_model_output():
    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, tf_padding=True).eval()
    swapped = copy.deepcopy(model)
    weight = swapped.stem.conv.weight
    swapped.stem.conv = pad_input_channels(swapped.stem.conv)
    assert swapped.stem.conv.weight is weight and not swapped.stem.conv.training
    assert pad_input_channels(swapped.stem.conv) is swapped.stem.conv
    assert list(swapped.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 67, 50)
    assert torch.allclose(swapped(x), model(x), atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16), _AtenLog() as log:
        swapped.stem.conv(x)
    pads = [args[0] for func, args in log.calls if func is torch.ops.aten.constant_pad_nd.default]
    assert pads[-1].dtype == torch.bfloat16  # cast before the copy is padded: half the bytes
    with pytest.raises(ValueError, match="is not a dense nn.Conv2d"):
        pad_input_channels(nn.Conv2d(4, 4, 3, groups=4))


@pytest.mark.parametrize("tf_padding", [False, True])
def test_a_model_with_a_padded_stem_exports_and_traces_as_the_plain_one(tmp_path, tf_padding):
    """The padding is for cuDNN: exported to ONNX (the model a run just trained, BN folded or not) or traced by
    torch.fx, the stem is the plain convolution, and ONNX Runtime gives the model's logits."""
    import onnxruntime as ort

    from mobilenets.export import export_onnx

    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, resolution=64, tf_padding=tf_padding).eval()
    model.stem.conv = pad_input_channels(model.stem.conv)
    x = torch.randn(2, 3, 64, 64)
    path = export_onnx(model, tmp_path / "m.onnx", resolution=64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert torch.allclose(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)
    traced = torch.fx.symbolic_trace(model)
    assert torch.allclose(traced(x), model(x), atol=1e-6)


def test_channel_padded_conv_leaves_a_multiple_of_eight_alone():
    conv = pad_input_channels(nn.Conv2d(8, 4, 1, bias=True))
    x = torch.randn(1, 8, 3, 3)
    with _AtenLog() as log:
        y = conv(x)
    assert torch.ops.aten.constant_pad_nd.default not in [func for func, _args in log.calls]
    assert torch.allclose(y, F.conv2d(x, conv.weight, conv.bias))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl,stride", [("flipped", 1), ("hybrid", 2)])
def test_on_cuda_both_layers_are_as_close_to_fp32_as_cudnns_own_in_bf16_channels_last(impl, stride):
    """What they run for: the GPU's bf16 channels_last training step. A separable block with the flipped depthwise
    layer (or, at stride 2, the hybrid one: Triton's input gradient, whose error reaches the stem's gradients) and a
    padded stem is, gradient by gradient, no further from the fp32 step than cuDNN's own block in bf16 (twice its
    error, plus 1% of the gradient's size): a wrong tap or channel is off by the gradient itself. Compared with each
    other instead, the two bf16 blocks missed by 25% on a BatchNorm's near-zero gradients (H200 lease)."""
    torch.manual_seed(0)
    dw = ConvBNAct(32, 32, 3, stride=stride, groups=32)
    net = nn.Sequential(ConvBNAct(3, 32, 3, stride=2), dw, ConvBNAct(32, 64, 1))
    net = net.cuda().to(memory_format=torch.channels_last)
    fast = copy.deepcopy(net)
    assert dwconv.use_depthwise(fast, impl) == 1
    fast[0].conv = pad_input_channels(fast[0].conv)
    x = torch.randn(16, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    project = torch.randn(16, 64, 32 // stride, 32 // stride, device="cuda")  # a gradient that does not cancel out

    def grads(m, bf16: bool):
        m.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = (m(x).float() * project).mean()
        loss.backward()
        return [p.grad.float().clone() for p in m.parameters()]

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        reference = grads(copy.deepcopy(net), bf16=False)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    for ref, theirs, ours in zip(reference, grads(net, True), grads(fast, True), strict=True):
        err_theirs, err_ours = ((g - ref).abs().max().item() for g in (theirs, ours))
        assert err_ours <= 2 * err_theirs + 1e-2 * ref.abs().max().item(), (err_ours, err_theirs)
