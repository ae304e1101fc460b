"""The `mobilenets` command line: thin subcommands over the library (parse, call one function, print).

Bad input (a `ValueError` from the library, naming the parameter and what is allowed) is printed as one line and
exits with status 2, without a traceback, as does a path that cannot be what it must be (missing, a folder where a
file is expected or the reverse); a failure of the machine (an OS error naming the user's path, such as a refused
write or a full disk, an FFmpeg error, out of memory) is one line too, with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import complexity, paper
from .cores import THREADS_LIMIT
from .formatting import counted, metric, rank_prefix, render
from .registry import list_models, model_spec
from .spec import ModelSpec, SpecError
from .stopping import Terminated

Handler = Callable[[argparse.Namespace], int]


def _fmt_arg(p: argparse.ArgumentParser, choices: Sequence[str], default: str) -> None:
    p.add_argument("--format", choices=choices, default=default, help=f"output format (default: {default})")


# --- list -------------------------------------------------------------------------------------------------------


def _add_list(sub) -> Handler:
    p = sub.add_parser("list", help="registered models with alpha, resolution, MACs and params")
    _fmt_arg(p, ("table", "md", "csv", "json"), "table")
    return cmd_list


def model_rows() -> list[dict]:
    rows = []
    for name in list_models():
        spec = model_spec(name)
        cost = complexity.count_complexity(spec)
        rows.append(
            {
                "name": name,
                "alpha": spec.alpha,
                "resolution": spec.resolution,
                "variant": spec.variant,
                "macs_M": round(cost.macs / 1e6, 1),
                "params_M": round(cost.params / 1e6, 3),
            }
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    print(render(model_rows(), args.format))
    if args.format in ("table", "md"):
        print(f"\n{complexity.COUNTING_NOTE}")
    return 0


# --- summary ----------------------------------------------------------------------------------------------------


def _add_summary(sub) -> Handler:
    p = sub.add_parser("summary", help="per-layer table (paper Table 1 columns) with mult-adds and parameters")
    p.add_argument("name", nargs="?", default="mobilenet_v1_100", help="registered model (default: %(default)s)")
    defaults = ModelSpec()
    p.add_argument("--alpha", type=float, help=f"width multiplier (default: the model's, {defaults.alpha})")
    p.add_argument("--resolution", type=int, help=f"input size (default: the model's, {defaults.resolution})")
    p.add_argument("--variant", help="standard | shallow | conv")
    p.add_argument("--depth-multiplier", type=int, help="channels per depthwise group")
    p.add_argument("--num-classes", type=int, help="classifier size (0 = no classifier)")
    p.add_argument("--output-stride", type=int, help="8 | 16 | 32")
    _fmt_arg(p, ("table", "md", "csv", "json"), "table")
    return cmd_summary


def cmd_summary(args: argparse.Namespace) -> int:
    overrides = {
        k: getattr(args, k)
        for k in ("alpha", "resolution", "variant", "depth_multiplier", "num_classes", "output_stride")
        if getattr(args, k) is not None
    }
    cost = complexity.count_complexity(model_spec(args.name, **overrides))
    if args.format == "json":
        print(json.dumps(cost.to_dict(), indent=2))
        return 0
    print(cost.table(args.format))
    if args.format != "csv":
        spec = cost.spec
        label = spec.name or args.name  # a grid name follows alpha and resolution (mobilenet_v1_075_160)
        if overrides:
            label += f" ({args.name} with " + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")"
        print(f"\n{cost.totals(label)}")  # the line print(count_complexity(...)) writes under the table
        shares = ", ".join(f"{k} {v['macs_pct']:.2f}% / {v['params_pct']:.2f}%" for k, v in cost.shares().items())
        print(f"share of MACs / params by layer type (paper Table 2): {shares}")
        print(complexity.COUNTING_NOTE)
    return 0


# --- paper ------------------------------------------------------------------------------------------------------


def _add_paper(sub) -> Handler:
    p = sub.add_parser("paper", help="the paper's complexity tables, computed beside published, with differences")
    p.add_argument("--table", choices=paper.TABLES, help="only this table (default: all)")
    _fmt_arg(p, ("md", "json", "csv", "table"), "md")
    return cmd_paper


PAPER_COLUMNS = ["table", "row", "quantity", "published", "computed", "difference", "status", "note"]


def cmd_paper(args: argparse.Namespace) -> int:
    rows = [r for r in paper.compare() if args.table in (None, r["table"])]
    if args.format in ("json", "csv"):
        print(render(rows, args.format, PAPER_COLUMNS))
        return 0
    for table in dict.fromkeys(r["table"] for r in rows):
        title = "Figures 4-5 (computed only: the paper prints no numbers)" if table == "fig4-5" else f"Table {table}"
        print(f"## {title}\n")
        print(render([paper.as_printed(r) for r in rows if r["table"] == table], args.format, PAPER_COLUMNS))
        print()
    counts = {s: sum(r["status"] == s for r in rows) for s in ("match", "misprint", "MISMATCH", "computed")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    print(complexity.COUNTING_NOTE)
    return 0


# --- export -----------------------------------------------------------------------------------------------------


def _add_export(sub) -> Handler:
    from .export import FORMATS, OPSET, ExportConfig

    d = ExportConfig()
    p = sub.add_parser("export", help="export weights to ONNX (optionally INT8), TorchScript or torch.export")
    p.add_argument("weights", help="mobilenets weights folder (config.json + model.safetensors), or a train run "
                   "folder: its final weights, RUN/model")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default=d.format, help="output format (default: %(default)s)")
    p.add_argument("--out", help="output file (default: <weights folder name>.onnx / .int8.onnx / ..., a run's "
                   "model/ named with its run: runs/a/model -> a-model.onnx)")  # fmt: skip
    p.add_argument("--opset", type=int, default=d.opset, help=f"ONNX opset (default: {OPSET})")
    p.add_argument("--resolution", type=int, default=d.resolution, help="input size of the exported model (default: "
                   "the weights'; it changes no weight, and --out's default name gets -<size>)")  # fmt: skip
    p.add_argument("--dynamic-hw", action="store_true", help="dynamic height/width axes (batch is always dynamic)")
    p.add_argument("--int8", action="store_true", help="static INT8 quantization (ONNX Runtime, QDQ)")
    p.add_argument("--calib", help="folder of calibration images (searched recursively)")
    p.add_argument("--calib-synthetic", action="store_true", help="random-noise calibration: smoke tests only")
    p.add_argument("--calib-count", type=int, default=d.calib_count, help="calibration images (default: %(default)s)")
    p.add_argument("--calib-method", choices=("minmax", "entropy"), default=d.calib_method,
                   help="calibration method (default: %(default)s)")  # fmt: skip
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default: per-channel)")
    p.add_argument(
        "--int8-fp32-head",
        type=int,
        default=d.fp32_head,
        metavar="N",
        help="leading convs kept fp32 (faster under ONNX Runtime; 0 = quantize all) (default: %(default)s)",
    )
    p.add_argument("--val", help="folder of images for the fp32/INT8 agreement check (default: calibration images)")
    p.add_argument("--val-count", type=int, default=d.val_count, help="agreement images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="image sampling seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help=f"intra-op threads of torch and of the ONNX Runtime "
                   f"sessions (calibration, parity, agreement), {THREADS_LIMIT} (default: torch's and the "
                   "calibration's own, one per core; the checks' sessions one)")  # fmt: skip
    p.add_argument(
        "--no-progress", action="store_true", help="no progress (a bar on a terminal, one line per stage otherwise)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output that holds another model "
                   "(an export of the same weights is replaced without it)")  # fmt: skip
    return cmd_export


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportConfig, export_model

    cfg = ExportConfig(
        format=args.format,
        out=args.out,
        opset=args.opset,
        resolution=args.resolution,
        dynamic_hw=args.dynamic_hw,
        int8=args.int8,
        calib=args.calib,
        calib_synthetic=args.calib_synthetic,
        calib_count=args.calib_count,
        val=args.val,
        val_count=args.val_count,
        per_channel=not args.per_tensor,
        fp32_head=args.int8_fp32_head,
        calib_method=args.calib_method,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    report = export_model(args.weights, cfg)
    s = report.spec
    print(f"wrote {report.path} ({report.format}; alpha={s.alpha:g} resolution={s.resolution} classes={s.num_classes})")
    for row in report.parity:
        print(f"  parity {row}")
    q = report.int8
    if q:
        print(
            f"  fp32 model: {q.fp32_path} ({q.fp32_bytes / 2**20:.2f} MiB) -> int8: {q.int8_bytes / 2**20:.2f} MiB "
            f"({q.fp32_bytes / q.int8_bytes:.2f}x smaller)"
        )
        print(f"  quantization: {q.quantization}")
        print(f"  calibration: {q.calibration}")
        print(f"  top-1 agreement int8 vs fp32: {q.agree}/{q.total} = {q.agreement * 100:.1f}% on {q.agreement_on}")
        if q.agreement_note:
            print(f"  note: {q.agreement_note}")
    return 0


# --- predict ----------------------------------------------------------------------------------------------------


def _runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("torch", "ort", "openvino"), help="default: torch for folders, ort for .onnx")
    p.add_argument("--threads", type=int, help=f"intra-op threads, {THREADS_LIMIT} (default: the runtime's)")


def _add_predict(sub) -> Handler:
    p = sub.add_parser("predict", help="top-k classes of image files or folders, with latency")
    p.add_argument("model", help="weights folder, train run folder (its model/) or exported .onnx")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    _runtime_arg(p)
    return cmd_predict


def cmd_predict(args: argparse.Namespace) -> int:
    import statistics

    from .infer import load_predictor, predict
    from .labels import display_label

    predictor = load_predictor(args.model, args.runtime, args.threads)
    results = []
    for r in predict(predictor, args.images, topk=args.topk):
        results.append(r)
        if r.error:
            print(f"mobilenets predict: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(f"{r.path}  ({r.model_ms:.1f} ms model, {r.preprocess_ms:.1f} ms decode+preprocess)")
            for t in r.top:
                print(f"  {t['prob']:7.2%}  {display_label(t['label'])}")
    ok = [r for r in results if not r.error]
    summary = {
        "model": predictor.source,
        "runtime": predictor.runtime,
        "threads": predictor.threads,
        "images": len(ok),
        "errors": len(results) - len(ok),
        "median_model_ms": round(statistics.median(r.model_ms for r in ok), 3) if ok else None,
    }
    if args.json:
        print(json.dumps({"summary": summary, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        med = f", median model latency {summary['median_model_ms']} ms" if ok else ""
        print(f"{len(ok)} image(s) classified, {summary['errors']} unreadable ({predictor.runtime}{med})")
    return 0 if len(ok) == len(results) and ok else 2


# --- stream -----------------------------------------------------------------------------------------------------


def _add_stream(sub) -> Handler:
    from .infer import StreamConfig

    d = StreamConfig()
    p = sub.add_parser("stream", help="classify video frames (file, folder of frames or camera), overlay, report FPS")
    p.add_argument("model", help="weights folder, train run folder (its model/) or exported .onnx")
    p.add_argument("source", help="video file, folder of image frames (in numbered order) or camera index "
                   "(0 = /dev/video0)")  # fmt: skip
    p.add_argument("--out", help="write the annotated video here (e.g. annotated.mp4; missing folders are created)")
    p.add_argument("--target-fps", type=float, default=d.target_fps, help="FPS to meet (default: %(default)s)")
    p.add_argument("--display", action="store_true", help="show the annotated frames in a window")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file that is not an annotated "
                   "video of an earlier stream (such a video is replaced without it)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _runtime_arg(p)
    return cmd_stream


def cmd_stream(args: argparse.Namespace) -> int:
    """Ctrl-C ends the stream (how a camera stream stops) with the report of the frames so far, then status 130."""
    from .infer import StreamConfig, is_frame_folder, load_predictor, stream

    predictor = load_predictor(args.model, args.runtime, args.threads)
    cfg = StreamConfig(out=args.out, target_fps=args.target_fps, display=args.display, max_frames=args.max_frames,
                       overwrite=args.overwrite)  # fmt: skip
    r = stream(predictor, args.source, cfg)
    status = 130 if r.interrupted else 0
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return status
    if r.interrupted:  # the newline ends the terminal's '^C'
        print(f"\ninterrupted by the user (Ctrl-C): the report counts the {r.frames} frames processed before it")
    m, f = r.latency_model_ms, r.latency_frame_ms
    rate = f"{r.source_fps} FPS" if r.source_fps else "a folder of frames" if is_frame_folder(r.source) else "? FPS"
    print(f"source: {r.source} ({rate}), runtime {r.runtime}, {r.frames} frames in {r.seconds} s")
    print(f"achieved FPS: {r.fps_end_to_end} end-to-end ({'+'.join(r.stages)}), {r.fps_model} model-only")
    print(f"model latency p50 {m['p50']} ms, p90 {m['p90']} ms; per-frame p50 {f['p50']} ms, p90 {f['p90']} ms")
    verdict = "MET" if r.target_met else "NOT met"
    print(f"target {r.target_fps:g} FPS: {verdict} (end-to-end)")
    if r.out:  # no frame (Ctrl-C before the first): no video was written, an earlier one is as it was
        print(f"annotated video: {r.out}" if r.frames else f"annotated video: none ({r.out} not written: no frames)")
    return status


# --- convert ----------------------------------------------------------------------------------------------------


def _add_convert(sub) -> Handler:
    from .convert import FORMATS

    p = sub.add_parser("convert", help="import published weights (TFLite, Keras .h5, timm) into our safetensors format")
    p.add_argument("src", help="the source file (.tflite, .h5, .pth/.safetensors)")
    p.add_argument("--from", dest="fmt", choices=FORMATS, help="source format (default: sniffed from the file)")
    p.add_argument("--out", help="output folder (default: ./<source name without suffix>)")
    p.add_argument("--classes", type=int, choices=(1000, 1001), help="1000 drops TF-slim's background class")
    p.add_argument("--resolution", type=int, help="input size the weights record for preprocessing (default: a "
                   "TFLite file's own, else 224); it changes no weight")  # fmt: skip
    p.add_argument("--expect", metavar="MODEL", help="fail unless the file is this registered model's architecture")
    p.add_argument("--overwrite", action="store_true", help="replace an existing weights folder holding other weights "
                   "(one converted from the same file with the same options is replaced without it)")  # fmt: skip
    return cmd_convert


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_file
    from .weights import read_config

    out = convert_file(
        args.src,
        args.out,
        args.fmt,
        classes=args.classes,
        resolution=args.resolution,
        expect=args.expect,
        overwrite=args.overwrite,
    )
    config = read_config(out)
    spec, prov = config["spec"], config["provenance"]
    own = f" (the file's: {prov['file_resolution']})" if "file_resolution" in prov else ""
    print(
        f"{out}: MobileNetV1 alpha={spec.alpha:g} resolution={spec.resolution}{own} act={spec.act} "
        f"tf_padding={spec.tf_padding} classes={spec.num_classes} input range={config['input']['value_range']} "
        f"(from {prov['source_format']} {prov['source_file']}, sha256 {prov['source_sha256'][:12]}...)"
    )
    return 0


# --- bench ------------------------------------------------------------------------------------------------------


def _csv_list(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from exc

    return parse


def _lut_default(path: Path) -> str:
    """The table's default path as lut reads it ($MOBILENETS_CACHE, else ~/.cache/mobilenets), %-escaped for
    argparse: a help text naming ~/.cache while $MOBILENETS_CACHE points elsewhere sends the user to the wrong file."""
    return str(path).replace("%", "%%") + (" from $MOBILENETS_CACHE" if os.environ.get("MOBILENETS_CACHE") else "")


def _add_bench(sub) -> Handler:
    from .bench import BenchConfig
    from .lut import DEFAULT_PATH
    from .runtimes import RUNTIMES

    d = BenchConfig()
    p = sub.add_parser("bench", help="measure latency/throughput/memory/size of MobileNets on this machine")
    # as train's list options: words of comma-separated items (`comma_parts`: a backslash-comma is a comma inside an
    # item, a path's), split in cmd_bench so that an empty list stays config_from's error naming --models
    p.add_argument("--models", nargs="+", metavar="MODELS", help="names, ALPHA-RESOLUTION specs, timm:<name>, exported "
                   ".onnx files (run as they are, on the ONNX runtimes of their precision) or weights/run folders, "
                   "comma- or space-separated ('\\,' (quoted) is a comma inside a path; ~ is the home folder after "
                   "a comma too); a name wins over a path of the same name: ./NAME is the path (default: the "
                   "paper's 16-model grid)")  # fmt: skip
    p.add_argument("--alpha", type=_csv_list(float), help="alphas (x --resolution) instead of --models")
    p.add_argument("--resolution", type=_csv_list(int), help="resolutions (x --alpha) instead of --models")
    p.add_argument("--runtimes", type=_csv_list(str), default=list(d.runtimes),
                   help=f"comma list of {', '.join(RUNTIMES)} (default: {','.join(d.runtimes)})")  # fmt: skip
    p.add_argument("--threads", type=_csv_list(int), default=list(d.threads),
                   help=f"intra-op threads list (default: {','.join(map(str, d.threads))})")  # fmt: skip
    p.add_argument("--batch", type=int, help="throughput batch (default: 32 on CPU, 256 on GPU; 0 = skip)")
    p.add_argument("--min-runs", type=int, default=d.min_runs, help="timed runs (default: %(default)s) ...")
    p.add_argument("--min-time", type=float, default=d.min_time,
                   help="... or seconds, whichever first (default: %(default)s)")  # fmt: skip
    p.add_argument("--target-fps", type=float, default=d.target_fps, help="real-time threshold (default: 24)")
    p.add_argument("--cuda-backend", default=d.cuda_backend,
                   help="cuda runtimes: eager (fast start, best batch-1 latency measured) | compile (an Inductor "
                   "compile per model and batch size) | triton (default: %(default)s)")  # fmt: skip
    p.add_argument("--accuracy", nargs="+", metavar="FILE", help="summary.json files of your training runs")
    p.add_argument("--out", help="write rows to OUT.csv and OUT.json; OUT ending in / = a folder, file named after "
                   "hardware, runtimes, threads and batch (default: print only)")  # fmt: skip
    p.add_argument("--plots", metavar="DIR", help="write latency-vs-MACs and accuracy-vs-latency PNGs here")
    p.add_argument("--lut", action="store_true", help="predict latency from the per-layer lookup table instead")
    p.add_argument("--lut-file", help=f"lookup table JSON (default: {_lut_default(DEFAULT_PATH)})")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress (a bar on a terminal, a line every 30 s otherwise)"
    )
    _fmt_arg(p, ("table", "md", "csv", "json"), "table")
    return cmd_bench


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .train_config import comma_parts

    kw = dict(runtimes=tuple(args.runtimes), threads=tuple(args.threads), batch=args.batch, min_runs=args.min_runs,
              min_time=args.min_time, target_fps=args.target_fps, accuracy_files=tuple(args.accuracy or ()),
              progress=not args.no_progress, cuda_backend=args.cuda_backend)  # fmt: skip
    models = None if args.models is None else [m for word in args.models for m in comma_parts(word)]
    cfg = bench.config_from(models, args.alpha, args.resolution, **kw)
    if args.lut:
        from . import lut

        fps = None if args.target_fps == bench.BenchConfig.target_fps else args.target_fps  # (its default: unsaid)
        unused = {"out": args.out, "plots": args.plots, "accuracy": args.accuracy, "target_fps": fps}  # were ignored
        for name, value in unused.items():
            if value is not None:
                raise ValueError(f"{name}={value!r} is not allowed with --lut: predictions are printed only (a results "
                                 "file holds measurements, which select takes as measured); drop --lut to measure, "
                                 f"or --{name.replace('_', '-')}")  # fmt: skip
        rows = lut.predict_rows(cfg, path=args.lut_file)
        print(render(rows, args.format, lut.PREDICT_COLUMNS if args.format != "json" else None))
        return 0
    bench.check_outputs(args.out, args.plots)  # before measuring: a bad path would throw the measurements away
    notes: list[str] = []
    interrupted, pending = None, []
    try:
        rows = bench.run_bench(cfg, notes=notes)
    except bench.BenchInterrupted as exc:  # the rows measured before Ctrl-C are printed and written, as a run's are
        if not exc.rows:
            raise
        rows, interrupted, pending = exc.rows, exc, exc.pending  # named as the whole run: the rerun replaces them
        notes.append(f"{exc} (Ctrl-C): the rest were not measured")
    if not rows:  # every runtime was skipped: its reason is the message, not an empty table
        skipped = "; ".join(n for n in notes if n.startswith("skipped ")) or "no row"
        print(f"mobilenets bench: error: nothing measured ({skipped})", file=sys.stderr)
        return 1
    print(render(rows, args.format, bench.TABLE_COLUMNS if args.format in ("table", "md") else bench.COLUMNS))
    for note in notes:
        print(note, file=sys.stderr)
    plotted = rows
    if args.out:
        meta = {"command": "mobilenets " + " ".join(sys.argv[1:]), "config": cfg.__dict__, "notes": notes}
        out = Path(args.out) / bench.results_name([*rows, *pending]) if bench.out_is_folder(args.out) else args.out
        for path in bench.write_results(rows, out, meta=meta, say=lambda msg: print(msg, file=sys.stderr)):
            print(f"wrote {path}", file=sys.stderr)
            if path.suffix == ".json" and rows:
                plotted = bench.read_results(path)  # an earlier run's kept rows too: the plots show the file
    if args.plots:
        from . import plots

        stem = bench.results_name([*plotted, *pending])
        for path in plots.bench_plots(plotted, args.plots, target_fps=args.target_fps, stem=stem):
            print(f"wrote {path}", file=sys.stderr)
    if interrupted is not None:  # the newline ends the terminal's '^C'
        print(f"\nmobilenets bench: {interrupted} (Ctrl-C); the {len(rows)} row(s) measured are above"
              + (" and written" if args.out else ""), file=sys.stderr)  # fmt: skip
        return 130
    return 0


# --- select -----------------------------------------------------------------------------------------------------


def _add_select(sub) -> Handler:
    from .lut import DEFAULT_PATH, LUT_RUNTIMES
    from .runtimes import RUNTIMES
    from .select import Constraints, SearchSpace

    c, s = Constraints(), SearchSpace()
    p = sub.add_parser("select", help="the most accurate MobileNet meeting a latency/FPS/size/MACs/params budget")
    p.add_argument("--latency-ms", type=float, help="batch-1 latency bound (ms) on --runtime/--threads")
    p.add_argument("--fps", type=float, help="frames per second to sustain (latency <= 1000/fps)")
    p.add_argument("--max-mb", type=float, help="weights size bound in MiB (2**20 bytes), see --size-dtype")
    p.add_argument("--size-dtype", choices=("fp32", "int8"), default=c.size_dtype,
                   help="the weights --max-mb judges: the fp32 file or the INT8 export's (default: int8 on an INT8 "
                   "runtime, ort-int8 or openvino-int8, else fp32)")  # fmt: skip
    p.add_argument("--max-macs", help="MACs bound, e.g. 300M or 3e8 (paper convention)")
    p.add_argument("--max-params", help="parameters bound, e.g. 2.5M")
    p.add_argument("--min-top1", type=float, help="expected top-1 floor (%%)")
    measured = [r for r in RUNTIMES if r not in LUT_RUNTIMES]  # no lookup table: bench files only
    p.add_argument("--runtime", default="ort", help=f"runtime the latency refers to; the lookup table predicts "
                   f"{', '.join(LUT_RUNTIMES)}; {', '.join(measured)} need --bench files measuring the search space "
                   "(select prints the bench command) (default: %(default)s)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help=f"intra-op threads; measuring here, {THREADS_LIMIT} "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--bench", nargs="+", metavar="FILE", help="bench results JSON: measured latencies win")
    p.add_argument("--lut-file", help=f"latency lookup table JSON (default: {_lut_default(DEFAULT_PATH)})")
    p.add_argument("--accuracy", nargs="+", metavar="FILE", help="summary.json files of your training runs")
    p.add_argument("--accuracy-table", choices=("tfslim", "paper"), default="tfslim", help="(default: %(default)s)")
    p.add_argument("--alpha-range", type=_csv_list(float), metavar="MIN,MAX,STEP",
                   default=[s.alpha_min, s.alpha_max, s.alpha_step], help="(default: 0.25,1.0,0.05)")  # fmt: skip
    p.add_argument("--res-range", type=_csv_list(int), metavar="MIN,MAX,STEP",
                   default=[s.res_min, s.res_max, s.res_step], help="(default: 96,224,16)")  # fmt: skip
    p.add_argument("--top", type=int, default=5, help="rows to show (chosen + runners-up) (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return cmd_select


def _count(name: str, text: str | None) -> float | None:
    """'300M' / '2.5M' / '3e8' -> a number (None stays None)."""
    if text is None:
        return None
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    try:
        return float(text[:-1]) * scale[text[-1].upper()] if text and text[-1].upper() in scale else float(text)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r} is not allowed: {name} must be a count like 300M, 2.5M or 3e8") from exc


def cmd_select(args: argparse.Namespace) -> int:
    from . import accuracy
    from .cores import check_threads, usable_cores
    from .lut import LUT_RUNTIMES
    from .runtimes import check_runtime
    from .select import SHOW_COLUMNS, Constraints, SearchSpace, bench_command, head_note, latency_source, select

    check_runtime(args.runtime)
    check_threads(args.threads, here=False)  # rows of another machine's bench file need no measuring here
    for name, values in (("alpha-range", args.alpha_range), ("res-range", args.res_range)):
        if len(values) != 3:
            raise ValueError(f"--{name} {values} is not allowed: give MIN,MAX,STEP")
    space = SearchSpace(*args.alpha_range, *args.res_range).validate()
    if args.runtime not in LUT_RUNTIMES and not args.bench:  # checked before any accuracy file or measuring
        raise ValueError(f"runtime={args.runtime!r} is not allowed without --bench: the lookup table predicts "
                         f"{', '.join(LUT_RUNTIMES)} only; measure the search space with "
                         f"`{bench_command(args.runtime, args.threads, space.candidates())}` and give --bench "
                         "FILE.json")  # fmt: skip
    macs, params = _count("max_macs", args.max_macs), _count("max_params", args.max_params)
    cons = Constraints(args.latency_ms, args.fps, args.max_mb, args.size_dtype, macs, params, args.min_top1).validate()
    acc = accuracy.accuracy_model(args.accuracy, args.accuracy_table, say=lambda msg: print(msg, file=sys.stderr))
    if args.threads > (cores := usable_cores()):  # the cores the thread limit and bench count (the CPU affinity)
        print(f"note: threads={args.threads} beyond the {cores} core(s) this process may run on: latencies measured "
              "here would include the threads' contention", file=sys.stderr)  # fmt: skip
    # its notes (bench files of other hardware, rows superseded) come before select measures missing shapes
    latency = latency_source(args.runtime, args.threads, args.bench or (), args.lut_file,
                             say=lambda msg: print(msg, file=sys.stderr), num_classes=acc.num_classes)  # fmt: skip
    sel = select(cons, space=space, accuracy=acc, latency=latency, runtime=args.runtime, threads=args.threads,
                 top=args.top)  # fmt: skip
    if args.json:
        print(json.dumps(sel.to_dict(), indent=2))
        return 0 if sel.chosen else 1
    where = f"{args.runtime}, {args.threads} thread(s)"
    if sel.chosen is None:
        print(f"no model in the search space ({sel.candidates} candidates) meets the budget on {where}.")
        print("fastest and smallest candidates, for reference:")
        shown = [{"role": "fastest", **sel.fastest}, {"role": "smallest", **sel.smallest}]
        print(render(shown, "table", ("role", *SHOW_COLUMNS)))
        for note in (head_note(shown), sel.top1_note, sel.size_note, sel.latency_note, sel.int8_note):
            if note:
                print(note)
        return 1
    c = sel.chosen
    size = f"{c['weights_MB']:.2f} MiB fp32 / {c['weights_int8_MB']:.2f} MiB int8, {c['macs'] / 1e6:.1f}M MACs"
    known = c["top1"] is not None and c["top1"] == c["top1"]  # None or NaN: no accuracy for this model
    top1 = f"{c['top1']:.1f}%" if known else "unknown"
    lat_head = f", {c['latency_classes']}-class model" if c["latency_classes"] not in (None, c["classes"]) else ""
    ms = (f"{c['latency_ms']:.2f} ms ({c['latency_source']}{lat_head}, {where})" if c["latency_ms"] is not None
          else f"latency unknown on {where} (no bench row)")  # fmt: skip
    print(f"chosen: {c['name']} (alpha {c['alpha']:g}, resolution {c['resolution']}, {c['classes']} classes): "
          f"expected top-1 {top1} ({c['top1_source']}), {ms}, {size}")  # fmt: skip
    print(f"{sel.feasible} of {sel.candidates} candidates meet the budget; best {len(sel.runners_up) + 1}:\n")
    print(render([c, *sel.runners_up], "table", SHOW_COLUMNS))
    notes = (head_note([c, *sel.runners_up]), sel.top1_note, sel.size_note, sel.latency_note, sel.int8_note,
             sel.recipe_note)  # fmt: skip
    for note in notes:
        if note:
            print(note)
    why = []
    if sel.recipe_from is not None:  # its top-1 is fitted to the user's runs: train it as they were trained
        why.append(f"its top-1 is fitted to your runs: trained by the recipe of {sel.recipe_from}")
    if sel.commands_from is not None:  # its top-1 is that run's: export it; its recipe retrains it elsewhere
        why.append(f"trained already: {sel.commands_from} measured its top-1; export its weights, or retrain it with "
                   "that run's recipe")  # fmt: skip
    if len(sel.export_files or []) > 1:  # an INT8 export leaves the fp32 model beside it (`select.export_files`)
        why.append(f"the INT8 export also writes its fp32 model, {sel.export_files[1]}")
    how = "to produce it" + (f" ({'; '.join(why)})" if why else "") + ":"
    print(f"\n{how}\n  " + "\n  ".join(sel.commands or []))
    return 0


# --- train / eval -----------------------------------------------------------------------------------------------


def _add_train(sub) -> Handler:
    from .train_config import add_arguments

    p = sub.add_parser(
        "train",
        help="train or fine-tune on an image folder (works under torchrun for DDP)",
        description="Every option defaults to the TrainConfig dataclass; --config YAML overlays the defaults and "
        "explicit options overlay the YAML.",
    )
    add_arguments(p)
    return cmd_train


def cmd_train(args: argparse.Namespace) -> int:
    from .train_config import from_args
    from .trainer import train

    summary = train(from_args(args, say=lambda msg: print(msg, file=sys.stderr)))
    if summary is not None:  # the result, with --quiet too (it hides progress): a quiet run said nothing at all
        print(
            f"best val top-1 {metric(summary['best_top1'])} (epoch {summary['best_epoch']}), final top-1 "
            f"{metric(summary['final_top1'])} top-5 {metric(summary['final_top5'])}, {summary['wall_time_s']:.1f} s; "
            f"weights in {summary['weights']}"
        )
    return 0


def _add_eval(sub) -> Handler:
    from .train_config import DEFAULT_WORKERS_WORDS, add_list_option

    p = sub.add_parser("eval", help="top-1/top-5/loss/per-class accuracy of saved weights on an image folder")
    p.add_argument("--weights", required=True, help="weights folder (our format, e.g. RUN_DIR/model; a train run "
                   "folder means its model/), or an .onnx file written by `mobilenets export` (INT8 too; ONNX "
                   "Runtime)")  # fmt: skip
    p.add_argument("--data", required=True, help="split folder holding <class>/<images> (e.g. ROOT/val)")
    add_list_option(p, "--classes", str, metavar="CLASSES", help="score only these class folders, as train's "
                    "--classes (a model trained on some of the split's classes; default: all)")  # fmt: skip
    p.add_argument("--resolution", type=int, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (0 = load in the main process; "
                   f"default: {DEFAULT_WORKERS_WORDS})")  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: %(default)s")
    p.add_argument("--threads", type=int, help=f"torch CPU threads, {THREADS_LIMIT}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return cmd_eval


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import left_out_note
    from .labels import display_label
    from .trainer import evaluate_weights

    r = evaluate_weights(
        args.weights,
        args.data,
        classes=args.classes,
        resolution=args.resolution,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        threads=args.threads,
    )
    if _process()[0]:  # under torchrun every process has the result: one prints it
        return 0
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    # the images scored, and beside them the files that were not (below a 1000-row table, the skip line was missed)
    bad = r["skipped_files"]["count"]
    unread = f", {counted(bad, 'unreadable file')} skipped" if bad else ""
    print(
        f"{r['weights']} on {r['data']} at {r['resolution']}px: top-1 {r['top1']:.4f}  top-5 {metric(r['top5'])}  "
        f"loss {r['loss']:.4f}  ({counted(r['images'], 'image')}{unread}, {r['images_per_s']:.1f} images/s)"
    )
    # as the top-1 above (0.0000, 1.0000): the table's own number format showed 0 beside 1.00, and 0.004 beside both
    # a wnid folder is shown with its class name, as predict shows it (`display_label`): n03445777 alone says nothing
    rows = [{"class": display_label(k), "top1": None if v is None else f"{v:.4f}"}
            for k, v in r["per_class_top1"].items()]  # fmt: skip
    print(render(rows, "table"))
    if r["skipped_files"]["count"]:
        skipped = counted(r["skipped_files"]["count"], "unreadable file")
        print(f"skipped {skipped}, first: {r['skipped_files']['first'][0]}")
    if r["left_out_files"]["count"]:  # said as training says it (`data.left_out_note`): JSON alone held it
        print(left_out_note(r["data"], r["left_out_files"]["first"], r["left_out_files"]["count"]))
    return 0


# --- reproduce --------------------------------------------------------------------------------------------------


def _add_reproduce(sub) -> Handler:
    from .reproduce import BUDGETS, EXPERIMENTS, ReproduceConfig

    d = ReproduceConfig()
    p = sub.add_parser("reproduce", help="re-run the paper's Tables 4-7 / Figures 4-5 experiments on real images")
    p.add_argument("--data", default=d.data, help="ImageFolder root with train/ and val/ (default: shared Imagenette)")
    p.add_argument("--experiments", default=",".join(d.experiments), help=f"comma list of {', '.join(EXPERIMENTS)}")
    p.add_argument("--budget", default=d.budget, choices=list(BUDGETS), help="quick = CPU smoke run; full = one GPU")
    p.add_argument("--recipe", default=d.recipe, help="configs/<name>.yaml or a YAML path (one recipe for all models)")
    p.add_argument("--out", default=d.out, help="output folder for report.md, results.json, plots, runs/ (default: "
                   "%(default)s, under the current folder)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=d.epochs, help="override the budget's epochs per model")
    p.add_argument("--time-budget", type=float, default=d.time_budget,
                   help="GPU: the most epochs (at most the budget's or --epochs) estimated to fit these seconds, "
                   "from a timed training step here")  # fmt: skip
    p.add_argument("--jobs", type=int, default=d.jobs, help="processes at once; one resolution's runs share one")
    p.add_argument("--report-only", action="store_true", help="no training: report from the runs finished in --out")
    p.add_argument(
        "--seeds", type=int, default=d.seeds, help="train every model with seeds 0..N-1 (default: the budget's)"
    )
    p.add_argument(
        "--threads", type=int, default=d.threads, help=f"intra-op threads per training process, {THREADS_LIMIT} "
        "(default: the budget's; quick: 2, full: cores / jobs; --report-only takes any count: it runs nothing)"
    )  # fmt: skip
    return cmd_reproduce


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import ReproduceConfig, reproduce, verdict_words
    from .train_config import comma_parts

    experiments = tuple(comma_parts(args.experiments))
    cfg = ReproduceConfig(data=args.data, out=args.out, experiments=experiments, budget=args.budget, recipe=args.recipe,
                          epochs=args.epochs, jobs=args.jobs, report_only=args.report_only,
                          time_budget=args.time_budget, seeds=args.seeds, threads=args.threads)  # fmt: skip
    results = reproduce(cfg, log=lambda msg: print(msg, flush=True))
    for name, exp in results["experiments"].items():
        print(f"{name}: {verdict_words(exp['verdict'])}")
    return 0


# --- entry point ------------------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable] = [
    _add_list,
    _add_summary,
    _add_paper,
    _add_convert,
    _add_export,
    _add_predict,
    _add_stream,
    _add_bench,
    _add_select,
    _add_train,
    _add_eval,
    _add_reproduce,
]


class _Parser(argparse.ArgumentParser):
    r"""argparse's parser with one-line errors: its own print the whole usage block first (54 lines for ``train
    --lr abc``), where every other error of the command is one line (README, "Command line").

    A value that starts like a negative number is a value, not an option: argparse 3.11 takes only ``-5`` and
    ``-.5`` as numbers (``^-\d+$|^-\d*\.\d+$``), so ``--max-macs -5M``, ``--lr -1e-3``, ``--fps -inf`` and
    ``--alpha-range -0.25,1,0.05`` ended in "expected one argument" instead of the check that names the value. Here
    anything starting with ``-`` and a digit (or ``-.``, as later CPython argparse does: ``-\.?\d``) or ``-inf`` /
    ``-nan`` (what ``float`` reads) is one. No option of ours looks like that (all are ``--name``, and ``-h``), so
    argparse's rule that such options turn it off never applies; the subcommands' parsers are this class too.

    That rule is argparse's private ``_negative_number_matcher``, the one name here that is not public API: argparse
    has no public hook for it (Python 3.10 to 3.15; its docs, "Arguments containing -", offer only ``--opt=-x`` and
    ``--``, which users would have to know to type). The attribute has kept its name since Python 3.2 while its
    pattern widened (3.13: ``-.5`` and underscores, python/cpython#123945; 3.14: ``-2.5e-6``, python/cpython#155339)
    and still takes neither ``-inf`` nor ``-0.25,1,0.05``. Rewriting ``--opt -x`` as ``--opt=-x`` before parsing would
    need the options' arities and argparse's prefix matching again, and cannot give ``nargs="+"`` (``--betas 0.9
    -0.999``) its values. Were a Python to stop reading the attribute, test_cli's negative-value tests fail."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)

    def error(self, message: str, prog: str | None = None):
        prog = prog or self.prog
        _say(f"{prog}: error: {message} (see {prog} --help)")
        self.exit(2)

    def parse_args(self, args=None, namespace=None):
        """argparse's, but an option the subcommand does not know is named with the subcommand's help
        (argparse reports it from the top-level parser, whose help lists no subcommand's options)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {command}" if command else None)
        return parsed


def build_parser(*, allow_abbrev: bool = True) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The parser and each subcommand's handler. ``allow_abbrev=False`` takes options only as spelled in full (the
    README test: an abbreviation would hide a renamed option)."""
    from . import __version__

    parser = _Parser(
        prog="mobilenets", description="MobileNetV1 (Howard et al. 2017) toolkit", allow_abbrev=allow_abbrev
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers = {}
    for add in SUBCOMMANDS:
        handler = add(sub)
        handlers[list(sub.choices)[-1]] = handler
    for command in sub.choices.values():
        command.allow_abbrev = allow_abbrev  # argparse reads it when parsing
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        return 0
    # a path that cannot be what it must be (missing, a folder for a file, under a file) is the command line's mistake
    except (SpecError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        if os.environ.get("MOBILENETS_DEBUG"):  # where it was raised, for a bug report
            raise
        _say(f"mobilenets {args.command}: error: {_os_message(exc)}")
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during training (`stopping.Terminated`)
        hint = {
            "train": ": the last checkpoint is kept; add --resume auto to the same command to go on from it",
            "reproduce": ": finished runs are kept; run the same command again to resume",
        }.get(args.command, "")
        if isinstance(exc, Terminated):
            where = f" ({exc})" if str(exc) else ""
            _say(f"mobilenets {args.command}: terminated by SIGTERM{where}{hint}")
            return 128 + signal.SIGTERM
        _say(f"\nmobilenets {args.command}: interrupted{hint}")
        return 130
    except Exception as exc:
        message = _environment_error(exc, args)
        if message is None or os.environ.get("MOBILENETS_DEBUG"):  # a bug: its traceback is the report
            raise
        _say(f"mobilenets {args.command}: error: {message}")
        return 1


def _say(line: str) -> None:
    """``line`` to stderr in one write, so that the processes of a torchrun job, each ending with its own line, do
    not interleave them mid-line; a rank other than 0 says which it is."""
    sys.stderr.write(line.replace("mobilenets ", rank_prefix(_process()[0]) + "mobilenets ", 1) + "\n")
    sys.stderr.flush()


def _process() -> tuple[int, int]:
    """(rank, world size) of this process in a torchrun job, from its environment; (0, 1) outside one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")) if world > 1 else 0), world


def _os_message(exc: BaseException) -> str:
    """``<path>: <strerror>`` for an OS error that names its file (Python's own text is ``[Errno 13] Permission
    denied: '<path>'``); the message of any other error."""
    filename, strerror = getattr(exc, "filename", None), getattr(exc, "strerror", None)
    if filename is None or not strerror:
        return str(exc)
    other = getattr(exc, "filename2", None)
    return f"{filename}: {strerror}" + (f" (to {other})" if other is not None else "")


def _environment_error(exc: Exception, args: argparse.Namespace) -> str | None:
    """The one-line message of a failure of this machine rather than of the command line (exit status 1): an OS
    error (permissions, a full disk, a read-only filesystem), an FFmpeg (PyAV) error, running out of memory; None for
    anything else, which is a bug and keeps its traceback."""
    av = sys.modules.get("av")
    if isinstance(exc, OSError) or (av is not None and isinstance(exc, av.FFmpegError)):
        return _os_message(exc)
    if _peer_gone(exc):  # the cause is another process's own line; this one's traceback would bury it
        if NCCL_PEER_GONE in str(exc):  # NCCL cannot tell the two apart
            return ("another process of this torchrun job stopped (its own error line says why), or the network "
                    f"between them failed (NCCL: {NCCL_PEER_GONE}); this one could not go on")  # fmt: skip
        return "another process of this torchrun job stopped (its own error line says why); this one could not go on"
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in ("out of memory", "can't allocate memory"))
    ):
        return _oom_message(exc, args)
    return None


# NCCL's ncclRemoteError, as torch's DistBackendError (a RuntimeError) words it (NCCL 2.14 to 2.28 in NVIDIA/nccl's
# issues #934, #1141, #2076)
NCCL_PEER_GONE = "remote process exited or there was a network error"


def _peer_gone(exc: Exception) -> bool:
    """Whether ``exc`` is what a process of a torchrun job meets in a collective when another process has ended (a
    failure there, printed as its own line): gloo's connection to it is closed or reset, or NCCL's remote error."""
    text = str(exc)
    return (
        _process()[1] > 1
        and isinstance(exc, RuntimeError)
        and any(sign in text for sign in ("Connection closed by peer", "Connection reset by peer", NCCL_PEER_GONE))
    )


def _oom_message(exc: Exception, args: argparse.Namespace) -> str:
    """'out of memory', with the size asked for where the allocator says it and the options that set it."""
    text = str(exc)
    found = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)
    size = f" (tried to allocate {int(found[1]) / 2**30:.1f} GiB)" if found else ""
    if not found and (found := re.search(r"tried to allocate ([0-9.]+ [KMGT]iB)", text, re.IGNORECASE)):
        size = f" (tried to allocate {found[1]})"
    options = [f"--{name.replace('_', '-')} {value}" for name in ("resolution", "batch_size", "batch")
               if isinstance(value := getattr(args, name, None), int) and not isinstance(value, bool)]  # fmt: skip
    hint = f"; reduce {' or '.join(options)}" if options else ""
    return f"out of memory{size}{hint}"


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "build_parser"]
