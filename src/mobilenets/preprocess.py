"""Image decoding and the evaluation transform, shared by training (data.py), inference and weight checks.

Decoding: torchvision.io (libjpeg-turbo, libpng, ...) with Pillow as the fallback for anything else; every image
comes out as uint8 RGB (grayscale, CMYK, RGBA, palette and 16-bit inputs are converted; 16-bit samples, grey or
colour, are rounded to the nearest of 256 levels, `to_8_bits`, not truncated to their high byte as Pillow does),
and turned upright as an EXIF orientation says (as Pillow's `ImageOps.exif_transpose` turns it; timm and
torchvision's defaults read the stored pixels, so a phone's portrait photo came out sideways).
Eval transform (timm's single-crop ImageNet evaluation; crop_pct 0.875 by default: 256 for 224): resize the shorter
side to resolution / crop_pct, center crop, scale to [0, 1], normalise with the spec's mean/std. TF-trained weights
use mean = std = 0.5, i.e. inputs in [-1, 1].
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode, v2

from .spec import ModelSpec

# torchvision 0.29 deprecates torchvision.io decoding in favour of torchcodec, warning on every call; it is still the
# libjpeg-turbo decoder we want (torchcodec is not a dependency), so silence that one message.
warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision are deprecated.*")
# Pillow warns from half its refusal limit (`_refuse_bomb`) up; such an image is decoded as any other, and a warning
# with a source line per file (at most once per location) is no one-line report: only the refusal is said.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


T, R = TypeVar("T"), TypeVar("R")


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3, H, W), turned upright as its EXIF orientation says (a phone's
    portrait photo is stored sideways with a tag saying so; what a viewer shows is what the model must see)."""
    path = Path(path)
    data = path.read_bytes()  # FileNotFoundError names the path
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if data[8:12] == b"WEBP" and exif_turned(data):  # torchvision turns JPEGs and PNGs only; Pillow all
        return _read_with_pillow(path)
    _refuse_bomb(data, path)
    try:
        img = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB, apply_exif_orientation=True
        )
        if img.dtype == torch.uint16:  # 16-bit PNG, grey or colour: libpng hands over all 16 bits
            img = to_8_bits(img.to(torch.int64)).to(torch.uint8)
        if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
            return img
    except (RuntimeError, ValueError):
        pass
    return _read_with_pillow(path)


def _refuse_bomb(data: bytes, path: Path) -> None:
    """An `ImageError` for an image of more pixels than Pillow decodes (2 x ``Image.MAX_IMAGE_PIXELS``, 179 million
    by default), read from its header before anything is decoded. torchvision's decoders have no such limit: a 233 kB
    PNG of 20000 x 12000 took 1.46 GB of memory in `predict`, and a few MB of PNG can ask for more memory than a
    small device has (killed, with no line naming the file); Pillow's fallback already refused such files."""
    if (why := over_pixel_limit(data)) is not None:
        raise ImageError(f"{path}: not a readable image ({why})")


