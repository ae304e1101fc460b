"""`mobilenets.lite`: an exported ONNX file classified with numpy, Pillow and onnxruntime only (no torch), checked
against the torch path (preprocess.py's eval transform, `mobilenets predict`) on real photos."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

import mobilenets
from mobilenets import lite
from mobilenets.export import ExportConfig, export_model, export_onnx
from mobilenets.infer import load_predictor, predict
from mobilenets.labels import imagenet_labels
from mobilenets.preprocess import eval_transform, read_image

from .conftest import REPO, data_path
from .test_export import randomize_bn

SAMPLE = "imagenet-sample"
PHOTOS = 12  # of the 250 sample photos: enough sizes and aspect ratios, a second or two of preprocessing
# the torch path resizes with torch's uint8 antialiased kernel, lite with Pillow's; measured on all 250
# imagenet-sample photos (0.25-128, crop 0.875): bilinear differs by at most 1 uint8 step, bicubic by at most 2,
# the nearest modes (index arithmetic, done as torch does it in float32) by none. Decoding is identical (0 steps,
# JPEG, CMYK JPEG, grey, palette, EXIF-turned and 16-bit files).
STEPS = {"bilinear": 1, "bicubic": 2, "nearest": 0, "nearest-exact": 0}


def photos(n: int = PHOTOS):
    folder = data_path(SAMPLE)
    files = sorted(folder.glob("*.JPEG"))
    return files[:: max(1, len(files) // n)][:n]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Real ImageNet weights (TFLite 0.25-128: mean = std = 0.5, 1001-way head with "background") converted and
    exported by the library as fp32 and INT8 (synthetic calibration, 8 images): (fp32 path, int8 path)."""
    from mobilenets.convert import convert_file

    src = data_path("mobilenet-weights", "tflite", "mobilenet_v1_0.25_128_quant.tflite")
    folder = convert_file(src, tmp_path_factory.mktemp("lite") / "t025")
    cfg = ExportConfig(out=str(folder.parent / "t025.int8.onnx"), int8=True, calib_synthetic=True, calib_count=8,
                       progress=False, threads=1)  # fmt: skip
    report = export_model(folder, cfg)
    return report.int8.fp32_path, report.int8.path


def steps(a: np.ndarray, b: np.ndarray, std) -> float:
    """The largest difference of two normalised tensors in uint8 steps of the [0, 255] pixels they came from."""
    return float(np.abs(a - b).max() * min(std) * 255)


def test_preprocess_matches_the_eval_transform_on_real_photos(exported):
    fp32, _ = exported
    clf = lite.OnnxClassifier(fp32, threads=1)
    spec = load_predictor(fp32).spec
    assert clf.resolution == spec.resolution == 128
    tf = eval_transform(spec)
    for path in photos():
        x = clf.preprocess(path)
        assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32
        assert steps(x[0], tf(read_image(path)).numpy(), spec.std) <= STEPS["bilinear"] + 1e-3, path


@pytest.mark.parametrize("interpolation", ["bicubic", "nearest", "nearest-exact"])
def test_preprocess_follows_the_spec_mean_std_crop_and_interpolation(tmp_path, interpolation):
    """A 42-class model with its own labels, TF's mean = std = 0.5, crop_pct 1.0, another interpolation and a
    non-default resolution: every field is read from the file's metadata, not assumed."""
    model = randomize_bn(mobilenets.create_model("mobilenet_v1_025", num_classes=42))
    labels = tuple(f"kind {k}" for k in range(42))
    model.spec = spec = model.spec.replace(resolution=96, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0,
                                           interpolation=interpolation, labels=labels)  # fmt: skip
    export_onnx(model, tmp_path / "m.onnx")
    clf = lite.OnnxClassifier(tmp_path / "m.onnx", threads=1)
    assert clf.labels == labels and clf.resolution == 96
    tf = eval_transform(spec)
    for path in photos(6):
        assert steps(clf.preprocess(path)[0], tf(read_image(path)).numpy(), spec.std) <= STEPS[interpolation] + 1e-3


