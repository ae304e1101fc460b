import importlib.util
import json
import signal
import subprocess
import sys
import time

import pytest

from mobilenets.cli import main
from mobilenets.complexity import count_complexity

from .conftest import REPO


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json(capsys):
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["mobilenet_v1_100"]["macs_M"] == pytest.approx(568.7)
    assert rows["mobilenet_v1_075_160"]["params_M"] == pytest.approx(2.568)


def test_summary_totals_match_list(capsys):
    _, out, _ = run(capsys, "list", "--format", "json")
    listed = next(r for r in json.loads(out) if r["name"] == "mobilenet_v1_075_160")
    code, out, _ = run(capsys, "summary", "--alpha", "0.75", "--resolution", "160", "--format", "json")
    summary = json.loads(out)
    assert code == 0
    assert round(summary["macs"] / 1e6, 1) == listed["macs_M"]
    assert round(summary["params"] / 1e6, 3) == listed["params_M"]
    assert sum(layer["macs"] for layer in summary["layers"]) == summary["macs"]
    code, out, _ = run(capsys, "summary", "--alpha", "0.75", "--resolution", "160")
    assert "166.4M MACs" in out and "Conv dw / s2" in out and "multiply-accumulates" in out
    assert "mobilenet_v1_075_160 (mobilenet_v1_100 with alpha=0.75, resolution=160):" in out  # the model it counted
    # the totals line is print(count_complexity(...))'s, not a second wording of it
    label = "mobilenet_v1_075_160 (mobilenet_v1_100 with alpha=0.75, resolution=160)"
    counted = str(count_complexity("mobilenet_v1_075_160")).splitlines()[-2]
    assert counted.replace("mobilenet_v1_075_160", label, 1) in out.splitlines()


