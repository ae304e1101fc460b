"""A decoded image split held on the training device, with batched augmentation there (issues 4, 7, 8).

For sets that fit in GPU memory (Imagenette: 9,469 train images at 256 x 256 are 1.9 GB as uint8), decoding once and
keeping every image on the GPU removes the data loader from the step: no worker processes, no host-to-device copies,
and the augmentation runs for the whole batch in a few kernels. The pixels follow the host path in data.py:

- Decoding: `preprocess.read_image` (libjpeg-turbo via torchvision.io, Pillow fallback), shorter side resized to
  ``side = resolution / crop_pct`` (antialiased, with the spec's interpolation), cropped to the ``side x side``
  square around the eval crop (`square_transform`). Unreadable files are
  skipped and reported like the host path does (with the first batch of every epoch). With ``decode_on_device``
  (``--gpu-decode``) the baseline 3- or 1-component JPEGs are decoded on the device instead (nvjpeg through
  `torchvision.io.decode_jpeg`, in batches) and resized there; every other file, those an EXIF orientation turns
  (nvjpeg does not turn them: `preprocess.exif_turned`), and any batch or file nvjpeg refuses, take the CPU path.
  On a GPU the pixels may differ from the CPU decode by a few levels (another IDCT and chroma upsampling, a float
  resize).
- Evaluation: the center ``resolution`` crop of each stored square, which is exactly the eval transform of
  preprocess.py (resize the shorter side to ``resolution / crop_pct``, center crop), pixel for pixel: the square
  is placed so that its center crop is the host's (two center crops would round the offset twice and sit one pixel
  off on about half the photos of natural size).
- Training: RandomResizedCrop (area fraction in ``[scale_min, 1]``, log-uniform aspect ratio, as torchvision's
  ``RandomResizedCrop``) and a horizontal flip, done for the whole batch by ``torchvision.ops.roi_align`` with
  adaptive sampling, which averages ``ceil(crop / output)`` samples per output pixel and so antialiases
  down-scaling crops. Two simplifications against torchvision, both stated: crops are taken from the stored square
  (the host path crops the original image), and a crop whose sampled width or height exceeds the image is clamped to
  the image side instead of re-drawn (torchvision re-draws up to 10 times, then falls back to a center crop).

Decoded splits stay resident (`load_to_device`, the latest `RESIDENT` of them): a later run in the same process on
the same files at the same side reuses them instead of decoding again (`mobilenets reproduce` trains the runs of one
resolution one after another in one process with ``keep_data_on_device`` for this: 8.5 s of decoding per run with 16
threads on the H200 machine). `train` releases them at its end unless ``keep_data_on_device`` is set.
Nothing writes to them: augmentation and cropping read the stored squares into new tensors.

The random numbers of batch ``b`` of epoch ``e`` come from a generator seeded by (seed, epoch, b, rank), so a run
resumed mid-epoch replays exactly the augmentation an uninterrupted run would have used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align
from torchvision.transforms import InterpolationMode, v2

from .engine import to_device_async
from .preprocess import (
    ImageError,
    decode_all,
    exif_turned,
    failure_reason,
    jpeg_frame,
    over_pixel_limit,
    read_image,
)


@dataclass
class DeviceImages:
    """uint8 images (N, 3, side, side) and labels on one device; ``index`` maps rows to the split's sample numbers."""

    images: torch.Tensor
    labels: torch.Tensor
    index: list[int]
    bad: list[tuple[int, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # how long decoding and the move to the device took
    decoded_on_device: int = 0  # images that nvjpeg decoded on the device (decode_on_device), the rest on CPU

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()


def square_bytes(count: int, side: int) -> int:
    """uint8 bytes of ``count`` images stored as ``side x side`` squares."""
    return 3 * side * side * count


RESIDENT = 2  # decoded splits kept for reuse: the train and val split of one decode side
_resident: dict[tuple, DeviceImages] = {}


def resident_key(
    samples: list[tuple[str, int]],
    side: int,
    device: torch.device | str,
    interpolation: str = "bilinear",
    align_crop: int | None = None,
) -> tuple:
    """What makes two decodes the same: the device, the square (side and `square_transform`'s options) and the
    exact (path, label) list."""
    return str(torch.device(device)), side, interpolation, align_crop, tuple(samples)


def is_resident(samples: list[tuple[str, int]], side: int, device: torch.device | str, **square) -> bool:
    """Whether `load_to_device` with these arguments (``square``: interpolation, align_crop) would decode nothing."""
    return resident_key(samples, side, device, **square) in _resident


def square_transform(side: int, interpolation: str = "bilinear", align_crop: int | None = None):
    """uint8 (3, H, W) -> (3, side, side): the shorter side resized to ``side`` (antialiased, ``interpolation``), then
    the square whose center ``align_crop`` crop (`center_crop_batch`) is exactly the eval transform's center crop of
    the resized image; without ``align_crop``, the center square (torchvision's CenterCrop)."""
    mode = InterpolationMode(interpolation)

    def square(img: torch.Tensor) -> torch.Tensor:
        img = v2.functional.resize(img, side, interpolation=mode, antialias=True)
        top, left = (_square_offset(n, side, align_crop) for n in img.shape[-2:])
        return img[..., top : top + side, left : left + side]

    return square


def _square_offset(length: int, side: int, crop: int | None) -> int:
    """Where the square starts along an axis of ``length``: offsets rounded as torchvision's CenterCrop, the
    ``crop``'s own offset inside the square subtracted from the crop's offset in the image."""
    off = round((length - side) / 2.0) if crop is None else round((length - crop) / 2.0) - round((side - crop) / 2.0)
    return min(max(int(off), 0), length - side)


def release_resident() -> None:
    """Drop every resident split (and return the GPU memory they held to the driver)."""
    cuda = any(key[0].startswith("cuda") for key in _resident)
    _resident.clear()
    if cuda and torch.cuda.is_available():
        torch.cuda.empty_cache()


DEVICE_DECODE_BATCH = 128  # JPEGs per batched nvjpeg call: their decoded originals live on the device until resized
DEVICE_JPEG_FRAMES = (0xC0, 0xC1)  # baseline and extended Huffman: what nvjpeg's batched decoder takes


def _read_bytes(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None  # the CPU path reads it again and names the error


def _decode_jpegs_on(device: torch.device, samples, images: torch.Tensor, resize, threads: int) -> list[bool]:
    """Decode the samples' baseline JPEGs (3 or 1 components, `preprocess.jpeg_frame`; not turned by an EXIF
    orientation, which nvjpeg does not apply: `preprocess.exif_turned`; within Pillow's pixel limit, as
    `preprocess.read_image` refuses the others) with `decode_jpeg` on
    ``device``, reading and decoding `DEVICE_DECODE_BATCH` files at a time (so only one batch's encoded bytes are in
    host memory), each image resized into its row of ``images``; which rows were done. A batch that fails (one bad
    file fails all) is decoded file by file; a file that still fails is left to the CPU path."""
    done = [False] * len(samples)
    for start in range(0, len(samples), DEVICE_DECODE_BATCH):
        batch = range(start, min(start + DEVICE_DECODE_BATCH, len(samples)))
        data = decode_all(_read_bytes, [samples[i][0] for i in batch], threads)
        frames = [jpeg_frame(d) if d else None for d in data]
        baseline = [k for k, f in enumerate(frames) if f is not None and f[0] in DEVICE_JPEG_FRAMES and f[1] in (1, 3)]
        # left to the CPU path: EXIF-turned files, and those over Pillow's pixel limit, which `read_image` refuses
        ok = [k for k in baseline if not exif_turned(data[k]) and over_pixel_limit(data[k]) is None]
        encoded = [torch.frombuffer(bytearray(data[k]), dtype=torch.uint8) for k in ok]
        if not encoded:
            continue
        if device.type == "cuda":  # nvjpeg writes on its own stream: the last batch's resizes must be done with
            torch.cuda.current_stream(device).synchronize()  # the memory it may hand out again
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for one in encoded:
                if device.type == "cuda":
                    torch.cuda.current_stream(device).synchronize()
                try:
                    decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
        for k, img in zip(ok, decoded, strict=True):
            if img is not None and img.dim() == 3 and img.shape[0] == 3:
                images[batch[k]] = resize(img)
                done[batch[k]] = True
    return done


def _drop_rows(images: torch.Tensor, good: list[int]) -> torch.Tensor:
    """``images[good]`` without a second copy of the split: rows moved up in place (``good`` ascending), the tail cut
    off as a view."""
    for k, i in enumerate(good):
        if k != i:
            images[k] = images[i]
    return images[: len(good)]


def load_to_device(
    samples: list[tuple[str, int]],
    side: int,
    device: torch.device | str,
    *,
    threads: int = 8,
    keep: bool = True,
    decode_on_device: bool = False,
    interpolation: str = "bilinear",
    align_crop: int | None = None,
) -> DeviceImages:
    """Decode every sample once (``threads`` CPU threads, or nvjpeg on the device for baseline JPEGs with
    ``decode_on_device``) into one uint8 tensor on ``device`` of ``side x side`` squares (`square_transform` with
    ``interpolation`` and ``align_crop``, the eval resolution); with ``keep`` the result stays resident and the
    same call later returns it without decoding (the oldest resident split beyond `RESIDENT` is dropped)."""
    key = resident_key(samples, side, device, interpolation=interpolation, align_crop=align_crop)
    if key in _resident:
        return _resident[key]
    resize = square_transform(side, interpolation, align_crop)
    device = torch.device(device)
    t0 = time.perf_counter()
    if decode_on_device:
        images = torch.empty((len(samples), 3, side, side), dtype=torch.uint8, device=device)
        done = _decode_jpegs_on(device, samples, images, resize, threads)
    else:
        images, done = None, [False] * len(samples)
    rest = [i for i, d in enumerate(done) if not d]  # every sample, unless the device decoded some
    host = torch.empty((len(rest), 3, side, side), dtype=torch.uint8)
    reasons = [""] * len(samples)

    def load(k: int) -> None:
        try:
            host[k] = resize(read_image(samples[rest[k]][0]))
        except (ImageError, OSError) as exc:
            reasons[rest[k]] = failure_reason(exc, samples[rest[k]][0])

    decode_all(load, range(len(rest)), threads)
    if decode_on_device and device.type == "cuda":
        torch.cuda.synchronize(device)  # the device's decodes and resizes are asynchronous: count them in 'decode'
    good = [i for i, r in enumerate(reasons) if not r]
    bad = [(i, r) for i, r in enumerate(reasons) if r]
    if images is None and bad:  # the CPU path: drop unreadable rows before the copy
        host = host[torch.tensor([k for k, i in enumerate(rest) if not reasons[i]], dtype=torch.long)]
    t1 = time.perf_counter()
    moved = to_device_async(host, device)
    if images is None:
        images = moved
    else:
        if rest:
            images[torch.tensor(rest, device=device)] = moved
        if bad:
            images = _drop_rows(images, good)
    labels = torch.tensor([samples[i][1] for i in good], dtype=torch.long)
    loaded = DeviceImages(images, labels.to(device), good, bad, decoded_on_device=sum(done))
    if device.type == "cuda":  # the copy is asynchronous: count it in "to_device"
        torch.cuda.synchronize(device)
    loaded.seconds = {"decode": t1 - t0, "to_device": time.perf_counter() - t1}
    if keep:
        _resident[key] = loaded
        while len(_resident) > RESIDENT:
            _resident.pop(next(iter(_resident)))
    return loaded


def _normaliser(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_norm = x_uint8 * scale + shift."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def random_resized_crop_boxes(
    n: int, side: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """(n, 5) roi_align boxes [row, x0, y0, x1, y1] in pixel coordinates of a ``side x side`` image."""
    dev = generator.device
    u = torch.rand(5, n, generator=generator, device=dev)
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
    r = torch.exp(log_r)
    w = (torch.sqrt(area * r) * side).clamp(max=side)
    h = (torch.sqrt(area / r) * side).clamp(max=side)
    x0 = u[2] * (side - w)
    y0 = u[3] * (side - h)
    rows = torch.arange(n, device=dev, dtype=torch.float32)
    return torch.stack([rows, x0, y0, x0 + w, y0 + h], dim=1)


def augment_batch(
    images: torch.Tensor,
    resolution: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
    norm: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
) -> torch.Tensor:
    """uint8 (n, 3, S, S) -> normalised float (n, 3, R, R): random resized crop + flip (see the module docstring)."""
    n, side = images.shape[0], images.shape[-1]
    boxes = random_resized_crop_boxes(n, side, scale, ratio, generator)
    out = roi_align(images.float(), boxes, (resolution, resolution), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if hflip:
        flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)
    return out * norm[0] + norm[1]


def center_crop_batch(images: torch.Tensor, resolution: int, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """uint8 (n, 3, S, S) -> normalised float center crops (n, 3, R, R), offsets rounded as torchvision's CenterCrop."""
    side = images.shape[-1]
    if resolution > side:
        raise ValueError(f"resolution={resolution} is larger than the stored image side {side}")
    off = int(round((side - resolution) / 2.0))
    crop = images[:, :, off : off + resolution, off : off + resolution]
    return crop.float() * norm[0] + norm[1]


def _batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return (((seed * 1_000_003 + epoch) * 10_000_019 + batch) * 1_009 + rank) % (2**63)


class DeviceTrainLoader:
    """Yields (images, labels, bad) like the host DataLoader + `data.collate`, drawing rows in ``sampler`` order."""

    def __init__(
        self,
        data: DeviceImages,
        sampler,
        batch_size: int,
        resolution: int,
        *,
        mean,
        std,
        scale: tuple[float, float],
        ratio: tuple[float, float],
        hflip: bool,
        seed: int,
        rank: int = 0,
    ) -> None:
        self.data, self.sampler, self.batch_size, self.resolution = data, sampler, batch_size, resolution
        self.scale, self.ratio, self.hflip, self.seed, self.rank = scale, ratio, hflip, seed, rank
        self.norm = _normaliser(mean, std, data.images.device)
        self.generator = torch.Generator(device=data.images.device)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        first = getattr(self.sampler, "start", 0) // self.batch_size  # batch number within the whole epoch
        epoch = getattr(self.sampler, "epoch", 0)
        dev = self.data.images.device
        for b in range(len(order) // self.batch_size):
            rows = to_device_async(order[b * self.batch_size : (b + 1) * self.batch_size], dev)
            self.generator.manual_seed(_batch_seed(self.seed, epoch, first + b, self.rank))
            x = augment_batch(
                self.data.images.index_select(0, rows),
                self.resolution,
                scale=self.scale,
                ratio=self.ratio,
                hflip=self.hflip,
                norm=self.norm,
                generator=self.generator,
            )
            yield x, self.data.labels.index_select(0, rows), (list(self.data.bad) if b == 0 else [])


class DeviceEvalLoader:
    """Center crops in order, ``batch_size`` at a time, over this process's shard (rows rank, rank + W, ...)."""

    def __init__(self, data: DeviceImages, batch_size: int, resolution: int, *, mean, std, rank: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        self.data, self.batch_size, self.resolution = data, batch_size, resolution
        self.norm = _normaliser(mean, std, data.images.device)
        self.rows = torch.arange(rank, len(data), world_size, device=data.images.device)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        for b in range(len(self)):
            rows = self.rows[b * self.batch_size : (b + 1) * self.batch_size]
            x = center_crop_batch(self.data.images.index_select(0, rows), self.resolution, self.norm)
            yield x, self.data.labels.index_select(0, rows), (list(self.data.bad) if b == 0 else [])


__all__ = [
    "DeviceEvalLoader",
    "DeviceImages",
    "DeviceTrainLoader",
    "RESIDENT",
    "augment_batch",
    "center_crop_batch",
    "is_resident",
    "load_to_device",
    "random_resized_crop_boxes",
    "release_resident",
    "resident_key",
    "square_bytes",
]
