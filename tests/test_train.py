"""Training and evaluation (issue 4): real Imagenette JPEGs copied into tmp folders, real subprocesses, real gloo DDP.

All runs are CPU, alpha 0.25, low resolution, one torch thread per process (2-thread timings on the shared 2-core
machine swing 10x) so the file stays well under two minutes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mobilenets import MobileNetV1, kernels, load, save
from mobilenets import trainer as trainer_module
from mobilenets.cli import main
from mobilenets.data import DataError, ImageFolderDataset, scan_dataset, scan_split
from mobilenets.engine import (
    CheckpointWriter,
    DistEnv,
    find_resume,
    host_copy,
    load_checkpoint,
    save_checkpoint,
)
from mobilenets.optim import RMSpropTF, build_optimizer, load_optimizer_state, lr_factor, param_groups
from mobilenets.registry import create_model
from mobilenets.train_config import ConfigError, TrainConfig, first_differences, load_yaml, resolve
from mobilenets.trainer import build_model, evaluate_weights, train
from mobilenets.weights import read_config, read_state_dict, training_run

from .conftest import REPO, data_path, refuse_listing

CLASSES4 = ["n01440764", "n02979186", "n03028079", "n03394916"]  # tench, cassette player, church, French horn
SRC = str(REPO / "src")


def copy_subset(dst: Path, classes: list[str], n_train: int, n_val: int) -> Path:
    src = data_path("imagenette")
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for f in sorted(os.listdir(src / split / c))[:n]:
                shutil.copy(src / split / c / f, dst / split / c / f)
    return dst


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        alpha=0.25,
        resolution=64,
        batch_size=8,
        epochs=1,
        workers=0,
        threads=1,
        optimizer="sgd",
        lr=0.05,
        schedule="constant",
        weight_decay=0.0,
        quiet=True,
    )
    base.update(kw)
    return resolve(**base)


def cli(args: list[str], **env_extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "mobilenets", *args], env=env, capture_output=True, text=True, timeout=300
    )


def torchrun(
    args: list[str], nproc: int = 2, timeout: float = 300, program: tuple[str, ...] = ("-m", "mobilenets")
) -> subprocess.CompletedProcess:
    """``mobilenets ARGS`` in ``nproc`` processes on this machine (gloo on CPU), as a user would launch them. A job
    still running after ``timeout`` s (processes waiting for each other) fails the test; torchrun is stopped with
    SIGTERM, on which it stops its workers (each in a session of its own: killing torchrun would leave them waiting)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen([*cmd, *program, *args], env=env, **pipes) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"{nproc} processes still running after {timeout} s (a hang): {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- a run that learns --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 Imagenette classes, 150 train / 50 val images each, 0.25 MobileNet-64, 270 SGD steps (about 25 s)."""
    root = copy_subset(tmp_path_factory.mktemp("inette"), CLASSES4, 150, 50)
    out = tmp_path_factory.mktemp("run")
    cfg = resolve(
        data=str(root),
        out=str(out),
        alpha=0.25,
        resolution=64,
        epochs=15,
        batch_size=32,
        workers=0,
        threads=1,
        optimizer="nesterov",
        lr=0.2,
        schedule="cosine",
        warmup_epochs=1,
        scale_min=0.35,
        quiet=True,
    )
    return root, out, train(cfg)


@pytest.mark.slow
def test_short_run_learns_far_above_chance(trained):
    """The bar is chance plus a margin that luck does not reach, not a figure near what the recipe reaches: the old
    0.45 passed on seed 0's 0.585 but seed 1 scored 0.44, so it tested the seed. Chance is what predicting one
    class scores, the largest class's share of val (0.25 here; a random-weight net predicts ~one class). best_top1
    is the best of 15 evaluations of 200 images; at chance one evaluation reaches chance + 4.9 binomial sd (0.15)
    with probability 2.2e-6, so the best of 15 with at most 3.3e-5; the same run with lr=1e-9 peaked at 0.28 and
    0.29 (seeds 0, 1). This recipe scored 0.44-0.635 over seeds 0-9 (mean 0.53, sd 0.064; on 400 val images,
    0.41-0.59, mean 0.505): 270 steps leave it underfit (train top-1 about val top-1, its best in epochs 11-15), and
    its first ~3 epochs score about chance (val loss 1e3-5e4 after epoch 1) before it learns at a seed's own pace.
    No cheap change narrowed the spread: a 3-epoch warmup gave 0.44-0.62 on 400 images (10 seeds, mean 0.53), lr
    0.1 0.46-0.60 and lr 0.05 0.46-0.64 (5 seeds each); 20 epochs (4 seeds: 0.505-0.615) would cost a third more."""
    root, out, summary = trained
    sizes = [len(os.listdir(folder)) for folder in (root / "val").iterdir()]
    chance = max(sizes) / sum(sizes)
    bar = chance + 4.9 * (chance * (1 - chance) / sum(sizes)) ** 0.5
    assert (chance, round(bar, 2)) == (0.25, 0.40) and summary["best_top1"] >= bar
    untrained = create_model("mobilenet_v1_025", resolution=64, num_classes=4)
    save(untrained, out / "untrained")  # random weights through the same eval path, for contrast: below the bar
    assert evaluate_weights(out / "untrained", root / "val", workers=0)["top1"] < bar
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 16))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(0 < r["first_step_s"] < r["train_time_s"] for r in rows)  # 18 steps per epoch: the first is a part
    assert summary["epochs"] == 15 and summary["global_steps"] == 15 * (600 // 32)
    assert summary["macs"] > 0 and summary["params"] > 0 and summary["train_images_per_s"] > 0
    assert summary["skipped_files"]["train"]["count"] == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    env = json.loads((out / "env.json").read_text())
    assert env["versions"]["torch"] == torch.__version__ and "commit" in env["git"]
    assert load_yaml(out / "config.yaml")["lr"] == 0.2
    model = load(out / "model")
    assert model.spec.labels == tuple(CLASSES4) and model.spec.resolution == 64 and model.spec.alpha == 0.25
    assert model.spec.name == "mobilenet_v1_025_64"


@pytest.mark.slow
def test_eval_cli_reproduces_final_accuracy(trained, capsys):
    root, out, summary = trained
    code = main(["eval", "--weights", str(out / "model"), "--data", str(root / "val"), "--json", "--workers", "0"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["images"] == 200
    assert r["top1"] == pytest.approx(summary["final_top1"], abs=1e-9)
    assert r["top5"] is None and r["loss"] == pytest.approx(summary["final_val_loss"], rel=1e-4)  # 4 classes
    assert set(r["per_class_top1"]) == set(CLASSES4) and r["images_per_s"] > 0
    assert sum(r["per_class_top1"].values()) / 4 == pytest.approx(r["top1"])  # balanced: mean of per-class
    code = main(["eval", "--weights", str(out / "model"), "--data", str(root / "val"), "--workers", "0"])
    text = capsys.readouterr().out
    assert code == 0 and "top-1" in text and "top-5 n/a" in text and CLASSES4[0] in text


def test_evaluate_counts_top5_and_gives_none_for_five_classes_or_fewer():
    """Fixed logits rank the label 1st, 3rd, 6th and 2nd of 7: top-1 1/4, top-5 3/4. With 5 classes every label is
    in the top 5, so there is no top-5 to report (it would always be 1.0)."""
    from mobilenets.engine import evaluate

    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3]] * 4)
    labels = torch.tensor([0, 2, 5, 1])
    batch = [(logits, labels, [])]
    r = evaluate(torch.nn.Identity(), batch, 7, DistEnv())
    assert (r["top1"], r["top5"], r["images"]) == (0.25, 0.75, 4)
    assert evaluate(torch.nn.Identity(), [(logits[:, :5], labels.clamp(max=4), [])], 5, DistEnv())["top5"] is None
    nothing = evaluate(torch.nn.Identity(), [(torch.empty(0), torch.empty(0, dtype=torch.long), [(0, "bad")])], 7,
                       DistEnv())  # fmt: skip
    assert nothing["images"] == 0 and nothing["images_per_s"] == 0  # it said 1 image


def test_evaluate_ranks_tied_logits_by_class_index_as_predict_does():
    """Logits on a grid (an INT8 file's dequantized uint8 logits) tie at the top; eval scored torch.topk's pick of the
    tied classes, predict showed numpy argsort's, and the two commands disagreed on the same file's top-1."""
    from mobilenets.engine import evaluate
    from mobilenets.infer import top_k

    logits = torch.randint(0, 50, (64, 1000), generator=torch.Generator().manual_seed(0)).float()
    first = logits.argmax(1)  # the lowest index among the tied maxima
    r = evaluate(torch.nn.Identity(), [(logits, first, [])], 1000, DistEnv())
    assert r["top1"] == 1.0
    labels = [str(i) for i in range(1000)]
    assert [top_k(row.numpy(), labels, 1)[0]["index"] for row in logits] == first.tolist()


def test_eval_names_a_class_folder_it_cannot_list_not_an_empty_one(tmp_path, capsys, monkeypatch):
    """A class folder without read permission was 'empty class folder (every class needs at least one image)'."""
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "w")
    val = tmp_path / "val"
    for name in ("a", "b"):
        (val / name).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(val / name / "x.png")
    refuse_listing(monkeypatch, val / "b")
    assert main(["eval", "--weights", str(tmp_path / "w"), "--data", str(val), "--workers", "0"]) == 1
    assert capsys.readouterr().err == f"mobilenets eval: error: {val / 'b'}: Permission denied\n"


def test_curves_name_the_train_loss_as_the_objective_and_val_as_cross_entropy(tmp_path, monkeypatch):
    """With a teacher (or smoothing, MixUp) the train loss is not cross-entropy: a distilled run's 5.97 sat beside a
    val loss of 1.11 on an axis labelled "cross-entropy loss"."""
    from mobilenets import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi=110: figures.append(fig) or Path(path))
    rows = [{"epoch": 1, "train_loss": 5.97, "train_top1": 0.4, "val_loss": 1.11, "val_top1": 0.3, "val_top5": None}]
    plots.plot_training_curves(rows, tmp_path / "curves.png")
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (the run's objective)", "val (cross-entropy)"]


def test_eval_of_an_unnamed_head_reports_each_class_by_its_folder(tmp_path, capsys):
    """Weights saved without labels (a model of one's own, `mobilenets.save`) score folder k with output k; the
    per-class accuracy was keyed "0", "1", ... instead of the folders' names."""
    save(MobileNetV1(alpha=0.25, num_classes=3).eval(), tmp_path / "w")
    val = copy_subset(tmp_path / "d", CLASSES4[:2], 0, 1) / "val"
    args = ["eval", "--weights", str(tmp_path / "w"), "--data", str(val), "--workers", "0", "--resolution", "32"]
    assert main([*args, "--json"]) == 0
    per_class = json.loads(capsys.readouterr().out)["per_class_top1"]
    assert list(per_class) == CLASSES4[:2]
    assert main(args) == 0
    table = capsys.readouterr().out.splitlines()[-2:]  # each class's top-1 as the headline's, 4 decimals
    # a wnid folder is shown with its ImageNet class name, as predict shows it (the JSON keeps the folder's name)
    names = ["tench, Tinca tinca (n01440764)", "cassette player (n02979186)"]
    assert table == [f"{n:<{len(names[0])}}  {per_class[c]:.4f}" for n, c in zip(names, CLASSES4[:2], strict=True)]


def test_eval_of_weights_without_a_classifier_says_so(tmp_path, capsys):
    """Converted no-top weights (Keras' *_no_top.h5) have no head: eval named a count, not why."""
    save(MobileNetV1(alpha=0.25, num_classes=0).eval(), tmp_path / "w")
    val = copy_subset(tmp_path / "d", CLASSES4[:2], 0, 1) / "val"
    assert main(["eval", "--weights", str(tmp_path / "w"), "--data", str(val), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (f"mobilenets eval: error: {tmp_path / 'w'}: no classifier to evaluate (num_classes=0: a feature "
                   "extractor, such as Keras' no-top weights); train a head on it first: mobilenets train --init "
                   f"{tmp_path / 'w'}\n")  # fmt: skip


def test_eval_of_a_folder_with_no_readable_image_is_one_error(tmp_path, capsys):
    """It printed top-1 0.0000 over '1 images' and exited 0; the count is the images scored, and none is an error."""
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "w")
    val = copy_subset(tmp_path / "d", CLASSES4[:2], 0, 2) / "val"
    _spoil_every_file(val)
    args = ["eval", "--weights", str(tmp_path / "w"), "--data", str(val), "--workers", "0", "--resolution", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mobilenets eval: error: {val}: no image could be read (4 unreadable files; first: ")
    assert err.count("\n") == 1
    good = val / CLASSES4[1] / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 1 and r["skipped_files"]["count"] == 4
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "\nskipped 4 unreadable files, first: " in out
    # the images scored, with the files that were not beside them (the skip line comes after the per-class table)
    assert "  (1 image, 4 unreadable files skipped, " in out.splitlines()[0], out
    for spoiled in sorted(p for p in val.rglob("*") if p.is_file() and p != good)[1:]:
        spoiled.unlink()
    assert main(args) == 0  # one: not "1 unreadable files"
    out = capsys.readouterr().out
    assert "\nskipped 1 unreadable file, first: " in out and ", 1 unreadable file skipped, " in out


def test_eval_classes_scores_a_model_trained_on_some_of_the_splits_folders(tmp_path, capsys):
    """A model trained with --classes on some of a split's folders could not be scored on that split: every other
    folder was an error, and the only way was a copy of the folders it knows. --classes scores the folders named,
    as train's does, for a named head (matched by label) and an unnamed one (the named folders' sorted order)."""
    val = copy_subset(tmp_path / "d", CLASSES4[:3], 0, 2) / "val"
    named = create_model("mobilenet_v1_025", resolution=32, num_classes=2, labels=(CLASSES4[2], CLASSES4[0]))
    save(named.eval(), tmp_path / "named")
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "unnamed")
    args = ["--data", str(val), "--workers", "0", "--json"]
    assert main(["eval", "--weights", str(tmp_path / "named"), *args]) == 2
    assert f"{CLASSES4[1]} are not among the model's labels" in capsys.readouterr().err
    assert main(["eval", "--weights", str(tmp_path / "unnamed"), *args]) == 2
    assert "3 class folders but the model has 2 classes" in capsys.readouterr().err
    for weights in ("named", "unnamed"):
        both = f"{CLASSES4[2]},{CLASSES4[0]}"
        assert main(["eval", "--weights", str(tmp_path / weights), *args, "--classes", both]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["images"] == 4 and set(r["per_class_top1"]) == {CLASSES4[0], CLASSES4[2]}, r
    assert main(["eval", "--weights", str(tmp_path / "named"), *args, "--classes", "nope"]) == 2
    assert "class folder(s) nope not found" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_freeze_backbone_trains_only_the_head(trained, tmp_path):
    root, out, _ = trained
    sub = tmp_path / "two"
    for split in ("train", "val"):
        for c in CLASSES4[:2]:
            shutil.copytree(root / split / c, sub / split / c)
    cfg = tiny_cfg(sub, tmp_path / "ft", init=str(out / "model"), freeze_backbone=True, max_steps=4, lr=0.5)
    train(cfg)
    before, after = load(out / "model"), load(tmp_path / "ft" / "model")
    assert after.spec.num_classes == 2 and after.spec.labels == tuple(CLASSES4[:2])
    sb, sa = before.state_dict(), after.state_dict()
    for k in sa:
        if not k.startswith("classifier."):
            assert torch.equal(sa[k], sb[k]), k  # frozen backbone: weights and BatchNorm statistics untouched
    assert sa["classifier.weight"].shape == (2, before.num_features)
    # the weights fix the architecture: another width, activation or model asked for is refused (their own is fine);
    # a new resolution applies and renames the model
    init = str(out / "model")
    for asked, error in [
        (dict(alpha=0.5, act="relu6"), "alpha=0.5, act='relu6' are not allowed with init="),
        (dict(model="mobilenet_v1_050", alpha=None), "model='mobilenet_v1_050' (alpha=0.5) is not allowed with init="),
    ]:
        with pytest.raises(ConfigError, match=re.escape(error)):
            build_model(tiny_cfg(sub, tmp_path / "ft2", init=init, **asked), CLASSES4[:2])
    kept = build_model(tiny_cfg(sub, tmp_path / "ft2", init=init, model="mobilenet_v1_025", act="relu"), CLASSES4[:2])
    assert (kept.spec.alpha, kept.spec.act) == (0.25, "relu")
    s48 = train(tiny_cfg(sub, tmp_path / "ft3", init=str(out / "model"), resolution=48, max_steps=1))
    assert s48["model"]["resolution"] == 48 and s48["model"]["name"] == "mobilenet_v1_025_48"


def test_freeze_backbone_without_init_is_warned_of(tmp_path, capsys):
    """A linear probe of a random backbone is what --freeze-backbone alone trains: said, as a random teacher is."""
    data = copy_subset(tmp_path / "data", CLASSES4[:2], 8, 2)
    train(tiny_cfg(data, tmp_path / "probe", freeze_backbone=True, max_steps=1, quiet=False))
    assert "warning: --freeze-backbone without --init trains only the head" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value, error",
    [
        ("init", "missing", "init='{path}': no such file or folder"),
        ("init", "not-weights", "not a mobilenets weights folder"),
        ("teacher", "not-weights", "not a mobilenets weights folder"),
        ("teacher", "no_such_net", "teacher must be a weights folder or a torchvision model name"),
        # a path not there read as an unknown torchvision name: "must be a weights folder or a ... name"
        ("teacher", "missing", "teacher='{path}': no such file or folder (a weights folder of ours"),
        ("teacher", "resnet_18", "a torchvision model name (did you mean resnet18?)"),
        # timm's name.tag read as a path with a suffix: "no such file or folder"
        ("teacher", "resnet50.a1_in1k", "name; resnet50 is one (nothing is downloaded: give --teacher resnet50 "),
    ],
)
def test_weights_that_are_not_there_stop_the_run_before_its_folder_is_made(tmp_path, capsys, option, value, error):
    """A wrong --init or --teacher was found after the run folder was held: a new --out was left holding .lock."""
    data = copy_subset(tmp_path / "data", CLASSES4[:2], 2, 1)
    (tmp_path / "not-weights").mkdir()
    path = str(tmp_path / value) if value not in ("no_such_net", "resnet_18", "resnet50.a1_in1k") else value
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--alpha", "0.25", "--resolution", "32"]
    assert main([*args, f"--{option}", path, "--workers", "0", "--epochs", "1", "--batch-size", "2"]) != 0
    err = capsys.readouterr().err
    assert error.format(path=path) in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_init_from_a_runs_checkpoints_names_the_run_folder_to_give(tmp_path, capsys):
    """--init RUN/checkpoints/ckpt-N.pt (or RUN/checkpoints) read as "not a mobilenets weights folder (expected
    model.safetensors and config.json)": it names the run folder that --init takes, and --resume for the file."""
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-000000009.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": {}}, ckpt)
    data = copy_subset(tmp_path / "data", CLASSES4[:2], 2, 1)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "ft"), "--resolution", "32", "--batch-size", "2"]
    for init, tail in ((ckpt, f", or --resume {ckpt} --out NEW to go on with that run"), (ckpt.parent, "")):
        assert main([*args, "--init", str(init)]) == 2
        err = capsys.readouterr().err
        assert err == (f"mobilenets train: error: init='{init}' is not allowed: it is a run's checkpoints, not "
                       f"weights; give the run folder ({tmp_path / 'run'}) or its model_best{tail}\n")  # fmt: skip
    assert not (tmp_path / "ft").exists()


def test_init_from_runs_kept_under_a_folder_named_checkpoints_is_weights(tmp_path):
    """Runs kept as checkpoints/run1 (``--out checkpoints/run1``): ``--init checkpoints/run1`` and its
    ``model/model.safetensors`` were refused as "a run's checkpoints, not weights", naming the folder above
    checkpoints/ as the run to give. Only RUN/checkpoints and the .pt files in it are a run's checkpoints."""
    run = tmp_path / "checkpoints" / "run1"
    save(create_model("mobilenet_v1_025", resolution=32, num_classes=2), run / "model")
    for init in (run, run / "model", run / "model" / "model.safetensors"):
        trainer_module.check_sources(resolve(init=str(init), alpha=0.25, resolution=32))  # weights: no error
    (run / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=rf"it is a run's checkpoints, not weights; give the run folder \({run}\)"):
        trainer_module.check_sources(resolve(init=str(run / "checkpoints"), alpha=0.25, resolution=32))


@pytest.mark.parametrize(
    "teacher, weights, error",
    [
        ("ours", None, "predicts other classes than the dataset's: 2 class folder(s) match none of its 2 labels"),
        ("resnet18", b"garbage\n", "is not allowed: not a readable state_dict file (UnpicklingError: "),
        ("resnet18", {"a": torch.zeros(1)}, "are not weights of resnet18 (122 missing key(s), first 'conv1.weight'"),
        ("resnet18", "1000-way", "do not fit resnet18 with 2 classes (size mismatch for fc.weight"),
    ],
)
def test_a_teacher_refused_stops_the_run_before_its_folder_is_made_and_before_init_work(
    tmp_path, capsys, teacher, weights, error
):
    """A teacher for other classes, or --teacher-weights that do not load, were found after the run folder was held
    (`train --init W --teacher W75 --out R/kd` left R/kd holding only .lock), and after the --init set-up said its
    lines (the head's note, the BatchNorm pass): now before either, so the error is the run's one line."""
    import torchvision

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 2, 1)
    init = create_model("mobilenet_v1_025", resolution=32, num_classes=2)
    with torch.no_grad():  # folded BatchNorms, as converted weights have: the --init pass over training images
        for bn in (m for m in init.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.fill_(1), bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)
    save(init, tmp_path / "init")
    if teacher == "ours":
        save(create_model("mobilenet_v1_025", resolution=32, num_classes=2, labels=("cat", "dog")), tmp_path / "t")
        teacher = str(tmp_path / "t")
    extra = []
    if weights is not None:
        path = tmp_path / "t.pt"
        if weights == "1000-way":
            torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), path)
        else:
            path.write_bytes(weights) if isinstance(weights, bytes) else torch.save(weights, path)
        extra = ["--teacher-weights", str(path)]
    out = tmp_path / "R" / "kd"
    args = ["train", "--data", str(data), "--init", str(tmp_path / "init"), "--teacher", teacher, *extra, "--out",
            str(out), "--batch-size", "2", "--workers", "0", "--threads", "1", "--max-steps", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert error in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value, error",
    [
        ("model", "mobilenet_v1_999", "model name 'mobilenet_v1_999' is not allowed: it reads as alpha=9.99"),
        ("model", "0.5-16", "model name '0.5-16' is not allowed: it reads as alpha=0.5 at resolution 16"),
        ("model", "resnet50", "unknown model name 'resnet50'"),
        ("act", "gelu", "act='gelu' is not allowed: act must be one of 'relu', 'relu6'"),
    ],
)
def test_a_model_the_spec_refuses_stops_the_run_before_its_folder_is_made(tmp_path, capsys, option, value, error):
    """The model spec was built after the run folder was held: ``--model mobilenet_v1_999`` or ``--act gelu`` left a
    new --out holding only .lock, and the error named the alpha read from the name, not the name typed."""
    data = copy_subset(tmp_path / "data", CLASSES4[:2], 2, 1)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--resolution", "32", "--max-steps", "1"]
    assert main([*args, f"--{option}", value, "--workers", "0", "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert error in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=re.escape(error)):  # as the Python API says it
        create_model(value) if option == "model" else create_model("mobilenet_v1_100", **{option: value})


def test_init_resets_a_head_trained_on_other_classes_of_the_same_count(tmp_path):
    """--init weights that name their classes keep their head only for those classes: a head for as many other
    classes (or the same ones at other indices) would score each folder with another class's row."""
    trained = create_model("mobilenet_v1_025", resolution=64, num_classes=3, labels=("cat", "dog", "tench"))
    save(trained, tmp_path / "w")
    said = []  # kept as they are: said too, as every other outcome for the head is
    same = build_model(resolve(init=str(tmp_path / "w")), ["cat", "dog", "tench"], said.append)
    assert torch.equal(same.classifier.weight, trained.classifier.weight)
    assert said == ["note: the --init head keeps its rows for all 3 class folders (its labels are the folders, in "
                    "order)"]  # fmt: skip
    for classes, unknown, first in ((["ant", "bee", "cat"], 2, "ant"), (["dog", "tench", "zebra"], 1, "zebra")):
        said = []  # the folders it names lose their rows too: said, so it does not pass for a head kept
        model = build_model(resolve(init=str(tmp_path / "w")), classes, said.append)
        assert model.spec.labels == tuple(classes) and model.num_classes == 3
        assert not torch.equal(model.classifier.weight, trained.classifier.weight), classes
        assert said == [f"note: the --init head is reset: {unknown} of the 3 class folders are not among its 3 "
                        f"labels (first: {first!r}), so the rows of the {3 - unknown} it names are not kept "
                        "either"]  # fmt: skip
    said = []  # none named: a new head, said (it was silent), so a fine-tune from new rows is not taken for one that
    build_model(resolve(init=str(tmp_path / "w")), ["ant", "bee", "cow", "elk"], said.append)  # kept them
    assert said == ["note: the --init head is replaced by a new 4-way head: none of the 4 class folders are among its "
                    "3 labels"]  # fmt: skip
    save(create_model("mobilenet_v1_025", resolution=64, num_classes=7), tmp_path / "unnamed")
    said = []  # a head that names no classes (7 outputs, not ImageNet's count), of another size than the folders
    build_model(resolve(init=str(tmp_path / "unnamed")), ["ant", "bee"], said.append)
    assert said == ["note: the --init head is replaced by a new 2-way head: its 7 outputs name no classes"]
    said = []  # one as many as the folders: kept, its outputs taken in the folders' order
    build_model(resolve(init=str(tmp_path / "unnamed")), list("abcdefg"), said.append)
    assert said == ["note: the --init head keeps its rows for all 7 class folders (its outputs name no classes, in "
                    "order)"]  # fmt: skip
    save(create_model("mobilenet_v1_025", resolution=64, num_classes=0), tmp_path / "features")
    said = []  # no classifier at all (Keras' no-top weights): said so, not as "its 0 outputs"
    build_model(resolve(init=str(tmp_path / "features")), ["ant", "bee"], said.append)
    assert said == ["note: the --init head is replaced by a new 2-way head: its weights have no classifier (a feature "
                    "extractor)"]  # fmt: skip


def test_init_keeps_the_head_rows_of_the_classes_the_weights_name(tmp_path):
    """--init weights that name every class folder, by label or (ImageNet heads) by wnid, keep those classes' trained
    rows in the folders' order: converted 1001-way TFLite weights fine-tuned on Imagenette's wnid folders started
    from a random head (chance, 8% on 10 classes, where the same weights score 42% of 1000-way top-1)."""
    from mobilenets.labels import imagenet_wnids

    named = create_model("mobilenet_v1_025", resolution=64, num_classes=3, labels=("tench", "cat", "dog"))
    save(named, tmp_path / "named")
    said = []
    model = build_model(resolve(init=str(tmp_path / "named")), ["dog", "tench"], said.append)
    assert model.spec.labels == ("dog", "tench") and model.num_classes == 2
    assert said == ["note: the --init head keeps its rows for all 2 class folders (picked from its 3 labels, in the "
                    "folders' order)"]  # fmt: skip
    assert torch.equal(model.classifier.weight, named.classifier.weight[[2, 0]])
    assert torch.equal(model.classifier.bias, named.classifier.bias[[2, 0]])
    imagenet = create_model("mobilenet_v1_025", resolution=64, num_classes=1001)  # TF-slim: background first
    torch.nn.init.normal_(imagenet.classifier.bias)
    save(imagenet, tmp_path / "tf")
    wnids = imagenet_wnids()
    folders = sorted([wnids[0], wnids[217], wnids[999]])
    model = build_model(resolve(init=str(tmp_path / "tf")), folders)
    assert model.spec.labels == tuple(folders) and model.num_classes == 3
    rows = [wnids.index(f) + 1 for f in folders]
    assert torch.equal(model.classifier.weight, imagenet.classifier.weight[rows])
    assert torch.equal(model.classifier.bias, imagenet.classifier.bias[rows])
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model.eval()(x), imagenet.eval()(x)[:, rows])


def test_calibration_images_spread_over_every_class():
    from mobilenets.trainer import spread

    samples = [(f"{c}/{i}.jpg", c) for c in range(4) for i in range(50)]  # 200, ordered by class
    picked = spread(samples, 128)
    assert len(picked) == 128 and {label for _, label in picked} == {0, 1, 2, 3} and picked[-1][1] == 3
    assert spread(samples[:3], 128) == samples[:3] and spread([], 5) == []


@pytest.mark.slow
def test_fine_tuning_converted_tflite_weights_trains_their_folded_batchnorms(tmp_path, capsys):
    """TFLite weights carry their BatchNorm folded into the convs (identity BNs). In training mode those would
    normalise by the batch's statistics and wreck the features (a full fine-tune reached chance, 0.25 on 4 classes).
    The trainer gives them their inputs' statistics first: eval outputs stay as converted, and the fine-tune learns."""
    from mobilenets.convert import convert_file
    from mobilenets.trainer import identity_batchnorms, restore_batchnorm_statistics

    weights = convert_file(data_path("mobilenet-weights", "tflite", "mobilenet_v1_0.25_128_quant.tflite"),
                           tmp_path / "w025", classes=1000)  # fmt: skip
    model = load(weights)
    assert len(identity_batchnorms(model)) == 27 and identity_batchnorms(create_model("mobilenet_v1_025")) == []
    x = torch.randn(16, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
        assert restore_batchnorm_statistics(model, [x[:8], x[8:]]) == 27
        assert (model(x) - before).abs().max() <= 1e-4 * before.abs().max()  # eval mode: the converted network
    assert identity_batchnorms(model) == []  # done once
    data = copy_subset(tmp_path / "data", CLASSES4, 40, 15)
    cfg = tiny_cfg(data, tmp_path / "ft", init=str(weights), resolution=None, alpha=None, batch_size=16, lr=0.01,
                   schedule="cosine", optimizer="nesterov", quiet=False)  # fmt: skip
    summary = train(cfg)
    assert "27 folded (identity) BatchNorms" in capsys.readouterr().err
    assert summary["final_top1"] >= 0.6  # 60 val images, 4 classes: chance is 0.25 (a run here: 0.90)
    assert summary["model"]["name"] == "mobilenet_v1_025_128"  # converted weights carry no name: the grid's


@pytest.mark.slow
def test_distillation_from_our_weights_and_torchvision(trained, tmp_path):
    root, out, _ = trained
    cfg = tiny_cfg(root, tmp_path / "kd", teacher=str(out / "model"), distill_weight=0.7, max_steps=3)
    s = train(cfg)
    assert s["global_steps"] == 3
    cfg = tiny_cfg(root, tmp_path / "kd2", teacher="resnet18", max_steps=1, resolution=32)
    assert train(cfg)["global_steps"] == 1
    with pytest.raises(ConfigError, match="teacher"):
        train(tiny_cfg(root, tmp_path / "kd3", teacher="no_such_net", max_steps=1))
    # a teacher for other classes: ours by its labels, torchvision's by its weights' head (ImageNet's 1000)
    wrong = load(out / "model")
    wrong.spec = wrong.spec.replace(labels=("cat", *CLASSES4[1:]))
    save(wrong, tmp_path / "other")
    with pytest.raises(ConfigError, match=r"1 class folder\(s\) match none of its 4 labels \(first: 'n01440764'\)"):
        train(tiny_cfg(root, tmp_path / "kd4", teacher=str(tmp_path / "other"), max_steps=1))
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ConfigError, match=r"do not fit resnet18 with 4 classes \(size mismatch for fc.weight"):
        train(tiny_cfg(root, tmp_path / "kd5", teacher="resnet18", teacher_weights=str(tmp_path / "r18.pt"),
                       max_steps=1, resolution=32))  # fmt: skip


def test_a_teacher_weights_file_that_does_not_fit_is_one_line(tmp_path):
    import torchvision

    from mobilenets.trainer import build_teacher

    def teacher(contents) -> None:
        path = tmp_path / "t.pt"
        path.write_bytes(contents) if isinstance(contents, bytes) else torch.save(contents, path)
        cfg = TrainConfig(teacher="resnet18", teacher_weights=str(path)).validate()
        build_teacher(cfg, CLASSES4[:3], torch.device("cpu"), ((0.5,) * 3, (0.5,) * 3))

    r18 = torchvision.models.resnet18(num_classes=3).state_dict()
    teacher({"state_dict": r18})  # fits
    teacher({f"module.{k}": v for k, v in r18.items()})  # saved from a DistributedDataParallel wrapper: fits too
    teacher({f"_orig_mod.module.{k}": v for k, v in r18.items()})  # and from a compiled one around it
    for contents, message in (
        (b"garbage\n", r"is not allowed: not a readable state_dict file \(UnpicklingError: "),
        ([1, 2], r"is not allowed: it holds a list, not a state_dict of tensors"),
        (
            {"a": torch.zeros(1)},
            r"are not weights of resnet18 \(122 missing key\(s\), first 'conv1.weight'; 1 "
            r"unexpected key\(s\), first 'a'\)$",
        ),
        # resnet34's: the 200 characters of torch's list it was cut to ended mid-key ("laye)")
        (
            torchvision.models.resnet34(num_classes=3).state_dict(),
            r"are not weights of resnet18 \(96 unexpected key"
            r"\(s\), first 'layer1.2.conv1.weight'\)$",
        ),
        ({**r18, "fc.weight": torch.zeros(5, 512)}, r"do not fit resnet18 with 3 classes \(size mismatch for fc"),
        # every key matches, one tensor cannot be copied: torch's reason, not "()"
        ({**r18, "fc.bias": r18["fc.bias"].to_sparse()}, r"are not weights of resnet18 \(While copying the param"),
    ):
        with pytest.raises(ConfigError, match=r"^teacher_weights='.*t.pt' " + message) as err:
            teacher(contents)
        assert "\n" not in str(err.value)


def test_a_teacher_s_outputs_are_matched_to_the_class_folders_by_name_or_wnid(tmp_path):
    """An ImageNet teacher on wnid folders (Imagenette's) gives the logits of those classes, in the folders' order;
    a teacher whose labels are the folders' names in another order is reordered, not refused."""
    from mobilenets.labels import imagenet_wnids
    from mobilenets.trainer import build_teacher

    x = torch.randn(2, 3, 32, 32)  # at the teachers' own resolution: no resize (`AtOwnResolution`)
    imagenet = MobileNetV1(alpha=0.25, num_classes=1000, resolution=32).eval()  # saved without names: ImageNet's head
    save(imagenet, tmp_path / "imagenet")
    teacher = build_teacher(tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "imagenet")), CLASSES4,
                            torch.device("cpu"), (imagenet.spec.mean, imagenet.spec.std))  # fmt: skip
    wnid = [imagenet_wnids().index(c) for c in CLASSES4]
    with torch.no_grad():
        assert torch.equal(teacher(x), imagenet(x)[:, wnid]) and wnid == [0, 482, 497, 566]
    shuffled = MobileNetV1(alpha=0.25, num_classes=4, resolution=32, labels=tuple(reversed(CLASSES4))).eval()
    save(shuffled, tmp_path / "reversed")
    teacher = build_teacher(tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "reversed")), CLASSES4,
                            torch.device("cpu"), (shuffled.spec.mean, shuffled.spec.std))  # fmt: skip
    with torch.no_grad():
        assert torch.equal(teacher(x), shuffled(x).flip(1))
    # an unnamed 1000-way head on 1000 folders that are not ImageNet's wnids: taken by its size, as before
    folders = [f"c{i:04d}" for i in range(1000)]
    teacher = build_teacher(tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "imagenet")), folders,
                            torch.device("cpu"), (imagenet.spec.mean, imagenet.spec.std))  # fmt: skip
    with torch.no_grad():
        assert torch.equal(teacher(x), imagenet(x))


