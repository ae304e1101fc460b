"""The device-resident data path (device_data.py), checked on CPU against the host path's pixels and on real JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobilenets.data import scan_split
from mobilenets.device_data import (
    DeviceImages,
    DeviceTrainLoader,
    _normaliser,
    augment_batch,
    center_crop_batch,
    load_to_device,
    random_resized_crop_boxes,
    square_bytes,
)
from mobilenets.preprocess import eval_transform, read_image
from mobilenets.registry import model_spec
from mobilenets.trainer import train
from mobilenets.weights import read_state_dict

from .conftest import data_path
from .test_train import CLASSES4, copy_subset, tiny_cfg

SPEC = model_spec("mobilenet_v1_025", resolution=96)
NORM = _normaliser(SPEC.mean, SPEC.std, "cpu")


def _samples(folder, n):
    return [(str(p), 0) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpeg", ".jpg")][:n]


@pytest.mark.parametrize("folder", ["imagenette/val/n03028079", "imagenet-sample"])
@pytest.mark.parametrize(("resolution", "interpolation"), [(96, "bilinear"), (64, "bilinear"), (96, "bicubic")])
def test_eval_crops_are_the_host_eval_transform_pixel_for_pixel(folder, resolution, interpolation):
    """The stored squares are placed so that their center crop is the host's center crop: natural-size photos
    (imagenet-sample) too, where cropping a center square and then its center rounded the offset twice and sat one
    pixel off on about half of them; and with the spec's interpolation (a bicubic spec was resized bilinearly)."""
    spec = SPEC.replace(resolution=resolution, interpolation=interpolation)
    samples = _samples(data_path(*folder.split("/")), 12)
    side = int(resolution / spec.crop_pct)
    dev = load_to_device(samples, side, "cpu", threads=2, keep=False, interpolation=interpolation,
                         align_crop=resolution)  # fmt: skip
    assert dev.images.dtype == torch.uint8 and dev.images.shape == (12, 3, side, side) and not dev.bad
    ours = center_crop_batch(dev.images, resolution, NORM)
    host = torch.stack([eval_transform(spec, resolution)(read_image(p)) for p, _ in samples])
    assert (ours - host).abs().max() < 1e-5


def test_full_box_without_flip_is_the_identity():
    x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = augment_batch(x, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, norm=NORM, generator=g)
    assert torch.allclose(y, center_crop_batch(x, 40, NORM), atol=1e-4)


def test_flip_mirrors_about_half_the_batch_and_is_seeded():
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    plain = center_crop_batch(x, 16, NORM)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return augment_batch(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True, norm=NORM, generator=g)

    y = run(3)
    same = [(y[i] - plain[i]).abs().max() < 1e-4 for i in range(64)]
    mirrored = [(y[i] - plain[i].flip(-1)).abs().max() < 1e-4 for i in range(64)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 16 <= sum(mirrored) <= 48
    assert torch.equal(run(3), y) and not torch.equal(run(4), y)


def test_crop_boxes_follow_the_scale_and_ratio_ranges():
    g = torch.Generator().manual_seed(1)
    boxes = random_resized_crop_boxes(4000, 100, (0.25, 1.0), (3 / 4, 4 / 3), g)
    assert torch.equal(boxes[:, 0], torch.arange(4000, dtype=torch.float32))
    w, h = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 2] >= 0).all() and (boxes[:, 3] <= 100 + 1e-4).all()
    assert (boxes[:, 4] <= 100 + 1e-4).all()
    area = w * h / 100**2
    assert area.min() >= 0.25 * 0.74 and area.max() <= 1.0 + 1e-5  # clamping at the side only shrinks an area
    inside = (w < 100 - 1e-3) & (h < 100 - 1e-3)  # unclamped boxes keep the sampled aspect ratio
    assert ((w / h)[inside] >= 3 / 4 - 1e-4).all() and ((w / h)[inside] <= 4 / 3 + 1e-4).all()
    assert area.mean() > 0.55  # uniform in [0.25, 1] before clamping: mean near 0.62


