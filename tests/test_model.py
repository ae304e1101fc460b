import json

import pytest
import torch
import torch.nn.functional as F

import mobilenets
from mobilenets import MobileNetV1, ModelSpec, create_model, round_channels
from mobilenets.layers import Conv2dSame
from mobilenets.registry import register_model


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def test_forward_backward_non_square_batch1_every_param_gets_grad():
    model = MobileNetV1(alpha=0.5, num_classes=42, dropout=0.2).train()
    x = torch.randn(1, 3, 97, 131)
    out = model(x)
    assert out.shape == (1, 42)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_on_one_image_at_a_1x1_map_says_batch_size_and_input_size(checkpointing):
    """Training with batch 1 on CIFAR-size images failed deep in BatchNorm ("Expected more than 1 value per channel
    when training", naming a (1, 128, 1, 1) tensor the user never made); the error names the batch size, the input
    size and the ways out. One pixel more a side, or a second image, or eval mode, runs."""
    model = create_model("mobilenet_v1_025", num_classes=3, tf_padding=True).train()
    model.set_grad_checkpointing(checkpointing)
    message = r"batch size 1 at 32x31 px is not allowed in training mode: the final feature map is 1x1 \(stride 32\)"
    with pytest.raises(ValueError, match=message) as err:
        model(torch.randn(1, 3, 32, 31))
    assert "train on batches of 2 or more, or inputs over 32 px" in str(err.value) and "\n" not in str(err.value)
    assert model(torch.randn(1, 3, 32, 33)).shape == (1, 3) and model(torch.randn(2, 3, 32, 31)).shape == (2, 3)
    assert model.eval()(torch.randn(1, 3, 32, 31)).shape == (1, 3)
    backbone = create_model("mobilenet_v1_025", features_only=True, out_indices=(0, 1)).train()
    with pytest.raises(ValueError, match=r"batch size 1 at 4x4 px .* feature map is 1x1 \(stride 4\)"):
        backbone(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("variant,blocks", [("standard", 13), ("shallow", 8), ("conv", 13)])
def test_variants_structure(variant, blocks):
    model = MobileNetV1(variant=variant, num_classes=10, alpha=0.25)
    assert len(model.blocks) == blocks
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == (0 if variant == "conv" else blocks)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_shapes_and_feature_maps(output_stride):
    model = MobileNetV1(alpha=0.25, output_stride=output_stride, num_classes=0).eval()
    x = torch.randn(1, 3, 128, 96)
    feats = model.forward_features(x)
    assert feats.shape == (1, model.num_features, 128 // output_stride, 96 // output_stride)
    final, maps = model.forward_intermediates(x)
    assert [info["reduction"] for info in model.feature_info] == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape[1] == info["num_chs"]
        assert fmap.shape[-2:] == (128 // info["reduction"], 96 // info["reduction"])
    assert torch.equal(maps[-1], feats) and torch.equal(final, feats)
    assert model(x).shape == (1, model.num_features)  # num_classes=0 -> pooled features


def test_output_stride_uses_tfslim_atrous_rates():
    model = MobileNetV1(output_stride=8)
    rates = [b.dw.conv.dilation[0] for b in model.blocks]
    strides = [b.dw.conv.stride[0] for b in model.blocks]
    # Strides 2,4,8 are kept; the stride-2 layers at 16 and 32 become stride 1; rate doubles after each.
    assert strides == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert rates == [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 4]


def test_head_hidden_size_is_the_pre_logits_size_as_timm():
    """timm's models say ``head_hidden_size`` (what ``forward_head(pre_logits=True)`` returns, read by code that
    puts its own head on a backbone); ours had no such attribute."""
    model = create_model("mobilenet_v1_025", num_classes=3, alpha=0.3).eval()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(torch.randn(1, 3, 64, 48)), pre_logits=True)
    assert model.head_hidden_size == pre.shape[1] == 307
    model.reset_classifier(0)
    assert model.head_hidden_size == model(torch.randn(1, 3, 64, 48)).shape[1]


def test_forward_head_and_reset_classifier():
    model = MobileNetV1(alpha=0.25, num_classes=42).eval()
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.forward_head(feats).shape == (2, 42)
    model.reset_classifier(7)
    assert model.forward_head(feats).shape == (2, 7) and model.spec.num_classes == 7
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)


def test_grad_checkpointing_gives_the_same_outputs_and_gradients():
    x = torch.randn(2, 3, 64, 48)
    grads, outs = [], []
    for enable in (False, True):
        torch.manual_seed(0)
        model = MobileNetV1(alpha=0.25, num_classes=42, dropout=0.0).train()
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        runs = []
        hook = model.blocks[3].dw.conv.register_forward_hook(lambda *args, runs=runs: runs.append(1))
        final, maps = model.forward_intermediates(x)
        out = model(x)
        (out.square().sum() + final.sum() + maps[1].sum()).backward()
        assert len(runs) == (4 if enable else 2)  # checkpointed: the block is run again in backward
        hook.remove()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert torch.allclose(outs[0], outs[1])
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-6)  # scripting skips the checkpoints


