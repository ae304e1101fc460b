"""Inference for users: classify image files (`predict`) and video frames (`stream`) with a trained or exported model.

A model is our weights folder (config.json + model.safetensors) or an ONNX file written by `mobilenets export`;
either way the preprocessing (resolution, crop, mean/std) and class names come from the model's own ModelSpec
(config.json or ONNX metadata_props), so images are fed exactly as in evaluation (preprocess.py's eval transform).
`stream` answers the paper's deployment question on this machine: does this MobileNet keep up with a 24 FPS video?
Video decoding and encoding use PyAV (FFmpeg); the overlay is drawn with Pillow.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import check_writable, file_in_the_way, not_a_file, publish, remove_stale_staging, staging_path
from .data import IMAGE_EXTENSIONS
from .labels import display_label, resolve_labels, wnid_name
from .preprocess import ImageError, check_rgb, eval_transform, failure_reason, read_image
from .spec import ModelSpec

PREDICT_RUNTIMES = ("torch", "ort", "openvino")


class ModelFileError(ValueError):
    """A MODEL argument that is not a model we can run; the message names the path and what was expected."""


class StreamError(ValueError):
    """A video source or output that cannot be used; the message names it."""


# --- loading a model -------------------------------------------------------------------------------------------


@dataclass
class Predictor:
    """A runnable model with the preprocessing and class names that belong to it."""

    spec: ModelSpec
    labels: tuple[str, ...]
    run: Callable[[np.ndarray], np.ndarray]
    source: str
    runtime: str
    threads: int | None = None
    transform: Any = None

    def __post_init__(self) -> None:
        self.transform = eval_transform(self.spec)

    def preprocess(self, image: torch.Tensor) -> np.ndarray:
        """uint8 RGB (3, H, W) -> normalised float32 (1, 3, R, R), on ``threads`` torch threads if given."""
        from .runtimes import torch_threads

        with torch_threads(self.threads):
            return self.transform(image).unsqueeze(0).numpy()

    def warm_up(self) -> None:
        """One run on zeros so the first timed image does not pay for lazy initialisation."""
        r = self.spec.resolution
        self.run(np.zeros((1, self.spec.in_chans, r, r), np.float32))


def load_predictor(model: str | os.PathLike, runtime: str | None = None, threads: int | None = None) -> Predictor:
    """Open MODEL (weights folder, a `mobilenets train` run folder for its final weights ``RUN/model`` as
    `weights.run_weights` takes it, or exported .onnx) for ``runtime`` (default: torch for folders, ort for .onnx).
    The predictor's ``source`` names the weights folder taken (``RUN/model`` for a run).

    ``threads`` is the intra-op thread count of the model's runtime and of the (torch) preprocessing, applied per
    session (ONNX Runtime, OpenVINO) or per call (torch, whose only setting is process-wide: it is set for the call
    and the caller's count restored after); None leaves each runtime's default. An ONNX file's images are
    preprocessed to its graph's input size (`onnx_spec`)."""
    from . import runtimes, weights
    from .cores import check_threads

    path = Path(model)
    if runtime is not None and runtime not in PREDICT_RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not allowed: runtime must be one of {', '.join(PREDICT_RUNTIMES)}")
    if threads is not None:
        check_threads(threads)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    path = weights.run_weights(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        runtime = runtime or "ort"
        if runtime == "torch":
            raise ModelFileError(f"{path}: an ONNX file runs under --runtime ort or openvino, not torch")
        spec = onnx_spec(path)
        runner = runtimes.make_runner(runtime=runtime, onnx_path=path, threads=threads)
    elif path.is_dir() or path.name in (weights.WEIGHTS_FILE, weights.CONFIG_FILE):
        net = weights.load(path)
        spec, runtime = net.spec, runtime or "torch"
        runner = runtimes.make_runner(net, runtime, threads=threads)
    else:
        raise ModelFileError(
            f"{path}: not a model: MODEL must be a mobilenets weights folder (config.json + model.safetensors) "
            f"or an ONNX file exported by `mobilenets export` (.onnx){weights.convert_hint(path)}"
        )
    if spec.num_classes == 0:
        raise ModelFileError(f"{path}: a feature extractor (num_classes=0) has no classes to predict")
    check_rgb(spec, path)  # before any image: a per-image check would call every image unreadable
    return Predictor(spec, resolve_labels(spec), runner, str(path), runtime, threads)


def onnx_spec(path: Path) -> ModelSpec:
    """The ModelSpec of an exported ONNX file, its resolution the graph's fixed input size where it has one: a file
    whose metadata says otherwise (exported with ``resolution`` before the metadata recorded it) still gets images
    of the size its graph takes."""
    from .export import onnx_input_size, spec_from_onnx

    spec = spec_from_onnx(path)
    h, w = onnx_input_size(path)
    if h is None or w is None or (h, w) == (spec.resolution, spec.resolution):
        return spec
    if h != w:
        raise ModelFileError(f"{path}: input {h}x{w} is not allowed: predict feeds square center crops")
    return spec.replace(resolution=h)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> list[dict]:
    """The ``k`` most probable classes: output index, label, readable name (an ImageNet wnid label's class name,
    else the label itself) and probability. Equal probabilities rank by index, the lower first (as ``argmax`` and
    `engine.evaluate` rank them): numpy's default sort left their order to chance, so a tied top class could be
    another than the one eval scored."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [
        {"index": int(i), "label": labels[i], "name": wnid_name(labels[i]) or labels[i], "prob": float(probs[i])}
        for i in order
    ]


# --- predict ---------------------------------------------------------------------------------------------------


def expand_images(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, Exception]]]:
    """Files named directly, plus image files found recursively (sorted) in folders, walked as training walks a
    class folder (`data.class_files`: hidden files and folders skipped, such as .ipynb_checkpoints copies and macOS
    ._ files; linked folders followed); missing paths as errors."""
    from .data import class_files, is_image_name

    files: list[Path] = []
    errors: list[tuple[Path, Exception]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += [f for f in class_files(p) if is_image_name(f)]
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a device or a FIFO: not "missing"
            errors.append((p, ValueError(f"{p}: is not a regular file, expected an image file or a folder of them")))
        else:
            errors.append((p, FileNotFoundError(f"{p}: no such file or folder")))
    return files, errors


@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        latency = {"preprocess": round(self.preprocess_ms, 3), "model": round(self.model_ms, 3)}
        return {"path": self.path, "top": self.top, "latency_ms": latency}


def predict(predictor: Predictor, inputs: Sequence[str | os.PathLike], *, topk: int = 5) -> Iterator[Prediction]:
    """Classify each image (folders expanded); an unreadable or missing file yields an error entry, the rest go on."""
    if topk < 1:
        raise ValueError(f"topk={topk!r} is not allowed: topk must be an integer >= 1")
    files, missing = expand_images(inputs)
    if not files and not missing:
        exts = " ".join(IMAGE_EXTENSIONS)
        raise ValueError(f"no image files found in {', '.join(map(str, inputs))} (extensions: {exts})")
    for path, exc in missing:
        yield Prediction(str(path), error=str(exc))
    if not files:
        return
    predictor.warm_up()
    for path in files:
        t0 = time.perf_counter()
        try:
            x = predictor.preprocess(read_image(path))
        except (ImageError, OSError) as exc:
            yield Prediction(str(path), error=f"{path}: {failure_reason(exc, path)}")
            continue
        t1 = time.perf_counter()
        logits = predictor.run(x)
        t2 = time.perf_counter()
        top = top_k(softmax(logits[0].astype(np.float64)), predictor.labels, topk)
        yield Prediction(str(path), top, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


# --- stream ----------------------------------------------------------------------------------------------------


@dataclass
class StreamConfig:
    """Options of `mobilenets stream` (the CLI reads its defaults from here)."""

    out: str | None = None
    target_fps: float = 24.0
    display: bool = False
    max_frames: int | None = None
    codec: str = "libx264"  # falls back to mpeg4 when FFmpeg was built without it
    # libx264 options: a live encoder's (x264's 'veryfast' preset, no look-ahead). x264's default 'medium' took 21 ms
    # a 640x480 frame here (1 thread of an AMD EPYC), more than any model at 24 FPS; these take 4.3 ms, at the same
    # constant quality (CRF 23) and a smaller file on real photos (results/stream-fps-*.md)
    encoder_options: dict[str, str] = field(default_factory=lambda: {"preset": "veryfast", "tune": "zerolatency"})
    overwrite: bool = False  # replace an existing --out that is not a video this command wrote (one is replaced)


STREAM_MARK = "mobilenets stream"  # the container's comment tag on every annotated video, so a re-run may replace it


def written_by_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a video `stream` wrote (its container's comment is `STREAM_MARK`)."""
    av = pyav()  # asked before the source is opened (an existing --out): PyAV missing is its one line here too

    try:
        with av.open(str(path)) as container:
            return any(k.lower() == "comment" and v == STREAM_MARK for k, v in container.metadata.items())
    except (av.FFmpegError, OSError, ValueError):
        return False


@dataclass
class StreamReport:
    source: str
    runtime: str
    frames: int
    seconds: float
    fps_end_to_end: float
    fps_model: float
    latency_model_ms: dict[str, float]
    latency_frame_ms: dict[str, float]
    target_fps: float
    target_met: bool
    source_fps: float | None
    out: str | None
    top_labels: dict[str, int]
    stages: list[str] = field(default_factory=list)  # what each frame went through, timed by fps_end_to_end
    interrupted: bool = False  # stopped by Ctrl-C (how a camera stream ends): the figures count the frames before it

    def to_dict(self) -> dict:
        return dict(self.__dict__)


MIN_PYAV = (14, 0)  # VideoFrame.rotation (`upright_rgb`); pyproject's video extra requires it


def pyav() -> Any:
    """The ``av`` module (PyAV, FFmpeg's bindings), or a `StreamError` saying how to install it: missing, or older
    than `MIN_PYAV` (whose frames carry no rotation, `upright_rgb`), it failed in the middle of a stream instead."""
    try:
        import av
    except ImportError as exc:
        raise StreamError(f"stream needs PyAV (pip install 'mobilenets[video]'): {exc}") from exc
    version = (*(int(p) for p in re.findall(r"\d+", str(getattr(av, "__version__", "0")))[:2]), 0, 0)[:2]  # "14": 14.0
    if version < MIN_PYAV:
        raise StreamError(f"stream needs PyAV >= {'.'.join(map(str, MIN_PYAV))}, this is {av.__version__} "
                          "(pip install -U 'mobilenets[video]')")  # fmt: skip
    return av


def open_source(source: str | int) -> Any:
    """A PyAV input container for a video file or a camera index (V4L2 on Linux, AVFoundation on macOS)."""
    import sys

    av = pyav()

    text = str(source)
    if text.isdigit():
        if sys.platform == "darwin":
            fmt, url = "avfoundation", text
        else:
            fmt, url = "v4l2", f"/dev/video{text}"
            if not Path(url).exists():
                raise StreamError(f"camera {text}: {url} does not exist (no camera here?)")
        try:
            return av.open(url, format=fmt)
        except (av.FFmpegError, OSError) as exc:
            raise StreamError(f"camera {text}: cannot open {url} ({exc})") from exc
    path = Path(text)
    if (what := not_a_file(path)) is not None:
        raise StreamError(f"{path}: {what}, expected a video file (or a camera index)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise StreamError(f"{path}: not a readable video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise StreamError(f"{path}: has no video stream")
    return container


def _natural_key(path: Path) -> list:
    """Sort key that orders numbered frames as they were numbered: ``frame_9`` before ``frame_10`` (a plain sort puts
    ``frame_10`` first, and unpadded numbering is what many capture tools write)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def is_frame_folder(source: str | int | os.PathLike) -> bool:
    """Whether `stream` reads ``source`` as a folder of frames: a folder, unless it reads as a camera index (a folder
    named ``0`` beside the command does not hide camera 0; ``./0`` is the folder)."""
    return not str(source).isdigit() and Path(str(source)).is_dir()


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frames of a folder of images, in frame order: its visible files with an image extension
    (`data.IMAGE_EXTENSIONS`), numbers in their names compared as numbers (`_natural_key`). Only the folder itself is
    read, as FFmpeg's image-sequence input reads one pattern in one folder: subfolders hold other sequences or other
    data, and their frames have no place in this one's order. Other files (a notes.txt, a labels.csv) are not frames."""
    folder = Path(folder)
    try:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    except OSError as exc:
        raise StreamError(f"{folder}: cannot list the folder of frames ({failure_reason(exc, folder)})") from exc
    # a broken link is kept (not is_file): its frame is named by `_read_frames` as unreadable, not skipped; the name
    # itself breaks ties between keys that only zero-padding tells apart (frame_01, frame_1), else iterdir's order
    frames = (e for e in entries if e.suffix.lower() in IMAGE_EXTENSIONS and not e.is_dir())
    files = sorted(frames, key=lambda e: (_natural_key(e), e.name))
    if not files:
        nested = any(e.is_dir() for e in entries)
        sub = " (frames are read from the folder itself, not its subfolders)" if nested else ""
        raise StreamError(f"{folder}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder of frames{sub}")
    return files


@dataclass
class _Still:
    """A decoded image standing in for a video frame (`av.VideoFrame.to_ndarray`'s one use here)."""

    rgb: np.ndarray
    rotation: int = 0  # `read_image` has turned it upright already

    def to_ndarray(self, format: str) -> np.ndarray:  # noqa: A002 (PyAV's keyword)
        return self.rgb


def upright_rgb(frame: Any) -> np.ndarray:
    """A decoded frame as RGB (H, W, 3), turned as its display matrix says. A phone records a portrait clip as
    landscape frames with a rotation in the container (MP4's track matrix), which players and FFmpeg's CLI apply
    (``autorotate``) and PyAV's decode does not: the model saw such a clip sideways, where `predict` turns a
    photo's EXIF orientation upright. PyAV's ``rotation`` is counterclockwise in degrees, as ``np.rot90`` turns."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4  # PyAV >= 14 (pyproject)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _read_frames(files: Sequence[Path]) -> Iterator[_Still]:
    """The frames of a folder, decoded as `predict` decodes images (`read_image`: EXIF orientation applied); a file
    that cannot be decoded ends the stream with a `StreamError` naming it, as an undecodable video frame does."""
    for i, path in enumerate(files, 1):
        try:
            image = read_image(path)
        except (ImageError, OSError) as exc:
            raise StreamError(f"{path} (frame {i}): {failure_reason(exc, path)}") from exc
        yield _Still(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))


def _check_out(path: str) -> Path:
    """The annotated video's path, checked before the first frame: no file where one of its folders should be (named
    as a file, at any depth) and its nearest existing folder takes a new file (`atomic.check_writable`). Missing
    folders are created by the writer at the first frame, as export's and bench's ``--out`` create theirs when they
    write (`atomic.atomic_open`): a stream that writes no frame leaves none behind."""
    if (blocker := file_in_the_way(path)) is not None:  # at any depth, as export and convert name it
        raise StreamError(f"out={path!r}: {str(blocker)!r} is a file, not a folder")
    return check_writable(path)


class _Writer:
    """Encodes annotated RGB frames to a video file (H.264 yuv420p, or MPEG-4 Part 2 without libx264).

    The frames go to a hidden staging file beside ``path`` (same extension: FFmpeg picks the container by it), moved
    over ``path`` by ``close(keep=True)`` once the video is complete (Ctrl-C completes it too: it is how a camera
    stream stops): a stream that fails or is killed leaves an earlier video there as it was, never a truncated one
    (an MP4 without its index is unreadable)."""

    def __init__(
        self,
        path: str,
        fps: float,
        width: int,
        height: int,
        codec: str,
        options: dict[str, str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.out, self.path = path, Path(path)  # checked by `stream` before the first frame (`_check_out`)
        self.size = (width, height)  # of the first frame; the encoded video drops an odd last row/column
        made = [p for p in self.path.parents if not p.exists()]  # innermost first
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the staging file goes beside it
        try:
            self._start(fps, codec, options, threads)
        except BaseException:  # FFmpeg refused the file (its extension, its codec): no empty folders left for it
            for folder in made:
                with contextlib.suppress(OSError):  # not empty (another process wrote there): kept
                    folder.rmdir()
            raise

    def _start(self, fps: float, codec: str, options: dict[str, str] | None, threads: int | None) -> None:
        """The staging file opened, its video stream set up; ``threads``: the encoder's (None: FFmpeg's choice, one
        per core)."""
        from fractions import Fraction

        import av

        remove_stale_staging(self.path)  # killed streams' staging files, which no run would otherwise remove
        self.part = staging_path(self.path)
        try:
            self.container = av.open(str(self.part), "w")
        except (ValueError, av.FFmpegError) as exc:  # FFmpeg knows no container for the file name's extension
            raise self._refused(exc) from exc
        self.container.metadata["comment"] = STREAM_MARK
        if codec not in av.codecs_available:
            codec = "mpeg4"
        try:
            self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        except ValueError as exc:  # a container that cannot hold the codec (.webm: VP8/VP9/AV1 only)
            self.close(keep=False)
            raise self._refused(exc) from exc
        width, height = self.size
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        if threads is not None:
            self.stream.codec_context.thread_count = threads
        if codec == "libx264" and options:
            self.stream.options = dict(options)

    def _refused(self, exc: Exception) -> StreamError:
        """FFmpeg refused ``out``: no container for its extension, or one that cannot hold the codec."""
        return StreamError(f"out={self.out!r}: cannot write a video there ({exc}); name it .mp4, .mkv or .avi")

    def write(self, rgb: np.ndarray) -> None:
        import av

        rgb = rgb[: self.stream.height, : self.stream.width]
        try:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:  # a full disk, a folder made read-only since
            raise self._failed(exc) from exc

    def close(self, keep: bool = True) -> None:
        """Finish the video and move it to ``path`` (``keep``), or drop the staging file."""
        import av

        try:
            if keep:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
            if keep:
                publish(self.part, self.path)
        except (av.FFmpegError, OSError) as exc:
            raise self._failed(exc) from exc
        finally:
            self.part.unlink(missing_ok=True)

    def _failed(self, exc: Exception) -> OSError:
        """An `OSError` naming ``path``, the file the user asked for, instead of the staging file FFmpeg wrote."""
        code = getattr(exc, "errno", None)
        return OSError(code or errno.EIO, getattr(exc, "strerror", None) or str(exc), str(self.path))


class _Display:
    """A Tk window showing annotated frames; needs a display server."""

    def __init__(self) -> None:
        import sys

        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise StreamError("--display needs a display (DISPLAY is not set); use --out FILE to save the video")
        import tkinter

        self.root = tkinter.Tk()
        self.root.title("mobilenets stream")
        self.label = tkinter.Label(self.root)
        self.label.pack()

    def show(self, image: Any) -> None:
        from PIL import ImageTk

        self.photo = ImageTk.PhotoImage(image)
        self.label.configure(image=self.photo)
        self.root.update()

    def close(self) -> None:
        self.root.destroy()


def _overlay(rgb: np.ndarray, text: list[str]) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(rgb)
    size = max(12, image.height // 24)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    box_h = (size + 4) * len(text) + 6
    draw.rectangle([0, 0, image.width, box_h], fill=(0, 0, 0))
    for i, line in enumerate(text):
        draw.text((6, 4 + i * (size + 4)), line, fill=(255, 255, 0), font=font)
    return image


def _decode(container: Any, vstream: Any, source: str | int) -> Iterator[Any]:
    """The frames of ``vstream``; a `StreamError` naming ``source`` when FFmpeg cannot decode them (a file that
    opens, e.g. by its .jpg name, but holds no decodable video)."""
    import av

    frames = 0
    try:
        for frame in container.decode(vstream):
            frames += 1
            yield frame
    except av.FFmpegError as exc:
        where = f"frame {frames + 1} cannot be decoded" if frames else "its frames cannot be decoded"
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise StreamError(f"{source}: not a readable video ({where}: {reason})") from exc


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "mean": float("nan")}
    p50, p90 = np.percentile(values, [50, 90])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "mean": round(statistics.fmean(values), 3)}


def stream(predictor: Predictor, source: str | int, cfg: StreamConfig | None = None) -> StreamReport:
    """Classify every frame of ``source``, overlay label/confidence/latency/FPS, optionally save and show them.

    End-to-end FPS counts every stage a frame went through (`StreamReport.stages`: decoding to classifying, and the
    overlay, encoding and window only where ``cfg.out`` / ``cfg.display`` ask for them); model-only FPS is
    1000 / mean model latency. Ctrl-C (SIGINT) ends the stream as the end of the file does, after the frame being
    processed: the annotated video is finished and moved into place, and the report of the frames so far is returned
    with ``interrupted=True`` (it is how a camera stream stops), not raised as KeyboardInterrupt.
    """
    from .runtimes import torch_threads

    cfg = cfg or StreamConfig()
    if not (math.isfinite(cfg.target_fps) and cfg.target_fps > 0):  # nan compared 'NOT met' with any FPS
        raise ValueError(f"target_fps={cfg.target_fps!r} is not allowed: target_fps must be a finite number > 0")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise ValueError(f"max_frames={cfg.max_frames!r} is not allowed: max_frames must be >= 1 (or not given)")
    if cfg.out and Path(cfg.out).is_file() and Path(str(source)).is_file() and os.path.samefile(cfg.out, source):
        # the writer would truncate the file the decoder is still reading: the source would be lost
        raise StreamError(f"out={cfg.out!r} is not allowed: it is the source video; name another file")
    if cfg.out and Path(cfg.out).exists() and not cfg.overwrite:
        if Path(cfg.out).is_dir():
            raise StreamError(f"out={cfg.out!r} is not allowed: it is a folder; name the video file to write")
        if not written_by_stream(cfg.out):  # an annotated video of an earlier run is replaced: re-running works
            raise StreamError(f"out={cfg.out!r} is not allowed: the file exists and is not a video this command "
                              "wrote; pass --overwrite to replace it")  # fmt: skip
    if cfg.out:
        _check_out(cfg.out)  # before any frame is decoded, naming --out (the writer's staging file is another)
    with torch_threads(predictor.threads):  # held for the whole stream: no thread-count switch inside each frame
        return _stream(predictor, source, cfg)


def _stages(cfg: StreamConfig) -> list[str]:
    """The stages each frame goes through with ``cfg``: the overlay is drawn only to be encoded or shown."""
    stages = ["decode", "preprocess", "model"]
    if cfg.out or cfg.display:
        stages.append("overlay")
    if cfg.out:
        stages.append("encode")
    if cfg.display:
        stages.append("display")
    return stages


class _CtrlC:
    """Ctrl-C during a stream stops it between frames: the frame being processed is finished first, so the report and
    the annotated video count the same whole frames (an encoder with look-ahead would otherwise still write a frame
    the report never counted). While the stream waits for its next frame (a camera) KeyboardInterrupt is raised at
    once, and so it is on a second Ctrl-C within a frame that does not end. Installed only over Python's default
    handler, in the main thread (the only one signals reach); the default is back before the video is finished, so a
    second Ctrl-C then abandons it (staged: no torn --out)."""

    def __init__(self) -> None:
        self.pressed = False
        self.in_frame = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pressed or not self.in_frame:  # a second Ctrl-C stops a frame that does not end (a stuck display)
            self.pressed = True
            raise KeyboardInterrupt
        self.pressed = True


def _classify(predictor: Predictor, rgb: np.ndarray) -> tuple[float, dict]:
    """The model's latency in ms on one RGB frame and its top class."""
    x = predictor.preprocess(torch.from_numpy(rgb).permute(2, 0, 1))
    t0 = time.perf_counter()
    logits = predictor.run(x)
    ms = (time.perf_counter() - t0) * 1e3
    return ms, top_k(softmax(logits[0].astype(np.float64)), predictor.labels, 1)[0]


def _open_frames(
    source: str | int, threads: int | None = None
) -> tuple[Iterator[Any], float | None, Callable[[], None]]:
    """(frames, their rate if the source states one, what closes the source) for a video file, a camera index or a
    folder of frames (`frame_files`; a folder states no rate: an annotated video of it plays at ``--target-fps``).
    ``threads``: the video decoder's (None: FFmpeg's choice, one per core)."""
    if is_frame_folder(source):
        return _read_frames(frame_files(source)), None, lambda: None
    container = open_source(source)
    vstream = container.streams.video[0]
    vstream.thread_type = "AUTO"
    if threads is not None:
        vstream.codec_context.thread_count = threads
    source_fps = float(vstream.average_rate) if vstream.average_rate else None
    return _decode(container, vstream, source), source_fps, container.close


def _frame_size_of(writer: _Writer | None, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` at the annotated video's frame size: the frames of a folder may differ in size, and a video has one
    (the first frame's; the others are scaled to it, as FFmpeg scales an image sequence to its output size). The
    model saw each frame at its own size; only what is drawn and encoded is scaled."""
    if writer is None or rgb.shape[1::-1] == writer.size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize(writer.size, Image.Resampling.BILINEAR))


def _stream(predictor: Predictor, source: str | int, cfg: StreamConfig) -> StreamReport:
    frames, source_fps, close = _open_frames(source, predictor.threads)
    display = _Display() if cfg.display else None
    writer: _Writer | None = None
    model_ms: list[float] = []
    frame_ms: list[float] = []
    counts: dict[str, int] = {}
    predictor.warm_up()
    ctrl_c = _CtrlC()
    start = time.perf_counter()
    finished = False
    try:
        with ctrl_c:
            for frame in frames:
                ctrl_c.in_frame = True
                t0 = time.perf_counter()
                rgb = upright_rgb(frame)
                ms, best = _classify(predictor, rgb)
                if writer is None and cfg.out:
                    writer = _Writer(cfg.out, source_fps or cfg.target_fps, rgb.shape[1], rgb.shape[0], cfg.codec,
                                     cfg.encoder_options, predictor.threads)  # fmt: skip
                if writer or display:
                    fps = (len(model_ms) + 1) / (time.perf_counter() - start)
                    image = _overlay(_frame_size_of(writer, rgb),
                                     [f"{display_label(best['label'])[:48]}  {best['prob'] * 100:.1f}%",
                                      f"model {ms:.1f} ms ({predictor.runtime})  {fps:.1f} FPS"])  # fmt: skip
                    if writer:
                        writer.write(np.asarray(image))
                    if display:
                        display.show(image)
                # counted once written, all together: the report's frames are the video's
                model_ms.append(ms)
                counts[best["label"]] = counts.get(best["label"], 0) + 1
                frame_ms.append((time.perf_counter() - t0) * 1e3)
                ctrl_c.in_frame = False
                if ctrl_c.pressed or (cfg.max_frames and len(model_ms) >= cfg.max_frames):
                    break
        finished = True
    except KeyboardInterrupt:  # Ctrl-C while waiting for a frame (a camera's next), or from the caller's own handler
        ctrl_c.pressed = finished = True
    finally:
        close()
        if writer:  # the end of the file, --max-frames or Ctrl-C: the frames recorded so far become the video
            writer.close(keep=finished)  # a failed stream (or a second Ctrl-C now) replaces no earlier video
        if display:
            display.close()
    seconds = time.perf_counter() - start
    n = len(model_ms)
    fps_e2e = n / seconds if seconds > 0 else 0.0
    return StreamReport(
        source=str(source),
        runtime=predictor.runtime,
        frames=n,
        seconds=round(seconds, 3),
        fps_end_to_end=round(fps_e2e, 2),
        fps_model=round(1e3 / statistics.fmean(model_ms), 2) if n else 0.0,
        latency_model_ms=percentiles(model_ms),
        latency_frame_ms=percentiles(frame_ms),
        target_fps=cfg.target_fps,
        target_met=bool(n) and fps_e2e >= cfg.target_fps,
        source_fps=source_fps,
        out=cfg.out,
        top_labels=dict(sorted(counts.items(), key=lambda kv: -kv[1])[:5]),
        stages=_stages(cfg),
        interrupted=ctrl_c.pressed,
    )


__all__ = [
    "ModelFileError",
    "Prediction",
    "Predictor",
    "StreamConfig",
    "StreamError",
    "StreamReport",
    "expand_images",
    "load_predictor",
    "predict",
    "stream",
]
