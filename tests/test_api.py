"""The public API's contracts: ModelSpec validation, names that follow alpha and resolution, the registry."""

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets import ModelSpec, create_model, registry
from mobilenets.registry import grid_name, model_spec, register_model


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(interpolation="foo"), "interpolation='foo' is not allowed: interpolation must be one of 'bilinear'"),
        (dict(labels="abc", num_classes=3), "labels='abc' is not allowed: labels must be a sequence of class names"),
        (dict(labels=(1, 2), num_classes=2), r"labels=\(1, 2\) is not allowed"),
        (
            dict(labels=("a", "b"), num_classes=0),
            "labels='<2 labels>' is not allowed: labels must be None with num_classes=0",
        ),
        (dict(mean="abc"), "mean='abc' is not allowed: mean must be 3 numbers, one per input channel"),
        (dict(std=(0.5, 0.5)), r"std=\(0.5, 0.5\) is not allowed: std must be 3 positive numbers"),
        (dict(std=(0.5, 0.0, 0.5)), "std must be 3 positive numbers"),
        (dict(in_chans=1, std=(0.2,) * 3), r"std=\(0.2, 0.2, 0.2\) is not allowed: std must be 1 .*in_chans=1"),
        (dict(in_chans=4, mean=(0.5,) * 2), r"mean=\(0.5, 0.5\) is not allowed: mean must be 4 numbers"),
        (dict(resolution=True), "resolution=True is not allowed"),
        (dict(alpha=True), "alpha=True is not allowed"),
        (dict(tf_padding="no"), "tf_padding='no' is not allowed: tf_padding must be True or False"),
        (dict(resolution=np.float64(96.0)), r"resolution=np.float64\(96.0\) is not allowed: resolution must be an int"),
    ],
)
def test_spec_rejects_values_that_would_fail_later(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        ModelSpec(**kwargs)
    assert "\n" not in str(err.value)


def test_spec_accepts_numpy_numbers_and_stores_python_ones():
    spec = ModelSpec(
        alpha=np.float32(0.5),
        resolution=np.int64(96),
        num_classes=np.int32(3),
        output_stride=np.int64(16),
        dropout=np.float64(0.2),
        mean=np.array([0.5, 0.5, 0.5], dtype=np.float32),
        std=[0.25, 0.25, 0.25],
        labels=["a", "b", "c"],
    )
    assert (spec.alpha, spec.resolution, spec.num_classes, spec.output_stride) == (0.5, 96, 3, 16)
    assert type(spec.alpha) is float and type(spec.resolution) is int and type(spec.output_stride) is int
    assert spec.mean == (0.5, 0.5, 0.5) and type(spec.mean[0]) is float and spec.labels == ("a", "b", "c")
    assert ModelSpec.from_json(spec.to_json()) == spec
    gray = ModelSpec(in_chans=1, mean=(0.5,), std=(0.25,))
    assert create_model(gray, alpha=0.25).stem.conv.in_channels == 1


def test_in_chans_alone_gives_mean_and_std_for_its_channels():
    """``create_model(name, in_chans=1)`` was a SpecError (the RGB mean left at 3 values); mean and std left at
    ImageNet's follow in_chans (averaged for one channel, repeated in turn for more), so do a spec's own on
    ``replace(in_chans=...)``, and the model's pretrained_cfg says them. Given ones are kept."""
    model = create_model("mobilenet_v1_025", in_chans=1, num_classes=3)
    mean, std = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
    assert model.spec.mean == pytest.approx((mean,)) and model.spec.std == pytest.approx((std,))
    assert model.pretrained_cfg["mean"] == model.spec.mean and model.pretrained_cfg["input_size"][0] == 1
    assert model.train()(torch.randn(2, 1, 40, 48)).shape == (2, 3)
    assert ModelSpec(in_chans=4).mean == (0.485, 0.456, 0.406, 0.485)
    tf = ModelSpec(mean=(0.5,) * 3, std=(0.5,) * 3)
    assert tf.replace(in_chans=1).std == (0.5,) and tf.replace(in_chans=1).replace(in_chans=3) == tf
    assert ModelSpec(in_chans=1, mean=(0.2,)).mean == (0.2,) and ModelSpec(in_chans=1).replace(std=(0.3,)).std == (0.3,)
    assert tf.replace(in_chans=np.int64(1)) == tf.replace(in_chans=1)  # a NumPy count too (it kept the 3 values)


def test_spec_repr_shortens_labels():
    spec = ModelSpec(labels=tuple(f"class{i}" for i in range(1000)))
    text = repr(spec)
    assert "labels=<1000 labels>" in text and "class999" not in text and len(text) < 500
    assert "alpha=1.0" in text and "name=None" in text and "labels=None" in repr(ModelSpec())


def test_grid_names_follow_alpha_and_resolution():
    assert create_model("mobilenet_v1_100", alpha=0.5).spec.name == grid_name(0.5, 224) == "mobilenet_v1_050"
    assert model_spec("mobilenet_v1_025_128", resolution=160).name == "mobilenet_v1_025_160"
    assert model_spec("mobilenet_v1_045_176", alpha=0.5).name == "mobilenet_v1_050_176"  # off-grid names too
    assert model_spec("mobilenet_v1_100", num_classes=10).name == "mobilenet_v1_100"
    assert model_spec("mobilenet_v1_100", alpha=0.5, name="mine").name == "mine"  # an explicit name wins
    assert model_spec("mobilenet_v1_100", variant="shallow").name is None  # no grid name describes it
    assert model_spec("mobilenet_v1_shallow", resolution=160).name == "mobilenet_v1_shallow"  # not a grid name
    spec = ModelSpec(alpha=0.75, name="mobilenet_v1_075")
    assert spec.replace(resolution=192).name == "mobilenet_v1_075_192"
    assert mobilenets.MobileNetV1(spec, alpha=0.25).spec.name == "mobilenet_v1_025"
    assert ModelSpec(name="custom").replace(alpha=0.5).name == "custom"


def test_off_grid_names_build_the_width_and_resolution_they_spell():
    """bench and select print models off the paper's grid by `grid_name` (``mobilenet_v1_045_176``, 224 when the
    resolution is left out) or as ALPHA-RESOLUTION (``0.45-176``); `create_model` must build that very model from
    either, and a registered name moved off its layers no longer names it."""
    for name in ("mobilenet_v1_045_176", "0.45-176"):
        spec = model_spec(name)
        assert (spec.alpha, spec.resolution, spec.name) == (0.45, 176, "mobilenet_v1_045_176")
    spec = model_spec("mobilenet_v1_125", num_classes=10)
    assert (spec.alpha, spec.resolution, spec.name, spec.num_classes) == (1.25, 224, "mobilenet_v1_125", 10)
    assert model_spec("mobilenet_v1_shallow", alpha=0.5).name is None  # not the model called mobilenet_v1_shallow
    with pytest.raises(ValueError, match="unknown model name 'resnet50'; known models: mobilenet_v1_100, "):
        model_spec("resnet50")
    with pytest.raises(ValueError, match="create_model needs a model name or a ModelSpec, got int"):
        create_model(3)


def test_timm_and_torchvision_habits_get_the_way_to_real_weights(tmp_path):
    """A timm or torchvision user's first call asks for downloaded weights (``pretrained=True``, ``weights=True``,
    ``weights="DEFAULT"``); none are bundled, so the error says how to get real ones instead of calling
    ``pretrained`` an unknown ModelSpec field or looking for a folder named DEFAULT. ``pretrained=False`` is what
    create_model does anyway, and timm's name ``mobilenetv1_100`` gets ours in its error."""
    assert create_model("mobilenet_v1_025", pretrained=False, num_classes=7).spec.num_classes == 7
    for kwargs in ({"pretrained": True}, {"weights": True}, {"weights": "DEFAULT"}, {"weights": "IMAGENET1K_V1"},
                   {"weights": "imagenet"}):  # fmt: skip
        key, value = next(iter(kwargs.items()))
        with pytest.raises(ValueError, match=rf"^{key}={value!r} is not allowed: .*mobilenets convert FILE"):
            create_model("mobilenet_v1_025", **kwargs)
    with pytest.raises(ValueError, match=r"'mobilenetv1_100' \(timm's spelling: here it is 'mobilenet_v1_100'\)"):
        create_model("mobilenetv1_100")


def test_each_builder_function_builds_its_named_model():
    """``mobilenets.mobilenet_v1_075()`` and the other builders are timm/torchvision-style entry points: each must
    build the model its name and docstring promise (Table 4-6 rows), with the keyword overrides applied."""
    import torch

    builders = {"mobilenet_v1_100": 1.0, "mobilenet_v1_075": 0.75, "mobilenet_v1_050": 0.5, "mobilenet_v1_025": 0.25}
    with torch.device("meta"):  # no memory for Conv MobileNet's 29M parameters
        for name, alpha in builders.items():
            spec = getattr(mobilenets, name)(num_classes=7).spec
            assert (spec.name, spec.alpha, spec.variant, spec.num_classes) == (name, alpha, "standard", 7)
        for variant in ("shallow", "conv"):
            spec = getattr(mobilenets, f"mobilenet_v1_{variant}")(resolution=160).spec
            assert (spec.name, spec.variant, spec.resolution) == (f"mobilenet_v1_{variant}", variant, 160)


def test_list_models_filters_like_timm():
    assert mobilenets.list_models("mobilenet_v1_050*") == [
        "mobilenet_v1_050",
        "mobilenet_v1_050_192",
        "mobilenet_v1_050_160",
        "mobilenet_v1_050_128",
    ]
    assert mobilenets.list_models(["*_shallow", "*_conv"]) == ["mobilenet_v1_shallow", "mobilenet_v1_conv"]
    assert len(mobilenets.list_models("mobilenet_v1_*", exclude_filters="*_1[26]?")) == 18 - 8
    assert mobilenets.list_models("resnet*") == []
    assert mobilenets.list_models() == mobilenets.list_models("")


def test_list_models_pretrained_lists_what_create_model_pretrained_builds():
    """timm's ``list_models(pretrained=True)`` was a TypeError; it lists the names ``create_model(name,
    pretrained=True)`` builds, checked against create_model rather than trusted: none, nothing is bundled."""
    buildable = []
    for name in mobilenets.list_models():
        try:
            create_model(name, pretrained=True)
            buildable.append(name)
        except ValueError as exc:
            assert "no weights are bundled" in str(exc)
    assert mobilenets.list_models(pretrained=True) == buildable
    assert mobilenets.list_models("mobilenet_v1_050*", pretrained=True) == []
    assert mobilenets.list_models("*_conv", "", pretrained=False) == ["mobilenet_v1_conv"]  # the old places stay
    with pytest.raises(ValueError, match="pretrained='yes' is not allowed: pretrained must be True or False"):
        mobilenets.list_models(pretrained="yes")


def test_timm_create_model_keywords_that_select_nothing_here_are_taken():
    """timm's train.py builds with ``exportable``/``scriptable``, ``drop_path_rate=args.drop_path`` (None unset) and
    ``checkpoint_path=''``: each was "unknown ModelSpec field". Unset or flag values build the same model; a value
    that would do something in timm is an error naming it."""
    plain = create_model("mobilenet_v1_025", num_classes=3)
    ported = create_model("mobilenet_v1_025", num_classes=3, exportable=True, scriptable=None, no_jit=False,
                          drop_path_rate=None, drop_block_rate=0.0, checkpoint_path="")  # fmt: skip
    assert ported.spec == plain.spec
    for kwargs, message in [
        (dict(drop_path_rate=0.1), "drop_path_rate=0.1 is not allowed: drop_path_rate must be 0 or None"),
        (dict(checkpoint_path="x.pth"), "checkpoint_path='x.pth' is not allowed: .* weights=DIR"),
        (dict(exportable="yes"), "exportable='yes' is not allowed: exportable must be True, False or None"),
    ]:
        with pytest.raises(ValueError, match=message):
            create_model("mobilenet_v1_025", **kwargs)


def test_timm_train_py_call_with_its_unset_nones_builds_the_default():
    """timm's train.py also passes ``num_classes=args.num_classes``, ``global_pool=args.gp``, ``bn_eps``,
    ``bn_momentum`` and ``drop_rate``, None when unset, which timm.create_model drops; here each None was refused
    (or "unknown ModelSpec field" for bn_momentum), so the ported call still failed."""
    plain = create_model("mobilenet_v1_025")
    ported = create_model("mobilenet_v1_025", pretrained=False, in_chans=None, num_classes=None, drop_rate=None,
                          drop_path_rate=None, drop_block_rate=None, global_pool=None, bn_momentum=None,
                          bn_eps=None, scriptable=False, checkpoint_path="")  # fmt: skip
    assert ported.spec == plain.spec
    with pytest.raises(ValueError, match=r"^bn_momentum=0.01 is not allowed: bn_momentum must be None"):
        create_model("mobilenet_v1_025", bn_momentum=0.01)
    assert create_model("mobilenet_v1_025", include_top=False, pooling=None).spec.global_pool == ""  # Keras' None


def test_register_model_checks_its_function_when_the_model_is_created(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the names below vanish after the test
    register_model("test_api_not_a_spec", lambda: {"alpha": 0.5})
    with pytest.raises(ValueError, match="model 'test_api_not_a_spec': its registered function returned dict, not"):
        create_model("test_api_not_a_spec")
    with pytest.raises(ValueError, match="spec_fn=.*is not allowed.*needs a function"):
        register_model("test_api_not_callable", ModelSpec())
    with pytest.raises(ValueError, match="model name 'mobilenet_v1_100' is already registered"):
        register_model("mobilenet_v1_100", ModelSpec)
    register_model("test_api_tiny", lambda: ModelSpec(alpha=0.25, num_classes=2, name="test_api_tiny"))
    assert create_model("test_api_tiny").spec.alpha == 0.25


def test_keras_input_shape_and_classifier_activation_are_understood():
    """``keras.applications.MobileNet(input_shape=(128, 128, 1), classifier_activation=None, ...)`` ported: each was
    "unknown ModelSpec field". input_shape is (height, width, channels) -> resolution and in_chans; the logits the
    model returns are classifier_activation None, Keras' default softmax is an error, not silently dropped."""
    model = create_model("mobilenet_v1_025", input_shape=(128, 128, 1), classes=7, classifier_activation=None)
    assert (model.spec.resolution, model.spec.in_chans, model.num_classes) == (128, 1, 7)
    assert model.spec == create_model("mobilenet_v1_025", resolution=128, in_chans=1, num_classes=7).spec
    assert model.spec.name == "mobilenet_v1_025_128"
    assert create_model("mobilenet_v1_050", input_shape=(None, None, 3)).spec == model_spec("mobilenet_v1_050")
    for kwargs, message in [
        (dict(input_shape=(160, 128, 3)), r"input_shape=\(160, 128, 3\) is not allowed: .* the sizes equal or None"),
        (dict(input_shape=(160, 160, 3), resolution=128), "resolution=128 is not allowed with input_shape="),
        (dict(classifier_activation="softmax"), "classifier_activation='softmax' is not allowed: .* logits"),
    ]:
        with pytest.raises(ValueError, match=message):
            create_model("mobilenet_v1_025", **kwargs)


def test_keras_include_top_pooling_and_timm_drop_rate_are_understood():
    """Code ported from ``keras.applications.MobileNet(include_top=False, pooling=...)`` or timm's
    ``create_model(..., drop_rate=...)`` builds what those libraries build, not 'unknown ModelSpec field'."""
    import torch

    x = torch.randn(1, 3, 96, 64)
    maps = create_model("mobilenet_v1_025", include_top=False)  # Keras' default pooling=None: the feature map
    assert maps.num_classes == 0 and maps.spec.global_pool == "" and maps(x).shape == (1, 256, 3, 2)
    pooled = mobilenets.mobilenet_v1_025(include_top=False, pooling="max")
    assert pooled.spec.global_pool == "max" and pooled(x).shape == (1, 256)
    assert create_model("mobilenet_v1_025", num_classes=42, pooling="max").spec.global_pool == "max"
    assert create_model(ModelSpec(alpha=0.25, num_classes=0), pooling=None).spec.global_pool == ""
    assert create_model("mobilenet_v1_025", drop_rate=0.2).head_drop.p == 0.2
    assert create_model("mobilenet_v1_025", classes=42).num_classes == 42  # Keras' name for num_classes
    assert create_model("mobilenet_v1_025", include_top=False, classes=42).num_classes == 0  # ignored, as Keras does
    no_top = create_model("mobilenet_v1_025", include_top=False, global_pool="max")  # timm's name for pooling='max'
    assert no_top.num_classes == 0 and no_top(x).shape == (1, 256)  # was "not allowed with pooling=None", unwritten
    for kwargs, message in (
        (dict(pooling=None, num_classes=42), "pooling=None is not allowed: .* needs include_top=False"),
        (dict(pooling=None), "global_pool='' is not allowed: .* needs num_classes=0"),  # the name's 1000 classes
        (dict(pooling="mean"), "pooling='mean' is not allowed: pooling must be one of None, 'avg', 'max'"),
        (dict(include_top=0), "include_top=0 is not allowed: include_top must be True or False"),
        (dict(include_top=False, num_classes=42), "num_classes=42 is not allowed with include_top=False"),
        (dict(pooling="max", global_pool="avg"), "global_pool='avg' is not allowed with pooling='max'"),
        (dict(drop_rate=0.2, dropout=0.1), "dropout=0.1 is not allowed with drop_rate=0.2"),
    ):
        with pytest.raises(ValueError, match=message):
            create_model("mobilenet_v1_025", **kwargs)
