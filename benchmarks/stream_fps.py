"""End-to-end video FPS on this CPU (the paper's open question: real devices at real frame rates, e.g. 24 FPS).

`mobilenets stream` on a real-photo clip: every frame is decoded (PyAV), resized and normalised, classified, and,
with ``--out``, overlaid and encoded (H.264) again, so the rate counts all a camera application does, not the model
alone (`bench`'s FPS is the model's: 1000 / median latency). ``encode`` is how the annotated video is written:
``none`` (no ``--out``), ``live`` (the default, x264 veryfast/zerolatency, `StreamConfig.encoder_options`) or
``x264-medium`` (x264's own default preset, what `stream` used before: the side-by-side evidence for the change).
Rows report:
- ``fps_end_to_end``: frames / wall time of the whole loop (decode + preprocess + model, and overlay + encode
  unless ``encode`` is ``none``: `StreamReport.stages`);
- ``fps_model``: 1000 / the mean model latency inside the same loop;
- ``meets_24``: whether the end-to-end rate reaches 24 FPS.

Clip: the 250 photos of shared/data/imagenet-sample (natural resolution), each resized (shorter side) and center
cropped to 640x480, one frame per photo at 24 FPS (about 10 s of video), encoded once with H.264 (libx264, or MPEG-4
where FFmpeg lacks it) into a temporary folder.

Models: the real uint8 TFLite ImageNet classifiers (shared/data/mobilenet-weights/tflite: 0.25-128, 0.5-160,
0.75-192), converted by `mobilenets convert`; and 1.0-224 with random weights (no real 1.0 weights are here; speed
does not depend on the values: its activations stay far from denormal floats, 1e-17 at the last block).
Runtimes: ort, openvino (when installed) and torch, at ``--threads`` (default 1: the headline; this machine's second
vCPU is shared). FFmpeg's decoder and x264 run at ``--threads`` too, as `stream --threads` sets them since 2026-11-28
(earlier results let them take a thread per core beside the 1-thread model). Each (model, runtime,
encode) configuration runs once per round, in the same order every round (alternating configurations, not one
after another), ``--rounds`` rounds; the median over rounds is reported.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/stream_fps.py [--rounds 3] [--threads 1] [--frames 250]
Writes results/stream-fps-<hw>-t<threads>.{json,md} with the command, versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import mobilenets
from mobilenets.atomic import atomic_write_text
from mobilenets.bench import environment, hardware_tag
from mobilenets.convert import convert_file
from mobilenets.data import shared_data_root
from mobilenets.formatting import render
from mobilenets.infer import StreamConfig, load_predictor, stream
from mobilenets.preprocess import read_image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
DATA = shared_data_root()
TFLITE = DATA / "mobilenet-weights" / "tflite"
MODELS = {
    "0.25-128": TFLITE / "mobilenet_v1_0.25_128_quant.tflite",
    "0.5-160": TFLITE / "mobilenet_v1_0.5_160_quant.tflite",
    "0.75-192": TFLITE / "mobilenet_v1_0.75_192_quant.tflite",
    "1.0-224": None,  # random weights: speed only
}
FRAME_W, FRAME_H, CLIP_FPS, TARGET_FPS = 640, 480, 24, 24.0
ENCODE = {"none": None, "live": StreamConfig().encoder_options, "x264-medium": {"preset": "medium"}}


def make_clip(path: Path, frames: int) -> int:
    """Encode up to ``frames`` imagenet-sample photos, cropped to 640x480, as a 24 FPS clip; the frame count."""
    import av

    photos = sorted((DATA / "imagenet-sample").glob("*.JPEG"))[:frames]
    if not photos:
        sys.exit(f"no photos in {DATA / 'imagenet-sample'} (set MOBILENETS_DATA)")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        vs = container.add_stream(codec, rate=Fraction(CLIP_FPS))
        vs.width, vs.height, vs.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        for p in photos:
            frame = _crop(read_image(p))
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    return len(photos)


def _crop(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 -> (480, 640, 3): shorter side to fit, center crop (antialiased)."""
    from torchvision.transforms import v2

    scale = max(FRAME_W / img.shape[2], FRAME_H / img.shape[1])
    size = (round(img.shape[1] * scale), round(img.shape[2] * scale))
    img = v2.functional.center_crop(v2.functional.resize(img, list(size), antialias=True), [FRAME_H, FRAME_W])
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


