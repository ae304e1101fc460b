"""Accuracy of converted published weights, beside the published numbers and the TFLite interpreter on the same images.

Part 1 (TFLite uint8 ImageNet classifiers, `mobilenets.convert.from_tflite`): top-1 (1000-way: argmax over the
1001 outputs, output k = ImageNet class k - 1) of our converted float model and of the reference interpreter on
the same uint8 crops, on imagenet-sample (250 photos) and Imagenette val (3,925 photos), with top-1 agreement
(strict and tie-aware, see `tflite_oracle`) and the max / mean probability difference; and the same agreement
for the converted model with its activations rounded to the file's uint8 grid (an experiment that shows how much
of the gap is the interpreter's activation rounding).
Part 2 (Keras alpha-0.25 ImageNet body, no top): a linear probe (multinomial logistic regression, L-BFGS, on
standardised global-average-pooled features) trained on Imagenette train, scored on Imagenette val; the same probe
on the features of a randomly initialised network of the same architecture as the control.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/converted_accuracy.py [--train-per-class 100]
Writes results/converted-accuracy-<cpu>-<threads>t.json and .md. Caveat: both image sets are mostly ImageNet
*train* images (see their SOURCE.md), so the TFLite top-1 here is not held-out accuracy; the point is the
comparison with the interpreter on identical pixels.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets import MobileNetV1, __version__  # noqa: E402
from mobilenets.convert import convert  # noqa: E402
from mobilenets.convert.tflite_oracle import (  # noqa: E402
    agreement,
    interpreter_outputs,
    normalize,
    uint8_activations,
    uint8_crops,
)
from mobilenets.data import shared_data_root  # noqa: E402
from mobilenets.preprocess import load_batch  # noqa: E402

DATA = shared_data_root()
TFLITE = {  # name: published top-1 (TFLite hosted-models table, 2018_08_02 release)
    "0.25_128": 39.5,
    "0.5_160": 57.2,
    "0.75_192": 66.1,
}
CHUNK = 200


def imagenet_sample() -> list[tuple[Path, int]]:
    folder = DATA / "imagenet-sample"
    with open(folder / "labels.csv") as f:
        return [(folder / r["file"], int(r["imagenet_index"])) for r in csv.DictReader(f)]


def imagenette(split: str, per_class: int | None = None, label: str = "imagenet_index") -> list[tuple[Path, int]]:
    """(path, label) of an Imagenette split in path order; ``label`` = "imagenet_index" (0-999) or "label" (0-9)."""
    folder = DATA / "imagenette"
    with open(folder / "manifest.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["path"])
    if per_class:  # the first `per_class` files of each class, in path order
        kept, seen = [], Counter()
        for r in rows:
            seen[r["label"]] += 1
            if seen[r["label"]] <= per_class:
                kept.append(r)
        rows = kept
    return [(folder / r["path"], int(r[label])) for r in rows]


def evaluate_tflite(name: str, images: list[tuple[Path, int]], threads: int) -> dict:
    path = DATA / "mobilenet-weights" / "tflite" / f"mobilenet_v1_{name}_quant.tflite"
    model, _ = convert(path)
    ours, emulated, ref, labels = [], [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(images), CHUNK):
        chunk = images[i : i + CHUNK]
        u8 = uint8_crops([p for p, _ in chunk], model.spec)
        r, _ = interpreter_outputs(path, u8, threads=threads)
        x = normalize(u8, model.spec)
        with torch.no_grad():
            ours.append(model(x).softmax(1).numpy())
            with uint8_activations(model, path):
                emulated.append((model(x).softmax(1) * 256).round().clamp(0, 255).numpy() / 256)
        ref.append(r)
        labels += [label + 1 for _, label in chunk]  # 1001-class head: index 0 = background
    ours, emulated, ref, y = np.concatenate(ours), np.concatenate(emulated), np.concatenate(ref), np.array(labels)
    emulation = {f"emulated_{k}": round(100 * v, 2) if "agreement" in k else round(v, 4)
                 for k, v in agreement(emulated, ref).items()}  # fmt: skip
    top5 = np.argsort(-ours, 1)[:, :5]
    return {
        "model": f"mobilenet_v1_{name}_quant",
        "images": len(y),
        "published_top1": TFLITE[name],
        "ours_top1": round(100 * float((ours.argmax(1) == y).mean()), 2),
        "interpreter_top1": round(100 * float((ref.argmax(1) == y).mean()), 2),
        "ours_top5": round(100 * float((top5 == y[:, None]).any(1).mean()), 2),
        **{k: round(100 * v, 2) if "agreement" in k else round(v, 4) for k, v in agreement(ours, ref).items()},
        **emulation,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def features(model: MobileNetV1, images: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    feats = []
    for i in range(0, len(images), CHUNK):
        x = load_batch([p for p, _ in images[i : i + CHUNK]], model.spec)
        with torch.no_grad():
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(feats), torch.tensor([label for _, label in images])


def linear_probe(xtr, ytr, xva, yva, classes: int = 10, l2: float = 1e-3) -> float:
    """Multinomial logistic regression (L-BFGS, 200 iterations) on features standardised with train statistics."""
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mean) / std, (xva - mean) / std
    w = torch.zeros(xtr.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return round(100 * float(((xva @ w + b).argmax(1) == yva).float().mean()), 2)


def calibrate_bn(model: MobileNetV1, images: list[tuple[Path, int]]) -> None:
    """Re-estimate a random network's BatchNorm statistics on the probe's train images (cumulative average), so the
    control is not crippled by activations that explode or saturate ReLU6 under the default mean 0 / var 1."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), CHUNK):
            model.forward_features(load_batch([p for p, _ in images[i : i + CHUNK]], model.spec))
    model.eval()