def test_a_teacher_sees_the_students_batch_in_its_own_normalisation():
    from mobilenets.trainer import Renormalise

    pixels = torch.rand(2, 3, 5, 5)
    student = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    own = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # a TF-trained teacher: inputs in [-1, 1]

    def norm(x, mean_std):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
        return (x - mean) / std

    adapter = Renormalise(torch.nn.Identity(), student, own)
    assert torch.allclose(adapter(norm(pixels, student)), norm(pixels, own), atol=1e-6)


def test_our_teacher_sees_the_students_batch_at_its_own_resolution(tmp_path):
    """A teacher trained at 64 px fed a 32 px student batch sees it resized (bilinear) to 64, renormalised to its
    own mean/std as before; a batch at its resolution or above reaches it untouched (resized down, teachers scored
    worse). A torchvision teacher by name records no resolution: it sees the student's."""
    import torch.nn.functional as F
    import torchvision

    from mobilenets.trainer import build_teacher

    own = ((0.5,) * 3, (0.5,) * 3)  # a TF-trained teacher: inputs in [-1, 1]
    saved = MobileNetV1(alpha=0.25, num_classes=4, resolution=64, labels=tuple(CLASSES4), mean=own[0], std=own[1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # logits that depend on the pixels (a fresh model's are ~1e-16 whatever it is fed)
        for m in saved.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        saved.classifier.weight.normal_(0, 1, generator=g)
    save(saved.eval(), tmp_path / "t64")
    student = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    teacher = build_teacher(tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "t64")), CLASSES4,
                            torch.device("cpu"), student)  # fmt: skip
    inner = next(m for m in teacher.modules() if isinstance(m, MobileNetV1))
    seen = []
    inner.register_forward_pre_hook(lambda _, a: seen.append(tuple(a[0].shape[-2:])))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in student)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        got = teacher((pixels - mean) / std)
        assert seen == [(64, 64)]
        want = inner(F.interpolate(pixels, size=(64, 64), mode="bilinear", align_corners=False) * 2 - 1)
        assert torch.allclose(got, want, atol=1e-5)
        direct = inner(pixels * 2 - 1)  # what it gave, fed the student's 32 px
        assert not torch.allclose(got, direct, atol=1e-3)  # so the check above tells the two apart
        for side in (64, 96):
            big = torch.rand(2, 3, side, side)
            assert torch.allclose(teacher((big - mean) / std), inner(big * 2 - 1), atol=1e-5)
            assert seen[-2:] == [(side, side)] * 2
        # --teacher-resolution student: the batch as it is, the teacher's forward at the student's MACs
        cfg = tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "t64"), teacher_resolution="student")
        as_is = build_teacher(cfg, CLASSES4, torch.device("cpu"), student)
        assert torch.allclose(as_is((pixels - mean) / std), direct, atol=1e-5)
    with pytest.raises(ConfigError, match="^teacher_resolution='student' needs --teacher"):
        tiny_cfg(tmp_path, tmp_path / "r", teacher_resolution="student").validate()
    with pytest.raises(ConfigError, match="^teacher_resolution='native' is not allowed: .* one of own, student"):
        tiny_cfg(tmp_path, tmp_path / "r", teacher=str(tmp_path / "t64"), teacher_resolution="native").validate()
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "r18.pt")
    cfg = tiny_cfg(tmp_path, tmp_path / "r", teacher="resnet18", teacher_weights=str(tmp_path / "r18.pt"))
    named = build_teacher(cfg, CLASSES4, torch.device("cpu"), student)  # ImageNet's normalisation: no adapter
    named.conv1.register_forward_pre_hook(lambda _, a: seen.append(tuple(a[0].shape[-2:])))
    with torch.no_grad():
        named(torch.rand(1, 3, 32, 32))
    assert seen[-1] == (32, 32)


def test_taps_flipped_and_hybrid_depthwise_train_the_same_run_and_save_ordinary_weights(tmp_path, capsys, monkeypatch):
    """--depthwise taps and --depthwise flipped --pad-stem run anywhere: the options reach the model that trains, two
    steps give PyTorch's layers' loss (to summation order: their gradients are checked in
    tests/test_train_speed_layers.py, as two steps move this loss too little to tell), and their weights load into
    the plain model (the stem's weight keeps its 3 input channels), which evaluates as the run did. Without
    --compile the taps say that they are slower there."""
    from mobilenets.dwconv import FlippedDepthwiseConv2d, HybridDepthwiseConv2d, TapsDepthwiseConv2d
    from mobilenets.layers import ChannelPaddedConv2d

    root = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    built = []
    real_build = trainer_module.build_model
    monkeypatch.setattr(trainer_module, "build_model", lambda *a, **kw: built.append(real_build(*a, **kw)) or built[-1])
    options = {"conv": {}, "taps": {}, "flipped": {"pad_stem": True}, "hybrid": {}}
    runs = {impl: train(tiny_cfg(root, tmp_path / impl, depthwise=impl, max_steps=2, resolution=32, quiet=False, **kw))
            for impl, kw in options.items()}  # fmt: skip
    kinds = [{type(m) for m in model.modules()} for model in built]
    assert TapsDepthwiseConv2d in kinds[1] and ChannelPaddedConv2d not in kinds[1]
    assert FlippedDepthwiseConv2d in kinds[2] and ChannelPaddedConv2d in kinds[2]
    assert HybridDepthwiseConv2d in kinds[3] and FlippedDepthwiseConv2d not in kinds[3]  # CPU: flipped's kernels
    assert not {TapsDepthwiseConv2d, FlippedDepthwiseConv2d, ChannelPaddedConv2d} & kinds[0]
    assert capsys.readouterr().err.count("--depthwise taps without --compile") == 1
    plain = read_state_dict(tmp_path / "conv" / "model" / "model.safetensors")
    for impl in ("taps", "flipped", "hybrid"):
        assert runs[impl]["final_val_loss"] == pytest.approx(runs["conv"]["final_val_loss"], rel=1e-4)
        saved = read_state_dict(tmp_path / impl / "model" / "model.safetensors")
        assert saved.keys() == plain.keys() and saved["stem.conv.weight"].shape == plain["stem.conv.weight"].shape
        r = evaluate_weights(tmp_path / impl / "model", root / "val", batch_size=8, workers=0)
        assert r["loss"] == pytest.approx(runs[impl]["final_val_loss"], rel=1e-4)


def test_depthwise_option_reaches_the_model_it_trains(tmp_path, monkeypatch):
    """The option reaches the model that trains (a spy stands in for the swap: Triton itself is tested in
    test_kernels.py, and interpreted training would take minutes)."""
    root = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    swapped = []
    monkeypatch.setattr(kernels, "INTERPRET", True)  # passes the device check, as on CUDA
    monkeypatch.setattr(trainer_module, "use_depthwise", lambda model, impl: swapped.append((model, impl)) or 13)
    train(tiny_cfg(root, tmp_path / "t", depthwise="triton", max_steps=1, resolution=32))
    assert len(swapped) == 1 and swapped[0][1] == "triton"
    assert sum(p.numel() for p in swapped[0][0].parameters()) > 0
    train(tiny_cfg(root, tmp_path / "u", max_steps=1, resolution=32))
    assert swapped[1][1] == "conv"  # PyTorch's own by default


def test_compile_options_reach_torch_compile_and_need_compile(tmp_path, monkeypatch):
    """--compile-tuning passes Inductor's coordinate-descent tuning to torch.compile (a spy stands in: a real tuned
    compile takes minutes), plain --compile passes no options, --compile-cudagraphs is Inductor's
    ``triton.cudagraphs`` (reduce-overhead; a CUDA run only, below), and either option alone is refused."""
    root = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    calls, asked = [], []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or model)
    real_options = trainer_module.inductor_options
    monkeypatch.setattr(trainer_module, "inductor_options", lambda *a: asked.append(a) or real_options(*a))
    train(tiny_cfg(root, tmp_path / "t", compile=True, compile_tuning=True, max_steps=1, resolution=32))
    train(tiny_cfg(root, tmp_path / "u", compile=True, max_steps=1, resolution=32))
    assert calls == [{"options": {"coordinate_descent_tuning": True}}, {"options": None}]
    assert asked == [(True, False), (False, False)]  # (tuning, cudagraphs), in that order, from the run's config
    both = trainer_module.inductor_options(True, True)
    assert both == {"coordinate_descent_tuning": True, "triton.cudagraphs": True}
    assert trainer_module.inductor_options(False, True) == {"triton.cudagraphs": True}
    for name in ("compile_tuning", "compile_cudagraphs"):
        with pytest.raises(ConfigError, match=f"^{name} needs --compile"):
            tiny_cfg(root, tmp_path / "v", **{name: True}).validate()


def test_compile_cudagraphs_is_refused_with_several_processes_and_off_cuda(tmp_path):
    """Inductor's CUDA graphs are untried under DDP here, and on a CPU Inductor would quietly run without them: both
    are refused before anything is built; one CUDA process is allowed."""
    cfg = tiny_cfg(tmp_path, tmp_path / "o", compile=True, compile_cudagraphs=True)
    with pytest.raises(ConfigError, match="^compile_cudagraphs is not allowed with several processes"):
        trainer_module._Run(cfg, DistEnv(world_size=2))._settings()
    with pytest.raises(ConfigError, match="^compile_cudagraphs is not allowed on cpu: CUDA graphs need a CUDA"):
        trainer_module._Run(cfg, DistEnv())._settings()
    trainer_module._Run(cfg, DistEnv(device=torch.device("cuda")))._settings()  # settings only: no CUDA call


