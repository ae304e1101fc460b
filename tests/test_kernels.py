"""Numerics of the Triton kernels on CPU (TRITON_INTERPRET=1) against their PyTorch reference and the model."""

import copy
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilenets import MobileNetV1, dwconv, kernels
from mobilenets.gpu import CudaGraphRunner, FusedMobileNetV1, fast_inference


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
        tol = 1e-5 if "float32" in case["case"][-1] else 2e-2 * max(1.0, case["ref_max_abs"])  # fp16: 11 bits
        assert case["fused_max_abs"] <= tol, case
        assert case["split_max_abs"] <= tol, case
        assert case["tiled_max_abs"] <= tol, case
        assert case["split_channels_last"] and case["rows_channels_last"], case
        assert case["rows_max_abs"] is None or case["rows_max_abs"] <= tol, case
    rows = [case for case in interpreted["layers"] if case["rows_max_abs"] is not None]
    assert {case["case"][-1] for case in rows} == {"torch.float32", "torch.bfloat16", "torch.float16"}
    blocks = {tuple(case["tiled_block"]) for case in interpreted["layers"]}
    first_block = next(cfg for cfg in kernels.SPLIT_CONFIGS if len(cfg) == 4)
    assert (first_block[0], first_block[3]) in blocks  # a block the GPU tunes over, not only the small test one
    tiles = {tuple(case["tiles"]["fused"]) for case in interpreted["layers"]}
    assert tuple(kernels.FUSED_CONFIGS[0][:3]) in tiles  # a tile the GPU tunes over, not only the small test one
    assert any(case["case"][-1] == "torch.float16" for case in interpreted["layers"])


@pytest.mark.slow
def test_stem_kernel_matches_reference_in_every_input_layout(interpreted):
    """The first-layer kernel reads NCHW, NHWC and strided inputs of any float dtype, rounds them to the layer's
    dtype and writes channels_last. fp32: only the summation order differs from the reference; half precision: the
    interpreter also rounds toward zero where the GPU (and the reference's cast) round to nearest, about 2 units in the
    last place (a wrong tap or padding is off by the size of the outputs)."""
    for case in interpreted["stem"]:
        assert case["shape_ok"] and case["channels_last"] and case["dtype_ok"], case
        scale = max(1.0, case["ref_max_abs"])
        tol = 1e-5 * scale if "float32" in case["case"][-2] else 2e-2 * scale
        assert case["max_abs"] <= tol, case
    acts = {case["case"][6]: case["ref_min"] for case in interpreted["stem"]}
    assert acts["none"] < 0 <= acts["relu"]  # the activation is applied, and only where asked
    assert {case["case"][8] for case in interpreted["stem"]} == {"nchw", "nhwc", "strided"}


@pytest.mark.slow
def test_fused_model_matches_eager_model(interpreted):
    for case in interpreted["models"]:
        assert case["triton_max_abs"] <= 1e-4 * max(1.0, case["logit_scale"]), case
        assert case["reference_max_abs"] <= 1e-4 * max(1.0, case["logit_scale"]), case


@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_pointwise_gemm_matches_1x1_conv(act):
    torch.manual_seed(0)
    x = (torch.randn(2, 24, 5, 7) * 4).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(40, 24, 1, 1), torch.randn(40)
    y = kernels.pointwise(x, kernels.prepare_pointwise(weight), bias, act=act)
    pre = torch.nn.functional.conv2d(x, weight, bias)
    ref = kernels._act(pre, act)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert pre.max() > 6 and pre.min() < 0  # both ends of the activation are exercised
    assert torch.allclose(y, ref, atol=1e-4)


def test_unknown_plan_is_refused():
    x = torch.zeros(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="plan='tiled'"):
        kernels.depthwise_separable(x, None, None, None, None, stride=1, plan="tiled")
    if kernels.triton_available():
        with pytest.raises(ValueError, match="plan='split_rows' needs stride 1 and dilation 1, got stride 2"):
            kernels.depthwise_separable(x, None, None, torch.zeros(8, 8), None, stride=2, plan="split_rows")
        with pytest.raises(ValueError, match="tile_w=3 is not allowed: it must be 0 or divide block_m=32"):
            kernels.depthwise(x, None, None, stride=1, block_m=32, tile_w=3)