def test_forward_intermediates_follows_timms_contract():
    import numpy as np
    from timm.models._features import feature_take_indices

    from mobilenets.mobilenet_v1 import take_indices

    for indices in (None, 1, 3, 5, [0], [-1, 1], (0, 2, 4), [-5], [np.int64(1), np.int32(-1)]):
        assert take_indices(5, indices) == feature_take_indices(5, indices)[0]
    assert take_indices(5, np.int64(2)) == [3, 4]  # a NumPy count too
    model = MobileNetV1(alpha=0.25, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and len(maps) == 5
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True, norm=True)
        assert isinstance(last_two, list) and [m.shape for m in last_two] == [m.shape for m in maps[-2:]]
        picked = model.forward_intermediates(x, indices=[0, -2], stop_early=True, intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[3])
        ran = []
        model.blocks[-1].register_forward_hook(lambda *args: ran.append(1))
        model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert ran == []  # the blocks after the last map taken did not run
    for kwargs, words in [
        (dict(output_fmt="NHWC"), "output_fmt='NHWC' is not allowed"),
        (dict(stop_early=True), "stop_early=True is not allowed.*intermediates_only"),
        (dict(indices=6), "indices=6 is not allowed.*1..5"),
        (dict(indices=[5]), r"indices=\[5\] is not allowed.*-5..4"),
    ]:
        with pytest.raises(ValueError, match=words):
            model.forward_intermediates(x, **kwargs)


def test_reset_classifier_takes_timms_global_pool_and_get_classifier():
    model = MobileNetV1(alpha=0.25, num_classes=4, labels=("a", "b", "c", "d")).eval()
    assert model.get_classifier() is model.classifier and model.get_classifier().out_features == 4
    model.reset_classifier(6, "avg")
    assert model.get_classifier().out_features == 6 and model.spec.labels is None
    model.reset_classifier(5, global_pool=None)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    model.reset_classifier(5, global_pool="max")
    assert model.spec.global_pool == "max" and isinstance(model.global_pool, torch.nn.AdaptiveMaxPool2d)
    with pytest.raises(ValueError, match="global_pool='avgmax' is not allowed: global_pool must be one of"):
        model.reset_classifier(5, global_pool="avgmax")


@pytest.mark.parametrize("kwargs", [dict(), dict(tf_padding=True, act="relu6"), dict(variant="conv", alpha=0.25)])
def test_fuse_is_numerically_equivalent(kwargs):
    model = MobileNetV1(num_classes=42, **kwargs).eval()
    _randomize_bn(model)
    fused = model.fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 112, 144)
    with torch.no_grad():
        diff = (fused(x) - model(x)).abs().max().item()
    assert diff <= 1e-5
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_timm_resolves_the_specs_data_config():
    from timm.data import resolve_model_data_config

    spec = dict(resolution=128, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0, interpolation="bilinear")
    model = MobileNetV1(alpha=0.25, num_classes=42, **spec)
    config = resolve_model_data_config(model)
    assert config["input_size"] == (3, 128, 128) and config["crop_mode"] == "center"
    assert {k: config[k] for k in ("mean", "std", "crop_pct", "interpolation")} == {
        k: v for k, v in spec.items() if k != "resolution"
    }
    assert model.default_cfg == model.pretrained_cfg and model.pretrained_cfg["num_classes"] == 42
    model.reset_classifier(0)
    assert model.pretrained_cfg["num_classes"] == 0
    first_conv, head = model.get_submodule("stem.conv"), model.get_submodule("classifier")
    assert first_conv is model.stem.conv and head is model.classifier
    backbone = create_model(model.spec, features_only=True, out_indices=(3, 4))  # timm's features_only keeps it too
    model.classifier = torch.nn.Linear(model.num_features, 5)  # torchvision's way to a new head
    assert model.num_classes == model.pretrained_cfg["num_classes"] == 5
    assert resolve_model_data_config(backbone) == config


