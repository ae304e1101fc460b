"""timm MobileNetV1 state dicts: same logits as timm's own model on real photos, channel rounding, wrong files."""

import pickle

import pytest
import torch

from mobilenets import round_channels
from mobilenets.convert import convert
from mobilenets.preprocess import load_batch
from mobilenets.weights import WeightsError

from .conftest import data_path

timm = pytest.importorskip("timm")


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and non-trivial BN statistics (no download), so every tensor's placement matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def photos(spec, resolution):
    paths = [data_path("imagenet-sample", n) for n in ("n01514859_hen.JPEG", "n01532829_house_finch.JPEG")]
    return load_batch(paths, spec, resolution=resolution)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_same_logits_as_timm_on_real_photos(tmp_path, suffix):
    from safetensors.torch import save_file

    theirs = randomized(timm.create_model("mobilenetv1_100", num_classes=1000))
    path = tmp_path / f"mobilenetv1_100{suffix}"
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    torch.save({"state_dict": state}, path) if suffix == ".pth" else save_file(state, str(path))
    ours, prov = convert(path)
    s = ours.spec
    assert (s.alpha, s.channel_divisor, s.act, s.tf_padding, s.bn_eps, s.interpolation) == (
        1.0,
        8,
        "relu6",
        False,
        1e-5,
        "bicubic",
    )
    assert prov["source_format"] == "timm"
    x = photos(s, 160)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.parametrize("alpha", [0.25, 0.75, 1.25])
def test_timm_channel_rounding_is_ours_with_divisor_8(tmp_path, alpha):
    from timm.models.efficientnet import _gen_mobilenet_v1

    theirs = randomized(_gen_mobilenet_v1("mobilenetv1_x", alpha, num_classes=7), seed=1)
    torch.save(theirs.state_dict(), tmp_path / "m.pth")
    ours, _ = convert(tmp_path / "m.pth", "timm")
    assert ours.spec.alpha == alpha and ours.num_features == theirs.num_features
    assert ours.spec.name is None  # widths rounded to 8: no grid name builds these layers
    for c in (32, 64, 128, 256, 512, 1024):
        assert round_channels(c, alpha, divisor=8) == timm.layers.make_divisible(c * alpha, 8)
    x = photos(ours.spec, 128)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_wrong_architectures_are_named(tmp_path):
    from safetensors.torch import save_file

    torch.save(timm.create_model("mobilenetv2_100").state_dict(), tmp_path / "v2.pth")
    with pytest.raises(WeightsError, match="v2.pth: .*depthwise blocks, a MobileNetV1 has 13"):
        convert(tmp_path / "v2.pth", "timm")
    import torchvision

    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "tv_v2.pth")
    with pytest.raises(WeightsError, match="tv_v2.pth: no 'conv_stem.weight'.*'features.0.0.weight'"):
        convert(tmp_path / "tv_v2.pth")
    h_state = timm.create_model("mobilenetv1_100h").state_dict()
    torch.save(h_state, tmp_path / "h.pth")
    with pytest.raises(WeightsError, match="h.pth: unexpected tensor 'conv_head.weight'"):
        convert(tmp_path / "h.pth")
    save_file(h_state, str(tmp_path / "h.safetensors"))  # keys in safetensors' order, not the model's
    with pytest.raises(WeightsError, match=r"h.safetensors: unexpected tensor 'conv_head.weight' \(6 in all\)"):
        convert(tmp_path / "h.safetensors")
    state = timm.create_model("mobilenetv1_100").state_dict()  # each case below changes a copy of it
    torch.save({**state, "blocks.3.2.conv_pw.weight": torch.zeros(512, 256, 1, 1)}, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"blocks.3.2.conv_pw.weight has shape \(512, 256, 1, 1\)"):
        convert(tmp_path / "shape.pth")
    # an extra layer is named by its weight (a Linear's 2-d one too), not by its BatchNorm's buffers first in the file
    torch.save(
        {**state, "extra.bn.running_mean": torch.zeros(8), "extra.fc.weight": torch.zeros(8, 8)}, tmp_path / "x.pth"
    )
    with pytest.raises(WeightsError, match=r"x.pth: unexpected tensor 'extra.fc.weight' \(2 in all\)"):
        convert(tmp_path / "x.pth")
    wide = {**state, "blocks.4.1.conv_pw.weight": torch.zeros(3072, 1024, 1, 1)}  # 3 x 1024: no MobileNetV1's width
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="wide.pth: the last conv_pw has 3072 channels; not a MobileNetV1 with"):
        convert(tmp_path / "wide.pth")
    torch.save(timm.create_model("mobilenetv1_100", num_classes=0).state_dict(), tmp_path / "notop.pth")
    assert convert(tmp_path / "notop.pth")[0].spec.num_classes == 0  # features only, as saved
    with pytest.raises(WeightsError, match=r"notop.pth: has no classifier \(num_classes=0\); it cannot give 1000"):
        convert(tmp_path / "notop.pth", classes=1000)


