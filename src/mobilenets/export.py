"""Export for deployment: ONNX (BatchNorm folded, metadata, parity-checked), INT8 QDQ, TorchScript and torch.export.

ONNX uses torch.onnx's TorchScript-based exporter (``dynamo=False``): it needs no extra package (the dynamo exporter
needs onnxscript) and produces a plain opset-17 graph that ONNX Runtime and OpenVINO both read. Every export is
followed by a parity check against the PyTorch model on two batch sizes (and a second resolution when the spatial
axes are dynamic), as torchvision's ONNX tests do; fp32 exports must agree within `PARITY_TOL`.

INT8 follows ONNX Runtime's static quantization recipe (onnxruntime.ai/docs/performance/model-optimizations/
quantization.html): ``quant_pre_process`` then ``quantize_static`` in QDQ format, uint8 activations, int8 symmetric
weights, **per-channel weights by default**: per-tensor weight scales are the known failure of depthwise models
(MobileNetV1 falls to ~10% top-1 per-tensor, tensorflow#57745) because one depthwise filter's range sets the scale
for all of them. A QDQ graph is also what OpenVINO turns into its own INT8 kernels.

The first `FP32_HEAD` convolutions (the stem and the first depthwise conv) stay fp32 by default. They run at the
highest resolution on 3..32 channels, where ONNX Runtime's INT8 CPU kernels are several times *slower* than its fp32
NCHWc kernels (ORT profiler on this CPU, 0.25-128: stem 67 us INT8 vs 27 us fp32, first depthwise 57 us vs 14 us).
Keeping them fp32 took ORT INT8 over ORT fp32 from 0.91x to 1.48x for 0.25-128, 2.28x to 2.76x for 0.75-192 and
2.85x to 3.14x for 1.0-224, with top-1 within 0.7 points of fp32 (results/int8-amd-epyc-b1-t1.md, one run at
9108aa5; the run at b920994 gave 1.06x to 1.58x, 2.52x to 2.81x, 2.70x to 2.88x). Everything after
them is INT8, so the graph has a single fp32->INT8 transition. The output is not quantized: the classifier's INT8
Gemm writes fp32 logits (see `quantize_int8`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import (
    atomic_write_bytes,
    check_writable,
    file_in_the_way,
    name_file,
    publish,
    remove_stale_staging,
    staging_path,
)
from .complexity import TYPE_FC, count_complexity
from .labels import resolve_labels
from .mobilenet_v1 import MobileNetV1
from .progress import abandon, bar_or_lines
from .runtimes import set_ort_threads, torch_threads
from .spec import ModelSpec

OPSET = 17
# the exporter's oldest opset (our graph runs in ONNX Runtime from it), and the oldest with per-channel QDQ
MIN_OPSET, MIN_INT8_OPSET = 7, 13
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PARITY_TOL = 1e-4  # fp32 exports must match PyTorch this closely (max abs difference of logits)
FP32_HEAD = 2  # leading convolutions kept fp32 in INT8 exports (stem + first depthwise; see the module docstring)
FORMATS = ("onnx", "torchscript", "pt2")
# each format's file suffix (any case): `default_out` names files with it, and an --out with another suffix is
# refused, another format's (predict, eval and bench read a .onnx file as ONNX, and nothing else) or one no format
# uses (.txt, .bin, none): predict takes an ONNX file only by its .onnx, and TorchScript's .pt is what torch.jit
# documents (.pth is left to state dicts, which `convert` reads), .pt2 what torch.export.save documents
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
# tags of an INT8 export's name (`fp32_companion` drops them) and of its fp32 companion's, which an INT8 file's
# name must not end with: --int8 --out m.fp32.onnx would keep its fp32 model in m.fp32.fp32.onnx
INT8_TAGS, FP32_TAGS = (".int8", "-int8", "_int8"), (".fp32", "-fp32", "_fp32")
SPEC_KEY = "mobilenets.spec"  # ONNX metadata_props key holding the full ModelSpec as JSON
WEIGHTS_KEY = "mobilenets.weights_sha256"  # sha256 of the exported model.safetensors: which weights a file holds
CALIB, VAL = "calibration (--calib)", "validation (--val)"  # what a folder's images are for, in messages
# Readable images an INT8 calibration needs (--calib; the default picks 200, --calib-synthetic takes any count).
# ONNX Runtime's quantize_static takes whatever its reader yields, one image included (MinMax: that image's ranges),
# so the floor is ours, measured: INT8 top-1 agreement with fp32 of the TFLite 0.25_128 weights (the family's least
# robust) on 200 Imagenette val images, calibrated on N train images (seed 0): N=1 23%, 2 38%, 4 76%, 8 78%, 16 86%,
# 32, 64 and 128 87%; over seeds 0-4, N=8 gave 78-90%, N=16 85-90%, N=32 86-90%. 32 (4 calibration batches of 8) is
# on that plateau with a margin.
MIN_CALIB_IMAGES = 32
SYNTHETIC = "SYNTHETIC random-noise images (smoke test only: ranges and agreement are not representative)"


class ExportError(ValueError):
    """An export that cannot be made or that failed its checks; the message says which and why."""


# --- ONNX ------------------------------------------------------------------------------------------------------


def input_value_range(spec: ModelSpec) -> list[list[float]]:
    """Per channel [min, max] of the network input: pixels in [0, 1] normalised by the spec's mean/std."""
    return [[round((0 - m) / s, 6), round((1 - m) / s, 6)] for m, s in zip(spec.mean, spec.std, strict=False)]


