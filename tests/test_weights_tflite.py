"""TFLite import: exact per layer against the reference interpreter, top-1 agreement end to end, corrupt files."""

import json

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets import cli, weights
from mobilenets.convert import convert, convert_file
from mobilenets.convert.tflite_oracle import (
    agreement,
    interpreter_outputs,
    normalize,
    uint8_activations,
    uint8_crops,
)
from mobilenets.weights import WeightsError

from .conftest import data_path

TFLITE = "mobilenet-weights/tflite/mobilenet_v1_{}_quant.tflite"


def tflite_file(name: str):
    return data_path(*TFLITE.format(name).split("/"))


def sample_images(step: int):
    return sorted(data_path("imagenet-sample").glob("*.JPEG"))[::step]


@pytest.fixture(scope="module")
def m025():
    return convert(tflite_file("0.25_128"))


def test_spec_and_provenance_come_from_the_file(m025):
    model, prov = m025
    s = model.spec
    got = (s.alpha, s.resolution, s.act, s.tf_padding, s.bn_eps, s.num_classes)
    assert got == (0.25, 128, "relu6", True, 1e-3, 1001)
    assert s.labels[0] == "background" and s.labels[1].startswith("tench")
    # uint8 input with scale 1/128, zero point 128: q/255 normalised with mean = std = 128/255 is (q - 128) / 128
    x = normalize(torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1), s).flatten()
    assert torch.allclose(x, torch.tensor([-1.0, 0.0, 127 / 128]), atol=1e-6)
    assert prov["source_sha256"] == "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785"
    assert prov["source_format"] == "tflite" and prov["converter_version"]
    assert model.num_features == 256 and model.classifier.weight.shape == (1001, 256)


def test_identity_batchnorm_is_bit_exact(m025):
    model, _ = m025
    bn = model.blocks[3].pw.bn
    x = torch.randn(2, bn.num_features, 5, 5)
    assert torch.equal(bn(x), x + bn.bias.view(1, -1, 1, 1))


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")
def test_every_layer_matches_the_interpreter_within_half_a_step(m025):
    """Fed the interpreter's own (dequantized) input, each of our 27 conv layers reproduces its output up to that
    output's uint8 rounding (half a quantization step): weights, biases, layouts and TF SAME padding are exact."""
    pytest.importorskip("ai_edge_litert")
    model, _ = m025
    u8 = uint8_crops([data_path("imagenet-sample", "n01514859_hen.JPEG")], model.spec)
    _, it = interpreter_outputs(tflite_file("0.25_128"), u8, preserve=True)
    acts = sorted(
        (d for d in it.get_tensor_details() if d["name"].split(";")[0].endswith("Relu6")), key=lambda d: d["index"]
    )
    layers = [model.stem] + [m for b in model.blocks for m in (b.dw, b.pw)]
    assert len(acts) == len(layers) == 27
    prev = normalize(u8, model.spec)
    for layer, d in zip(layers, acts, strict=True):
        scale, zero = d["quantization"]
        theirs = (torch.from_numpy(it.get_tensor(d["index"]).astype(np.float32)) - zero) * scale
        theirs = theirs.permute(0, 3, 1, 2)
        with torch.no_grad():
            ours = layer(prev)
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() <= scale / 2 + 1e-5, d["name"].split(";")[0]
        prev = theirs


@pytest.mark.parametrize("name", ["0.25_128", "0.5_160"])
def test_top1_agrees_with_the_interpreter_on_real_images(name, m025):
    pytest.importorskip("ai_edge_litert")
    model = m025[0] if name == "0.25_128" else convert(tflite_file(name))[0]
    u8 = uint8_crops(sample_images(6), model.spec)  # 42 ImageNet photos
    ref, _ = interpreter_outputs(tflite_file(name), u8)
    with torch.no_grad():
        ours = model(normalize(u8, model.spec)).softmax(1).numpy()
    stats = agreement(ours, ref)
    # uint8 activations in the interpreter vs float32 here: agreement is high but cannot be 100% (see the benchmark)
    assert stats["top1_agreement_tie_aware"] >= 0.95, stats
    assert stats["prob_diff_mean"] < 0.05, stats
    with torch.no_grad(), uint8_activations(model, tflite_file(name)):  # round activations as the interpreter does
        emulated = model(normalize(u8, model.spec)).softmax(1).numpy()
    closer = agreement(emulated, ref)
    assert closer["prob_diff_mean"] < stats["prob_diff_mean"] / 1.5, (closer, stats)