def test_resize_size_crop_box_and_nearest_indices_are_torchvision_s():
    """The geometry exactly as torchvision computes it, over many sizes (photos alone hit few of the cases where
    truncating vs rounding the long side, or float32 vs float64 nearest indices, differ)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    rng = np.random.default_rng(0)
    for _ in range(200):  # float32 and float64 nearest indices differ on ~4% of size pairs
        w, h = (int(v) for v in rng.integers(20, 400, 2))
        short = int(rng.integers(8, 160))
        img = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
        out_w, out_h = lite.resized_size(w, h, short)
        assert F.resize(img, [short], antialias=True).shape[1:] == (out_h, out_w), (w, h, short)
        size = min(w, h, short)
        left, top, right, bottom = lite.center_box(w, h, size)
        assert torch.equal(F.center_crop(img, [size]), img[:, top:bottom, left:right]), (w, h, size)
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        for mode in ("nearest", "nearest-exact"):
            want = F.resize(img, [out_h, out_w], interpolation=InterpolationMode(mode)).permute(1, 2, 0).numpy()
            assert np.array_equal(np.asarray(lite.resize(pil, (out_w, out_h), mode)), want), (w, h, short, mode)


# Measured on all 250 imagenet-sample photos with the fixture's models, lite vs `predict` (1 thread): fp32 top-1
# equal on 250/250 (the closest top two 0.0008 apart), top probabilities at most 0.0048 apart; INT8 (synthetic
# calibration, which amplifies a uint8 step) top-1 equal on 246/250, the 4 others near ties in predict (top two at
# most 0.034 apart), top probabilities at most 0.044 apart. Bounds: those figures with a margin.
AGREE = {"fp32": (0.0, 0.01), "int8": (0.05, 0.06)}  # (top-two gap under which top-1 may differ, prob tolerance)


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_top1_and_probabilities_agree_with_predict(exported, which):
    path = dict(zip(("fp32", "int8"), exported, strict=True))[which]
    clf = lite.OnnxClassifier(path, threads=1)
    assert clf.session.get_session_options().intra_op_num_threads == 1
    assert clf.precision == which and clf.labels == ("background", *imagenet_labels())
    files = photos()
    ours = clf.predict([str(p) for p in files], topk=2)
    theirs = list(predict(load_predictor(path, threads=1), files, topk=2))
    gap, tol = AGREE[which]
    named = 0
    for p, mine, r in zip(files, ours, theirs, strict=True):
        if r.top[0]["prob"] - r.top[1]["prob"] > gap:
            assert mine[0]["index"] == r.top[0]["index"] and mine[0]["label"] == r.top[0]["label"], p
            assert mine[0]["prob"] == pytest.approx(r.top[0]["prob"], abs=tol), p
        named += mine[0]["label"].split(",")[0].replace(" ", "_").lower() in p.name.lower()
    assert named >= len(files) // 3  # real weights: the photo's own class often on top (fp32: 115/250 overall)
    assert clf.predict(Image.open(files[0]), topk=2) == [ours[0]]  # one Pillow image: a list of one


def test_exif_turned_and_cmyk_photos_are_read_as_read_image_reads_them(exported, tmp_path):
    fp32, _ = exported
    clf = lite.OnnxClassifier(fp32)
    photo = Image.open(photos(1)[0]).convert("RGB").resize((150, 100))  # landscape: a turn shows in the crop
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, "rotate 90 CW to view"
    photo.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    photo.convert("P").save(tmp_path / "palette.png")
    Image.new("I;16", (70, 50), 200).save(tmp_path / "sixteen.png")  # 200/65535 rounds to 1 (its high byte is 0)
    for name in ("turned.jpg", "cmyk.jpg", "palette.png", "sixteen.png"):
        want = read_image(tmp_path / name).permute(1, 2, 0).numpy()
        got = np.asarray(lite.read_image(tmp_path / name))
        assert got.shape == want.shape and np.array_equal(got, want), name
    assert lite.read_image(tmp_path / "turned.jpg").size == (100, 150)
    rgb16 = tmp_path / "rgb16.png"  # 16-bit colour, which Pillow cannot write: Pillow reads its high bytes
    rgb16.write_bytes(png_rgb16((np.arange(4 * 5 * 3).reshape(4, 5, 3) * 997 + 200).astype(">u2")))
    want = read_image(rgb16).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(np.asarray(lite.read_image(rgb16)).astype(int) - want).max() == 1  # the documented difference
    spec = load_predictor(fp32).spec
    for name in ("turned.jpg", "cmyk.jpg"):  # and through the whole transform
        want = eval_transform(spec)(read_image(tmp_path / name)).numpy()
        assert steps(clf.preprocess(tmp_path / name)[0], want, spec.std) <= STEPS["bilinear"] + 1e-3, name


def png_rgb16(samples: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of ``samples`` (H, W, 3) big-endian uint16, written by hand (PNG spec: IHDR, IDAT, IEND)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = samples.shape
    raw = b"".join(b"\x00" + samples[i].tobytes() for i in range(h))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def run_lite_without_torch(*args: str) -> subprocess.CompletedProcess:
    """``python -m mobilenets.lite ARGS`` in a process where importing torch or torchvision fails."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; import runpy; "
        f"sys.argv = ['lite', *{list(args)!r}]; runpy.run_module('mobilenets.lite', run_name='__main__')"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_command_runs_without_torch_and_prints_top_k(exported):
    fp32, int8 = exported
    files = [str(p) for p in photos(2)]
    for model in (fp32, int8):
        r = run_lite_without_torch(str(model), *files, "--topk", "2", "--threads", "1")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 6 and lines[0].startswith(files[0]) and "ms model" in lines[0]
        want = lite.OnnxClassifier(model).predict(files[1], topk=2)[0]
        assert [line.split("%  ", 1)[1] for line in lines[4:6]] == [t["label"] for t in want]


