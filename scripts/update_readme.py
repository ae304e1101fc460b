"""Regenerate the tables in README.md from the code (`python scripts/update_readme.py [--check]`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mobilenets.cli import PAPER_COLUMNS, model_rows
from mobilenets.formatting import render
from mobilenets.paper import as_printed, compare

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = README.parent / "results"


def _newest(pattern: str) -> Path | None:
    files = sorted(RESULTS.glob(pattern))
    return files[-1] if files else None


def bench_table() -> str:
    """1.0-224 (ours and timm's) per runtime, 1 thread, from the committed grid results."""
    import json

    path = _newest("bench-*-t1+2-b32.json")
    if path is None:
        return "(no grid results committed yet: run benchmarks/bench_grid.py)"
    rows = json.loads(path.read_text())["rows"]
    keep = [r for r in rows if r["model"] in ("mobilenet_v1_100", "timm:mobilenetv1_100") and r["threads"] == 1]
    cols = ["model", "runtime", "dtype", "latency_ms_median", "latency_ms_p90", "fps", "throughput_ips",
            "peak_mem_MB", "weights_MB", "fp32_limit_ms", "limit_fraction"]  # fmt: skip
    where = f"From `results/{path.name}` ({rows[0]['cpu']}, {rows[0]['cores']} vCPUs)"
    units = "latencies in ms, `fps` = 1000 / median latency, `*_MB` columns in MiB (2**20 bytes)"
    return f"{where}; {units}:\n\n" + render(keep, "md", cols)


def lut_table() -> str:
    import json

    path = _newest("lut-*-t1.json")
    if path is None:
        return "(no lookup-table results committed yet: run benchmarks/lut_accuracy.py)"
    latest = f"From `results/{path.name}`:\n\n" + render(json.loads(path.read_text())["summary"], "md")
    runs = []
    for run in sorted(RESULTS.glob("lut-*-t1*.json")):
        data = json.loads(run.read_text())
        row = {"file": run.name, "commit": str(data["meta"]["env"].get("commit") or "?")}
        for s in data["summary"]:
            row[f"{s['runtime']} fit"] = s["fit"]
            row[f"{s['runtime']} median abs error %"] = s["median_abs_error_pct"]
        runs.append(row)
    return latest + "\n\nEvery committed run:\n\n" + render(runs, "md")


def gpu_table() -> str:
    """Ours vs timm on the GPU (benchmarks/gpu_vs_timm.py): every committed run, newest first, one row per path."""
    files = sorted(RESULTS.glob("gpu-vs-timm-*.json"), reverse=True)  # the undated name sorts after its dated copies
    if not files:
        return "(no GPU results committed yet: run benchmarks/gpu_vs_timm.py on a GPU)"
    return "\n\n".join(_gpu_run(path) for path in files)


def _gpu_run(path: Path) -> str:
    import json

    d = json.loads(path.read_text())
    rows = []
    for section in (
        "inference_eager",
        "inference_compiled",
        "latency_batch1",
        "train_eager",
        "train_compiled",
        "train_tuned",
    ):
        for name, r in d.get(section, {}).items():
            if isinstance(r, dict) and "median_ms" in r:
                batch = 1 if section == "latency_batch1" else d["batch"]
                rows.append({"section": section, "path": name, "batch": batch, "median_ms": r["median_ms"],
                             "images_per_s": r["images_per_s"]})  # fmt: skip
    env = d["environment"]
    ratios = {k: v for k, v in d["ratios"].items() if isinstance(v, float)}
    said = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    text = (f"From `results/{path.name}` ({env['gpu']}, torch {env['torch']}, timm {env['timm']}, "
            f"{d['resolution']}x{d['resolution']}, random weights):\n\n" + render(rows, "md")
            + f"\n\nRatios (ours / timm, > 1 = ours faster; fraction_of_hbm_bound = best ours / bound): "
            f"{said}.")  # fmt: skip
    if d.get("merged_from"):
        text += f"\n\nMerged from {len(d['merged_from'])} calls of one lease (`section_sources` names each section's)."
    if d.get("note"):
        text += f"\n\nNote: {d['note']}"
    profiled = {name: r for name, r in d.get("profile", {}).items() if isinstance(r, dict) and "by_category_ms" in r}
    if profiled:
        text += (
            "\n\nGPU time per call by kernel category (torch.profiler, ms): "
            + "; ".join(
                f"{name} {r['ms_per_call']:.2f} = "
                + ", ".join(f"{cat} {ms:.2f}" for cat, ms in r["by_category_ms"].items() if ms >= 0.005)
                for name, r in profiled.items()
            )
            + "."
        )
    return text


def train_gpu_table() -> str:
    import json

    files = sorted(RESULTS.glob("train-gpu-*.json"))
    if not files:
        return "(no GPU training results committed yet: run benchmarks/train_gpu.py on a GPU)"
    cols = ["model", "epochs", "final_top1", "best_top1", "wall_time_s", "train_images_per_s",
            "synthetic_step_images_per_s", "end_to_end_over_synthetic", "end_to_end_over_synthetic_after_epoch1", "met",
            "device"]  # fmt: skip
    rows = [json.loads(f.read_text()) for f in files]
    return "From " + ", ".join(f"`results/{f.name}`" for f in files) + ":\n\n" + render(rows, "md", cols)


def stream_table() -> str:
    """End-to-end video FPS (benchmarks/stream_fps.py): decode + preprocess + model (+ overlay and encode)."""
    import json

    path = _newest("stream-fps-*-t1.json")
    if path is None:
        return "(no stream results committed yet: run benchmarks/stream_fps.py)"
    d = json.loads(path.read_text())
    cols = ["model", "runtime", "encode", "fps_end_to_end", "fps_model", "meets_24"]
    return (f"From `results/{path.name}` ({d['meta']['env']['cpu']}, 1 thread; clip: {d['meta']['clip']}; median of "
            f"{d['meta']['rounds']} alternating rounds):\n\n" + render(d["rows"], "md", cols))  # fmt: skip


def sections() -> dict[str, str]:
    misprints = [as_printed(r) for r in compare() if r["status"] == "misprint"]
    return {
        "mobilenets list": render(model_rows(), "md"),
        "mobilenets paper misprints": render(misprints, "md", PAPER_COLUMNS),
        "bench 1.0-224": bench_table(),
        "lut accuracy": lut_table(),
        "gpu vs timm": gpu_table(),
        "train gpu": train_gpu_table(),
        "stream fps": stream_table(),
    }


def updated(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        text = pattern.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    current = README.read_text()
    new = updated(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    README.write_text(new)