def test_tuner_keeps_the_fastest_candidate_that_runs():
    cost_ms = {("fused", (1,)): 4.0, ("split", (3,)): 3.0, ("split", (2,)): 2.0}  # fused (0,) fails to launch
    calls = []

    def runner(plan):
        def run(*cfg):
            calls.append((plan, cfg))
            if cfg == (0,):
                raise RuntimeError("out of shared memory")

        return run

    def fake_ms(fn, reps):  # the cost table stands in for CUDA-event timing; each candidate is still run
        fn()
        return cost_ms[calls[-1]]

    runners = {"fused": runner("fused"), "split": runner("split")}
    candidates = [("fused", (1,)), ("fused", (0,)), ("split", (3,)), ("split", (2,))]
    best, times = kernels._fastest(runners, candidates, reps=2, timer=fake_ms)
    assert best == ("split", (2,))
    assert times == {"fused[1]": 4.0, "fused[0]": None, "split[3]": 3.0, "split[2]": 2.0}
    with pytest.raises(RuntimeError, match="no kernel configuration ran"):
        kernels._fastest(runners, [("fused", (0,))], reps=1, timer=fake_ms)


@pytest.mark.slow
def test_triton_depthwise_op_matches_conv2d_autograd(interpreted):
    for case in interpreted["dwconv"]:
        assert case["channels_last"] and case["same_parameter"], case
        # fp32: only the summation order differs; bf16: inputs and weights rounded to 8 mantissa bits
        rel = 1e-5 if case["case"][-1] == "torch.float32" else 3e-2
        for key, scale in zip(("y_max_abs", "dx_max_abs", "dw_max_abs"), case["scales"], strict=True):
            assert case[key] <= rel * max(1.0, scale), (key, case)


@pytest.mark.slow
def test_triton_depthwise_ops_pass_opcheck(interpreted):
    # the fakes' sizes and strides are what Inductor asserts at run time: a mismatch fails only compiled training
    for row in interpreted["dwconv_opcheck"]:
        assert all(row[op] is None for op in ("depthwise3x3", "depthwise3x3_dgrad", "depthwise3x3_wgrad")), row


@pytest.mark.slow
def test_triton_depthwise_backward_computes_only_the_gradients_asked_for(interpreted):
    case = interpreted["dwconv_partial_grad"]
    dx_scale, dw_scale = case["scales"]
    frozen, input_no_grad = case["frozen"], case["input_no_grad"]
    assert frozen["_dgrad_kernel"] == 1 and frozen["_wgrad_kernel"] == 0 and frozen["dw"], case
    assert frozen["dx_max_abs"] <= 1e-5 * max(1.0, dx_scale), case
    assert input_no_grad["_dgrad_kernel"] == 0 and input_no_grad["_wgrad_kernel"] == 1, case
    assert input_no_grad["dw_max_abs"] <= 1e-5 * max(1.0, dw_scale), case


@pytest.mark.slow
def test_triton_depthwise_model_trains_like_pytorch_convs_eager_and_compiled(interpreted):
    case = interpreted["dwconv_model"]
    assert case["swapped"] == 13 and case["same_keys"], case
    for prefix in ("", "compiled_", "inductor_"):
        # Inductor also fuses BatchNorm's reductions, summing in its own order (measured 8e-6)
        assert case[f"{prefix}loss_diff"] <= (1e-4 if prefix == "inductor_" else 1e-5), case
        # fp32 sums in another order, through BatchNorm over 4 images at 1x1 in the last layers; Inductor reorders
        # BatchNorm's sums too: the model with PyTorch's convolutions, compiled, was 1.8e-3 off eager on a 32x32
        # input (3e-4 on kernel_check's 20x18 one, where the Triton layers' model is 4e-4 off)
        allowed = 5e-3 if prefix == "inductor_" else 1e-3
        assert case[f"{prefix}grad_max_abs"] <= allowed * case["grad_scale"], case
    # bf16 autocast: the Triton layers run in bf16 (about 1% from fp32); compiled and eager agree
    assert case["autocast_loss_diff"] <= 0.05 and case["autocast_compiled_loss_diff"] <= 1e-3, case


