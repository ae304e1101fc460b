"""A long job's progress on stderr: tqdm's bar on a terminal, plain lines off one (a log file, CI output), where the
bar's carriage-return redraws pile up as one long line of overwritten text -- the split `engine.Progress` makes for
training. The one owner of it for `export`'s INT8 stages and `bench`'s jobs (`Lines`), and for the latency table's
timings (`progress_lines`)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any


class Lines:
    """tqdm's ``update(n)``, ``set_description`` and ``close`` as plain lines: ``running`` at most every ``every_s``
    seconds while the job is under way (none by default), ``done`` once at `close` if anything was done. Their
    fields: ``n``, ``total``, ``desc``, ``s`` and ``min`` (time spent) and ``left`` (minutes left at the rate so
    far)."""

    def __init__(self, total: int, stream: Any, *, done: str, running: str = "", desc: str = "",
                 every_s: float = math.inf) -> None:  # fmt: skip
        self.total, self.stream, self.desc, self.n = total, stream, desc, 0
        self.done, self.running, self.every_s = done, running, every_s
        self.start = self.last = time.perf_counter()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.running and self.n < self.total and now - self.last >= self.every_s:
            self.last = now
            self._say(self.running, now - self.start)

    def close(self) -> None:
        if self.n:
            self._say(self.done, time.perf_counter() - self.start)
            self.n = 0

    def _say(self, line: str, spent: float) -> None:
        left = spent / self.n * (self.total - self.n) / 60
        fields = dict(n=self.n, total=self.total, desc=self.desc, s=spent, min=spent / 60, left=left)
        print(line.format(**fields), file=self.stream, flush=True)


def bar_or_lines(total: int, enabled: bool, lines: dict[str, Any], stream: Any = None, **bar: Any) -> Any:
    """tqdm's bar (``leave=False``, ``bar`` its other options) on ``stream`` (stderr) when it is a terminal, `Lines`
    (``lines`` its options) when it is not, and nothing when ``enabled`` is false (``--no-progress``)."""
    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        return Lines(total, stream, **lines)
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, file=stream, **bar)


def abandon(progress: Any) -> None:
    """End a job that failed: tqdm's bar is cleared (``leave=False``), and no `Lines` line says it was done, so a
    command's error stays its only line on stderr."""
    if isinstance(progress, Lines):
        progress.n = 0
    progress.close()


def progress_lines(
    say: Callable[[str], None], what: str, every_s: float = 30.0, clock: Callable[[], float] = time.perf_counter
) -> Callable[[int, int], None]:
    """A `lut.time_rounds` progress callback that tells ``say`` how far ``what`` is, with the time left at the rate so
    far, at most once per ``every_s`` seconds (a first measurement takes 10-17 minutes on a busy 2-core CPU)."""
    start = clock()
    last = [start]

    def report(done: int, total: int) -> None:
        now = clock()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        spent = now - start
        if done >= total:
            say(f"{what}: {total} timings done in {_minutes(spent)}")
        else:
            say(f"{what}: {done}/{total} timings, {_minutes(spent)}, about {_minutes(spent / done * (total - done))} "
                "left")  # fmt: skip

    return report


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
