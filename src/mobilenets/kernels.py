"""Triton kernels for MobileNet's layers (paper Table 1 and Figure 3) on NHWC (channels_last) tensors.

``depthwise_separable`` computes, in one kernel, 3x3 depthwise conv + bias + act followed by the 1x1 pointwise conv
+ bias + act: the depthwise output tile lives in registers and feeds the pointwise GEMM (``tl.dot``) directly, so
it never makes the round trip to GPU memory that two separate convolutions need (the layer's input is read and its
output written once). ``stem`` computes the first layer (Table 1: Conv / s2, 3x3x3x32) + bias + act in one kernel
that reads the image in any layout and float dtype, so casting it to the layer's dtype and to channels_last costs no
pass of its own. BatchNorm must already be folded into the weights (``MobileNetV1.fuse()``).

Every kernel has a PyTorch reference (``*_reference``) with identical semantics; the kernels are checked against it
on CPU with ``TRITON_INTERPRET=1`` (tests/test_kernels.py), so CI verifies their numerics without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from .layers import same_pad_amount

try:  # Triton is optional: absent on CPU-only installs, present with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None
    tl = None

ACT_CODES = {"none": 0, "relu": 1, "relu6": 2}  # "none": the plain convolution (dwconv.py, training)
# Under TRITON_INTERPRET=1 (CPU numerics checks) low-precision tl.dot is not emulated correctly; products of bf16/fp16
# values are exact in fp32, so the kernel then multiplies in fp32 after rounding to the layer's dtype: same result.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    return triton is not None


def runs_on(device: torch.device | str) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA with triton installed, or any device under
    ``TRITON_INTERPRET=1`` (the CPU numerics checks)."""
    return triton_available() and (torch.device(device).type == "cuda" or INTERPRET)


def on_device(x: torch.Tensor, kernel: str | None = None):
    """Triton launches on the current CUDA device: make it ``x``'s for the launches in this context.

    While a profiler records, ``kernel`` also names the launch as a profiler range (``triton::<kernel> [N, C, H,
    W]``): a kernel launched straight from Python has no ATen op around it, so per-op tables (``key_averages``)
    would otherwise count its GPU time under no op at all."""
    device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
    if kernel is None or not torch.autograd._profiler_enabled():
        return device
    stack = contextlib.ExitStack()
    stack.enter_context(device)
    stack.enter_context(torch.profiler.record_function(f"triton::{kernel} {list(x.shape)}"))
    return stack


def _act(x: torch.Tensor, act: str) -> torch.Tensor:
    return x if act == "none" else F.relu6(x) if act == "relu6" else F.relu(x)


def depthwise_separable_reference(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor,
    *,
    stride: int,
    dilation: int = 1,
    pad: tuple[int, int, int, int] | None = None,
    act: str = "relu",
) -> torch.Tensor:
    """The same computation with PyTorch ops. Weights in PyTorch layout: dw (C,1,3,3), pw (Cout,C,1,1).

    ``pad`` = (left, right, top, bottom); default symmetric ``dilation`` (PyTorch padding of a 3x3 conv).
    """
    pad = pad or (dilation,) * 4
    y = F.conv2d(F.pad(x, list(pad)), dw_weight, dw_bias, stride, 0, dilation, groups=x.shape[1])
    return _act(F.conv2d(_act(y, act), pw_weight, pw_bias), act)


def stem_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    stride: int,
    pad: tuple[int, int, int, int] | None = None,
    act: str = "relu",
) -> torch.Tensor:
    """`stem` with PyTorch ops: ``x`` cast to the weights' dtype, the full 3x3 conv (weight (Cout, Cin, 3, 3)) + bias,
    then act. ``pad`` = (left, right, top, bottom); default 1 on every side (PyTorch padding of a 3x3 conv)."""
    x = x.to(weight.dtype)
    return _act(F.conv2d(F.pad(x, list(pad or (1, 1, 1, 1))), weight, bias, stride), act)