def test_classes_1000_drops_background_and_round_trips(tmp_path, m025):
    model, _ = m025
    out = convert_file(tflite_file("0.25_128"), tmp_path / "m1000", classes=1000)
    m1000 = mobilenets.create_model("mobilenet_v1_025_128", weights=out)
    assert m1000.spec.num_classes == 1000 and m1000.spec.labels[0].startswith("tench") and m1000.spec.tf_padding
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(m1000(x), model(x)[:, 1:], atol=1e-5)  # same rows; a 1000-wide GEMM may round apart
    config = json.loads((out / "config.json").read_text())
    assert config["provenance"]["source_file"] == "mobilenet_v1_0.25_128_quant.tflite"
    assert config["input"]["value_range"] == [-1.0, 127 / 128]
    with pytest.raises(WeightsError, match="alpha=0.25.*alpha=0.5"):
        mobilenets.create_model("mobilenet_v1_050", weights=out)
    name = mobilenets.load(out).spec.name  # the grid's name, which builds these layers: it reads the folder back
    assert name == "mobilenet_v1_025_128" and mobilenets.create_model(name, weights=out).spec.name == name


@pytest.mark.parametrize("classes", [1001, 1000])
def test_converted_imagenet_weights_evaluate_on_wnid_named_folders(tmp_path, m025, classes):
    """ImageNet-layout folders (Imagenette's val: one folder per wnid) score a converted ImageNet model directly:
    each wnid folder is matched to its class's output (after "background" in the 1001-way head)."""
    from mobilenets.trainer import evaluate_weights

    weights_dir = tmp_path / "m"
    if classes == 1001:
        mobilenets.save(m025[0], weights_dir)
    else:
        convert_file(tflite_file("0.25_128"), weights_dir, classes=1000)
    val = tmp_path / "val"
    for wnid in ("n01440764", "n03000684"):  # tench, chain saw
        (val / wnid).mkdir(parents=True)
        for photo in sorted(data_path("imagenette", "val", wnid).glob("*.JPEG"))[:10]:
            (val / wnid / photo.name).symlink_to(photo)
    result = evaluate_weights(weights_dir, val, workers=0, threads=1)
    assert result["images"] == 20
    assert set(result["per_class_top1"]) == {"tench, Tinca tinca", "chain saw, chainsaw"}
    assert result["top1"] >= 0.3  # 1000-way: chance is 0.001
    if classes == 1000:  # its ONNX export scores the same under ONNX Runtime, through the same folder matching
        from mobilenets.export import export_onnx
        from mobilenets.trainer import ConfigError

        onnx = export_onnx(mobilenets.load(weights_dir), tmp_path / "m.onnx")
        scored = evaluate_weights(onnx, val, workers=0, threads=1)
        assert scored["per_class_top1"] == result["per_class_top1"] and scored["top1"] == result["top1"]
        assert abs(scored["loss"] - result["loss"]) < 1e-3 * result["loss"]
        with pytest.raises(ConfigError, match=r"resolution=96 is not allowed for .*m.onnx: its graph takes 128x128"):
            evaluate_weights(onnx, val, resolution=96)


def test_a_1000_way_head_without_names_evaluates_wnid_folders_as_imagenet_classes(tmp_path):
    """Weights saved without class names but with ImageNet's 1000 outputs are matched to wnid folders by ImageNet's
    order, not by the sorted folder list; the two ImageNet classes named "crane" stay apart."""
    from mobilenets.trainer import evaluate_weights

    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=1000).eval()
    assert not model.spec.labels
    mobilenets.save(model, tmp_path / "m")
    photos = sorted(data_path("imagenette", "val", "n01440764").glob("*.JPEG"))[:2]
    for wnid in ("n02012849", "n03126707"):  # crane (the bird, output 134) and crane (the machine, 517)
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for photo in photos:
            (tmp_path / "val" / wnid / photo.name).symlink_to(photo)
    result = evaluate_weights(tmp_path / "m", tmp_path / "val", workers=0, threads=1)
    assert set(result["per_class_top1"]) == {"crane [134]", "crane [517]"} and result["images"] == 4