def onnx_metadata(spec: ModelSpec, **extra: Any) -> dict[str, str]:
    """metadata_props for an exported model: the full spec plus the fields a non-Python consumer needs."""
    from . import __version__

    meta = {
        SPEC_KEY: spec.to_json(),
        "alpha": str(spec.alpha),
        "resolution": str(spec.resolution),
        "layout": "NCHW",
        "color": "RGB",
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "input_value_range": json.dumps(input_value_range(spec)),
        "preprocess": (
            f"resize shorter side to resolution/{spec.crop_pct} ({spec.interpolation}), center crop resolution, "
            "scale to [0, 1], (x - mean) / std"
        ),
        "labels": json.dumps(list(resolve_labels(spec))),
        "output": "logits (apply softmax for probabilities)",
        "mobilenets_version": __version__,
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def exported_spec(spec: ModelSpec, resolution: int | None) -> ModelSpec:
    """The spec an export at ``resolution`` records (None: the spec's own). The input size changes no weights, so
    this is the model's spec with that resolution, and a grid name renamed to match (_025_128 -> _025_160): what
    consumers read back must be what the graph takes, or they feed it the wrong size (`ModelSpec.replace` renames)."""
    return spec if resolution is None else spec.replace(resolution=resolution)


def _tf_padding_dynamic_hw_error(spec: ModelSpec) -> ExportError:
    # The ONNX tracer turns the size arithmetic of layers.Conv2dSame into constants, so a dynamic-H/W graph would
    # silently pad every size like the example size; torch.export keeps it symbolic but cannot prove its shape
    # guards for all sizes. A fixed-size export is exact.
    return ExportError(
        "dynamic_hw=True is not supported for a model with tf_padding=True: its TensorFlow 'SAME' padding depends "
        f"on the input size, and the exported graph would keep the padding of {spec.resolution}x{spec.resolution}; "
        "export at a fixed size instead (one export per resolution)"
    )


def static_same_padding(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """Replace (in place) every `layers.Conv2dSame` by a constant ZeroPad2d + Conv2d exact for ``example``'s size.

    Traced as is, Conv2dSame leaves a shape-arithmetic subgraph per strided layer (Shape/Gather/Div/...) that
    ONNX Runtime cannot fold under a dynamic batch axis; a constant Pad is folded into the Conv (ORT PadFusion)
    and is quantized cleanly. Valid only at this input size, which is why dynamic H/W is refused for such models.
    """
    from torch import nn

    from .layers import Conv2dSame, same_pad_amount

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, inp, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:])))
        for name, m in net.named_modules()
        if isinstance(m, Conv2dSame)
    ]
    with torch.no_grad():
        net(example)
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        conv = net.get_submodule(name)
        k, st, d = conv.kernel_size, conv.stride, conv.dilation
        (top, bottom), (left, right) = same_pad_amount(h, k[0], st[0], d[0]), same_pad_amount(w, k[1], st[1], d[1])
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, k, st, 0, d, conv.groups, bias=conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent), attr, nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain))
    return net


def export_onnx(
    model: MobileNetV1,
    path: str | os.PathLike,
    *,
    resolution: int | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    fold_bn: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically), checked by ``onnx.checker``; input NCHW float32, normalised.

    ``metadata_props`` carry the ModelSpec (alpha, resolution, mean/std, input value range, labels) so that
    `mobilenets predict model.onnx` and other consumers can preprocess correctly without our config.json. With
    ``resolution`` the graph's input is that size and the metadata record it (`exported_spec`).
    """
    import onnx

    spec = exported_spec(model.spec, resolution)
    if dynamic_hw and spec.tf_padding:
        raise _tf_padding_dynamic_hw_error(spec)
    res = spec.resolution
    net = model.fuse() if fold_bn else copy.deepcopy(model).eval()
    example = torch.zeros(1, spec.in_chans, res, res)
    if spec.tf_padding and not dynamic_hw:
        net = static_same_padding(net, example)
    axes: dict[int, str] = {0: "batch"} if dynamic_batch else {}
    out_axes = dict(axes)
    if dynamic_hw:
        axes.update({2: "height", 3: "width"})
        if not spec.global_pool:  # global_pool='': the output is the final feature map, its size follows the input
            out_axes.update({2: "out_height", 3: "out_width"})
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic (tf_padding: refused above)
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes} if axes else None,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = onnx_metadata(spec, opset=opset, bn_folded=fold_bn, dynamic_hw=dynamic_hw, precision="fp32")
    meta.update(metadata or {})
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"MobileNetV1 alpha={spec.alpha} resolution={spec.resolution} (mobilenets)"
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def onnx_input_size(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """(height, width) of an ONNX model's first input, None for a dynamic axis (``dynamic_hw`` exports)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ExportError(f"{path}: input of rank {len(dims)}; a MobileNet takes NCHW images (rank 4)")
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[2:])  # type: ignore[return-value]


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file (no graph validation); `ExportError` when it is not an ONNX model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / RuntimeError variants for garbage
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not proto.graph.node:
        raise ExportError(f"{path}: not a readable ONNX model (empty graph)")
    return {p.key: p.value for p in proto.metadata_props}


def spec_from_onnx(path: str | os.PathLike) -> ModelSpec:
    """The ModelSpec an ONNX file was exported with (from its metadata_props); `ExportError` naming ``path`` when
    the metadata are missing or damaged (json's and ModelSpec's own errors name no file)."""
    meta = read_onnx_metadata(path)
    if SPEC_KEY not in meta:
        raise ExportError(
            f"{path}: ONNX model without mobilenets metadata ({SPEC_KEY!r} missing); export it with "
            "`mobilenets export` so its preprocessing and labels travel with it"
        )
    try:
        fields = json.loads(meta[SPEC_KEY])
        if not isinstance(fields, dict):
            raise ValueError(f"a JSON {type(fields).__name__}, not an object of ModelSpec fields")
        return ModelSpec.from_dict(fields)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and SpecError are ValueErrors; a bad field's type
        raise ExportError(
            f"{path}: unreadable {SPEC_KEY} metadata ({exc}); export the weights again with `mobilenets export`"
        ) from exc


# --- parity ----------------------------------------------------------------------------------------------------


@dataclass
class ParityRow:
    runtime: str
    batch: int
    resolution: int
    max_abs_diff: float
    top1_agree: bool
    max_abs_logit: float  # scale of the compared outputs, so the difference can be judged

    def __str__(self) -> str:
        return (
            f"{self.runtime}: batch {self.batch} at {self.resolution}x{self.resolution}: "
            f"max |diff| vs PyTorch = {self.max_abs_diff:.2e} (max |logit| {self.max_abs_logit:.3g})"
        )


def parity_inputs(spec: ModelSpec, batch: int, resolution: int, seed: int = 0) -> np.ndarray:
    """Deterministic normalised inputs spanning the model's input value range."""
    g = torch.Generator().manual_seed(seed + batch * 1000 + resolution)
    pixels = torch.rand(batch, spec.in_chans, resolution, resolution, generator=g)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((pixels - mean) / std).numpy()