def test_tf_padding_is_asymmetric_same():
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2, bias=False)
    x = torch.randn(1, 3, 8, 9)
    # TF SAME for k=3, s=2: even size 8 -> pad (0, 1); odd size 9 -> pad (1, 1)
    expected = F.conv2d(F.pad(x, [1, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)
    sym = F.conv2d(x, conv.weight, stride=2, padding=1)
    assert not torch.allclose(conv(x), sym)
    # a model's strided layers (its stem here) pad so with tf_padding, else symmetrically as PyTorch (timm) does
    x = torch.randn(1, 3, 64, 48)
    for tf_padding, pads in ((True, [0, 1, 0, 1]), (False, [1, 1, 1, 1])):
        stem = MobileNetV1(alpha=0.25, tf_padding=tf_padding).stem.conv
        torch.testing.assert_close(stem(x), F.conv2d(F.pad(x, pads), stem.weight, stride=2))


def test_depth_multiplier_widens_depthwise():
    model = MobileNetV1(alpha=0.25, depth_multiplier=2, num_classes=5).eval()
    dw = model.blocks[0].dw.conv
    assert (dw.in_channels, dw.out_channels, dw.groups) == (8, 16, 8)
    assert model.blocks[0].pw.conv.in_channels == 16
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_round_channels_rule_is_pinned():
    base = [32, 64, 128, 256, 512, 1024]
    assert [round_channels(c, 0.75) for c in base] == [24, 48, 96, 192, 384, 768]
    assert [round_channels(c, 0.5) for c in base] == [16, 32, 64, 128, 256, 512]
    assert [round_channels(c, 0.25) for c in base] == [8, 16, 32, 64, 128, 256]
    assert round_channels(64, 0.6) == 38  # TF-slim int() truncation
    assert round_channels(32, 0.1) == 8  # min_depth floor
    assert round_channels(64, 0.6, divisor=8) == 40  # make-divisible rule
    assert round_channels(32, 0.35, divisor=8) == 16  # 11.2 -> 8 would drop below 90%, so 16
    # a model's default is TF-slim's rule: 0.35 x 32 = 11.2 -> an 11-channel stem (12 under a divisor of 2, 16 of 8)
    assert MobileNetV1(alpha=0.35, num_classes=0).stem.conv.out_channels == 11


def test_resolution_is_not_a_layer_property():
    a, b = MobileNetV1(alpha=0.5), MobileNetV1(alpha=0.5, resolution=128)
    assert [t.shape for t in a.state_dict().values()] == [t.shape for t in b.state_dict().values()]
    assert b.spec.rho == pytest.approx(128 / 224)


def test_torch_export_and_jit_script_match_eager():
    model = MobileNetV1(alpha=0.25, num_classes=42, tf_padding=True).eval()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        ref = model(x)
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), ref, atol=1e-6)
        scripted = torch.jit.script(model)
        assert torch.allclose(scripted(x), ref, atol=1e-6)


@pytest.mark.slow  # about a minute on 2 CPU cores: torch.export reasoning about the symbolic sizes
def test_torch_export_dynamic_height_width_with_tf_padding_as_the_docstring_says():
    """MobileNetV1's docstring: with tf_padding, torch.export's dynamic H/W in multiples of 32 (a free size from any
    minimum fails: the 'SAME' padding depends on each layer's input parity). The plain padding's from-33 rule is
    export.py's (`export_pt2`), tested there."""
    model = MobileNetV1(alpha=0.25, num_classes=5, tf_padding=True).eval()
    dims = {"x": {2: 32 * torch.export.Dim("h", min=2, max=16), 3: 32 * torch.export.Dim("w", min=2, max=16)}}
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes=dims).module()
        x = torch.randn(2, 3, 96, 160)
        assert torch.allclose(program(x), model(x), atol=1e-5)


