"""Our format's config (input convention, provenance) and create_model(name_or_spec, weights=PATH)."""

import json

import pytest
import torch

import mobilenets
from mobilenets import weights
from mobilenets.convert import sniff_format
from mobilenets.weights import WeightsError


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
    imagenet = weights.input_convention(mobilenets.ModelSpec())
    assert imagenet["value_range"][0] == pytest.approx(-0.485 / 0.229)


def test_create_model_with_weights(tmp_path):
    spec = mobilenets.ModelSpec(alpha=0.5, resolution=128, act="relu6", tf_padding=True, bn_eps=1e-3, num_classes=7)
    model = mobilenets.create_model(spec).eval()
    mobilenets.save(model, tmp_path / "m")
    again = mobilenets.create_model("mobilenet_v1_050_128", weights=tmp_path / "m", resolution=160)
    assert again.spec == spec.replace(resolution=160) and not again.training  # saved config wins; overrides on top
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