def test_summary_csv(capsys):
    code, out, _ = run(capsys, "summary", "mobilenet_v1_shallow", "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("index,name,type_stride")
    assert len(lines) == 1 + 1 + 16 + 3 + 1  # header, stem, 8 blocks x 2, pool/fc/softmax, total


def test_paper_json_fields(capsys):
    code, out, _ = run(capsys, "paper", "--format", "json")
    rows = json.loads(out)
    assert code == 0
    assert {"table", "row", "quantity", "published", "computed", "status"} <= set(rows[0])
    assert not [r for r in rows if r["status"] == "MISMATCH"]
    code, out, _ = run(capsys, "paper", "--table", "6")
    assert "0.25 MobileNet-224" in out and "| 41 | 41 |" in out


def test_paper_tables_quote_the_numbers_as_printed(capsys):
    """Table 4 prints 29.3M parameters and Table 3 52.3M mult-adds; the table showed 29.30 and 52.30 (two decimals
    for every float), misquoting the paper and the precision the status is judged at."""
    code, out, _ = run(capsys, "paper", "--table", "4")
    assert code == 0 and "| params_M | 29.3 | 29.3 | 0.0 | match |" in out and "29.30" not in out
    code, out, _ = run(capsys, "paper", "--table", "3")
    assert "| mult_adds_M | 52.3 | 52.3 | 0.0 | match |" in out and "| params_M | 0.27 | 0.27 | 0.00 | match |" in out
    code, out, _ = run(capsys, "paper", "--table", "4", "--format", "table")
    lines = out.splitlines()
    header, row = lines[2], next(line for line in lines if "Conv MobileNet  params_M" in line)
    for column, value in (("published", "29.3"), ("difference", "0.0")):  # numbers right-aligned, as numbers are
        assert header.index(column) + len(column) == row.index(f" {value} ") + 1 + len(value)
    code, out, _ = run(capsys, "paper", "--format", "json")
    assert {r["decimals"] for r in json.loads(out) if r["table"] == "4"} == {0, 1}  # JSON keeps the numbers


def test_tables_align_numbers_right_words_left_and_refuse_an_unknown_format():
    """Every table the commands print goes through `render`: a column of numbers (ints, floats, numbers formatted
    already, and missing values shown as "-") is right-aligned so that digits line up; words and True/False are
    left-aligned; floats of 1000 and more get thousands separators, tiny ones keep 4 significant digits."""
    from mobilenets.formatting import counted, metric, render

    rows = [
        {"model": "a", "macs": 1000.0, "ok": True, "top1": None, "params": "4,866", "tiny": 0.001234},
        {"model": "bb", "macs": 0.5, "ok": False, "top1": 70.25, "params": "12", "tiny": 0.01},
    ]
    assert render(rows).splitlines() == [
        "model      macs  ok      top1  params      tiny",
        "-----  --------  -----  -----  ------  --------",
        "a      1,000.00  True       -   4,866  0.001234",
        "bb         0.50  False  70.25      12      0.01",
    ]
    assert render(rows[:1], "md", columns=["model", "top1"]) == "| model | top1 |\n|---|---|\n| a | - |"
    assert render(rows[1:], "csv") == "model,macs,ok,top1,params,tiny\nbb,0.5,False,70.25,12,0.01"  # one row: its keys
    with pytest.raises(ValueError, match="format='xml' is not allowed"):
        render(rows, "xml")
    # the words of progress lines and reports: "1 epoch" but "0 epochs"; a score with 4 decimals, or n/a
    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert (metric(0.123456), metric(0.5, 2), metric(None)) == ("0.1235", "0.50", "n/a")


@pytest.mark.parametrize(
    "argv,words",
    [
        (["summary", "--alpha", "0"], ["alpha=0.0", "(0, 2]"]),
        (["summary", "--resolution", "16"], ["resolution=16", ">= 32"]),
        (["summary", "--output-stride", "4"], ["output_stride=4"]),
        (["summary", "--variant", "deep"], ["variant='deep'"]),
        (["summary", "resnet50"], ["unknown model name 'resnet50'"]),
        (["reproduce", "--experiments", ","], ["experiments=''", "table4"]),
        (["reproduce", "--seeds", "0"], ["seeds=0"]),
        (["select", "--fps", "1", "--top", "0"], ["top=0 is not allowed"]),
        (["eval", "--weights", "w", "--data", "d", "--resolution", "0"], ["resolution=0 is not allowed"]),
        (["select", "--fps", "1", "--bench", str(REPO / "README.md")], ["README.md' is not a bench results file"]),
        (
            [
                "train",
                "--config",
                str(REPO / "results" / "reproduce-imagenette-nvidia-h200" / "grid_macs.png"),
                "--data",
                "d",
                "--out",
                "o",
            ],
            ["grid_macs.png: not a YAML text file"],
        ),  # fmt: skip
        (["convert", str(REPO / "src")], ["src: a folder, not a weights file"]),
        (["select", "--fps", "1", "--top", "-2"], ["top=-2 is not allowed"]),
        pytest.param(
            ["bench", "--models", "timm:mobilenetv1", "--runtimes", "ort"],
            ["timm has no model named", "mobilenetv1_"],
            marks=pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed"),
        ),
        (["bench", "--models", "mobilenet_v1_025", "--alpha", "0.25"], ["models=mobilenet_v1_025 with", "not both"]),
    ],
)
def test_bad_values_exit_2_with_message(capsys, argv, words):
    code, _, err = run(capsys, *argv)
    assert code == 2
    for word in words:
        assert word in err
    assert "Traceback" not in err


def test_console_entry_point_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "summary", "--alpha", "3"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "alpha=3.0 is not allowed" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "mobilenets", "summary", "--alpha", "3"],
        capture_output=True, text=True, env={**__import__("os").environ, "MOBILENETS_DEBUG": "1"},
    )  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "SpecError: alpha=3.0" in debug.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--lr", "abc"], "mobilenets train: error: argument --lr: invalid float value: 'abc' (see mobilenets "
                                   "train --help)"),
        (["train", "--resume"], "mobilenets train: error: argument --resume: expected one argument (see mobilenets "
                                "train --help)"),
        (["bogus"], "mobilenets: error: argument COMMAND: invalid choice: 'bogus'"),
        (["bench", "--no-such-option"], "mobilenets bench: error: unrecognized arguments: --no-such-option (see "
                                        "mobilenets bench --help)"),
    ],
)  # fmt: skip
def test_a_command_line_argparse_refuses_is_one_line_exit_2(argv, expected, capsys):
    """argparse's own errors printed the usage block first (54 lines for train); now one line like ours."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(expected), err


def test_under_torchrun_a_rank_other_than_0_names_itself(capsys, monkeypatch):
    """Every process of a torchrun job ends with its own line; they came interleaved and alike."""
    for rank, world, prefix in (("1", "2", "[rank 1] "), ("0", "2", ""), ("1", "1", "")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", world)
        assert main(["summary", "--alpha", "3"]) == 2
        assert capsys.readouterr().err.startswith(f"{prefix}mobilenets summary: error: alpha=3.0 is not allowed")


def test_the_entry_point_and_the_package_import_no_torch():
    """`mobilenets.launch` must be running before torch's import begins, or a Ctrl-C during it is a traceback.
    `cores` (the thread limit) and `train_config` (which states it in its help) stay torch-free too (`cores`)."""
    code = "import sys, mobilenets, mobilenets.launch, mobilenets.cores, mobilenets.train_config; " \
           "print('torch' in sys.modules)"  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    code = "import mobilenets; print(mobilenets.create_model.__module__, mobilenets.weights.__name__)"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert names == ["mobilenets.registry", "mobilenets.weights"]


def test_every_public_name_resolves():
    import mobilenets

    assert sorted(mobilenets.__all__) == sorted(mobilenets._EXPORTS)
    for name in mobilenets.__all__:
        assert getattr(mobilenets, name) is not None
        assert name in dir(mobilenets)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        mobilenets.not_a_name  # noqa: B018


def test_ctrl_c_while_torch_imports_is_one_line_exit_130():
    """A KeyboardInterrupt raised by the import of torch itself (a finder on sys.meta_path raises it, as Ctrl-C
    would during those seconds) ends in one line and status 130, like a Ctrl-C during a command."""
    code = """