@pytest.mark.slow
def test_hybrid_depthwise_stride2_input_gradient_is_the_parity_kernel_and_matches_conv2d(interpreted):
    """--depthwise hybrid at stride 2: one launch of `_dgrad_s2_kernel` per backward (never the nine-tap
    `_dgrad_kernel`), with PyTorch's padding and SAME's on even and odd sizes, eager and under Inductor; the forward
    and weight gradient are PyTorch's (exact in fp32)."""
    cases = interpreted["dwconv_hybrid"]
    assert any(c["case"][3] for c in cases) and any(c["case"][5] for c in cases)
    for case in cases:
        assert case["launches"] == {"_dgrad_s2_kernel": 1, "_dgrad_kernel": 0}, case
        assert case["same_class"], case
        amp = case["case"][4]
        assert case["y_dtype"] == ("torch.bfloat16" if amp else "torch.float32"), case
        # fp32: only the summation order of each pixel's 1-4 taps differs; bf16 autocast: inputs rounded to 8 bits
        rel = 3e-2 if amp else 1e-5
        for key, scale in zip(("y_max_abs", "dx_max_abs", "dw_max_abs"), case["scales"], strict=True):
            assert case[key] <= rel * max(1.0, scale), (key, case)


def test_triton_depthwise_layers_fall_back_to_pytorch_off_gpu():
    from mobilenets import dwconv
    from mobilenets.layers import Conv2dSame, fold_bn

    torch.manual_seed(0)
    model = MobileNetV1(alpha=0.25, num_classes=5, tf_padding=True).eval()
    swapped = copy.deepcopy(model)
    assert dwconv.use_depthwise(swapped, "triton") == 13
    assert dwconv.use_depthwise(swapped, "triton") == 0  # already swapped
    assert list(swapped.state_dict()) == list(model.state_dict())
    assert all(isinstance(b.dw.conv, dwconv.TritonDepthwiseConv2d) for b in swapped.blocks)
    # TensorFlow SAME layers (stride 2) stay Conv2dSame, which the fused path and the exporters look for
    same = [isinstance(b.dw.conv, Conv2dSame) for b in swapped.blocks]
    assert same == [isinstance(b.dw.conv, Conv2dSame) for b in model.blocks] and sum(same) == 4
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(swapped(x), model(x), atol=1e-5)
        assert torch.allclose(fold_bn(swapped)(x), model(x), atol=1e-4)  # folded: a biased conv, PyTorch's path
        assert torch.allclose(FusedMobileNetV1(swapped, use_triton=False)(x), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="not a 3x3 depthwise"):
        dwconv.TritonDepthwiseConv2d.from_conv(model.blocks[0].pw.conv)


def test_reference_path_on_cpu_matches_model():
    model = MobileNetV1(alpha=0.5, num_classes=7, output_stride=16).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.allclose(FusedMobileNetV1(model)(x), model(x), atol=1e-5)


def test_stem_reference_is_the_models_first_layer_and_bad_inputs_are_named():
    model = MobileNetV1(alpha=0.5, num_classes=7, act="relu6").eval()
    randomize = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=randomize))
    stem = model.fuse().stem.conv
    x = torch.randn(2, 3, 33, 30)
    with torch.no_grad():
        ref = kernels.stem_reference(x, stem.weight, stem.bias, stride=2, act="relu6")
        assert torch.allclose(ref, model.stem(x), atol=1e-5)
    w_kc = kernels.prepare_stem(stem.weight)
    assert w_kc.shape == (27, 16) and torch.equal(w_kc[5], stem.weight[:, 0, 1, 2])  # row (ci * 3 + i) * 3 + j
    if not kernels.triton_available():
        pytest.skip("triton is not installed")
    with pytest.raises(ValueError, match="input has 4 channels; the weights expect 3"):
        kernels.stem(torch.randn(1, 4, 8, 8), w_kc, stem.bias, stride=2)
    with pytest.raises(ValueError, match="torch.uint8"):
        kernels.stem(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), w_kc, stem.bias, stride=2)