def test_truncated_corrupt_and_foreign_files(tmp_path):
    data = tflite_file("0.25_128").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut.tflite: truncated TFLite file: \d+ bytes, but its flatbuffer"):
        convert(tmp_path / "cut.tflite", "tflite")
    (tmp_path / "text.tflite").write_text("hello world, not a model")
    with pytest.raises(WeightsError, match="text.tflite: not a TFLite flatbuffer"):
        convert(tmp_path / "text.tflite", "tflite")
    with pytest.raises(WeightsError, match="text.tflite: unknown weights format"):
        convert(tmp_path / "text.tflite")
    with pytest.raises(WeightsError, match="cannot map a 1001-class head to 10 classes"):
        convert(tflite_file("0.25_128"), classes=10)
    with pytest.raises(
        WeightsError, match="quant.tflite: weights are for alpha=0.25, the requested model has alpha=0.5"
    ):
        convert(tflite_file("0.25_128"), expect="mobilenet_v1_050_160")
    assert convert(tflite_file("0.25_128"), expect="mobilenet_v1_025")[0].spec.resolution == 128


def test_cli_convert_and_errors(tmp_path, capsys):
    assert cli.main(["convert", str(tflite_file("0.25_128")), "--from", "tflite", "--out", str(tmp_path / "o")]) == 0
    assert "alpha=0.25 resolution=128 act" in capsys.readouterr().out
    assert weights.read_config(tmp_path / "o")["spec"].num_classes == 1001
    # another input size is recorded as asked, and the file's own beside it (the graph took 128)
    assert cli.main(["convert", str(tflite_file("0.25_128")), "--out", str(tmp_path / "r"), "--resolution", "160"]) == 0
    assert "alpha=0.25 resolution=160 (the file's: 128)" in capsys.readouterr().out
    config = weights.read_config(tmp_path / "r")
    assert (config["spec"].resolution, config["provenance"]["file_resolution"]) == (160, 128)
    assert config["spec"].name == "mobilenet_v1_025_160"
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert cli.main(["convert", str(tmp_path / "bad.h5"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.h5" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    (tmp_path / "notes.txt").write_text("mine")  # a file where --out needs a folder: one line, not NotADirectoryError
    inside = tmp_path / "notes.txt" / "w"
    assert cli.main(["convert", str(tflite_file("0.25_128")), "--out", str(inside)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out={inside} is not allowed: {tmp_path / 'notes.txt'} is a file" in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _example_in_process(monkeypatch, capsys, *args: str) -> tuple[str | None, str, str]:
    """examples/predict_imagenet.py ARGS run in this process as ``__main__`` (runpy reads its module code afresh, so
    it sees this test's $MOBILENETS_DATA and directory): (the message it exits with, None where it returned; stdout;
    stderr). Started as a command it costs 3.5 s of importing torch: each test still starts it as one once."""
    import runpy
    import sys

    from .conftest import REPO

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [str(REPO / "examples" / "predict_imagenet.py"), *args])
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        message = None
    except SystemExit as exc:
        assert isinstance(exc.code, str), exc.code  # a message: exit status 1, the message on stderr
        message = exc.code
    out, err = capsys.readouterr()
    return message, out, err


def test_example_prints_sensible_top5(tmp_path):
    import subprocess
    import sys

    from .conftest import REPO

    data_path("mobilenet-weights")
    script = REPO / "examples" / "predict_imagenet.py"
    tench = data_path("imagenet-sample", "n01440764_tench.JPEG")
    hen = data_path("imagenet-sample", "n01514859_hen.JPEG")
    args = [sys.executable, str(script), str(tench), str(hen), "--weights", str(tmp_path / "w")]
    args += ["--tflite", str(tflite_file("0.5_160"))]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("converted") and lines[1] == "n01440764_tench.JPEG"
    assert "tench" in lines[2] and lines[7] == "n01514859_hen.JPEG"
    assert any(line.split("%", 1)[1].strip() == "hen" for line in lines[8:13])  # in the top-5 (0.5_160 says vulture)


def test_example_does_not_reuse_weights_of_another_file(tmp_path, monkeypatch, capsys):
    """A weights folder converted earlier is used only for the --tflite and --classes asked for; it silently gave
    the 0.75_192 model's top-5 for --tflite 0.25_128 and kept 1000 classes for --classes 1001."""
    import subprocess
    import sys

    from .conftest import REPO

    script = REPO / "examples" / "predict_imagenet.py"
    hen = data_path("imagenet-sample", "n01514859_hen.JPEG")
    w = tmp_path / "w"
    convert_file(tflite_file("0.5_160"), w, classes=1000)
    for other in (
        ["--tflite", str(tflite_file("0.25_128"))],
        ["--tflite", str(tflite_file("0.5_160")), "--classes", "1001"],
    ):
        message, out, err = _example_in_process(monkeypatch, capsys, str(hen), "--weights", str(w), *other)
        assert message and out == err == "", (out, err)
        assert "\n" not in message and f"--weights {w} holds mobilenet_v1_0.5_160_quant.tflite" in message
    run = subprocess.run(  # the default folder is named after the file and classes: a new one converts
        [sys.executable, str(script), str(hen), "--tflite", str(tflite_file("0.25_128")), "--classes", "1001"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    assert run.stdout.startswith(
        "converted mobilenet_v1_0.25_128_quant.tflite -> runs/weights/mobilenet_v1_0.25_128_quant-1001"
    )
    assert weights.read_config(tmp_path / "runs/weights/mobilenet_v1_0.25_128_quant-1001")["spec"].num_classes == 1001


def test_example_names_the_missing_file_it_would_check_the_weights_against(tmp_path, monkeypatch, capsys):
    """A converted folder is checked against the --tflite file (by its SHA-256): without the shared data that file
    is missing, and the check was a FileNotFoundError traceback, not the example's one-line 'not found'."""
    import os
    import subprocess
    import sys

    from .conftest import REPO

    script = REPO / "examples" / "predict_imagenet.py"
    hen = data_path("imagenet-sample", "n01514859_hen.JPEG")
    convert_file(tflite_file("0.75_192"), tmp_path / "runs/weights/mobilenet_v1_0.75_192_quant-1000", classes=1000)
    env = {**os.environ, "MOBILENETS_DATA": str(tmp_path / "nowhere")}
    run = subprocess.run([sys.executable, str(script), str(hen)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)  # fmt: skip
    assert run.returncode == 1 and run.stdout == "", run.stdout
    assert run.stderr.count("\n") == 1 and "mobilenet_v1_0.75_192_quant.tflite: not found" in run.stderr, run.stderr
    monkeypatch.setenv("MOBILENETS_DATA", env["MOBILENETS_DATA"])
    monkeypatch.chdir(tmp_path)
    args = ["--weights", "runs/weights/mobilenet_v1_0.75_192_quant-1000", "--classes", "1000"]
    message, out, err = _example_in_process(monkeypatch, capsys, str(hen), *args)
    assert message and out == err == "", (out, err)
    assert "\n" not in message and "mobilenet_v1_0.75_192_quant.tflite: not found" in message, message


def test_example_takes_folders_and_names_an_unreadable_image_in_one_line(tmp_path, monkeypatch, capsys):
    """The example's IMAGE arguments: a folder was an IsADirectoryError traceback and a file that is not an image an
    ImageError traceback; a folder is now searched for images (as `mobilenets predict` searches it), and a bad or
    missing file is one line naming it, exit status 1, nothing printed on stdout."""
    import shutil
    import subprocess
    import sys

    from .conftest import REPO

    script = REPO / "examples" / "predict_imagenet.py"
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(data_path("imagenet-sample", "n01514859_hen.JPEG"), photos)
    (photos / "readme.txt").write_text("not an image, and not named like one: skipped")
    w = tmp_path / "w"
    convert_file(tflite_file("0.25_128"), w, classes=1000)

    def run(*images):
        return subprocess.run([sys.executable, str(script), *map(str, images), "--weights", str(w)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = run(photos)
    assert ok.returncode == 0 and ok.stdout.splitlines()[0] == "n01514859_hen.JPEG", ok.stderr
    (photos / "broken.jpg").write_text("not a JPEG")
    for images, named in (((photos,), "broken.jpg: not a readable image"), ((tmp_path / "no.jpg",), "no.jpg: no such")):
        message, out, err = _example_in_process(monkeypatch, capsys, *map(str, images), "--weights", str(w))
        assert message and out == err == "", (out, err)
        assert "\n" not in message and named in message, message


def _random_tf_model(resolution: int, num_classes: int = 11) -> mobilenets.MobileNetV1:
    torch.manual_seed(resolution)
    m = mobilenets.MobileNetV1(
        alpha=0.25, resolution=resolution, act="relu6", tf_padding=True, bn_eps=1e-3, num_classes=num_classes
    )
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2)
            mod.bias.data.normal_(0, 0.2)
    return m.eval()


@pytest.mark.parametrize(
    "resolution, options",
    [(96, {}), (100, {}), (96, {"store": "fp16"}), (96, {"store": "int8"}), (96, {"head": "fc"})],
    ids=["float", "float-odd-sizes", "fp16-weights", "int8-per-channel-weights", "fully-connected-head"],
)
def test_float_tflite_round_trip_is_exact_against_the_interpreter(tmp_path, resolution, options):
    """A float TFLite file written from a random model (BN folded, TF-slim graph) converts back to the same function:
    the interpreter and the converted model agree to float32 rounding, at even and odd (asymmetric SAME) sizes, with
    float16 or per-channel int8 weights (+ DEQUANTIZE ops) and with a FULLY_CONNECTED head."""
    pytest.importorskip("ai_edge_litert")
    from .tflite_writer import mobilenet_graph, to_bytes

    original = _random_tf_model(resolution)
    path = tmp_path / "float.tflite"
    path.write_bytes(to_bytes(mobilenet_graph(original, **options)))
    model, prov = convert(path)
    s = model.spec
    assert (s.alpha, s.resolution, s.num_classes, s.mean, s.tf_padding) == (0.25, resolution, 11, (0.5,) * 3, True)
    assert s.labels is None and prov["tflite"]["input_dtype"] == "FLOAT32"
    x = torch.rand(3, 3, resolution, resolution) * 2 - 1
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path))
    it.allocate_tensors()
    ref = []
    for xi in x:
        it.set_tensor(it.get_input_details()[0]["index"], xi.permute(1, 2, 0).unsqueeze(0).numpy())
        it.invoke()
        ref.append(torch.from_numpy(it.get_tensor(it.get_output_details()[0]["index"])[0].copy()))
    with torch.no_grad():
        ours = model(x).softmax(1)
    assert (ours - torch.stack(ref)).abs().max().item() < 1e-5


def test_non_mobilenet_tflite_graph_is_rejected(tmp_path):
    from .tflite_writer import mobilenet_graph, to_bytes

    path = tmp_path / "residual.tflite"
    path.write_bytes(to_bytes(mobilenet_graph(_random_tf_model(64), extra_op=True)))
    with pytest.raises(WeightsError, match="residual.tflite: operator 5 is ADD, which a MobileNetV1"):
        convert(path)


def test_the_oracles_uint8_crops_are_the_eval_transforms_crops():
    """The interpreter is compared with our model on `uint8_crops`; they must be the pixels `eval_crop` keeps (the
    comparison alone cannot tell: both sides would see the same wrong crop)."""
    from mobilenets.preprocess import eval_crop, read_image

    path = data_path("imagenet-sample", "n01514859_hen.JPEG")
    spec = mobilenets.ModelSpec(resolution=128, crop_pct=0.75, interpolation="bicubic")
    assert torch.equal(uint8_crops([path], spec)[0], eval_crop(spec)(read_image(path)))


def test_graphs_off_the_mobilenet_pattern_are_named_and_a_conv_without_bias_gets_zeros(tmp_path):
    """Each way a file leaves TF-slim's graph is one line naming the operator or tensor (not "corrupt file" with a
    KeyError); a conv whose bias input is absent (-1, as TFLite allows) adds nothing."""
    import tflite

    from .tflite_writer import mobilenet_graph, to_bytes

    def written(edit, name):
        g = mobilenet_graph(_random_tf_model(64))
        edit(g)
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(to_bytes(g))
        return path

    def no_bias_and_valid_1x1(g):
        g.ops[0][1][2] = -1
        g.ops[2][4]["Padding"] = tflite.Padding.VALID  # Conv2d_1_pointwise: for a 1x1 conv VALID is SAME

    model, _ = convert(written(no_bias_and_valid_1x1, "no_bias"))
    assert torch.count_nonzero(model.stem.bn.bias) == 0 and torch.count_nonzero(model.blocks[0].dw.bn.bias) > 0
    valid = written(lambda g: g.ops[1][4].update(Padding=tflite.Padding.VALID), "valid")
    with pytest.raises(WeightsError, match="valid.tflite: operator 1 .* uses VALID padding; MobileNetV1 uses SAME"):
        convert(valid)
    branch = written(lambda g: g.ops[1][1].__setitem__(0, 0), "branch")  # op 1 reads the input, not op 0's output
    with pytest.raises(WeightsError, match="branch.tflite: operator 1 .DEPTHWISE_CONV_2D. does not continue the"):
        convert(branch)
    tanh = written(lambda g: g.ops[0][4].update(FusedActivationFunction=tflite.ActivationFunctionType.TANH), "tanh")
    with pytest.raises(WeightsError, match="tanh.tflite: operator 0 has fused activation 4, a MobileNetV1 uses RELU6"):
        convert(tanh)

    def int64_weights(g):
        name, shape, _, buf, quant = g.tensors[1]
        g.tensors[1] = (name, shape, tflite.TensorType.INT64, buf, quant)

    with pytest.raises(WeightsError, match="int64.tflite: tensor 'Conv2d_0/weights' has unsupported type INT64"):
        convert(written(int64_weights, "int64"))

    def tiny_input(g):  # a 16 px input, below the smallest model (32 px) `ModelSpec` takes
        name, _, kind, buf, quant = g.tensors[0]
        g.tensors[0] = (name, (1, 16, 16, 3), kind, buf, quant)

    # the spec's refusal names the file, as every other refusal does (it was a bare SpecError naming none)
    with pytest.raises(WeightsError, match=r"tiny.tflite: the weights describe an unsupported model \(resolution"):
        convert(written(tiny_input, "tiny"))


def test_convert_replaces_its_own_output_but_not_other_weights_without_overwrite(tmp_path, capsys):
    """Re-running a convert replaces its folder; a folder holding other weights (another file, other options, or a
    trained model) is refused with one line naming it and --overwrite, and is left as it was."""
    src, out = str(tflite_file("0.25_128")), tmp_path / "w"
    for _ in range(2):  # the same command twice (README's examples re-run)
        assert cli.main(["convert", src, "--out", str(out)]) == 0
    before = (out / weights.CONFIG_FILE).read_bytes()
    capsys.readouterr()
    assert cli.main(["convert", src, "--out", str(out), "--classes", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out={out} is not allowed" in err and "--overwrite" in err
    assert "converted with other options (num_classes=1001 there, 1000 now; labels=1001 items there, 1000 items" in err
    assert (out / weights.CONFIG_FILE).read_bytes() == before
    assert cli.main(["convert", src, "--out", str(out), "--classes", "1000", "--overwrite"]) == 0
    assert weights.read_config(out)["spec"].num_classes == 1000
    mobilenets.save(mobilenets.create_model("mobilenet_v1_025_128", num_classes=5), tmp_path / "trained")
    with pytest.raises(WeightsError, match="holds weights from training"):
        convert_file(src, tmp_path / "trained")
    assert weights.read_config(tmp_path / "trained")["spec"].num_classes == 5
    # a folder of something else (a dataset given as --out by mistake) gets no weights mixed in
    data = tmp_path / "data"
    for name in ("train", "val", "README.md", "labels.txt"):
        (data / name).mkdir(parents=True) if "." not in name else (data / name).write_text("x")
    with pytest.raises(WeightsError, match=r"the folder holds other files \(README.md, labels.txt, train and 1 more\)"):
        convert_file(src, data)
    assert not (data / weights.WEIGHTS_FILE).exists()
    assert convert_file(src, data, overwrite=True) == data and (data / weights.WEIGHTS_FILE).is_file()
    # our own weights are not converted again (they looked like a timm safetensors file)
    for given in (out, out / weights.WEIGHTS_FILE):
        with pytest.raises(WeightsError, match=rf"{given}: already mobilenets weights .*use the folder as it is"):
            convert_file(given, tmp_path / "again")


def test_a_cut_short_tflite_file_is_named_truncated_with_its_sizes(tmp_path):
    """A download cut short said "corrupt or truncated TFLite file (error: unpack_from requires a buffer of at least
    ... at offset ...)": struct's words; it now says truncated, with the file's size and the size its content needs."""
    from .tflite_writer import mobilenet_graph, to_bytes

    data = to_bytes(mobilenet_graph(_random_tf_model(64)))
    for size in (len(data) // 2, 64):
        (tmp_path / "cut.tflite").write_bytes(data[:size])
        with pytest.raises(WeightsError, match=f"cut.tflite: truncated TFLite file: {size} bytes, but its flatbuffer "
                                               r"reaches byte \d+ \(a download or copy cut short\)$"):  # fmt: skip
            convert(tmp_path / "cut.tflite")