def test_corrupt_and_unsafe_files(tmp_path):
    torch.save(timm.create_model("mobilenetv1_100").state_dict(), tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="cut.pth: not a readable torch state dict"):
        convert(tmp_path / "cut.pth", "timm")

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv_stem.weight": Payload()}, f, protocol=2)
    with pytest.raises(
        WeightsError, match=r"evil.pth: not a readable torch state dict \(the weights-only unpickler refused"
    ):
        convert(tmp_path / "evil.pth", "timm")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{garbage")
    with pytest.raises(WeightsError, match="bad.safetensors: not a readable safetensors"):
        convert(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk" * 8)  # first bytes say nothing: read as its suffix says
    with pytest.raises(WeightsError, match="junk.safetensors: not a readable safetensors"):
        convert(tmp_path / "junk.safetensors", "timm")


@pytest.mark.parametrize("name", ["mobilenetv1_100", "mobilenetv1_125"])
def test_preprocessing_is_timms_pretrained_cfg(tmp_path, name):
    from PIL import Image

    theirs = timm.create_model(name)
    torch.save(theirs.state_dict(), tmp_path / f"{name}.pth")
    s = convert(tmp_path / f"{name}.pth")[0].spec
    cfg = theirs.pretrained_cfg  # mobilenetv1_125's crop_pct is 0.9, not the 0.875 of the others
    assert (s.crop_pct, s.interpolation, s.mean, s.std) == (
        cfg["crop_pct"],
        cfg["interpolation"],
        cfg["mean"],
        cfg["std"],
    )
    paths = [data_path("imagenet-sample", "n01514859_hen.JPEG")]
    tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=theirs))
    want = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    assert (load_batch(paths, s) - want).abs().mean() < 0.01  # same crop; resize kernels differ (PIL vs torch)


def test_hugging_face_timm_repo_layout_converts(tmp_path):
    """timm's Hub repos hold model.safetensors beside timm's own config.json: timm weights, not ours."""
    import json

    from safetensors.torch import save_file

    theirs = randomized(timm.create_model("mobilenetv1_100"))
    repo = tmp_path / "mobilenetv1_100.ra4_e3600_r224_in1k"
    repo.mkdir()
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(repo / "model.safetensors"))
    hub_config = {"architecture": "mobilenetv1_100", "num_classes": 1000, "pretrained_cfg": theirs.pretrained_cfg}
    (repo / "config.json").write_text(json.dumps(hub_config))
    ours, prov = convert(repo / "model.safetensors")
    assert prov["source_format"] == "timm" and ours.spec.num_classes == 1000
    x = photos(ours.spec, 128)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    (repo / "config.json").unlink()  # model.safetensors alone (downloaded by itself): no config says it is ours
    assert convert(repo / "model.safetensors")[1]["source_format"] == "timm"


def test_files_are_read_by_their_bytes_not_their_suffix(tmp_path):
    """A torch zip saved as .safetensors and a safetensors file saved as .bin both convert (torch.load alone hands
    any *.safetensors path to safetensors, which calls a torch zip's header "too large")."""
    from safetensors.torch import save_file

    theirs = randomized(timm.create_model("mobilenetv1_100", num_classes=5))
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "torch_zip.safetensors")
    save_file(state, str(tmp_path / "pytorch_model.bin"))
    x = photos(convert(tmp_path / "pytorch_model.bin")[0].spec, 128)
    for name in ("torch_zip.safetensors", "pytorch_model.bin"):
        ours, _ = convert(tmp_path / name, "timm")
        with torch.no_grad():
            assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-5), name


@pytest.mark.parametrize(
    ("layout", "ema_key", "prefix"),
    [("timm train.py", "state_dict_ema", "module."), ("DeiT", "model_ema", "_orig_mod."), ("DDP+compile", None, "")],
)
def test_training_checkpoints_unwrap_like_timm(tmp_path, layout, ema_key, prefix):
    """Checkpoints as training scripts save them: the EMA weights are taken where present (timm's load_checkpoint
    prefers them), keys of wrapped models lose DataParallel's and torch.compile's prefixes, and the provenance says
    which checkpoint key the weights came from."""
    raw, ema = randomized(timm.create_model("mobilenetv1_100", num_classes=5), seed=1), None
    state = {f"{prefix}{k}": v for k, v in raw.state_dict().items()}
    if ema_key is None:  # DataParallel around a compiled model
        ckpt = {"state_dict": {f"module._orig_mod.{k}": v for k, v in raw.state_dict().items()}}
    else:
        ema = randomized(timm.create_model("mobilenetv1_100", num_classes=5), seed=2)
        outer = "state_dict" if ema_key == "state_dict_ema" else "model"
        ckpt = {outer: state, ema_key: {f"{prefix}{k}": v for k, v in ema.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "checkpoint.pth.tar")
    ours, prov = convert(tmp_path / "checkpoint.pth.tar", "timm")
    assert prov["timm"]["checkpoint_key"] == (ema_key or "state_dict")
    x = photos(ours.spec, 128)
    with torch.no_grad():
        assert torch.allclose(ours(x), (ema or raw)(x), atol=1e-5, rtol=1e-5), layout


def test_converted_weights_name_their_source_by_name_and_hash_not_its_path(tmp_path, monkeypatch):
    """Published weights must not carry the converting user's directories: config.json names the source file by its
    base name and SHA-256 only (an absolute ``source_path`` was recorded before), typed absolute or relative. Converting
    the same file again into the folder still replaces it without --overwrite (the SHA-256 says it is that file), also
    over a folder an earlier version wrote with ``source_path``."""
    import hashlib
    import json

    from safetensors.torch import save_file

    from mobilenets.convert import convert_file

    home = tmp_path / "home" / "alice-private" / "downloads"
    home.mkdir(parents=True)
    src = home / "mobilenetv1_100.safetensors"
    theirs = randomized(timm.create_model("mobilenetv1_100", num_classes=5))
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(src))
    monkeypatch.chdir(home)
    for typed in (src, src.name):
        out = convert_file(typed, tmp_path / "w")
        text = (out / "config.json").read_text()
        assert "alice-private" not in text and str(tmp_path) not in text, typed
        prov = json.loads(text)["provenance"]
        assert "source_path" not in prov
        assert prov["source_file"] == src.name
        assert prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    config["provenance"]["source_path"] = str(src)  # as earlier versions wrote it
    (tmp_path / "w" / "config.json").write_text(json.dumps(config))
    assert convert_file(src, tmp_path / "w") == tmp_path / "w"  # the same file: replaced without --overwrite