def test_triton_backend_off_gpu_casts_and_lays_out_the_input_itself():
    """Without a GPU the triton backend runs the kernels' PyTorch reference, which gets the input as given (the stem
    kernel would read it in place): fp16 NCHW in, the fp32 model's answer out."""
    model = MobileNetV1(alpha=0.25, num_classes=5).eval()
    run = fast_inference(model, backend="triton", dtype="fp32", device="cpu")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(run(x.half()), model(x.half().float()), atol=1e-4)
        assert torch.allclose(run(x), model(x), atol=1e-5)


def test_fast_inference_validates_arguments():
    model = MobileNetV1(alpha=0.25)
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        fast_inference(model, backend="tensorrt")
    with pytest.raises(ValueError, match="dtype='int4'"):
        fast_inference(model, dtype="int4")
    with pytest.raises(ValueError, match="cuda_graph_batch=1 is not allowed on device='cpu'"):
        fast_inference(model, device="cpu", dtype="fp32", cuda_graph_batch=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_fast_inference_on_cuda_without_a_gpu_is_named():
    with pytest.raises(ValueError, match="device='cuda' is not allowed: CUDA is not available"):
        fast_inference(MobileNetV1(alpha=0.25))


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
        # compile_mode "default": fast_inference's max-autotune default compiles for minutes
        out = fast_inference(model, backend=backend, dtype="bf16", compile_mode="default")(x).float()
        assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


def _calibrated(model: MobileNetV1, x: torch.Tensor) -> MobileNetV1:
    """``model`` in eval mode with each BatchNorm's statistics those of ``x``: at initialisation the activations
    shrink layer by layer to logits near 1e-17 (the H200's GPU test of 2026-11-27), where a comparison relative to
    the largest logit says nothing."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model = model.to(x.device).train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_calibrated_model_gives_logits_of_order_one():
    """The GPU replay tests compare logits relative to the largest: the helper must make them of order one."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert _calibrated(MobileNetV1(alpha=0.25, num_classes=10), x)(x).abs().max() > 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_keeps_the_model_it_replays_alive():
    """The graph reads the weights at the addresses they had at capture. `fast_inference(cuda_graph_batch=...)` gave
    the runner the only reference to its model; once the model was collected, its memory was reused (NaN and wrong
    logits on the H200 leases) or unmapped (illegal memory accesses). Dropped by the caller, it must still replay."""
    import weakref

    from mobilenets.gpu import CudaGraphRunner

    layer = torch.nn.Linear(4096, 4096, device="cuda")
    x = torch.randn(64, 4096, device="cuda")
    with torch.inference_mode():
        expected = layer(x).float()
    runner, alive = CudaGraphRunner(layer, x), weakref.ref(layer)
    del layer
    gc.collect()
    torch.cuda.empty_cache()
    assert alive() is not None, "the runner let its model go"
    # NaN in memory the allocator has free: a replay reading weights that were freed would show it in its output
    filler = torch.full((1 << 26,), float("nan"), device="cuda")
    out = runner(x).float()
    torch.cuda.synchronize()
    del filler
    assert torch.allclose(out, expected, rtol=2e-2, atol=2e-2), (out - expected).abs().max().item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["eager", "compile", "triton"])