def model_folders(tmp: Path) -> dict[str, Path]:
    """Weights folders: the converted TFLite files, and a random-init 1.0-224."""
    out = {}
    for name, src in MODELS.items():
        folder = tmp / name
        if src is None:
            torch.manual_seed(0)
            mobilenets.save(mobilenets.create_model("mobilenet_v1_100").eval(), folder)
        elif src.is_file():
            convert_file(src, folder)
        else:
            print(f"skipping {name}: {src} is missing", file=sys.stderr)
            continue
        out[name] = folder
    return out


def runtimes_here(wanted: list[str]) -> list[str]:
    from mobilenets.runtimes import RuntimeUnavailable, check_runtime

    ok = []
    for rt in wanted:
        try:
            check_runtime(rt)
            if rt.startswith("openvino"):
                import openvino  # noqa: F401
            ok.append(rt)
        except (RuntimeUnavailable, ImportError, ValueError) as exc:
            print(f"skipping runtime {rt}: {exc}", file=sys.stderr)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=250, help="photos in the clip (at most 250)")
    ap.add_argument("--runtimes", default="ort,openvino,torch")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", help="results file stem (default results/stream-fps-<hw>-t<threads>)")
    args = ap.parse_args()
    env = environment()
    stem = str(args.out or RESULTS / f"stream-fps-{hardware_tag(env)}-t{args.threads}")
    with tempfile.TemporaryDirectory(prefix="mobilenets-stream-") as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        frames = make_clip(clip, args.frames)
        folders = {k: v for k, v in model_folders(tmp).items() if k in args.models.split(",")}
        here = runtimes_here(args.runtimes.split(","))
        configs = [(m, rt, enc) for m in folders for rt in here for enc in ENCODE]
        predictors = {(m, rt): load_predictor(folders[m], rt, args.threads) for m in folders for rt in here}
        runs: dict[tuple, list[dict]] = {c: [] for c in configs}
        t0 = time.perf_counter()
        for r in range(args.rounds):
            for m, rt, enc in configs:
                out = str(tmp / "annotated.mp4") if ENCODE[enc] else None
                cfg = StreamConfig(out=out, target_fps=TARGET_FPS, overwrite=True, encoder_options=ENCODE[enc] or {})
                report = stream(predictors[(m, rt)], str(clip), cfg)
                if report.interrupted:  # Ctrl-C: `stream` returns the part it ran, which is no row of the results
                    raise KeyboardInterrupt
                runs[(m, rt, enc)].append(report.to_dict())
                print(f"round {r + 1}/{args.rounds} {m} {rt} encode={enc}: {report.fps_end_to_end:.1f} FPS end "
                      f"to end, {report.fps_model:.1f} model-only ({time.perf_counter() - t0:.0f} s)",
                      flush=True)  # fmt: skip
    rows = []
    versions = {k: env[k] for k in ("cpu", "cores", "torch", "onnxruntime", "openvino", "commit")}
    for (m, rt, enc), reps in runs.items():
        e2e = statistics.median(x["fps_end_to_end"] for x in reps)
        rows.append({
            "model": m, "runtime": rt, "threads": args.threads, "encode": enc, "frames": frames,
            "fps_end_to_end": round(e2e, 1),
            "fps_model": round(statistics.median(x["fps_model"] for x in reps), 1),
            "model_ms_p50": round(statistics.median(x["latency_model_ms"]["p50"] for x in reps), 2),
            "frame_ms_p50": round(statistics.median(x["latency_frame_ms"]["p50"] for x in reps), 2),
            "meets_24": e2e >= TARGET_FPS,
            "rounds_fps_end_to_end": [round(x["fps_end_to_end"], 1) for x in reps],
            "weights": "TFLite uint8 ImageNet, converted" if MODELS[m] else "random (speed only)", **versions,
        })  # fmt: skip
    meta = {"command": " ".join(["python", *sys.argv]), "env": env, "rounds": args.rounds,
            "clip": f"{frames} imagenet-sample photos cropped to {FRAME_W}x{FRAME_H}, {CLIP_FPS} FPS",
            "target_fps": TARGET_FPS, "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    atomic_write_text(stem + ".json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    cols = ["model", "runtime", "encode", "fps_end_to_end", "fps_model", "model_ms_p50", "frame_ms_p50",
            "meets_24", "rounds_fps_end_to_end"]  # fmt: skip
    md = (f"# End-to-end stream FPS ({env['cpu']}, {args.threads} thread(s))\n\n`{meta['command']}` at commit "
          f"{env['commit']}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, openvino {env['openvino']}; "
          f"clip: {meta['clip']}; median of {args.rounds} alternating rounds.\n\n"
          + render(rows, "md", cols) + "\n")  # fmt: skip
    atomic_write_text(stem + ".md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
