"""The fast CUDA inference path: BatchNorm folded, channels_last, bf16/fp16, and one of three backends.

The network is the paper's Table 1 with each depthwise separable layer of Figure 3 (3x3 depthwise, then 1x1
pointwise, each followed by BN and ReLU, or ReLU6 for the released checkpoints) folded to conv + bias + act.

- ``eager``: the folded model in PyTorch ops (cuDNN).
- ``compile``: the same under ``torch.compile`` (Inductor).
- ``triton``: the first layer is one Triton kernel that also casts and lays out the input (`kernels.stem`), and
  each depthwise separable block runs as `kernels.depthwise_separable`'s fastest plan for its shape, timed on its
  first call: one fused Triton kernel, whose depthwise output never goes to memory, or the split plan, the Triton
  depthwise kernel and then one cuBLAS GEMM (on the H200 the split plan won 8 of 1.0-224's 9 layer shapes at batch
  256). The head stays in cuBLAS.
Any backend can be wrapped in a CUDA graph for small fixed batches (``cuda_graph_batch=N``): one launch per
inference.
The same `FusedMobileNetV1` runs on CPU through the kernels' PyTorch reference, which is what CI checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import kernels
from .layers import Conv2dSame
from .mobilenet_v1 import MobileNetV1

BACKENDS = ("eager", "compile", "triton")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FusedMobileNetV1(nn.Module):
    """A BN-folded MobileNetV1 whose separable blocks run as fused Triton kernels (reference ops off-GPU)."""

    def __init__(self, model: MobileNetV1, *, use_triton: bool | None = None) -> None:
        super().__init__()
        folded = model.fuse()
        self.spec = model.spec
        self.act = model.spec.act
        self.stem = folded.stem
        self.head = nn.Sequential(folded.global_pool, folded.flatten, folded.classifier)
        self.blocks = nn.ModuleList(folded.blocks)
        self.use_triton = use_triton
        self._prepared: list[tuple] | None = None
        self._stem_args: tuple | None = None

    def _kernel_args(self) -> list[tuple]:
        args = []
        for block in self.blocks:
            if not hasattr(block, "dw") or block.dw.conv.out_channels != block.dw.conv.in_channels:
                args.append(None)  # 'conv' variant or depth_multiplier > 1: PyTorch ops
                continue
            dw, pw = block.dw.conv, block.pw.conv
            args.append(
                (
                    kernels.prepare_depthwise(dw.weight),
                    dw.bias,
                    kernels.prepare_pointwise(pw.weight),
                    pw.bias,
                    dw.stride[0],
                    dw.dilation[0],
                    isinstance(dw, Conv2dSame),
                )
            )
        return args

    def _stem_kernel_args(self) -> tuple | None:
        """(weights, bias, stride, tf_same) for `kernels.stem`, or None where the stem is not a plain 3x3 conv."""
        conv = self.stem.conv
        plain = conv.kernel_size == (3, 3) and conv.groups == 1 and conv.dilation == (1, 1) and conv.bias is not None
        tf_same = isinstance(conv, Conv2dSame)
        if not plain or conv.stride[0] != conv.stride[1] or not (tf_same or conv.padding == (1, 1)):
            return None
        return kernels.prepare_stem(conv.weight), conv.bias, conv.stride[0], tf_same

    def _apply(self, fn, recurse=True):  # re-prepare kernel weights after .to(device/dtype)
        self._prepared = None
        self._stem_args = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_triton = self.use_triton
        if use_triton is None:  # under TRITON_INTERPRET=1 the kernels run on CPU tensors too
            use_triton = kernels.runs_on(x.device)
        if self._prepared is None:
            self._prepared = self._kernel_args()
            self._stem_args = self._stem_kernel_args()
        if use_triton and self._stem_args is not None:  # reads x in its own layout and dtype
            w_kc, bias, stride, tf_same = self._stem_args
            x = kernels.stem(x, w_kc, bias, stride=stride, pad=kernels.same_pad(x, stride, 1, tf_same), act=self.act)
        else:
            x = self.stem(x.to(self.stem.conv.weight.dtype)).contiguous(memory_format=torch.channels_last)
        for block, prepared in zip(self.blocks, self._prepared, strict=True):
            if prepared is None:
                x = block(x)
                continue
            w33c, b_dw, w_kc, b_pw, stride, dilation, tf_same = prepared
            pad = kernels.same_pad(x, stride, dilation, tf_same)
            if use_triton:
                x = kernels.depthwise_separable(
                    x, w33c, b_dw, w_kc, b_pw, stride=stride, dilation=dilation, pad=pad, act=self.act
                )
            else:
                x = kernels.depthwise_separable_reference(
                    x,
                    block.dw.conv.weight,
                    b_dw,
                    block.pw.conv.weight,
                    b_pw,
                    stride=stride,
                    dilation=dilation,
                    pad=pad,
                    act=self.act,
                )
        return self.head(x)


# How far a CUDA graph's output may be from the same call made directly, as a fraction of the direct output's largest
# magnitude: the same kernels replayed agree to rounding; a cuBLAS algorithm chosen differently stays far inside 1%
REPLAY_TOLERANCE = 1e-2


def replay_mismatch(replayed: torch.Tensor, direct: torch.Tensor, tolerance: float = REPLAY_TOLERANCE) -> str | None:
    """Why a CUDA graph's output cannot stand for the direct call's on the same input, or None: non-finite values
    where the direct call has none, or a difference over ``tolerance`` x the direct output's largest magnitude."""
    replayed, direct = replayed.float(), direct.float()
    if replayed.shape != direct.shape:
        return f"gave shape {tuple(replayed.shape)}, the direct call {tuple(direct.shape)}"
    bad = int((~replayed.isfinite() & direct.isfinite()).sum())
    if bad:
        return f"gave {bad} non-finite values of {replayed.numel()} where the direct call gave finite ones"
    scale = float(direct[direct.isfinite()].abs().max()) if direct.isfinite().any() else 0.0
    diff = float((replayed - direct).nan_to_num(0.0).abs().max()) if replayed.numel() else 0.0
    if diff > tolerance * scale:
        return f"differs from the direct call by {diff:.3g} for outputs up to {scale:.3g} (allowed {tolerance:.0%})"
    return None


