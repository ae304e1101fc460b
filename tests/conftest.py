"""Shared fixtures. Real data lives in ../shared/data (override with MOBILENETS_DATA); tests needing it skip without."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The suite's own cache folder ($MOBILENETS_CACHE: select's latency table): no test reads what an earlier run or the
# user's `select` saved in ~/.cache/mobilenets, or writes there. Set before mobilenets is imported (lut reads it then);
# the commands the tests start inherit it.
CACHE = tempfile.mkdtemp(prefix="mobilenets-tests-cache-")
os.environ["MOBILENETS_CACHE"] = CACHE
atexit.register(shutil.rmtree, CACHE, True)

from mobilenets.data import shared_data_root  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str | None = None):
    """A script of the repository that is not a package module (benchmarks/*.py, scripts/*.py), loaded by path."""
    import importlib.util

    path = REPO / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATA = shared_data_root()


def data_path(*parts: str) -> Path:
    """A path under the shared data folder, or skip the test with the reason."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (set MOBILENETS_DATA to the shared data folder)")
    return path


@pytest.fixture
def data_dir() -> Path:
    return data_path()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: what a killed writer's staging file is named for."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


@pytest.fixture
def unwritable(tmp_path):
    """(a folder where creating a file fails, the OS's reason): mode 0o500 for a user, /sys for root (who ignores
    modes; "Permission denied", or "Read-only file system" where /sys is mounted read-only); else skip."""
    import os
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    for folder in (ro, Path("/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=folder)
        except OSError as exc:
            yield folder, exc.strerror
            break
        os.close(fd)
        os.unlink(probe)
    else:
        pytest.skip("no folder refuses a new file here")
    ro.chmod(0o700)


def sigint_default() -> None:
    """A child's ``preexec_fn``: SIGINT at its default disposition, so that Python installs its Ctrl-C handler.
    A suite started in the background by a non-interactive shell ignores SIGINT, and its children inherit that: the
    Ctrl-C tests' commands then ran on to the end, exit 0."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def refuse_listing(monkeypatch, folder: Path) -> None:
    """``folder`` cannot be listed, as a folder without read permission (chmod 0 does not stop root, who runs CI)."""
    scandir = os.scandir

    def refuse(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
