"""Our format's config (input convention, provenance) and create_model(name_or_spec, weights=PATH)."""

import json

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import ModelSpec, weights
from mobilenets.convert import sniff_format
from mobilenets.weights import WEIGHTS_FILE, WeightsError, read_state_dict

from .conftest import data_path

TF_LIKE = ModelSpec(
    alpha=0.25, resolution=96, act="relu6", tf_padding=True, bn_eps=1e-3, num_classes=5, mean=(0.5,) * 3, std=(0.5,) * 3
)


def test_config_records_input_convention_and_provenance(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=5, mean=(0.5,) * 3, std=(0.5,) * 3)
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    prov = weights.source_provenance(src, "test", "unit", "9")
    mobilenets.save(model, tmp_path / "m", provenance=prov)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["input"]["value_range"] == [-1.0, 1.0] and config["input"]["mean"] == [0.5] * 3
    p = config["provenance"]
    assert p["source_sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert (p["source_file"], p["source_bytes"], p["converter_version"]) == ("src.bin", 3, "9")
    assert p["library_version"] == mobilenets.__version__
    assert config["input"]["color"] == "RGB"
    imagenet = weights.input_convention(mobilenets.ModelSpec())
    # the range over all channels: the lowest value of the red channel, the highest of the blue one
    assert imagenet["value_range"] == pytest.approx([-0.485 / 0.229, (1 - 0.406) / 0.225])
    assert imagenet["resize"] == "shorter side to resolution / 0.875 (bilinear), center crop"
    grey = weights.input_convention(mobilenets.ModelSpec(in_chans=1, mean=(0.5,), std=(0.5,)))
    assert grey["color"] == "1 channels"


def test_create_model_with_weights(tmp_path):
    spec = mobilenets.ModelSpec(alpha=0.5, resolution=128, act="relu6", tf_padding=True, bn_eps=1e-3, num_classes=7)
    model = mobilenets.create_model(spec).eval()
    mobilenets.save(model, tmp_path / "m")
    again = mobilenets.create_model("mobilenet_v1_050_128", weights=tmp_path / "m", resolution=160)
    named = spec.replace(resolution=160, name="mobilenet_v1_050_160")  # unnamed weights take the requested name
    assert again.spec == named and not again.training  # saved config wins; overrides on top
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert mobilenets.create_model(spec, weights=tmp_path / "m").spec == spec
    with pytest.raises(WeightsError, match="alpha=0.5.*alpha=0.25"):
        mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "m")
    with pytest.raises(WeightsError, match="variant='standard'.*variant='shallow'"):
        mobilenets.create_model("mobilenet_v1_shallow", weights=tmp_path / "m", alpha=0.5)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mobilenets.create_model("mobilenet_v1_050", weights=tmp_path / "nowhere")


def test_sniff_format(tmp_path):
    cases = {
        "a.tflite": b"\x1c\0\0\0TFL3" + b"\0" * 8,
        "a.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 8,
        "a.pth": b"PK\x03\x04" + b"\0" * 12,
        "a.safetensors": b"\x02\0\0\0\0\0\0\0{}",
    }
    for name, head in cases.items():
        (tmp_path / name).write_bytes(head)
    assert [sniff_format(tmp_path / n) for n in cases] == ["tflite", "keras", "timm", "timm"]
    (tmp_path / "x.onnx").write_bytes(b"\x08\x07\x12\x04" + b"\0" * 12)
    with pytest.raises(WeightsError, match="x.onnx: unknown weights format"):
        sniff_format(tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="missing.tflite: no such file$"):
        sniff_format(tmp_path / "missing.tflite")
    for size in (0, 6):  # an empty or cut-short file is named so, not as an unknown format to look up
        (tmp_path / "cut.tflite").write_bytes(cases["a.tflite"][:size])
        with pytest.raises(WeightsError, match=f"cut.tflite: {size} bytes, too short for any weights file"):
            sniff_format(tmp_path / "cut.tflite")
    # the format given by hand (--from): a missing file is named as missing, not as an unreadable HDF5 file
    from mobilenets.convert import convert

    with pytest.raises(FileNotFoundError, match="missing.h5: no such file$"):
        convert(tmp_path / "missing.h5", "keras")
    with pytest.raises(WeightsError, match="unknown source format 'onnx'; allowed: tflite, keras, timm"):
        convert(tmp_path / "x.onnx", "onnx")


