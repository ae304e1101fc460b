"""A distillation teacher fed the student's smaller crops as they are, or resized up to its own resolution.

Why: the trainer resizes a student batch below a teacher's own resolution up to it (`trainer.AtOwnResolution`,
``--teacher-resolution own``, the default) and lets ``--teacher-resolution student`` feed it as it is; the README,
that option's help and the adapter's docstring quote what each costs and buys. This script is where those numbers
come from (they were first measured with a script outside the repository, commit a7c791e).

Teachers: the converted TF-slim uint8 TFLite ImageNet classifiers of shared/data/mobilenet-weights/tflite
(`convert_file(..., classes=1000)`), read and wrapped by the trainer's own `load_teacher` / `adapt_teacher`, once
with ``teacher_resolution`` own and once student, for a student of the default normalisation (ImageNet mean/std:
the teacher's `Renormalise` adapter applies). Images: Imagenette val (3,925; ``--max-per-class`` keeps the first N
of each class in path order), each decoded once and cropped as the teacher's eval transform does at the student's
size s (`preprocess.eval_crop`: resize to s / 0.875, centre crop s) and at the teacher's own R.
Per teacher and student size s < R: top-1 over Imagenette's 10 classes (the teacher's 1000 logits restricted to the
class folders' wnids, as `PickOutputs` gives the student) and 1000-way, fed directly and resized, beside the teacher
at its own resolution ("native"); and KL(teacher at R || teacher fed s px) of the temperature-4 distributions over the
10 classes (`engine.distillation_loss` / T^2, the term the student is trained on), per image, averaged.
Cost: the teacher's MACs at s and at R (`complexity.count_complexity`); on ``--threads`` (default 1) CPU threads at
batch ``--batch`` (64), timed alternately (`bench.alternate`, A B A B, median of ``--rounds``): the ``--time-teacher``
(0.75_192) fed s = ``--time-size`` (128) directly and resized, the resize alone (the adapter around an identity), and
a distillation step of a 0.25-s student (the trainer's `engine.optimizer_step`: forward, teacher, loss, backward,
SGD) with each teacher and with none.

Run: flock /tmp/mobilenets-cpu.lock python benchmarks/teacher_resolution.py [--max-per-class 50] [--threads 1]
Writes results/teacher-resolution-<hw>-t<threads>[-n<per class>].json with the command, versions and hardware.
Caveat: most Imagenette images are ImageNet *train* images (its SOURCE.md): the top-1 here is not held-out accuracy;
the point is the comparison of the two feeds on identical crops.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mobilenets import MobileNetV1, __version__  # noqa: E402
from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import alternate, environment, hardware_tag  # noqa: E402
from mobilenets.complexity import count_complexity  # noqa: E402
from mobilenets.convert import convert_file  # noqa: E402
from mobilenets.data import shared_data_root  # noqa: E402
from mobilenets.engine import DistEnv, StepContext, distillation_loss, optimizer_step  # noqa: E402
from mobilenets.labels import class_indices, imagenet_labels, imagenet_wnids  # noqa: E402
from mobilenets.optim import build_optimizer, scaled_lr  # noqa: E402
from mobilenets.preprocess import eval_crop, eval_normalize, read_image  # noqa: E402
from mobilenets.spec import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from mobilenets.train_config import TrainConfig  # noqa: E402
from mobilenets.trainer import AtOwnResolution, adapt_teacher, load_teacher  # noqa: E402

DATA = shared_data_root()
TFLITE = DATA / "mobilenet-weights" / "tflite"
TEACHERS = ("0.75_192", "0.5_160", "0.25_128")  # alpha_resolution of mobilenet_v1_<name>_quant.tflite
CHUNK = 64
TEMPERATURE = TrainConfig.distill_temperature  # the trainer's default, 4


def val_images(per_class: int | None) -> list[tuple[Path, str]]:
    """(path, wnid) of Imagenette val in path order; the first ``per_class`` of each class when given."""
    folder = DATA / "imagenette"
    with open(folder / "manifest.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "val"), key=lambda r: r["path"])
    kept, seen = [], {}
    for r in rows:
        seen[r["wnid"]] = seen.get(r["wnid"], 0) + 1
        if per_class is None or seen[r["wnid"]] <= per_class:
            kept.append((folder / r["path"], r["wnid"]))
    return kept


def config(teacher: Path, mode: str, student_res: int, batch: int) -> TrainConfig:
    """The trainer's config for a 0.25 student at ``student_res`` distilled from ``teacher`` fed as ``mode`` says."""
    return TrainConfig(teacher=str(teacher), teacher_resolution=mode, alpha=0.25, resolution=student_res,
                       batch_size=batch, threads=1).validate()  # fmt: skip