def check_parity(
    model: MobileNetV1,
    run: Any,
    *,
    runtime: str,
    batches: Sequence[int] = (1, 3),
    resolutions: Sequence[int] | None = None,
    tol: float | None = PARITY_TOL,
) -> list[ParityRow]:
    """Compare ``run(x)`` to the PyTorch model on every batch x resolution; `ExportError` when above ``tol``."""
    net = model.eval()
    rows = []
    for res in resolutions or (model.spec.resolution,):
        for batch in batches:
            x = parity_inputs(model.spec, batch, res)
            with torch.inference_mode():
                ref = net(torch.from_numpy(x)).numpy()
            out = np.asarray(run(x))
            if out.shape != ref.shape:
                raise ExportError(f"{runtime}: output shape {out.shape} at batch {batch}, PyTorch gives {ref.shape}")
            diff = float(np.abs(out - ref).max())
            agree = bool((out.argmax(1) == ref.argmax(1)).all())
            rows.append(ParityRow(runtime, batch, res, diff, agree, float(np.abs(ref).max())))
            if tol is not None and not diff <= tol:
                raise ExportError(
                    f"parity check failed: {rows[-1]} exceeds the tolerance {tol:g}; the exported model "
                    "does not compute what the PyTorch model computes"
                )
    return rows


def second_resolution(res: int) -> int:
    """A different, non-multiple-of-32 size for the dynamic-H/W parity check (exercises odd feature maps)."""
    return res + 40 if res < 256 else res - 40


CHECK_THREADS = 1  # intra-op threads of the parity and agreement sessions when export is given no thread count