def over_pixel_limit(data: bytes) -> str | None:
    """Pillow's refusal of an encoded image of more pixels than it decodes, from the header alone; None within the
    limit or where the header does not read (the decoders say what is wrong then). `read_image` refuses such a file,
    and the device decode (`device_data`) leaves it to `read_image`, so both paths read the same samples."""
    import io

    from PIL import UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):  # reads the header only
            return None
    except Image.DecompressionBombError as exc:
        return str(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def to_8_bits(values, full: int = 65535):
    """Integer samples in [0, ``full``] (an int64 tensor or array) to [0, 255], rounded to nearest:
    65535 -> 255, 129 -> 1 (truncating to the high byte would give 0). No sample lies exactly halfway."""
    return (values * 255 + full // 2) // full


def failure_reason(exc: Exception, path: str | os.PathLike) -> str:
    """Why ``path`` could not be read, without the path (a report names it beside the reason): an OSError's own
    text ("No such file or directory" for a broken link, "Permission denied"), else the message after the path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text, prefix = str(exc), f"{Path(path)}: "
    return (text[len(prefix) :] if text.startswith(prefix) else text) or type(exc).__name__


def exif_turned(data: bytes) -> bool:
    """Whether an encoded image carries an EXIF orientation other than upright (2-8): nvjpeg's decode does not apply
    it (`device_data` leaves those files to `read_image`), nor torchvision's WebP decode."""
    if data[:2] == b"\xff\xd8" and b"Exif\x00\x00" not in data[:65536]:  # a JPEG's APP1 is at its start
        return False
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _orientation(im) in range(2, 9)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False  # the decoders say what is wrong with it


def jpeg_frame(data: bytes) -> tuple[int, int] | None:
    """(start-of-frame marker, colour components) of a JPEG's frame header, or None if ``data`` is not a JPEG with
    one. The marker says the coding (0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...; ITU-T T.81, Table B.1);
    4 components are CMYK or YCCK."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            return (marker, data[pos + 9]) if pos + 9 < len(data) else None
        pos += 2 + length
    return None


def decode_all(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(item) for item in items]`` on ``threads`` threads, for decoding a dataset once.

    Each thread decodes and resizes whole images, so torch's intra-op pool is held at one thread meanwhile (and
    restored after): otherwise every calling thread's parallel op may start its own team of one thread per core,
    ``threads`` x cores threads on ``cores`` cores. On this project's 2-core machine the gain is small (1.02-1.07x,
    results/decode-amd-epyc-2c.json, ``benchmarks/decode.py``); the 16-core GPU machine is where it can matter.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(before)


def _read_with_pillow(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = _upright(im)  # as torchvision's decode is asked to turn it
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit samples to 8 bits, 65535 -> 255 for every image
                arr = np.clip(np.asarray(im, dtype=np.int64), 0, None)
                full = max(65535, int(arr.max()))  # wider integer data: by its own range
                im = Image.fromarray(to_8_bits(arr, full).astype(np.uint8))
            rgb = im.convert("RGB")
            return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError (more than 2 x Image.MAX_IMAGE_PIXELS, e.g. a few-kB TIFF of 15000 x 12500) is no
        # OSError: uncaught, one such file stopped training, eval and predict
        why = str(exc).replace(f" {os.fspath(path)!r}", "")  # Pillow's "cannot identify image file '<path>'"
        raise ImageError(f"{path}: not a readable image ({why})") from exc


def _upright(im):
    """``im`` turned as its EXIF orientation says, as Pillow's `ImageOps.exif_transpose` turns it, but without
    writing the EXIF block again: exif_transpose re-encodes it, and a malformed one (a struct.error) stopped the read
    of a picture that decodes fine, where torchvision reads it and the dataset never skips it."""
    from PIL import Image

    turns = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # fmt: skip
    turn = turns.get(_orientation(im))
    return im if turn is None else im.transpose(turn)


def _orientation(im) -> int:
    """A Pillow image's EXIF orientation (tag 0x0112: 1 upright, 2-8 flipped or turned), 1 where it has none."""
    return im.getexif().get(0x0112, 1)


def eval_transform(spec: ModelSpec, resolution: int | None = None) -> v2.Compose:
    """uint8 (3, H, W) -> normalised float (3, R, R): resize shorter side to R / crop_pct, center crop R."""
    return v2.Compose([*eval_crop(spec, resolution).transforms, *eval_normalize(spec).transforms])


def eval_crop(spec: ModelSpec, resolution: int | None = None) -> v2.Compose:
    """`eval_transform`'s first half, uint8 (3, H, W) -> uint8 (3, R, R): what to keep of a decoded image that is
    used more than once (a quarter of its float size; `eval_normalize` finishes it, exactly as `eval_transform`)."""
    res = resolution or spec.resolution
    interpolation = InterpolationMode(spec.interpolation)
    return v2.Compose([v2.Resize(int(res / spec.crop_pct), interpolation=interpolation, antialias=True),
                       v2.CenterCrop(res)])  # fmt: skip


def check_rgb(spec: ModelSpec, source: str | os.PathLike = "the model") -> None:
    """Images are decoded to RGB here (`read_image`), and a model of another input channel count
    (``create_model(..., in_chans=1)``) failed at its first convolution, deep in predict, eval, export or a training
    run, or had every image reported unreadable. Refused by name before any image is read: by each command that
    decodes images for a model, `load_batch` and `data.train_transform`; not by `eval_normalize`, which also
    normalises tensors of the model's own channels (INT8 export's synthetic calibration)."""
    if spec.in_chans != 3:
        raise ImageError(
            f"{source}: in_chans={spec.in_chans} is not allowed here: images are decoded to RGB (3 channels) for the "
            f"model; prepare its {spec.in_chans}-channel input yourself and call it from Python (model(x), x of shape "
            f"(N, {spec.in_chans}, H, W))"
        )


def eval_normalize(spec: ModelSpec) -> v2.Compose:
    """`eval_transform`'s second half: uint8 -> float scaled to [0, 1] and normalised with the spec's mean/std."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))])


def load_batch(paths: list[str | os.PathLike], spec: ModelSpec, resolution: int | None = None) -> torch.Tensor:
    """Decode and transform image files into one (N, 3, R, R) batch."""
    check_rgb(spec)
    tf = eval_transform(spec, resolution)
    return torch.stack([tf(read_image(p)) for p in paths])
