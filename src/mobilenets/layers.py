"""Building blocks: Conv-BN-activation, the depthwise separable layer (paper Section 3.1, Figure 3), BN folding.

TensorFlow "SAME" padding for strided layers follows TF's definition (pad total = max((ceil(n/s)-1)*s + k - n, 0),
the smaller half on top/left), as timm's ``Conv2dSame`` does; it is needed to run imported TF-slim/Keras/TFLite
weights exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"act={name!r} is not allowed: act must be one of 'relu', 'relu6'")


def same_pad_amount(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


# A leaf for torch.fx (symbolic_trace, torchvision's create_feature_extractor): its `max` on the traced input size
# would be control flow on a Proxy; wrapped, the padding is computed when the traced graph runs (timm marks its
# pad_same the same way).
torch.fx.wrap("same_pad_amount")


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (asymmetric for even sizes, stride 2)."""

    def same_pads(self, x: torch.Tensor) -> list[int]:
        """``F.pad``'s [left, right, top, bottom] for ``x``."""
        ph = same_pad_amount(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = same_pad_amount(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return [pw[0], pw[1], ph[0], ph[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.same_pads(x))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype of its device where autocast is on (what a conv computes in there), else as is:
    for layers that call their own ops, cast once before any copy they make."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


class ChannelPaddedConv2d(nn.Conv2d):
    """A dense ``nn.Conv2d`` (groups 1) that zero-pads its input channels, and its weight along them, to a multiple
    of `CHANNEL_MULTIPLE` before convolving: the same sums (the added channels are zero in both), and the same
    parameter (its gradient is the padded weight's, cut back). Meant for the stem's 3 RGB channels, for which
    cuDNN's channels_last kernels are not its tensor-core ones: the stem's forward and weight gradient took 0.96 ms
    of a 16.5 ms training step on the H200 (results/logs-h200-2026-11-27-lease3/call3-b-train.json).

    `ChannelPaddedConv2dSame` replaces a `Conv2dSame`. Under autocast the input is cast to the autocast dtype before
    it is padded (`autocast_input`: the copy is then half the size); the conv casts the weight as autocast does.
    Exported to ONNX, or traced by torch.jit or torch.fx, it is the plain conv: an exporter needs a weight of known
    shape, and the padding is for cuDNN."""

    CHANNEL_MULTIPLE = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = -self.in_channels % self.CHANNEL_MULTIPLE
        plain = Conv2dSame.forward if isinstance(self, Conv2dSame) else nn.Conv2d.forward
        if extra == 0 or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy):
            return plain(self, x)
        x = autocast_input(x)
        weight = F.pad(self.weight, [0, 0, 0, 0, 0, extra])
        if isinstance(self, Conv2dSame):
            x, padding = F.pad(x, [*self.same_pads(x), 0, extra]), 0
        else:
            x, padding = F.pad(x, [0, 0, 0, 0, 0, extra]), self.padding
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation)


class ChannelPaddedConv2dSame(ChannelPaddedConv2d, Conv2dSame):
    """`ChannelPaddedConv2d` with TensorFlow 'SAME' padding (an instance of `Conv2dSame`)."""


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A first conv's weight (out, C, kh, kw) for ``in_chans`` input channels, as timm's ``adapt_input_conv`` (what
    ``timm.create_model(..., pretrained=True, in_chans=N)`` does): for one channel the sum over the C (an image's
    gray value then meets the filter as it met that value on every channel), else the channels repeated in turn and
    scaled by C / in_chans (the response to a channel repeated keeps its size). Pair with `spec.per_channel`'s
    mean and std."""
    channels = weight.shape[1]
    if in_chans == channels:
        return weight
    w = weight.float()
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True).to(weight.dtype)
    w = w.repeat(1, -(-in_chans // channels), 1, 1)[:, :in_chans] * (channels / in_chans)
    return w.to(weight.dtype)


def pad_stem(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its stem's input channels zero-padded (`pad_input_channels` on ``model.stem.conv``):
    ``--pad-stem``."""
    model.stem.conv = pad_input_channels(model.stem.conv)
    return model


def pad_input_channels(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` as a `ChannelPaddedConv2d` (or its 'SAME' twin) sharing its parameters and train/eval mode; ``conv``
    itself when it is one already. Only a plain dense conv with zero padding is swapped."""
    if isinstance(conv, ChannelPaddedConv2d):
        return conv
    if type(conv) not in (nn.Conv2d, Conv2dSame) or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"{conv} is not a dense nn.Conv2d with zero padding: its input channels are not padded")
    kind = ChannelPaddedConv2dSame if isinstance(conv, Conv2dSame) else ChannelPaddedConv2d
    new = kind(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
               bias=conv.bias is not None, device="meta", dtype=conv.weight.dtype)  # fmt: skip
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new.train(conv.training)


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation: every layer of the paper's Table 1 but the classifier."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: str = "relu",
        tf_padding: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        if tf_padding and stride > 1:
            conv: nn.Conv2d = Conv2dSame(in_ch, out_ch, kernel, stride, 0, dilation, groups, bias=False)
        else:
            pad = (kernel - 1) // 2 * dilation
            conv = nn.Conv2d(in_ch, out_ch, kernel, stride, pad, dilation, groups, bias=False)
        super().__init__()
        self.conv = conv
        self.bn: nn.Module = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.act = make_act(act)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act (paper Figure 3, right)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        stride: int,
        dilation: int = 1,
        depth_multiplier: int = 1,
        act: str = "relu",
        tf_padding: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        mid = in_ch * depth_multiplier
        common = dict(act=act, tf_padding=tf_padding, bn_eps=bn_eps)
        self.dw = ConvBNAct(in_ch, mid, 3, stride=stride, dilation=dilation, groups=in_ch, **common)
        self.pw = ConvBNAct(mid, out_ch, 1, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def fold_bn(module: nn.Module) -> nn.Module:
    """Return a copy of ``module`` (in eval mode) with every ConvBNAct's BatchNorm folded into its conv.

    Folding: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
    """
    folded = copy.deepcopy(module).eval()
    for sub in folded.modules():
        if isinstance(sub, ConvBNAct) and isinstance(sub.bn, nn.BatchNorm2d):
            sub.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(sub.conv, sub.bn)
            sub.bn = nn.Identity()
    return folded