def test_device_train_batches_hold_batch_size_rows_in_the_sampler_s_order():
    """As the host DataLoader with drop_last: len(sampler) // batch_size batches of batch_size images each, rows in
    the sampler's order, every image beside its own label."""
    labels = torch.arange(10)
    images = labels.to(torch.uint8).view(10, 1, 1, 1).expand(10, 3, 8, 8).contiguous()  # image i is filled with i
    order = [3, 1, 4, 0, 9, 2, 6, 5, 8, 7]
    loader = DeviceTrainLoader(DeviceImages(images, labels, list(range(10))), order, 4, 8, mean=(0.0,) * 3,
                               std=(1 / 255,) * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, seed=0)  # fmt: skip
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert [y.tolist() for _, y, _ in batches] == [order[:4], order[4:8]]
    assert all(torch.allclose(x, y.float().view(-1, 1, 1, 1).expand_as(x)) for x, y, _ in batches)


def test_downscaling_crops_are_antialiased():
    """A one-pixel checkerboard shrunk 2x averages to flat grey; point sampling would keep black/white pixels."""
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = (((yy + xx) % 2) * 255).to(torch.uint8).expand(2, 3, 64, 64).contiguous()
    g = torch.Generator().manual_seed(0)
    unit = (torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1))  # keep 0..255 values
    y = augment_batch(board, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, norm=unit, generator=g)
    assert torch.allclose(y, torch.full_like(y, 127.5), atol=0.5)


def test_unreadable_files_are_skipped_and_named(tmp_path):
    good = _samples(data_path("imagenette", "val", "n03028079"), 2)
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    samples = [good[0], (str(tmp_path / "zero.jpg"), 1), good[1], (str(tmp_path / "text.jpg"), 1)]
    dev = load_to_device(samples, 40, "cpu", threads=2)
    assert len(dev) == 2 and dev.index == [0, 2] and dev.labels.tolist() == [0, 0]
    assert [i for i, _ in dev.bad] == [1, 3] and "empty file" in dev.bad[0][1]


@pytest.mark.slow
def test_on_device_training_resumes_mid_epoch_exactly(tmp_path):
    """Stopping mid-epoch (--max-steps) and resuming replays the same augmentation and MixUp/CutMix: identical
    weights."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 24, 6)  # 6 steps per epoch at batch 8
    common = dict(data_on_device=True, epochs=2, batch_size=8, ema_decay=0.9, scale_min=0.3, mixup_alpha=0.2,
                  cutmix_alpha=1.0)  # fmt: skip
    ref = train(tiny_cfg(data, tmp_path / "ref", **common))
    assert ref["cache"]["train"]["on_device"] == "cpu" and ref["global_steps"] == 12
    train(tiny_cfg(data, tmp_path / "run", max_steps=9, **common))
    resumed = train(tiny_cfg(data, tmp_path / "run", resume="auto", **common))
    assert resumed["resumed_from"] and resumed["global_steps"] == 12
    a = read_state_dict(tmp_path / "ref" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "run" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2]


def test_host_and_device_paths_evaluate_the_same_weights_alike(tmp_path):
    """Same data, same (untrained, seeded) model: the two eval loaders give the same val top-1 and loss."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 6)
    runs = {}
    for name, extra in (("host", {"cache": "off"}), ("device", {"data_on_device": True})):
        runs[name] = train(tiny_cfg(data, tmp_path / name, lr=1e-9, max_steps=1, **extra))
    assert scan_split(data / "val").classes == list(runs["host"]["per_class_top1"])
    assert runs["host"]["final_val_loss"] == pytest.approx(runs["device"]["final_val_loss"], abs=1e-4)