@pytest.mark.parametrize(
    "override,saved",
    [
        (dict(act="relu"), "'relu6'"),
        (dict(tf_padding=False), "True"),
        (dict(bn_eps=1e-5), "0.001"),
        (dict(mean=(0.485, 0.456, 0.406)), r"\(0.5, 0.5, 0.5\)"),
        (dict(std=[0.25, 0.25, 0.25]), r"\(0.5, 0.5, 0.5\)"),
        (dict(channel_divisor=8), "1"),
        (dict(min_channels=16), "8"),
    ],
)
def test_with_weights_a_field_they_fix_cannot_change(tmp_path, override, saved):
    mobilenets.save(mobilenets.create_model(TF_LIKE), tmp_path / "m")
    field = next(iter(override))
    message = f"{field}=.* is not allowed: {field} must be {saved}, the value the weights in .*m were trained with"
    with pytest.raises(ValueError, match=message) as err:
        mobilenets.create_model("mobilenet_v1_025_96", weights=tmp_path / "m", **override)
    assert "\n" not in str(err.value) and "resolution" in str(err.value)  # names what may change
    with pytest.raises(ValueError, match=message):
        mobilenets.load(tmp_path / "m", **override)


def test_with_weights_free_fields_and_saved_values_may_be_given(tmp_path):
    model = mobilenets.create_model(TF_LIKE).eval()
    mobilenets.save(model, tmp_path / "m")
    same = dict(act="relu6", tf_padding=True, bn_eps=1e-3, mean=[0.5] * 3, alpha=0.25)
    free = dict(dropout=0.2, resolution=128, crop_pct=1.0, interpolation="bicubic")
    again = mobilenets.load(tmp_path / "m", **same, **free)
    assert again.spec == TF_LIKE.replace(**free)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    dilated = mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "m", output_stride=16)
    assert dilated.forward_features(x).shape[-2:] == (6, 5)  # a dilated backbone from the same weights


@pytest.mark.parametrize("in_chans", [1, 4])
def test_create_model_with_weights_adapts_the_stem_to_in_chans_as_timm(tmp_path, in_chans):
    """timm's ``pretrained=True, in_chans=1``: create_model(weights=..., in_chans=1) was refused ("in_chans must be
    3"), and a fresh ``in_chans=1`` needed mean and std spelled out. The stem is adapted as timm's adapt_input_conv
    (summed over RGB for one channel), mean/std with it: a gray image then gives the RGB model's logits for it."""
    timm_manipulate = pytest.importorskip("timm.models._manipulate")
    model = mobilenets.create_model(TF_LIKE).eval()
    mobilenets.save(model, tmp_path / "m")
    adapted = mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "m", in_chans=in_chans)
    rgb = model.stem.conv.weight.detach()
    assert torch.equal(adapted.stem.conv.weight, timm_manipulate.adapt_input_conv(in_chans, rgb))
    stats = dict(mean=(0.5,) * in_chans, std=(0.5,) * in_chans)
    assert adapted.spec == TF_LIKE.replace(in_chans=in_chans, **stats, name="mobilenet_v1_025_96")
    assert not adapted.training and adapted.pretrained_cfg["input_size"] == (in_chans, 96, 96)
    assert torch.equal(adapted.blocks[0].dw.conv.weight, model.blocks[0].dw.conv.weight)
    if in_chans == 1:
        gray = torch.rand(2, 1, 96, 80)
        with torch.no_grad():
            torch.testing.assert_close(adapted(gray), model(gray.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"mean=\(0.7,\) is not allowed: mean must be \(0.5,\), the value"):
        mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "m", in_chans=1, mean=(0.7,))
    with pytest.raises(ValueError, match="in_chans=1 is not allowed: in_chans must be 3, the value the weights"):
        mobilenets.load(tmp_path / "m", in_chans=1)  # load rebuilds what was saved; create_model adapts