def test_fx_trace_and_feature_extractor_with_tf_padding():
    from torchvision.models.feature_extraction import create_feature_extractor

    model = MobileNetV1(alpha=0.25, num_classes=42, tf_padding=True).eval()  # as every converted TF model is
    traced = torch.fx.symbolic_trace(model)
    extractor = create_feature_extractor(model, return_nodes={"blocks.4": "s8", "blocks.12": "s32"})
    with torch.no_grad():
        for x in (torch.randn(1, 3, 97, 131), torch.randn(2, 3, 64, 64)):  # padding follows each input's size
            assert torch.equal(traced(x), model(x))
            maps = extractor(x)
            assert torch.equal(maps["s32"], model.forward_features(x))
            assert maps["s8"].shape == model.forward_intermediates(x, indices=[2], intermediates_only=True)[0].shape


def test_spec_json_round_trip():
    spec = ModelSpec(
        alpha=0.75,
        resolution=160,
        variant="shallow",
        act="relu6",
        tf_padding=True,
        num_classes=3,
        labels=("a", "b", "c"),
        name="x",
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["labels"] == ["a", "b", "c"]
    assert create_model(again).spec == spec


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(alpha=0), ["alpha", "0", "(0, 2]"]),
        (dict(alpha=2.5), ["alpha", "2.5", "(0, 2]"]),
        (dict(alpha=float("nan")), ["alpha", "nan"]),
        (dict(resolution=31), ["resolution", "31", ">= 32"]),
        (dict(resolution=224.0), ["resolution", "224.0", "integer"]),
        (dict(output_stride=4), ["output_stride", "4", "8", "16", "32"]),
        (dict(variant="deep"), ["variant", "deep", "standard", "shallow", "conv"]),
        (dict(act="gelu"), ["act", "gelu", "relu6"]),
        (dict(depth_multiplier=0), ["depth_multiplier", "0"]),
        (dict(variant="conv", depth_multiplier=2), ["depth_multiplier", "conv"]),
        (dict(colour="red"), ["colour", "unknown"]),
    ],
)
def test_bad_values_name_parameter_value_and_allowed(kwargs, words):
    with pytest.raises(ValueError) as err:
        create_model("mobilenet_v1_100", **kwargs)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("spec", ["mobilenet_v1_025", 0, {}, ""])
def test_model_spec_argument_must_be_a_spec(spec):
    # with or without overrides, one error naming the value; a falsy non-spec built the default 1.0 model before
    for overrides in ({}, dict(num_classes=3)):
        with pytest.raises(ValueError, match=r"spec=.* is not allowed: spec must be a ModelSpec or None"):
            MobileNetV1(spec, **overrides)
    assert MobileNetV1(None, alpha=0.25, num_classes=3).spec == ModelSpec(alpha=0.25, num_classes=3)


def test_unknown_model_and_duplicate_registration():
    with pytest.raises(ValueError, match="unknown model name 'mobilenet_v9'.*mobilenet_v1_100"):
        create_model("mobilenet_v9")
    with pytest.raises(ValueError, match="already registered"):
        register_model("mobilenet_v1_100", ModelSpec)
    for name in (3, "", None):  # a name create_model cannot ask for, that broke list_models' filters
        with pytest.raises(ValueError, match=rf"^name={name!r} is not allowed: register_model needs a model name"):
            register_model(name, ModelSpec)
    assert mobilenets.list_models("*_025_128") == ["mobilenet_v1_025_128"]