def test_decoded_splits_stay_resident_for_the_next_run(monkeypatch):
    """A second load of the same files at the same side returns the resident split without decoding again."""
    import mobilenets.device_data as dd

    decoded = []
    monkeypatch.setattr(dd, "read_image", lambda path: decoded.append(path) or read_image(path))
    dd.release_resident()
    samples = _samples(data_path("imagenette", "val", "n03028079"), 3)
    first = load_to_device(samples, 40, "cpu", threads=2)
    assert len(decoded) == 3 and dd.is_resident(samples, 40, "cpu")
    assert load_to_device(samples, 40, "cpu", threads=2) is first and len(decoded) == 3
    other = load_to_device(samples[:2], 40, "cpu", threads=2)  # other files: decoded
    assert other is not first and len(decoded) == 5
    load_to_device(samples, 48, "cpu", threads=2)  # another side: decoded; the oldest of RESIDENT=2 is dropped
    assert len(decoded) == 8 and not dd.is_resident(samples, 40, "cpu") and dd.is_resident(samples[:2], 40, "cpu")
    load_to_device(samples, 32, "cpu", threads=2, keep=False)
    assert not dd.is_resident(samples, 32, "cpu")
    dd.release_resident()
    assert not dd.is_resident(samples, 48, "cpu") and not dd.is_resident(samples[:2], 40, "cpu")


def test_runs_reuse_resident_splits_only_when_asked(tmp_path, monkeypatch):
    """keep_data_on_device leaves the decoded splits for the next run (which decodes nothing); by default train()
    releases them at its end."""
    import mobilenets.device_data as dd

    decoded = []
    monkeypatch.setattr(dd, "read_image", lambda path: decoded.append(path) or read_image(path))
    dd.release_resident()
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 4)
    common = dict(data_on_device=True, max_steps=1)
    train(tiny_cfg(data, tmp_path / "a", keep_data_on_device=True, **common))
    first = len(decoded)
    assert first == 2 * 8 + 2 * 4
    summary = train(tiny_cfg(data, tmp_path / "b", **common))  # reuses, then releases
    assert len(decoded) == first and summary["cache"]["train"]["on_device"] == "cpu"
    train(tiny_cfg(data, tmp_path / "c", **common))
    assert len(decoded) == 2 * first


def test_decode_all_keeps_order_holds_the_intra_op_pool_at_one_thread_and_restores_it():
    from mobilenets.preprocess import decode_all

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        def square(i: int) -> int:
            seen.append(torch.get_num_threads())  # inside a pool thread, while decoding
            return i * i

        assert decode_all(square, range(20), threads=4) == [i * i for i in range(20)]
        assert set(seen) == {1} and torch.get_num_threads() == 2

        def fail(i: int) -> int:
            raise OSError(f"bad {i}")

        with pytest.raises(OSError, match="bad 0"):
            decode_all(fail, range(3), threads=2)
        assert torch.get_num_threads() == 2  # restored after a failure too
    finally:
        torch.set_num_threads(before)


def test_load_to_device_reports_how_long_decoding_and_the_move_took():
    samples = _samples(data_path("imagenette", "val", "n03028079"), 3)
    dev = load_to_device(samples, 40, "cpu", threads=2, keep=False)
    assert square_bytes(3, 40) == dev.nbytes == 3 * 3 * 40 * 40  # the estimate a run checks against memory is exact
    assert set(dev.seconds) == {"decode", "to_device"} and dev.seconds["decode"] > 0
    assert all(v >= 0 for v in dev.seconds.values())


def _odd_jpegs(folder, photo):
    """One file per route the device decoder must take: baseline colour and grayscale JPEGs (device), progressive
    and CMYK JPEGs and a PNG (CPU), a JPEG whose header parses but whose data is garbage (a failed batch, then the
    CPU path, then unreadable) and an empty file (unreadable)."""
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    files = {
        "gray.jpg": lambda p: img.convert("L").save(p, "JPEG", quality=90),
        "progressive.jpg": lambda p: img.save(p, "JPEG", quality=90, progressive=True),
        "cmyk.jpg": lambda p: img.convert("CMYK").save(p, "JPEG", quality=90),
        "alpha.png": lambda p: img.convert("RGBA").save(p, "PNG"),
    }
    for name, save in files.items():
        save(folder / name)
    header = Path(photo).read_bytes()[:700]  # past the frame header, into the entropy-coded data
    (folder / "garbage.jpg").write_bytes(header + bytes(range(256)) * 8)
    (folder / "empty.jpg").write_bytes(b"")
    names = ("gray.jpg", "progressive.jpg", "cmyk.jpg", "alpha.png", "garbage.jpg", "empty.jpg")
    return [str(folder / n) for n in names]


