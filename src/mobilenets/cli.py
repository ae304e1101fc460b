"""The `mobilenets` command line: thin subcommands over the library (parse, call one function, print).

Bad input (a `ValueError` from the library, naming the parameter and what is allowed) is printed as one line and
exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from . import complexity, paper
from .formatting import render
from .registry import list_models, model_spec
from .spec import ModelSpec, SpecError

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


SUMMARY_COLUMNS = ["index", "name", "type_stride", "filter_shape", "input_size", "output_size", "macs", "params"]


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
    rows = [{k: getattr(layer, k) for k in SUMMARY_COLUMNS} for layer in cost.layers]
    total = {"index": None, "name": "total", "macs": cost.macs, "params": cost.params}
    print(render(rows + [total], args.format, SUMMARY_COLUMNS))
    if args.format != "csv":
        spec = cost.spec
        label = args.name if not overrides else f"{args.name} with {overrides}"
        print(
            f"\n{label}: alpha={spec.alpha:g} resolution={spec.resolution} variant={spec.variant}: "
            f"{cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.3f}M params "
            f"({cost.params_all / 1e6:.3f}M with BatchNorm and biases)"
        )
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
        print(render([r for r in rows if r["table"] == table], args.format, PAPER_COLUMNS))
        print()
    counts = {s: sum(r["status"] == s for r in rows) for s in ("match", "misprint", "MISMATCH", "computed")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    print(complexity.COUNTING_NOTE)
    return 0


# --- convert ----------------------------------------------------------------------------------------------------


def _add_convert(sub) -> Handler:
    from .convert import FORMATS

    p = sub.add_parser("convert", help="import published weights (TFLite, Keras .h5, timm) into our safetensors format")
    p.add_argument("src", help="the source file (.tflite, .h5, .pth/.safetensors)")
    p.add_argument("--from", dest="fmt", choices=FORMATS, help="source format (default: sniffed from the file)")
    p.add_argument("--out", help="output folder (default: ./<source name without suffix>)")
    p.add_argument("--classes", type=int, choices=(1000, 1001), help="1000 drops TF-slim's background class")
    p.add_argument("--resolution", type=int, help="default input size where the file fixes none (Keras, timm)")
    p.add_argument("--expect", metavar="MODEL", help="fail unless the file is this registered model's architecture")
    return cmd_convert


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_file
    from .weights import read_config

    out = convert_file(
        args.src, args.out, args.fmt, classes=args.classes, resolution=args.resolution, expect=args.expect
    )
    config = read_config(out)
    spec, prov = config["spec"], config["provenance"]
    print(
        f"{out}: MobileNetV1 alpha={spec.alpha:g} resolution={spec.resolution} act={spec.act} "
        f"tf_padding={spec.tf_padding} classes={spec.num_classes} input range={config['input']['value_range']} "
        f"(from {prov['source_format']} {prov['source_file']}, sha256 {prov['source_sha256'][:12]}...)"
    )
    return 0


# --- entry point ------------------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable] = [_add_list, _add_summary, _add_paper, _add_convert]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(prog="mobilenets", description="MobileNetV1 (Howard et al. 2017) toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers = {}
    for add in SUBCOMMANDS:
        handler = add(sub)
        handlers[list(sub.choices)[-1]] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except (SpecError, ValueError, FileNotFoundError) as exc:
        print(f"mobilenets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "build_parser"]