def test_off_grid_names_are_the_names_bench_and_select_print():
    from mobilenets.registry import grid_name, model_spec

    spec = model_spec("mobilenet_v1_045_176")
    assert (spec.alpha, spec.resolution, spec.name) == (0.45, 176, "mobilenet_v1_045_176")
    assert model_spec(grid_name(0.6, 224)).alpha == 0.6 and model_spec("mobilenet_v1_060").resolution == 224
    assert model_spec("0.6-176", num_classes=10) == ModelSpec(alpha=0.6, resolution=176, num_classes=10,
                                                              name="mobilenet_v1_060_176")  # fmt: skip
    for alpha in (0.125, 0.12, 0.5, 1.0, 1.25, 0.0625):  # every name reads back to its width
        assert model_spec(grid_name(alpha, 176)).alpha == alpha and model_spec(grid_name(alpha)).resolution == 224
    assert grid_name(0.125) == "mobilenet_v1_0125" and grid_name(0.12) == "mobilenet_v1_012"
    assert model_spec("0.125-224").name == "mobilenet_v1_0125" and model_spec("mobilenet_v1_0125_96").alpha == 0.125
    with pytest.raises(ValueError, match=r"model name 'mobilenet_v1_300' is not allowed: it reads as alpha=3 at "):
        model_spec("mobilenet_v1_300")
    with pytest.raises(ValueError, match="reads as alpha=0.5 at resolution 8, and resolution must be an integer >= 32"):
        model_spec("mobilenet_v1_050_8")


def test_registry_builders():
    names = mobilenets.list_models()
    assert len(names) == len(set(names)) == 18
    assert mobilenets.mobilenet_v1_050(num_classes=10).spec.alpha == 0.5
    assert mobilenets.mobilenet_v1_shallow().spec.variant == "shallow"
    assert create_model("mobilenet_v1_025_128").spec.resolution == 128