def test_device_decode_takes_baseline_jpegs_and_leaves_the_rest_to_the_cpu(tmp_path, monkeypatch):
    """decode_on_device on CPU runs the batched decode_jpeg path (nvjpeg's on a GPU) with CPU tensors: the same
    libjpeg decode and resize as the CPU path, so every pixel must agree, whichever route each file took."""
    import mobilenets.device_data as dd
    from mobilenets.preprocess import jpeg_frame

    monkeypatch.setattr(dd, "DEVICE_DECODE_BATCH", 3)  # several batches, one of them failing on the garbage file
    photos = _samples(data_path("imagenette", "val", "n03028079"), 4)
    odd = _odd_jpegs(tmp_path, photos[0][0])
    samples = [photos[0], (odd[0], 1), (odd[4], 1), photos[1], (odd[1], 2), (odd[2], 2), (odd[3], 3), photos[2],
               (odd[5], 3), photos[3]]  # fmt: skip
    assert jpeg_frame(Path(odd[1]).read_bytes())[0] == 0xC2 and jpeg_frame(Path(odd[2]).read_bytes())[1] == 4
    cpu = load_to_device(samples, 48, "cpu", threads=2, keep=False)
    dev = load_to_device(samples, 48, "cpu", threads=2, keep=False, decode_on_device=True)
    assert dev.decoded_on_device == 5  # the four photos and the grayscale JPEG
    assert cpu.decoded_on_device == 0
    assert dev.index == cpu.index == [0, 1, 3, 4, 5, 6, 7, 9]
    assert [i for i, _ in dev.bad] == [i for i, _ in cpu.bad] == [2, 8]
    assert torch.equal(dev.images, cpu.images) and torch.equal(dev.labels, cpu.labels)