@contextlib.contextmanager
def ort_threads(threads: int | None) -> Iterator[None]:
    """Every ONNX Runtime session made inside the block through ``onnxruntime.SessionOptions`` gets ``threads``
    (`runtimes.set_ort_threads`); None changes nothing. It is how the sessions of ``quant_pre_process`` and
    ``quantize_static``'s calibration get a count, as neither takes session options (they make their own:
    onnxruntime/quantization/calibrate.py ``create_inference_session``, shape_inference.py, 1.32); left at ORT's
    default, the calibration ran one thread per core, slow on a busy machine (threads waiting on busy cores).
    ``onnxruntime.SessionOptions`` is a subclass setting the count for the block and restored after it: process-wide,
    as torch's own count is (`runtimes.torch_threads`), so the block holds only the quantization call."""
    if not threads:
        yield
        return
    import onnxruntime as ort

    # two blocks overlapping in two threads would each restore the class it found, one for good: one at a time
    with _ORT_THREADS_LOCK:
        base = ort.SessionOptions

        class Threaded(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__()
                set_ort_threads(self, threads)

        ort.SessionOptions = Threaded
        try:
            yield
        finally:
            ort.SessionOptions = base


_ORT_THREADS_LOCK = threading.RLock()  # `ort_threads`: one block at a time in this process


def ort_session(path: str | os.PathLike, threads: int | None = CHECK_THREADS) -> Any:
    import onnxruntime as ort

    opts = set_ort_threads(ort.SessionOptions(), threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf classes
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc


def ort_run(session: Any) -> Any:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


# --- INT8 ------------------------------------------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool, stream: Any = None) -> Any:
    """A stage's progress (`progress.bar_or_lines`): tqdm's bar on a terminal, one line when it ends otherwise
    (``calibrating: 32 images in 1.4 s``)."""
    lines = {"desc": desc, "done": "{desc}: {n} images in {s:.1f} s"}
    return bar_or_lines(total, enabled, lines, stream, desc=desc, unit="img")


def calibration_batches(
    images: Sequence[str | os.PathLike] | None,
    spec: ModelSpec,
    *,
    count: int,
    batch: int = 8,
    seed: int = 0,
    progress: bool = True,
    skipped: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """Normalised calibration batches from image files, or synthetic noise when ``images`` is None.

    With a ``skipped`` list an unreadable file is left out and noted there (``path: reason``), as training skips
    one; without it, it is an error. `ExportError` when no file of ``images`` could be read."""

    from .preprocess import ImageError, check_rgb, eval_transform, failure_reason, read_image

    if images is not None:
        check_rgb(spec)  # before the images: in the loop each would be "unreadable" (export_model checks first)

    def readable(paths):
        for p in paths:
            try:
                yield tf(read_image(p))
            except (ImageError, OSError) as exc:
                if skipped is None:
                    raise
                skipped.append(f"{p}: {failure_reason(exc, p)}")

    bar = _progress(count, "calibrating", progress)
    tf = eval_transform(spec)
    rng = np.random.default_rng(seed)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        if images is None:
            pixels = rng.integers(0, 256, (n, spec.in_chans, spec.resolution, spec.resolution), dtype=np.uint8)
            read = [tf(torch.from_numpy(p)) for p in pixels]
        else:
            read = list(readable(images[start : start + n]))
        bar.update(n)
        if read:
            yield torch.stack(read).numpy()
    if images is not None and skipped is not None and len(skipped) >= len(images):
        abandon(bar)
        raise ExportError(f"none of the {len(images)} images could be read (first: {skipped[0]})")
    bar.close()


def image_batches(
    pixels: Sequence[torch.Tensor], spec: ModelSpec, *, batch: int = 8, progress: bool = False
) -> Iterator[np.ndarray]:
    """Normalised batches (`preprocess.eval_normalize`) of the cropped images `read_images` kept: the arrays
    `calibration_batches` makes of their files (the same transform, split in two, and the same batches), without
    decoding them again."""
    from .preprocess import eval_normalize

    norm = eval_normalize(spec)
    bar = _progress(len(pixels), "calibrating", progress)
    for start in range(0, len(pixels), batch):
        chunk = pixels[start : start + batch]
        bar.update(len(chunk))
        yield torch.stack([norm(p) for p in chunk]).numpy()
    bar.close()


def pick_images(folder: str | os.PathLike, count: int, seed: int = 0, what: str = CALIB) -> list[Path]:
    """``count`` images from ``folder`` (recursive), chosen with a fixed seed, spread over its subfolders; ``what``
    they are for names the folder's role in the error when it holds none."""
    from .infer import expand_images

    found, bad = expand_images([folder])
    if bad:  # a missing folder: the error type expand_images gives, saying which option named it
        raise type(bad[0][1])(f"{bad[0][1]}; given for {what}")
    if not found:
        raise ExportError(f"{folder}: no image files found for {what}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(found))[: min(count, len(found))]
    return [found[i] for i in sorted(order)]


@dataclass
class ImageSet:
    """Images picked from a folder (`pick_images`) and read (`read_images`)."""

    folder: str
    seed: int
    chosen: int  # how many were picked
    paths: list[Path] = field(default_factory=list)  # the readable ones
    skipped: list[str] = field(default_factory=list)  # 'path: reason' of each unreadable one
    # the readable ones decoded, resized and cropped to the model's input (`preprocess.eval_crop`), uint8, in ``paths``
    # order, where `read_images` was given a spec: what calibration and the agreement check normalise
    # (`image_batches`) instead of decoding them again
    pixels: list[torch.Tensor] = field(default_factory=list, repr=False)

    def note(self) -> str:
        """What was skipped ('' when nothing was), with a warning when most of the chosen files were."""
        if not self.skipped:
            return ""
        text = f"; {len(self.skipped)} unreadable skipped (first: {self.skipped[0]})"
        if 2 * len(self.skipped) > self.chosen:
            text += "; WARNING: most of the chosen images are unreadable, check the folder"
        return text

    def __str__(self) -> str:
        """How many images were used: '66 of 68 images from DIR (seed 0); 2 unreadable skipped (...)'."""
        # chosen less skipped: a --val file unreadable by the time of the check is added to ``skipped`` (`_int8`)
        used = f"{self.chosen - len(self.skipped)} of {self.chosen}" if self.skipped else f"{self.chosen}"
        return f"{used} images from {self.folder} (seed {self.seed}){self.note()}"


def read_images(
    folder: str | os.PathLike,
    count: int,
    seed: int = 0,
    *,
    spec: ModelSpec | None = None,
    what: str = CALIB,
    minimum: int = 1,
    progress: bool = False,
    paths: list[Path] | None = None,
) -> ImageSet:
    """`pick_images`, each decoded before anything is written, to sort the readable ones from the others (and why).
    Given ``spec`` (the calibration images), the readable ones are kept resized and cropped to its input
    (`ImageSet.pixels`), which calibration and the agreement check normalise instead of decoding them a second and
    (no --val) third time. Kept at the model's input in uint8, 3 R^2 bytes each: 200 images take 9.4 MiB at 128,
    29 MiB at 224 (a decoded 500x375 photo is 0.5 MiB; kept normalised, in float, they would take 4 times as
    much), against the far larger activations ONNX Runtime's calibration keeps of each image. Measured,
    `export --int8` of 0.25-128 on 200 Imagenette images, 1 thread: 3.39 s -> 2.73 s, the same INT8 file, peak RSS
    844 -> 848 MB. Without ``spec`` (--val's images, used once, by the agreement check, which holds a batch at a
    time) none is kept: memory does not grow with --val-count (kept, Imagenette's 3,925 val images would hold 563
    MiB at 224, ImageNet's 50,000 7 GiB), and the check decodes them again.
    `ExportError` naming ``folder`` and the counts when fewer than ``minimum`` are readable (`MIN_CALIB_IMAGES`).
    ``paths``: the files `pick_images` already chose from ``folder`` (export lists --calib and --val before reading
    either, so that a wrong --val is named before minutes of calibration images are decoded)."""
    from .preprocess import ImageError, eval_crop, failure_reason, read_image

    paths = pick_images(folder, count, seed, what) if paths is None else paths
    images = ImageSet(str(folder), seed, len(paths))
    crop = eval_crop(spec) if spec is not None else None
    bar = _progress(len(paths), "reading", progress)
    for p in paths:
        try:
            pixels = read_image(p)
        except (ImageError, OSError) as exc:
            images.skipped.append(f"{p}: {failure_reason(exc, p)}")
        else:
            images.paths.append(p)
            if crop is not None:
                images.pixels.append(crop(pixels).contiguous())  # the crop is a view: it would keep the resized image
        bar.update(1)
    if len(images.paths) < minimum:
        abandon(bar)
        unread = f" ({len(images.skipped)} unreadable, first: {images.skipped[0]})" if images.skipped else ""
        raise ExportError(
            f"{folder}: {len(images.paths)} readable of {len(paths)} images{unread}; {what} needs at least "
            f"{minimum} readable image{'s' if minimum > 1 else ''}"
        )
    bar.close()
    return images


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batches: Iterator[np.ndarray],
    *,
    per_channel: bool = True,
    method: str = "minmax",
    calibration: str = "",
    fp32_head: int = FP32_HEAD,
    threads: int | None = None,
) -> Path:
    """Static INT8 quantization (QDQ, uint8 activations, int8 symmetric weights) of an fp32 ONNX file.

    The first ``fp32_head`` Conv nodes (graph order: stem, first depthwise, ...) are left fp32; 0 quantizes every
    conv (what OpenVINO's CPU plugin prefers by a few percent). The logits stay fp32. Metadata of the fp32 model is
    carried over, with ``precision`` and ``quantization`` updated. ``threads``: the intra-op threads of ONNX
    Runtime's sessions in the pre-processing and the calibration (`ort_threads`; None: ORT's default, one per core).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"calib_method={method!r} is not allowed: calib_method must be one of {', '.join(methods)}")

    size = onnx_input_size(fp32_path)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(batches, None)
            return None if x is None else {INPUT_NAME: _check_batch_size(x, size, fp32_path)}

    meta = read_onnx_metadata(fp32_path)
    with tempfile.TemporaryDirectory(prefix="mobilenets-q-") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        with ort_threads(threads):
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        if not 0 <= fp32_head <= len(convs):
            raise ExportError(f"fp32_head={fp32_head} is not allowed: it must be between 0 and {len(convs)} (convs)")
        # ORT's histogram calibrators (entropy) print() their progress ("Collecting tensor data and making
        # histogram ...", "Number of tensors : 58", onnxruntime/quantization/calibrate.py, 1.32): on stdout, it
        # landed in the middle of export's report; only Python's sys.stdout is redirected, so our stderr progress and
        # the report printed after this call are untouched
        with contextlib.redirect_stdout(io.StringIO()), ort_threads(threads):
            quantize_static(
                str(pre),
                str(q),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=convs[:fp32_head],
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    # the classifier's (int8) Gemm hands out fp32 logits: quantized to uint8 they took 80-100 levels
                    # per image, and 1.6-7% of real photos had two classes tied at the top (TFLite 0.25-0.75 weights
                    # on Imagenette and imagenet-sample), whose top-1 then depended on each runtime's and command's
                    # tie-break
                    "OpTypesToExcludeOutputQuantization": ["Gemm"],
                },
            )
        proto = onnx.load(str(q))
    quant = f"int8 static QDQ, weights int8 symmetric {'per-channel' if per_channel else 'per-tensor'}, "
    quant += f"activations uint8 ({method} calibration), logits fp32"
    if fp32_head:
        quant += f"; first {fp32_head} conv(s) kept fp32"
    meta.update(precision="int8", quantization=quant, calibration=calibration)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    atomic_write_bytes(out_path, proto.SerializeToString())
    return Path(out_path)


def _check_batch_size(x: np.ndarray, size: tuple[int | None, int | None], path: str | os.PathLike) -> np.ndarray:
    """``x`` if its height and width fit the graph's input ``size``; otherwise an `ExportError` naming both, rather
    than ONNX Runtime's INVALID_ARGUMENT from inside the calibration."""
    if any(want is not None and want != got for want, got in zip(size, x.shape[2:], strict=False)):
        h, w = (s or "any" for s in size)
        raise ExportError(
            f"calibration batch shape {tuple(x.shape)} is not allowed: {path} takes {h}x{w} inputs "
            "(make the batches with spec_from_onnx(fp32_path), whose resolution is the graph's)"
        )
    return x


def quantize(
    model: MobileNetV1,
    path: str | os.PathLike,
    *,
    calib_images: Sequence[str | os.PathLike] | None = None,
    count: int = 32,
    per_channel: bool = True,
    progress: bool = False,
    fp32_head: int = FP32_HEAD,
    resolution: int | None = None,
) -> Path:
    """Export ``model`` (at ``resolution``, default the spec's) and write its INT8 QDQ ONNX to ``path`` in one call
    (the hook `runtimes`/`bench` use).

    Without ``calib_images`` the calibration is synthetic noise: the graph and hence the latency are those of a
    real calibration, the accuracy is not (the file's metadata says which calibration it had).
    """
    with tempfile.TemporaryDirectory(prefix="mobilenets-q-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", resolution=resolution)
        n = count if calib_images is None else len(calib_images)
        batches = calibration_batches(calib_images, spec_from_onnx(fp32), count=n, progress=progress)
        calibration = SYNTHETIC if calib_images is None else f"{n} images"
        return quantize_int8(fp32, path, batches, per_channel=per_channel, calibration=calibration, fp32_head=fp32_head)


def top1_agreement(
    run_a: Any, run_b: Any, batches: Iterator[np.ndarray], classes_a: set[int] | None = None
) -> tuple[int, int]:
    """(number of inputs where both runners give the same top-1 class, number of inputs); ``classes_a``, if given,
    collects the top-1 classes ``run_a`` gave (`Int8Report.fp32_classes`)."""
    same = total = 0
    for x in batches:
        top_a = run_a(x).argmax(1)
        same += int((top_a == run_b(x).argmax(1)).sum())
        total += len(x)
        if classes_a is not None:
            classes_a.update(int(c) for c in top_a)
    return same, total


# --- TorchScript and torch.export ------------------------------------------------------------------------------


def _config_json(spec: ModelSpec, weights_sha256: str | None = None) -> str:
    extra = {WEIGHTS_KEY: weights_sha256} if weights_sha256 else {}
    return json.dumps({"spec": spec.to_dict(), "bn_folded": True, **extra}, indent=2)


def export_torchscript(
    model: MobileNetV1, path: str | os.PathLike, *, resolution: int | None = None, weights_sha256: str | None = None
) -> Path:
    """``torch.jit.script`` of the BN-folded model, config.json (the ModelSpec) stored as an extra file.

    The module takes any input size; ``resolution`` is the one config.json records for preprocessing."""
    spec = exported_spec(model.spec, resolution)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in favour of torch.export
        scripted = torch.jit.script(model.fuse())
        torch.jit.save(scripted, buf, _extra_files={"config.json": _config_json(spec, weights_sha256)})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def export_pt2(
    model: MobileNetV1,
    path: str | os.PathLike,
    *,
    dynamic_hw: bool = False,
    resolution: int | None = None,
    weights_sha256: str | None = None,
) -> Path:
    """``torch.export`` program of the BN-folded model (dynamic batch; H/W too on request), config.json attached.

    The input is ``resolution`` square (default the spec's), which config.json records. ``dynamic_hw`` is refused
    for TensorFlow 'SAME' padding (tf_padding): torch.export cannot prove the shape guards of its size-dependent
    padding for every size, so such a model is exported at its fixed size.
    """
    spec = exported_spec(model.spec, resolution)
    if dynamic_hw and spec.tf_padding:
        raise _tf_padding_dynamic_hw_error(spec)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dims: dict[int, Any] = {0: batch}
    if dynamic_hw:
        # from 33 px: at 32 the last feature map is 1x1, a case torch.export specialises instead of generalising
        dims.update({2: torch.export.Dim("height", min=33, max=2048), 3: torch.export.Dim("width", min=33, max=2048)})
    example = torch.zeros(2, spec.in_chans, spec.resolution, spec.resolution)
    try:
        program = torch.export.export(model.fuse(), (example,), dynamic_shapes={"x": dims})
    except Exception as exc:  # torch.export raises many error types (guards, unsupported ops)
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={"config.json": _config_json(spec, weights_sha256)})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    extra = {"config.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    return module, ModelSpec.from_dict(json.loads(extra["config.json"])["spec"])


def load_pt2(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelSpec]:
    extra = {"config.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), ModelSpec.from_dict(json.loads(extra["config.json"])["spec"])


# --- the `mobilenets export` command ---------------------------------------------------------------------------


@dataclass
class ExportConfig:
    """Options of `mobilenets export` (the CLI reads its defaults from here)."""

    format: str = "onnx"
    out: str | None = None  # default: `default_out`, <weights folder name>.<onnx|int8.onnx|...> in the cwd
    opset: int = OPSET
    resolution: int | None = None  # the graph's input size (default: the weights' own); changes no weight
    dynamic_hw: bool = False
    int8: bool = False
    calib: str | None = None  # folder of calibration images
    calib_synthetic: bool = False
    calib_count: int = 200  # images picked from --calib; at least MIN_CALIB_IMAGES of them must be readable
    val: str | None = None  # folder of images for the fp32/int8 agreement check (default: the calibration images)
    val_count: int = 200
    per_channel: bool = True
    fp32_head: int = FP32_HEAD  # leading convs kept fp32 in the INT8 model
    calib_method: str = "minmax"
    seed: int = 0
    # intra-op threads of torch (loading, the ONNX trace, the reference outputs, calibration images' preprocessing)
    # and of every ONNX Runtime session export makes (calibration, parity, agreement); None: as before the option
    # existed, torch's and the calibration's own defaults (one per core), the checks' sessions `CHECK_THREADS`
    threads: int | None = None
    progress: bool = True
    overwrite: bool = False  # replace an existing output that holds another model (an export of the same weights
    # is replaced without it: re-running the same command works)


@dataclass
class Int8Report:
    path: Path
    fp32_path: Path
    fp32_bytes: int
    int8_bytes: int
    quantization: str
    calibration: str
    agree: int
    total: int
    agreement_on: str
    fp32_classes: int  # distinct top-1 classes the fp32 model gave on the agreement images

    @property
    def agreement(self) -> float:
        return self.agree / max(self.total, 1)

    @property
    def agreement_note(self) -> str | None:
        """Why the agreement means nothing, when it does: an fp32 model that gives every image one class (an
        untrained one, say) agrees with any int8 copy that keeps that class's logit on top, however coarse its
        quantization."""
        if self.fp32_classes == 1 and self.total > 1:
            return f"fp32 predicts one class for all {self.total} images (untrained?): this agreement means nothing"
        return None


@dataclass
class ExportReport:
    path: Path
    format: str
    spec: ModelSpec
    parity: list[ParityRow] = field(default_factory=list)
    int8: Int8Report | None = None
    notes: list[str] = field(default_factory=list)


def max_opset() -> int:
    """The newest opset this torch's TorchScript-based ONNX exporter writes."""
    from torch.onnx import _constants

    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", OPSET))


def default_out(weights: Path, cfg: ExportConfig, saved_resolution: int | None = None) -> Path:
    """<weights folder name><suffix> in the working directory; a training run's ``model``/``model_best`` folder is
    named with its run folder (``runs/a/model`` -> ``a-model.onnx``), so two runs' exports do not overwrite each
    other. An export at another resolution than the weights' (``cfg.resolution``) adds it: ``w-160.onnx``. Weights
    given by a file in their folder (``m025/model.safetensors``) are named after the folder."""
    suffix = {**SUFFIXES, "onnx": ".int8.onnx" if cfg.int8 else ".onnx", "torchscript": ".torchscript.pt"}
    folder = weights.resolve()
    folder = folder.parent if folder.is_file() else folder
    name = f"{folder.parent.name}-{folder.name}" if folder.name in ("model", "model_best") else folder.name
    if cfg.resolution is not None and cfg.resolution != saved_resolution:
        name += f"-{cfg.resolution}"
    return Path(name + suffix[cfg.format])


# ExportConfig's fields that only an INT8 export reads, with the option that sets each
INT8_OPTIONS = {"calib_count": "--calib-count", "val": "--val", "val_count": "--val-count",
                "per_channel": "--per-tensor", "fp32_head": "--int8-fp32-head", "calib_method": "--calib-method",
                "seed": "--seed"}  # fmt: skip


def conv_count(spec: ModelSpec) -> int:
    """The convolutions of ``spec``'s model (stem, depthwise and pointwise; not the classifier): its ONNX graph's Conv
    nodes, which ``--int8-fp32-head`` counts (27 for the paper's MobileNet, Table 1)."""
    return sum(1 for layer in count_complexity(spec).layers if layer.layer_type not in ("", None, TYPE_FC))


def _validate(cfg: ExportConfig, spec: ModelSpec) -> None:
    if cfg.format not in FORMATS:
        raise ExportError(f"format={cfg.format!r} is not allowed: format must be one of {', '.join(FORMATS)}")
    if cfg.int8 and cfg.format != "onnx":
        raise ExportError("--int8 is only available with --format onnx (ONNX Runtime static quantization)")
    if cfg.int8 and not (cfg.calib or cfg.calib_synthetic):
        raise ExportError("--int8 needs calibration images: --calib DIR (or --calib-synthetic for a smoke test)")
    if cfg.calib and cfg.calib_synthetic:
        raise ExportError("give either --calib DIR or --calib-synthetic, not both")
    if (cfg.calib or cfg.calib_synthetic) and not cfg.int8:
        raise ExportError("--calib/--calib-synthetic only make sense with --int8")
    defaults = ExportConfig()
    if not cfg.int8:  # each was ignored: an fp32 export with --per-tensor wrote the same file as without it
        for name, option in INT8_OPTIONS.items():
            if (value := getattr(cfg, name)) != getattr(defaults, name):
                raise ExportError(
                    f"{name}={value!r} is not allowed without --int8: {option} sets the INT8 quantization or its "
                    f"agreement check only; add --int8, or drop {option}"
                )
    if cfg.format != "onnx" and cfg.opset != defaults.opset:
        raise ExportError(f"opset={cfg.opset} is not allowed with --format {cfg.format}: only an ONNX export has an "
                          "opset; drop --opset")  # fmt: skip
    if cfg.dynamic_hw and cfg.format == "torchscript":  # before tf_padding's reason, which is about onnx and pt2
        raise ExportError("--dynamic-hw applies to onnx and pt2; a TorchScript module accepts any size already")
    if cfg.dynamic_hw and spec.tf_padding:
        raise _tf_padding_dynamic_hw_error(spec)
    if cfg.fp32_head < 0:
        raise ExportError(f"fp32_head={cfg.fp32_head} is not allowed: it must be >= 0 (0 = quantize every conv)")
    if cfg.int8 and cfg.fp32_head > (convs := conv_count(spec)):  # before the calibration images are read
        raise ExportError(f"fp32_head={cfg.fp32_head} is not allowed: it must be between 0 and {convs} (convs)")
    for name in ("calib_count", "val_count"):
        if getattr(cfg, name) < 1:
            raise ExportError(f"{name}={getattr(cfg, name)} is not allowed: {name} must be an integer >= 1")
    if cfg.calib and cfg.calib_count < MIN_CALIB_IMAGES:
        raise ExportError(
            f"calib_count={cfg.calib_count} is not allowed with --calib: INT8 calibration needs at least "
            f"{MIN_CALIB_IMAGES} images (--calib-synthetic takes any count, for a smoke test)"
        )
    if cfg.seed < 0:  # numpy's own error ("expected non-negative integer") named no option
        raise ExportError(f"seed={cfg.seed} is not allowed: seed must be an integer >= 0")
    if cfg.format == "onnx" and not MIN_OPSET <= cfg.opset <= max_opset():
        raise ExportError(
            f"opset={cfg.opset} is not allowed: this torch exports ONNX opsets {MIN_OPSET}..{max_opset()} "
            f"(default {OPSET})"
        )
    if cfg.int8 and cfg.opset < MIN_INT8_OPSET:
        raise ExportError(
            f"opset={cfg.opset} is not allowed with --int8: per-channel QDQ needs opset >= {MIN_INT8_OPSET}"
        )
    if cfg.out:
        _validate_out(Path(cfg.out), cfg.format, cfg.int8)


def _validate_out(out: Path, fmt: str, int8: bool) -> None:
    """`ExportError` unless ``out``'s suffix is ``fmt``'s (`SUFFIXES`), and for ``int8`` it is not named like the
    fp32 companion written beside it (`FP32_TAGS`)."""
    suffix, want = out.suffix.lower(), SUFFIXES[fmt]
    held = next((other for other, known in SUFFIXES.items() if suffix == known), None)
    if held is None:  # "mobilenet_v1_0.25_128" has the suffix ".25_128": the whole name is kept in the advice
        named = f"{out.suffix} names no export format" if out.suffix else "a name without a suffix names no format"
        raise ExportError(
            f"out={out} is not allowed with --format {fmt}: {named} ({fmt} files end in {want}); "
            f"name it {out.name}{want}"
        )
    if held != fmt:
        raise ExportError(
            f"out={out} is not allowed with --format {fmt}: {SUFFIXES[held]} is the suffix of {held} "
            f"files; name it {out.stem}{want}"
        )
    stem = out.name[: -len(suffix)]
    tag = next((t for t in FP32_TAGS if stem.lower().endswith(t) and len(stem) > len(t)), None)
    if int8 and tag:
        raise ExportError(
            f"out={out} is not allowed with --int8: {tag} names the fp32 model an INT8 export keeps beside it "
            f"(it would be {fp32_companion(out).name}); name it {stem[: -len(tag)]}.int8{suffix}"
        )


def fp32_companion(out: Path) -> Path:
    """Where an INT8 export keeps its checked fp32 model: beside ``out``, named from its stem without the int8 part
    (``m.int8.onnx``, ``m-int8.onnx``, ``m_int8.onnx`` and ``m.onnx`` -> ``m.fp32.onnx``)."""
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() == ".onnx" else out.name
    for tag in INT8_TAGS:
        if stem.lower().endswith(tag) and len(stem) > len(tag):
            stem = stem[: -len(tag)]
            break
    return out.with_name(stem + ".fp32.onnx")


def exported_weights(path: Path) -> str | None:
    """The `WEIGHTS_KEY` sha256 recorded in an earlier export at ``path`` (ONNX metadata, or the config.json inside a
    TorchScript/pt2 archive); None when the file records none or is not an export."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("extra/config.json")), None)
                return json.loads(z.read(name)).get(WEIGHTS_KEY) if name else None
        return read_onnx_metadata(path).get(WEIGHTS_KEY)
    except (ExportError, OSError, ValueError, AttributeError):
        return None


def exported_format(path: Path) -> str:
    """The format of an existing export file: a zip archive is a torch.export program ("pt2", which has an
    ``archive_format`` entry) or a TorchScript module, anything else is taken as ONNX."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "onnx"
    with zipfile.ZipFile(path) as z:
        return "pt2" if any(n.endswith("archive_format") for n in z.namelist()) else "torchscript"


def check_replace(
    path: Path, weights_sha256: str, weights: str | os.PathLike, overwrite: bool, fmt: str = "onnx"
) -> None:
    """`ExportError` when ``path`` exists and is not an earlier ``fmt`` export of the same weights (unless
    ``overwrite``): re-running an export replaces its own output, never another model's, nor the same weights in
    another format (``--format torchscript --out m.onnx`` would leave an unreadable m.onnx); an `OSError` naming
    ``path`` where its folder refuses a new file (`atomic.check_writable`)."""
    if (blocker := file_in_the_way(path)) is not None:
        raise ExportError(f"out={path} is not allowed: {blocker} is a file, not a folder")
    if path.is_dir():
        raise ExportError(f"out={path} is not allowed: it is a folder; name the file to write")
    check_writable(path)  # before the export, naming ``path``: its staging file's name would be the one reported
    if overwrite or not path.exists():
        return
    recorded = exported_weights(path)
    if recorded != weights_sha256:
        why = ("records no weights (not an export, or one written before exports recorded them)" if recorded is None
               else f"is an export of other weights than those in {weights}")  # fmt: skip
        raise ExportError(f"out={path} is not allowed: the file exists and {why}; pass --overwrite to replace it")
    if (held := exported_format(path)) != fmt:
        raise ExportError(
            f"out={path} is not allowed: the file exists and is a {held} export of these weights, not {fmt}; "
            "pass --overwrite to replace it"
        )


def export_model(weights: str | os.PathLike, cfg: ExportConfig | None = None) -> ExportReport:
    """Load our weights folder (or a run folder's final weights, `weights.run_weights`), export it in
    ``cfg.format``, check parity (and INT8 agreement); return a report.

    Every file is written under a hidden staging name beside its destination and moved into place only when all
    checks have passed: a failed or interrupted export leaves no file behind and replaces none the user had. An
    existing output is replaced only when it is an export of the same weights (`check_replace`) or with
    ``cfg.overwrite``."""
    from .cores import check_threads

    cfg = cfg or ExportConfig()
    if cfg.threads is not None:  # before anything runs: the check and its message every --threads has
        check_threads(cfg.threads, ExportError)
    with torch_threads(cfg.threads):  # the caller's count comes back afterwards
        return _export_weights(weights, cfg)


def _export_weights(weights: str | os.PathLike, cfg: ExportConfig) -> ExportReport:
    """`export_model`'s work, on its thread count."""
    from . import weights as wts
    from .preprocess import check_rgb

    weights = wts.run_weights(weights)  # a run folder's final weights: named, checked and hashed as RUN/model
    config = wts.read_config(weights)
    # the input size changes no weight: the model at cfg.resolution is the saved one with that spec
    model = wts.load(weights, **({} if cfg.resolution is None else {"resolution": cfg.resolution}))
    _validate(cfg, model.spec)
    out = Path(cfg.out) if cfg.out else default_out(Path(weights), cfg, config["spec"].resolution)
    fp32 = fp32_companion(out) if cfg.int8 else out
    folder = Path(weights).parent if Path(weights).is_file() else Path(weights)
    # load checked the weights against the SHA-256 config.json records; a folder saved before it did is hashed here
    sha = config.get(wts.SHA_KEY) or wts.sha256_file(folder / wts.WEIGHTS_FILE)
    for final in dict.fromkeys((out, fp32)):
        check_replace(final, sha, weights, cfg.overwrite, cfg.format)
    # image folders are read before anything is written: a bad --calib or --val costs no export; both are listed
    # before either is read, so a missing --val is named before the calibration images are decoded
    calib = val = None
    if cfg.int8 and (cfg.calib or cfg.val):
        check_rgb(model.spec, weights)  # the images are decoded to RGB: refused before they are listed and read
    calib_paths = pick_images(cfg.calib, cfg.calib_count, cfg.seed, CALIB) if cfg.int8 and cfg.calib else None
    val_paths = pick_images(cfg.val, cfg.val_count, cfg.seed + 1, VAL) if cfg.int8 and cfg.val else None
    if calib_paths is not None:
        calib = read_images(cfg.calib, cfg.calib_count, cfg.seed, spec=model.spec, minimum=MIN_CALIB_IMAGES,
                            progress=cfg.progress, paths=calib_paths)  # fmt: skip
    if val_paths is not None:  # none kept
        val = read_images(cfg.val, cfg.val_count, cfg.seed + 1, what=VAL, progress=cfg.progress, paths=val_paths)
    staged = {final: staging_path(final) for final in {out, fp32}}
    for final in staged:
        remove_stale_staging(final)  # killed exports' staging files, which no run would otherwise remove
    try:
        report = _export(model, cfg, staged[out], staged[fp32], calib, val, sha)
        move_into_place(staged, out)
    except BaseException as exc:
        for part in staged.values():
            part.unlink(missing_ok=True)
        # a full disk while writing a staging file names the user's path: that file's, else --out
        failed = next((final for final, part in staged.items() if str(getattr(exc, "filename", "")) == str(part)), out)
        name_file(exc, failed, staged[failed])
        raise
    report.path = out
    if report.int8 is not None:
        report.int8.path, report.int8.fp32_path = out, fp32
    return report


def move_into_place(staged: dict[Path, Path], out: Path) -> None:
    """Rename each staging file of ``staged`` (destination -> staging path) over its destination, ``out`` last; with
    companions (an INT8 export's fp32 model), an earlier ``out`` is removed first. So whenever ``out`` exists, the
    companions beside it are the ones written with it, wherever a kill stops this: the renames are one at a time, and
    renaming ``out`` first (or keeping the old one while the companion is replaced) left an INT8 file beside another
    export's fp32 model. A kill stops at worst with no ``out``, which the same command writes again. Each file is
    synced to disk before its rename (`atomic.publish`)."""
    if len(staged) > 1:
        out.unlink(missing_ok=True)
    for final in sorted(staged, key=lambda p: p == out):
        publish(staged[final], final)


def _export(
    model: MobileNetV1,
    cfg: ExportConfig,
    out: Path,
    fp32: Path,
    calib: ImageSet | None,
    val: ImageSet | None,
    sha: str | None = None,
) -> ExportReport:
    """`export_model`'s work on the staging paths (``fp32`` is ``out`` unless ``cfg.int8``); ``sha`` is recorded as
    the weights' `WEIGHTS_KEY`."""
    if cfg.format == "torchscript":
        module, _ = load_torchscript(export_torchscript(model, out, weights_sha256=sha))
        rows = check_parity(model, _torch_fn(module), runtime="torchscript")
        return ExportReport(out, cfg.format, model.spec, rows)
    if cfg.format == "pt2":
        module, _ = load_pt2(export_pt2(model, out, dynamic_hw=cfg.dynamic_hw, weights_sha256=sha))
        res = _resolutions(model.spec, cfg.dynamic_hw)
        return ExportReport(
            out, cfg.format, model.spec, check_parity(model, _torch_fn(module), runtime="pt2", resolutions=res)
        )
    meta = {WEIGHTS_KEY: sha} if sha else None
    export_onnx(model, fp32, opset=cfg.opset, dynamic_hw=cfg.dynamic_hw, metadata=meta)
    sess = ort_session(fp32, cfg.threads or CHECK_THREADS)
    rows = check_parity(
        model, ort_run(sess), runtime="onnxruntime fp32", resolutions=_resolutions(model.spec, cfg.dynamic_hw)
    )
    report = ExportReport(out, cfg.format, model.spec, rows)
    if cfg.int8:
        report.int8 = _int8(model, fp32, out, sess, cfg, calib, val)
        report.parity += check_parity(
            model,
            ort_run(ort_session(out, cfg.threads or CHECK_THREADS)),
            runtime="onnxruntime int8 (informative, no tolerance)",
            tol=None,
        )
    return report


def _torch_fn(module: Any) -> Any:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def _resolutions(spec: ModelSpec, dynamic_hw: bool) -> tuple[int, ...]:
    return (spec.resolution, second_resolution(spec.resolution)) if dynamic_hw else (spec.resolution,)


def _int8(
    model: MobileNetV1,
    fp32: Path,
    out: Path,
    fp32_sess: Any,
    cfg: ExportConfig,
    calib: ImageSet | None,
    val: ImageSet | None,
) -> Int8Report:
    """Quantize ``fp32`` to ``out`` on ``calib`` (`read_images` of ``cfg.calib``; None: synthetic batches), then
    count top-1 agreement with fp32 on ``val`` (`read_images` of ``cfg.val``; None: the calibration images). The
    calibration images are the ones `read_images` kept, so what it found readable is what is used, and said."""
    described = f"{cfg.calib_count} {SYNTHETIC}" if calib is None else str(calib)
    batches = _batches(calib, model.spec, cfg.calib_count, cfg.seed, cfg.progress, [])
    quantize_int8(
        fp32,
        out,
        batches,
        per_channel=cfg.per_channel,
        method=cfg.calib_method,
        calibration=described,
        fp32_head=cfg.fp32_head,
        threads=cfg.threads,
    )
    unread: list[str] = []  # --val files read before the export that fail now (changed meanwhile)
    check = _batches(val or calib, model.spec, cfg.calib_count, cfg.seed + 1, False, unread)
    fp32_classes: set[int] = set()
    int8_sess = ort_session(out, cfg.threads or CHECK_THREADS)
    agree, total = top1_agreement(ort_run(fp32_sess), ort_run(int8_sess), check, fp32_classes)
    if val is not None:
        on = str(replace(val, skipped=val.skipped + unread))
    elif calib is not None:
        on = "the calibration images" + calib.note()
    else:
        on = SYNTHETIC
    return Int8Report(
        out,
        fp32,
        fp32.stat().st_size,
        out.stat().st_size,
        read_onnx_metadata(out)["quantization"],
        described,
        agree,
        total,
        on,
        len(fp32_classes),
    )


def _batches(
    images: ImageSet | None, spec: ModelSpec, count: int, seed: int, progress: bool, skipped: list[str]
) -> Iterator[np.ndarray]:
    """`image_batches` of the images `read_images` kept (the calibration images); where it kept none (--val's, at
    least one readable), `calibration_batches` of the readable files, a file unreadable now noted in ``skipped``;
    None: ``count`` synthetic ones."""
    if images is None:
        return calibration_batches(None, spec, count=count, seed=seed, progress=progress)
    if images.pixels:
        return image_batches(images.pixels, spec, progress=progress)
    paths = images.paths
    return calibration_batches(paths, spec, count=len(paths), progress=progress, skipped=skipped)


__all__ = [
    "ExportConfig",
    "ExportError",
    "ExportReport",
    "check_parity",
    "export_model",
    "export_onnx",
    "export_pt2",
    "export_torchscript",
    "quantize",
    "quantize_int8",
    "read_onnx_metadata",
    "spec_from_onnx",
]