def test_global_pool_avg_max_or_none_as_timm_and_keras_pooling(tmp_path):
    """global_pool 'max' pools by the spatial maximum; '' (Keras pooling=None, timm global_pool='') returns the final
    feature map of a model without classifier; '' under a classifier is one error. Scripting, BN folding, the
    cost table, saving, loading with overrides and reset_classifier all follow the spec's pooling."""
    from mobilenets.complexity import count_complexity
    from mobilenets.spec import SpecError

    torch.manual_seed(0)
    x = torch.randn(2, 3, 97, 131)
    maxed = MobileNetV1(alpha=0.25, num_classes=5, global_pool="max").eval()
    plain = MobileNetV1(alpha=0.25, num_classes=0, global_pool="").eval()
    for m in (maxed, plain):
        _randomize_bn(m)  # activations of O(1), so the comparisons below can fail
    with torch.no_grad():
        feats = maxed.forward_features(x)
        assert torch.equal(maxed.forward_head(feats, pre_logits=True), feats.amax((2, 3)))
        assert torch.equal(plain(x), plain.forward_features(x)) and plain(x).shape == (2, 256, 4, 5)
        for m in (maxed, plain):
            assert torch.allclose(torch.jit.script(m)(x), m(x), atol=1e-6)
            assert torch.allclose(m.fuse()(x), m(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(SpecError, match="global_pool='' is not allowed: .*needs num_classes=0"):
        MobileNetV1(alpha=0.25, num_classes=3, global_pool="")
    with pytest.raises(SpecError, match="global_pool='min' is not allowed"):
        MobileNetV1(alpha=0.25, global_pool="min")
    assert [r.type_stride for r in count_complexity(maxed.spec).layers][-3] == "Max Pool / s1"
    assert "global_pool" not in [r.name for r in count_complexity(plain.spec).layers]  # nothing pooled
    mobilenets.save(maxed, tmp_path / "w")
    assert mobilenets.load(tmp_path / "w").spec.global_pool == "max"
    maps = mobilenets.load(tmp_path / "w", num_classes=0, global_pool="")
    assert maps(x).shape == (2, 256, 4, 5) and maps.spec.global_pool == ""
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    del config["spec"]["global_pool"]  # a folder saved before the field existed: the paper's average pool
    (tmp_path / "w" / "config.json").write_text(json.dumps(config))
    assert mobilenets.load(tmp_path / "w").spec.global_pool == "avg"
    plain.reset_classifier(4)  # a classifier on an unpooled model: the paper's average pool again
    assert plain.spec.global_pool == "avg" and plain(x).shape == (2, 4)
    plain.reset_classifier(0, "")
    assert plain(x).dim() == 4
    with pytest.raises(SpecError, match="needs num_classes=0"):
        plain.reset_classifier(7, "")


def test_a_changed_spec_keeps_no_name_that_describes_other_layers_and_no_labels_of_another_head():
    from mobilenets import ModelSpec, SpecError

    assert mobilenets.create_model("mobilenet_v1_shallow", alpha=0.5).spec.name is None
    assert mobilenets.create_model("mobilenet_v1_conv", channel_divisor=8).spec.name is None
    assert mobilenets.create_model("mobilenet_v1_shallow", resolution=160).spec.name == "mobilenet_v1_shallow"
    assert ModelSpec(name="mine").replace(alpha=0.5).name == "mine"  # the caller's own name stays
    spec = ModelSpec(num_classes=3, labels=("a", "b", "c"))
    assert mobilenets.create_model(spec, num_classes=10).spec.labels is None
    assert mobilenets.MobileNetV1(spec, num_classes=0).spec.labels is None
    assert spec.replace(num_classes=3, dropout=0.1).labels == ("a", "b", "c")
    with pytest.raises(SpecError, match="output_stride=16.0 is not allowed: output_stride must be one of 8, 16, 32"):
        ModelSpec(output_stride=16.0)


def test_weights_of_other_channel_counts_take_no_grid_name(tmp_path):
    from mobilenets import ModelSpec
    from mobilenets.weights import WeightsError

    mobilenets.save(mobilenets.create_model(ModelSpec(alpha=0.3, channel_divisor=8, resolution=96)), tmp_path / "a")
    with pytest.raises(WeightsError, match=r"weights have other channel counts than the requested model "
                                           r"\(channel_divisor=8 there, \[16, 16, 24, 24\]"):  # fmt: skip
        mobilenets.create_model("mobilenet_v1_030_96", weights=tmp_path / "a")
    # timm's rounding (divisor 8) leaves the 1.0 MobileNet's widths as they are: the paper's name fits
    mobilenets.save(mobilenets.create_model(ModelSpec(channel_divisor=8)), tmp_path / "b")
    assert mobilenets.create_model("mobilenet_v1_100", weights=tmp_path / "b").spec.name == "mobilenet_v1_100"


def test_features_only_returns_maps_by_stride_as_timm():
    """timm's detection-backbone call, ``create_model(name, features_only=True, out_indices=...)``, gives the list
    of maps with ``feature_info.channels()`` / ``.reduction()``, the maps forward_intermediates gives, and the
    backbone of a classifier's state dict."""
    full = create_model("mobilenet_v1_025", num_classes=42).eval()
    feats = create_model("mobilenet_v1_025", features_only=True, out_indices=(2, -2, 4)).eval()
    assert feats.load_state_dict(full.state_dict(), strict=False).missing_keys == []
    wrapped = torch.nn.DataParallel(full).state_dict()  # module.* keys: strict=False loaded none of them, silently
    backbone = create_model("mobilenet_v1_025", features_only=True)
    assert backbone.load_state_dict(wrapped, strict=False).missing_keys == []
    assert feats.feature_info.channels() == [64, 128, 256] and feats.feature_info.reduction() == [8, 16, 32]
    assert feats.feature_info.channels(-1) == full.num_features
    assert feats.feature_info.channels([0, 2]) == [64, 256]  # timm's list idx; and effdet's get_dicts call
    assert feats.feature_info.get_dicts(keys=["num_chs", "reduction"])[1] == {"num_chs": 128, "reduction": 16}
    x = torch.randn(1, 3, 97, 64)
    maps = feats(x)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 13, 8), (1, 128, 7, 4), (1, 256, 4, 2)]
    expected = full.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(maps, expected, strict=True))
    grads = []
    for checkpointed in (False, True):  # timm's switch, on the backbone too: same maps and gradients
        feats.set_grad_checkpointing(checkpointed)
        feats.zero_grad()
        sum(m.square().mean() for m in feats(x)).backward()
        grads.append(feats.stem.conv.weight.grad.clone())
    assert feats.grad_checkpointing and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    shallow = create_model("mobilenet_v1_025", features_only=True, out_indices=(0, 1))
    assert not mobilenets.FeatureMaps(full).training and full.feature_info[0]["num_chs"] == 16  # its own, unchanged
    assert len(shallow.blocks) == 3 and len(shallow(x)) == 2  # blocks past the last map are not run
    with pytest.raises(ValueError, match=r"^out_indices=\(5,\) is not allowed"):  # as written, not [5]
        create_model("mobilenet_v1_025", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match=r"out_indices=\(1,\) is not allowed: out_indices needs features_only"):
        create_model("mobilenet_v1_025", out_indices=(1,))


