"""Four trainable replacements for PyTorch's 3x3 depthwise convolution, swapped into a model for training speed.

The depthwise layers are about 3% of MobileNet's mult-adds (paper Table 2) but not of its training time: PyTorch
runs a channels_last depthwise convolution through cuDNN or its own ``conv_depthwise2d`` kernels, whose backward
passes (the weight gradient above all) are far from the memory bound, and which ``torch.compile`` cannot fuse with
the BatchNorm around them.

**triton**: each pass one Triton kernel on NHWC tensors that reads and writes every activation once:

- forward: ``y[n,p,c] = sum_taps x[n, p*s - pad + tap*d, c] * w[tap, c]`` (`kernels._dw_kernel` without bias/act);
- input gradient: the same sum gathered from the output side (a tap contributes where ``(q + pad - tap*d) / s`` is
  an integer inside the output); at stride 2 (dilation 1) `_dgrad_s2_kernel` computes 2x2 input pixels at a time,
  each pixel's parity choosing its taps at compile time;
- weight gradient: per program, the 9 tap sums over a run of pixels for a block of channels, written as fp32
  partials and summed by PyTorch: deterministic, no atomics.

`depthwise3x3` is a ``torch.library`` custom op with its autograd formula registered, so it works in eager mode and
as one opaque node under ``torch.compile``; `TritonDepthwiseConv2d` falls back to ``F.conv2d`` where Triton cannot
run (CPU without ``TRITON_INTERPRET=1``). Numerics are checked on CPU under the interpreter against ``F.conv2d`` and
its autograd (tests/test_kernels.py, through tests/kernel_check.py).

**taps**: the same sum written in PyTorch ops (`depthwise3x3_taps`: nine strided views of the input, each times its
tap's weights and zero-padded to the output where it would read padding), which Inductor fuses with the
neighbouring BatchNorm forward and backward; no custom kernel, any device (tests/test_dwconv_taps.py).

**flipped**: PyTorch's convolution, but a stride-1 layer's input gradient is the forward convolution of the output
gradient with the kernel rotated by 180 degrees (`FlippedDepthwiseConv2d`), which cuDNN runs at its forward's speed
where its own input-gradient kernel is 2.5x slower; any device (tests/test_dwconv_taps.py, test_train_speed_layers.py).

**hybrid**: flipped, but a stride-2 layer's input gradient is `_dgrad_s2_kernel` where Triton runs
(`HybridDepthwiseConv2d`): cuDNN's took 1.21 ms for MobileNet's four stride-2 layers in a 15.5 ms training step on the
H200, where the gradient they read and the 4x larger one they write (0.96 GB at batch 256 in bf16) need 0.22 ms at its
4.3 TB/s (tests/test_kernels.py, test_train_speed_layers.py; `benchmarks/dw_dgrad.py` times the kernels).

`use_depthwise(model, impl)` swaps a model's depthwise convolutions for any of the three (same parameter, same
state_dict keys), or back to PyTorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .layers import Conv2dSame, autocast_input

tl = kernels.tl
triton = kernels.triton

# (BM pixels, BC channels, num_warps) of the three kernels; BM_W pixels per step of the weight-gradient loop (its
# nine (BM_W, BC) fp32 accumulators stay in registers), whose steps per program are chosen so that about
# W_PROGRAMS_PER_SM programs per multiprocessor share the pixels
# 8 warps: about 120 registers per thread on sm_90 where 4 warps need 182-239 (ptxas), so twice the warps fit on a
# multiprocessor at once to hide these memory-bound kernels' load latency (scripts/sm90_compile_check.py)
BM, BC, WARPS = 64, 64, 8
BM_W, W_PROGRAMS_PER_SM = 16, 4
# (BQ quads, BC channels, num_warps) candidates of the stride-2 input-gradient kernel, timed per layer shape on its
# first call (`kernels._run_tuned`). Untimed on a GPU when written; `benchmarks/dw_dgrad.py` measures them against
# cuDNN's.
DGRAD_S2_CONFIGS = [(32, 64, 4), (64, 64, 8), (16, 64, 4), (64, 32, 4), (128, 64, 8), (32, 128, 8)]
_ZERO_BIAS: dict[tuple, torch.Tensor] = {}


if triton is not None:

    @triton.jit(do_not_specialize=kernels._GEOMETRY_ARGS)
    def _dgrad_kernel(
        g_ptr,
        w_ptr,
        dx_ptr,
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
        BM: tl.constexpr,
        BC: tl.constexpr,
    ):
        """dx for BM input pixels x BC channels: sum over the output pixels each input pixel fed, tap by tap."""
        m = tl.program_id(0) * BM + tl.arange(0, BM)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        m_mask, c_mask = m < M, c < C
        iw, rest = m % W, m // W
        ih, n = rest % H, rest // H
        acc = tl.zeros((BM, BC), dtype=tl.float32)
        for i in tl.static_range(3):
            th = ih + PAD_T - i * DIL  # = oh * STRIDE for the output pixel that read (ih, .) through tap row i
            oh = th // STRIDE
            ok_h = (th >= 0) & (th % STRIDE == 0) & (oh < OH)
            for j in tl.static_range(3):
                tw = iw + PAD_L - j * DIL
                ow = tw // STRIDE
                valid = m_mask & ok_h & (tw >= 0) & (tw % STRIDE == 0) & (ow < OW)
                base = ((n * OH + oh) * OW + ow).to(tl.int64) * C
                gv = tl.load(g_ptr + base[:, None] + c[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
                wv = tl.load(w_ptr + (i * 3 + j) * C + c, mask=c_mask, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
        out = dx_ptr + m.to(tl.int64)[:, None] * C + c[None, :]
        tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=m_mask[:, None] & c_mask[None, :])

    @triton.jit
    def _tap_product(
        x_ptr,
        gv,
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
        I: tl.constexpr,
        J: tl.constexpr,
        STRIDE: tl.constexpr,
        DIL: tl.constexpr,
    ):
        """grad tile x the input pixels that tap (I, J) read for it: (BM, BC) fp32 products, summed later."""
        ih = oh * STRIDE - PAD_T + I * DIL
        iw = ow * STRIDE - PAD_L + J * DIL
        valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        base = ((n * H + ih) * W + iw).to(tl.int64) * C
        xv = tl.load(x_ptr + base[:, None] + c[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
        return gv * xv.to(tl.float32)

    @triton.jit(do_not_specialize=[*kernels._GEOMETRY_ARGS, "STEPS"])
    def _wgrad_kernel(
        x_ptr,
        g_ptr,
        part_ptr,
        M,
        H,
        W,
        C,
        OH,
        OW,
        PAD_T,
        PAD_L,
        STEPS,
        STRIDE: tl.constexpr,
        DIL: tl.constexpr,
        BM: tl.constexpr,
        BC: tl.constexpr,
    ):
        """Partial dw[tap, c] over STEPS x BM output pixels for BC channels -> part[program, tap, c] (fp32).

        The gradient tile is loaded once per step and each tap's products accumulate element-wise in its own
        (BM, BC) registers; the nine reductions over pixels happen once, after the loop."""
        pid_m = tl.program_id(0)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        c_mask = c < C
        a00 = tl.zeros((BM, BC), dtype=tl.float32)
        a01 = tl.zeros((BM, BC), dtype=tl.float32)
        a02 = tl.zeros((BM, BC), dtype=tl.float32)
        a10 = tl.zeros((BM, BC), dtype=tl.float32)
        a11 = tl.zeros((BM, BC), dtype=tl.float32)
        a12 = tl.zeros((BM, BC), dtype=tl.float32)
        a20 = tl.zeros((BM, BC), dtype=tl.float32)
        a21 = tl.zeros((BM, BC), dtype=tl.float32)
        a22 = tl.zeros((BM, BC), dtype=tl.float32)
        for step in range(STEPS):
            m = (pid_m * STEPS + step) * BM + tl.arange(0, BM)
            m_mask = m < M
            ow, rest = m % OW, m // OW
            oh, n = rest % OH, rest // OH
            g_mask = m_mask[:, None] & c_mask[None, :]
            gv = tl.load(g_ptr + m.to(tl.int64)[:, None] * C + c[None, :], mask=g_mask, other=0.0).to(tl.float32)
            a00 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 0, 0, STRIDE, DIL)
            a01 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 0, 1, STRIDE, DIL)
            a02 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 0, 2, STRIDE, DIL)
            a10 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 1, 0, STRIDE, DIL)
            a11 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 1, 1, STRIDE, DIL)
            a12 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 1, 2, STRIDE, DIL)
            a20 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 2, 0, STRIDE, DIL)
            a21 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 2, 1, STRIDE, DIL)
            a22 += _tap_product(x_ptr, gv, n, oh, ow, m_mask, c, c_mask, H, W, C, PAD_T, PAD_L, 2, 2, STRIDE, DIL)
        out = part_ptr + pid_m * 9 * C + c
        tl.store(out + 0 * C, tl.sum(a00, axis=0), mask=c_mask)
        tl.store(out + 1 * C, tl.sum(a01, axis=0), mask=c_mask)
        tl.store(out + 2 * C, tl.sum(a02, axis=0), mask=c_mask)
        tl.store(out + 3 * C, tl.sum(a10, axis=0), mask=c_mask)
        tl.store(out + 4 * C, tl.sum(a11, axis=0), mask=c_mask)
        tl.store(out + 5 * C, tl.sum(a12, axis=0), mask=c_mask)
        tl.store(out + 6 * C, tl.sum(a20, axis=0), mask=c_mask)
        tl.store(out + 7 * C, tl.sum(a21, axis=0), mask=c_mask)
        tl.store(out + 8 * C, tl.sum(a22, axis=0), mask=c_mask)

    @triton.jit
    def _s2_grad_tile(g_ptr, n, r, u, q_mask, c, c_mask, OH, OW, C, I: tl.constexpr, J: tl.constexpr,
                      PAD_T: tl.constexpr, PAD_L: tl.constexpr):  # fmt: skip
        """The output-gradient tile at (r + PAD_T - 1 + I, u + PAD_L - 1 + J) for each quad (r, u): fp32, zero
        outside the output."""
        oh = r + (PAD_T - 1 + I)
        ow = u + (PAD_L - 1 + J)
        valid = q_mask & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        base = ((n * OH + oh) * OW + ow).to(tl.int64) * C
        g = tl.load(g_ptr + base[:, None] + c[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
        return g.to(tl.float32)

    @triton.jit
    def _s2_pick(g00, g01, g10, g11, I: tl.constexpr, J: tl.constexpr):
        if I == 0:
            if J == 0:
                return g00
            return g01
        if J == 0:
            return g10
        return g11

    @triton.jit
    def _s2_input_grad(g00, g01, g10, g11, w_ptr, c, c_mask, C, A: tl.constexpr, B: tl.constexpr,
                       PAD_T: tl.constexpr, PAD_L: tl.constexpr):  # fmt: skip
        """dx at input pixels (2r + A, 2u + B): the taps (i, j) whose parity reaches them, 1, 2 or 4 of the nine;
        tap row i reads that pixel from output row r + (A + PAD_T - i) / 2, tile I = that offset - (PAD_T - 1)."""
        acc = tl.zeros_like(g00)
        for i in tl.static_range(3):
            if (A + PAD_T - i) % 2 == 0:
                for j in tl.static_range(3):
                    if (B + PAD_L - j) % 2 == 0:
                        g = _s2_pick(
                            g00, g01, g10, g11, (A + PAD_T - i) // 2 + 1 - PAD_T, (B + PAD_L - j) // 2 + 1 - PAD_L
                        )
                        wv = tl.load(w_ptr + (i * 3 + j) * C + c, mask=c_mask, other=0.0)
                        acc += g * wv.to(tl.float32)[None, :]
        return acc

    @triton.jit(do_not_specialize=["Q", "H", "W", "OH", "OW", "RH", "RW"])
    def _dgrad_s2_kernel(
        g_ptr,
        w_ptr,
        dx_ptr,
        Q,
        H,
        W,
        C,
        OH,
        OW,
        RH,
        RW,
        PAD_T: tl.constexpr,
        PAD_L: tl.constexpr,
        BQ: tl.constexpr,
        BC: tl.constexpr,
    ):
        """dx of a stride-2, dilation-1 layer for BQ quads (2x2 input pixels) x BC channels.

        `_dgrad_kernel` tries all nine taps for each input pixel and masks the ones whose output position is not an
        integer (at stride 2, 5 of 9 on average); here the parity of each of a quad's four pixels picks its taps at
        compile time, and the quad's pixels share four output-gradient tiles, each loaded once: 4 loads and 9 taps'
        products per quad, where `_dgrad_kernel` issues 36 masked loads. PAD_T/PAD_L (0 or 1) are constexpr: they
        decide which taps reach which parity."""
        q = tl.program_id(0) * BQ + tl.arange(0, BQ)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        q_mask, c_mask = q < Q, c < C
        u, rest = q % RW, q // RW
        r, n = rest % RH, rest // RH
        g00 = _s2_grad_tile(g_ptr, n, r, u, q_mask, c, c_mask, OH, OW, C, 0, 0, PAD_T, PAD_L)
        g01 = _s2_grad_tile(g_ptr, n, r, u, q_mask, c, c_mask, OH, OW, C, 0, 1, PAD_T, PAD_L)
        g10 = _s2_grad_tile(g_ptr, n, r, u, q_mask, c, c_mask, OH, OW, C, 1, 0, PAD_T, PAD_L)
        g11 = _s2_grad_tile(g_ptr, n, r, u, q_mask, c, c_mask, OH, OW, C, 1, 1, PAD_T, PAD_L)
        for a in tl.static_range(2):
            for b in tl.static_range(2):
                acc = _s2_input_grad(g00, g01, g10, g11, w_ptr, c, c_mask, C, a, b, PAD_T, PAD_L)
                ih, iw = 2 * r + a, 2 * u + b
                ok = q_mask & (ih < H) & (iw < W)
                out = dx_ptr + (((n * H + ih) * W + iw).to(tl.int64) * C)[:, None] + c[None, :]
                tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=ok[:, None] & c_mask[None, :])

    kernels.TUNED_ELSEWHERE.append(_dgrad_s2_kernel)


def _block_c(channels: int) -> int:
    """Channels per program: BC, or fewer for a narrow layer (no half-masked tiles at 32 channels)."""
    return min(BC, max(16, 1 << (channels - 1).bit_length()))


def _wgrad_steps(pixels: int, channel_blocks: int, device: torch.device) -> int:
    """Loop steps per weight-gradient program: enough programs to fill the GPU, as few partial sums as that allows."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    wanted = max(1, W_PROGRAMS_PER_SM * sms // channel_blocks)  # programs along the pixels
    return max(1, -(-pixels // (BM_W * wanted)))


def _zero_bias(channels: int, like: torch.Tensor) -> torch.Tensor:
    key = (channels, like.dtype, like.device)
    if key not in _ZERO_BIAS:
        _ZERO_BIAS[key] = torch.zeros(channels, device=like.device, dtype=like.dtype)
    return _ZERO_BIAS[key]


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("mobilenets::depthwise3x3", mutates_args=())
def depthwise3x3(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, tf_same: bool) -> torch.Tensor:
    """3x3 depthwise convolution, no bias: x (N,C,H,W), weight (C,1,3,3); returns channels_last (the layout it
    computes in: an NCHW input is copied)."""
    x = _nhwc(x)
    pad = kernels.same_pad(x, stride, dilation, tf_same)
    kw = dict(stride=stride, dilation=dilation, act="none", block_m=BM, block_c=_block_c(x.shape[1]), num_warps=WARPS)
    with kernels.on_device(x):
        w33c = kernels.prepare_depthwise(weight.to(x.dtype))
        return kernels.depthwise(x, w33c, _zero_bias(x.shape[1], x), pad=pad, **kw)


@depthwise3x3.register_fake
def _(x, weight, stride, dilation, tf_same):
    n, _h, _w, oh, ow, _top, _left = kernels.geometry(x, stride, None, dilation)  # the output size only
    shape = (n, x.shape[1], oh, ow)
    return torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)


def _grad_setup(grad, x, stride, dilation, tf_same):
    """What both gradient kernels take: grad and x channels_last, the batch size, the geometry arguments
    (H, W, C, OH, OW, PAD_T, PAD_L) and the channel block."""
    grad, x = _nhwc(grad), _nhwc(x)
    n, h, w, oh, ow, top, left = kernels.geometry(x, stride, kernels.same_pad(x, stride, dilation, tf_same), dilation)
    return grad, x, n, (h, w, x.shape[1], oh, ow, top, left), _block_c(x.shape[1])


@torch.library.custom_op("mobilenets::depthwise3x3_dgrad", mutates_args=())
def depthwise3x3_dgrad(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, tf_same: bool
) -> torch.Tensor:
    """The input gradient of `depthwise3x3` (channels_last, ``x``'s shape): `_dgrad_s2_kernel` at stride 2 and
    dilation 1, `_dgrad_kernel` otherwise."""
    return input_grad(grad, x, weight, stride, dilation, tf_same, "parity" if (stride, dilation) == (2, 1) else "taps")


def input_grad(grad, x, weight, stride: int, dilation: int, tf_same: bool, kernel: str) -> torch.Tensor:
    """`depthwise3x3_dgrad` by the kernel named: ``taps`` (`_dgrad_kernel`, nine masked taps per input pixel, any
    geometry) or ``parity`` (`_dgrad_s2_kernel`, stride 2 and dilation 1 only); benchmarks/dw_dgrad.py times both."""
    if kernel not in ("taps", "parity") or (kernel == "parity" and (stride, dilation) != (2, 1)):
        raise ValueError(f"kernel={kernel!r} is not allowed at stride {stride}, dilation {dilation}")
    grad, x, n, dims, bc = _grad_setup(grad, x, stride, dilation, tf_same)
    h, w, c = dims[:3]
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    w33c = kernels.prepare_depthwise(weight.to(x.dtype))
    if kernel == "parity":
        return _dgrad_s2(grad, w33c, dx, n, dims)
    with kernels.on_device(x):
        _dgrad_kernel[(triton.cdiv(n * h * w, BM), triton.cdiv(c, bc))](
            grad, w33c, dx, n * h * w, *dims, STRIDE=stride, DIL=dilation, BM=BM, BC=bc, num_warps=WARPS
        )
    return dx


def _dgrad_s2(grad: torch.Tensor, w33c: torch.Tensor, dx: torch.Tensor, n: int, dims: tuple) -> torch.Tensor:
    """``dx`` filled by `_dgrad_s2_kernel` (the tile config tuned per shape on CUDA, `kernels._run_tuned`)."""
    h, w, c, oh, ow, top, left = dims
    rh, rw = -(-h // 2), -(-w // 2)  # quads per column and row (an odd size's last quad is half outside)
    quads = n * rh * rw

    def run(bq: int, bc: int, warps: int, warmup: bool = False) -> torch.Tensor:
        grid = (triton.cdiv(quads, bq), triton.cdiv(c, bc))
        args = (grad, w33c, dx, quads, h, w, c, oh, ow, rh, rw)
        meta = dict(PAD_T=top, PAD_L=left, BQ=bq, BC=bc, num_warps=warps)
        with kernels.on_device(dx, "dw_dgrad_s2"):
            if warmup:
                _dgrad_s2_kernel.warmup(*args, grid=grid, **meta)
            else:
                _dgrad_s2_kernel[grid](*args, **meta)
        return dx

    if dx.is_cuda and not kernels.INTERPRET:
        key = ("dw_dgrad_s2", tuple(dx.shape), c, 2, 1, (dx.dtype, (top, left)), dx.dtype)  # input: dtype, pads
        return kernels._run_tuned(dx, key, {"s2": run}, [("s2", cfg) for cfg in DGRAD_S2_CONFIGS])
    return run(*((128, 64, 4) if kernels.INTERPRET else DGRAD_S2_CONFIGS[0]))


@depthwise3x3_dgrad.register_fake
def _(grad, x, weight, stride, dilation, tf_same):
    return torch.empty_like(x, memory_format=torch.channels_last)


@torch.library.custom_op("mobilenets::depthwise3x3_wgrad", mutates_args=())
def depthwise3x3_wgrad(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, tf_same: bool
) -> torch.Tensor:
    """The weight gradient of `depthwise3x3`, in ``weight``'s dtype: fp32 partial sums per program (no atomics, so
    deterministic), added up in fp32."""
    grad, x, n, dims, bc = _grad_setup(grad, x, stride, dilation, tf_same)
    c, oh, ow = dims[2:5]
    m_out = n * oh * ow
    steps = _wgrad_steps(m_out, triton.cdiv(c, bc), x.device)
    programs = triton.cdiv(m_out, BM_W * steps)
    partials = torch.empty((programs, 9, c), device=x.device, dtype=torch.float32)
    with kernels.on_device(x):
        _wgrad_kernel[(programs, triton.cdiv(c, bc))](
            x, grad, partials, m_out, *dims, steps, STRIDE=stride, DIL=dilation, BM=BM_W, BC=bc, num_warps=WARPS
        )
    # contiguous (C, 1, 3, 3), as the fake says: Inductor asserts a custom op's output strides
    return partials.sum(0).t().contiguous().view(c, 1, 3, 3).to(weight.dtype)


@depthwise3x3_wgrad.register_fake
def _(grad, x, weight, stride, dilation, tf_same):
    return weight.new_empty(weight.shape)  # contiguous whatever the weight's memory format


def _setup_context(ctx, inputs, output) -> None:
    x, weight, stride, dilation, tf_same = inputs
    ctx.save_for_backward(x, weight)
    ctx.geometry = (stride, dilation, tf_same)


def _backward(ctx, grad):
    """Each gradient is its own op, run only when autograd asks for it (a weight that is frozen, an input that needs
    no gradient); in ordinary training both are needed."""
    x, weight = ctx.saved_tensors
    need_dx, need_dw = ctx.needs_input_grad[:2]
    dx = depthwise3x3_dgrad(grad, x, weight, *ctx.geometry) if need_dx else None
    dweight = depthwise3x3_wgrad(grad, x, weight, *ctx.geometry) if need_dw else None
    return dx, dweight, None, None, None


depthwise3x3.register_autograd(_backward, setup_context=_setup_context)


class _SwappedDepthwiseConv2d(nn.Conv2d):
    """What the swapped-in depthwise layers share: built from the ``nn.Conv2d`` they replace, with its parameter
    (same state_dict keys), and a 'SAME' twin (`SAME_CLASS`) that stays a `layers.Conv2dSame` for the code that
    checks (the fused inference path, the exporters)."""

    SAME_CLASS: type[_SwappedDepthwiseConv2d]

    @property
    def tf_same(self) -> bool:
        return isinstance(self, Conv2dSame)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> _SwappedDepthwiseConv2d:
        if not is_depthwise3x3(conv):
            raise ValueError(f"{conv} is not a 3x3 depthwise convolution without bias")
        return _rebuilt(cls.SAME_CLASS if isinstance(conv, Conv2dSame) else cls, conv)

    def conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        """PyTorch's own convolution (the fallback, and the path once BN is folded into a bias)."""
        return Conv2dSame.forward(self, x) if self.tf_same else nn.Conv2d.forward(self, x)


class TritonDepthwiseConv2d(_SwappedDepthwiseConv2d):
    """A 3x3 depthwise ``nn.Conv2d`` (no bias) computed by `depthwise3x3` where Triton runs, ``F.conv2d`` elsewhere.

    `TritonDepthwiseConv2dSame` replaces a `layers.Conv2dSame` (TensorFlow 'SAME' padding). Under autocast the
    weight is cast to the input's dtype, as autocast does for a conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None or not kernels.runs_on(x.device):  # a bias appears only when BN is folded (inference)
            return self.conv_forward(x)
        x = autocast_input(x)
        weight = self.weight.to(x.dtype)
        return depthwise3x3(x, weight, self.stride[0], self.dilation[0], self.tf_same)


class TritonDepthwiseConv2dSame(TritonDepthwiseConv2d, Conv2dSame):
    """`TritonDepthwiseConv2d` with TensorFlow 'SAME' padding (an instance of `layers.Conv2dSame`)."""


TritonDepthwiseConv2d.SAME_CLASS = TritonDepthwiseConv2dSame


def _tap_span(size: int, out: int, stride: int, pad_lo: int, offset: int) -> tuple[int, int, int]:
    """Along one axis, the outputs ``[lo, hi)`` whose input ``stride * o - pad_lo + offset`` lies inside ``size``
    (the rest read padding), and the input index of output ``lo``."""
    lo = max(0, -((offset - pad_lo) // stride))  # ceil((pad_lo - offset) / stride)
    hi = min(out, (size - 1 + pad_lo - offset) // stride + 1)
    return lo, max(lo, hi), stride * lo - pad_lo + offset


def depthwise3x3_taps(
    x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int, pad: tuple[int, int, int, int]
) -> torch.Tensor:
    """3x3 depthwise convolution (no bias) with padding ``pad`` (left, right, top, bottom) as the sum of its nine
    taps: for each, the strided view of ``x`` its outputs read, times the tap's per-channel weight, zero-padded to
    the output size where the tap would read padding.

    Only views, products, pads and sums: autograd derives both gradients, and Inductor fuses all of it with the
    layers around it (the BatchNorm's statistics and normalisation forward, its backward into the input gradient and
    the nine weight-gradient sums) instead of calling cuDNN. Padding the products rather than the input leaves no
    padded copy to write: autograd saves ``x`` itself (every slice is a view of it) and the weight, and the input
    gradient is a sum of slices, not a padded buffer cut down. The products take the weight as it is (fp32 under
    autocast), so the sum accumulates in fp32 and rounds once to ``x``'s dtype.
    """
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    oh = (h + top + bottom - 2 * dilation - 1) // stride + 1
    ow = (w + left + right - 2 * dilation - 1) // stride + 1
    taps = weight.squeeze(1)  # (C, 3, 3)
    acc = None
    for i in range(3):
        r_lo, r_hi, r0 = _tap_span(h, oh, stride, top, i * dilation)
        for j in range(3):
            c_lo, c_hi, c0 = _tap_span(w, ow, stride, left, j * dilation)
            if r_hi == r_lo or c_hi == c_lo:
                continue  # reads only padding (an input smaller than the dilated kernel)
            rows = slice(r0, r0 + stride * (r_hi - r_lo - 1) + 1, stride)
            cols = slice(c0, c0 + stride * (c_hi - c_lo - 1) + 1, stride)
            term = x[:, :, rows, cols] * taps[:, i, j].view(1, -1, 1, 1)
            border = (c_lo, ow - c_hi, r_lo, oh - r_hi)
            term = F.pad(term, border) if any(border) else term
            acc = term if acc is None else acc + term
    if acc is None:  # no tap inside the input: impossible with 'same' padding, whose centre tap covers the output
        return x.new_zeros((x.shape[0], x.shape[1], oh, ow))
    return acc.to(x.dtype)


class TapsDepthwiseConv2d(_SwappedDepthwiseConv2d):
    """A 3x3 depthwise ``nn.Conv2d`` (no bias) computed by `depthwise3x3_taps`, on any device; meant for
    ``torch.compile``, which fuses it with its BatchNorm (eager mode runs nine products per layer).

    `TapsDepthwiseConv2dSame` replaces a `layers.Conv2dSame`. Under autocast the input is cast to the autocast dtype
    (the dtype a conv would compute in) and the output has that dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:  # BN folded into a bias (inference): the plain convolution
            return self.conv_forward(x)
        if torch.is_autocast_enabled(x.device.type):
            x = autocast_input(x)
        elif x.dtype != self.weight.dtype:  # as nn.Conv2d refuses it, rather than computing in a promoted dtype
            raise RuntimeError(f"input dtype {x.dtype} is not the weight's {self.weight.dtype} (outside autocast)")
        stride, dilation = self.stride[0], self.dilation[0]
        pad = kernels.same_pad(x, stride, dilation, self.tf_same) or (dilation,) * 4
        return depthwise3x3_taps(x, self.weight, stride, dilation, pad)


class TapsDepthwiseConv2dSame(TapsDepthwiseConv2d, Conv2dSame):
    """`TapsDepthwiseConv2d` with TensorFlow 'SAME' padding (an instance of `layers.Conv2dSame`)."""


TapsDepthwiseConv2d.SAME_CLASS = TapsDepthwiseConv2dSame


def _weight_grad(grad, x, weight, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """PyTorch's weight gradient of a depthwise ``F.conv2d`` (no bias): ``convolution_backward`` asked for that output
    alone: the input gradient, which its callers compute their own way, is not computed as well."""
    s, p, d = [stride] * 2, [padding] * 2, [dilation] * 2
    mask = [False, True, False]
    return torch.ops.aten.convolution_backward(grad, x, weight, None, s, p, d, False, [0, 0], weight.shape[0], mask)[1]


class _RotatedInputGrad(torch.autograd.Function):
    """A stride-1 3x3 depthwise convolution (no bias, 'same' zero padding = dilation) whose input gradient is
    computed as a forward convolution of the output gradient with the kernel rotated by 180 degrees.

    For stride 1 the adjoint of a correlation with padding ``p`` is the correlation with the rotated kernel and
    padding ``d * (k - 1) - p``, here ``d``: the same forward kernel, whose cost is its forward's. cuDNN's own input
    gradient kernel for channels_last depthwise layers (``dgrad2d_c1_k1_nhwc``) took 2.5x its forward's time on the
    H200 (results/logs-h200-2026-11-27-lease3/call3-b-train.json). The weight gradient stays PyTorch's
    (``convolution_backward`` with only that output asked for).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, None, 1, dilation, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        d, channels = ctx.dilation, weight.shape[0]
        dx = dweight = None
        if ctx.needs_input_grad[0]:
            dx = F.conv2d(grad, weight.flip(-2, -1), None, 1, d, d, channels)
        if ctx.needs_input_grad[1]:
            dweight = _weight_grad(grad, x, weight, 1, d, d)
        return dx, dweight, None


class FlippedDepthwiseConv2d(_SwappedDepthwiseConv2d):
    """A 3x3 depthwise ``nn.Conv2d`` (no bias) whose stride-1 layers take their input gradient from
    `_RotatedInputGrad` (PyTorch's forward convolution with the rotated kernel); strided layers, and a layer with a
    folded-BN bias, are PyTorch's own. Any device; the forward and the weight gradient are PyTorch's kernels.

    `FlippedDepthwiseConv2dSame` replaces a `layers.Conv2dSame` ('SAME' padding is symmetric at stride 1). Under
    autocast the input and the weight are cast to the autocast dtype (`layers.autocast_input`: any input dtype, where
    autocast would leave a float64 conv alone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None or self.stride[0] != 1:
            return self.conv_forward(x)
        return _RotatedInputGrad.apply(*self._autocast(x), self.dilation[0])

    def _autocast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and the weight in the autocast dtype where autocast is on, else as they are: cast before an autograd
        Function saves them, so its backward, which autocast does not cover, computes in the forward's dtype."""
        if torch.is_autocast_enabled(x.device.type):
            x = autocast_input(x)
            return x, self.weight.to(x.dtype)
        return x, self.weight


class FlippedDepthwiseConv2dSame(FlippedDepthwiseConv2d, Conv2dSame):
    """`FlippedDepthwiseConv2d` with TensorFlow 'SAME' padding (an instance of `layers.Conv2dSame`)."""


FlippedDepthwiseConv2d.SAME_CLASS = FlippedDepthwiseConv2dSame


class _Stride2TritonInputGrad(torch.autograd.Function):
    """A stride-2, dilation-1 3x3 depthwise convolution (no bias) by PyTorch's forward convolution and weight
    gradient, whose input gradient is `depthwise3x3_dgrad`'s stride-2 kernel (`_dgrad_s2_kernel`).

    cuDNN's input gradient of MobileNet's four stride-2 depthwise layers took 1.21 ms of a 15.5 ms training step on
    the H200 (4 calls; its nine stride-1 ones, as `_RotatedInputGrad`'s forward convolutions, took about 0.66 ms; the
    profile of results/gpu-vs-timm-NVIDIA_H200.json, ``ours_compiled_fast``), where the bytes it reads and writes
    need 0.22 ms at the H200's HBM bandwidth. 'SAME' padding (``tf_same``) pads ``x`` for the forward and
    the weight gradient; the Triton kernel reads the unpadded input's geometry."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tf_same: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tf_same = tf_same
        pad = kernels.same_pad(x, 2, 1, tf_same)
        if pad is not None:
            return F.conv2d(F.pad(x, pad), weight, None, 2, 0, 1, weight.shape[0])
        return F.conv2d(x, weight, None, 2, 1, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = dweight = None
        if ctx.needs_input_grad[0]:
            dx = depthwise3x3_dgrad(grad, x, weight, 2, 1, ctx.tf_same)
        if ctx.needs_input_grad[1]:
            pad = kernels.same_pad(x, 2, 1, ctx.tf_same)
            source, padding = (x, 1) if pad is None else (F.pad(x, pad), 0)
            dweight = _weight_grad(grad, source, weight, 2, padding, 1)
        return dx, dweight, None


class HybridDepthwiseConv2d(FlippedDepthwiseConv2d):
    """`FlippedDepthwiseConv2d` (stride-1 layers: the input gradient as a forward convolution), whose stride-2,
    dilation-1 layers take their input gradient from Triton's `_dgrad_s2_kernel` where Triton runs
    (`_Stride2TritonInputGrad`); elsewhere, and with a folded-BN bias, it is `FlippedDepthwiseConv2d`. Forward and
    weight gradients are PyTorch's.

    `HybridDepthwiseConv2dSame` replaces a `layers.Conv2dSame`. Under autocast the input and the weight are cast to
    the autocast dtype, as in `FlippedDepthwiseConv2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None or self.stride[0] != 2 or self.dilation[0] != 1 or not kernels.runs_on(x.device):
            return super().forward(x)
        return _Stride2TritonInputGrad.apply(*self._autocast(x), self.tf_same)


class HybridDepthwiseConv2dSame(HybridDepthwiseConv2d, Conv2dSame):
    """`HybridDepthwiseConv2d` with TensorFlow 'SAME' padding (an instance of `layers.Conv2dSame`)."""


HybridDepthwiseConv2d.SAME_CLASS = HybridDepthwiseConv2dSame

# --depthwise choices: the layer each swaps in (None: PyTorch's own ``nn.Conv2d`` / `layers.Conv2dSame`)
IMPLEMENTATIONS: dict[str, type[_SwappedDepthwiseConv2d] | None] = {
    "conv": None,
    "triton": TritonDepthwiseConv2d,
    "taps": TapsDepthwiseConv2d,
    "flipped": FlippedDepthwiseConv2d,
    "hybrid": HybridDepthwiseConv2d,
}


def is_depthwise3x3(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.bias is None
        and conv.padding_mode == "zeros"  # the swapped layers pad with zeros (and _rebuilt keeps no other mode)
        and conv.stride[0] == conv.stride[1]
        and conv.dilation[0] == conv.dilation[1]
        and (isinstance(conv, Conv2dSame) or conv.padding == conv.dilation)
    )


def _rebuilt(kind: type[nn.Conv2d], conv: nn.Conv2d) -> nn.Conv2d:
    """A ``kind`` layer with ``conv``'s geometry sharing its weight (the same parameter, the same state_dict key)
    and its train/eval mode (a model swapped after ``.eval()`` stays all in eval mode). Hooks are not carried over.
    Built on the meta device: a weight initialised only to be replaced would draw from the global random stream,
    and a run's later draws (its labels, its augmentation) would then depend on which layers it swapped."""
    new = kind(conv.in_channels, conv.out_channels, 3, conv.stride, conv.padding, conv.dilation, conv.groups,
               bias=False, device="meta", dtype=conv.weight.dtype)  # fmt: skip
    new.weight = conv.weight
    return new.train(conv.training)


def use_depthwise(model: nn.Module, impl: str) -> int:
    """Swap every 3x3 depthwise convolution of ``model`` (in place) for implementation ``impl`` (a key of
    `IMPLEMENTATIONS`: ``conv`` puts PyTorch's own layers back); returns how many layers changed."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"depthwise={impl!r} is not allowed: depthwise must be one of {', '.join(IMPLEMENTATIONS)}")
    kind = IMPLEMENTATIONS[impl]
    wanted = (nn.Conv2d, Conv2dSame) if kind is None else (kind, kind.SAME_CLASS)
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if is_depthwise3x3(child) and type(child) not in wanted:
                plain = Conv2dSame if isinstance(child, Conv2dSame) else nn.Conv2d
                setattr(module, name, _rebuilt(plain, child) if kind is None else kind.from_conv(child))
                swapped += 1
    return swapped