def teachers(folder: Path, classes: list[str], student_norm: tuple) -> dict[str, torch.nn.Module]:
    """{mode: the teacher as the trainer builds it} for --teacher-resolution own and student."""
    out = {}
    for mode in ("own", "student"):
        cfg = config(folder, mode, 128, 1)
        out[mode] = adapt_teacher(load_teacher(cfg, classes), cfg, student_norm, torch.device("cpu"))
    return out


class Tally:
    """Running top-1 (10 classes / 1000-way) and KL sums of one feed of one teacher."""

    def __init__(self) -> None:
        self.n = self.top1_10 = self.top1_1000 = 0
        self.kl = 0.0

    def add(self, logits: torch.Tensor, ref10: torch.Tensor, cols: torch.Tensor, y10: torch.Tensor,
            y1000: torch.Tensor) -> None:  # fmt: skip
        sub = logits.index_select(1, cols)
        self.n += len(y10)
        self.top1_10 += int((sub.argmax(1) == y10).sum())
        self.top1_1000 += int((logits.argmax(1) == y1000).sum())
        kl_mean = distillation_loss(sub, ref10, TEMPERATURE) / TEMPERATURE**2  # KL(ref_T || fed_T), batch mean
        self.kl += float(kl_mean) * len(y10)

    def row(self) -> dict:
        return {"top1_10": round(100 * self.top1_10 / self.n, 2), "top1_1000": round(100 * self.top1_1000 / self.n, 2),
                "kl_t4_vs_native": round(self.kl / self.n, 4)}  # fmt: skip


def accuracy(name: str, folder: Path, images: list[tuple[Path, str]], sizes: list[int], student_norm) -> dict:
    """One teacher's native / direct / resized top-1 and KL on ``images`` at every student size below its own."""
    wnids = list(imagenet_wnids())
    nets = teachers(folder, wnids, student_norm)  # 1000-way: one forward gives both scores
    spec = next(m for m in nets["own"].modules() if isinstance(m, MobileNetV1)).spec
    classes = sorted({w for _, w in images})
    found, _ = class_indices(classes, imagenet_labels())  # the columns `PickOutputs` keeps for these folders
    cols = torch.tensor([found[c] for c in classes])
    own = spec.resolution
    below = [s for s in sizes if s < own]
    crops = {s: eval_crop(spec, s) for s in [own, *below]}
    normalize = eval_normalize(spec.replace(mean=student_norm[0], std=student_norm[1]))
    tallies = {"native": Tally(), **{f"{feed}_{s}": Tally() for s in below for feed in ("direct", "resized")}}
    t0 = time.perf_counter()
    for i in range(0, len(images), CHUNK):
        chunk = images[i : i + CHUNK]
        decoded = [read_image(p) for p, _ in chunk]
        y10 = torch.tensor([classes.index(w) for _, w in chunk])
        y1000 = torch.tensor([wnids.index(w) for _, w in chunk])
        batch = {s: torch.stack([normalize(crop(im)) for im in decoded]) for s, crop in crops.items()}
        with torch.no_grad():
            native = nets["own"](batch[own])  # at its own size the adapter passes the batch through
            ref10 = native.index_select(1, cols)
            tallies["native"].add(native, ref10, cols, y10, y1000)
            for s in below:
                tallies[f"direct_{s}"].add(nets["student"](batch[s]), ref10, cols, y10, y1000)
                tallies[f"resized_{s}"].add(nets["own"](batch[s]), ref10, cols, y10, y1000)
    out = {"teacher": f"mobilenet_v1_{name}_quant", "resolution": own, "images": len(images)}
    out |= {"native": tallies["native"].row()}
    for s in below:
        out[f"from_{s}"] = {"direct": tallies[f"direct_{s}"].row(), "resized": tallies[f"resized_{s}"].row(),
                            "macs_ratio_resized_over_direct": round(count_complexity(spec, own).macs
                                                                    / count_complexity(spec, s).macs, 3)}  # fmt: skip
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def timing(folder: Path, images: list[tuple[Path, str]], size: int, batch: int, rounds: int) -> dict:
    """Teacher forward direct vs resized, the resize alone, and a distillation step with each, alternately."""
    classes = sorted({w for _, w in images})
    student = MobileNetV1(alpha=0.25, num_classes=len(classes), resolution=size)
    norm = (student.spec.mean, student.spec.std)
    nets = teachers(folder, classes, norm)  # 10-way (`PickOutputs`), as a student on Imagenette sees it
    spec = next(m for m in nets["own"].modules() if isinstance(m, MobileNetV1)).spec
    paths = [images[i % len(images)][0] for i in range(batch)]
    tf = [eval_crop(spec, size), eval_normalize(student.spec)]
    x = torch.stack([tf[1](tf[0](read_image(p))) for p in paths])
    y = torch.tensor([classes.index(images[i % len(images)][1]) for i in range(batch)])
    cfg = config(folder, "own", size, batch)
    opt = build_optimizer(student, cfg, scaled_lr(cfg))
    student.train()

    def step(teacher):
        ctx = StepContext(optimizer=opt, lr_at=None, set_lr=None, env=DistEnv(), teacher=teacher,
                          distill_weight=cfg.distill_weight, distill_temperature=cfg.distill_temperature)  # fmt: skip
        return partial(optimizer_step, student, x, y, ctx=ctx)

    resize = AtOwnResolution(torch.nn.Identity(), spec.resolution)  # the adapter's resize alone

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn(x)

        return run

    fns = {"teacher_direct": no_grad(nets["student"]), "teacher_resized": no_grad(nets["own"]),
           "resize_only": no_grad(resize), "step_no_teacher": step(None), "step_direct": step(nets["student"]),
           "step_resized": step(nets["own"])}  # fmt: skip
    times = alternate(fns, rounds=rounds, block=1, warmup=2)
    rows = {k: {"median_ms": round(1e3 * statistics.median(v), 1), "min_ms": round(1e3 * min(v), 1),
                "max_ms": round(1e3 * max(v), 1), "runs": len(v)} for k, v in times.items()}  # fmt: skip
    med = {k: r["median_ms"] for k, r in rows.items()}
    return {"teacher": spec.name, "teacher_resolution": spec.resolution, "student": f"0.25-{size}",
            "batch": batch, "rows": rows,
            "macs_ratio": round(count_complexity(spec, spec.resolution).macs / count_complexity(spec, size).macs, 3),
            "teacher_forward_ratio": round(med["teacher_resized"] / med["teacher_direct"], 2),
            "step_ratio": round(med["step_resized"] / med["step_direct"], 2)}  # fmt: skip


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="+", default=list(TEACHERS), help=f"of {', '.join(TEACHERS)} (default all)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 96], help="student sizes (default 128 96)")
    ap.add_argument("--max-per-class", type=int, default=None, help="first N val images of each class (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-teacher", default="0.75_192", help="the teacher timed (default 0.75_192)")
    ap.add_argument("--time-size", type=int, default=128, help="the student size timed (default 128)")
    ap.add_argument("--batch", type=int, default=64, help="timing batch (default 64)")
    ap.add_argument("--rounds", type=int, default=7, help="timed alternations (default 7)")
    ap.add_argument("--out", default=str(REPO / "results"), help="folder of the JSON report (default results/)")
    args = ap.parse_args()
    for name in [*args.teachers, args.time_teacher]:
        if name not in TEACHERS:
            sys.exit(f"teacher {name!r} is not one of {', '.join(TEACHERS)}")
    for flag, value in (("--sizes", min(args.sizes)), ("--time-size", args.time_size), ("--batch", args.batch),
                        ("--rounds", args.rounds), ("--threads", args.threads),
                        ("--max-per-class", 1 if args.max_per_class is None else args.max_per_class)):  # fmt: skip
        if value < 1:
            sys.exit(f"{flag} {value}: must be at least 1")
    try:  # now, not after the minutes of a run whose report it would then lose in a traceback
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.exit(f"--out {args.out}: cannot create that folder ({exc.strerror})")
    return args