if triton is not None:

    @triton.jit
    def _activate(acc, ACT: tl.constexpr):
        """`ACT_CODES`: 0 none, 1 ReLU, 2 ReLU6 (inlined into each kernel)."""
        if ACT >= 1:
            acc = tl.maximum(acc, 0.0)
        if ACT == 2:
            acc = tl.minimum(acc, 6.0)
        return acc

    @triton.jit
    def _depthwise_tile(
        x_ptr,
        w_ptr,
        b_ptr,
        n,
        oh,
        ow,
        m_mask,
        c,
        c_mask,
        H,
        W,
        C,
        PAD_T,
        PAD_L,
        STRIDE: tl.constexpr,
        DIL: tl.constexpr,
        ACT: tl.constexpr,
        BM: tl.constexpr,
        BC: tl.constexpr,
    ):
        """act(3x3 depthwise conv + bias) for BM output pixels x BC channels, in fp32 registers."""
        acc = tl.zeros((BM, BC), dtype=tl.float32)
        for i in tl.static_range(3):
            ih = oh * STRIDE - PAD_T + i * DIL
            for j in tl.static_range(3):
                iw = ow * STRIDE - PAD_L + j * DIL
                valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                base = ((n * H + ih) * W + iw).to(tl.int64) * C
                xv = tl.load(x_ptr + base[:, None] + c[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
                wv = tl.load(w_ptr + (i * 3 + j) * C + c, mask=c_mask, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        acc += tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        return _activate(acc, ACT)

    # The sizes change with every resolution; not specialising on their divisibility by 16 keeps one compiled kernel
    # per (stride, dilation, activation, block) for all of them (C stays specialised: it decides vector loads).
    _GEOMETRY_ARGS = ["M", "H", "W", "OH", "OW", "PAD_T", "PAD_L"]

    @triton.jit(do_not_specialize=_GEOMETRY_ARGS)
    def _dw_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        M,
        H,
        W,
        C,
        OH,
        OW,
        PAD_T,
        PAD_L,
        STRIDE: tl.constexpr,
        DIL: tl.constexpr,
        ACT: tl.constexpr,
        BM: tl.constexpr,
        BC: tl.constexpr,
        TW: tl.constexpr,
    ):
        """act(3x3 depthwise conv + bias) of BM output pixels x BC channels per program. TW = 0: the pixels are BM
        consecutive ones in (n, oh, ow) order, often less than one row, so the taps of the rows above and below
        load values another program loads too; TW > 0: a (BM // TW) x TW block of one image, whose rows share input
        rows, so more of the nine taps' loads find their values in the SM's L1 cache."""
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        c_mask = c < C
        if TW == 0:
            m = tl.program_id(0) * BM + tl.arange(0, BM)
            m_mask = m < M
            ow, rest = m % OW, m // OW
            oh, n = rest % OH, rest // OH
        else:
            col_blocks = tl.cdiv(OW, TW)
            row_blocks = tl.cdiv(OH, BM // TW)
            pid = tl.program_id(0)
            rest = pid // col_blocks
            p = tl.arange(0, BM)
            oh = (rest % row_blocks) * (BM // TW) + p // TW
            ow = (pid % col_blocks) * TW + p % TW
            n = rest // row_blocks
            m_mask = (oh < OH) & (ow < OW)
            m = (n * OH + oh) * OW + ow
        acc = _depthwise_tile(
            x_ptr, w_ptr, b_ptr, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, STRIDE, DIL, ACT, BM, BC
        )
        out = y_ptr + m.to(tl.int64)[:, None] * C + c[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & c_mask[None, :])

    @triton.jit(do_not_specialize=["H", "W", "OH", "OW", "PAD_T", "PAD_L"])
    def _dw_rows_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        H,
        W,
        C,
        OH,
        OW,
        PAD_T,
        PAD_L,
        ACT: tl.constexpr,
        TH: tl.constexpr,
        TW: tl.constexpr,
        BC: tl.constexpr,
    ):
        """Stride-1 3x3 depthwise conv + bias + act over TH output rows x TW columns x BC channels, walking down the
        TH + 2 input rows once: each input row is loaded at its 3 column shifts and added into the 3 output rows it
        feeds (3 (TH + 2) / TH loads per output instead of `_dw_kernel`'s 9)."""
        pid = tl.program_id(0)
        col_blocks = tl.cdiv(OW, TW)
        row_blocks = tl.cdiv(OH, TH)
        cb = pid % col_blocks
        rest = pid // col_blocks
        oh0 = (rest % row_blocks) * TH
        n = rest // row_blocks
        ow = cb * TW + tl.arange(0, TW)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        c_mask = c < C
        ow_mask = ow < OW
        w00 = tl.load(w_ptr + 0 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w01 = tl.load(w_ptr + 1 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w02 = tl.load(w_ptr + 2 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w10 = tl.load(w_ptr + 3 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w11 = tl.load(w_ptr + 4 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w12 = tl.load(w_ptr + 5 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w20 = tl.load(w_ptr + 6 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w21 = tl.load(w_ptr + 7 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        w22 = tl.load(w_ptr + 8 * C + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        bias = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
        iw0, iw1, iw2 = ow - PAD_L, ow - PAD_L + 1, ow - PAD_L + 2
        m0 = ow_mask & (iw0 >= 0) & (iw0 < W)
        m1 = ow_mask & (iw1 >= 0) & (iw1 < W)
        m2 = ow_mask & (iw2 >= 0) & (iw2 < W)
        older = tl.zeros((TW, BC), dtype=tl.float32)  # output row oh0 + t - 2 (complete after this input row)
        newer = tl.zeros((TW, BC), dtype=tl.float32)  # output row oh0 + t - 1
        for t in range(TH + 2):  # input row oh0 - PAD_T + t feeds output rows oh0 + t - 2, - 1 and + 0
            ih = oh0 - PAD_T + t
            row_ok = (ih >= 0) & (ih < H)
            base = x_ptr + ((n * H + ih) * W).to(tl.int64) * C + c[None, :]
            cm = c_mask[None, :] & row_ok
            x0 = tl.load(base + (iw0.to(tl.int64) * C)[:, None], mask=m0[:, None] & cm, other=0.0).to(tl.float32)
            x1 = tl.load(base + (iw1.to(tl.int64) * C)[:, None], mask=m1[:, None] & cm, other=0.0).to(tl.float32)
            x2 = tl.load(base + (iw2.to(tl.int64) * C)[:, None], mask=m2[:, None] & cm, other=0.0).to(tl.float32)
            done = older + x0 * w20 + x1 * w21 + x2 * w22
            older = newer + x0 * w10 + x1 * w11 + x2 * w12
            newer = x0 * w00 + x1 * w01 + x2 * w02
            oh = oh0 + t - 2
            if t >= 2:
                out = _activate(done + bias, ACT)
                ok = ow_mask[:, None] & c_mask[None, :] & (oh < OH)
                dst = y_ptr + (((n * OH + oh) * OW).to(tl.int64) + ow)[:, None] * C + c[None, :]
                tl.store(dst, out.to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _dwpw_kernel(
        x_ptr,
        wdw_ptr,
        bdw_ptr,
        wpw_ptr,
        bpw_ptr,
        y_ptr,
        M,
        H,
        W,
        C,
        COUT,
        OH,
        OW,
        PAD_T,
        PAD_L,
        STRIDE: tl.constexpr,
        DIL: tl.constexpr,
        ACT: tl.constexpr,
        IEEE: tl.constexpr,
        BM: tl.constexpr,
        BK: tl.constexpr,
        BN: tl.constexpr,
    ):
        m = tl.program_id(0) * BM + tl.arange(0, BM)
        o = tl.program_id(1) * BN + tl.arange(0, BN)
        m_mask, o_mask = m < M, o < COUT
        ow, rest = m % OW, m // OW
        oh, n = rest % OH, rest // OH
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, C, BK):
            c = k0 + tl.arange(0, BK)
            c_mask = c < C
            dw = _depthwise_tile(
                x_ptr, wdw_ptr, bdw_ptr, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, STRIDE, DIL, ACT, BM, BK
            )
            wpw = tl.load(wpw_ptr + c[:, None] * COUT + o[None, :], mask=c_mask[:, None] & o_mask[None, :], other=0.0)
            dwq = dw.to(wpw.dtype)  # the depthwise tile at the layer's precision, as a separate conv would store it
            if IEEE:  # fp32 layers, or the CPU interpreter (whose bf16 dot is broken): exact fp32 products
                acc += tl.dot(dwq.to(tl.float32), wpw.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(dwq, wpw)
        acc = _activate(acc + tl.load(bpw_ptr + o, mask=o_mask, other=0.0).to(tl.float32)[None, :], ACT)
        out = y_ptr + m.to(tl.int64)[:, None] * COUT + o[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & o_mask[None, :])

    @triton.jit(do_not_specialize=[*_GEOMETRY_ARGS, "SN", "SC", "SH", "SW"])
    def _stem_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        M,
        H,
        W,
        OH,
        OW,
        PAD_T,
        PAD_L,
        SN,
        SC,
        SH,
        SW,
        COUT,
        CIN: tl.constexpr,
        STRIDE: tl.constexpr,
        ACT: tl.constexpr,
        BM: tl.constexpr,
        BN: tl.constexpr,
        BK: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        """act(3x3 conv + bias) for BM output pixels x all COUT channels as one small GEMM: the pixels' im2col tile
        (BM, CIN * 9 padded to BK), each value rounded to the layer's dtype as it is loaded (as a cast before the
        conv would), times the (CIN * 9, COUT) weights, accumulated in fp32 (``tl.dot``: tensor cores in bf16/fp16).
        A first version made the same products as CIN * 9 outer products on the CUDA cores: 0.32 ms of the Triton
        path's 2.65 ms per batch of 256 on the H200 (2026-11-27), about 4x the time its memory traffic needs."""
        m = tl.program_id(0) * BM + tl.arange(0, BM)
        o = tl.arange(0, BN)
        k = tl.arange(0, BK)  # the weights' row: (ci * 3 + i) * 3 + j, `prepare_stem`
        m_mask, o_mask, k_mask = m < M, o < COUT, k < CIN * 9
        ow, rest = m % OW, m // OW
        oh, n = rest % OH, rest // OH
        ci, i, j = k // 9, (k % 9) // 3, k % 3
        ih = (oh * STRIDE - PAD_T)[:, None] + i[None, :]
        iw = (ow * STRIDE - PAD_L)[:, None] + j[None, :]
        valid = m_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        # a pixel's window corner in int64 (batch offsets pass 2^31), each tap's offset from it in int32
        corner = n.to(tl.int64) * SN + (oh * STRIDE - PAD_T).to(tl.int64) * SH + (ow * STRIDE - PAD_L).to(tl.int64) * SW
        tap = ci * SC + i * SH + j * SW
        a = tl.load(x_ptr + corner[:, None] + tap[None, :], mask=valid, other=0.0).to(y_ptr.dtype.element_ty)
        w = tl.load(w_ptr + k[:, None] * COUT + o[None, :], mask=k_mask[:, None] & o_mask[None, :], other=0.0)
        if IEEE:  # noqa: SIM108 - fp32 layers, or the CPU interpreter (whose bf16 dot is broken): exact products
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            acc = tl.dot(a, w)
        acc = _activate(acc + tl.load(b_ptr + o, mask=o_mask, other=0.0).to(tl.float32)[None, :], ACT)
        out = y_ptr + m.to(tl.int64)[:, None] * COUT + o[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & o_mask[None, :])


def _check(x: torch.Tensor, need_triton: bool = True) -> None:
    if need_triton and triton is None:
        raise RuntimeError("triton is not installed: use the *_reference functions or the torch runtime")
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"expected a 4-d channels_last tensor, got shape {tuple(x.shape)} with strides {x.stride()}")


def same_pad(x: torch.Tensor, stride: int, dilation: int, tf_same: bool) -> tuple[int, int, int, int] | None:
    """The kernels' ``pad`` for a 3x3 conv on ``x``: TensorFlow 'SAME' (left, right, top, bottom) from the input size
    (`layers.Conv2dSame`), or None for PyTorch's symmetric ``dilation``."""
    if not tf_same:
        return None
    top, bottom = same_pad_amount(x.shape[-2], 3, stride, dilation)
    left, right = same_pad_amount(x.shape[-1], 3, stride, dilation)
    return left, right, top, bottom


def geometry(x: torch.Tensor, stride: int, pad: tuple[int, int, int, int] | None, dilation: int):
    """(n, h, w, out h, out w, pad top, pad left) of a 3x3 conv on ``x`` with the kernels' ``pad``."""
    n, _, h, w = x.shape
    left, _right, top, _bottom = pad or (dilation,) * 4
    oh, ow = -(-h // stride), -(-w // stride)  # 'same' output size, either padding convention
    return n, h, w, oh, ow, top, left


def prepare_depthwise(dw_weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, 3, 3) -> (3, 3, C) contiguous, the layout the kernels read."""
    return dw_weight.squeeze(1).permute(1, 2, 0).contiguous()


def prepare_pointwise(pw_weight: torch.Tensor) -> torch.Tensor:
    """(Cout, C, 1, 1) -> (C, Cout) contiguous."""
    return pw_weight.flatten(1).t().contiguous()


def prepare_stem(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) -> (Cin * 9, Cout) contiguous, the layout `stem` reads."""
    return weight.permute(1, 2, 3, 0).reshape(-1, weight.shape[0]).contiguous()


# (BM, num_warps) candidates for the stem kernel, tried per input shape on the GPU. Each compiles for sm_90 without
# spilling (scripts/sm90_compile_check.py), in bf16 to wgmma: 51-90 registers under Triton 3.6, the GPU machines'
# version (results/sm90-compile-check-triton3.6.json), 96-255 under 3.8. Tried and left out (a one-off check, not in
# those files): (256, 4) took 255 registers under 3.6 and (512, 8) spilled.
STEM_CONFIGS = [(128, 4), (64, 4), (128, 8), (256, 8)]


def stem(
    x: torch.Tensor,
    w_kc: torch.Tensor,
    bias: torch.Tensor,
    *,
    stride: int,
    pad: tuple[int, int, int, int] | None = None,
    act: str = "relu",
    block_m: int | None = None,
    num_warps: int = 4,
) -> torch.Tensor:
    """The first layer as one Triton kernel: act(3x3 conv(x) + bias), ``w_kc`` from `prepare_stem`, semantics of
    `stem_reference`. ``x`` is (N, Cin, H, W) in any memory layout and float dtype (read through its strides, each
    value rounded to the weights' dtype as it is loaded); the output is channels_last in the weights' dtype.
    ``block_m=None`` on CUDA times every `STEM_CONFIGS` candidate once per input shape and keeps the fastest."""
    if triton is None:
        raise RuntimeError("triton is not installed: use stem_reference or the torch runtime")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a 4-d float tensor, got shape {tuple(x.shape)} of {x.dtype}")
    if x.shape[1] * 9 != w_kc.shape[0]:
        raise ValueError(f"input has {x.shape[1]} channels; the weights expect {w_kc.shape[0] // 9}")
    n, h, w, oh, ow, top, left = geometry(x, stride, pad, 1)
    cout = w_kc.shape[1]
    m = n * oh * ow
    block_n = max(16, triton.next_power_of_2(cout))
    block_k = max(16, triton.next_power_of_2(x.shape[1] * 9))  # tl.dot's smallest K is 16
    ieee = w_kc.dtype == torch.float32 or INTERPRET

    def run(bm, warps, warmup=False):
        y = torch.empty((n, cout, oh, ow), device=x.device, dtype=w_kc.dtype, memory_format=torch.channels_last)
        grid = (triton.cdiv(m, bm),)
        args = (x, w_kc, bias, y, m, h, w, oh, ow, top, left, *x.stride(), cout)
        kwargs = dict(
            CIN=x.shape[1], STRIDE=stride, ACT=ACT_CODES[act], BM=bm, BN=block_n, BK=block_k, IEEE=ieee, num_warps=warps
        )
        with on_device(x, "stem"):
            if warmup:
                _stem_kernel.warmup(*args, grid=grid, **kwargs)
                return None
            _stem_kernel[grid](*args, **kwargs)
        return y

    if block_m is None and x.is_cuda and not INTERPRET:
        key = ("stem", tuple(x.shape), cout, stride, 1, (x.dtype, x.stride()), w_kc.dtype)  # layouts tune apart
        return _run_tuned(x, key, {"stem": run}, [("stem", cfg) for cfg in STEM_CONFIGS])
    if INTERPRET and block_m is None:
        block_m = 1024  # the interpreter's cost is per program instance: few, large tiles
    return run(block_m or 128, num_warps)


def depthwise(
    x,
    w33c,
    bias,
    *,
    stride: int,
    dilation: int = 1,
    pad=None,
    act: str = "relu",
    block_m: int = 64,
    block_c: int = 64,
    num_warps: int = 4,
    tile_w: int = 0,
    warmup: bool = False,
) -> torch.Tensor | None:
    """Triton 3x3 depthwise conv + bias + act on a channels_last tensor; ``w33c`` from `prepare_depthwise`.

    ``tile_w=0``: each program computes ``block_m`` consecutive output pixels; ``tile_w > 0`` (dividing ``block_m``):
    a block of ``block_m // tile_w`` rows x ``tile_w`` columns of one image. ``warmup=True`` only compiles the
    kernel for these arguments (returns None).
    """
    _check(x)
    if tile_w < 0 or (tile_w and block_m % tile_w):
        raise ValueError(f"tile_w={tile_w} is not allowed: it must be 0 or divide block_m={block_m}")
    n, h, w, oh, ow, top, left = geometry(x, stride, pad, dilation)
    c = x.shape[1]
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    m = n * oh * ow
    pixel_programs = (
        n * triton.cdiv(oh, block_m // tile_w) * triton.cdiv(ow, tile_w) if tile_w else triton.cdiv(m, block_m)
    )
    grid = (pixel_programs, triton.cdiv(c, block_c))
    args = (x, w33c, bias, y, m, h, w, c, oh, ow, top, left)
    kwargs = dict(
        STRIDE=stride, DIL=dilation, ACT=ACT_CODES[act], BM=block_m, BC=block_c, TW=tile_w, num_warps=num_warps
    )
    with on_device(x, "dw"):
        if warmup:
            _dw_kernel.warmup(*args, grid=grid, **kwargs)
            return None
        _dw_kernel[grid](*args, **kwargs)
    return y


def depthwise_rows(
    x,
    w33c,
    bias,
    *,
    pad=None,
    act: str = "relu",
    rows: int = 8,
    cols: int = 16,
    block_c: int = 64,
    num_warps: int = 4,
    warmup: bool = False,
) -> torch.Tensor | None:
    """Stride-1 Triton 3x3 depthwise conv + bias + act on a channels_last tensor, ``rows`` x ``cols`` output pixels
    per program reusing each loaded input row for 3 output rows (`_dw_rows_kernel`); same semantics as `depthwise`.
    ``warmup=True`` only compiles the kernel for these arguments (returns None)."""
    _check(x)
    n, h, w, oh, ow, top, left = geometry(x, 1, pad, 1)
    c = x.shape[1]
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    grid = (n * triton.cdiv(oh, rows) * triton.cdiv(ow, cols), triton.cdiv(c, block_c))
    args = (x, w33c, bias, y, h, w, c, oh, ow, top, left)
    kwargs = dict(ACT=ACT_CODES[act], TH=rows, TW=cols, BC=block_c, num_warps=num_warps)
    with on_device(x, "dw_rows"):
        if warmup:
            _dw_rows_kernel.warmup(*args, grid=grid, **kwargs)
            return None
        _dw_rows_kernel[grid](*args, **kwargs)
    return y


# (BM, BK, BN, num_warps, num_stages) candidates for the fused kernel, tried per layer shape on the GPU.
FUSED_CONFIGS = [
    (64, 32, 64, 4, 2),
    (128, 32, 64, 4, 2),
    (64, 64, 128, 4, 2),
    (128, 32, 128, 8, 2),
    (128, 64, 64, 8, 2),  # with 4 warps and 3 stages it needs 322 KB of shared memory: more than sm_90's 227 KB
    (64, 64, 128, 8, 2),  # 183 registers per thread, where 4 warps need 251-254 (ptxas for sm_90)
    (32, 32, 64, 2, 2),
    (256, 32, 64, 8, 2),
    (64, 16, 64, 4, 2),
    (64, 32, 256, 8, 2),
]
# (BM, BC, num_warps[, TW]) candidates for the depthwise kernel of the split plan (depthwise kernel, then one GEMM).
# The registers a thread needs grow with its share of the tile (ptxas for sm_90, bf16: 8 elements 66, 16 about 121,
# 32 about 212-241), so the smaller shares trade fewer values in flight per thread for more resident threads. The
# last six take their BM pixels as a (BM // TW) x TW block (`depthwise` ``tile_w``): on the H200 the split plan's
# depthwise kernel, BM consecutive pixels, ran 25-50% slower than cuDNN's depthwise convolution on the same layers
# (results/logs-h200-2026-11-27-lease2/call4-gpu-vs-timm-NVIDIA_H200.json, its profile), which loading each input
# value for nine taps from L2 rather than L1 might have explained. On the next lease (results/logs-h200-2026-11-27-
# lease3) the blocks won 3 of the 9 layer shapes, by 1-5%, and lost by 1-11% on those of 256 channels and up: L1
# reuse explains little of the gap.
SPLIT_CONFIGS = [
    (64, 64, 4),
    (128, 32, 4),
    (32, 128, 4),
    (64, 64, 8),
    (32, 128, 8),
    (32, 64, 4),
    (32, 64, 8),
    (32, 64, 4, 8),
    (64, 64, 8, 8),
    (32, 128, 8, 8),
    (128, 32, 4, 16),
    (64, 32, 4, 8),
    (64, 64, 8, 16),
]
# (rows, cols, BC, num_warps) candidates for the row-reuse depthwise kernel of the split plan, stride 1 only. On the
# H200 the split plan's depthwise kernel ran at about 40% of HBM bandwidth (the triton_tuning of
# results/gpu-vs-timm-NVIDIA_H200-2026-11-27.json): `_dw_kernel` loads each input value 9 times (once per tap), from
# L1/L2 at best; on the next lease the row-reuse plan won none of the 5 stride-1 shapes at batch 256. Each compiles for
# sm_90 with 89-160 registers and no spills (scripts/sm90_compile_check.py; 8 values per thread and tile took 221+).
ROWS_CONFIGS = [(8, 16, 64, 8), (16, 16, 64, 8), (8, 8, 128, 8), (16, 8, 64, 4), (8, 16, 128, 8), (8, 32, 64, 8)]
PLANS = ("fused", "split", "split_rows")
_TUNED: dict[tuple, tuple] = {}
# kernels of other modules that `_run_tuned` picks configs for (dwconv's stride-2 input gradient): `_precompile`
# readies their per-device caches too
TUNED_ELSEWHERE: list = []
# per tuned layer shape: every candidate's time, for benchmarks to report (`tuning_report`)
_TIMINGS: dict[tuple, dict[str, float | None]] = {}


def pointwise(x: torch.Tensor, w_kc: torch.Tensor, bias: torch.Tensor, *, act: str = "relu") -> torch.Tensor:
    """1x1 conv + bias + act of a channels_last tensor as one GEMM over its (N*H*W, C) view; ``w_kc`` (C, Cout).

    Uses ``torch._addmm_activation`` (cuBLASLt with the bias and ReLU fused into the GEMM's epilogue on CUDA) when
    PyTorch has it; ReLU6's upper clamp is one more in-place pass. Returns a channels_last tensor.
    """
    _check(x, need_triton=False)
    n, c, h, w = x.shape
    x2d = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: channels_last memory is already (N, H, W, C)
    if act == "none":
        y = torch.addmm(bias, x2d, w_kc)
    elif hasattr(torch, "_addmm_activation"):
        y = torch._addmm_activation(bias, x2d, w_kc)
    else:  # pragma: no cover - every supported PyTorch has it; kept for forks without the private op
        y = torch.addmm(bias, x2d, w_kc).relu_()
    if act == "relu6":
        y.clamp_(max=6.0)
    return y.view(n, h, w, w_kc.shape[1]).permute(0, 3, 1, 2)


def depthwise_separable(
    x,
    w33c,
    dw_bias,
    w_kc,
    pw_bias,
    *,
    stride: int,
    dilation: int = 1,
    pad=None,
    act: str = "relu",
    plan: str | None = None,
    block_m: int | None = None,
    block_k: int = 32,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """act(pw(act(dw(x) + b_dw)) + b_pw) on a channels_last tensor. Weights from `prepare_depthwise/pointwise`.

    Two plans compute it:

    - ``fused``: one Triton kernel; the depthwise tile stays in registers and feeds ``tl.dot``. Each program
      recomputes the depthwise tile for its BN output channels, so wide layers pay ``Cout / BN`` recomputes.
    - ``split``: the Triton depthwise kernel writes its output once, then `pointwise` runs one cuBLAS GEMM. This
      costs one extra round trip of the depthwise output through memory and does no recomputation. Its
      candidates with a fourth value take their pixels as 2-d blocks (`depthwise` ``tile_w``).
    - ``split_rows`` (stride 1, dilation 1): the same with `depthwise_rows`, which loads each input row once per
      column shift instead of once per tap.

    ``plan=None`` and ``block_m=None`` on CUDA time every `FUSED_CONFIGS`, `SPLIT_CONFIGS` and (stride 1)
    `ROWS_CONFIGS` candidate once for this layer shape and keep the fastest (cached; see `tuning_report`). Otherwise
    ``plan`` defaults to fused with the given blocks (``block_m``/``block_k`` serve as BM/BC of the split plan's
    depthwise kernel, and as rows/BC of the split_rows plan's, with ``block_n`` as its columns).
    """
    if plan is not None and plan not in PLANS:
        raise ValueError(f"plan={plan!r} is not allowed: plan must be one of {', '.join(PLANS)}")
    _check(x)
    n, h, w, oh, ow, top, left = geometry(x, stride, pad, dilation)
    c, cout = x.shape[1], w_kc.shape[1]
    m = n * oh * ow

    def fused(bm, bk, bn, warps, stages, warmup=False):
        y = torch.empty((n, cout, oh, ow), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
        grid = (triton.cdiv(m, bm), triton.cdiv(cout, bn))
        args = (x, w33c, dw_bias, w_kc, pw_bias, y, m, h, w, c, cout, oh, ow, top, left)
        kwargs = dict(
            STRIDE=stride,
            DIL=dilation,
            ACT=ACT_CODES[act],
            IEEE=x.dtype == torch.float32 or INTERPRET,
            BM=bm,
            BK=bk,
            BN=bn,
            num_warps=warps,
            num_stages=stages,
        )
        with on_device(x, "dwpw"):
            if warmup:  # compile (or load from Triton's cache) without launching
                _dwpw_kernel.warmup(*args, grid=grid, **kwargs)
                return None
            _dwpw_kernel[grid](*args, **kwargs)
        return y

    def split(bm, bc, warps, tw=0, warmup=False):
        kw = dict(
            stride=stride, dilation=dilation, pad=pad, act=act, block_m=bm, block_c=bc, num_warps=warps, tile_w=tw
        )
        if warmup:
            depthwise(x, w33c, dw_bias, warmup=True, **kw)
            return None
        return pointwise(depthwise(x, w33c, dw_bias, **kw), w_kc, pw_bias, act=act)

    def split_rows(rows, cols, bc, warps, warmup=False):
        kw = dict(pad=pad, act=act, rows=rows, cols=cols, block_c=bc, num_warps=warps)
        if warmup:
            depthwise_rows(x, w33c, dw_bias, warmup=True, **kw)
            return None
        return pointwise(depthwise_rows(x, w33c, dw_bias, **kw), w_kc, pw_bias, act=act)

    rows_ok = stride == 1 and dilation == 1
    if plan == "split_rows" and not rows_ok:
        raise ValueError(f"plan='split_rows' needs stride 1 and dilation 1, got stride {stride}, dilation {dilation}")
    runners = {"fused": fused, "split": split, "split_rows": split_rows}
    if plan is None and block_m is None and x.is_cuda and not INTERPRET:
        key = ("separable", tuple(x.shape), cout, stride, dilation, x.dtype, x.dtype)
        candidates = [("fused", cfg) for cfg in FUSED_CONFIGS] + [("split", cfg) for cfg in SPLIT_CONFIGS]
        candidates += [("split_rows", cfg) for cfg in ROWS_CONFIGS] if rows_ok else []
        return _run_tuned(x, key, runners, candidates)
    plan = plan or "fused"
    if plan == "split":
        return split(block_m or 64, block_k if block_m else 64, num_warps)
    if plan == "split_rows":
        return split_rows(block_m or 8, block_n if block_m else 16, block_k if block_m else 64, num_warps)
    if INTERPRET and block_m is None:
        # the interpreter's cost is per program instance and loop step, not per element: few, large tiles
        return fused(64, 128, 128, num_warps, num_stages)
    return fused(block_m or 64, block_k, block_n, num_warps, num_stages)


def tuning_report() -> list[dict]:
    """What the tuner chose for each layer shape it has seen, with every candidate's time (ms, None: failed)."""
    rows = []
    for key, (chosen, cfg) in _TUNED.items():
        layer, shape, cout, stride, dilation, given, dtype = key
        rows.append(
            {
                "layer": layer,
                "input_nchw": list(shape),
                "input": str(given).replace("torch.", ""),  # dtype, and the stem's strides or dw_dgrad_s2's pads
                "cout": cout,
                "stride": stride,
                "dilation": dilation,
                "dtype": str(dtype).removeprefix("torch."),
                "chosen": f"{chosen}{list(cfg)}",
                "ms": _TIMINGS.get(key, {}),
            }
        )
    return rows


def _run_tuned(x: torch.Tensor, key: tuple, runners: dict, candidates: list) -> torch.Tensor:
    """Run the fastest of ``candidates`` ((plan, config) for ``runners[plan](*config)``) for this layer ``key``,
    timing them all the first time the key is seen (`_fastest`; kept in `_TUNED`, `tuning_report`)."""
    with on_device(x):  # the tuner's timing and compiling also use the current device
        if key not in _TUNED:
            _TUNED[key], _TIMINGS[key] = _fastest(runners, candidates)
        chosen, cfg = _TUNED[key]
        return runners[chosen](*cfg)


def _precompile(runners: dict, candidates: list) -> None:
    """Compile every candidate at once in threads: compiling (MLIR, LLVM, ptxas) dominates a cold first call (seconds
    per config and layer signature) and Triton's compiler releases the GIL. Failures are left to the timing loop."""
    for kernel in (_dwpw_kernel, _dw_kernel, _dw_rows_kernel, _stem_kernel, *TUNED_ELSEWHERE):
        caches = getattr(kernel, "device_caches", None)
        if caches is not None:  # create the per-device cache before the threads race to (Triton 3.x internals)
            caches[torch.cuda.current_device()]

    device = torch.cuda.current_device()  # Triton compiles for the current device, which new threads reset

    def compile_one(candidate):
        plan, cfg = candidate
        torch.cuda.set_device(device)
        with contextlib.suppress(Exception):  # the timing loop skips configs that do not compile or run
            runners[plan](*cfg, warmup=True)

    with ThreadPoolExecutor(min(len(candidates), os.cpu_count() or 1)) as pool:
        list(pool.map(compile_one, candidates))


def _cuda_ms(fn, reps: int) -> float:
    """Mean ms of ``reps`` calls of ``fn`` by CUDA events (the caller has run it once to warm up)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def _fastest(runners: dict, candidates: list, reps: int = 10, timer=_cuda_ms) -> tuple[tuple, dict]:
    """Time each (plan, config) after one warm-up/compile call; return the fastest that runs and every candidate's
    time in ms (None where it failed)."""
    if timer is _cuda_ms and hasattr(_dwpw_kernel, "warmup") and len(candidates) > 1:
        _precompile(runners, candidates)
    best, best_ms, times = None, float("inf"), {}
    for plan, cfg in candidates:
        name = f"{plan}{list(cfg)}"
        try:
            runners[plan](*cfg)
            ms = timer(lambda plan=plan, cfg=cfg: runners[plan](*cfg), reps)
        except Exception:  # a config can exceed shared memory/registers on some GPUs: skip it
            times[name] = None
            continue
        times[name] = round(ms, 5)
        if ms < best_ms:
            best, best_ms = (plan, cfg), ms
    if best is None:
        raise RuntimeError("no kernel configuration ran on this GPU")
    return best, times
