"""Our weights folder format, atomic writes, image decoding and the ONNX/OpenVINO runners."""

import os
import shutil
import sys

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets import atomic, runtimes, weights
from mobilenets.atomic import atomic_open
from mobilenets.labels import class_indices, imagenet_labels, imagenet_wnids
from mobilenets.preprocess import ImageError, load_batch, read_image

from .conftest import data_path, dead_pid


def test_save_load_round_trip(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=3, labels=("a", "b", "c")).eval()
    mobilenets.save(model, tmp_path / "m", provenance={"source": "test"})
    again = mobilenets.load(tmp_path / "m")
    assert again.spec == model.spec and not again.training
    x = torch.randn(2, 3, 128, 128)
    assert torch.equal(again(x), model(x))
    assert weights.read_config(tmp_path / "m")["provenance"]["source"] == "test"


def test_load_rejects_wrong_shapes_and_non_model_folders(tmp_path):
    mobilenets.save(mobilenets.create_model("mobilenet_v1_025", num_classes=3), tmp_path / "m")
    other = mobilenets.create_model("mobilenet_v1_050", num_classes=3)
    state = weights.read_state_dict(tmp_path / "m" / weights.WEIGHTS_FILE)
    with pytest.raises(weights.WeightsError, match="stem.conv.weight.*shape"):
        weights.load_state_into(other, state, "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(weights.WeightsError, match="not a mobilenets weights folder"):
        mobilenets.load(tmp_path / "empty")
    (tmp_path / "m" / weights.WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(weights.WeightsError, match="not a readable safetensors"):
        mobilenets.load(tmp_path / "m")


def test_a_path_one_step_from_weights_says_where_they_are(tmp_path):
    """A run folder without final weights (a run stopped early has model_best/ alone) names the model_best/ it
    holds; one with model/ is taken as those (`weights.run_weights`), with model_best/ beside them or not; a
    published file names convert."""
    run = tmp_path / "run"
    model = mobilenets.create_model("mobilenet_v1_025", num_classes=3)
    mobilenets.save(model, run / "model_best")  # a run stopped before its end has model_best/ alone
    with pytest.raises(weights.WeightsError) as err:
        mobilenets.load(run)
    assert str(err.value).endswith(f": a run folder, whose weights are {run / 'model_best'}")
    mobilenets.save(model, run / "model")
    assert mobilenets.load(run).spec == model.spec
    shutil.rmtree(run / "model_best")  # a run never evaluated has model/ alone
    assert mobilenets.load(run).spec == model.spec
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(weights.WeightsError, match=r"m.tflite: not a .*: convert it first \(mobilenets convert .*m"):
        mobilenets.load(tmp_path / "m.tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(weights.WeightsError, match=r"\(expected model.safetensors and config.json\)$"):
        mobilenets.load(tmp_path / "empty")


def test_atomic_open_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_run_folders_lock_names_its_holder_and_refuses_a_second_run(tmp_path):
    """`lock_folder` makes a run folder that does not exist yet and writes the holder's pid alone in its .lock (the
    "in use by pid N" message reads it); a second lock while it is held is refused, one after it is released is
    not. flock locks belong to open files, so two opens in this one process conflict as two runs would."""
    folder = tmp_path / "runs" / "a"
    held = atomic.lock_folder(folder)
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(atomic.FolderInUse, match=rf"runs/a is in use by another run \(pid {os.getpid()}\)"):
        atomic.lock_folder(folder)
    held.close()
    again = atomic.lock_folder(folder)
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    again.close()


def test_outputs_are_checked_as_a_file_or_a_folder_and_stale_staging_files_are_reported(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; name the file to write"):
        atomic.check_writable(tmp_path)  # a file is expected unless folder=True
    assert atomic.check_writable(tmp_path, folder=True) == tmp_path
    assert atomic.check_writable(tmp_path / "new" / "out.onnx") == tmp_path / "new" / "out.onnx"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        atomic.check_writable(tmp_path / "notes.txt", folder=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]  # the probe left nothing, and made no folder
    target = tmp_path / "model.onnx"
    stale = tmp_path / f".model.partial-{atomic.HOST}-{dead_pid()}.onnx"
    stale.write_bytes(b"half")
    assert atomic.remove_stale_staging(target) == [stale] and not stale.exists()


def test_metrics_rows_are_read_and_only_a_torn_last_line_is_dropped(tmp_path):
    """A run killed while appending leaves its last metrics.jsonl line torn: a resume drops that line (and is told
    which); any other line that is no row is an error naming the file and line, never a guess."""
    path = tmp_path / "metrics.jsonl"
    rows = ['{"epoch": 0, "loss": 2.1}', '{"epoch": 1, "loss": 1.7}']
    path.write_text("\n".join(rows) + '\n\n{"epoch": 2, "lo')
    torn = []
    assert atomic.read_metrics(path, lambda p, i: torn.append(i)) == [(rows[0], {"epoch": 0, "loss": 2.1}),
                                                                     (rows[1], {"epoch": 1, "loss": 1.7})]  # fmt: skip
    assert torn == [4]
    with pytest.raises(ValueError, match="metrics.jsonl: line 4 is not a metrics row"):
        atomic.read_metrics(path)
    path.write_text('{"epoch": 0}\n{"epoch": "1"}\n{"epoch": 2}\n')  # not torn: edited, in the middle
    with pytest.raises(ValueError, match=r"line 2 is not a metrics row \(not an object with an integer 'epoch'\)"):
        atomic.read_metrics(path, lambda p, i: torn.append(i))
    path.write_text('{"epoch": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is not a metrics row"):
        atomic.read_metrics(path)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="POSIX fork")
def test_a_killed_runs_forked_children_do_not_keep_its_folder_locked(tmp_path):
    """A run holding its folder's lock forks a worker (as DataLoader workers are), then is SIGKILLed: the orphaned
    worker, still alive, must not hold the lock (a resume at once was refused as "in use" by the dead pid)."""
    import signal
    import subprocess

    # The worker says it runs (so its at-fork hook has closed its copy) before the pid is printed: under load the
    # child could be still unscheduled when the run was killed, and then it did hold the lock (2 of 5 runs failed).
    code = f"""
import multiprocessing, time
from mobilenets.atomic import lock_folder
def work(running):
    running.set()
    time.sleep(60)
held = lock_folder({str(tmp_path)!r})
ctx = multiprocessing.get_context("fork")
running = ctx.Event()
worker = ctx.Process(target=work, args=(running,))
worker.start()
assert running.wait(60)
print(worker.pid, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    try:
        with pytest.raises(atomic.FolderInUse, match=rf"in use by another run \(pid {proc.pid}\)"):
            atomic.lock_folder(tmp_path)  # held while the run lives
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(worker, 0)  # the orphaned worker is still running
        again = atomic.lock_folder(tmp_path)
        assert again is not None
        again.close()
    finally:
        proc.kill()
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_a_full_disk_names_the_file_and_a_save_leaves_no_half_made_folder(tmp_path, monkeypatch):
    """ENOSPC from a write or fsync names no file; atomic_open names the target (the CLI prints '<path>: No space
    left on device'). A save that fails removes the folder it made (weights without a config is no model), and
    leaves a folder that was there before."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    model = mobilenets.create_model("mobilenet_v1_025", num_classes=3)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        atomic.atomic_write_text(tmp_path / "a" / "f.json", "{}")
    assert err.value.filename == str(tmp_path / "a" / "f.json") and err.value.errno == errno.ENOSPC
    assert list((tmp_path / "a").iterdir()) == []
    with pytest.raises(FileNotFoundError) as err, atomic_open(tmp_path / "a" / "g.bin"):
        raise FileNotFoundError("photo.jpg: no such file")  # a message of its own, no errno: kept as it is
    assert str(err.value) == "photo.jpg: no such file"
    with pytest.raises(OSError, match="No space left on device") as err:
        mobilenets.save(model, tmp_path / "new" / "m")
    assert err.value.filename == str(tmp_path / "new" / "m" / weights.WEIGHTS_FILE)
    assert not (tmp_path / "new").exists()  # the folders it made, parents included
    monkeypatch.undo()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    monkeypatch.setattr(weights, "atomic_write_text", lambda *a: full(0))  # the second file: the config
    with pytest.raises(OSError):
        mobilenets.save(model, tmp_path / "old")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["notes.txt"]  # its new weights file went too
    with pytest.raises(OSError):
        mobilenets.save(model, tmp_path / "made")
    assert not (tmp_path / "made").exists()


def test_a_killed_atomic_writers_file_is_removed_by_the_next_write_a_live_ones_kept(tmp_path):
    """A writer killed (SIGKILL) inside `atomic_open` leaves its temporary file: the next write of the same path
    removes it. Another path's, and one whose pid is alive, are kept."""
    import signal
    import subprocess

    target = tmp_path / "summary.json"
    code = f"""
from mobilenets.atomic import atomic_open
with atomic_open({str(target)!r}) as f:
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    input()
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(f".summary.partial-{atomic.HOST}-{proc.pid}~") and left.suffix == ".json"
    live = tmp_path / f".summary.partial-{atomic.HOST}-{os.getpid()}~abc.json"
    other = tmp_path / f".metrics.partial-{atomic.HOST}-{proc.pid}~abc.json"
    # host HOST-<dead pid>'s staging file of its pid 4242 (staging_path: no random part): not this host's
    another_host = tmp_path / f".summary.partial-{atomic.HOST}-{proc.pid}-4242.json"
    for kept in (live, other, another_host):
        kept.write_bytes(b"x")
    with atomic_open(target) as f:
        f.write(b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, another_host.name,
                                                                 "summary.json"])  # fmt: skip
    assert target.read_bytes() == b"{}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the synced file's name from /proc/self/fd")
def test_publish_syncs_the_staged_file_then_renames_then_syncs_the_folder(tmp_path, monkeypatch):
    """Exports and annotated videos are written by libraries into a staging file, then renamed into place: the
    data must reach the disk before the name does, or a power cut leaves the name on an empty file."""
    import os

    from mobilenets import atomic

    staged, final = atomic.staging_path(tmp_path / "m.onnx"), tmp_path / "m.onnx"
    staged.write_bytes(b"model")
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    atomic.publish(staged, final)
    assert events == [("fsync", str(staged)), ("replace", str(final)), ("fsync", str(tmp_path))]
    assert final.read_bytes() == b"model" and not staged.exists()


def test_read_real_jpeg_and_bad_files(tmp_path):
    img = read_image(data_path("imagenet-sample", "n01514859_hen.JPEG"))
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="zero.jpg.*empty"):
        read_image(tmp_path / "zero.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg"):
        read_image(tmp_path / "text.jpg")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])  # torchvision's decoders; Pillow (libtiff's own)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, suffix, orientation):
    """A phone stores a portrait photo sideways with an EXIF orientation saying how to turn it; every decode turns it
    as Pillow's `exif_transpose` does (a viewer's picture). It was read as stored: on 100 sample photos saved that
    way, top-1 agreed with the upright photo's on 47%."""
    from PIL import Image, ImageOps

    with Image.open(data_path("imagenet-sample", "n01514859_hen.JPEG")) as im:
        stored = im.convert("RGB").resize((96, 64))
    path = tmp_path / f"turned{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    if suffix == ".tif":
        stored.save(path, tiffinfo={0x0112: orientation})
    else:
        stored.save(path, exif=exif.tobytes(), **({"lossless": True} if suffix == ".webp" else {}))
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    img = read_image(path)
    assert img.shape == (3, *upright.shape[:2]) and upright.shape[:2] == ((96, 64) if orientation != 3 else (64, 96))
    assert torch.equal(img.permute(1, 2, 0), torch.from_numpy(upright.copy()))


# an EXIF block saying orientation 6 with a malformed entry: Pillow reads it, but cannot write it again
MALFORMED_EXIF = bytes.fromhex(
    "4578696600004d4d002a0000000800c9015600020000000600000026011200030000000100060000000000006db86b657200"
)


@pytest.mark.parametrize("orientation", [*range(1, 9), "malformed"])
def test_a_webp_is_turned_as_pillow_turns_it_and_a_malformed_exif_stops_nothing(tmp_path, orientation):
    """Every orientation turns as `exif_transpose` turns it; a WebP whose EXIF block is malformed is still read,
    upright: exif_transpose wrote the block again and raised struct.error, which no caller skips as a bad image."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
    path = tmp_path / "turned.webp"
    if orientation == "malformed":
        stored.save(path, exif=MALFORMED_EXIF, lossless=True)
        upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(path, exif=exif.tobytes(), lossless=True)
        with Image.open(path) as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert torch.equal(read_image(path).permute(1, 2, 0), torch.from_numpy(upright.copy()))


def test_labels():
    assert len(imagenet_labels()) == 1000 and imagenet_labels()[0].startswith("tench")
    assert imagenet_labels(background=True)[0] == "background" and len(imagenet_labels(True)) == 1001
    wnids = imagenet_wnids()
    assert len(set(wnids)) == 1000 and list(wnids) == sorted(wnids) and wnids[0] == "n01440764"


def test_a_models_outputs_are_named_by_its_labels_else_by_its_head_size():
    """predict and eval name outputs by `resolve_labels`: a TF-slim 1001-way head's output 0 is "background" and
    output k ImageNet class k - 1; folders are matched by `known_labels`, which makes up no ``class_<k>`` names."""
    from mobilenets import ModelSpec
    from mobilenets.labels import known_labels, resolve_labels

    for classes, names in ((1000, imagenet_labels()), (1001, imagenet_labels(background=True))):
        assert resolve_labels(ModelSpec(num_classes=classes)) == names == known_labels(ModelSpec(num_classes=classes))
    assert resolve_labels(ModelSpec(num_classes=3)) == ("class_0", "class_1", "class_2")
    assert known_labels(ModelSpec(num_classes=3)) == ()
    assert resolve_labels(ModelSpec(num_classes=2, labels=("cat", "dog"))) == ("cat", "dog")


def test_labels_agree_with_the_shared_class_index():
    """The packaged names and wnids are the name and wnid columns of ../shared/data/imagenet-classes/classes.tsv."""
    rows = [ln.split("\t") for ln in data_path("imagenet-classes", "classes.tsv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == list(imagenet_wnids())
    assert [r[2] for r in rows] == list(imagenet_labels())


def test_class_folders_match_labels_by_name_or_imagenet_wnid():
    found, unknown = class_indices(["n01440764", "n03000684", "n99999999"], imagenet_labels())
    assert found == {"n01440764": 0, "n03000684": imagenet_labels().index("chain saw, chainsaw")} and unknown == [
        "n99999999"
    ]
    found, _ = class_indices(["n01440764", "goldfish, Carassius auratus"], imagenet_labels(background=True))
    assert found == {"n01440764": 1, "goldfish, Carassius auratus": 2}  # output 0 is "background"
    # a model trained on its own classes: folders match by name only, wnids are names like any other
    found, unknown = class_indices(["n01440764", "cat"], ("cat", "dog"))
    assert found == {"cat": 0} and unknown == ["n01440764"]


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_onnx_runtimes_match_torch(runtime):
    pytest.importorskip("onnxruntime" if runtime == "ort" else "openvino")
    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=42).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2)
            m.running_mean.normal_(0, 0.3)
    x = load_batch([data_path("imagenet-sample", "n01514859_hen.JPEG")] * 3, model.spec).numpy()
    runner = runtimes.make_runner(model, runtime, threads=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(runner(x) - ref).max() < 1e-4


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from mobilenets.atomic import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_ort_runner_reports_the_files_precision(tmp_path):
    from mobilenets.export import export_onnx, quantize

    model = mobilenets.create_model("mobilenet_v1_025_128", num_classes=10).eval()
    fp32 = runtimes.ort_runner(export_onnx(model, tmp_path / "m.onnx"))
    assert fp32.info["dtype"] == "fp32" and fp32.name == "ort"
    quantize(model, tmp_path / "m.int8.onnx")
    int8 = runtimes.ort_runner(tmp_path / "m.int8.onnx")
    assert int8.info["dtype"] == "int8" and int8.name == "ort-int8"


def test_an_image_over_pillows_pixel_limit_is_an_unreadable_file(tmp_path, monkeypatch):
    """Pillow's decompression-bomb refusal (a TIFF, which only Pillow decodes) is reported like any unreadable file,
    not raised past the callers that skip and report them."""
    from PIL import Image

    Image.new("L", (40, 30)).save(tmp_path / "big.tiff")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # refused above 2 x 500 pixels
    with pytest.raises(ImageError, match="big.tiff: not a readable image .*exceeds limit"):
        read_image(tmp_path / "big.tiff")


def test_sixteen_bit_images_keep_their_brightness(tmp_path):
    """16-bit samples map to 8 bits by the full 16-bit range, the same for every image: a mid-grey stays mid-grey
    and a dark image stays dark (stretching each image to its own maximum made both white)."""
    from PIL import Image

    Image.new("I;16", (8, 6), 32767).save(tmp_path / "grey.png")
    ramp = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 20).astype(np.uint16)  # 0..940 of 65535: near black
    Image.fromarray(ramp).save(tmp_path / "dark.png")
    grey, dark = read_image(tmp_path / "grey.png"), read_image(tmp_path / "dark.png")
    assert grey.shape == (3, 6, 8) and grey.unique().tolist() == [127]  # round(32767 / 65535 * 255)
    assert dark.shape == (3, 6, 8) and int(dark.max()) == round(940 / 65535 * 255) == 4


def _write_png16(path, samples: np.ndarray) -> None:
    """A 16-bit PNG (colour type 2, RGB, for (H, W, 3); 0, grey, for (H, W)), written by hand: Pillow writes 16-bit
    grey but no 16-bit colour."""
    import struct
    import zlib

    rows = np.asarray(samples, dtype=">u2")
    h, w = rows.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if rows.ndim == 3 else 0, 0, 0, 0)
    scanlines = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")
    )


def test_sixteen_bit_samples_round_to_the_nearest_of_256_levels():
    from mobilenets.preprocess import to_8_bits

    x = np.arange(65536, dtype=np.int64)
    assert np.array_equal(to_8_bits(x), np.rint(x * 255 / 65535))  # every 16-bit sample; none lies halfway


def test_jpeg_frame_skips_fill_bytes_restart_markers_and_segments_to_the_frame_header():
    """`jpeg_frame` walks the markers before the frame header (ITU-T T.81, B.1.1): 0xFF fill bytes, RSTn and TEM
    (no length field), APPn/DHT/DAC segments (skipped by their length; DHT 0xC4, JPG 0xC8 and DAC 0xCC are no
    SOF although they lie in 0xC0-0xCF). The device decoder takes only baseline (0xC0) 3-component frames."""
    from mobilenets.preprocess import jpeg_frame

    def sof(marker, components):  # length 8 + 3 per component, precision 8, 16 x 16 pixels
        return bytes([0xFF, marker, 0, 8 + 3 * components, 8, 0, 16, 0, 16, components]) + b"\x01\x11\x00" * components

    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dac = b"\xff\xcc\x00\x04\x00\x00"
    assert jpeg_frame(b"\xff\xd8" + app0 + sof(0xC0, 3)) == (0xC0, 3)
    assert jpeg_frame(b"\xff\xd8\xff" + app0 + b"\xff" + sof(0xC2, 1)) == (0xC2, 1)  # fill bytes
    assert jpeg_frame(b"\xff\xd8\xff\xd7\xff\x01" + sof(0xC0, 4)) == (0xC0, 4)  # RST7 and TEM: no length
    assert jpeg_frame(b"\xff\xd8" + dac + sof(0xC2, 3)) == (0xC2, 3)
    assert jpeg_frame(b"\xff\xd8" + app0 + b"\xff\xda\x00\x02" + sof(0xC0, 3)) is None  # scan data follows SOS
    assert jpeg_frame(b"\x89PNG\r\n\x1a\n" + sof(0xC0, 3)) is None


def test_sixteen_bit_colour_and_grey_round_alike(tmp_path):
    """The same 16-bit samples give the same 8-bit pixels as grey or colour, rounded to nearest: Pillow's 16-bit RGB
    decoding keeps the high byte (129 -> 0, 400 -> 1) where grey was rounded (129 -> 1, 400 -> 2)."""
    from PIL import Image

    values = np.array([[0, 129, 400, 32767, 65279, 65535]], dtype=np.uint16)
    expected = [0, 1, 2, 127, 254, 255]  # (v * 255 + 32767) // 65535
    _write_png16(tmp_path / "rgb.png", np.stack([values, values[:, ::-1], values], axis=-1))
    Image.fromarray(values).save(tmp_path / "grey.png")  # Pillow's I;16 PNG
    Image.fromarray(values).save(tmp_path / "grey.tiff")  # only Pillow decodes TIFF: its own 16-bit path
    rgb = read_image(tmp_path / "rgb.png")
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 1, 6)
    assert rgb[0, 0].tolist() == rgb[2, 0].tolist() == expected and rgb[1, 0].tolist() == expected[::-1]
    for grey in (read_image(tmp_path / "grey.png"), read_image(tmp_path / "grey.tiff")):
        assert grey.dtype == torch.uint8 and grey.shape == (3, 1, 6) and grey[:, 0].tolist() == [expected] * 3