def main() -> None:
    args = parse()
    if not (DATA / "imagenette" / "manifest.csv").is_file() or not TFLITE.is_dir():
        sys.exit(f"{DATA}: no Imagenette or TFLite weights there (set MOBILENETS_DATA to the shared data folder)")
    torch.set_num_threads(args.threads)
    images = val_images(args.max_per_class)
    student_norm = (IMAGENET_MEAN, IMAGENET_STD)  # a student's default normalisation
    rows = []
    with tempfile.TemporaryDirectory(prefix="teacher-res-") as tmp:
        folders = {}
        for name in dict.fromkeys([*args.teachers, args.time_teacher]):
            src = TFLITE / f"mobilenet_v1_{name}_quant.tflite"
            folders[name] = convert_file(src, Path(tmp) / name, classes=1000)
        for name in args.teachers:
            rows.append(accuracy(name, folders[name], images, args.sizes, student_norm))
            print(json.dumps(rows[-1]), flush=True)
        timed = timing(folders[args.time_teacher], images, args.time_size, args.batch, args.rounds)
    print(json.dumps(timed), flush=True)
    report = {
        "what": __doc__.splitlines()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dataset": "imagenette val" + (f", first {args.max_per_class} per class" if args.max_per_class else ""),
        "temperature": TEMPERATURE,
        "threads": args.threads,
        "accuracy": rows,
        "timing": timed,
        "environment": {**environment(), "mobilenets": __version__, "dtype": "float32"},
    }
    suffix = f"-n{args.max_per_class}" if args.max_per_class else ""
    out = Path(args.out) / f"teacher-resolution-{hardware_tag()}-t{args.threads}{suffix}.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