# --- reliability: SIGKILL and resume ------------------------------------------------------------------------------


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--alpha",
        "0.25",
        "--resolution",
        "128",
        "--batch-size",
        "8",
        "--epochs",
        "3",
        "--workers",
        "0",
        "--threads",
        "1",
        "--deterministic",
        "--optimizer",
        "rmsprop",
        "--lr",
        "0.01",
        "--ema-decay",
        "0.9",
        "--save-every",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(the data, the folder of an uninterrupted `_train_args` run on it, without --save-every): the reference both
    stop-and-resume tests compare with. One run serves both: a checkpoint changes no weight or metric (the resumes
    are held to that), so the SIGKILL test's run, which saves every 2 steps, ends as this one does."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    data = copy_subset(tmp / "d", CLASSES4[:2], 40, 8)  # 10 steps per epoch, 30 in all
    ref = cli([a for a in _train_args(data, tmp / "ref") if a not in ("--save-every", "2")])
    assert ref.returncode == 0, ref.stderr
    return data, tmp / "ref"


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path, uninterrupted):
    data, ref_out = uninterrupted
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mobilenets", *_train_args(data, run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.split("-")[1]) >= 8 for p in (run / "checkpoints").glob("ckpt-*.pt")):
            proc.send_signal(signal.SIGKILL)  # mid-epoch 1, possibly in the middle of writing the next checkpoint
            break
        time.sleep(0.002)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "summary.json").exists()
    resumed = cli(_train_args(data, run, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr
    a = read_state_dict(ref_out / "model" / "model.safetensors")  # EMA weights, so EMA state resumed too
    b = read_state_dict(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] and summary["global_steps"] == 30
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # the epoch cut by the kill reports what the uninterrupted run's did: its totals came with the checkpoint
    ref_rows = [json.loads(x) for x in (ref_out / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(rows, ref_rows, strict=True):
        for key in ("train_images", "train_steps", "train_loss", "train_top1", "val_top1"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-12), (mine["epoch"], key)


@pytest.mark.slow
def test_sigterm_stops_at_a_step_with_its_checkpoint_and_the_resume_is_bit_identical(tmp_path, uninterrupted):
    """SIGTERM (a scheduler's preemption) in the middle of epoch 2: the run stops at that step's end, saves a
    checkpoint there (none is due: no --save-every) and exits 143 with one line; the resume loses no step and ends
    bit-identical to an uninterrupted run. With Python's default the process died, back to epoch 1's checkpoint."""
    data, ref_out = uninterrupted
    run = tmp_path / "run"
    args = [a for a in _train_args(data, run) if a not in ("--save-every", "2")]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([sys.executable, "-m", "mobilenets", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (run / "checkpoints" / "ckpt-000000010.pt").exists():  # epoch 1's: epoch 2 is under way
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.002)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    step = int(last.split("stopped after step ")[1].split(",")[0])
    assert last.startswith("mobilenets train: terminated by SIGTERM (stopped after step") and "--resume auto" in last
    assert "Traceback" not in err and "SIGTERM: stopping at the end of this step" in err
    assert 10 < step < 30 and (run / "checkpoints" / f"ckpt-{step:09d}.pt").is_file(), (step, err)
    assert not (run / "summary.json").exists()
    resumed = cli([*args, "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run / "summary.json").read_text())  # from the step it stopped at, not epoch 1's end
    assert summary["resumed_from"].endswith(f"ckpt-{step:09d}.pt") and summary["global_steps"] == 30
    a = read_state_dict(ref_out / "model" / "model.safetensors")
    b = read_state_dict(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for mine, theirs in zip(rows, ref_rows, strict=True):
        assert mine["val_top1"] == theirs["val_top1"] and mine["train_loss"] == pytest.approx(theirs["train_loss"])


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
    return found


@pytest.mark.slow
def test_sigterm_to_the_whole_job_stops_at_a_step_with_dataloader_workers(tmp_path):
    """Slurm (a job step's processes) and systemd (a unit's control group) send SIGTERM to every process of the job,
    DataLoader workers included. torch's worker handler ends a worker on a SIGTERM from anyone but its parent, and
    the main process then failed with "DataLoader worker ... is killed by signal: Terminated" (a traceback, status 1)
    instead of stopping at the step's end with its checkpoint. The workers now leave that SIGTERM to the main
    process and keep serving batches until it stops."""
    if not Path("/proc/self/stat").exists() or not hasattr(signal, "sigwaitinfo"):
        pytest.skip("needs /proc and sigwaitinfo (Linux)")
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 40, 8)  # 10 steps per epoch
    run = tmp_path / "run"
    args = _train_args(data, run, "--resolution", "64", "--workers", "2", "--save-every", "0", "--cache", "off")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([sys.executable, "-m", "mobilenets", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:  # fmt: skip
        deadline, sent = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None:
            # epoch 2 under way, with its workers started: the signal reaches them as it reaches the main process
            if (run / "checkpoints" / "ckpt-000000010.pt").exists() and len(_children(proc.pid)) == 2:
                os.killpg(proc.pid, signal.SIGTERM)
                sent = True
                break
            time.sleep(0.002)
        err = proc.communicate(timeout=120)[1]
    assert sent, err
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "killed by signal" not in err, err
    step = int(err.strip().splitlines()[-1].split("stopped after step ")[1].split(",")[0])
    assert 10 < step < 30 and (run / "checkpoints" / f"ckpt-{step:09d}.pt").is_file(), (step, err)


class _WorkerPids(torch.utils.data.Dataset):
    """Each item is the pid of the process that loaded it."""

    def __len__(self) -> int:
        return 200

    def __getitem__(self, index: int) -> int:
        return os.getpid()


def test_stoppable_loader_workers_outlive_another_process_s_sigterm_and_end_on_the_main_process_s():
    """`StoppableLoader`'s workers go on serving batches after a SIGTERM from another process (a scheduler's, sent
    to every process of the job), which torch's worker handler ended them on; the main process's SIGTERM (what the
    DataLoader's ``terminate`` of a worker that does not end sends, and Python's at exit) still ends them, status 0."""
    from mobilenets.stopping import StoppableLoader

    if not hasattr(signal, "sigwaitinfo"):
        pytest.skip("no sigwaitinfo here (macOS): StoppableLoader is an ordinary DataLoader")
    it = iter(StoppableLoader(_WorkerPids(), batch_size=4, num_workers=2))
    pids = {int(next(it)[0]), int(next(it)[0])}  # worker 0's and worker 1's first batches
    assert len(pids) == 2 and os.getpid() not in pids
    subprocess.run(["kill", "-TERM", *map(str, pids)], check=True)
    assert len(list(it)) == 48  # the rest of the epoch
    it = iter(StoppableLoader(_WorkerPids(), batch_size=4, num_workers=2))
    next(it)
    workers = list(it._workers)
    for w in workers:
        os.kill(w.pid, signal.SIGTERM)
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    # a caller's own worker_init_fn still runs in each worker
    it = iter(StoppableLoader(_WorkerMark(), batch_size=4, num_workers=2, worker_init_fn=_mark_worker))
    assert {int(next(it)[0]), int(next(it)[0])} == {1, 2}


def test_stoppable_loader_forks_its_workers_whatever_the_default_start_method(monkeypatch):
    """Python 3.14 makes forkserver the default start method on Linux: DataLoader workers would then be sent the
    dataset pickled each epoch (a train split's in-memory cache copied into every worker) instead of sharing it by
    fork. The trainer's loaders fork where the platform can; a caller's own context is kept."""
    import multiprocessing

    from mobilenets.stopping import StoppableLoader

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "forkserver")
    loader = StoppableLoader(_WorkerPids(), batch_size=4, num_workers=1)
    assert loader.multiprocessing_context.get_start_method() == "fork"
    assert list(iter(loader))[0].numel() == 4  # its worker serves batches
    spawn = multiprocessing.get_context("spawn")
    assert StoppableLoader(_WorkerPids(), num_workers=1, multiprocessing_context=spawn).multiprocessing_context is spawn
    assert StoppableLoader(_WorkerPids(), num_workers=0).multiprocessing_context is None  # no workers: no context
    monkeypatch.setattr(sys, "platform", "darwin")  # lists fork too, but spawn is its default: left to it
    assert StoppableLoader(_WorkerPids(), num_workers=1).multiprocessing_context is None


class _WorkerMark(torch.utils.data.Dataset):
    """Each item is the mark `_mark_worker` left in the worker that loaded it (0: none)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> int:
        return int(os.environ.get("MOBILENETS_TEST_WORKER_MARK", "0"))


def _mark_worker(worker_id: int) -> None:
    os.environ["MOBILENETS_TEST_WORKER_MARK"] = str(worker_id + 1)


def test_sigterm_during_an_epochs_evaluation_stops_after_its_checkpoint(tmp_path, monkeypatch):
    """A SIGTERM while epoch 1 is scored (in this process: `train` installs the handler) lets the epoch end as due,
    its metrics row and a checkpoint of its end written though --checkpoint-every 2 would skip it; then `Terminated`.
    The resume trains epoch 2 only and matches an uninterrupted run."""
    from mobilenets.stopping import Terminated

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here: train leaves it alone")
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    kw = dict(epochs=2, checkpoint_every=2, deterministic=True, resolution=32)
    train(tiny_cfg(data, tmp_path / "ref", **kw))
    real = trainer_module._Run._validate

    def scored_then_terminated(self, amp_dtype):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks: the evaluation goes on
        return real(self, amp_dtype)

    with monkeypatch.context() as m:
        m.setattr(trainer_module._Run, "_validate", scored_then_terminated)
        with pytest.raises(Terminated, match="stopped after step 4,"):
            train(tiny_cfg(data, tmp_path / "run", **kw))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.pt")] == ["ckpt-000000004.pt"]
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1]
    summary = train(tiny_cfg(data, tmp_path / "run", resume="auto", **kw))
    assert summary["global_steps"] == 8 and summary["resumed_from"].endswith("ckpt-000000004.pt")
    a = read_state_dict(tmp_path / "ref" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _sigterm_during_step(monkeypatch, step: int) -> None:
    """SIGTERM to this process while optimizer step ``step`` (1-based, as checkpoints count) is under way."""
    from mobilenets import engine

    real = engine.train_step

    def train_step(model, images, labels, ctx, global_step):
        if global_step + 1 == step:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks: the step goes on
        return real(model, images, labels, ctx, global_step)

    monkeypatch.setattr(engine, "train_step", train_step)


def test_a_max_steps_stop_mid_epoch_is_said_and_recorded_as_part_of_an_epoch(tmp_path, capsys):
    """--max-steps 6 at 4 steps per epoch stops in epoch 2: its line read "epoch 2/3: train loss ..." like a finished
    epoch's, and nothing in metrics.jsonl or summary.json told the partial epoch from a whole one. The line, the
    row (``stopped_at_step``) and the summary (``last_epoch_stopped_at_step``) now say where it stopped; a resume
    that trains the epoch to its end writes it as a whole one."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 2)
    kw = dict(epochs=3, resolution=32, quiet=False)
    summary = train(tiny_cfg(data, tmp_path / "r", max_steps=6, **kw))
    err = capsys.readouterr().err
    assert re.search(r"^epoch 1/3: train loss", err, re.M) and "epoch 1/3 (" not in err, err
    assert re.search(r"^epoch 2/3 \(stopped at step 2 of 4, --max-steps\): train loss", err, re.M), err

    def rows() -> list:
        lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
        return [(row["epoch"], row["stopped_at_step"]) for row in map(json.loads, lines)]

    assert rows() == [(1, None), (2, 2)] and summary["last_epoch_stopped_at_step"] == 2
    again = train(tiny_cfg(data, tmp_path / "r", max_steps=6, resume="auto", **kw))  # nothing left: the same
    assert rows() == [(1, None), (2, 2)] and again["last_epoch_stopped_at_step"] == 2
    done = train(tiny_cfg(data, tmp_path / "r", max_steps=8, resume="auto", **kw))  # epoch 2 to its end
    assert rows() == [(1, None), (2, None)] and done["last_epoch_stopped_at_step"] is None
    assert "stopped at step" not in capsys.readouterr().err


def test_a_resumed_epoch_reports_the_unreadable_files_met_before_its_stop(tmp_path):
    """An epoch stopped mid-way and resumed reported only the unreadable files met after the resume (1 of 4 in a
    user's run): the checkpoint's totals carry the files found so far, so the epoch's row and the summary name them
    all, as the uninterrupted run does."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 10, 2)
    for c in CLASSES4[:2]:
        for k in range(3):
            (data / "train" / c / f"broken{k}.jpg").write_bytes(b"not a jpeg")
    kw = dict(epochs=1, resolution=32, batch_size=4, deterministic=True)  # 26 files: 6 steps (2 images left out)

    def skipped(run: str) -> tuple:
        (row,) = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        return row["skipped_train"]["count"], sorted(row["skipped_train"]["first"]), summary["skipped_files"]["train"]

    train(tiny_cfg(data, tmp_path / "whole", **kw))
    train(tiny_cfg(data, tmp_path / "cut", max_steps=3, **kw))
    before = skipped("cut")[0]
    train(tiny_cfg(data, tmp_path / "cut", resume="auto", **kw))
    whole = skipped("whole")
    assert whole[0] >= 4 and 0 < before < whole[0], (before, whole)  # some met before the stop, some after
    assert skipped("cut") == whole


def test_an_epoch_gathers_its_unreadable_files_once(tmp_path, monkeypatch):
    """The epoch's totals gather every process's unreadable files (a collective under DDP); the epoch's report then
    gathered the same list a second time. One gather per epoch for training and one per evaluation, and the report
    names the same files."""
    from mobilenets import engine

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 6, 2)
    for c in CLASSES4[:2]:
        (data / "train" / c / "broken.jpg").write_bytes(b"not a jpeg")
    calls = []
    real = engine.gather_objects
    monkeypatch.setattr(engine, "gather_objects", lambda obj, env: calls.append(obj) or real(obj, env))
    s = train(tiny_cfg(data, tmp_path / "r", epochs=2, resolution=32, batch_size=4))
    assert len(calls) == 2 * 2, calls  # per epoch: the training totals' gather, the evaluation's
    assert s["skipped_files"]["train"]["count"] == 2
    assert sorted(Path(f.split(": ")[0]).name for f in s["skipped_files"]["train"]["first"]) == ["broken.jpg"] * 2
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_train"]["count"] for r in rows] == [2, 2]


def test_the_first_line_counts_the_readable_training_images(tmp_path, capsys):
    """A user with 2 corrupt JPEGs among 22 files read "on 22 images", though 20 were trained on. Where every file
    has been read before the first step (the memory cache, the device path) the line counts the readable images and
    says how many files were not; otherwise it says files, as the unreadable ones are known only from the epoch."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 10, 2)
    for c in CLASSES4[:2]:
        (data / "train" / c / "broken.jpg").write_bytes(b"not a jpeg")
    said = {}
    for mode in ({"cache": "on"}, {"data_on_device": True}, {"cache": "off"}):
        s = train(tiny_cfg(data, tmp_path / str(mode), resolution=32, batch_size=4, max_steps=1, quiet=False, **mode))
        said[next(iter(mode.values()))] = capsys.readouterr().err
        if mode.get("cache") != "off":
            assert s["cache"]["train"]["unreadable"] == 2, s["cache"]
    for held in ("on", True):
        assert " on 20 images (2 unreadable files skipped) / 2 classes," in said[held], said[held]
    assert " on 22 image files / 2 classes," in said["off"], said["off"]
    (data / "train" / CLASSES4[0] / "broken.jpg").unlink()
    train(tiny_cfg(data, tmp_path / "one", resolution=32, batch_size=4, max_steps=1, quiet=False, cache="on"))
    assert " on 20 images (1 unreadable file skipped) / 2 classes," in capsys.readouterr().err


def test_quiet_hides_progress_but_not_warnings_errors_or_the_result(tmp_path, capsys):
    """--quiet printed nothing at all: not the result line, nor the warning that --freeze-backbone without --init
    trains a head on random features. It hides progress and information only."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 2)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--alpha", "0.25", "--resolution", "32", "--batch-size",
            "4", "--max-steps", "1", "--workers", "0", "--threads", "1", "--freeze-backbone", "--quiet"]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr()
    (result,) = said.out.splitlines()
    assert result.startswith("best val top-1 ") and result.endswith(f"weights in {out / 'model'}"), result
    (warning,) = said.err.splitlines()  # no "training ..." line, no epoch line
    assert warning.startswith("warning: --freeze-backbone without --init trains only the head"), said.err
    assert main(["train", "--data", str(tmp_path / "none"), *args[3:]]) == 2
    said = capsys.readouterr()
    assert said.out == "" and said.err == f"mobilenets train: error: {tmp_path / 'none'}: dataset folder not found\n"


def test_images_a_batch_size_leaves_unused_are_said_with_one_that_uses_them(tmp_path, capsys):
    """drop_last keeps every step's batch full: 100 images at the default 64 trained 64 an epoch, silently. A run
    that leaves a sizable share of its images out says how many, once, with a --batch-size that uses them; fewer
    images than one batch names the option too."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 10, 2)  # 20 images: at 8, 2 batches and 4 unused
    train(tiny_cfg(data, tmp_path / "r", resolution=32, max_steps=1, quiet=False))
    err = capsys.readouterr().err
    note = ("note: 4 of the 20 training images go unused each epoch (--batch-size 8 makes 2 full batches, the rest "
            "is dropped): --batch-size 5 uses them all")  # fmt: skip
    assert err.count(note) == 1, err
    train(tiny_cfg(data, tmp_path / "r10", resolution=32, batch_size=10, max_steps=1, quiet=False))
    assert "unused" not in capsys.readouterr().err
    with pytest.raises(DataError, match=r"20 images, fewer than one batch of 32 \(give --batch-size 20 or less\)$"):
        train(tiny_cfg(data, tmp_path / "r32", resolution=32, batch_size=32, max_steps=1))
    assert not (tmp_path / "r32").exists()


def test_the_unused_images_note_counts_the_images_the_sampler_draws_from(tmp_path, capsys):
    """From the re-read: with --data-on-device the sampler draws from the readable images only, but the note counted
    every file: 12 readable of 16 at batch 6 fill 2 batches exactly, and it said 4 went unused."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 6, 2)  # 12 readable + 4 junk
    for i, cls in enumerate(CLASSES4[:2] * 2):
        (data / "train" / cls / f"junk{i}.jpg").write_bytes(b"not an image")
    train(tiny_cfg(data, tmp_path / "r", resolution=32, batch_size=6, max_steps=1, data_on_device=True,
                   device="cpu", quiet=False))  # fmt: skip
    err = capsys.readouterr().err
    assert "skipped 4 train" in err and "go unused each epoch" not in err, err


def test_init_of_an_unlabelled_imagenet_head_for_other_folders_replaces_it_and_says_so(tmp_path):
    """From the re-read: unlabelled 1000-way weights name ImageNet's classes (`known_labels`); for 1000 unrelated
    folders the head was kept and the note said "its labels are the folders". Its rows score ImageNet's classes, so
    it is replaced, as for labelled weights of other classes."""
    net = MobileNetV1(alpha=0.25, num_classes=1000).eval()
    save(net, tmp_path / "w")
    said: list[str] = []
    model = build_model(TrainConfig(data="x", out="y", init=str(tmp_path / "w")).validate(),
                        [f"c{i:04d}" for i in range(1000)], said.append)  # fmt: skip
    assert [s for s in said if "replaced by a new 1000-way head" in s], said
    assert not [s for s in said if "keeps its rows" in s], said
    assert not torch.equal(model.classifier.weight, net.classifier.weight)


def test_sigterm_at_the_max_steps_step_stops_where_the_run_would_have_ended(tmp_path, monkeypatch):
    """--max-steps 6 ends a run in epoch 2 (4 steps per epoch) with that epoch's partial row and a checkpoint. A
    SIGTERM during step 6 stopped at once with a checkpoint and no row, so the resume (nothing left to train) gave
    the summary epoch 1's final scores. The epoch's end now writes its row and checkpoint, then the run stops; the
    resume ends as the uninterrupted run."""
    from mobilenets.stopping import Terminated

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here: train leaves it alone")
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)
    kw = dict(epochs=3, max_steps=6, deterministic=True, resolution=32)
    ref = train(tiny_cfg(data, tmp_path / "ref", **kw))
    with monkeypatch.context() as m:
        _sigterm_during_step(m, 6)
        with pytest.raises(Terminated, match="stopped after step 6,"):
            train(tiny_cfg(data, tmp_path / "run", **kw))
    summary = train(tiny_cfg(data, tmp_path / "run", resume="auto", **kw))
    rows = [[json.loads(x)[k] for k in ("epoch", "global_step", "val_loss")]
            for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    ref_rows = [[json.loads(x)[k] for k in ("epoch", "global_step", "val_loss")]
                for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert rows == ref_rows and [r[1] for r in rows] == [4, 6]
    assert summary["global_steps"] == 6 and summary["final_val_loss"] == ref["final_val_loss"]
    a = read_state_dict(tmp_path / "ref" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("step", [6, 4], ids=["mid-epoch", "epoch-end"])
def test_a_sigterm_landing_just_after_the_run_looked_is_acted_on_at_the_next_step(tmp_path, monkeypatch, step):
    """A SIGTERM that lands just after the run looked whether to save a checkpoint at a step (none due) is acted on
    at the next step, with its checkpoint. The run looked again after every step to decide whether to stop, so such
    a signal ended the run at this step, without its checkpoint, saying one was saved there (the resume went back
    to the last one due). Here the signal's handler runs right after that look at ``step``: step 6 mid-epoch, step
    4 at epoch 1's end (4 steps per epoch, no checkpoint due there with --checkpoint-every 2)."""
    from mobilenets.stopping import StopRequest, Terminated

    class LandsAfterTheRead(StopRequest):
        armed = False  # set during ``step``

        @property
        def requested(self) -> bool:
            seen = self._requested
            if LandsAfterTheRead.armed and not seen:  # what the handler does, as the read returns
                self._requested, LandsAfterTheRead.armed = True, False
            return seen

        @requested.setter
        def requested(self, value: bool) -> None:
            self._requested = value

    from mobilenets import engine

    real = engine.train_step

    def train_step(model, images, labels, ctx, global_step):
        LandsAfterTheRead.armed = LandsAfterTheRead.armed or global_step + 1 == step
        return real(model, images, labels, ctx, global_step)

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    monkeypatch.setattr(trainer_module, "StopRequest", LandsAfterTheRead)
    monkeypatch.setattr(engine, "train_step", train_step)
    with pytest.raises(Terminated) as stopped:
        train(tiny_cfg(data, tmp_path / "run", epochs=2, checkpoint_every=2, deterministic=True, resolution=32))
    at = int(str(stopped.value).split("stopped after step ")[1].split(",")[0])
    assert at == step + 1  # the next step's end
    assert (tmp_path / "run" / "checkpoints" / f"ckpt-{at:09d}.pt").is_file()


def test_a_sigterm_during_a_checkpoint_due_at_a_step_stops_at_that_step(tmp_path, monkeypatch):
    """A SIGTERM that lands while --save-every's checkpoint of step 6 is taken stops the run at step 6: that
    checkpoint holds it. (Reading the stop request once, before the checkpoint, went on to step 7.)"""
    from mobilenets.stopping import Terminated

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here: train leaves it alone")
    real = trainer_module._Run._checkpoint

    def checkpoint(self, epoch, step_in_epoch, totals=None):
        if self.global_step_now == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks: the checkpoint goes on
        return real(self, epoch, step_in_epoch, totals)

    monkeypatch.setattr(trainer_module._Run, "_checkpoint", checkpoint)
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    with pytest.raises(Terminated, match="stopped after step 6,"):
        train(tiny_cfg(data, tmp_path / "run", epochs=3, save_every=3, checkpoint_every=3, resolution=32))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))[-1] == "ckpt-000000006.pt"


def test_sigterm_is_deferred_only_inside_the_training_loop_and_a_second_one_stops_at_once(capsys):
    """`stopping.sigterm_stops`: outside `deferred` (set-up) SIGTERM raises `Terminated` (a KeyboardInterrupt, so
    every Ctrl-C path applies); inside, the first only asks; a second raises; Python's default is back afterwards."""
    from mobilenets.stopping import StopRequest, Terminated, sigterm_stops

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM is not at its default here: sigterm_stops leaves it alone")
    with sigterm_stops(StopRequest()) as stop:
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # or the signals below would end pytest
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; the sleep is cut short
        messages = []
        with stop.deferred(messages.append):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.requested and messages and "second SIGTERM stops at once" in messages[0]
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
        assert isinstance(Terminated(), KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_stops_leaves_a_caller_s_own_sigterm_handling_alone():
    """A caller that ignores or handles SIGTERM keeps its choice (`sigterm_stops` installs nothing over it), and a
    thread other than the main one, where Python can install no handler, runs the block as it is. After the
    training loop's `deferred` block a SIGTERM is acted on at once again."""
    import threading

    from mobilenets.stopping import StopRequest, Terminated, sigterm_stops

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_stops(StopRequest()):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    ran = []

    def block() -> None:
        with sigterm_stops(StopRequest()) as stop:
            ran.append(stop)

    thread = threading.Thread(target=block)
    thread.start()
    thread.join()
    assert len(ran) == 1 and signal.getsignal(signal.SIGTERM) == previous
    stop = StopRequest()
    with stop.deferred(ran.append):
        pass
    with pytest.raises(Terminated):  # out of the training loop again (saving, tearing down): a SIGTERM stops at once
        stop.handle(signal.SIGTERM, None)
    assert not stop.requested


def test_the_sigterm_handler_says_so_past_sys_stderr_which_it_may_have_interrupted(capfd, monkeypatch):
    """The handler runs between two bytecodes of the main thread, maybe inside ``sys.stderr.write`` (a progress
    line): ``print`` there raises "reentrant call", and the run failed from the handler with a traceback instead of
    stopping with a checkpoint. What the run's handler says (`stopping.say_now`) goes to file descriptor 2 at once."""
    from mobilenets.stopping import StopRequest

    class Busy:  # sys.stderr in the middle of a write
        def write(self, text):
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

        def flush(self):
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    stop = StopRequest()
    with stop.deferred():
        monkeypatch.setattr(sys, "stderr", Busy())
        stop.handle(signal.SIGTERM, None)
        monkeypatch.undo()
    assert stop.requested
    assert "SIGTERM: stopping at the end of this step" in capfd.readouterr().err


def test_under_torchrun_a_sigterm_soon_after_the_first_is_the_same_request(monkeypatch):
    """Slurm and systemd send SIGTERM to every process of the job, and torchrun forwards the one it got: each worker
    gets two, milliseconds apart, and the second one stopped it at once, without the checkpoint the first asked
    for. Within `stopping.TOGETHER_S` of the first, another SIGTERM is now the same request; later, it still stops
    at once; in one process (``together_s`` 0, torchrun's forwarding absent) a second one always does."""
    from mobilenets import stopping
    from mobilenets.stopping import TOGETHER_S, StopRequest, Terminated

    now = [100.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: now[0])
    messages: list[str] = []
    stop = StopRequest()
    with stop.deferred(messages.append, together_s=TOGETHER_S):
        stop.handle(signal.SIGTERM, None)
        now[0] += TOGETHER_S * 0.99
        stop.handle(signal.SIGTERM, None)  # the same request: it neither raises nor says it again
        assert stop.requested and len(messages) == 1 and "every process agrees on" in messages[0]
        now[0] += TOGETHER_S * 0.02
        with pytest.raises(Terminated):
            stop.handle(signal.SIGTERM, None)
    stop = StopRequest()
    with stop.deferred(messages.append):
        stop.handle(signal.SIGTERM, None)
        with pytest.raises(Terminated):
            stop.handle(signal.SIGTERM, None)  # no time at all after the first


def test_a_run_folder_stays_locked_until_a_checkpoint_still_being_written_lands(tmp_path, monkeypatch):
    """After a second Ctrl-C the run lets go of its folder while `settle` left a checkpoint write going on: a
    resume started then took the folder and removed that write's staging file as a killed write's, so the
    checkpoint was lost. The folder's lock now goes with the write's end (`CheckpointWriter.then`)."""
    from mobilenets.atomic import FolderInUse, lock_folder

    gate = _hold_checkpoint_writes(monkeypatch)
    run = trainer_module._Run(tiny_cfg(tmp_path, tmp_path / "o"), DistEnv())
    (tmp_path / "o").mkdir()
    run.held = lock_folder(tmp_path / "o")
    run.checkpoints.save({"model": {}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 3,
                          "rng": {}, "config": {}})  # fmt: skip
    run.release()
    with pytest.raises(FolderInUse):
        lock_folder(tmp_path / "o")
    gate.set()
    run.checkpoints.wait()
    assert (tmp_path / "o" / "checkpoints" / "ckpt-000000003.pt").is_file()
    lock_folder(tmp_path / "o").close()  # free now
    released = []
    run.checkpoints.then(lambda: released.append(1))  # no write under way: at once
    assert released == [1]


def test_checkpoint_every_epochs_and_resume_from_an_older_one(tmp_path):
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    kw = dict(epochs=3, checkpoint_every=2, keep_checkpoints=5, deterministic=True, resolution=32)
    train(tiny_cfg(data, tmp_path / "a", **kw))
    ckpts = sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts == ["ckpt-000000008.pt", "ckpt-000000012.pt"]  # epochs 2 and 3 (the last), not 1
    # killed after epoch 3's metrics line but before its checkpoint: resuming redoes epoch 3 from epoch 2's
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "ckpt-000000012.pt").unlink()
    (tmp_path / "b" / "summary.json").unlink()
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    # model_best/ saved at epoch 3, after the checkpoint resumed from: its weights are kept as the best to beat
    best_cfg = tmp_path / "b" / "model_best" / "config.json"
    config = json.loads(best_cfg.read_text())
    config["provenance"].update(epoch=3, val_top1=1.5, val_top5=1.0)  # a score no redo of epoch 3 can beat
    best_cfg.write_text(json.dumps(config))
    best_bytes = (tmp_path / "b" / "model_best" / "model.safetensors").read_bytes()
    summary = train(tiny_cfg(data, tmp_path / "b", resume="auto", **kw))
    assert summary["resumed_from"] and summary["global_steps"] == 12
    assert (summary["best_top1"], summary["best_top5"], summary["best_epoch"]) == (1.5, 1.0, 3)
    assert (tmp_path / "b" / "model_best" / "model.safetensors").read_bytes() == best_bytes
    # one saved at or before the checkpoint's epoch is already in the checkpoint's best: not adopted
    config["provenance"].update(epoch=2)
    (tmp_path / "c" / "model_best" / "config.json").write_text(json.dumps(config))
    assert train(tiny_cfg(data, tmp_path / "c", resume="auto", **kw))["best_top1"] <= 1.0
    rows = [json.loads(x)["epoch"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
    a = read_state_dict(tmp_path / "a" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_never_trains_past_or_below_where_the_run_stopped(tmp_path):
    """A run stopped by --max-steps resumed with the same limit trains no step more; one killed before its summary
    gets a full summary (scored once again); a resume shorter than its checkpoint (--epochs, --max-steps) is one
    error, since model/ would hold a later state than the summary says."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    kw = dict(epochs=3, deterministic=True, resolution=32, max_steps=6)
    first = train(tiny_cfg(data, tmp_path / "a", **kw))
    assert first["global_steps"] == 6
    weights = (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    rows = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert [json.loads(x)["global_step"] for x in rows.splitlines()] == [4, 6]  # epoch 2's row: its 2 steps
    finished = train(tiny_cfg(data, tmp_path / "a", resume="auto", **kw))  # resumed once finished: nothing to do
    (tmp_path / "a" / "summary.json").unlink()  # killed after its last checkpoint, before the summary
    again = train(tiny_cfg(data, tmp_path / "a", resume="auto", **kw))
    ckpts = sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("ckpt-*.pt"))
    assert again["global_steps"] == 6 and ckpts[-1] == "ckpt-000000006.pt"
    assert (tmp_path / "a" / "model" / "model.safetensors").read_bytes() == weights
    assert again["val_images"] == 8 and set(again["per_class_top1"]) == set(CLASSES4[:2])
    # the final scores are step 6's, as epoch 2's row (which the resumes trained nothing to replace) is kept: it was
    # dropped as an epoch to redo, and the summary then gave epoch 1's (the top-1 alone could not tell them apart)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == rows
    for summary in (finished, again):
        assert (summary["final_top1"], summary["final_val_loss"]) == (first["final_top1"], first["final_val_loss"])
    with pytest.raises(ConfigError, match=r"epochs=1 is not allowed: .*ckpt-000000006.pt was saved in epoch 2; "
                                          r"resume with --epochs 2 or more"):  # fmt: skip
        train(tiny_cfg(data, tmp_path / "a", resume="auto", **{**kw, "epochs": 1}))
    with pytest.raises(ConfigError, match="max_steps=5 is not allowed: .* saved at step 6"):
        train(tiny_cfg(data, tmp_path / "a", resume="auto", **{**kw, "max_steps": 5}))
    assert train(tiny_cfg(data, tmp_path / "a", resume="auto", **{**kw, "max_steps": 8}))["global_steps"] == 8


def test_a_resume_with_nothing_to_train_does_not_keep_an_earlier_finish_s_summary(tmp_path):
    """A run finished at epoch 1, lengthened to 2 and killed after its last checkpoint but before the new summary,
    still holds epoch 1's summary.json: the resume that finishes it scores the saved model, not that older one's
    per-class top-1 and image count."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)
    kw = dict(deterministic=True, resolution=32)
    train(tiny_cfg(data, tmp_path / "a", epochs=1, **kw))
    older = json.loads((tmp_path / "a" / "summary.json").read_text())
    older.update(val_images=999, per_class_top1=dict.fromkeys(CLASSES4[:2], 0.123))  # what epoch 1's model scored
    longer = train(tiny_cfg(data, tmp_path / "a", epochs=2, resume="auto", **kw))
    (tmp_path / "a" / "summary.json").write_text(json.dumps(older))  # killed before the new summary
    again = train(tiny_cfg(data, tmp_path / "a", epochs=2, resume="auto", **kw))
    assert again["global_steps"] == longer["global_steps"] and again["val_images"] == 8
    assert again["per_class_top1"] == longer["per_class_top1"]


def test_train_gives_the_process_wide_torch_settings_back(tmp_path, monkeypatch):
    """A run sets threads, deterministic algorithms, cuDNN's autotuner and cuBLAS's workspace for the whole process;
    a `train()` call from Python leaves them as they were, a failed one too (they used to stay changed)."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    train(tiny_cfg(data, tmp_path / "a", deterministic=True, resolution=32, threads=threads + 1))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is True
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.use_deterministic_algorithms(True)  # the caller's own setting: kept, warn_only too
    try:
        with pytest.raises(DataError):
            train(tiny_cfg(tmp_path / "missing", tmp_path / "b", deterministic=True, resolution=32))
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_resume_skips_damaged_and_unfinished_checkpoints(tmp_path):
    good = {"model": {}, "optimizer": {}, "epoch": 1, "step_in_epoch": 0, "global_step": 5, "rng": {}, "config": {}}
    save_checkpoint(tmp_path, good, keep=5)
    save_checkpoint(tmp_path, {**good, "global_step": 9}, keep=5)
    newest = tmp_path / "checkpoints" / "ckpt-000000009.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # torn file (as if written without the atomic rename)
    (tmp_path / "checkpoints" / ".ckpt-000000012.pt.abc.tmp").write_bytes(b"partial")  # an unfinished atomic write
    path, state = find_resume(tmp_path)
    assert path.name == "ckpt-000000005.pt" and state["global_step"] == 5
    for step in (10, 11, 12):
        save_checkpoint(tmp_path, {**good, "global_step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*")) == [
        "ckpt-000000011.pt",
        "ckpt-000000012.pt",
    ]


def test_background_checkpoints_land_in_order_with_their_own_state(tmp_path):
    """Each save() is written with the values it was given, newest last, keeping ``keep``; the state dict's
    _metadata (module versions, which BatchNorm's loading reads) survives the host copy."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    writer = CheckpointWriter(tmp_path, keep=2)
    weights = []
    for step in (1, 2, 3):
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        opt.step()  # in place: the live tensors change between saves
        weights.append(model[0].weight.detach().clone())
        writer.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": step, "step_in_epoch": 0,
                     "global_step": step, "rng": {}, "config": {}})  # fmt: skip
    writer.wait()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*"))
    assert kept == ["ckpt-000000002.pt", "ckpt-000000003.pt"]
    for step in (2, 3):
        state = load_checkpoint(tmp_path / "checkpoints" / f"ckpt-00000000{step}.pt")
        assert torch.equal(state["model"]["0.weight"], weights[step - 1])
        assert state["optimizer"]["state"][0]["momentum_buffer"].shape == weights[0].shape
    copied = host_copy(model.state_dict())
    assert copied._metadata == model.state_dict()._metadata
    assert copied["0.weight"].data_ptr() != model[0].weight.data_ptr()
    model.load_state_dict(copied)


def _hold_checkpoint_writes(monkeypatch):
    """Hold `CheckpointWriter`'s writes back until the returned event is set (at most 10 s)."""
    import threading

    from mobilenets import engine

    gate = threading.Event()
    real = engine.save_checkpoint

    def slow_save(run_dir, state, keep):
        gate.wait(10)
        return real(run_dir, state, keep)

    monkeypatch.setattr(engine, "save_checkpoint", slow_save)
    return gate


def test_background_checkpoint_snapshot_is_taken_before_save_returns(tmp_path, monkeypatch):
    """Writes held back until after the live tensors change still store the values of the save() call."""
    gate = _hold_checkpoint_writes(monkeypatch)
    weight = torch.zeros(3)
    writer = CheckpointWriter(tmp_path, keep=2)
    writer.save({"model": {"w": weight}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 7,
                 "rng": {}, "config": {}})  # fmt: skip
    weight.add_(5.0)
    gate.set()
    writer.wait()
    assert torch.equal(load_checkpoint(checkpoint := tmp_path / "checkpoints" / "ckpt-000000007.pt")["model"]["w"],
                       torch.zeros(3)), checkpoint  # fmt: skip


def test_background_checkpoint_write_error_is_raised_by_the_next_call(tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run folder should be")
    writer = CheckpointWriter(blocker, keep=2)
    state = {"model": {}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 1, "rng": {}, "config": {}}
    writer.save(state)
    with pytest.raises(OSError, match="run"):
        writer.wait()
    writer.wait()  # reported once
    writer.save(state)
    writer.settle()  # leaving a failed run: said, not raised over the run's own error
    assert "the last checkpoint write failed too" in capsys.readouterr().err


def test_ctrl_c_before_the_checkpoint_writer_starts_is_no_write_error(tmp_path, capsys, monkeypatch):
    """Ctrl-C landing in save() before its thread started: leaving the run says nothing of a failed write (it was
    'cannot join thread before it is started'), and the next save writes."""
    import threading

    def interrupted(self):
        raise KeyboardInterrupt

    writer = CheckpointWriter(tmp_path, keep=2)
    state = {"model": {}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 1, "rng": {}, "config": {}}
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            writer.save(state)
    writer.settle()
    assert "failed" not in capsys.readouterr().err
    writer.save(state)
    writer.wait()
    assert (tmp_path / "checkpoints" / "ckpt-000000001.pt").is_file()


def test_a_second_ctrl_c_while_a_checkpoint_is_written_lets_the_write_finish(tmp_path, capsys, monkeypatch):
    """Ctrl-C, then Ctrl-C again while `settle` waited for the checkpoint under way: Python 3.11's join(), interrupted,
    marked the running writer thread as ended, so the interpreter exited without waiting for it (the checkpoint was
    lost, its staging file left) and the run said 'the last checkpoint write failed too: ' with no reason."""
    import threading

    gate = _hold_checkpoint_writes(monkeypatch)
    writer = CheckpointWriter(tmp_path, keep=2)
    writer.save({"model": {}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 4, "rng": {},
                 "config": {}})  # fmt: skip
    # the second Ctrl-C, while the write is held back: a real SIGINT, as only a signal wakes a blocked wait
    threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
    writer.settle()
    assert "interrupted again" in capsys.readouterr().err
    assert writer._thread.is_alive()  # what the interpreter waits for before it exits
    gate.set()
    writer.wait()
    assert (tmp_path / "checkpoints" / "ckpt-000000004.pt").is_file()


# --- distributed ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    """Same global batch (16 = 2 x 8), same samples per step, same per-sample augmentation.

    BatchNorm is kept in eval mode (--freeze-bn): in train mode each replica would normalise with its own half-batch
    statistics, which differ from the full batch's (SyncBatchNorm would fix that, but PyTorch has it only on GPU).
    Dropout is off (its random mask depends on the batch layout). What remains is floating-point summation order
    (DDP averages two half-batch gradients; one process sums the whole batch), so parameters agree to ~1e-6, not
    bit-for-bit: tolerance 1e-4 absolute.
    """
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 32, 4)
    common = [
        "--alpha",
        "0.25",
        "--resolution",
        "64",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--freeze-bn",
        "--dropout",
        "0",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--schedule",
        "constant",
        "--quiet",
        "--data",
        str(data),
    ]
    one = cli(["train", "--out", str(tmp_path / "one"), *common])
    assert one.returncode == 0, one.stderr
    two = torchrun(["train", "--out", str(tmp_path / "two"), *common])
    assert two.returncode == 0, two.stderr[-3000:]
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s2["global_steps"] == 8
    a = read_state_dict(tmp_path / "one" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "two" / "model" / "model.safetensors")
    torch.manual_seed(TrainConfig.seed)  # the runs' initial weights (the trainer seeds, then builds the model), not
    init = create_model("mobilenet_v1_025", resolution=64, num_classes=2).state_dict()  # those of this test's order
    moved = max(float((a[k] - init[k]).abs().max()) for k in a if a[k].is_floating_point())
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"DDP vs one process: max |param diff| {diff:.3g}; max |param change| from init {moved:.3g}")
    assert moved > 5e-4  # training really changed the weights (1.2e-3 measured), so agreement is not trivial
    assert diff < 1e-6, diff  # (7e-10 measured: gloo's sums in another order)


@pytest.mark.slow
def test_two_process_validation_scores_the_weights_it_saves(tmp_path):
    """Each process's step updates its own BatchNorm statistics with its own half-batch, and each process's EMA
    averages its own (DDP re-broadcasts rank 0's only into the model it wraps): the sharded evaluation must still
    score rank 0's EMA, the model saved in model/, on every image."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 8)
    out = tmp_path / "run"
    launcher = tmp_path / "launch.py"
    launcher.write_text(FINISH_PROBE)
    proc = torchrun(["train", "--out", str(out), "--data", str(data), "--alpha", "0.25", "--resolution", "64",
                     "--batch-size", "8", "--epochs", "1", "--ema-decay", "0.5", "--workers", "0", "--threads", "1",
                     "--quiet"], program=(str(launcher),))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every process returned once rank 0 had written the run's files: rank 1 used to return at once, before them
    assert Path(f"{out}.done-1").read_text() == Path(f"{out}.done-0").read_text() == "curves.png model summary.json"
    summary = json.loads((out / "summary.json").read_text())
    again = evaluate_weights(out / "model", data / "val", batch_size=4, workers=0, threads=1)
    assert summary["val_images"] == again["images"] == 16
    assert summary["final_val_loss"] == pytest.approx(again["loss"], rel=1e-6, abs=1e-6)


# `mobilenets` with each process writing, once the command returned, which of the run's last files it sees to
# OUT.done-RANK
FINISH_PROBE = """
import os, sys
from pathlib import Path
from mobilenets.cli import main

status = main(sys.argv[1:])
out = Path(sys.argv[sys.argv.index("--out") + 1])
seen = sorted(name for name in ("summary.json", "curves.png", "model") if (out / name).exists())
Path(f"{out}.done-{os.environ['RANK']}").write_text(" ".join(seen))
sys.exit(status)
"""


# `mobilenets` with each process writing a digest of its random state at every training forward of the dropout layer
# to OUT.rng-RANK: the state its dropout mask is drawn from
RNG_LOGGER = """
import hashlib, os, sys
import torch
from mobilenets import trainer
from mobilenets.cli import main

build = trainer.build_model

def logged(cfg, classes, say=lambda msg: None, **kw):
    model = build(cfg, classes, say, **kw)
    def record(module, _inputs):
        if module.training:
            with open(f"{cfg.out}.rng-{os.environ['RANK']}", "a") as f:
                f.write(hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest() + "\\n")
    model.head_drop.register_forward_pre_hook(record)
    return model

trainer.build_model = logged
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_each_process_draws_its_own_dropout_masks_and_a_resume_goes_on_with_them(tmp_path):
    """Every process was seeded alike (so that they build the same model) and then drew alike: each dropped the same
    units of its own images at every step. Each now has a stream of its own, which a mid-epoch checkpoint saves for
    each process, so a resume under torchrun stays bit-identical to the uninterrupted run."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 20, 2)  # 5 steps per epoch
    launcher = tmp_path / "launch.py"
    launcher.write_text(RNG_LOGGER)
    common = ["--data", str(data), "--alpha", "0.25", "--resolution", "32", "--batch-size", "8", "--epochs", "2",
              "--workers", "0", "--threads", "1", "--deterministic", "--dropout", "0.5", "--ema-decay", "0.9",
              "--save-every", "2", "--quiet"]  # fmt: skip
    ref, run = tmp_path / "ref", tmp_path / "run"
    for args in ([*common, "--out", str(ref)], [*common, "--out", str(run), "--max-steps", "7"],
                 [*common, "--out", str(run), "--resume", "auto"]):  # fmt: skip
        proc = torchrun(["train", *args], timeout=120, program=(str(launcher),))
        assert proc.returncode == 0, proc.stderr[-3000:]
    streams = [Path(f"{ref}.rng-{rank}").read_text().split() for rank in (0, 1)]
    assert len(streams[0]) == len(streams[1]) == 10
    assert all(a != b for a, b in zip(*streams, strict=True))  # no step draws the same masks on both processes
    assert [Path(f"{run}.rng-{rank}").read_text().split() for rank in (0, 1)] == streams  # stopped at step 7, resumed
    a = read_state_dict(ref / "model" / "model.safetensors")
    b = read_state_dict(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# `mobilenets` with each process writing its pid to OUT.pid-RANK, then after each optimizer step the steps it has
# done to OUT.step-RANK, and its exit status to OUT.status-RANK; the process of rank $PROBE_SLOW_END_RANK takes 3 s
# more to tear its run down, and the one of rank $PROBE_SIGTERM_AT_EPOCH_END_RANK sends itself SIGTERM as it starts
# epoch 1's end-of-epoch checkpoint
STEP_PROBE = """
import os, signal, sys, time
from pathlib import Path
from mobilenets import engine, trainer
from mobilenets.cli import main

out, rank = sys.argv[sys.argv.index("--out") + 1], os.environ["RANK"]

def write(name, text):
    Path(f"{out}.{name}-{rank}.tmp").write_text(text)
    os.replace(f"{out}.{name}-{rank}.tmp", f"{out}.{name}-{rank}")  # whole, for the test that polls it

write("pid", str(os.getpid()))
step = engine.train_step

def counted(model, images, labels, ctx, global_step):
    result = step(model, images, labels, ctx, global_step)
    write("step", str(global_step + 1))
    return result

engine.train_step = counted
if rank == os.environ.get("PROBE_SLOW_END_RANK"):
    cleanup = trainer.cleanup_distributed
    trainer.cleanup_distributed = lambda: (time.sleep(3), cleanup())
if rank == os.environ.get("PROBE_SIGTERM_AT_EPOCH_END_RANK"):
    checkpoint = trainer._Run._checkpoint

    def signalled(self, epoch, step_in_epoch, totals=None):
        if (epoch, step_in_epoch) == (1, 0):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks: the checkpoint goes on
        return checkpoint(self, epoch, step_in_epoch, totals)

    trainer._Run._checkpoint = signalled
status = main(sys.argv[1:])
write("status", str(status))
sys.exit(status)
"""


def _probed(run: Path, name: str, rank: int) -> int | None:
    """What `STEP_PROBE` wrote as ``name`` for process ``rank`` of the run in ``run``, None before it did."""
    path = Path(f"{run}.{name}-{rank}")
    return int(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module")
def torchrun_sigterm(tmp_path_factory):
    """A 2-process run to stop with SIGTERM (10 steps per epoch, 20 in all), and its uninterrupted reference:
    (its arguments but --out, the launcher, the reference's folder)."""
    tmp = tmp_path_factory.mktemp("sigterm")
    data = copy_subset(tmp / "d", CLASSES4[:2], 40, 2)
    launcher = tmp / "launch.py"
    launcher.write_text(STEP_PROBE)
    common = ["train", "--data", str(data), "--alpha", "0.25", "--resolution", "32", "--batch-size", "8",
              "--epochs", "2", "--workers", "0", "--threads", "1", "--deterministic", "--quiet"]  # fmt: skip
    ref = tmp / "ref"
    proc = torchrun([*common, "--out", str(ref)], timeout=120, program=(str(launcher),))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return common, launcher, ref


@pytest.mark.slow
# (rank 1 alone is signalled with rank 0 ending last: the same stop, and the case where torchrun's own SIGTERM to a
# process still ending mattered; a plain rank-1 case would add 6 s to the suite and test nothing more)
@pytest.mark.parametrize("to", ["torchrun", "every process", "rank 1, rank 0 ending last"])
def test_sigterm_under_torchrun_stops_every_process_after_one_step_with_its_checkpoint(torchrun_sigterm, tmp_path, to):
    """SIGTERM to a 2-process torchrun job during epoch 1: to torchrun (``kill``, Kubernetes' to a pod whose first
    process it is), which forwards it to each process; to rank 1 alone (one machine's of a job of several); to every
    process (Slurm's to a job step, systemd's to a unit), each then getting torchrun's too, milliseconds later, which
    is the same request, not a second one. Every process stopped at once, and the resume redid every step since the
    last checkpoint; now they agree on a step (`stopping.StopAgreement`), rank 0 saves a checkpoint of it, and each
    ends there with status 143 and its one line. The resume (run for Slurm's case only: it is the same wherever the
    signal came from) loses no step and ends bit-identical to an uninterrupted run. torchrun not signalled, once a
    process ends it sends SIGTERM to the others, still tearing down (a GPU process group's can take seconds): it is
    no second request (the last case: rank 0's teardown was cut short and its line lost the step)."""
    common, launcher, ref = torchrun_sigterm
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(launcher),
           *common, "--out", str(run)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    if to == "rank 1, rank 0 ending last":
        env["PROBE_SLOW_END_RANK"], to = "0", "rank 1"
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        deadline, seen = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            if (seen := _probed(run, "step", 0)) is not None and seen >= 3:
                workers = [_probed(run, "pid", rank) for rank in (0, 1)]
                if to != "rank 1":
                    proc.send_signal(signal.SIGTERM)
                for pid in {"torchrun": [], "rank 1": workers[1:], "every process": workers}[to]:
                    os.kill(pid, signal.SIGTERM)
                break
            time.sleep(0.002)
        try:
            err = proc.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"still running 120 s after SIGTERM: {proc.communicate()[1][-2000:]}")
    assert seen is not None and seen >= 3, err[-3000:]
    assert proc.returncode != 0  # torchrun's own (1): it reports its processes' 143 as their failure
    assert [_probed(run, "status", rank) for rank in (0, 1)] == [128 + signal.SIGTERM] * 2, err[-3000:]
    ends = [line for line in err.splitlines() if "terminated by SIGTERM" in line]
    assert len(ends) == 2 and sorted(line.startswith("[rank 1] mobilenets train: ") for line in ends) == [False, True]
    assert all("stopped after step " in line for line in ends), ends
    steps = {int(line.split("stopped after step ")[1].split(",")[0]) for line in ends}
    assert len(steps) == 1, ends  # the same step on both
    step = steps.pop()
    # each process stopped after that step, none went on to the next; none went through a traceback of ours
    assert seen < step < 20 and [_probed(run, "step", rank) for rank in (0, 1)] == [step, step], (seen, err)
    assert err.count("SIGTERM: stopping at the end of a step every process agrees on") == (1 if to == "rank 1" else 2)
    assert SRC not in err, err[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt"))[-1] == f"ckpt-{step:09d}.pt"
    assert not (run / "summary.json").exists()
    if to != "every process":
        return
    resumed = torchrun([*common, "--out", str(run), "--resume", "auto"], timeout=120, program=(str(launcher),))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith(f"ckpt-{step:09d}.pt") and summary["global_steps"] == 20
    a = read_state_dict(ref / "model" / "model.safetensors")
    b = read_state_dict(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["val_top1"], r["val_loss"]) for r in rows] == [
        (r["epoch"], r["val_top1"], r["val_loss"]) for r in ref_rows
    ]


@pytest.mark.slow
def test_sigterm_under_torchrun_during_an_epoch_end_checkpoint_stops_at_the_next_epoch_s_first_step(
    torchrun_sigterm, tmp_path, monkeypatch
):
    """A SIGTERM to rank 1 while epoch 1's end-of-epoch checkpoint is taken (after the epoch's blocking agreement)
    stops both processes at the end of epoch 2's first step (11), with its checkpoint. An epoch's first step read no
    agreement, as none had been launched since the epoch's end: the job went on to step 12. Now that step agrees at
    once (`stopping.StopAgreement.at_step_end`), every process alike. Rank 1 says so with its rank, and the resume
    from step 11 ends bit-identical to an uninterrupted run."""
    common, launcher, ref = torchrun_sigterm
    run = tmp_path / "run"
    monkeypatch.setenv("PROBE_SIGTERM_AT_EPOCH_END_RANK", "1")
    err = torchrun([*common, "--out", str(run)], timeout=120, program=(str(launcher),)).stderr
    assert [_probed(run, "status", rank) for rank in (0, 1)] == [128 + signal.SIGTERM] * 2, err[-3000:]
    ends = [line for line in err.splitlines() if "terminated by SIGTERM" in line]
    assert len(ends) == 2 and all("stopped after step 11," in line for line in ends), ends
    assert [_probed(run, "step", rank) for rank in (0, 1)] == [11, 11]  # neither trained step 12
    notices = [line for line in err.splitlines() if "SIGTERM: stopping at the end of a step every process" in line]
    assert len(notices) == 1 and notices[0].startswith("[rank 1] SIGTERM: "), notices
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt"))[-1] == "ckpt-000000011.pt"
    monkeypatch.delenv("PROBE_SIGTERM_AT_EPOCH_END_RANK")
    resumed = torchrun([*common, "--out", str(run), "--resume", "auto"], timeout=120, program=(str(launcher),))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["resumed_from"].endswith("ckpt-000000011.pt")
    a = read_state_dict(ref / "model" / "model.safetensors")
    b = read_state_dict(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_process_with_no_val_image_does_not_hang_the_others(tmp_path):
    """2 val images for 3 processes: the third scores none. Without an EMA the model under DDP was scored, whose first
    forward after training broadcasts rank 0's buffers, a collective that process never joined: the job hung."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 6, 1)
    out = tmp_path / "run"
    proc = torchrun(["train", "--out", str(out), "--data", str(data), "--alpha", "0.25", "--resolution", "32",
                     "--batch-size", "6", "--epochs", "1", "--workers", "0", "--threads", "1", "--quiet"],
                    nproc=3, timeout=90)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    again = evaluate_weights(out / "model", data / "val", batch_size=4, workers=0, threads=1)
    assert summary["val_images"] == again["images"] == 2
    assert summary["final_val_loss"] == pytest.approx(again["loss"], rel=1e-6, abs=1e-6)


@pytest.mark.slow
def test_eval_under_torchrun_counts_each_image_once_and_prints_once(tmp_path):
    """Every process used to score the whole split and print: the images (and images/s) counted twice, two reports."""
    data = copy_subset(tmp_path / "d", CLASSES4[:3], 1, 3) / "val"
    (data / CLASSES4[0] / "broken.jpg").write_bytes(b"not an image")
    weights = tmp_path / "w"
    save(create_model("mobilenet_v1_025", resolution=32, num_classes=3, labels=tuple(CLASSES4[:3])), weights)
    proc = torchrun(["eval", "--weights", str(weights), "--data", str(data), "--batch-size", "2", "--workers", "0",
                     "--threads", "1", "--json"], timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = json.loads(proc.stdout)  # one report
    alone = evaluate_weights(weights, data, batch_size=2, workers=0, threads=1)
    assert shared["images"] == alone["images"] == 9
    assert shared["skipped_files"]["count"] == alone["skipped_files"]["count"] == 1
    assert shared["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    assert shared["per_class_top1"] == pytest.approx(alone["per_class_top1"])


# --- bad data -----------------------------------------------------------------------------------------------------


def _odd_images(folder: Path, jpeg: Path) -> None:
    im = Image.open(jpeg).convert("RGB").resize((80, 60))
    im.convert("CMYK").save(folder / "cmyk.jpg")
    im.convert("L").save(folder / "gray.jpg")
    rgba = im.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    im.convert("P").save(folder / "palette.png")
    Image.new("I;16", (70, 50), 40000).save(folder / "sixteen.png")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[:300])
    (folder / "notes.jpg").write_text("this is not an image\n")


def test_bad_and_odd_files_train_to_the_end_and_are_reported(tmp_path, capsys):
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 6, 3)
    a = data / "train" / CLASSES4[0]
    _odd_images(a, next(a.iterdir()))
    (data / "val" / CLASSES4[1] / "broken.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    split = scan_split(data / "train")
    from mobilenets.data import train_transform

    ds = ImageFolderDataset(
        split, train_transform(create_model("mobilenet_v1_025", resolution=64).spec, 64, 0.5, (0.75, 1.33), True)
    )
    shapes = {Path(split.samples[i][0]).name: ds[i][0] for i in range(len(ds))}
    for name in ("cmyk.jpg", "gray.jpg", "alpha.png", "palette.png", "sixteen.png"):
        assert shapes[name].shape == (3, 64, 64), name
    for name in ("zero.jpg", "truncated.jpg", "notes.jpg"):
        assert shapes[name] is None, name
    # for training, a bad file's item is the next readable sample (its label), the bad file named beside it
    replaced = ImageFolderDataset(split, ds.transform, replace_bad=True)
    names = [Path(p).name for p, _ in split.samples]
    for i in range(len(split.samples)):
        img, label, met = replaced[i]
        assert img.shape == (3, 64, 64)
        if names[i] in ("zero.jpg", "truncated.jpg", "notes.jpg"):
            assert [j for j, _ in met] == [i]  # only its own file; others are reported in their own slots
            source = next(
                j % len(names) for j in range(i + 1, i + len(names)) if shapes[names[j % len(names)]] is not None
            )
            assert label == split.samples[source][1]
        else:
            assert met == []
    reasons = {}
    for cache in ("off", "on", "device"):
        mode = {"data_on_device": True} if cache == "device" else {"cache": cache}
        s = train(tiny_cfg(data, tmp_path / cache, epochs=2, batch_size=4, quiet=cache != "on", **mode))
        if cache == "on":  # the cache's count leaves the unreadable files out and says how many there are
            said = capsys.readouterr().err
            assert "; 3 unreadable, skipped where sampled" in said and "; 1 unreadable" in said, said
        bad = s["skipped_files"]
        reasons[cache] = bad["train"]["first"]  # path: reason, the same whichever way the images were held
        assert bad["train"]["count"] == 3 and bad["val"]["count"] == 1
        named = " ".join(bad["train"]["first"])
        assert all(n in named for n in ("zero.jpg", "truncated.jpg", "notes.jpg")) and "broken.JPEG" in " ".join(
            bad["val"]["first"]
        )
        assert s["epochs"] == 2
        rows = [json.loads(x) for x in (tmp_path / cache / "metrics.jsonl").read_text().splitlines()]
        assert [r["skipped_train"]["count"] for r in rows] == [3, 3]
        assert [r["train_images"] for r in rows] == [s["global_steps"] // 2 * 4] * 2  # every batch full
    assert reasons["off"] == reasons["on"] == reasons["device"]
    assert any("empty file" in r for r in reasons["on"])  # the decoder's reason, not a generic one


def test_bad_file_reasons_keep_the_why_and_drop_only_the_path(tmp_path):
    """A broken link's report says why ("No such file or directory", not the path again), and a class folder whose
    name holds ': ' keeps its reason whole, cached, uncached and on the device path alike."""
    from mobilenets.device_data import load_to_device
    from mobilenets.preprocess import eval_transform
    from mobilenets.spec import ModelSpec

    folder = tmp_path / "train" / "a: b"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(folder / "good.png")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    split = scan_split(tmp_path / "train")
    assert [Path(p).name for p, _ in split.samples] == ["gone.jpg", "good.png", "notes.jpg"]
    ds = ImageFolderDataset(split, eval_transform(ModelSpec(alpha=0.25), 32), cache_side=36)
    cached = ImageFolderDataset(split, ds.transform, cache_side=36)
    cached.build_cache()
    device = load_to_device(split.samples, 36, "cpu", threads=1, keep=False)
    for reasons in ([ds[i][2] for i in (0, 2)], [cached[i][2] for i in (0, 2)], [[r] for r in device.bad]):
        (gone, why_gone), (notes, why_notes) = reasons[0][0], reasons[1][0]
        assert (gone, notes) == (0, 2)
        assert why_gone == "No such file or directory", why_gone
        assert why_notes == "not a readable image (cannot identify image file)", why_notes  # not Pillow's path again


@pytest.mark.slow
def test_mostly_unreadable_files_do_not_stall_two_process_ddp(tmp_path):
    """Batches keep their size when files are bad, so both gloo ranks take every step: when a rank skipped a batch
    whose files were all unreadable, the other waited for it in the gradient all-reduce and the run hung."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 2, 2)
    for cls in CLASSES4[:2]:
        for k in range(10):
            (data / "train" / cls / f"zero{k:02d}.jpg").write_bytes(b"")
    proc = torchrun(["train", "--out", str(tmp_path / "run"), "--data", str(data), "--alpha", "0.25",
                     "--resolution", "32", "--batch-size", "4", "--epochs", "2", "--workers", "0", "--threads", "1",
                     "--quiet"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["skipped_files"]["train"]["count"] == 20
    assert summary["global_steps"] == 2 * (24 // 4)  # global batch 4: 6 full steps per epoch


def _spoil_every_file(folder: Path) -> None:
    for k, f in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        f.write_bytes(f.read_bytes()[:300] if k % 2 else b"this is not an image\n")  # truncated JPEGs, non-images


def test_a_train_split_with_no_readable_image_stops_before_saving_anything(tmp_path):
    """With every train file unreadable each batch came out empty: the run 'trained' at 0 img/s, saved its random
    weights as model/ and finished. It is one DataError naming the folder, however the images are held."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 1)
    _spoil_every_file(data / "train")
    for mode in ({"cache": "off"}, {"cache": "on"}, {"data_on_device": True}):
        out = tmp_path / str(mode)
        with pytest.raises(DataError, match=rf"^{data / 'train'}: no image could be read \(8 unreadable files; "
                                            r"first: .*\.JPEG: .*\); check the files"):  # fmt: skip
            train(tiny_cfg(data, out, resolution=32, batch_size=4, epochs=2))
        assert not (out / "model").exists() and not (out / "summary.json").exists()
    # a val split with none readable: its top-1 of 0 over no image was saved as the run's score
    data = copy_subset(tmp_path / "v", CLASSES4[:2], 4, 1)
    _spoil_every_file(data / "val")
    with pytest.raises(DataError, match=rf"^{data / 'val'}: no image could be read \(2 unreadable files; first: "):
        train(tiny_cfg(data, tmp_path / "val-run", resolution=32, batch_size=4, max_steps=1))
    assert not (tmp_path / "val-run" / "summary.json").exists()


@pytest.mark.slow
def test_a_train_split_with_no_readable_image_stops_every_ddp_process(tmp_path):
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 1)
    _spoil_every_file(data / "train")
    proc = torchrun(["train", "--out", str(tmp_path / "run"), "--data", str(data), "--alpha", "0.25",
                     "--resolution", "32", "--batch-size", "4", "--epochs", "2", "--workers", "0", "--threads", "1",
                     "--quiet"])  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.count("mobilenets train: error: ") == 2, proc.stderr[-3000:]  # each process, one line
    assert f"{data / 'train'}: no image could be read (8 unreadable files" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_dataset_structure_errors(tmp_path):
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 2, 1)
    with pytest.raises(DataError, match="missing split folder 'test'.*<images>\\)$"):
        scan_dataset(data, val_split="test")
    with pytest.raises(
        DataError, match=rf"missing split folder 'train' .*; it is a split folder itself: give --data {data}$"
    ):
        scan_dataset(data / "train")  # the split given for the dataset's root
    (data / "train" / "extra").mkdir()
    with pytest.raises(DataError, match="empty class folder"):
        scan_dataset(data)
    shutil.copy(next((data / "train" / CLASSES4[0]).iterdir()), data / "train" / "extra" / "x.jpg")
    with pytest.raises(DataError, match=r"train and val classes differ \(only in train: \['extra'\]; only in val: -\); "
                       rf"--classes {CLASSES4[0]} {CLASSES4[1]} trains on the 2 both hold$"):  # fmt: skip
        scan_dataset(data)
    shutil.copytree(data / "train", data / "val2")  # the splits named as given (it said "train and val" always)
    with pytest.raises(DataError, match=r"d: val and val2 classes differ \(only in val: -; only in val2: \['extra'\]"):
        scan_dataset(data, train_split="val", val_split="val2")
    with pytest.raises(DataError, match=rf"classes='{CLASSES4[0]}' is not allowed: each class may be named once"):
        scan_dataset(data, classes=[CLASSES4[0], CLASSES4[0], CLASSES4[1]])
    with pytest.raises(DataError, match=r"dataset folder not found \(it is a file\)"):
        scan_dataset(data / "train" / "extra" / "x.jpg")
    (tmp_path / "flat").mkdir()
    shutil.copy(data / "train" / "extra" / "x.jpg", tmp_path / "flat" / "x.jpg")  # images, but no class folders
    with pytest.raises(DataError, match=r"flat: no class folders \(expected .*flat/<class>/<image files>\)"):
        scan_split(tmp_path / "flat")


def test_the_classes_hint_quotes_names_and_shortens_a_long_list():
    """The hint for splits whose classes differ spelled every shared class out: ImageNet's splits missing one class
    made a line of 999 names, and a folder name with a space split into two when pasted."""
    from mobilenets.data import MAX_CLASSES_SHOWN, classes_option

    assert classes_option(["cat", "red fox"]) == "--classes cat 'red fox'"
    many = [f"n{i:08d}" for i in range(999)]
    assert classes_option(many) == "--classes with the 999 class names (first: n00000000, n00000001, n00000002, ...)"
    assert classes_option(many[:MAX_CLASSES_SHOWN]).count(" n") == MAX_CLASSES_SHOWN


def test_bad_file_reports_count_every_file_and_name_the_first_ten():
    """A split of thousands of broken files reports their count and ten of them (per process, then merged), not
    thousands of lines."""
    from mobilenets.data import BadFiles

    here, there = BadFiles(), BadFiles()
    for i in range(7):
        here.add(f"a{i}.jpg", "empty file")
        there.add(f"b{i}.jpg", "empty file")
    here.merge(there)
    named = [f"a{i}.jpg: empty file" for i in range(7)] + [f"b{i}.jpg: empty file" for i in range(3)]
    assert here.to_dict() == {"count": 14, "first": named}
    for name in "cdef":
        there.add(f"{name}.jpg", "truncated")
    assert there.count == 11 and len(there.first) == 10 and there.first[-1] == "e.jpg: truncated"


def test_images_in_class_subfolders_are_found_as_imagefolder_finds_them(tmp_path):
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 2, 1)
    folder = data / "train" / CLASSES4[0]
    first = sorted(folder.iterdir())[0]
    (folder / "more" / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    shutil.copy(first, folder / "more" / "deeper" / "n.jpg")
    shutil.copy(first, folder / ".hidden" / "h.jpg")
    split = scan_split(data / "train")
    mine = [Path(p).relative_to(folder).as_posix() for p, label in split.samples if label == 0]
    assert mine == sorted([first.name, sorted(folder.glob("*.JPEG"))[1].name, "more/deeper/n.jpg"]), mine


def test_files_not_named_as_images_are_left_out_and_named_not_counted_as_images(tmp_path, capsys):
    """A class folder's notes.txt or Windows' Thumbs.db is no sample: it was counted among the run's images ("on 311
    images"), then read and reported as unreadable every epoch. Images of any extension case are samples; the files
    left out are named in one note and in summary.json; a class folder holding only such files says so."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 2)
    folder = data / "train" / CLASSES4[0]
    first = sorted(folder.iterdir())[0]
    for name in ("upper.JPG", "mixed.Jpeg", "pic.webp"):
        Image.open(first).convert("RGB").save(folder / name, format="WEBP" if name.endswith("webp") else "JPEG")
    (folder / "notes.txt").write_text("labelled by bob\n")
    (data / "train" / CLASSES4[1] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbnails")
    split = scan_split(data / "train")
    names = sorted(Path(p).name for p, _ in split.samples)
    assert len(names) == 11 and {"upper.JPG", "mixed.Jpeg", "pic.webp"} <= set(names), names
    assert sorted(Path(p).name for p in split.left_out) == ["Thumbs.db", "notes.txt"]
    summary = train(tiny_cfg(data, tmp_path / "run", quiet=False))
    assert summary["left_out_files"]["train"]["count"] == 2
    assert summary["skipped_files"]["train"]["count"] == 0  # nothing read as an image and found unreadable
    err = capsys.readouterr().err
    assert "note: 2 file(s) in train left out, not named as images" in err and "notes.txt" in err
    assert "on 11 images / 2 classes" in err
    # eval says it too, in its text output as in its JSON (it was in the JSON alone)
    assert main(["eval", "--weights", str(tmp_path / "run"), "--data", str(data / "train"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert f"note: 2 file(s) in {data / 'train'} left out, not named as images" in out and "Thumbs.db" in out
    (data / "train" / "docs").mkdir()
    (data / "train" / "docs" / "README.md").write_text("not a class")
    with pytest.raises(DataError, match=r"docs: no image files in this class folder, only 1 other file\(s\) \(first: "
                       r"README.md\)"):  # fmt: skip
        scan_split(data / "train")


def test_a_run_that_took_non_images_for_samples_resumes_on_the_images(tmp_path, monkeypatch, capsys):
    """A run checkpointed before files not named as images were left out listed its notes.txt as a sample: its
    resume was refused as 'a run on other images (13 images there, 12 here)', the run's work lost to an upgrade. It
    goes on, with a note; a folder whose images did change is still refused."""
    from mobilenets import data as data_module

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 6, 2)
    (data / "train" / CLASSES4[0] / "notes.txt").write_text("labelled by bob\n")
    with monkeypatch.context() as m:
        m.setattr(data_module, "is_image_name", lambda path: True)  # every visible file a sample, as then
        train(tiny_cfg(data, tmp_path / "run", epochs=1))
    summary = train(tiny_cfg(data, tmp_path / "run", epochs=2, resume="auto", quiet=False))
    assert summary["epochs"] == 2
    assert "note: the checkpoint's run took 1 file(s) not named as images for samples" in capsys.readouterr().err
    (data / "train" / CLASSES4[0] / "notes.txt").rename(data / "train" / CLASSES4[0] / "extra.jpg")
    with pytest.raises(ConfigError, match="was saved by a run on other images"):
        train(tiny_cfg(data, tmp_path / "run", epochs=3, resume="auto"))


def test_a_resume_path_that_is_not_a_checkpoint_file_says_what_it_is(tmp_path):
    """--resume runs/x (the run folder) or a mistyped ckpt-N.pt both read "resume must be 'auto' or a checkpoint
    file", the folder one with no word that --resume auto is what takes a folder's newest."""
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"checkpoint file \(a folder; --resume auto takes the newest in --out\)$"):
        TrainConfig(resume=str(tmp_path / "run")).validate()
    with pytest.raises(ConfigError, match=r"checkpoint file \(no such file\)$"):
        TrainConfig(resume=str(tmp_path / "run" / "ckpt-000000009.pt")).validate()


@pytest.mark.parametrize("phase", ["exit handler", "module teardown"])
@pytest.mark.parametrize("status", [0, 143])
def test_sigterm_after_the_command_ends_with_its_status(status, phase):
    """A SIGTERM (a scheduler's preemption, ``kill``) reaching ``mobilenets train`` after the run wrote its files,
    during Python's second or more of clean-up, ended the process as killed (-15, status 143, no word): a scheduler
    requeued a finished run. It ends with the command's status, its output kept. The clean-up is stood in for by an
    exit handler, or by an object freed with its module, after Python has reset its signal handlers."""
    slow = "atexit.register(time.sleep, 30)" if phase == "exit handler" else "sys.modules['__main__'].keep = Slow()"
    code = f"""
import atexit, sys, time
import mobilenets.cli
class Slow:
    def __del__(self):
        time.sleep(3)
def run():
    print("weights in runs/x/model")
    {slow}
    print("ready", file=sys.stderr, flush=True)
    return {status}
mobilenets.cli.main = run
from mobilenets.launch import main
sys.exit(main())
"""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    assert proc.stderr.readline() == "ready\n"
    time.sleep(1)  # main has returned: the process is in its clean-up
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == status, err[-2000:]
    assert out == "weights in runs/x/model\n" and err == ""


def test_a_linked_folder_loop_lists_each_file_once(tmp_path):
    """A link inside a class folder back to the class folder (a loop) is walked once: each image is one sample,
    not one per nesting level the system allows (41 of each)."""
    folder = tmp_path / "train" / "a"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(folder / "x.png")
    Image.new("RGB", (8, 6)).save(folder / "sub" / "y.png")
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    names = sorted(Path(p).relative_to(folder).as_posix() for p, _ in scan_split(tmp_path / "train").samples)
    assert names == ["sub/y.png", "x.png"], names
    # a link to a folder elsewhere is followed, as ImageFolder follows it (images gathered by linking their folders)
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "elsewhere" / "z.png")
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    names = sorted(Path(p).relative_to(folder).as_posix() for p, _ in scan_split(tmp_path / "train").samples)
    assert names == ["linked/z.png", "sub/y.png", "x.png"], names


def test_init_weights_decide_and_config_yaml_records_what_trained(tmp_path):
    """--init without a width or activation asked: config.yaml holds the weights' model, alpha and act, and the same
    command resumes against it."""
    import yaml

    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    save(MobileNetV1(alpha=0.5, num_classes=2, act="relu6").eval(), tmp_path / "w")
    cfg = tiny_cfg(data, tmp_path / "r", init=str(tmp_path / "w"), alpha=None, resolution=32, max_steps=1)
    train(cfg)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (saved["model"], saved["alpha"], saved["act"]) == ("mobilenet_v1_050_32", 0.5, "relu6")
    again = train(dataclasses.replace(cfg, max_steps=2, resume="auto"))
    assert again["global_steps"] == 2 and load(tmp_path / "r" / "model").spec.alpha == 0.5
    # a checkpoint written before config.yaml recorded the weights' values holds what was asked: it still resumes
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = torch.load(ckpt, weights_only=False)
    state["config"].update(model="mobilenet_v1_100", alpha=0.25, act="relu")
    torch.save(state, ckpt)
    assert train(dataclasses.replace(cfg, epochs=2, max_steps=3, resume="auto"))["global_steps"] == 3
    # and the run's config.yaml, which names the weights' model, alpha and act beside init, is a recipe
    assert train(resolve(str(tmp_path / "r" / "config.yaml"), out=str(tmp_path / "again"), max_steps=1, resume=None))


def test_a_resume_of_an_init_run_does_not_need_the_init_folder(tmp_path, capsys):
    """The checkpoint holds every weight and the model's spec, so a resume builds the model from it: a resume whose
    --init folder was moved or removed since failed with "/tmp/x: no such file or folder". It now goes on (said), and
    ends as the uninterrupted run; with no checkpoint to resume, the missing folder is an error naming the option,
    before the run folder is made."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    w = tmp_path / "w"
    save(create_model("mobilenet_v1_025", resolution=32, num_classes=2, labels=tuple(CLASSES4[:2])), w)
    kw = dict(init=str(w), alpha=None, resolution=None, epochs=2, deterministic=True)
    ref = train(tiny_cfg(data, tmp_path / "ref", max_steps=2, **kw))
    train(tiny_cfg(data, tmp_path / "run", max_steps=1, **kw))
    shutil.rmtree(w)
    summary = train(tiny_cfg(data, tmp_path / "run", max_steps=2, resume="auto", quiet=False, **kw))
    err = capsys.readouterr().err
    assert f"note: init={str(w)!r} is gone: the resume does not need it, " in err, err
    assert summary["global_steps"] == 2 and summary["final_val_loss"] == ref["final_val_loss"]
    a = read_state_dict(tmp_path / "ref" / "model" / "model.safetensors")
    b = read_state_dict(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for resume in (None, "auto"):  # a fresh run, and a resume with no checkpoint: the folder is needed
        with pytest.raises(ConfigError, match=f"^init={re.escape(repr(str(w)))}: no such file or folder$"):
            train(tiny_cfg(data, tmp_path / "new", max_steps=1, resume=resume, **kw))
        assert not (tmp_path / "new").exists()


def test_init_refuses_a_model_width_or_activation_it_does_not_have_before_the_folder_is_made(tmp_path, capsys):
    """``train --init w075 --alpha 0.5`` trained alpha 0.75 with a note --quiet hid, where ``create_model(...,
    weights=w075)`` refuses the same mismatch (WeightsError). An explicit value that disagrees is now one error line
    naming both values, before the run folder is made; one that agrees trains; a recipe's (configs/*.yaml say
    ``act: relu``, for fresh models) is left to the weights with a note, so fine-tuning relu6 weights with it works."""
    from mobilenets.weights import WeightsError

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    w = tmp_path / "w075"
    save(create_model("mobilenet_v1_075", num_classes=2, act="relu6").eval(), w)
    with pytest.raises(WeightsError, match="weights are for alpha=0.75, the requested model has alpha=0.5"):
        create_model("mobilenet_v1_050", weights=w)
    base = ["train", "--data", str(data), "--init", str(w), "--resolution", "32", "--batch-size", "8", "--workers",
            "0", "--threads", "1", "--max-steps", "1"]  # fmt: skip
    for asked, error in [
        (["--alpha", "0.5"], "alpha=0.5 is not allowed with init="),
        (["--model", "mobilenet_v1_050"], "model='mobilenet_v1_050' (alpha=0.5) is not allowed with init="),
        (["--act", "relu"], "act='relu' is not allowed with init="),
    ]:
        assert main([*base, *asked, "--quiet", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        theirs = "act='relu6'" if "--act" in asked else "alpha=0.75"
        assert error in err and f"those weights are for {theirs}" in err and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists()
    assert main([*base, "--alpha", "0.75", "--act", "relu6", "--quiet", "--out", str(tmp_path / "same")]) == 0
    recipe = REPO / "configs" / "modern.yaml"
    assert load_yaml(recipe)["act"] == "relu"  # what the recipe says, for a fresh model
    assert main(["train", "--config", str(recipe), *base[1:], "--epochs", "1", "--out", str(tmp_path / "recipe")]) == 0
    err = capsys.readouterr().err
    assert f"note: {recipe}: act='relu' does not apply to --init weights: training their act='relu6'" in err, err
    assert load(tmp_path / "recipe" / "model").spec.act == "relu6"


def test_init_takes_a_width_given_beside_a_model_name_as_create_model_does(tmp_path):
    """--alpha overrides the width --model names (a fresh run of ``--model mobilenet_v1_shallow --alpha 0.5`` trains
    the shallow model at 0.5), and ``create_model(name, alpha=..., weights=DIR)`` compares the name with it applied.
    --init of such weights with that same pair was refused as ``model='mobilenet_v1_shallow' (alpha=1.0)``; the
    name is now held to what ``--alpha`` leaves it (its variant and depth multiplier), and a wrong ``--alpha`` is
    named once, as itself."""
    from mobilenets.trainer import check_init_agrees

    w = tmp_path / "shallow050"
    save(create_model("mobilenet_v1_shallow", alpha=0.5, num_classes=2).eval(), w)
    assert create_model("mobilenet_v1_shallow", alpha=0.5, weights=w).spec.variant == "shallow"
    saved = read_config(w)["spec"]
    check_init_agrees(TrainConfig(init=str(w), model="mobilenet_v1_shallow", alpha=0.5), saved)  # no error
    for asked, error in [
        (dict(model="mobilenet_v1_shallow", alpha=0.75), "alpha=0.75 is not allowed with init="),
        (dict(model="mobilenet_v1_050"), "model='mobilenet_v1_050' (variant='standard') is not allowed with init="),
        (dict(model="mobilenet_v1_075", alpha=0.5), "model='mobilenet_v1_075' (variant='standard') is not allowed "),
    ]:
        with pytest.raises(ConfigError, match=re.escape(error)):
            check_init_agrees(TrainConfig(init=str(w), **asked), saved)
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 1)
    args = ["train", "--data", str(data), "--init", str(w), "--model", "mobilenet_v1_shallow", "--alpha", "0.5",
            "--resolution", "32", "--batch-size", "4", "--workers", "0", "--threads", "1", "--max-steps", "1",
            "--quiet", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    assert load(tmp_path / "run" / "model").spec.variant == "shallow"


def test_init_trains_at_the_resolution_a_model_name_states_as_a_fresh_run_does(tmp_path, capsys):
    """Resolution changes no weight (the paper's rho), so ``--init w224 --model mobilenet_v1_025_32`` fine-tunes at
    32, as a fresh run of that name trains at 32: it trained at the weights' own resolution, silently. An explicit
    --resolution wins over the name's, as in a fresh run; a name that states none (``mobilenet_v1_025``, the default
    ``mobilenet_v1_100``) leaves the weights' own. The resolution is recorded, so the same command resumes, another
    name's is refused on resume, and the run's config.yaml is a recipe for it; so is a recipe's model name."""
    import yaml

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 4, 1)
    save(MobileNetV1(alpha=0.25, resolution=64, num_classes=2).eval(), tmp_path / "w")
    init = dict(init=str(tmp_path / "w"), alpha=None, resolution=None, batch_size=4, max_steps=1)

    def trained(out: str, **kw) -> int:
        train(tiny_cfg(data, tmp_path / out, **{**init, **kw}))
        return load(tmp_path / out / "model").spec.resolution

    fresh = tiny_cfg(data, tmp_path / "fresh", model="mobilenet_v1_025_32", resolution=None)
    assert build_model(fresh, CLASSES4[:2]).spec.resolution == 32  # what the name means without --init
    assert trained("named", model="mobilenet_v1_025_32") == 32
    assert load(tmp_path / "named" / "model").spec.name == "mobilenet_v1_025_32"
    assert yaml.safe_load((tmp_path / "named" / "config.yaml").read_text())["resolution"] == 32
    assert trained("pair", model="0.25-48") == 48
    assert trained("explicit", model="mobilenet_v1_025_32", resolution=40) == 40  # --resolution wins, as fresh
    assert trained("unstated", model="mobilenet_v1_025") == 64 and trained("default") == 64
    # the same command resumes; another name's resolution does not continue this run's checkpoint
    cfg = tiny_cfg(data, tmp_path / "named", **{**init, "model": "mobilenet_v1_025_32"})
    assert train(dataclasses.replace(cfg, max_steps=2, resume="auto"))["global_steps"] == 2
    with pytest.raises(ConfigError, match="resolution=32 there, 48 here"):
        train(tiny_cfg(data, tmp_path / "named", **{**init, "model": "mobilenet_v1_025_48", "resume": "auto"}))
    # a run started so before, which trained at the weights' 64, is not continued at 32 by the same command
    ckpt = sorted((tmp_path / "named" / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = torch.load(ckpt, weights_only=False)
    state["config"]["resolution"] = None
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="resolution=None there, 32 here"):
        train(dataclasses.replace(cfg, max_steps=3, resume="auto"))
    # the run's config.yaml is a recipe for what it trained, and a recipe's model name states its resolution too
    again = resolve(str(tmp_path / "named" / "config.yaml"), out=str(tmp_path / "again"), resume=None)
    assert again.resolution == 32
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: mobilenet_v1_025_48\n")
    assert resolve(str(recipe), init=str(tmp_path / "w")).resolution == 48
    assert resolve(str(recipe), init=str(tmp_path / "w"), resolution=40).resolution == 40


def test_a_resume_says_what_it_changes(tmp_path, capsys):
    """A longer schedule and another thread count are allowed on resume, and each is said: the schedule stretches
    and the run is no longer bit-identical to an uninterrupted one."""
    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    cfg = tiny_cfg(data, tmp_path / "r", resolution=32, epochs=2, schedule="cosine", max_steps=1, quiet=False)
    train(cfg)
    capsys.readouterr()
    try:
        train(dataclasses.replace(cfg, epochs=3, max_steps=2, threads=2, resume="auto"))
    finally:
        torch.set_num_threads(1)
    err = capsys.readouterr().err
    assert "epochs=3 here, 2 when checkpointed: the cosine learning-rate schedule is stretched" in err
    assert "warm-up" not in err  # no warm-up in this recipe
    assert "2 thread(s) here, 1 when checkpointed: the summation order changes" in err
    train(dataclasses.replace(cfg, epochs=3, max_steps=3, resume="auto"))  # back to 1 thread: said again
    assert "1 thread(s) here, 2 when checkpointed" in capsys.readouterr().err
    train(dataclasses.replace(cfg, epochs=3, max_steps=4, resume="auto"))
    assert "note:" not in capsys.readouterr().err  # the same settings: nothing to say
    train(dataclasses.replace(cfg, out=str(tmp_path / "w"), warmup_epochs=5.0))
    assert "epochs=2 ends inside the 5-epoch warm-up: the learning rate only rises," in capsys.readouterr().err


def test_a_resume_to_more_epochs_of_the_exponential_schedule_says_nothing_stretched(tmp_path, capsys):
    """The paper recipe's exponential decay steps every ``lr_decay_epochs`` whatever ``--epochs`` is: a resume that
    asks for more epochs goes on at the rates of an uninterrupted run (its weights equal, with --deterministic), so
    a note saying the schedule is stretched would be false."""
    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    cfg = tiny_cfg(data, tmp_path / "r", resolution=32, epochs=1, schedule="exponential", lr_decay_epochs=0.5,
                   deterministic=True, quiet=False)  # fmt: skip
    train(cfg)
    capsys.readouterr()
    train(dataclasses.replace(cfg, epochs=2, resume="auto"))
    assert "stretched" not in capsys.readouterr().err
    train(dataclasses.replace(cfg, epochs=2, out=str(tmp_path / "whole")))
    resumed, whole = (load(tmp_path / d / "model").state_dict() for d in ("r", "whole"))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_classes_given_comma_separated_pick_those_folders(tmp_path):
    data = copy_subset(tmp_path / "d", CLASSES4[:3], 4, 1)
    out = tmp_path / "r"
    args = ["train", "--data", str(data), "--out", str(out), "--alpha", "0.25", "--resolution", "32",
            "--batch-size", "4", "--max-steps", "1", "--workers", "0", "--quiet",
            "--classes", f"{CLASSES4[2]},{CLASSES4[0]}"]  # fmt: skip
    assert main(args) == 0
    assert list(json.loads((out / "summary.json").read_text())["per_class_top1"]) == [CLASSES4[0], CLASSES4[2]]


def test_a_class_with_no_readable_image_is_named(tmp_path, capsys):
    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:3], 8, 1)
    for f in (data / "train" / CLASSES4[2]).iterdir():
        f.write_bytes(b"not a jpeg")
    train(tiny_cfg(data, tmp_path / "r", resolution=32, max_steps=1, quiet=False))
    assert f"warning: train class(es) {CLASSES4[2]}: no readable image" in capsys.readouterr().err


def test_training_refuses_one_class_and_an_out_that_is_a_file(tmp_path):
    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 1)
    with pytest.raises(DataError, match=rf"one class \({CLASSES4[0]}\); a classifier needs at least two"):
        train(tiny_cfg(data, tmp_path / "r", classes=[CLASSES4[0]]))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"out='.*afile' is not allowed: it is a file"):
        train(tiny_cfg(data, tmp_path / "afile"))
    with pytest.raises(NotADirectoryError, match=r"the run folder cannot be made there \(.*afile is a file, not a"):
        train(tiny_cfg(data, tmp_path / "afile" / "run"))  # an OSError naming the path (status 2), not a traceback
    assert (tmp_path / "afile").read_text() == "x"


# --- configuration and command line -------------------------------------------------------------------------------


def test_recipes_and_overlay_precedence(tmp_path):
    paper = resolve(str(REPO / "configs" / "paper.yaml"), lr=0.1)
    assert paper.optimizer == "rmsprop" and paper.eps == 1.0 and paper.lr == 0.1 and not paper.wd_depthwise
    assert paper.label_smoothing == 0.0 and paper.lr_decay == 0.94
    modern = resolve(str(REPO / "configs" / "modern.yaml"))
    assert modern.optimizer == "nesterov" and modern.schedule == "cosine" and modern.ema_decay > 0
    assert TrainConfig().epochs == resolve().epochs
    sci = tmp_path / "sci.yaml"  # YAML 1.1 would read these as strings, and refuse them as "not a number"
    sci.write_text("lr: 1e-3\nweight_decay: 4E-5\nwarmup_epochs: +2e0\nseed: 3\n")
    read = resolve(str(sci))
    assert (read.lr, read.weight_decay, read.warmup_epochs, read.seed) == (1e-3, 4e-5, 2.0, 3)
    for text in ("lr: 0.1\nlabel_smoothing: 0.1\nlr: 0.2\n", "label-smoothing: 0.1\nlr: 0.1\nlabel_smoothing: 0.2\n"):
        sci.write_text(text)  # PyYAML keeps the last value of a key given twice
        with pytest.raises(ConfigError, match=r"sci.yaml: (lr|label_smoothing) is given twice \(lines 1 and 3\)"):
            resolve(str(sci))
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option\(s\) learning_rate \(did you mean lr\?\)$"):
        resolve(str(bad))
    bad.write_text("epoch: 3\nimage_size: 160\nzzz: 1\n")  # a typo, another tool's name, neither
    with pytest.raises(ConfigError, match=r"\(s\) epoch \(did you mean epochs\?\), image_size \(did you mean "
                       r"resolution\?\), zzz$"):  # fmt: skip
        resolve(str(bad))
    (tmp_path / "run").mkdir()  # a folder: "config file not found", of a folder that is there
    (tmp_path / "run" / "config.yaml").write_text("lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'run'}: a folder, not a config file \(its recipe: "):
        resolve(str(tmp_path / "run"))
    bad.write_text("lr: 0.1\nbad: [\n")  # the parser's own message quotes the line with a caret under it
    with pytest.raises(ConfigError) as err:
        resolve(str(bad))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{bad}: not valid YAML ("), err.value
    assert "line 3, column 1" in str(err.value), err.value


def test_a_config_yaml_saved_before_depthwise_was_renamed_still_loads(tmp_path):
    """Run folders saved ``triton_depthwise: false|true`` (results/reproduce-*/runs/*/config.yaml): each still loads
    as a recipe, as what it ran; a value that contradicts ``depthwise`` is named."""
    old = tmp_path / "config.yaml"
    for saved, want in (("false", "conv"), ("true", "triton")):
        old.write_text(f"lr: 0.2\ntriton_depthwise: {saved}\n")
        assert load_yaml(old) == {"lr": 0.2} | ({"depthwise": want} if want != "conv" else {})
        assert resolve(str(old)).depthwise == want
    old.write_text("triton_depthwise: false\ndepthwise: taps\n")
    assert resolve(str(old)).depthwise == "taps"
    old.write_text("triton-depthwise: true\ndepthwise: taps\n")
    with pytest.raises(ConfigError, match="triton_depthwise=True and depthwise='taps' disagree"):
        load_yaml(old)
    old.write_text("triton_depthwise: 1\n")
    with pytest.raises(ConfigError, match="config.yaml: triton_depthwise=1 is not allowed"):
        load_yaml(old)
    # the repository's own earlier runs
    for saved in sorted(REPO.glob("results/reproduce-*/runs/*/config.yaml"))[:1]:
        assert "triton_depthwise" in saved.read_text() and "depthwise" not in load_yaml(saved)


def test_a_config_built_in_python_is_checked_as_the_command_line_checks_it(tmp_path):
    """`train(TrainConfig(...))` validates without `resolve`: paths as pathlib.Path are taken (config.yaml needs
    strings), a single class as a string is one class (not its letters), and a string is no boolean."""
    import yaml

    cfg = TrainConfig(data=tmp_path / "d", out=tmp_path / "o", init=tmp_path / "w", classes="n01440764", lr=1)
    cfg.validate()
    assert (cfg.data, cfg.out, cfg.init) == (str(tmp_path / "d"), str(tmp_path / "o"), str(tmp_path / "w"))
    assert cfg.classes == ["n01440764"] and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match=r"hflip='no' is not allowed: hflip must be true or false"):
        TrainConfig(hflip="no").validate()
    with pytest.raises(ConfigError, match=r"epochs=2.5 is not allowed: epochs must be an integer"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=2.5))
    assert not (tmp_path / "o").exists()


def test_param_groups_no_decay_on_depthwise_bn_bias():
    model = create_model("mobilenet_v1_025", num_classes=3)
    cfg = TrainConfig(weight_decay=1e-4, backbone_lr_mult=0.1)
    groups = param_groups(model, cfg, 1.0)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.blocks[0].dw.conv.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.blocks[0].pw.conv.weight)]["weight_decay"] == 1e-4
    assert by_id[id(model.blocks[0].pw.bn.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.classifier.bias)]["weight_decay"] == 0.0
    assert by_id[id(model.classifier.weight)]["lr"] == 1.0 and by_id[id(model.stem.conv.weight)]["lr"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_param_groups_tell_depthwise_filters_by_their_groups_not_their_width():
    """The paper's no-decay rule (Section 3.2) is for depthwise filters, one per channel: a grayscale model's stem,
    a conv of one input channel (groups 1 == in_channels 1), is an ordinary conv whose weights decay, and a depthwise
    conv of two channels (``min_channels=2``) is still depthwise."""
    gray = dict(in_chans=1, mean=(0.5,), std=(0.25,), alpha=0.0625, min_channels=2)
    model = create_model("mobilenet_v1_025", num_classes=3, **gray)
    assert model.stem.conv.in_channels == 1 and model.blocks[0].dw.conv.groups == 2
    by_id = {id(p): g for g in param_groups(model, TrainConfig(weight_decay=1e-4), 1.0) for p in g["params"]}
    assert by_id[id(model.stem.conv.weight)]["weight_decay"] == 1e-4
    assert by_id[id(model.blocks[0].dw.conv.weight)]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "name, kind, settings",
    [
        ("rmsprop", RMSpropTF, {"decay": 0.8, "momentum": 0.7, "eps": 1.0}),
        ("rmsprop_torch", torch.optim.RMSprop, {"alpha": 0.8, "momentum": 0.7, "eps": 1.0}),
        ("sgd", torch.optim.SGD, {"momentum": 0.7, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.7, "nesterov": True}),
        ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.999), "eps": 1e-8}),
    ],
)
def test_each_optimizer_option_builds_that_optimizer_with_the_recipe_s_settings(name, kind, settings):
    """--optimizer picks the update rule (rmsprop is TF's, `RMSpropTF`; rmsprop_torch PyTorch's), and the recipe's
    momentum, decay and epsilon reach it; a model with nothing to train is an error, not a run that learns nothing."""
    model = create_model("mobilenet_v1_025", num_classes=3)
    cfg = resolve(optimizer=name, momentum=0.7, rmsprop_decay=0.8)
    opt = build_optimizer(model, cfg, 0.1)
    assert type(opt) is kind
    assert all(group[k] == v for group in opt.param_groups for k, v in settings.items())
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, cfg, 0.1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", ["nesterov", "adamw"])
def test_optimizer_is_fused_on_cuda_only(device, name):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = create_model("mobilenet_v1_025", num_classes=3).to(device)
    opt = build_optimizer(model, TrainConfig(optimizer=name), 0.1)
    assert all(bool(g.get("fused")) == (device == "cuda") for g in opt.param_groups)
    # a checkpoint made on the other kind of device resumes with this optimizer's implementation
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        group["fused"] = device != "cuda"
    load_optimizer_state(opt, saved)
    assert all(bool(g.get("fused")) == (device == "cuda") for g in opt.param_groups)


def test_rmsprop_tf_semantics_and_schedules():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, decay=0.9, momentum=0.5, eps=1.0)
    g = torch.tensor([0.5, 1.0])
    ms, mom, ref = torch.ones(2), torch.zeros(2), w.detach().clone()
    for _ in range(2):
        w.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.5 * mom + 0.1 * g / torch.sqrt(ms + 1.0)
        ref = ref - mom
    assert torch.allclose(w.detach(), ref)
    # weight decay as TF's L2 loss term: its gradient wd * w joins the gradient before the mean square
    v = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    v.grad = g.clone()
    RMSpropTF([v], lr=0.1, decay=0.9, momentum=0.5, eps=1.0, weight_decay=0.5).step()
    gd = g + 0.5 * torch.tensor([1.0, -2.0])
    assert torch.allclose(v.detach(), torch.tensor([1.0, -2.0]) - 0.1 * gd / torch.sqrt(0.9 + 0.1 * gd * gd + 1.0))
    cfg = TrainConfig(schedule="exponential", lr_decay=0.5, lr_decay_epochs=2.0)
    assert [lr_factor(cfg, s, 10) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    cos = TrainConfig(schedule="cosine", epochs=2, warmup_epochs=1.0, min_lr_ratio=0.1)
    assert lr_factor(cos, 0, 10) == pytest.approx(0.1) and lr_factor(cos, 9, 10) == 1.0
    assert lr_factor(cos, 10, 10) == pytest.approx(1.0) and lr_factor(cos, 20, 10) == pytest.approx(0.1)
    # half way through the cosine (after the warm-up), half way between the peak and the floor
    assert lr_factor(cos, 15, 10) == pytest.approx(0.55)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--alpha", "0"], "alpha=0.0"),
        (["--epochs", "0"], "epochs=0"),
        (["--optimizer", "adam"], "optimizer='adam'"),
        (["--lr", "-1"], "lr=-1.0"),
        (["--scale-min", "1.5"], "scale_min=1.5"),
        (["--resume", "/no/such.pt"], "resume='/no/such.pt'"),
        (["--data", "/no/such/root"], "/no/such/root"),
        (["--batch-size", "3", "--sync-bn"], "sync_bn"),
        (["--mixup-alpha", "-0.2"], "mixup_alpha=-0.2"),
        (["--label-smoothing", "1"], "label_smoothing=1.0 is not allowed: label_smoothing must be a number in [0, 1)"),
        (["--eval-every", "0"], "eval_every=0"),
        (["--device", "cpu", "--depthwise", "triton"], "depthwise='triton' is not allowed on cpu"),
        (["--depthwise", "cudnn"], "depthwise='cudnn' is not allowed: depthwise must be one of conv, triton, taps"),
        (["--device", "cpu", "--step-graph"], "step_graph is not allowed on cpu: CUDA graphs need a CUDA device"),
        # torch.manual_seed's range ends at 2**64 - 1 (was "Overflow when unpacking long long"); the sampler adds the
        # epoch to the seed
        (["--seed", str(2**64)], f"seed={2**64} is not allowed: seed must be an integer in [0, 2**63 - 1]"),
        (["--seed", str(2**63)], f"seed={2**63} is not allowed"),
        # distillation options without a teacher did nothing, silently
        (["--distill-weight", "0.7"], "distill_weight=0.7 needs --teacher"),
        (["--distill-temperature", "2"], "distill_temperature=2 needs --teacher"),
        # scored on the images it trains on
        (["--train-split", "val", "--val-split", "val"], "val_split='val' is not allowed: it is the training split's"),
        (["--train-split", "val", "--val-split", "./val/"], "val_split='./val/' is not allowed"),
    ],
)
def test_bad_cli_values_exit_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRET", False)  # as without TRITON_INTERPRET=1: no Triton on this CPU
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 2, 1)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet", "--workers", "0", *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_cli_type_errors_and_unknown_config_keys_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--batch-size", "many"])
    assert exc.value.code == 2 and "--batch-size" in capsys.readouterr().err
    cfg = tmp_path / "r.yaml"
    cfg.write_text("epochz: 3\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "epochz" in capsys.readouterr().err
    assert main(["eval", "--weights", str(tmp_path / "none"), "--data", str(tmp_path)]) == 2
    # YAML values are checked against the fields' types: a quoted "no" is not false, a scalar is not a pair
    for line, words in [('hflip: "no"', "hflip='no' is not allowed: hflip must be true or false"),
                        ('freeze_backbone: "off"', "freeze_backbone='off'"), ("lr: '0.1'", "lr must be a number"),
                        ("epochs: 2.5", "epochs must be an integer"), ("betas: 0.9", "betas=[0.9]")]:  # fmt: skip
        cfg.write_text(line + "\n")
        assert main(["train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    cfg.write_text("classes: n01440764\nhflip: no\n")  # one class without a list; YAML's unquoted no is false
    resolved = resolve(str(cfg))
    assert resolved.classes == ["n01440764"] and resolved.hflip is False


def test_eval_of_a_dataset_root_points_at_its_val_split(trained, capsys):
    root, out, _ = trained
    assert main(["eval", "--weights", str(out / "model"), "--data", str(root)]) == 2
    assert f"holds train/ and val/: evaluate one split, e.g. --data {root / 'val'}" in capsys.readouterr().err
    assert main(["eval", "--weights", str(out / "model"), "--data", str(root / "val"), "--threads", "0"]) == 2
    assert "threads=0 is not allowed" in capsys.readouterr().err


def test_epsilon_defaults_per_optimizer():
    assert resolve(optimizer="rmsprop").eps == 1.0  # TF-slim's --opt_epsilon
    assert resolve(optimizer="adamw").eps == 1e-8  # 1.0 would swamp Adam's second-moment estimate
    assert resolve(optimizer="adamw", eps=1e-6).eps == 1e-6
    opt = build_optimizer(create_model("mobilenet_v1_025", num_classes=3), TrainConfig(optimizer="adamw"), 0.1)
    assert opt.param_groups[0]["eps"] == 1e-8


def test_default_workers_do_not_exceed_the_usable_cores(monkeypatch, capsys):
    """Unset, --workers is 4 or the cores this process may run on if fewer: 4 on a 2-core machine made torch warn
    once per loader ("This DataLoader will create 4 worker processes in total. Our suggested max number of worker in
    current system is 2"). An explicit count, a recipe's included, is kept; workers is a runtime field, so a run that
    recorded 4 still resumes here."""
    import mobilenets.train_config as train_config
    from mobilenets.cli import build_parser

    monkeypatch.setattr(train_config, "usable_cores", lambda: 2)
    assert resolve().workers == 2 and resolve(workers=4).workers == 4 and resolve(workers=0).workers == 0
    assert TrainConfig().validate().workers == 2  # from Python code as from the command line
    recipe = resolve(str(REPO / "configs" / "paper.yaml"))
    assert recipe.workers == 2 and recipe.to_dict()["workers"] == 2  # config.yaml records the count used
    assert resolve().differences({**resolve().to_dict(), "workers": 4}) == []  # a resume does not compare it
    monkeypatch.setattr(train_config, "usable_cores", lambda: 1)
    assert resolve().workers == 1
    monkeypatch.setattr(train_config, "usable_cores", lambda: 64)
    assert resolve().workers == train_config.DEFAULT_WORKERS == 4
    with pytest.raises(ConfigError, match=r"workers=-1 is not allowed: workers must be an integer >= 0"):
        resolve(workers=-1)
    parser, _ = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "(default: 4, or the cores this process may run on if fewer)" in " ".join(capsys.readouterr().out.split())


def test_eval_default_workers_follow_trains_rule(tmp_path, monkeypatch, capsys):
    """``eval --workers`` defaulted to 2 of its own, so on a 1-core machine torch warned that it suggests at most 1
    worker (as train's 4 did before `train_config.default_workers`); unset, eval now loads with train's count, and
    an explicit one is kept. A negative count is still one line naming it."""
    import mobilenets.train_config as train_config

    used = []

    class Recording(trainer_module.DataLoader):
        def __init__(self, *args, **kwargs):
            used.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "DataLoader", Recording)
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "w")
    val = tmp_path / "val"
    for name in ("a", "b"):
        (val / name).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(val / name / "x.png")
    args = ["eval", "--weights", str(tmp_path / "w"), "--data", str(val), "--resolution", "32", "--threads", "1"]
    for cores in (1, 2):  # 1: a worker process, where eval had 2 of its own
        monkeypatch.setattr(train_config, "usable_cores", lambda n=cores: n)
        assert main(args) == 0
        assert used.pop() == min(cores, train_config.DEFAULT_WORKERS)
    assert main([*args, "--workers", "0"]) == 0 and used.pop() == 0
    assert evaluate_weights(tmp_path / "w", val, resolution=32, threads=1) and used.pop() == 2  # from Python too
    capsys.readouterr()
    assert main([*args, "--workers", "-1"]) == 2 and not used
    assert (
        capsys.readouterr().err
        == "mobilenets eval: error: workers=-1 is not allowed: workers must be an integer >= 0\n"
    )
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "(0 = load in the main process; default: 4, or the cores this process may run on if fewer)" in " ".join(
        capsys.readouterr().out.split()
    )


def test_worker_processes_do_not_change_the_result(tmp_path):
    """Augmentation is seeded per (seed, epoch, sample), so loading in 2 worker processes gives the same weights."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 12, 2)
    states = []
    for workers in (0, 2):
        train(tiny_cfg(data, tmp_path / f"w{workers}", workers=workers, cache="off", epochs=2))
        states.append(read_state_dict(tmp_path / f"w{workers}" / "model" / "model.safetensors"))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unknown_classes_are_named_with_the_folders_found(tmp_path):
    from PIL import Image

    for name in ("rock, paper", "scissors"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.jpg")
    assert scan_split(tmp_path, ["rock, paper"]).classes == ["rock, paper"]
    with pytest.raises(DataError) as err:
        scan_split(tmp_path, ["rock", "paper"])
    assert str(err.value) == (f"{tmp_path}: class folder(s) rock, paper not found (found: rock, paper, scissors; a "
                              "comma separates classes, '\\,' (quoted) is one inside a name)")  # fmt: skip
    with pytest.raises(DataError, match=r"class folder\(s\) papers not found \(found: rock, paper, scissors; a comma"):
        scan_split(tmp_path, ["scissors", "papers"])
    (tmp_path / "rock, paper").rename(tmp_path / "rock")
    with pytest.raises(DataError, match=r"not found \(found: rock, scissors\)$"):
        scan_split(tmp_path, ["paper"])


def test_cli_options_come_from_the_dataclass(capsys):
    from mobilenets.cli import build_parser

    parser, _ = build_parser()
    args = parser.parse_args(["train", "--betas", "0.8", "0.99", "--no-hflip", "--classes", "a", "b", "--lr", "1"])
    assert args.betas == [0.8, 0.99] and args.hflip is False and args.classes == ["a", "b"] and args.lr == 1.0
    assert not hasattr(parser.parse_args(["train"]), "lr")  # unset options leave the YAML/dataclass value alone
    # comma-separated, as bench and select take their lists, or both ("a,b" was looked for as one folder)
    args = parser.parse_args(["train", "--classes", "a,b", "c", "--betas", "0.8,0.99"])
    assert args.classes == ["a", "b", "c"] and args.betas == [0.8, 0.99]
    assert resolve(classes="a, b").classes == ["a", "b"]  # a recipe's or Python's string, as the command line's
    # a list's items are names as they are: a folder named with a comma can still be chosen
    assert resolve(classes=["tench, Tinca tinca", "b"]).classes == ["tench, Tinca tinca", "b"]
    # and from the command line or a string, with \, for the comma inside a name
    args = parser.parse_args(["train", "--classes", "tench\\, Tinca tinca,b", "c\\,d"])
    assert args.classes == ["tench, Tinca tinca", "b", "c,d"]
    assert resolve(classes="tench\\, Tinca tinca, b").classes == ["tench, Tinca tinca", "b"]
    with pytest.raises(ConfigError, match=r"classes=' , ' is not allowed: classes must name at least one item"):
        resolve(classes=" , ")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--classes", ","])
    assert "invalid str value: ','" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--betas", "0.8,x"])
    assert "invalid float value: '0.8,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert f"(default: {TrainConfig().weight_decay})" in text and "--save-every" in text


def test_modern_options_run_together(tmp_path):
    """bf16 autocast (CPU), channels_last, EMA, label smoothing, AdamW, warm-up + cosine in one short run."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    cfg = resolve(
        str(REPO / "configs" / "modern.yaml"),
        data=str(data),
        out=str(tmp_path / "m"),
        alpha=0.25,
        resolution=64,
        batch_size=8,
        epochs=2,
        workers=0,
        threads=1,
        quiet=True,
        amp="bf16",
        channels_last=True,
        optimizer="adamw",
        lr=1e-3,
        eps=1e-8,
        ema_decay=0.5,
    )
    s = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert s["global_steps"] == 4 and len(rows) == 2 and rows[0]["lr"] < rows[1]["lr"]  # 2-epoch linear warm-up
    ema = load(tmp_path / "m" / "model")
    assert json.loads((tmp_path / "m" / "model" / "config.json").read_text())["provenance"]["ema"] is True
    assert ema.spec.labels == tuple(CLASSES4[:2])