def test_cuda_graph_replay_matches_the_uncaptured_path(backend):
    """Every path replayed as a CUDA graph (fast_inference's cuda_graph_batch, bench's cuda runtimes) against the
    same path launch by launch, on an input other than the one captured: in gpu_vs_timm on the H200 each graph's
    logits at batch 256 differed from its twin's (NaN, or 15.6 for logits under 1), and no test had checked one."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 224, 224, device="cuda")
    model = _calibrated(MobileNetV1(num_classes=1000), x)
    kw = dict(backend=backend, dtype="bf16", compile_mode="default")
    direct = fast_inference(model, **kw)
    graph = fast_inference(model, cuda_graph_batch=8, **kw)
    for scale in (1.0, 3.0):  # a second, different input: the replay must read the new one
        replayed = graph(x * scale).clone().float()
        expected = direct(x * scale).float()
        torch.cuda.synchronize()
        assert replayed.isfinite().all() and expected.isfinite().all()
        assert (replayed - expected).abs().max() <= 0.01 * expected.abs().max(), (backend, scale)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_still_replays_after_other_graphs_are_captured_and_dropped():
    """pytorch/pytorch#193402: graphs captured on one stream share its cuBLAS workspace, and dropping one frees it
    under the others, a hazard the runners guard against by capturing on a stream of their own. (It was not the cause
    of the H200 faults of 2026-11-27, which went on with private streams and cuBLAS workspaces off: the collected
    model, test_cuda_graph_keeps_the_model_it_replays_alive.) The graph
    to be dropped is captured first, so that on a shared stream the workspace would be its; a long-K GEMM (split-K,
    which keeps partial sums in the workspace) then writes into freed memory the allocator has handed out again."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16384, 64, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(64, 16384, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = layer(x).float()
    dropped = CudaGraphRunner(layer, x)
    kept = CudaGraphRunner(layer, x)
    dropped(x)
    del dropped
    gc.collect()
    torch.cuda.empty_cache()
    filler = torch.full((1 << 26,), float("nan"), device="cuda")  # takes over memory freed with the graph
    out = kept(x).float()
    torch.cuda.synchronize()
    assert filler.isnan().all(), "the kept graph wrote into memory freed with the other graph"
    assert torch.allclose(out, expected, rtol=2e-2, atol=2e-2), (out - expected).abs().max().item()


@pytest.mark.slow
def test_training_and_split_kernels_compile_for_sm90_within_its_limits(tmp_path):
    """Triton's compiler and bundled ptxas, no GPU: each fixed training kernel config, and each split-plan,
    row-reuse, stem and stride-2 input-gradient config the tuner tries, fits an H100/H200 block without spilling."""
    if not kernels.triton_available():
        pytest.skip("triton is not installed")
    script = Path(__file__).parents[1] / "scripts" / "sm90_compile_check.py"
    out = tmp_path / "sm90.json"
    which = "dwconv,split,rows,stem,dgrad_s2"
    args = [sys.executable, str(script), "--dtypes", "bf16", "--kernels", which, "--json", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if "lacks the CUDA tools" in proc.stderr:
        pytest.skip(proc.stderr.strip()[-300:])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    # 3 block widths x 2 strides x 3 kernels, the split plan's depthwise configs at 2 strides, the row-reuse and stem
    # kernels' configs, the stride-2 input gradient's at 2 paddings
    tuned = 2 * len(kernels.SPLIT_CONFIGS) + len(kernels.ROWS_CONFIGS) + len(kernels.STEM_CONFIGS)
    tuned += 2 * len(dwconv.DGRAD_S2_CONFIGS)
    assert len(rows) == 2 * 3 * 3 + tuned
    assert all(r["registers"] and r["fits"] and r["stack_bytes"] == r["local_bytes"] == 0 for r in rows), rows


@pytest.mark.slow
def test_raw_triton_launches_are_named_in_a_profile(interpreted):
    """A kernel launched from Python has no ATen op around it: without its profiler range, a per-op profile table
    (gpu_vs_timm's by_op_and_shape) would count its GPU time under no layer. With no profiler, no range is opened."""
    labels = interpreted["profile_labels"]
    assert labels["labels"] == ["triton::dw [2, 8, 6, 5]", "triton::dw_rows [2, 8, 6, 5]", "triton::stem [2, 3, 9, 9]"]
    assert labels["unprofiled_is_plain_device"]


def test_replay_mismatch_names_what_makes_a_graph_output_unusable():
    """CudaGraphRunner compares one replay with the direct call (on the H200 graph logits came back NaN, or 15.6 off
    for logits under 1): the rule, on CPU tensors."""
    from mobilenets.gpu import replay_mismatch

    direct = torch.tensor([[0.5, -0.8, 0.1]])
    assert replay_mismatch(direct + 0.004, direct) is None  # rounding: inside 1% of 0.8
    assert "differs from the direct call by 15.6" in replay_mismatch(direct + 15.6, direct)
    nan = direct.clone()
    nan[0, 1] = float("nan")
    assert "1 non-finite values of 3" in replay_mismatch(nan, direct)
    assert "shape (3,)" in replay_mismatch(direct[0], direct)
    assert replay_mismatch(direct.to(torch.bfloat16), direct) is None  # bf16 output against an fp32 call
