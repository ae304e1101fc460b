"""Keras applications .h5 import: the real alpha-0.25 body against an independent NumPy forward pass written the way
Keras computes it (NHWC, ZeroPadding2D((0, 1), (0, 1)) + 'valid' for stride 2), heads, and bad files."""

import shutil

import h5py
import numpy as np
import pytest
import torch

from mobilenets.convert import convert
from mobilenets.preprocess import load_batch
from mobilenets.weights import WeightsError

from .conftest import data_path

STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)  # conv_dw_1 .. conv_dw_13


def keras_file():
    return data_path("mobilenet-weights", "keras", "mobilenet_2_5_224_tf_no_top.h5")


def _w(f, layer, field):
    group = f[layer]
    names = []
    group.visit(names.append)
    (name,) = [n for n in names if n.split("/")[-1] == f"{field}:0"]
    return np.asarray(group[name], dtype=np.float64)


def _bn_relu6(f, layer, x):
    g, b, m, v = (_w(f, layer, k) for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    return np.clip((x - m) / np.sqrt(v + 1e-3) * g + b, 0, 6)


def _conv(x, k, stride, depthwise):
    """NHWC conv, float64: stride 1 pads 1 on every side ('same'), stride 2 pads (0, 1) then 'valid' (Keras)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0)) if stride == 1 else ((0, 0), (0, 1), (0, 1), (0, 0))
    x = np.pad(x, pad)
    n, h, w, c = x.shape
    oh, ow = (h - 3) // stride + 1, (w - 3) // stride + 1
    out = 0
    for i in range(3):
        for j in range(3):
            patch = x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out = out + (patch * k[i, j, :, 0] if depthwise else patch @ k[i, j])
    return out


def keras_reference_features(path, x_nhwc: np.ndarray) -> np.ndarray:
    with h5py.File(path, "r") as f:
        x = _bn_relu6(f, "conv1_bn", _conv(x_nhwc, _w(f, "conv1", "kernel"), 2, False))
        for n, stride in enumerate(STRIDES, start=1):
            x = _bn_relu6(f, f"conv_dw_{n}_bn", _conv(x, _w(f, f"conv_dw_{n}", "depthwise_kernel"), stride, True))
            x = _bn_relu6(f, f"conv_pw_{n}_bn", x @ _w(f, f"conv_pw_{n}", "kernel")[0, 0])
    return x.mean(axis=(1, 2))


@pytest.fixture(scope="module")
def body():
    return convert(keras_file())


def test_spec_of_the_real_keras_body(body):
    model, prov = body
    s = model.spec
    assert (s.alpha, s.resolution, s.act, s.tf_padding, s.bn_eps, s.num_classes) == (0.25, 224, "relu6", True, 1e-3, 0)
    assert s.mean == (0.5, 0.5, 0.5) and s.std == (0.5, 0.5, 0.5) and model.num_features == 256
    assert prov["source_sha256"].startswith("dbdb03ee2a22") and prov["keras"]["top"] is False
    n_params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if "running" in n
    )
    assert n_params == 218_544  # SOURCE.md: values in the file


def test_keras_body_matches_an_independent_numpy_forward(body):
    model, _ = body
    paths = [data_path("imagenet-sample", n) for n in ("n01514859_hen.JPEG", "n01440764_tench.JPEG")]
    x = load_batch(paths, model.spec, resolution=96)  # 96 -> 48, 24, 12, 6, 3: even at every stride-2 layer
    with torch.no_grad():
        ours = model(x).double().numpy()
    ref = keras_reference_features(keras_file(), x.permute(0, 2, 3, 1).double().numpy())
    assert ours.shape == ref.shape == (2, 256)
    assert np.abs(ours - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    assert np.abs(ours[0] - ours[1]).max() > 0.1  # the two photos give different features


def _copy(tmp_path, name="mobilenet_2_5_224_tf.h5"):
    dst = tmp_path / name
    shutil.copy(keras_file(), dst)
    return dst


def _add_top(path, classes=1000, seed=0):
    rng = np.random.default_rng(seed)
    kernel, bias = rng.normal(0, 0.05, (1, 1, 256, classes)), rng.normal(0, 0.1, classes)
    with h5py.File(path, "a") as f:
        g = f.create_group("conv_preds").create_group("conv_preds")
        g["kernel:0"], g["bias:0"] = kernel.astype(np.float32), bias.astype(np.float32)
        f.attrs["layer_names"] = np.append(f.attrs["layer_names"], np.bytes_("conv_preds"))
    return kernel[0, 0].astype(np.float32), bias.astype(np.float32)


def test_with_top_the_head_is_conv_preds(tmp_path, body):
    kernel, bias = _add_top(_copy(tmp_path))
    model, _ = convert(tmp_path / "mobilenet_2_5_224_tf.h5", "keras")
    assert model.spec.num_classes == 1000 and model.spec.labels[0].startswith("tench")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = body[0](x)
        assert torch.allclose(model(x), feats @ torch.from_numpy(kernel) + torch.from_numpy(bias), atol=1e-4)
    with pytest.raises(WeightsError, match="1000-class head; cannot map it to 1001"):
        convert(tmp_path / "mobilenet_2_5_224_tf.h5", classes=1001)


def test_wrong_shapes_wrong_architecture_and_corrupt_files(tmp_path):
    bad = _copy(tmp_path)
    with h5py.File(bad, "a") as f:
        group = f["conv_dw_5"]["conv_dw_5"]
        del group["depthwise_kernel:0"]
        group["depthwise_kernel:0"] = np.zeros((3, 3, 48, 1), np.float32)
    with pytest.raises(WeightsError, match=r"224_tf.h5: conv_dw_5/depthwise_kernel has shape \(48, 1, 3, 3\)"):
        convert(bad)
    v2 = tmp_path / "mobilenet_v2.h5"
    with h5py.File(v2, "w") as f:
        f.attrs["layer_names"] = np.array([b"Conv1", b"bn_Conv1", b"block_1_expand"])
        f.create_group("Conv1").create_group("Conv1")["kernel:0"] = np.zeros((3, 3, 3, 32), np.float32)
    with pytest.raises(WeightsError, match="mobilenet_v2.h5: no layers 'conv1'.*MobileNetV2"):
        convert(v2)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(keras_file().read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="cut.h5: "):
        convert(cut, "keras")


def test_the_resolution_comes_from_the_file_name_and_files_without_layer_names_still_convert(tmp_path):
    """Keras names its files mobilenet_{alpha}_{rows}_tf[_no_top].h5; a renamed file (a download saved as
    weights.h5) says nothing, and gets 224 with provenance saying so. Files written by Keras 3's legacy-HDF5 path
    may lack the root's ``layer_names`` attribute: their groups are the layers."""
    model, prov = convert(_copy(tmp_path, "mobilenet_2_5_160_tf_no_top.h5"))
    assert model.spec.resolution == 160 and prov["keras"]["resolution_from"] == "file name"
    renamed = _copy(tmp_path, "weights.h5")
    with h5py.File(renamed, "a") as f:
        del f.attrs["layer_names"]
    model, prov = convert(renamed)
    assert model.spec.resolution == 224 and prov["keras"]["resolution_from"] == "default 224"
    assert model.num_features == 256


def test_a_file_missing_a_layer_or_a_head_names_what_is_missing(tmp_path):
    with pytest.raises(
        WeightsError, match=r"^\S+no_top.h5: has no classifier \(include_top=False\); it cannot give 1000"
    ):
        convert(keras_file(), classes=1000)
    path = _copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["conv_dw_3_bn"]["conv_dw_3_bn"]["gamma:0"]
    with pytest.raises(WeightsError, match="224_tf.h5: layer 'conv_dw_3_bn' has no 'gamma' weights"):
        convert(path)
    damaged = _copy(tmp_path, "damaged.h5")
    with h5py.File(damaged, "a") as f:  # a kernel of text: h5py cannot read it as numbers
        del f["conv1"]["conv1"]["kernel:0"]
        f["conv1"]["conv1"]["kernel:0"] = np.array([b"not a kernel"])
    with pytest.raises(WeightsError, match=r"damaged.h5: corrupt or unreadable Keras weights \(OSError: "):
        convert(damaged)
    with h5py.File(damaged, "a") as f:
        del f["conv1"]["conv1"]["kernel:0"]
        f["conv1"]["conv1"]["kernel:0"] = np.zeros((27, 8), np.float32)  # flattened: no 3 x 3 x 3 x 8 kernel
    with pytest.raises(WeightsError, match=r"damaged.h5: conv1/kernel has shape \(27, 8\), expected a 4-d kernel"):
        convert(damaged)
    with h5py.File(path, "a") as f:  # a cut-off model: conv1 is there, its last layer is not
        del f["conv_pw_13"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"conv_pw_13"])
    with pytest.raises(WeightsError, match=r"no layers 'conv1' ... 'conv_pw_13' \(not a Keras MobileNet file"):
        convert(path)