def test_cache_decision_follows_the_memory_budget(tmp_path):
    from mobilenets.data import should_cache

    data = copy_subset(tmp_path / "d", CLASSES4[:1], 4, 1)
    samples = scan_split(data / "train").samples
    use, need = should_cache("auto", samples, 73, budget_gb=1.0)
    assert use and need == 4 * 3 * 73 * 73  # Imagenette files are 224x224, shrunk to the eval resize side
    assert should_cache("auto", samples, 73, budget_gb=need / 2**30 / 2)[0] is False
    assert should_cache("off", samples, 73, budget_gb=1.0) == (False, 0)


def test_the_cache_changes_no_training_or_eval_pixel(tmp_path):
    """Cached or not, each image's shorter side is reduced to the eval resize side before its transform: the same
    sample and epoch give the same random crop, bit for bit (it used to be cropped from the full image uncached)."""
    from mobilenets.data import cache_side, train_transform
    from mobilenets.preprocess import eval_transform
    from mobilenets.spec import ModelSpec

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 3, 1)
    split, spec = scan_split(data / "train"), ModelSpec(alpha=0.25)
    side = cache_side(64, spec.crop_pct)  # 73: Imagenette's 224-px files are shrunk
    for transform in (train_transform(spec, 64, 0.08, (3 / 4, 4 / 3), True), eval_transform(spec, 64)):
        plain = ImageFolderDataset(split, transform, seed=3, cache_side=side)
        cached = ImageFolderDataset(split, transform, seed=3, cache_side=side)
        cached.build_cache()
        for ds in (plain, cached):
            ds.set_epoch(2)
        for i in range(len(split.samples)):
            a, b = plain[i][0], cached[i][0]
            assert a.shape == (3, 64, 64) and torch.equal(a, b), i


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_validation_during_training_sees_the_pixels_mobilenets_eval_sees(tmp_path, interpolation):
    """The reduction to the eval resize side uses the spec's interpolation, so a bicubic spec (timm weights given
    to --init) is validated on the pixels `mobilenets eval` feeds it; a bilinear reduction first moved them by up
    to 0.35 after normalisation."""
    from mobilenets.data import cache_side
    from mobilenets.preprocess import eval_transform
    from mobilenets.spec import ModelSpec

    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    noise = torch.randint(0, 256, (90, 125, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
    Image.fromarray(noise).save(folder / "n.png")
    split, spec = scan_split(tmp_path / "val"), ModelSpec(alpha=0.25, interpolation=interpolation)
    transform = eval_transform(spec, 32)
    during = ImageFolderDataset(split, transform, cache_side=cache_side(32, spec.crop_pct), interpolation=interpolation)
    after = ImageFolderDataset(split, transform)  # as `mobilenets eval` builds it
    assert torch.equal(during[0][0], after[0][0])


@pytest.mark.slow
def test_run_summary_feeds_bench_and_select_accuracy(trained):
    """`bench --accuracy` / `select --accuracy` read the summary.json this run wrote (issue 5 <- issue 4)."""
    from mobilenets.accuracy import from_summaries, read_summary

    _root, out, summary = trained
    alpha, res, top1 = read_summary(out / "summary.json")
    assert (alpha, res) == (0.25, 64) and top1 == pytest.approx(100 * summary["final_top1"])  # what model/ holds
    assert from_summaries([out / "summary.json"]).points[(0.25, 64)] == pytest.approx(top1)


def test_eval_every_skips_evaluations_but_not_the_last_epoch(tmp_path):
    """--eval-every 2 over 3 epochs evaluates after epochs 2 and 3 only; best and final come from those."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 4)
    summary = train(tiny_cfg(data, tmp_path / "r", epochs=3, eval_every=2))
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_top1"] is not None for r in rows] == [False, True, True]
    assert rows[0]["val_loss"] is None and rows[0]["train_loss"] > 0
    assert summary["final_top1"] == rows[2]["val_top1"]
    assert summary["best_top1"] == max(rows[1]["val_top1"], rows[2]["val_top1"])
    assert (tmp_path / "r" / "curves.png").stat().st_size > 0


def test_ema_decay_warms_up_and_its_schedule_survives_a_resume():
    from mobilenets.optim import ModelEMA

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, 0.9998)
    with torch.no_grad():
        model.weight.fill_(1.0)  # the trained weights from now on; the average starts at the initial 0
    kept = 1.0  # the initial weights' share of the average
    for n in range(180):
        assert ema.current_decay() == min(0.9998, (1 + n) / (10 + n))
        kept *= ema.current_decay()
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, 1 - kept))
    assert kept < 0.06  # a fixed 0.9998 would still keep 0.9998 ** 180 = 0.96 of the random initialisation
    resumed = ModelEMA(torch.nn.Linear(3, 2), 0.9998)
    resumed.load_state_dict(ema.state_dict())
    assert resumed.updates == 180 and resumed.current_decay() == ema.current_decay()
    assert torch.equal(resumed.module.weight, ema.module.weight)


def test_ema_averages_batchnorm_statistics_with_the_weights_and_copies_the_counter():
    """The EMA's BatchNorm running mean/variance are the same lerp as its weights (TF-slim, timm's ModelEmaV3 and
    torchvision's reference average them too), not the raw model's latest: averaged weights normalised with the raw
    weights' statistics are a mismatched pair. The integer ``num_batches_tracked`` is copied. A resume continues the
    same averages bit for bit."""
    from mobilenets.optim import ModelEMA

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    bn = model[1]
    ema = ModelEMA(model, 0.9)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()  # the averages start at the copy: 0 and 1
    for step, fill in enumerate((2.0, -3.0)):
        decay = ema.current_decay()  # 0.1, then 2/11
        with torch.no_grad():
            bn.running_mean.fill_(fill)
            bn.running_var.fill_(fill**2)
            bn.num_batches_tracked.fill_(5 * (step + 1))
        ema.update(model)
        mean, var = mean.lerp(bn.running_mean, 1 - decay), var.lerp(bn.running_var, 1 - decay)
        ema_bn = ema.module[1]
        assert torch.equal(ema_bn.running_mean, mean) and torch.equal(ema_bn.running_var, var)
        assert not torch.equal(ema_bn.running_mean, bn.running_mean)  # what copying the buffers gave
        assert int(ema_bn.num_batches_tracked) == 5 * (step + 1)  # copied: a counter has no average
    assert ema_bn.num_batches_tracked.dtype == torch.long
    resumed = ModelEMA(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)), 0.9)
    resumed.load_state_dict(ema.state_dict())
    with torch.no_grad():
        bn.running_mean.fill_(7.0)
    for average in (ema, resumed):
        average.update(model)
    a, b = ema.module.state_dict(), resumed.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_reads_the_model_s_tensors_at_each_update_and_writes_its_own_after_a_resume():
    """`ModelEMA` gathers its own tensors once, at construction, but the model's at each update: by then they may be
    other tensors (``.to()`` replaces a module's buffers; the trainer converts BatchNorms to SyncBatchNorm after the
    copy). And a resume's `load_state_dict` copies into the tensors it gathered, so the update still writes the
    average the EMA saves and evaluates."""
    from mobilenets.optim import ModelEMA

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(model, 0.9)
    ema.update(model)
    model[0].weight = torch.nn.Parameter(torch.full_like(model[0].weight, 2.0))
    model[1].running_mean = torch.full((4,), 3.0)
    model[1].num_batches_tracked = torch.tensor(7)
    ema.load_state_dict(ModelEMA(model, 0.9).state_dict())  # its average now starts at the new tensors' values
    with torch.no_grad():
        model[0].weight.fill_(4.0)
        model[1].running_mean.fill_(5.0)
        model[1].num_batches_tracked.fill_(8)
    ema.update(model)  # decay 0.1: 0.9 of the way to the model
    assert torch.allclose(ema.module[0].weight, torch.full_like(model[0].weight, 2 + 0.9 * 2))
    assert torch.allclose(ema.module[1].running_mean, torch.full((4,), 3 + 0.9 * 2))
    assert int(ema.module[1].num_batches_tracked) == 8
    assert ema.state_dict()["module"]["1.running_mean"].tolist() == ema.module[1].running_mean.tolist()


@pytest.mark.slow
def test_modern_recipe_learns_as_shipped(tmp_path):
    """configs/modern.yaml with its EMA of the weights (which are what is evaluated and saved): 4 classes, 15 short
    epochs. Before the EMA's decay warmed up, this run stayed at chance (0.25): the average was still 96% the random
    initialisation."""
    root = copy_subset(tmp_path / "d", CLASSES4, 100, 50)
    cfg = resolve(str(REPO / "configs" / "modern.yaml"), data=str(root), out=str(tmp_path / "run"), alpha=0.25,
                  resolution=64, epochs=15, batch_size=32, workers=0, threads=1, quiet=True)  # fmt: skip
    assert cfg.ema_decay == 0.9998
    summary = train(cfg)
    # 200 balanced val images: chance 0.25 with binomial sd 0.031, so 0.36 is 3.5 sd above it; at chance the best of
    # the 15 evaluations (all of the EMA weights) reaches it with p <= 15 x 2.3e-4. The best, not the final: seeds 0-9
    # end at 0.325-0.50 (seed 5 below the bar; seed 0, this test's, 0.43) and peak at 0.38-0.555
    assert summary["best_top1"] >= 0.36


def test_a_run_folder_with_checkpoints_needs_resume_and_the_same_settings(tmp_path, capsys):
    """Without --resume, an earlier run's checkpoints in --out stop a new run before it writes anything (it would
    have lost its own checkpoints to theirs); --resume with other settings (here the width and the optimizer) is one
    clear error (exit 2), not a size-mismatch traceback or a silent change of recipe; more epochs are allowed."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "run"
    train(tiny_cfg(data, out, epochs=1, batch_size=4))
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match=r"holds checkpoints of an earlier run.*--resume auto"):
        train(tiny_cfg(data, out, epochs=1, batch_size=4))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    code = main(["train", "--data", str(data), "--out", str(out), "--alpha", "0.5", "--optimizer", "adamw",
                 "--resolution", "64", "--batch-size", "4", "--epochs", "2", "--workers", "0", "--quiet",
                 "--resume", "auto"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "alpha=0.25 there, 0.5 here" in err and "optimizer='sgd' there, 'adamw' here" in err
    assert "Traceback" not in err
    longer = train(tiny_cfg(data, out, epochs=2, batch_size=4, resume="auto"))
    assert longer["resumed_from"] and longer["epochs"] == 2
    again = train(tiny_cfg(data, out, epochs=2, batch_size=4, resume="auto"))  # finished: nothing left to train
    assert again["per_class_top1"] == longer["per_class_top1"] is not None
    assert again["val_images"] == longer["val_images"] == 4


def test_a_finished_run_whose_checkpoints_were_removed_is_not_overwritten(tmp_path):
    """Removing checkpoints/ to save space keeps a run's results; a new run (or --resume auto, which finds no
    checkpoint and would start from scratch) in that folder would replace them: refused, nothing written."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "run"
    train(tiny_cfg(data, out, epochs=2, batch_size=4))
    shutil.rmtree(out / "checkpoints")
    kept = {name: (out / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "model/model.safetensors")}
    for resume in (None, "auto"):
        with pytest.raises(ConfigError, match=r"holds a finished run \(summary.json\) without checkpoints"):
            train(tiny_cfg(data, out, epochs=1, batch_size=4, resume=resume))
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert not (out / "checkpoints").exists()


def test_a_resume_whose_checkpoints_are_all_damaged_overwrites_nothing(tmp_path, capsys):
    """--resume auto skipped each torn checkpoint, then started from scratch and replaced the finished run's model/
    and metrics.jsonl. Checkpoints that exist but none of which loads: refused, one line naming the folder."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "run"
    train(tiny_cfg(data, out, epochs=2, batch_size=4, resolution=32, keep_checkpoints=2))
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert len(ckpts) == 2
    for p in ckpts:
        p.write_bytes(p.read_bytes()[:1000])
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    said = rf"^{out / 'checkpoints'}: none of its 2 checkpoint\(s\) can be loaded \(reasons above\); .* give another"
    with pytest.raises(ValueError, match=said + r" --out \(or remove that folder\) to start afresh$"):
        train(tiny_cfg(data, out, epochs=3, batch_size=4, resolution=32, keep_checkpoints=2, resume="auto"))
    assert capsys.readouterr().err.count("skipping checkpoint: ") == 2
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_resume_drops_a_torn_last_metrics_line_and_names_any_other_bad_one(tmp_path, capsys):
    """A kill while appending epoch 2's row (before its checkpoint) left a torn last line, and --resume auto failed
    with json's 'Unterminated string ...', naming neither file nor fix. That row is written again by the resume, so
    the torn line is dropped; a bad line elsewhere is one error naming the file and line, and nothing is written."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "run"
    kw = dict(epochs=2, batch_size=4, resolution=32, deterministic=True, keep_checkpoints=5, quiet=False)
    train(tiny_cfg(data, out, **kw))
    metrics = out / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    (out / "checkpoints" / "ckpt-000000008.pt").unlink()  # epoch 2's, saved after its row: not written yet
    (out / "summary.json").unlink()
    metrics.write_text(rows[0] + "\n" + rows[1][:13])  # '{"epoch": 2, ' and no more
    shutil.copytree(out, tmp_path / "bad")
    capsys.readouterr()
    summary = train(tiny_cfg(data, out, resume="auto", **kw))
    assert summary["resumed_from"].endswith("ckpt-000000004.pt") and summary["epochs"] == 2
    assert [json.loads(r)["epoch"] for r in metrics.read_text().splitlines()] == [1, 2]
    said = capsys.readouterr().err
    assert f"note: {metrics}: line 2, the last, is incomplete (an interrupted write): dropped" in said
    bad = tmp_path / "bad" / "metrics.jsonl"
    bad.write_text(rows[0][:13] + "\n" + rows[0] + "\n" + rows[1][:13])  # a bad line before the last
    kept = {p: p.read_bytes() for p in bad.parent.iterdir() if p.is_file() and not p.name.startswith(".")}
    with pytest.raises(ValueError, match=rf"^{bad}: line 1 is not a metrics row \(.*\); fix or remove that line$"):
        train(tiny_cfg(data, tmp_path / "bad", resume="auto", **kw))
    assert {p: p.read_bytes() for p in kept} == kept  # metrics.jsonl, config.yaml, env.json as they were


def test_a_named_checkpoint_that_is_refused_leaves_no_new_run_folder(tmp_path):
    """From the re-read: --resume FILE into a new --out read the file after the folder was held, so an unreadable
    file, or one of a run with other settings, left the new folder holding only .lock."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.pt: unreadable checkpoint"):
        train(tiny_cfg(data, tmp_path / "new", resolution=32, resume=str(tmp_path / "junk.pt")))
    assert not (tmp_path / "new").exists()
    train(tiny_cfg(data, tmp_path / "a", resolution=32, max_steps=1))
    ckpt = sorted((tmp_path / "a" / "checkpoints").iterdir())[-1]
    with pytest.raises(ConfigError, match=r"was saved by a run with other settings \(alpha=0.25 there, 0.5 here"):
        train(tiny_cfg(data, tmp_path / "new2", resolution=32, alpha=0.5, resume=str(ckpt)))
    assert not (tmp_path / "new2").exists()


def test_a_resume_goes_on_with_the_files_it_trained_on(tmp_path):
    """--data is a path and may move, but a resume on other files (one image fewer, or another dataset) would mix
    two datasets in one run and overwrite env.json's record of the first: one clear error, nothing written."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "run"
    train(tiny_cfg(data, out, epochs=1, batch_size=4))
    env_before = (out / "env.json").read_text()
    fewer = shutil.copytree(data, tmp_path / "fewer")
    next((fewer / "train" / CLASSES4[0]).iterdir()).unlink()
    with pytest.raises(ConfigError, match=r"other images \(train: 16 images in 2 classes there, 15 in 2 here\)"):
        train(tiny_cfg(fewer, out, epochs=2, batch_size=4, resume="auto"))
    renamed = shutil.copytree(data, tmp_path / "renamed")
    image = next((renamed / "val" / CLASSES4[1]).iterdir())
    image.rename(image.with_name("another.jpg"))
    with pytest.raises(ConfigError, match=r"val: 4 images in 2 classes there, 4 in 2 here \(other files\)"):
        train(tiny_cfg(renamed, out, epochs=2, batch_size=4, resume="auto"))
    assert (out / "env.json").read_text() == env_before
    moved = shutil.copytree(data, tmp_path / "moved")  # the same files elsewhere: the run goes on
    assert train(tiny_cfg(moved, out, epochs=2, batch_size=4, resume="auto"))["epochs"] == 2


def test_max_per_class_keeps_a_spread_of_each_class_the_same_for_every_call_and_seed(tmp_path):
    """--max-per-class used to keep each class's first files in path order: in Imagenette every ILSVRC2012_val_* file
    (about 40 of a class's 963, from ImageNet's val set) sorts before the n0* ones, so a 20-per-class subset was
    nothing but those. The hash of each file's path in its class folder picks a spread instead: both kinds, in about
    the folder's proportions, the same list at every call whatever the random state (seeds do not enter it), for the
    folder wherever it is, and a file added to a class changes no other file's place in it."""
    import random

    root = data_path("imagenette", "train")
    everything = scan_split(root).samples
    share = sum("ILSVRC2012_val_" in p for p, _ in everything) / len(everything)  # 0.04
    picked = []
    for seed in (0, 1):
        random.seed(seed)
        torch.manual_seed(seed)
        picked.append(scan_split(root, max_per_class=20).samples)
    assert picked[0] == picked[1] and len(picked[0]) == 200
    assert picked[0] == sorted(picked[0], key=lambda s: (s[1], s[0]))  # each class's files in path order
    origin = sum("ILSVRC2012_val_" in p for p, _ in picked[0])
    assert 0 < origin < 200 * 4 * share, f"{origin} of 200 ImageNet-val files, {share:.3f} of the folder"
    first = scan_split(root, max_per_class=20, subsample_rule="first").samples  # the old rule, for a resumed run
    assert all("ILSVRC2012_val_" in p for p, _ in first)
    # the same relative names elsewhere, and a class with files added: the old picks that stay low enough are kept
    cls = CLASSES4[0]
    names = sorted(os.listdir(root / cls))
    for name in names[::20]:
        (tmp_path / "a" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / cls / name, tmp_path / "a" / cls / name)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    picks = {d: {Path(p).name for p, _ in scan_split(tmp_path / d, max_per_class=10).samples} for d in "ab"}
    assert picks["a"] == picks["b"]
    added = set(names[10::20])
    for name in added:
        shutil.copy(root / cls / name, tmp_path / "b" / cls / name)
    grown = {Path(p).name for p, _ in scan_split(tmp_path / "b", max_per_class=10).samples}
    assert len(grown) == 10 and grown - added <= picks["a"] and grown != picks["a"]
    with pytest.raises(ConfigError, match="subsample='random' is not allowed: subsample must be one of hash, first"):
        TrainConfig(subsample="random").validate()


def test_a_run_from_before_the_subsample_rule_resumes_on_its_own_files(tmp_path):
    """A run saved before `subsample` was recorded, with --max-per-class, took the first files in path order. Resumed
    under today's rule it would train on other files: one error naming the difference and --subsample first, which
    resumes it on its own files. Without a per-class limit the rule picks nothing and is no difference."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 12, 4)
    kw = dict(batch_size=4, max_per_class=8, max_val_per_class=3, deterministic=True, resolution=32)
    rules = {rule: scan_dataset(data, max_per_class=8, max_val_per_class=3, subsample_rule=rule) for rule in ("hash",
             "first")}  # fmt: skip
    assert rules["hash"][0].samples != rules["first"][0].samples  # the test would not tell the rules apart otherwise
    out = tmp_path / "run"
    train(tiny_cfg(data, out, epochs=1, subsample="first", **kw))
    (ckpt,) = (out / "checkpoints").glob("ckpt-*.pt")
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["subsample"]  # as the code before the option saved it
    torch.save(state, ckpt)
    older = r"other settings \(subsample='first' there, 'hash' here\): resume with that run's settings \(its "
    with pytest.raises(ConfigError, match=older + r"config.yaml, and --subsample first\)"):
        train(tiny_cfg(data, out, epochs=2, resume="auto", **kw))
    summary = train(tiny_cfg(data, out, epochs=2, resume="auto", subsample="first", **kw))
    assert summary["epochs"] == 2 and summary["global_steps"] == 8
    unlimited = tiny_cfg(data, tmp_path / "x", subsample="first")
    assert unlimited.differences({**unlimited.to_dict(), "subsample": "hash"}) == []
    assert tiny_cfg(data, tmp_path / "x", **kw).differences({**unlimited.to_dict(), **kw}) == [
        "subsample='first' there, 'hash' here"
    ]


def test_plain_progress_lines_give_the_epochs_eta():
    """Off a terminal, every log_every-th step prints a line with the stats and the time the epoch has left at the
    pace so far (here 2 s a step on a simulated clock)."""
    import io

    from mobilenets.engine import Progress

    now = [100.0]
    stream = io.StringIO()
    progress = Progress(10, "epoch 1/3", enabled=True, log_every=4, stream=stream, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0
        progress.update(loss=1.23456, lr=0.1)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "epoch 1/3 step 4/10 loss=1.235 lr=0.1 eta=12s",
        "epoch 1/3 step 8/10 loss=1.235 lr=0.1 eta=4s",
        "epoch 1/3 step 10/10 loss=1.235 lr=0.1 eta=0s",
    ]
    quiet = io.StringIO()
    muted = Progress(10, "epoch 1/3", enabled=False, log_every=1, stream=quiet)
    muted.update(loss=1.0)
    assert quiet.getvalue() == ""


def test_a_resumed_epoch_counts_its_steps_as_the_epoch_s_and_a_finished_run_says_it_is_complete(tmp_path, capsys):
    """A run resumed mid-epoch used to number its steps from the resume point ("epoch 1/2 step 5/5" where an
    uninterrupted run ends the epoch at "step 10/10", at other steps than its lines), and a resume of a finished
    6-epoch run said "epoch 7, step 0 of the epoch". The steps are the epoch's, the lines at the uninterrupted run's
    steps with the ETA from the steps taken since; a finished run says it is complete, and what the resume does."""
    import io

    from mobilenets.engine import Progress

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 20, 4)  # 10 steps of 4 per epoch
    kw = dict(epochs=2, batch_size=4, deterministic=True, resolution=32, quiet=False, log_every=5)
    train(tiny_cfg(data, tmp_path / "whole", **kw))
    steps = re.compile(r"^(epoch \d/2 step \d+/\d+) ", re.M)
    whole = steps.findall(capsys.readouterr().err)
    assert whole == [f"epoch {e}/2 step {n}/10" for e in (1, 2) for n in (5, 10)]
    out = tmp_path / "run"
    train(tiny_cfg(data, out, max_steps=5, **kw))  # stopped mid-epoch 1, with a checkpoint there
    capsys.readouterr()
    train(tiny_cfg(data, out, resume="auto", **kw))
    err = capsys.readouterr().err
    assert steps.findall(err) == whole[1:]  # "epoch 1/2 step 10/10", not "step 5/5"
    assert re.search(r"resumed from \S+ckpt-000000005.pt: epoch 1/2, after step 5 of its 10\n", err)
    train(tiny_cfg(data, out, resume="auto", **kw))
    err = capsys.readouterr().err
    assert re.search(
        r"resumed from \S+ckpt-000000020.pt: the run is already complete \(2 of 2 epoch\(s\), 20 "
        r"steps\); nothing left to train, its model/ and summary.json are written again from it\n",
        err,
    )
    assert "epoch 3" not in err and "scoring" not in err and not steps.findall(err)
    (out / "summary.json").unlink()  # stopped before its summary: scored once
    train(tiny_cfg(data, out, resume="auto", **kw))
    assert "summary.json does not describe the checkpoint: scoring it on the val split" in capsys.readouterr().err
    # the ETA of a resumed epoch: the pace of its steps taken here (2 s each), not of the epoch's steps so far
    now, stream = [0.0], io.StringIO()
    progress = Progress(10, "epoch 2/3", enabled=True, log_every=4, stream=stream, clock=lambda: now[0], done=6)
    for _ in range(4):
        now[0] += 2.0
        progress.update(loss=1.0)
    assert stream.getvalue().splitlines() == ["epoch 2/3 step 8/10 loss=1 eta=4s", "epoch 2/3 step 10/10 loss=1 eta=0s"]


def test_provenance_names_the_checkout_that_tracks_the_package(tmp_path):
    """The commit recorded beside every run is that of the checkout tracking the package's files: this one, or a
    project's that vendors a copy (its commit pins the code). A copy installed untracked inside another repository
    (a user's project venv) records none rather than that repository's commit. The same rule as bench rows'."""
    from mobilenets.bench import git_commit as bench_commit
    from mobilenets.trainer import git_commit

    here = git_commit()
    if here["commit"] is None:
        pytest.skip("not running from a git checkout of mobilenets")
    assert len(here["commit"]) == 40
    assert bench_commit() == here["commit"][:7] + ("-dirty" if here["dirty"] else "")
    other = tmp_path / "project"
    (other / "lib" / "mobilenets").mkdir(parents=True)
    (other / "lib" / "mobilenets" / "x.py").write_text("")
    (other / "README").write_text("a project of its own\n")
    git = ["git", "-C", str(other), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    for cmd in (["init", "-q"], ["add", "README"], ["commit", "-qm", "a project of its own"]):
        subprocess.run([*git, *cmd], check=True)
    installed = (other / "lib" / "mobilenets").resolve()
    assert git_commit(installed) == {"commit": None, "dirty": None}  # untracked there
    for cmd in (["add", "lib"], ["commit", "-qm", "vendor mobilenets"]):
        subprocess.run([*git, *cmd], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(installed) == {"commit": head, "dirty": False}
    (other / "README").write_text("changed\n")
    assert git_commit(installed) == {"commit": head, "dirty": True}


@pytest.mark.parametrize("device", ["tpu", "cuda:0", "CPU"])
def test_evaluation_names_a_device_it_cannot_use(tmp_path, device):
    """It used to run on the CPU without a word."""
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "w")
    with pytest.raises(ValueError, match=rf"device='{device}' is not allowed: device must be auto, cpu or cuda"):
        evaluate_weights(tmp_path / "w", tmp_path, device=device)


def test_a_run_folder_in_use_is_refused_and_a_killed_writes_temporaries_go(tmp_path):
    """Two runs in one folder would interleave their checkpoints: the second stops with one line naming the holder,
    before reading or writing anything. A SIGKILL during a checkpoint write leaves a temporary file; the next run
    holding the folder removes it. The lock goes with its holder: the same folder trains once it is released."""
    from mobilenets.atomic import lock_folder
    from mobilenets.trainer import train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    cfg = tiny_cfg(data, tmp_path / "r", resolution=32, max_steps=1)
    held = lock_folder(tmp_path / "r")
    with pytest.raises(
        ConfigError, match=rf"out='.*r' is not allowed now: .*r is in use by another run \(pid {os.getpid()}\)"
    ):
        train(cfg)
    assert not (tmp_path / "r" / "config.yaml").exists()
    held.close()
    with pytest.raises(ConfigError, match=r"batch_size=1 is not allowed: BatchNorm needs at least 2 images"):
        train(dataclasses.replace(cfg, batch_size=1))
    train(cfg)
    # a live run's folder holds checkpoints too: a second run is told it is busy, not to resume the live one
    held = lock_folder(tmp_path / "r")
    with pytest.raises(ConfigError, match=rf"is not allowed now: .*r is in use by another run \(pid {os.getpid()}\)"):
        train(cfg)
    held.close()
    names = (".ckpt-000000009.partial-otherhost-7-x1y2.pt", ".ckpt-000000009.pt.x1y2.tmp")  # the second: earlier
    stale = [tmp_path / "r" / "checkpoints" / name for name in names]  # versions' name for a temporary file
    for leftover in stale:
        leftover.write_bytes(b"half a checkpoint")
    assert train(dataclasses.replace(cfg, max_steps=2, resume="auto"))["global_steps"] == 2
    assert not any(p.exists() for p in stale) and lock_folder(tmp_path / "r") is not None  # released at the end


def test_env_json_records_the_command_and_which_files_trained(tmp_path):
    from mobilenets.trainer import split_fingerprint, train

    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    train(tiny_cfg(data, tmp_path / "r", resolution=32, max_steps=1))
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["data"]["train"]["images"] == 16 and env["data"]["val"] == split_fingerprint(scan_split(data / "val"))
    assert isinstance(env["command"], list) and env["command"]
    moved = shutil.copytree(data, tmp_path / "elsewhere")  # the same files anywhere: the same fingerprint
    assert split_fingerprint(scan_split(moved / "train")) == env["data"]["train"]
    next((moved / "train" / CLASSES4[1]).iterdir()).unlink()
    assert split_fingerprint(scan_split(moved / "train"))["files_sha256"] != env["data"]["train"]["files_sha256"]


@pytest.mark.parametrize(
    "blocker, error, why, written",
    [
        ("model", NotADirectoryError, "is a file, not a folder", "model/"),
        ("checkpoints", NotADirectoryError, "is a file, not a folder", "checkpoints/"),
        ("summary.json/", IsADirectoryError, "is a folder", "summary.json"),
        ("metrics.jsonl/", IsADirectoryError, "is a folder", "metrics.jsonl"),
    ],
)
def test_an_output_in_the_way_stops_the_run_before_it_decodes(tmp_path, monkeypatch, blocker, error, why, written):
    """A file named model or checkpoints, or a folder named summary.json, in --out: the run trained to its end (or
    its first checkpoint) and then failed. Now one OSError naming that path, before any image is decoded."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "r"
    out.mkdir()
    if blocker.endswith("/"):
        (out / blocker).mkdir()
    else:
        (out / blocker).write_text("mine")
    monkeypatch.setattr(trainer_module._Run, "_loaders", lambda *a: pytest.fail("decoded before checking --out"))
    with pytest.raises(error) as exc:
        train(tiny_cfg(data, out, resolution=32))
    said = f"{exc.value.filename}: {exc.value.strerror}"  # as the CLI prints it
    assert said == f"{out / blocker.rstrip('/')}: {why} (the run writes its {written} there; give another --out)"
    assert sorted(p.name for p in out.iterdir()) == [blocker.rstrip("/")]  # nothing written, no .lock left


def test_an_unwritable_out_or_output_is_a_machine_failure_exit_1(tmp_path, capsys, unwritable):
    """An --out that cannot be made (read-only filesystem, permissions) exited 2 as a bad value; README: an output
    path that cannot be written is a failure of the machine, status 1, one line naming the path. The same for a
    folder of the run (here checkpoints/, a link to such a folder), found before training, not at its checkpoint,
    and for reproduce --out."""
    unwritable, _ = unwritable
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    args = ["train", "--data", str(data), "--alpha", "0.25", "--resolution", "32", "--batch-size", "8", "--workers",
            "0", "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(unwritable / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mobilenets train: error: {unwritable / 'run'}: the run folder cannot be made there (")
    assert err.count("\n") == 1, err
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoints").symlink_to(unwritable, target_is_directory=True)
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: {out / 'checkpoints'}: " in err and "(the run writes its checkpoints/ there" in err, err
    assert err.count("\n") == 1 and not (out / "config.yaml").exists()
    # reproduce's --out, which every run writes under: status 1 as well (a file in the way stays status 2)
    assert main(["reproduce", "--data", str(data), "--budget", "quick", "--out", str(unwritable / "rep")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mobilenets reproduce: error: {unwritable / 'rep'}: cannot create that folder (")
    assert err.count("\n") == 1, err


def test_a_process_whose_peer_stopped_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """When one process of a torchrun job fails (its own one line says why), the others meet a closed connection in
    their next collective: that used to print a 45-line gloo traceback on each of them, burying the cause."""
    gone = RuntimeError("[../gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:25222: Connection reset by peer")

    def peer_gone(cfg):
        raise gone

    monkeypatch.setattr(trainer_module, "train", peer_gone)
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another process of this torchrun job stopped" in err
    # NCCL's (torch.distributed.DistBackendError, a RuntimeError), which a network failure raises too
    gone = torch.distributed.DistBackendError(
        "NCCL error in: ProcessGroupNCCL.cpp:1347, remote process exited or there was a network error, NCCL version "
        "2.18.5\nncclRemoteError: A call failed possibly due to a network error or a remote process exiting"
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another process of this torchrun job stopped" in err
    assert "or the network between them failed (NCCL: remote process exited" in err
    monkeypatch.setenv("WORLD_SIZE", "1")  # alone, the same error is a bug: its traceback is the report
    with pytest.raises(RuntimeError, match="remote process exited"):
        main(args)


@pytest.mark.slow
def test_an_output_in_the_way_stops_every_ddp_process(tmp_path):
    """Only rank 0 writes, so only it probes the outputs: every process stops with it, none waits for the others."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    out = tmp_path / "r"
    out.mkdir()
    (out / "model").write_text("mine")
    res = torchrun(["train", "--data", str(data), "--out", str(out), "--alpha", "0.25", "--resolution", "32",
                    "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"])  # fmt: skip
    assert res.returncode != 0 and f"{out / 'model'}: is a file, not a folder" in res.stderr, res.stderr[-2000:]
    assert "the main process cannot write the run there" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model"]


def test_a_resume_into_a_new_folder_from_another_run_s_checkpoint(tmp_path):
    """--resume of another folder's checkpoint into a new --out: from the finished run's last one it failed (no
    metrics.jsonl there) and left config.yaml, env.json and .lock behind; from a mid-epoch one the summary said
    "epochs": 1 (this folder's rows) beside best_epoch 3 (the other run's, whose model_best/ is not here). The
    summary counts the checkpoint's epochs; best and metrics are those of the epochs this folder has."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 16, 4)  # 4 steps per epoch
    # the largest seed: the sampler seeds epoch 2 with seed + 1, beyond torch.manual_seed's range if seeds reached it
    kw = dict(epochs=2, resolution=32, seed=2**63 - 1)
    first = train(tiny_cfg(data, tmp_path / "p", save_every=2, keep_checkpoints=10, **kw))
    ckpts = tmp_path / "p" / "checkpoints"
    done = train(tiny_cfg(data, tmp_path / "q", resume=str(ckpts / "ckpt-000000008.pt"), **kw))
    assert (done["epochs"], done["global_steps"]) == (2, 8) == (first["epochs"], first["global_steps"])
    assert not (tmp_path / "q" / "metrics.jsonl").exists()  # no epoch trained here
    assert done["final_top1"] is not None and done["best_epoch"] == 2 and done["val_images"] == 8
    assert load(tmp_path / "q" / "model_best").spec.labels == tuple(CLASSES4[:2])
    middle = train(tiny_cfg(data, tmp_path / "r", resume=str(ckpts / "ckpt-000000006.pt"), **kw))  # epoch 2, step 2
    assert (middle["epochs"], middle["global_steps"], middle["best_epoch"]) == (2, 8, 2)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2] and middle["final_top1"] == rows[-1]["val_top1"]
    assert load(tmp_path / "r" / "model_best").spec.labels == tuple(CLASSES4[:2])


def test_a_run_s_config_yaml_as_a_recipe_trains_afresh(tmp_path):
    """A run's config.yaml records the resume it started with: ``--config RUN/config.yaml --out NEW`` continued that
    checkpoint in NEW. A YAML file's resume is ignored now; the command line's still counts."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    kw = dict(resolution=32, max_steps=1)
    train(tiny_cfg(data, tmp_path / "p", **kw))
    ckpt = next((tmp_path / "p" / "checkpoints").glob("ckpt-*.pt"))
    train(tiny_cfg(data, tmp_path / "q", resume=str(ckpt), **{**kw, "max_steps": 2}))
    recipe = tmp_path / "q" / "config.yaml"
    assert load_yaml(recipe)["resume"] == str(ckpt)  # the run's record is kept
    said = []
    fresh = train(resolve(str(recipe), say=said.append, out=str(tmp_path / "again")))
    assert fresh["resumed_from"] is None and fresh["global_steps"] == 2
    assert said == [f"note: {recipe}: resume={str(ckpt)!r} is ignored (a recipe trains afresh; give --resume to "
                    "resume)"]  # fmt: skip
    assert resolve(str(recipe), say=said.append, out=str(tmp_path / "x"), resume="auto").resume == "auto"
    assert len(said) == 1  # the command line's resume replaces the file's: nothing ignored to say


def test_weights_name_their_run_relative_to_themselves_not_the_trainers_directories(tmp_path, monkeypatch):
    """RUN/model's provenance held the run folder absolute (/home/<user>/<project>/runs/x): published weights showed
    the trainer's directory layout, and named nothing once the run folder moved. It is now relative to the weights
    folder, so `training_run` finds the run wherever it goes and from any working directory, and weights copied away
    from their run name none; an absolute run_dir written by earlier versions still reads."""
    data = copy_subset(tmp_path / "d", CLASSES4[:2], 8, 2)
    monkeypatch.chdir(tmp_path)
    train(tiny_cfg(data, Path("runs") / "x", max_steps=1, resolution=32))
    for folder in ("model", "model_best"):
        text = (tmp_path / "runs" / "x" / folder / "config.json").read_text()
        assert read_config(tmp_path / "runs" / "x" / folder)["provenance"]["run_dir"] == ".."
        assert str(tmp_path) not in text and "runs" not in text, text
    moved = tmp_path / "elsewhere" / "x2"
    moved.parent.mkdir()
    (tmp_path / "runs" / "x").rename(moved)
    monkeypatch.chdir(data)
    assert training_run(moved / "model") == training_run(moved / "model_best") == moved.resolve()
    assert training_run(os.path.relpath(moved / "model")) == moved.resolve()  # a relative path, read from here
    (tmp_path / "link").symlink_to(moved / "model")
    assert training_run(tmp_path / "link") == moved.resolve()  # .. of the folder linked to, as the OS reads it
    shutil.copytree(moved / "model", tmp_path / "published")
    assert training_run(tmp_path / "published") is None  # tmp_path holds no run's config.yaml
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), tmp_path / "converted")
    assert training_run(tmp_path / "converted") is None  # no run saved it
    config = json.loads((tmp_path / "published" / "config.json").read_text())
    config["provenance"]["run_dir"] = str(moved)  # as earlier versions wrote it
    (tmp_path / "published" / "config.json").write_text(json.dumps(config))
    assert training_run(tmp_path / "published") == moved.resolve()


def test_a_run_s_config_yaml_is_a_recipe_from_any_directory(tmp_path, monkeypatch):
    """config.yaml recorded --data d --init w as typed: ``--config RUN/config.yaml --out NEW`` from another directory
    failed (no d there) or, worse, trained on another folder of the same name. The run records the paths absolute
    (and env.json the directory its typed command ran in), so the recipe trains on that run's files from anywhere."""
    a, b = (tmp_path / "a").resolve(), (tmp_path / "b").resolve()  # as os.getcwd() names them after a chdir
    copy_subset(a / "d", CLASSES4[:2], 8, 2)
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), a / "w")
    copy_subset(b / "d", CLASSES4[2:], 8, 2)  # another dataset and other weights of the same names where it is reused
    save(MobileNetV1(alpha=0.5, num_classes=2).eval(), b / "w")
    monkeypatch.chdir(a)
    assert main(["train", "--data", "d", "--init", "w", "--out", "run", "--resolution", "32", "--batch-size", "8",
                 "--epochs", "1", "--max-steps", "1", "--workers", "0", "--threads", "1", "--quiet"]) == 0  # fmt: skip
    saved = load_yaml(a / "run" / "config.yaml")
    assert (saved["data"], saved["init"], saved["out"]) == (str(a / "d"), str(a / "w"), str(a / "run"))
    env = json.loads((a / "run" / "env.json").read_text())
    assert env["cwd"] == str(a)  # where the command as typed (env["command"]) reads its relative paths
    summary = json.loads((a / "run" / "summary.json").read_text())
    assert (summary["weights"], summary["best_weights"]) == (str(a / "run" / "model"), str(a / "run" / "model_best"))
    assert training_run(a / "run" / "model") == a / "run"
    monkeypatch.chdir(b)
    assert main(["train", "--config", str(a / "run" / "config.yaml"), "--out", "again", "--quiet"]) == 0
    again = load_yaml(b / "again" / "config.yaml")
    assert (again["data"], again["init"], again["out"]) == (str(a / "d"), str(a / "w"), str(b / "again"))
    assert json.loads((b / "again" / "env.json").read_text())["data"] == env["data"]  # the same files, not b/d's
    model = load(b / "again" / "model")
    assert model.spec.labels == tuple(CLASSES4[:2]) and model.spec.alpha == 0.25  # a/w's width, not b/w's