def test_a_jpeg_turned_by_its_exif_orientation_is_decoded_upright_off_the_device_decode(tmp_path):
    """nvjpeg does not apply a JPEG's EXIF orientation: such files take the CPU path, which turns them upright (the
    same pixels as an untagged upright file would give is what the host path reads)."""
    from PIL import Image

    from mobilenets.preprocess import exif_turned

    photos = _samples(data_path("imagenette", "val", "n03028079"), 2)
    with Image.open(photos[0][0]) as im:
        stored = im.convert("RGB").resize((80, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    assert exif_turned((tmp_path / "turned.jpg").read_bytes()) and not exif_turned(Path(photos[1][0]).read_bytes())
    samples = [(str(tmp_path / "turned.jpg"), 0), photos[1]]
    cpu = load_to_device(samples, 48, "cpu", threads=1, keep=False)
    dev = load_to_device(samples, 48, "cpu", threads=1, keep=False, decode_on_device=True)
    assert dev.decoded_on_device == 1  # the untagged photo only
    assert torch.equal(dev.images, cpu.images)
    upright = read_image(tmp_path / "turned.jpg")
    assert upright.shape == (3, 80, 60)


def test_keep_data_on_device_needs_the_device_path(tmp_path):
    """Without --data-on-device no split is held, so there is nothing to keep: it was ignored without a word."""
    from mobilenets.train_config import ConfigError

    with pytest.raises(ConfigError, match="keep_data_on_device=True needs --data-on-device"):
        tiny_cfg(tmp_path / "data", tmp_path / "a", keep_data_on_device=True).validate()


def test_gpu_decode_needs_the_device_path_and_falls_back_to_cpu_off_a_gpu(tmp_path, capsys):
    from mobilenets.train_config import ConfigError

    with pytest.raises(ConfigError, match="gpu_decode=True needs --data-on-device"):
        tiny_cfg(tmp_path / "data", tmp_path / "a", gpu_decode=True).validate()
    data = copy_subset(tmp_path / "data", CLASSES4[:2], 8, 4)
    summary = train(tiny_cfg(data, tmp_path / "b", gpu_decode=True, data_on_device=True, max_steps=1, quiet=False))
    assert summary["epochs"] >= 1
    assert "gpu_decode: training on cpu, not a GPU; decoding on" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_decode_on_the_gpu_is_within_a_few_levels_of_the_cpu_decode():
    samples = _samples(data_path("imagenette", "val", "n03028079"), 64)
    cpu = load_to_device(samples, 183, "cuda", threads=4, keep=False)
    gpu = load_to_device(samples, 183, "cuda", threads=4, keep=False, decode_on_device=True)
    assert gpu.decoded_on_device == len(samples) and gpu.index == cpu.index
    diff = (gpu.images.float() - cpu.images.float()).abs()
    assert diff.mean() < 2.0 and torch.quantile(diff.flatten()[::97], 0.99) <= 8, (diff.mean(), diff.max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_steps_on_device_data_never_make_the_host_wait_for_the_gpu():
    """After the first step, a step on GPU-resident data (rows, crop + flip, CutMix/MixUp, forward, backward, fused
    SGD) queues its work without a host sync: a pageable index copy (``.to("cuda")``) here would stall the host on the
    previous step each time. CUDA's sync debug mode raises on any synchronising call."""
    from mobilenets.engine import DistEnv, ResumableSampler, mix_batch
    from mobilenets.registry import create_model

    images = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8, device="cuda")
    data = DeviceImages(images, torch.arange(64, device="cuda") % 10, list(range(64)))
    sampler = ResumableSampler(data, DistEnv(), shuffle=True, seed=0, drop_last=True)
    loader = DeviceTrainLoader(data, sampler, 16, 32, mean=(0.5,) * 3, std=(0.25,) * 3, scale=(0.25, 1.0),
                               ratio=(0.75, 4 / 3), hflip=True, seed=0)  # fmt: skip
    model = create_model("mobilenet_v1_025", num_classes=10).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, fused=True)

    def step(x, labels, k):
        x, targets = mix_batch(x, labels, 10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=(0, k, 0))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)).float(),
                                                     targets, label_smoothing=0.1)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    batches = iter(loader)
    step(*next(batches)[:2], 0)  # first step: allocations, lazy loading
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k, (x, labels, _bad) in enumerate(batches, start=1):
            step(x, labels, k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert k == 3


def test_a_jpeg_over_pillow_s_pixel_limit_is_refused_by_the_device_decode_too(tmp_path, monkeypatch):
    """`read_image` refuses an image of more pixels than Pillow decodes (from its header); the device decode took
    such a JPEG all the same, so --gpu-decode trained on a file the CPU path named unreadable. The limit is lowered
    here to keep files small."""
    from PIL import Image

    for name, size in (("big.jpg", (120, 90)), ("ok.jpg", (60, 50))):
        Image.new("RGB", size, (120, 80, 40)).save(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # refused above 2 x 3000 pixels, as Pillow refuses
    samples = [(str(tmp_path / "big.jpg"), 0), (str(tmp_path / "ok.jpg"), 1)]
    cpu = load_to_device(samples, 48, "cpu", threads=1, keep=False)
    dev = load_to_device(samples, 48, "cpu", threads=1, keep=False, decode_on_device=True)
    assert dev.decoded_on_device == 1 and dev.index == cpu.index == [1]
    assert dev.bad == cpu.bad and "exceeds limit of 6000 pixels" in dev.bad[0][1]
    assert torch.equal(dev.images, cpu.images)
