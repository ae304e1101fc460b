"""Atomic file writes: write a temporary file in the same folder, fsync it, rename over the target, fsync the folder.

The rename is atomic because POSIX rename(2) replaces the target in one step within a filesystem (hence the same
folder); the fsyncs make the new contents and the new name durable before a caller relies on them.

A reader (or a resumed run) therefore sees either the old complete file or the new complete file, never a torn one.
An append-only log (a run's metrics.jsonl) cannot be replaced whole per row: `read_metrics` reads one whose last
line a kill may have torn.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import socket
import stat
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as f: f.write(...)`` -- ``p`` appears only once the block finished without error.

    The temporary file is a `staging_path` with a random part (``.<stem>.partial-<host>-<pid>~<random><suffix>``:
    two threads may write one path at once; ``~``, which no `HOST` holds, keeps host ``gpu``'s pid apart from host
    ``gpu-1042``'s), so the files of writers killed before their rename are told from live ones' and removed
    (`remove_stale_staging`) when ``p`` is next written; an error in the block removes its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_staging_stem(path)}~", suffix=path.suffix, dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have given it
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        name_file(exc, path)
        raise


def name_file(exc: BaseException, path: str | os.PathLike, staged: str | os.PathLike | None = None) -> None:
    """Give an OS error raised while writing ``path`` that file's name, for the one-line message: a write's or
    fsync's ENOSPC names no file, and one raised on ``staged`` (the staging file) names a file the user never gave.
    An error of another kind, or one that names another file, is left as it is, and so is one with no errno (a
    message-only OSError: naming a file would turn it into "[Errno None] None: ...")."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return
    if exc.filename is None or (staged is not None and str(exc.filename) == str(staged)):
        exc.filename = str(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# this machine's name as staging file names carry it (a folder shared by several machines holds their writers' files)
HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def staging_path(path: str | os.PathLike) -> Path:
    """Where a writer builds ``path`` before renaming it into place: ``.<stem>.partial-<host>-<pid><suffix>`` beside
    it (the same folder, so the rename is atomic; the same extension, as FFmpeg picks the container by it; the
    writer's machine and pid, so two writers never share one, even on a shared filesystem, and
    `remove_stale_staging` can tell a killed writer's file from a live one's)."""
    path = Path(path)
    return path.with_name(f"{_staging_stem(path)}{path.suffix}")


def _staging_stem(path: Path) -> str:
    return f".{path.stem}.partial-{HOST}-{os.getpid()}"


def publish(staged: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished `staging_path` file over ``path`` as `atomic_open` does: its contents fsynced first, the
    folder after, so that neither a crash nor a power cut leaves ``path`` naming a file whose data never reached
    the disk (written by a library, the staging file was only closed, not synced)."""
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staged, path)
    _fsync_dir(Path(path).parent)


def remove_stale_staging(path: str | os.PathLike) -> list[Path]:
    """Remove the `staging_path` files of ``path`` that killed writers left (`atomic_open`'s too, which add ``~`` and a
    random part after the pid): those named for this machine and a pid no process has now, and owned by this user.
    Without this every killed export or stream left one behind for good. A file whose pid is alive (this process's, or
    one that is still writing), another machine's (whose processes this one cannot see) or another user's is kept, and
    so is anything that is not a regular file. Returns the removed paths. Nothing is removed off POSIX (os.kill(pid, 0)
    terminates the process on Windows)."""
    if os.name != "posix":  # pragma: no cover - not on this project's platforms
        return []
    path = Path(path)
    # a pid has at most 9 digits (Linux's pid_max is at most 2**22): os.kill takes any such number
    pid = r"([0-9]{1,9})(?:~[a-z0-9_]+)?"  # `atomic_open`'s random part: tempfile's random names use these characters
    name = re.compile(rf"\.{re.escape(path.stem)}\.partial-{re.escape(HOST)}-{pid}{re.escape(path.suffix)}")
    removed = []
    for part in path.parent.glob(f".{glob.escape(path.stem)}.partial-*{glob.escape(path.suffix)}"):
        match = name.fullmatch(part.name)
        try:  # garbage collection: a file it cannot look at or remove is left, not an error for the caller's run
            info = part.lstat()
            if match and stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not _alive(int(match[1])):
                part.unlink()
                removed.append(part)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (any user's); os.kill(0, 0) would signal this process group: kept."""
    if pid == 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The first existing non-folder among ``path``'s parents, where creating ``path`` would fail with
    NotADirectoryError (``--out notes.txt/model``); None when the parents are folders or do not exist yet."""
    return next((p for p in reversed(Path(path).parents) if p.exists() and not p.is_dir()), None)


def not_a_file(path: str | os.PathLike) -> str | None:
    """What an existing ``path`` that is not a regular file is ("is a folder", "is not a regular file" for a device,
    FIFO or socket), for a message that says so instead of "not found"; None for a regular file or a missing path."""
    path = Path(path)
    if path.is_dir():
        return "is a folder"
    if path.exists() and not path.is_file():
        return "is not a regular file"
    return None


class CreationRefused(OSError):
    """A folder that exists refused a new file or folder with ENOENT, as procfs does (``--out /proc/x/model.onnx``):
    a failure of the machine, not a missing path. ``OSError(errno.ENOENT, ...)`` is made a FileNotFoundError, which
    the command line reports as its user's mistake (status 2, `cli.main`); this subclass keeps the errno and is the
    machine's (status 1), as EACCES and EROFS are."""


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Raise `OSError` naming ``path`` (not a staging or lock file beside it) where it cannot be written: a file in
    the way of its folders, a folder where a file is expected (``folder=False``) or a file where a folder is, or a
    folder that refuses a new file (permissions, a read-only or virtual filesystem such as /sys or /proc, whose ENOENT
    is a `CreationRefused`, not a FileNotFoundError). It probes the nearest existing folder with a temporary file,
    removed at once, and creates nothing else: a long run checks its outputs before it starts instead of failing
    after it. Returns ``path``."""
    path = Path(path)
    nearest = next(p for p in path.parents if p.exists())  # the last parent, "." or "/", always does
    if not nearest.is_dir():  # nothing exists under a file: the nearest existing parent is what is in the way
        raise NotADirectoryError(errno.ENOTDIR, f"{nearest} is a file, not a folder", str(path))
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(path))
    if not folder and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; name the file to write", str(path))
    base = path if folder and path.is_dir() else nearest
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-probe-", suffix=".tmp", dir=base)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # ``base`` exists (checked above): not a missing path but a refusing filesystem
            raise CreationRefused(exc.errno, f"{base} takes no new file: {exc.strerror}", str(path)) from None
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    os.unlink(tmp)
    return path


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


# the run-folder locks this process holds (`lock_folder`), closed in every child it forks (`_close_held_in_child`)
_HELD: weakref.WeakSet[IO] = weakref.WeakSet()


def _close_held_in_child() -> None:
    """In a forked child (a DataLoader worker), close its copies of the held locks' files. A flock belongs to the
    open file, which a fork shares: a SIGKILLed run's orphaned workers kept its folder locked for seconds, and a
    `--resume auto` at once was refused as "in use" by the dead pid. Closing the child's copy (not unlocking, which
    would free the parent's lock too) leaves the lock to the parent alone."""
    for f in list(_HELD):
        with contextlib.suppress(OSError, ValueError):
            f.close()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_close_held_in_child)


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock (`lock_folder`)."""


def lock_folder(folder: str | os.PathLike) -> IO | None:
    """Hold an exclusive advisory lock on ``folder/.lock`` (fcntl.flock) while the returned file stays open: two
    training runs in one run folder would interleave their checkpoints and one's resume would read the other's. The
    kernel drops the lock when its process dies, SIGKILL included, so a killed run leaves no stale lock (children it
    forked close their copies of the file: `_close_held_in_child`). Raises
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
    _HELD.add(f)
    return f


def read_metrics(path: str | os.PathLike, torn_last=None) -> list[tuple[str, dict]]:
    """A run's metrics.jsonl as (line, row) pairs. A process killed while appending a row leaves its last line torn:
    with ``torn_last`` (called with the path and line number) that line is dropped, as a resume writes that epoch's
    row again (the epoch's checkpoint is saved after its row). Any other line that is not a row is a ValueError
    naming the file and line: the file was edited or damaged, and guessing would lose or invent epochs."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    rows = []
    for k, (i, ln) in enumerate(lines):
        try:
            row = json.loads(ln)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("not an object with an integer 'epoch'")
        except ValueError as exc:
            if torn_last is not None and k == len(lines) - 1:
                torn_last(path, i)
                break
            raise ValueError(f"{path}: line {i} is not a metrics row ({exc}); fix or remove that line") from exc
        rows.append((ln, row))
    return rows