def test_copied_file_alone_runs_as_a_script(exported, tmp_path):
    """The README's deployment: lite.py copied beside the model, no mobilenets package on the path."""
    fp32, _ = exported
    (tmp_path / "lite.py").write_text((REPO / "src" / "mobilenets" / "lite.py").read_text())
    code = "import sys; sys.modules['torch'] = None; sys.modules['mobilenets'] = None; import runpy; "
    code += (
        f"sys.argv = ['lite.py', {str(fp32)!r}, {str(photos(1)[0])!r}]; runpy.run_path('lite.py', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 6, r.stderr


def test_bad_inputs_are_one_line_naming_the_file(exported, tmp_path):
    fp32, _ = exported
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    plain = onnx.load(str(fp32))
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all")
    photo = str(photos(1)[0])
    cases = [
        ([str(fp32), str(tmp_path / "missing.jpg"), photo], "missing.jpg: no such file", 6),
        ([str(fp32), str(tmp_path / "notes.jpg"), photo], "notes.jpg: not a readable image", 6),
        ([str(fp32), str(tmp_path / "empty.png"), photo], "empty.png: not a readable image", 6),
        ([str(tmp_path / "plain.onnx"), photo], "plain.onnx: ONNX model without mobilenets metadata", 0),
        ([str(tmp_path / "garbage.onnx"), photo], "garbage.onnx: ONNX Runtime cannot load it", 0),
        ([str(tmp_path / "nope.onnx"), photo], "nope.onnx: no such file", 0),
        ([str(fp32), photo, "--threads", "0"], "threads=0 is not allowed", 0),
    ]
    for argv, message, classified in cases:  # classified: the good photo's header and top 5, or nothing
        r = run_lite_without_torch(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("mobilenets.lite: error: ")
        assert len(r.stdout.splitlines()) == classified


def test_metadata_is_read_through_onnxruntime(exported):
    """The spec lite uses is the one the export wrote (json of metadata_props), including the labels."""
    fp32, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    clf = lite.OnnxClassifier(fp32)
    assert clf.spec == json.loads(meta["mobilenets.spec"]) and list(clf.labels) == json.loads(meta["labels"])


def test_lite_s_copies_of_package_constants_agree_with_the_package():
    """lite.py imports nothing from mobilenets (it is copied alone to a device), so it keeps its own copies of the
    metadata key and the image extensions: they must stay the ones export writes and predict reads."""
    from mobilenets.data import IMAGE_EXTENSIONS
    from mobilenets.export import SPEC_KEY

    assert lite.SPEC_KEY == SPEC_KEY and lite.IMAGE_EXTENSIONS == IMAGE_EXTENSIONS
    import ast

    tree = ast.parse((REPO / "src" / "mobilenets" / "lite.py").read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.startswith((".", "mobilenets", "torch"))}, imported


def test_a_folder_linked_back_up_is_walked_once(tmp_path):
    """A link to a parent folder (a loop) listed the same photo again at every level, 41 times, until the system's
    limit on nested links stopped the walk; predict's walk (`data.class_files`) lists it once."""
    from mobilenets.infer import expand_images

    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "a" / "x.jpg")
    (tmp_path / "a" / "up").symlink_to("..")
    assert lite.image_files([str(tmp_path)]) == expand_images([tmp_path])[0] == [tmp_path / "a" / "x.jpg"]


def test_a_folder_s_images_are_listed_in_predict_s_order(tmp_path):
    """predict sorts a folder's files by path (a subfolder's before a later name beside it); lite listed each
    folder's own files before its subfolders', so the two printed the same photos in another order."""
    from mobilenets.infer import expand_images

    for name in ("b.jpg", "a/x.jpg", "a/c/y.png", "c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(tmp_path / name)
    listed = lite.image_files([str(tmp_path)])
    assert listed == expand_images([tmp_path])[0] and [p.name for p in listed] == ["y.png", "x.jpg", "b.jpg", "c.png"]