def test_a_resume_takes_a_path_written_another_way_as_the_same(tmp_path, monkeypatch):
    """Started as --data d --init w in a, resumed as --data a/d --init a/w from elsewhere (and back): the same data
    and weights, so not refused as "other settings" (init was compared as text). Other weights (a copy) still are,
    and a checkpoint of an earlier version (paths as typed) resumes from the directory it was started in."""
    a, elsewhere = (tmp_path / "a").resolve(), (tmp_path / "elsewhere").resolve()
    elsewhere.mkdir(parents=True)
    copy_subset(a / "d", CLASSES4[:2], 8, 2)  # 2 steps per epoch at batch 8
    save(MobileNetV1(alpha=0.25, num_classes=2).eval(), a / "w")
    kw = dict(resolution=32, epochs=3)
    monkeypatch.chdir(a)
    train(tiny_cfg("d", "run", init="w", max_steps=1, **kw))
    monkeypatch.chdir(elsewhere)
    resumed = train(tiny_cfg(a / "d", a / "run", init=str(a / "w"), max_steps=2, resume="auto", **kw))
    assert resumed["global_steps"] == 2 and resumed["resumed_from"].startswith(str(a / "run" / "checkpoints"))
    monkeypatch.chdir(a)  # saved absolute, given relative
    assert train(tiny_cfg("d", "run", init="w", max_steps=3, resume="auto", **kw))["global_steps"] == 3
    shutil.copytree(a / "w", a / "w2")  # the same bytes, but other weights as far as the run knows: as before
    with pytest.raises(ConfigError, match=re.escape(f"init={str(a / 'w')!r} there, {str(a / 'w2')!r} here")):
        train(tiny_cfg("d", "run", init="w2", max_steps=4, resume="auto", **kw))
    ckpt = sorted((a / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = torch.load(ckpt, weights_only=False)
    state["config"].update(data="d", out="run", init="w")  # as earlier versions saved them
    torch.save(state, ckpt)
    monkeypatch.chdir(elsewhere)  # where its 'w' names another folder (none): refused, as it was
    with pytest.raises(ConfigError, match=re.escape(f"init='w' there, {str(a / 'w')!r} here")):
        train(tiny_cfg(a / "d", a / "run", init=str(a / "w"), max_steps=4, resume="auto", **kw))
    monkeypatch.chdir(a)
    assert train(tiny_cfg(a / "d", a / "run", init=str(a / "w"), max_steps=4, resume="auto", **kw))["global_steps"] == 4


def test_absolute_paths_keep_a_torchvision_teacher_s_name_and_compare_by_what_they_name(tmp_path, monkeypatch):
    """`TrainConfig.absolute_paths` (what a run records) anchors every path at the working directory but leaves a
    torchvision teacher's name and ``resume: auto``; `differences` takes two spellings of one path as the same."""
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    (here / "t").mkdir()
    (here / "tw.pt").write_bytes(b"")
    cfg = TrainConfig(data="d", out="o/", init="../x/w", teacher="t", resume="auto").absolute_paths()
    assert (cfg.data, cfg.out, cfg.init) == (str(here / "d"), str(here / "o"), str(here / ".." / "x" / "w"))
    assert (cfg.teacher, cfg.resume) == (str(here / "t"), "auto")
    tv = TrainConfig(teacher="resnet18", teacher_weights="tw.pt").validate().absolute_paths()  # the two together
    assert (tv.teacher, tv.teacher_weights) == ("resnet18", str(here / "tw.pt"))
    assert cfg.differences({"init": str(here.parent / "x" / "w"), "teacher": "./t", "data": "/elsewhere",
                            "teacher_resolution": "own"}) == []  # fmt: skip
    assert tv.differences({"teacher": "resnet18", "teacher_weights": "tw.pt"}) == []
    assert cfg.differences({"init": "w"}) == [f"init='w' there, {str(here / '..' / 'x' / 'w')!r} here"]
    # a distillation run saved before teacher_resolution existed fed a teacher of our weights the student's batch
    # as it was: resumed under today's default its targets would change mid-run, so the resume names it (a
    # torchvision teacher by name is never resized)
    assert cfg.differences({"teacher": "./t"}) == ["teacher_resolution='student' there, 'own' here"]
    assert dataclasses.replace(cfg, teacher_resolution="student").differences({"teacher": "./t"}) == []
    assert tv.differences({"teacher": "resnet18"}) == []
    # a name that is no folder here is a torchvision model's: not the same as a folder of that name saved elsewhere
    assert TrainConfig(teacher="resnet18").differences({"teacher": str(here / "resnet18")}) != []
    assert TrainConfig(teacher="resnet18").absolute_paths().teacher == "resnet18"
    # a path given then and none now (or another type) is a difference, not a path to compare
    assert TrainConfig().differences({"init": "w", "epochs": 3}) == [
        "init='w' there, None here",
        "epochs=3 there, 10 here",
    ]


def test_a_refused_resume_names_the_first_four_differences_and_counts_the_rest():
    """The resume refusal's message (`first_differences`) stays one readable line however many settings changed."""
    saved = {"epochs": 3, "lr": 0.1, "seed": 5, "momentum": 0.5, "batch_size": 8}
    differ = TrainConfig().differences(saved)
    assert len(differ) == 5
    assert first_differences(differ) == "; ".join(differ[:4]) + " and 1 more"
    assert first_differences(differ[:4]) == "; ".join(differ[:4])


def test_a_recipe_that_is_not_text_is_one_error_naming_it(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"lr: 0.1\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"r\.yaml: not a YAML text file \(invalid start byte at byte 8\)"):
        load_yaml(recipe)


def test_defaults_follow_torchvision_s_crop_flip_every_epoch_and_take_no_speed_option():
    """Without a recipe a run augments as torchvision's RandomResizedCrop does by default (scale from 0.08, ratio
    3/4 to 4/3) with flips, checkpoints every epoch, and runs PyTorch's plain path: the speed options (layouts,
    padding, kernels, compilation) are for a machine that was measured to gain from them."""
    crop, cfg = v2.RandomResizedCrop(8), TrainConfig()
    assert (cfg.scale_min, cfg.ratio_min, cfg.ratio_max) == (crop.scale[0], *crop.ratio) and cfg.hflip is True
    assert cfg.checkpoint_every == 1 and cfg.seed == 0
    speed = (cfg.channels_last, cfg.pad_stem, cfg.compile, cfg.step_graph, cfg.data_on_device, cfg.depthwise)
    assert speed == (False, False, False, False, False, "conv")


@pytest.mark.parametrize(
    "name, edge, beyond",
    [
        ("lr", 1e-9, 0.0),  # a rate of 0 trains nothing
        ("ratio_max", 1.0, 0.0),  # named itself, not as the ratio_min it leaves no room for
        ("cache_budget_gb", 0.5, -0.5),  # 0.5 GiB is a budget; 0 never caches under auto
        ("ema_decay", 0.0, 1.0),  # 0 is off; at 1 the average would never move from the initial weights
        ("betas", [0.0, 0.999], [0.9, 1.0]),  # Adam's betas in [0, 1): at 1 a moment never forgets
        ("seed", 2**63 - 1, 2**63),  # torch's generators take the largest; the sampler adds the epoch
    ],
)
def test_option_bounds_take_their_edge_and_refuse_the_value_beyond(name, edge, beyond):
    """Each bound where the field's help and error message put it: the edge value trains, the next is one error
    naming the option and the value."""
    assert getattr(resolve(**{name: edge}), name) == edge
    with pytest.raises(ConfigError, match=rf"^{name}={re.escape(repr(beyond))} is not allowed: {name} must be "):
        resolve(**{name: beyond})


def test_a_full_disk_while_logging_an_epoch_names_the_log(tmp_path, monkeypatch):
    import errno
    from types import SimpleNamespace

    from mobilenets import trainer

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.os, "fsync", full)
    with pytest.raises(OSError) as err:
        trainer._Run._append_metrics(SimpleNamespace(out=tmp_path), {"epoch": 1})
    assert err.value.filename == str(tmp_path / "metrics.jsonl") and err.value.errno == errno.ENOSPC
