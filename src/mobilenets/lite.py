"""Classify images with an exported ONNX file on a device without PyTorch: this one file, numpy, Pillow, onnxruntime.

`mobilenets predict model.onnx` imports torch and torchvision (about 5.6 s of a 5.8 s one-image run on a 2-vCPU
machine, and a torch wheel a Raspberry Pi must install). Everything an ONNX file exported by `mobilenets export`
needs is in its metadata_props (`export.onnx_metadata`: the ModelSpec JSON under ``mobilenets.spec``, ``labels``),
read here through ONNX Runtime's ``custom_metadata_map``; this module imports nothing from mobilenets, so it can
be copied alone:  ``python lite.py MODEL.onnx IMAGE...`` or ``python -m mobilenets.lite MODEL.onnx IMAGE...``.

Preprocessing reproduces preprocess.py's `read_image` + `eval_transform` (timm's single-crop evaluation) with
Pillow instead of torchvision: EXIF orientation applied, every mode (grey, CMYK, alpha, palette, 16-bit) made uint8
RGB, shorter side resized to ``int(R / crop_pct)`` (antialiased, the spec's interpolation), centre crop R placed as
torchvision's ``CenterCrop`` rounds it, scaled to [0, 1], ``(x - mean) / std``. Pillow's antialiased bilinear is
the filter torch's uint8 antialiased kernel was written to match; tests/test_lite.py measures the difference to
the torch path on real photos (at most one uint8 step, bilinear). Decoding gives the same pixels, except a 16-bit
colour PNG: Pillow keeps the high byte of each 48-bit RGB sample where read_image rounds (one level at most; 16-bit
grey is rounded here too). INT8 exports (``*.int8.onnx``) take the same float input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

SPEC_KEY = "mobilenets.spec"  # export.SPEC_KEY: the ModelSpec JSON in the file's metadata_props
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")  # data.py's
# Pillow filters for the spec's torchvision interpolation modes that antialias (preprocess.eval_crop passes
# antialias=True; torchvision ignores it for the nearest modes, done below by index as torchvision does)
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}  # fmt: skip

# as preprocess.py: Pillow warns from half its pixel limit up; only its refusal (twice the limit) is said
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class LiteError(ValueError):
    """A model or image that cannot be used; the message names the file and why, in one line."""


# --- images ----------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> Image.Image:
    """An image file as an upright uint8 RGB Pillow image (preprocess.read_image's decoding, by Pillow alone)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError as exc:
        raise LiteError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise LiteError(f"{path}: is a folder, not an image file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, OSError) and exc.strerror:  # permission denied, I/O error: the OS's reason
            raise LiteError(f"{path}: {exc.strerror}") from exc
        why = str(exc).replace(f" {os.fspath(path)!r}", "") or type(exc).__name__
        raise LiteError(f"{path}: not a readable image ({why})") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says (by transposing, not `ImageOps.exif_transpose`, which rewrites the
    EXIF block and fails on a malformed one) and made RGB; 16-bit samples rounded to the nearest of 256 levels
    (65535 -> 255; Pillow's own conversion keeps the high byte), as preprocess.to_8_bits does."""
    turn = TURNS.get(im.getexif().get(0x0112, 1))
    if turn is not None:
        im = im.transpose(turn)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(np.asarray(im, dtype=np.int64), 0, None)
        full = max(65535, int(arr.max()))  # wider integer data: by its own range
        im = Image.fromarray(((arr * 255 + full // 2) // full).astype(np.uint8))
    return im if im.mode == "RGB" else im.convert("RGB")


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``short`` and the longer scaled and truncated, as torchvision's
    ``Resize(int)`` computes it (``int(short * long / shorter)``)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def center_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) of a ``size`` square crop at the centre, rounded as torchvision's
    ``center_crop`` rounds it: ``int(round((side - size) / 2))``, Python's round (half to even)."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def resize(im: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    """``im`` at ``size`` (width, height): antialiased bilinear/bicubic by Pillow; the nearest modes by index as
    torchvision computes them ('nearest': floor(i * in / out), 'nearest-exact': floor((i + 0.5) * in / out))."""
    if size == im.size:
        return im  # torchvision returns the image unchanged too
    if interpolation in FILTERS:
        return im.resize(size, FILTERS[interpolation])
    if interpolation not in ("nearest", "nearest-exact"):
        raise LiteError(f"interpolation={interpolation!r} is not supported: one of bilinear, bicubic, nearest(-exact)")
    arr = np.asarray(im)
    (w, h), (out_w, out_h) = im.size, size
    return Image.fromarray(
        np.ascontiguousarray(arr[_nearest(h, out_h, interpolation)][:, _nearest(w, out_w, interpolation)])
    )


def _nearest(size: int, out: int, interpolation: str) -> np.ndarray:
    """Source indices of torch's nearest interpolation (aten UpSample.h ``nearest_idx``): in float32, as torch
    computes them (float64 picked another row or column on 8-14% of the 250 imagenet-sample photos)."""
    if out == 2 * size and interpolation == "nearest":
        return np.arange(out) >> 1
    scale = np.float32(size) / np.float32(out)
    offset = np.float32(0.5 if interpolation == "nearest-exact" else 0.0)
    return np.minimum(np.floor((np.arange(out, dtype=np.float32) + offset) * scale).astype(np.int64), size - 1)


# --- the model -------------------------------------------------------------------------------------------------


class OnnxClassifier:
    """An ONNX file exported by `mobilenets export` (fp32 or INT8), with the preprocessing and class names its
    metadata records. ``threads``: ONNX Runtime's intra-op threads (None: its default, every core)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise LiteError(f"threads={threads!r} is not allowed: threads must be an integer >= 1")
        self.threads = threads
        self.session = _session(self.path, threads)
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.spec = _spec(self.path, self.meta)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.resolution = _resolution(self.path, self.spec, inp.shape)
        channels = list(inp.shape)[1] if len(inp.shape) == 4 else 3
        if isinstance(channels, int) and channels != 3:  # ONNX Runtime's refusal of each image read as "unreadable"
            raise LiteError(f"{self.path}: a {channels}-channel input is not allowed: images are fed as RGB (3 "
                            "channels)")  # fmt: skip
        self.labels = _labels(self.path, self.spec, self.meta)
        self.mean = np.asarray(self.spec.get("mean", (0.485, 0.456, 0.406)), np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(self.spec.get("std", (0.229, 0.224, 0.225)), np.float32).reshape(-1, 1, 1)
        self.crop_pct = float(self.spec.get("crop_pct", 0.875))
        self.interpolation = str(self.spec.get("interpolation", "bilinear"))
        self.precision = self.meta.get("precision", "fp32")

    def preprocess(self, image: Image.Image | str | os.PathLike) -> np.ndarray:
        """A Pillow image or an image file -> normalised float32 (1, 3, R, R), as `eval_transform` makes it."""
        im = read_image(image) if not isinstance(image, Image.Image) else to_rgb(image)
        r = self.resolution
        im = resize(im, resized_size(*im.size, int(r / self.crop_pct)), self.interpolation)
        im = im.crop(center_box(*im.size, r))  # never outside: the resized shorter side is >= r (crop_pct <= 1)
        x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return ((x - self.mean) / self.std)[None].astype(np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The model's logits for a preprocessed batch (N, 3, R, R)."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict(self, images: Any, topk: int = 5) -> list[list[dict]]:
        """For each image (a Pillow image or a file; one, or a sequence), its ``topk`` classes, most probable
        first: ``{"index", "label", "prob"}`` (softmax of the logits; equal probabilities by index, as predict)."""
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise LiteError(f"topk={topk!r} is not allowed: topk must be an integer >= 1")
        many = isinstance(images, Sequence) and not isinstance(images, str | bytes)
        return [self.top(self.logits(self.preprocess(im))[0], topk) for im in (images if many else [images])]

    def top(self, logits: np.ndarray, topk: int) -> list[dict]:
        """The ``topk`` classes of one image's logits, most probable first (ties by index, as `predict` ranks)."""
        probs = softmax(logits.astype(np.float64))
        order = np.argsort(-probs, kind="stable")[:topk]
        return [{"index": int(i), "label": self.labels[i], "prob": float(probs[i])} for i in order]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of ``logits`` along the last axis (shifted by their maximum, so no exp overflows)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise LiteError(f"{path}: {'is a folder, not an ONNX file' if path.is_dir() else 'no such file'}")
    opts = ort.SessionOptions()
    if threads:  # our graphs are one chain of ops: inter-op threads would only wait (runtimes.set_ort_threads)
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own exception classes (InvalidProtobuf, Fail, ...)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise LiteError(f"{path}: ONNX Runtime cannot load it ({lines[-1] if lines else type(exc).__name__})") from exc


def _spec(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    if SPEC_KEY not in meta:
        raise LiteError(
            f"{path}: ONNX model without mobilenets metadata ({SPEC_KEY!r} missing); export it with "
            "`mobilenets export` so its preprocessing and labels travel with it"
        )
    try:
        spec = json.loads(meta[SPEC_KEY])
    except ValueError as exc:
        raise LiteError(f"{path}: unreadable {SPEC_KEY} metadata ({exc})") from exc
    if not isinstance(spec, dict):
        raise LiteError(f"{path}: unreadable {SPEC_KEY} metadata (a JSON {type(spec).__name__}, not an object)")
    crop = spec.get("crop_pct", 0.875)
    if not isinstance(crop, int | float) or not 0 < crop <= 1:
        raise LiteError(f"{path}: unreadable {SPEC_KEY} metadata (crop_pct={crop!r}, must be in (0, 1])")
    return spec


def _resolution(path: Path, spec: dict[str, Any], shape: Sequence[Any]) -> int:
    """The graph's fixed input size where it has one (infer.onnx_spec: what the graph takes wins), else the spec's."""
    h, w = (d if isinstance(d, int) else None for d in list(shape)[2:4]) if len(shape) == 4 else (None, None)
    if h is not None and w is not None:
        if h != w:
            raise LiteError(f"{path}: input {h}x{w} is not allowed: images are fed as square centre crops")
        return h
    return int(spec.get("resolution", 224))


def _labels(path: Path, spec: dict[str, Any], meta: dict[str, str]) -> tuple[str, ...]:
    """The class names the export resolved (`labels.resolve_labels`: ImageNet's for 1000/1001-way heads)."""
    try:
        labels = json.loads(meta.get("labels", "null")) or spec.get("labels")
    except ValueError:
        labels = spec.get("labels")
    n = spec.get("num_classes", 0)
    if not n:
        raise LiteError(f"{path}: a feature extractor (num_classes=0) has no classes to predict")
    if not isinstance(labels, list) or len(labels) != n:
        return tuple(f"class_{k}" for k in range(n))
    return tuple(str(label) for label in labels)


# --- command line ----------------------------------------------------------------------------------------------


def image_files(inputs: Iterable[str]) -> list[Path]:
    """Files named directly, and image files found in folders (recursively, hidden ones skipped), each folder's in
    sorted path order, as predict lists them (`data.class_files`: ``a/x.jpg`` before ``b.jpg``). Linked folders are
    followed, each real folder once: a link back up would otherwise list its images again at every level, 40 times
    over, until the system's limit on nested links stops the walk."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            out.append(p)
            continue
        found: list[Path] = []
        walked: set[str] = set()
        for here, dirs, files in os.walk(p, followlinks=True):
            if (real := os.path.realpath(here)) in walked:
                dirs[:] = []
                continue
            walked.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(here) / f for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
        out += sorted(found)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobilenets.lite", description=__doc__.splitlines()[0])
    p.add_argument("model", help="an ONNX file exported by `mobilenets export` (fp32 or --int8)")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: every core)")
    args = p.parse_args(argv)
    try:
        clf = OnnxClassifier(args.model, args.threads)
        if args.topk < 1:
            raise LiteError(f"topk={args.topk} is not allowed: topk must be an integer >= 1")
    except (LiteError, ValueError, TypeError) as exc:  # the latter two: metadata fields of a wrong type
        return _error(exc if isinstance(exc, LiteError) else LiteError(f"{args.model}: unreadable metadata ({exc})"))
    files = image_files(args.images)
    if not files:
        return _error(
            LiteError(f"no image files found in {', '.join(args.images)} (extensions: {' '.join(IMAGE_EXTENSIONS)})")
        )
    failed = 0
    for path in files:
        t0 = time.perf_counter()
        try:
            x = clf.preprocess(path)
        except LiteError as exc:
            failed += _error(exc) > 0
            continue
        t1 = time.perf_counter()
        logits = clf.logits(x)[0]
        t2 = time.perf_counter()
        print(f"{path}  ({(t2 - t1) * 1e3:.1f} ms model, {(t1 - t0) * 1e3:.1f} ms decode+preprocess)")
        for t in clf.top(logits, args.topk):
            print(f"  {t['prob']:7.2%}  {t['label']}")
    return 2 if failed else 0


def _error(exc: Exception) -> int:
    sys.stderr.write(f"mobilenets.lite: error: {exc}\n")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("\nmobilenets.lite: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