def test_load_state_dict_takes_a_wrapped_models_state_dict():
    """``torch.save(ddp_or_compiled.state_dict())`` in a training script writes ``module.``/``_orig_mod.`` keys;
    loading them into a plain model is what a user does next (timm's load_checkpoint unwraps them too)."""
    source = create_model("mobilenet_v1_025", num_classes=42)
    _randomize_bn(source)
    wrapped = torch.nn.DataParallel(torch.compile(source, backend="eager"))
    state = wrapped.state_dict()
    assert next(iter(state)).startswith("module._orig_mod.")
    target = create_model("mobilenet_v1_025", num_classes=42)
    target.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 48)
    assert torch.equal(target.eval()(x), source.eval()(x))
    assert next(iter(state)).startswith("module.")  # the caller's dict is left as it was
    with pytest.raises(RuntimeError, match="Unexpected key"):  # a partial prefix is no wrapper: keys stay named
        target.load_state_dict({**source.state_dict(), "module.extra": torch.zeros(1)})
    # torch's EMA wrapper keeps n_averaged beside module.*: each key is unwrapped (timm's clean_state_dict), and
    # the wrapper's counter is no weight of the model, so the default strict load takes it (it failed on
    # n_averaged) and strict=False loads every tensor (all-or-nothing stripping loaded none, silently)
    averaged = torch.optim.swa_utils.AveragedModel(source)
    fresh = create_model("mobilenet_v1_025", num_classes=42)
    result = fresh.load_state_dict(averaged.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh.eval()(x), source(x))
    with pytest.raises(RuntimeError, match='Unexpected key.*"n_averaged"'):  # beside unwrapped keys: the model's
        fresh.load_state_dict({**source.state_dict(), "n_averaged": torch.tensor(1)})
    compiled_ema = torch.compile(averaged, backend="eager").state_dict()  # the EMA compiled for eval: its counter
    assert "_orig_mod.n_averaged" in compiled_ema  # sits under the prefix too (it failed as "n_averaged")
    assert create_model("mobilenet_v1_025", num_classes=42).load_state_dict(compiled_ema).unexpected_keys == []


def test_timm_layer_decay_gives_each_block_its_learning_rate():
    """timm's ``create_optimizer_v2(model, layer_decay=...)`` reads ``group_matcher``: stem, each of the 13
    separable blocks, then the classifier at the full rate, as for timm's own mobilenetv1_100."""
    from timm.optim import create_optimizer_v2

    model = create_model("mobilenet_v1_025", num_classes=42)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert len(set(scale.values())) == 1 + 13 + 1 and scale["classifier.weight"] == 1.0
    assert scale["stem.conv.weight"] < scale["blocks.0.dw.conv.weight"] == scale["blocks.0.pw.bn.bias"]
    assert scale["blocks.11.pw.conv.weight"] == 0.5 * scale["blocks.12.dw.conv.weight"] == 0.25


def test_features_only_backbone_scripts():
    """``torch.jit.script(create_model(name, features_only=True))`` failed with "try blocks aren't supported" once
    the batch-1 message's try sat in ``FeatureMaps.forward`` (TorchScript compiles a branch it never takes); it
    scripts, as the classifier does, and gives the eager maps."""
    feats = create_model("mobilenet_v1_025", features_only=True, out_indices=(1, 3)).eval()
    _randomize_bn(feats)
    x = torch.randn(2, 3, 65, 48)
    scripted = torch.jit.script(feats)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(scripted(x), feats(x), strict=True))


class _RaisesChained(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            {}["missing"]
        except KeyError as err:
            raise ValueError("a layer's own error") from err
        return x


@pytest.mark.parametrize("features_only", [False, True])
def test_a_layers_own_value_error_keeps_its_cause(features_only):
    """The batch-1 BatchNorm message's ``except ValueError`` re-raised every other ValueError ``from None``, which
    erased the ``__cause__`` a layer raised it from (the KeyError behind it, gone from the traceback)."""
    model = create_model("mobilenet_v1_025", num_classes=3, features_only=features_only)
    model.blocks[1] = _RaisesChained()
    with pytest.raises(ValueError, match="a layer's own error") as err:
        model(torch.randn(2, 3, 64, 64))
    assert isinstance(err.value.__cause__, KeyError)