def keras_probe(per_class: int | None) -> dict:
    path = DATA / "mobilenet-weights" / "keras" / "mobilenet_2_5_224_tf_no_top.h5"
    pretrained, _ = convert(path)
    torch.manual_seed(0)
    random_init = MobileNetV1(pretrained.spec).eval()
    torch.manual_seed(0)
    calibrated = MobileNetV1(pretrained.spec)
    train, val = imagenette("train", per_class, "label"), imagenette("val", None, "label")
    out = {"model": "keras mobilenet_2_5_224_tf_no_top (alpha 0.25, 224)", "train_images": len(train)}
    out["val_images"] = len(val)
    calibrate_bn(calibrated, train)
    controls = (("pretrained", pretrained), ("random_init", random_init), ("random_init_bn_calibrated", calibrated))
    for name, model in controls:
        t0 = time.perf_counter()
        xtr, ytr = features(model, train)
        xva, yva = features(model, val)
        out[f"{name}_probe_val_top1"] = linear_probe(xtr, ytr, xva, yva)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def environment(threads: int) -> dict:
    from ai_edge_litert import __version__ as litert_version

    from mobilenets.bench import environment as machine

    return {
        "command": " ".join(sys.argv),
        **machine(),
        "threads": threads,
        "ai_edge_litert": litert_version,
        "mobilenets": __version__,
        "dtype": "float32 (ours), uint8 (interpreter)",
    }


def write_markdown(path: Path, result: dict) -> None:
    lines = ["# Converted published MobileNetV1 weights: accuracy (generated by benchmarks/converted_accuracy.py)", ""]
    lines.append(
        "TFLite uint8 classifiers, converted to float (ours) vs the TFLite interpreter on identical uint8 crops."
    )
    lines.append("Top-1 is 1000-way (argmax over 1001 outputs). Agreement: strict / tie-aware. Prob diff: softmax.")
    lines.append("emulated_*: the same converted model with every activation rounded to the file's uint8 grid")
    lines.append("(`tflite_oracle.uint8_activations`), an experiment showing the gap is the interpreter's rounding.")
    lines.append("Both image sets are mostly ImageNet *train* images (their SOURCE.md): top-1 here is not held-out.")
    lines.append("")
    cols = ["dataset", "model", "images", "published_top1", "interpreter_top1", "ours_top1", "ours_top5"]
    cols += ["top1_agreement", "top1_agreement_tie_aware", "prob_diff_max", "prob_diff_mean"]
    cols += ["emulated_top1_agreement", "emulated_top1_agreement_tie_aware", "emulated_prob_diff_mean"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in result["tflite"]:
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    k = result["keras_probe"]
    lines += ["", "Keras alpha-0.25 body (no top): linear probe on Imagenette (10 classes), val top-1 %."]
    lines += ["Controls: the same architecture randomly initialised (kaiming), with default BN statistics and with BN"]
    lines += ["statistics re-estimated on the probe's train images. Train: the first 100 images per class (of 9,469)."]
    lines += [""]
    lines += ["| features | train images | val images | val top-1 |", "|---|---|---|---|"]
    for name in ("pretrained", "random_init", "random_init_bn_calibrated"):
        lines.append(f"| {name} | {k['train_images']} | {k['val_images']} | {k[name + '_probe_val_top1']} |")
    env = result["environment"]
    lines += [
        "",
        f"Command: `{env['command']}`; commit {env['git_commit'][:10]}; {env['cpu']}, {env['threads']} thread(s);",
    ]
    lines.append(f"torch {env['torch']}, ai-edge-litert {env['ai_edge_litert']}, Python {env['python']}.")
    path.write_text("\n".join(lines) + "\n")


def rewrite_markdown(json_path: Path) -> None:
    """Regenerate the .md beside a results .json (after a change to the table layout, without re-measuring)."""
    write_markdown(json_path.with_suffix(".md"), json.loads(json_path.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-per-class", type=int, default=100, help="Imagenette train images per class (0 = all)")
    ap.add_argument("--skip-imagenette", action="store_true", help="TFLite on imagenet-sample only (quick)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    datasets = {"imagenet-sample": imagenet_sample()}
    if not args.skip_imagenette:
        datasets["imagenette-val"] = imagenette("val")
    for dataset, images in datasets.items():
        for name in TFLITE:
            row = {"dataset": dataset, **evaluate_tflite(name, images, args.threads)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    probe = keras_probe(args.train_per_class or None)
    print(json.dumps(probe), flush=True)
    result = {"tflite": rows, "keras_probe": probe, "environment": environment(args.threads)}
    cpu = (
        result["environment"]["cpu"].split()[0].lower()
        + "-"
        + "-".join(result["environment"]["cpu"].split()[1:3]).lower()
    )
    stem = REPO / "results" / f"converted-accuracy-cpu-{cpu}-{args.threads}t"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(stem.with_suffix(".md"), result)
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