class CudaGraphRunner:
    """Capture ``fn`` on a static input of one shape; each call copies the input in and replays the graph.

    After capture it replays once on a random input and compares with ``fn`` called directly (`replay_mismatch`),
    raising RuntimeError when they differ: on the H200 every batch-256 graph in benchmarks/gpu_vs_timm.py gave logits
    unlike its uncaptured twin's (NaN, or 15.6 off for logits under 1; the likely cause is the last paragraph's), and
    a graph whose output is wrong must not be timed or used (bench's cuda runtimes then run launch by launch and say
    so).

    Each runner captures on a stream of its own, not ``torch.cuda.graph``'s shared default: PyTorch keys cuBLAS
    workspaces by stream, and destroying one graph frees the workspaces of its capture stream, which every other
    live graph captured there still addresses (pytorch/pytorch#193402). (The illegal memory accesses the H200 leases
    of 2026-11-27 met came from another cause, below: the third lease's still faulted with streams of their own and
    with cuBLAS workspaces off.) Warm-up runs on a second stream, so the capture allocates its
    workspace in the graph's own memory pool rather than reusing an eager one. PyTorch hands out streams from a
    pool of 32 per priority in rotation, across every draw in the process, so a runner shares its capture stream
    with whatever draws the 32nd normal-priority stream after it; a handful of runners are alive at once here.

    The runner keeps ``fn``, and with it the model whose weights the graph reads at their captured addresses. Until
    2026-11-27 it did not, and `fast_inference` with ``cuda_graph_batch`` (and most of gpu_vs_timm's graphs) gave it
    the only reference: the model was collected after capture and its weights' memory went back to the caching
    allocator. On the H200 the graphs then replayed on whatever reused that memory (NaN, logits 15.6 off, and in the
    GPU test the same row of logits for every image, or all zeros, once the direct call had reused it) or, once a
    later capture's ``empty_cache`` had unmapped it, faulted with an illegal memory access; bench's ``cuda``
    runtimes, which hold their model themselves, were unaffected.

    It runs inference only. A training step, which changes the weights each call reads, is `step_graph.StepGraph`'s
    (the trainer's ``--step-graph``, and gpu_vs_timm's graphed steps)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int = 3) -> None:
        self.fn = fn  # the graph reads fn's weights where they lay at capture: they must live as long as it
        self.static_in = example.clone()
        warm = torch.cuda.Stream(priority=-1)  # the high-priority pool: never one of the runners' capture streams
        self.capture_stream = torch.cuda.Stream()  # kept: the graph's workspace entry belongs to this stream
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm), torch.inference_mode():
            for _ in range(warmup):
                fn(self.static_in)
        torch.cuda.current_stream().wait_stream(warm)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.capture_stream), torch.inference_mode():
            self.static_out = fn(self.static_in)
        if self.static_in.is_floating_point():  # replay once on other input, against a direct call
            probe = torch.randn_like(self.static_in)
            with torch.inference_mode():
                replayed = self(probe).clone()
                problem = replay_mismatch(replayed, fn(probe))
            if problem:
                raise RuntimeError(f"CUDA graph replay {problem}: run without the graph")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def fast_inference(
    model: MobileNetV1,
    *,
    backend: str = "triton",
    dtype: str = "bf16",
    device: str = "cuda",
    channels_last: bool = True,
    cuda_graph_batch: int | None = None,
    compile_mode: str | None = "max-autotune-no-cudagraphs",
    compile_backend: str = "inductor",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running ``model`` for inference on ``device`` as fast as the backend allows.

    Input: a float tensor (N, 3, H, W) on ``device`` (any dtype; cast inside). With ``cuda_graph_batch`` the
    callable is captured as a CUDA graph for that batch size and the model's resolution. ``compile_mode`` and
    ``compile_backend`` go to ``torch.compile`` (backend 'compile' only); max-autotune costs minutes of compile time.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed: backend must be one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not allowed: dtype must be one of {', '.join(DTYPES)}")
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not allowed: CUDA is not available on this machine (device='cpu')")
    if cuda_graph_batch and not on_cuda:  # it failed in CUDA's own stream set-up, after the model was built
        raise ValueError(f"cuda_graph_batch={cuda_graph_batch} is not allowed on device={device!r}: CUDA graphs need "
                         "a CUDA device")  # fmt: skip
    torch_dtype = DTYPES[dtype]
    net: nn.Module = FusedMobileNetV1(model) if backend == "triton" else model.fuse()
    net = net.to(device=device, dtype=torch_dtype).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    net_device = next(net.parameters()).device  # "cuda" resolved to its index
    if backend == "compile":
        net = torch.compile(net, mode=compile_mode, backend=compile_backend, dynamic=False)  # one graph per shape

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        if backend == "triton" and x.device == net_device and x.is_floating_point():  # the stem kernel casts, lays out
            return net(x)
        return net(x.to(dtype=torch_dtype).contiguous(memory_format=fmt))

    if cuda_graph_batch:
        res = model.spec.resolution
        example = torch.zeros(cuda_graph_batch, model.spec.in_chans, res, res, device=device, dtype=torch_dtype)
        return CudaGraphRunner(run, example.contiguous(memory_format=fmt))
    return run