@pytest.mark.parametrize("how", ["create_model", "load"])
def test_another_class_count_keeps_the_backbone_and_gives_a_fresh_head(tmp_path, how):
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=5, labels=tuple("abcde"))
    mobilenets.save(model, tmp_path / "m")
    saved = read_state_dict(tmp_path / "m" / WEIGHTS_FILE)
    if how == "create_model":
        again = mobilenets.create_model("mobilenet_v1_025_128", weights=tmp_path / "m", num_classes=10)
    else:
        again = mobilenets.load(tmp_path / "m", num_classes=10)
    state = again.state_dict()
    backbone = [k for k in saved if not k.startswith("classifier.")]
    assert len(backbone) == len(state) - 2 and all(torch.equal(state[k], saved[k]) for k in backbone)
    assert again.classifier.out_features == 10 and again.spec.num_classes == 10 and again.spec.labels is None
    assert again(torch.randn(1, 3, 64, 64)).shape == (1, 10) and not again.training
    relabelled = mobilenets.load(tmp_path / "m", num_classes=3, labels=["x", "y", "z"])
    assert relabelled.spec.labels == ("x", "y", "z") and relabelled.classifier.out_features == 3
    features = mobilenets.load(tmp_path / "m", num_classes=0)
    assert features(torch.randn(1, 3, 64, 64)).shape == (1, features.num_features) and features.spec.labels is None
    renamed = mobilenets.load(tmp_path / "m", labels=tuple("vwxyz"))  # same count: the trained head stays
    assert renamed.spec.labels == tuple("vwxyz") and torch.equal(renamed.classifier.weight, saved["classifier.weight"])
    with pytest.raises(ValueError, match="labels='<1 labels>' is not allowed: labels must be 10 labels"):
        mobilenets.load(tmp_path / "m", num_classes=10, labels=("a",))


def test_every_way_to_drop_the_head_drops_the_labels(tmp_path):
    """A spec without classifier refuses labels, so each path to a feature extractor must clear them."""
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=3, labels=("a", "b", "c"))
    mobilenets.save(model, tmp_path / "m")
    for headless in (
        mobilenets.load(tmp_path / "m", num_classes=0),
        mobilenets.load(tmp_path / "m", num_classes=0, global_pool=""),
        mobilenets.create_model("mobilenet_v1_025_128", weights=tmp_path / "m", num_classes=0),
    ):
        assert headless.spec.num_classes == 0 and headless.spec.labels is None
    model.classifier = nn.Identity()  # torchvision style: save records num_classes=0 and no labels
    mobilenets.save(model, tmp_path / "identity")
    assert mobilenets.load(tmp_path / "identity").spec.labels is None
    model.reset_classifier(0)
    assert model.spec.labels is None
    with pytest.raises(ValueError, match="labels='<2 labels>' is not allowed: labels must be None with num_classes=0"):
        mobilenets.load(tmp_path / "m", num_classes=0, labels=("x", "y"))