import sys
import time
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["mobilenets", "list"]
from mobilenets.launch import main
sys.exit(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip() == "mobilenets: interrupted"


@pytest.mark.parametrize("status", [0, 130])
def test_ctrl_c_during_shutdown_ends_with_the_commands_status_and_no_traceback(status):
    """A Ctrl-C while Python shuts down after the command (an exit handler stands in for torch's clean-up, which
    can take a moment) ends the process at once with the command's status and its output kept, where it printed a
    traceback from inside that clean-up."""
    from .conftest import sigint_default

    code = f"""
import atexit, sys, time
import mobilenets.cli
def run():
    print("the report")
    atexit.register(time.sleep, 30)
    print("ready", file=sys.stderr, flush=True)
    return {status}
mobilenets.cli.main = run
from mobilenets.launch import main
sys.exit(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)  # fmt: skip
    assert proc.stderr.readline() == "ready\n"
    time.sleep(1)  # main has returned: the process is in its exit handler
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == status, err[-2000:]
    assert out == "the report\n"
    assert err == ""


def test_readme_tables_are_generated_from_code():
    from tests.conftest import load_script

    module = load_script("scripts/update_readme.py")
    text = module.README.read_text()
    assert module.updated(text) == text, "README tables drifted: run python scripts/update_readme.py"


def test_make_lint_covers_every_folder_of_python_files():
    """`make lint` checks every top-level folder holding Python files, as the project's lint command does: a folder
    left out (examples/ was) can drift from the style the other folders keep while `make lint` passes."""
    import re

    makefile = (REPO / "Makefile").read_text()
    commands = re.findall(r"^\t\$\(BIN\)/ruff (check|format --check) (.+)$", makefile, flags=re.MULTILINE)
    # hidden folders (.venv, .git) and build outputs are not the project's code
    tops = [d for d in REPO.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in ("build", "dist")]
    folders = {d.name for d in tops if next(d.rglob("*.py"), None) is not None}
    assert len(commands) == 2
    for _, args in commands:
        assert folders <= set(args.split()), f"make lint leaves out {sorted(folders - set(args.split()))}"


def test_readme_command_examples_name_options_that_exist():
    """Every `mobilenets ...` line in the README's shell examples (torchrun's too) parses with today's parser: an
    option renamed or removed in the code fails here rather than in a reader's shell. Optional parts written
    ``[--json]`` are parsed as given, the first of ``a|b|c``; a line with ``...`` is a sketch, not a command. Options
    must be spelled in full (argparse would take a renamed option's old name as an abbreviation of the new one)."""
    import re
    import shlex

    from mobilenets.cli import build_parser

    parser, _ = build_parser(allow_abbrev=False)
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split(" #")[0].strip()
            if "mobilenets " in words and not words.startswith("#") and "..." not in words:
                words = re.sub(r"\[([^\]]+)\]", r"\1", words)  # [--resolution 192] -> --resolution 192
                words = re.sub(r"([^\s|]+)(?:\|[^\s|]+)+", r"\1", words)  # ort|openvino -> ort
                argv = shlex.split(words)
                commands.append(argv[argv.index("mobilenets") + 1 :])
    assert len(commands) >= 40  # the README's examples, found
    with pytest.raises(SystemExit):  # abbreviations are refused here
        parser.parse_args(["train", "--step-gr"])
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README example does not parse: mobilenets {' '.join(argv)}")


@pytest.mark.slow
def test_ctrl_c_stops_reproduce_without_a_traceback_and_the_rerun_resumes(tmp_path):
    """SIGINT (Ctrl-C) during training: exit status 130, one line saying how to resume, no traceback; the same
    command then finishes, keeping the runs that had finished."""
    import os
    import signal
    import time

    from .conftest import data_path, sigint_default

    cmd = [sys.executable, "-m", "mobilenets", "reproduce", "--budget", "quick", "--experiments", "table5",
           "--epochs", "3", "--data", str(data_path("imagenette")), "--out", str(tmp_path / "rep")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    # the first run is under way: 3 epochs (about 5 s each here) leave the signal 0.5 s in a wide margin, and the
    # rerun, which trains both of table5's runs to the end, costs 3 epochs each, not 10 (102 s of a loaded suite)
    for line in proc.stdout:
        if "training" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: finished runs are kept; run the same command again to resume" in err
    assert "Traceback" not in err
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "rep" / "report.md").is_file()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import mobilenets

    folder = tmp_path_factory.mktemp("w") / "w025"
    mobilenets.save(mobilenets.create_model("mobilenet_v1_025_128", num_classes=7, labels=tuple("abcdefg")), folder)
    return folder


def test_unwritable_outputs_are_one_line_naming_the_users_path_exit_1(capsys, tiny_weights, unwritable):
    """Not the staging file, lock file or a traceback: the path given, its strerror, exit status 1 (the machine
    refused, the command line was fine); and nothing left in the folder."""
    from .conftest import DATA

    unwritable, refused = unwritable

    bench = ["bench", "--models", "0.25-64", "--runtimes", "ort", "--threads", "1", "--min-runs", "1", "--min-time",
             "0", "--batch", "0", "--no-progress"]  # fmt: skip
    cases = [
        (["export", str(tiny_weights), "--out", f"{unwritable}/x.onnx"], f"{unwritable}/x.onnx"),
        ([*bench, "--out", f"{unwritable}/x"], f"{unwritable}/x.csv"),
    ]
    hen = DATA / "imagenet-sample" / "n01514859_hen.JPEG"
    if hen.is_file():
        stream = ["stream", str(tiny_weights), str(hen), "--max-frames", "1", "--out", f"{unwritable}/x.mp4"]
        cases.append((stream, f"{unwritable}/x.mp4"))
    tflite = DATA / "mobilenet-weights" / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
    if tflite.is_file():
        cases.append((["convert", str(tflite), "--out", f"{unwritable}/x"], f"{unwritable}/x"))
    for argv, path in cases:
        code, _, err = run(capsys, *argv)
        assert (code, err) == (1, f"mobilenets {argv[0]}: error: {path}: {refused}\n"), (argv, err)
    if unwritable.name == "ro":
        assert not list(unwritable.iterdir())


def test_out_of_memory_is_one_line_naming_the_options(capsys, tiny_weights, tmp_path):
    """eval at a 10^7-pixel side asks for about a petabyte, more than the address space (so the allocation fails
    whatever the kernel's overcommit setting): torch's allocator error becomes one line with the size and the options
    that set it, exit status 1."""
    import shutil

    from .conftest import data_path

    for cls, name in (("a", "n01514859_hen.JPEG"), ("b", "n01494475_hammerhead.JPEG")):
        (tmp_path / cls).mkdir()
        shutil.copy(data_path("imagenet-sample", name), tmp_path / cls)
    argv = ["eval", "--weights", str(tiny_weights), "--data", str(tmp_path), "--resolution", "10000000", "--workers",
            "0", "--batch-size", "1"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("mobilenets eval: error: out of memory (tried to allocate ")
    assert err.endswith(" GiB); reduce --resolution 10000000 or --batch-size 1\n")


def test_bench_checks_its_outputs_before_measuring(capsys, tmp_path, unwritable):
    """A bad --out, --plots or --lut-file fails before any timing (no results table on stdout, which is printed once
    the models are measured), naming the path: a long run's measurements are not thrown away at its end. A path
    that cannot be a file or folder is a usage error (status 2); a folder that refuses writes is the machine's (1)."""
    unwritable, refused = unwritable
    afile, adir = tmp_path / "afile.txt", tmp_path / "adir"
    afile.write_text("notes\n")
    adir.mkdir()
    bench = ["bench", "--models", "0.25-64", "--runtimes", "ort", "--threads", "1", "--min-runs", "1", "--min-time",
             "0", "--batch", "0", "--no-progress"]  # fmt: skip
    cases = [
        (["--out", f"{afile}/"], 2, f"{afile}: is a file, not a folder"),
        (["--out", f"{afile}/x"], 2, f"{afile}/x.csv: {afile} is a file, not a folder"),
        (["--plots", str(afile)], 2, f"{afile}: is a file, not a folder"),
        (["--out", f"{unwritable}/x"], 1, f"{unwritable}/x.csv: {refused}"),
        (["--out", str(tmp_path / "ok"), "--plots", f"{unwritable}/plots"], 1, f"{unwritable}/plots: {refused}"),
        (["--lut", "--lut-file", str(adir)], 2, f"latency table '{adir}' is a folder"),
        (["--lut", "--lut-file", f"{unwritable}/lut.json"], 1, f"{unwritable}/lut.json: {refused}"),
    ]
    for extra, status, message in cases:
        code, out, err = run(capsys, *bench, *extra)
        assert (code, out) == (status, "") and err.startswith(f"mobilenets bench: error: {message}"), (extra, err)
        assert err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile.txt", "ro"]  # nothing written


def test_a_folder_or_device_is_named_as_such_not_as_missing(capsys, tiny_weights, tmp_path):
    """A folder (or /dev/null) where a file is expected was reported as 'no such file' / 'does not exist'."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        # a folder is a source of frames (`infer.frame_files`): an empty one says it holds none
        (["stream", str(tiny_weights), str(empty)], f"{empty}: no image files"),
        (["bench", "--models", "0.25-64", "--accuracy", str(empty)], f"accuracy file '{empty}' is a folder"),
        (["select", "--fps", "30", "--accuracy", str(empty)], f"accuracy file '{empty}' is a folder"),
        (["select", "--fps", "30", "--bench", str(empty)], f"bench results file '{empty}' is a folder"),
        (["select", "--fps", "30", "--lut-file", str(empty)], f"latency table '{empty}' is a folder"),
    ]
    if __import__("os").path.exists("/dev/null"):
        cases.append((["predict", str(tiny_weights), "/dev/null"], "/dev/null: is not a regular file"))
        cases.append((["stream", str(tiny_weights), "/dev/null"], "/dev/null: is not a regular file, expected a video"))
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "MODEL", "photo.jpg"],
        ["stream", "MODEL", "0"],
        ["eval", "--weights", "MODEL", "--data", "DATA"],
        ["train", "--data", "DATA", "--out", "OUT"],
        ["reproduce", "--data", "DATA", "--out", "OUT"],  # a report runs nothing: it takes any count (test_reproduce)
        ["bench", "--lut", "--models", "0.25-128", "--runtimes", "ort", "--lut-file", "LUT"],
        ["select", "--fps", "1", "--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--lut-file", "LUT"],
    ],
)
def test_more_threads_than_4_per_core_are_one_line_naming_the_value(argv, capsys, monkeypatch, tiny_weights, tmp_path):
    """`--threads 100000` crashed predict (oneDNN), hung predict of an ONNX file, select and bench --lut, and ended
    eval with a segmentation fault: libgomp cannot start that many threads. Above 4 per usable core
    (`cores.check_threads`) is refused before anything runs, as one line naming the value and the limit."""
    from mobilenets import cores

    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    paths = {"MODEL": str(tiny_weights), "DATA": str(tmp_path), "OUT": str(tmp_path / "out"),
             "LUT": str(tmp_path / "lut.json")}  # fmt: skip
    code, out, err = run(capsys, *[paths.get(a, a) for a in argv], "--threads", "9")
    limit = "threads must be an integer from 1 to 8 (4 x the 2 core(s) this process may run on)"
    *notes, last = err.splitlines()  # select notes threads beyond the cores first
    assert code == 2 and last.startswith(f"mobilenets {argv[0]}: error: threads=9 is not allowed") and limit in last
    assert notes == (["note: threads=9 beyond the 2 core(s) this process may run on: latencies measured here would "
                      "include the threads' contention"] if argv[0] == "select" else []), err  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no table measured


def test_the_thread_limit_allows_4_per_core_and_select_takes_another_machines_rows(capsys, monkeypatch, tmp_path):
    """4 threads per core are allowed (a little oversubscription is worth timing); select's --threads also names
    rows of a bench file of another machine, which need no measuring here and so no limit."""
    from mobilenets import cores

    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    assert cores.check_threads(8) == 8 and cores.check_threads(1) == 1
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ValueError, match=f"threads={bad!r} is not allowed"):
            cores.check_threads(bad)
    assert cores.check_threads(64, here=False) == 64  # a count of another machine's rows or runs: no core limit
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=f"threads={bad!r} is not allowed: threads must be an integer >= 1"):
            cores.check_threads(bad, here=False)
    row = {"model": "mobilenet_v1_025_128", "alpha": 0.25, "resolution": 128, "runtime": "ort", "threads": 64,
           "latency_ms_median": 1.0}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"rows": [row]}))
    code, out, _ = run(capsys, "select", "--latency-ms", "2", "--threads", "64", "--bench", str(tmp_path / "b.json"),
                       "--alpha-range", "0.25,0.25,0.05", "--res-range", "128,128,16", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["chosen"]["latency_ms"] == 1.0


def test_every_threads_help_states_the_limit_from_its_one_constant(capsys, monkeypatch):
    """The limit `cores.check_threads` enforces is worded once (`cores.THREADS_LIMIT`, read by the parser as it is
    built; train's from its TrainConfig field): reproduce's help still spelled "at most 4 per core" itself, which a
    change of `cores.THREADS_PER_CORE` would have left stating the old limit."""
    from mobilenets import cli, cores, train_config

    monkeypatch.setattr(cli, "THREADS_LIMIT", "THE_CONSTANTS_WORDING")
    for command in ("predict", "stream", "eval", "select", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "THE_CONSTANTS_WORDING" in capsys.readouterr().out, command
    assert cores.THREADS_LIMIT in train_config.TrainConfig.__dataclass_fields__["threads"].metadata["help"]


def test_lut_file_help_names_the_table_lut_reads(capsys, monkeypatch):
    """bench's and select's --lut-file help said ~/.cache/mobilenets/latency-lut.json whatever $MOBILENETS_CACHE
    said, while lut reads and writes the table under $MOBILENETS_CACHE when it is set (as it is in this suite): the
    help must name the file lut.DEFAULT_PATH is."""
    from pathlib import Path

    from mobilenets import lut

    monkeypatch.setattr(lut, "DEFAULT_PATH", Path("/the-cache/latency-lut.json"))
    monkeypatch.setenv("COLUMNS", "300")  # one line per option: argparse would wrap the path
    for command in ("bench", "select"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "(default: /the-cache/latency-lut.json" in out and "~/.cache" not in out, command


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["select", "--max-macs", "-5M"], "max_macs=-5000000.0 is not allowed"),
        (["select", "--max-params", "-2.5M"], "max_params=-2500000.0 is not allowed"),
        (["select", "--fps", "-1e3"], "fps=-1000.0 is not allowed"),
        (["select", "--latency-ms", "-inf"], "latency_ms=-inf is not allowed"),
        (["select", "--fps", "1", "--alpha-range", "-0.25,1,0.05"], "alpha_min=-0.25 is not allowed"),
        (["select", "--fps", "1", "--res-range", "-96,224,16"], "res_min=-96 is not allowed"),
        (["bench", "--lut", "--threads", "-1,2"], "threads=(-1, 2) is not allowed"),
        (["bench", "--lut", "--alpha", "-0.5,1", "--resolution", "128"], "alpha=-0.5 is not allowed"),
        (["bench", "--lut", "--min-time", "-1e-3"], "min_time=-0.001 is not allowed"),
        (["summary", "--alpha", "-1e-1"], "alpha=-0.1 is not allowed"),
        (["summary", "--alpha", "-NaN"], "alpha=nan is not allowed"),
        (["train", "--lr", "-1e-3", "--data", "DATA", "--out", "OUT"], "lr=-0.001 is not allowed"),
        (["train", "--betas", "0.9", "-0.999", "--data", "DATA", "--out", "OUT"], "betas=[0.9, -0.999] is not"),
        (["reproduce", "--time-budget", "-1e3", "--out", "OUT"], "time_budget=-1000.0 is not allowed"),
    ],
)
def test_negative_looking_values_reach_the_check_that_names_them(argv, named, capsys, tmp_path):
    """argparse took only -5 and -.5 for negative numbers: `--max-macs -5M` (while `--max-macs=-5M` was named),
    -1e3, -inf and a list starting with a negative number were "expected one argument" (`cli._Parser`)."""
    argv = [{"DATA": str(tmp_path), "OUT": str(tmp_path / "out")}.get(a, a) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith(f"mobilenets {argv[0]}: error: {named}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_missing_value_is_still_argparses_error_and_a_word_after_a_dash_an_option(capsys):
    """The wider negative-number rule takes only what starts like a number: an option where a value belongs, or a
    dash and a word, are still argparse's one-line errors."""
    for argv, expected in (
        (["select", "--max-macs", "--fps", "5"], "argument --max-macs: expected one argument"),
        (["select", "--max-macs", "-lots"], "argument --max-macs: expected one argument"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err == f"mobilenets select: error: {expected} (see mobilenets select --help)\n"


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="no procfs here")
def test_an_out_under_proc_is_the_machines_refusal_exit_1_not_a_missing_path(capsys, tiny_weights):
    """procfs refuses a new file with ENOENT, so `export --out /proc/x/model.onnx` was a FileNotFoundError and status
    2, the command line's mistake; but the probe (`atomic.check_writable`) creates in a folder it has seen exist, and
    reproduce's mkdir(parents=True) meets ENOENT only there: `atomic.CreationRefused`, the machine's failure, 1."""
    from .conftest import data_path

    hen, net = str(data_path("imagenet-sample", "n01514859_hen.JPEG")), str(tiny_weights)
    imagenette = str(data_path("imagenette"))
    cases = [
        (["export", net, "--out", "/proc/x/model.onnx"], "/proc/x/model.onnx: /proc takes no new file"),
        (["export", net, "--out", "/proc/model.onnx"], "/proc/model.onnx: /proc takes no new file"),
        (["bench", "--models", "0.25-64", "--runtimes", "ort", "--out", "/proc/x/r"], "/proc/x/r.csv: /proc takes no"),
        (["stream", net, hen, "--out", "/proc/x/a.mp4"], "/proc/x/a.mp4: /proc takes no new file"),
        (["train", "--data", imagenette, "--out", "/proc/x/run"], "/proc/x/run: the run folder cannot be made there"),
        (["reproduce", "--experiments", "table5", "--data", imagenette, "--out", "/proc/x"], "/proc/x: cannot create"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, "") and err.startswith(f"mobilenets {argv[0]}: error: {message}"), (argv, err)
        assert err.count("\n") == 1 and "No such file or directory" in err, err
