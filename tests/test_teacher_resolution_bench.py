"""benchmarks/teacher_resolution.py on a few real images: the report it writes (the README's distillation figures
come from its full run), and its one-line refusals."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenets.complexity import count_complexity
from mobilenets.data import shared_data_root
from mobilenets.registry import model_spec

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "teacher_resolution.py"
TFLITE = shared_data_root() / "mobilenet-weights" / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
MANIFEST = shared_data_root() / "imagenette" / "manifest.csv"


@pytest.mark.slow
def test_a_small_run_writes_a_report_where_resizing_moves_the_teacher_toward_its_own_resolution(tmp_path):
    if not (TFLITE.is_file() and MANIFEST.is_file()):
        pytest.skip(f"shared data absent: {shared_data_root()} has no Imagenette or TFLite weights")
    argv = [sys.executable, str(SCRIPT), "--max-per-class", "2", "--teachers", "0.25_128", "--sizes", "96", "160",
            "--time-teacher", "0.25_128", "--time-size", "96", "--batch", "3", "--rounds", "1",
            "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report_file,) = tmp_path.glob("teacher-resolution-*-t1-n2.json")
    report = json.loads(report_file.read_text())
    (row,) = report["accuracy"]
    assert row["teacher"] == "mobilenet_v1_0.25_128_quant" and row["resolution"] == 128 and row["images"] == 20
    assert "from_160" not in row  # a batch above the teacher's size is not resized: nothing to compare
    assert row["native"]["kl_t4_vs_native"] == 0  # the reference is the teacher at its own size itself
    fed = row["from_96"]
    for feed in ("direct", "resized"):
        assert 0 <= fed[feed]["top1_1000"] <= fed[feed]["top1_10"] <= 100  # 10-way is the easier argmax
    # the adapter's resize reaches the teacher: its distribution moves toward its own at 128 (2x on full val)
    assert 0 < fed["resized"]["kl_t4_vs_native"] < fed["direct"]["kl_t4_vs_native"]
    spec = model_spec("mobilenet_v1_025_128")
    want = count_complexity(spec, 128).macs / count_complexity(spec, 96).macs
    assert fed["macs_ratio_resized_over_direct"] == pytest.approx(want, abs=1e-3) and 1.6 < want < (128 / 96) ** 2
    timed = report["timing"]
    assert timed["batch"] == 3 and timed["student"] == "0.25-96" and timed["macs_ratio"] == pytest.approx(want, 1e-3)
    names = {"teacher_direct", "teacher_resized", "resize_only", "step_no_teacher", "step_direct", "step_resized"}
    assert set(timed["rows"]) == names and all(r["median_ms"] > 0 and r["runs"] == 1 for r in timed["rows"].values())
    assert "--max-per-class 2" in report["command"] and report["environment"]["torch"]
    assert report["dataset"] == "imagenette val, first 2 per class" and report["temperature"] == 4


BAD = [
    (["--teachers", "0.3_100"], "'0.3_100'"),
    (["--sizes", "0"], "--sizes 0"),
    (["--max-per-class", "0"], "--max-per-class 0"),  # it kept no image
]


@pytest.mark.parametrize("args, named", BAD)
def test_a_bad_value_is_refused_in_one_line_naming_it(tmp_path, args, named):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and named in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_an_out_that_cannot_be_a_folder_is_refused_in_one_line_before_the_run(tmp_path):
    """--out naming a file: the full run measured for minutes, then lost its report in a FileExistsError traceback."""
    taken = tmp_path / "taken"
    taken.write_text("")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(taken), "--max-per-class", "1", "--teachers",
                           "0.25_128", "--sizes", "96", "--time-teacher", "0.25_128", "--rounds", "1", "--batch", "1"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr == f"--out {taken}: cannot create that folder (File exists)\n", proc
    assert proc.stdout == ""  # nothing measured


def test_the_readme_quotes_the_committed_results_file():
    """Every figure the README's distillation comment quotes is the committed run's, rounded as printed there (they
    came from a script outside the repository before; a re-run that changes them must change the README)."""
    repo = Path(__file__).parents[1]
    name = "results/teacher-resolution-amd-epyc-2c-t1.json"
    report = json.loads((repo / name).read_text())
    (row,) = [r for r in report["accuracy"] if r["teacher"] == "mobilenet_v1_0.75_192_quant"]
    assert row["images"] == 3925 and report["timing"]["batch"] == 64 and report["threads"] == 1
    comment = " ".join(line.lstrip("# ") for line in (repo / "README.md").read_text().splitlines())
    fed = row["from_128"]
    want = (f"128 px crops scored {fed['direct']['top1_10']:.1f}% directly, {fed['resized']['top1_10']:.1f}% resized, "
            f"on Imagenette val's 10 classes; {fed['macs_ratio_resized_over_direct']:.2f}x its forward's MACs, and a "
            f"0.25-128 student's distillation step took {report['timing']['step_ratio']:.1f}x as long on one CPU "
            f"thread, batch 64: benchmarks/teacher_resolution.py, {name};")  # fmt: skip
    assert want in comment, want