def test_save_refuses_what_load_cannot_read_and_writes_nothing(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_025", num_classes=3).eval()
    with pytest.raises(WeightsError, match=r"fused MobileNetV1.*is not allowed.*save the model before fuse\(\)"):
        mobilenets.save(model.fuse(), tmp_path / "fused")
    model.classifier = nn.Sequential(nn.Linear(model.num_features, 7))
    with pytest.raises(WeightsError, match="not saved: tensor 'classifier.weight'.*missing.*reset_classifier"):
        mobilenets.save(model, tmp_path / "custom")
    model.classifier = nn.Linear(10, 7)
    with pytest.raises(WeightsError, match="classifier.weight' has shape \\(7, 10\\).*reset_classifier"):
        mobilenets.save(model, tmp_path / "wrong")
    with pytest.raises(WeightsError, match="model=Linear is not allowed: save needs a MobileNetV1"):
        mobilenets.save(nn.Linear(2, 2), tmp_path / "linear")
    backbone = mobilenets.create_model("mobilenet_v1_025", features_only=True)  # a backbone: load cannot rebuild it
    with pytest.raises(WeightsError, match=r"model=FeatureMaps is not allowed: .*save the model before features_only"):
        mobilenets.save(backbone, tmp_path / "backbone")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("in the way")  # a file where the folder would go: it was NotADirectoryError
    for target in (tmp_path / "afile", tmp_path / "afile" / "w"):
        with pytest.raises(WeightsError, match=f"{target}: not saved: {tmp_path / 'afile'} is a file; save writes a"):
            mobilenets.save(mobilenets.create_model("mobilenet_v1_025", num_classes=3), target)
    assert (tmp_path / "afile").read_text() == "in the way"


def test_save_unwraps_compiled_models_and_records_a_swapped_head(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=3, labels=("a", "b", "c")).eval()
    mobilenets.save(torch.compile(model), tmp_path / "compiled")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(mobilenets.load(tmp_path / "compiled")(x), model(x))
    model.classifier = nn.Linear(model.num_features, 7)  # torchvision-style head swap
    mobilenets.save(model, tmp_path / "swapped")
    again = mobilenets.load(tmp_path / "swapped")
    assert again.spec == model.spec.replace(num_classes=7, labels=None)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    model.classifier = nn.Identity()
    mobilenets.save(model, tmp_path / "features")
    assert mobilenets.load(tmp_path / "features").num_classes == 0


def test_names_survive_save_and_name_unnamed_weights(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_100", alpha=0.25, num_classes=3)
    mobilenets.save(model, tmp_path / "named")
    name = mobilenets.load(tmp_path / "named").spec.name
    assert name == "mobilenet_v1_025"
    assert mobilenets.create_model(name, weights=tmp_path / "named").spec == model.spec
    mobilenets.save(mobilenets.MobileNetV1(alpha=0.25, resolution=128, num_classes=3), tmp_path / "unnamed")
    for asked, resolution, expected in [
        ("mobilenet_v1_025_128", None, "mobilenet_v1_025_128"),
        ("mobilenet_v1_025", None, "mobilenet_v1_025_128"),  # the saved resolution wins, and the name says so
        ("mobilenet_v1_025_128", 160, "mobilenet_v1_025_160"),
    ]:
        kwargs = {"resolution": resolution} if resolution else {}
        got = mobilenets.create_model(asked, weights=tmp_path / "unnamed", **kwargs).spec
        assert got.name == expected and got.resolution == (resolution or 128)
    # a name that states a resolution gets it (resolution changes no weight), as a fresh model and train --init do
    for asked, folder in [
        ("mobilenet_v1_025_160", "unnamed"),
        ("0.25-160", "unnamed"),
        ("mobilenet_v1_025_160", "named"),
    ]:
        got = mobilenets.create_model(asked, weights=tmp_path / folder).spec
        assert (got.resolution, got.name) == (160, "mobilenet_v1_025_160"), (asked, folder, got)
    mobilenets.save(mobilenets.MobileNetV1(alpha=0.25, num_classes=3, name="mine"), tmp_path / "mine")
    assert mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "mine").spec.name == "mine"  # kept


def test_converted_weights_refuse_overrides_and_take_a_fresh_head(tmp_path):
    from mobilenets.convert import convert_file

    src = data_path("mobilenet-weights", "tflite", "mobilenet_v1_0.25_128_quant.tflite")
    folder = convert_file(src, tmp_path / "w", classes=1000)
    model = mobilenets.create_model("mobilenet_v1_025_128", weights=folder)
    assert model.spec.name == "mobilenet_v1_025_128" and model.spec.act == "relu6" and model.spec.tf_padding
    for override in (dict(act="relu"), dict(tf_padding=False), dict(bn_eps=1e-5)):
        with pytest.raises(ValueError, match="is not allowed"):
            mobilenets.create_model("mobilenet_v1_025_128", weights=folder, **override)
    ten = mobilenets.create_model("mobilenet_v1_025_128", weights=folder, num_classes=10)
    assert ten.classifier.out_features == 10 and torch.equal(ten.stem.conv.weight, model.stem.conv.weight)


def test_weights_of_other_channel_counts_or_another_format_are_refused_by_name(tmp_path):
    """create_model(name, weights=...) builds the layers the name means: weights rounded to multiples of 8 (timm's
    rule) at alpha 0.35 have 16 stem channels where mobilenet_v1_035 has 11, and are named, not loaded under that
    name. A config.json that is not ours (another tool's, in a folder of the same two file names) is refused."""
    folder = mobilenets.save(mobilenets.create_model(ModelSpec(alpha=0.35, channel_divisor=8)), tmp_path / "w")
    with pytest.raises(WeightsError, match=r"w: weights have other channel counts .*\(channel_divisor=8 there, \[16,"):
        mobilenets.create_model("mobilenet_v1_035", weights=folder)
    assert (
        mobilenets.create_model(ModelSpec(alpha=0.35, channel_divisor=8), weights=folder).stem.conv.out_channels == 16
    )
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": "timm"}))
    with pytest.raises(WeightsError, match="config.json: format 'timm' is not 'mobilenets-v1'"):
        mobilenets.load(folder)


def test_a_weights_file_other_than_the_one_config_describes_is_named_not_loaded(tmp_path):
    """save replaces model.safetensors and then config.json: a kill between them left new tensors under the old
    config, and load built the old spec around them (same shapes: silently). config.json records the weights'
    SHA-256 and load checks it; a folder saved before it recorded one still loads."""
    torch.manual_seed(0)
    a = mobilenets.create_model("mobilenet_v1_025_128", num_classes=3, labels=("x", "y", "z"))
    b = mobilenets.create_model("mobilenet_v1_025_128", num_classes=3, labels=("p", "q", "r"))
    mobilenets.save(a, tmp_path / "a")
    mobilenets.save(b, tmp_path / "b")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["weights_sha256"] == weights.sha256_file(tmp_path / "a" / WEIGHTS_FILE)
    assert torch.equal(mobilenets.load(tmp_path / "a").classifier.weight, a.classifier.weight)
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes((tmp_path / "b" / WEIGHTS_FILE).read_bytes())  # b's tensors, a's config
    with pytest.raises(WeightsError, match=r"model.safetensors: not the weights config.json describes"):
        mobilenets.load(tmp_path / "a")
    del config["weights_sha256"]  # an older folder: no check, as before
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    assert torch.equal(mobilenets.load(tmp_path / "a").classifier.weight, b.classifier.weight)


@pytest.mark.parametrize("how", ["create_model", "load"])
def test_num_classes_1000_from_a_tf_slim_head_drops_background_keeping_the_trained_rows(tmp_path, how):
    """A converted TFLite classifier (1001 outputs, 0 = background) asked for ImageNet's 1000 classes scores them
    with its own rows, as `convert --classes 1000` and timm's label_offset do, not with a fresh random head."""
    from mobilenets.labels import imagenet_labels

    model = mobilenets.create_model(TF_LIKE.replace(num_classes=1001, labels=imagenet_labels(background=True)))
    mobilenets.save(model, tmp_path / "m")
    if how == "create_model":
        again = mobilenets.create_model("mobilenet_v1_025", weights=tmp_path / "m", num_classes=1000)
    else:
        again = mobilenets.load(tmp_path / "m", num_classes=1000)
    assert again.spec.num_classes == 1000 and again.spec.labels == imagenet_labels()
    assert torch.equal(again.classifier.weight, model.classifier.weight[1:])
    assert torch.equal(again.classifier.bias, model.classifier.bias[1:])
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.allclose(again(x), model.eval()(x)[:, 1:], atol=1e-5)  # (GEMM blocking: not bitwise)
    other = mobilenets.load(tmp_path / "m", num_classes=10)  # any other count: a fresh head, as before
    assert other.spec.labels is None and other.classifier.out_features == 10
    relabelled = mobilenets.load(tmp_path / "m", num_classes=1000, labels=[f"c{k}" for k in range(1000)])
    assert relabelled.spec.labels[0] == "c0" and torch.equal(relabelled.classifier.bias, model.classifier.bias[1:])


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, "config.json"])
def test_a_weights_folder_missing_one_file_is_named_by_that_file(tmp_path, capsys, missing):
    """A copy cut short leaves one of the two files: the error names the missing one, on the command line too."""
    mobilenets.save(mobilenets.create_model(TF_LIKE), tmp_path / "m")
    (tmp_path / "m" / missing).unlink()
    other = "config.json" if missing == WEIGHTS_FILE else WEIGHTS_FILE
    with pytest.raises(WeightsError, match=f"weights folder \\({missing} is missing beside its {other}"):
        mobilenets.load(tmp_path / "m")
    from mobilenets.cli import main

    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{missing} is missing" in err and str(tmp_path / "m") in err
