"""Atomic file writes: write a temporary file in the same folder, fsync it, rename over the target, fsync the folder.

The rename is atomic because POSIX rename(2) replaces the target in one step within a filesystem (hence the same
folder); the fsyncs make the new contents and the new name durable before a caller relies on them.

A reader (or a resumed run) therefore sees either the old complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as f: f.write(...)`` -- ``p`` appears only once the block finished without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have given it
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The first existing non-folder among ``path``'s parents, where creating ``path`` would fail with
    NotADirectoryError (``--out notes.txt/model``); None when the parents are folders or do not exist yet."""
    return next((p for p in reversed(Path(path).parents) if p.exists() and not p.is_dir()), None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows fsync on a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock (fcntl.flock, waiting for it) on ``.<name>.lock`` beside ``path`` for a
    read-merge-write of a file several processes update (the latency table): without it the later writer drops the
    earlier one's additions. No lock where flock does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on this project's platforms
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock (`lock_folder`)."""


def lock_folder(folder: str | os.PathLike) -> IO | None:
    """Hold an exclusive advisory lock on ``folder/.lock`` (fcntl.flock) while the returned file stays open: two
    training runs in one run folder would interleave their checkpoints and one's resume would read the other's. The
    kernel drops the lock when its process dies, SIGKILL included, so a killed run leaves no stale lock. Raises
    `FolderInUse` naming the holder's pid; returns None where flock does not exist (Windows): no lock there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on this project's platforms
        return None
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - held open for the run: the lock lives as long as this file object
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise FolderInUse(f"{folder} is in use by another run (pid {holder})") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
