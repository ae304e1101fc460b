"""The ``mobilenets`` command's entry point (``[project.scripts]``, and ``python -m mobilenets``).

`cli` imports torch, which takes seconds; a Ctrl-C during that import used to end in a traceback from inside torch,
raised before `cli.main` could catch it. Here it ends as a Ctrl-C later does: one line, status 130. A Ctrl-C after the
command, during Python's shutdown, ends the process at once with the command's status, and so does a SIGTERM
(`_end_on_ctrl_c`). This module imports nothing heavy itself (``import mobilenets`` is lazy, see the package's
``__getattr__``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading


def main() -> int:
    atexit.register(_ignore_sigterm_to_the_end)  # first registered, so it runs after every other exit handler
    try:
        from .cli import main as run

        status = run()
    except KeyboardInterrupt:  # during the imports: `cli.main` catches one raised later, naming the subcommand
        print("\nmobilenets: interrupted", file=sys.stderr)
        status = 130
    _end_on_ctrl_c(status)
    return status


def _end_on_ctrl_c(status: int) -> None:
    """After the command: a Ctrl-C during Python's shutdown (torch's and the DataLoader workers' clean-up, which can
    take a moment) ends the process at once with the command's ``status``, where it printed a traceback from inside
    that clean-up. It is often the second Ctrl-C of a user ending a stream. What the command wrote is flushed first;
    its files are closed by then. Left alone where SIGINT is not Python's default handler (ignored, or the caller's).

    A SIGTERM then (a scheduler's preemption or ``kill`` reaching a finished ``train`` in its seconds of clean-up)
    does the same: it ended the process as killed, status 143 and not a word, after a run that had written all its
    files, and a scheduler that requeues preempted jobs (status 143) started it again. Left alone where SIGTERM is
    not the default (ignored, or the caller's)."""
    if threading.current_thread() is not threading.main_thread():
        return
    ctrl_c = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    term = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if not (ctrl_c or term):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: Python's shutdown reports it
            stream.flush()
    if ctrl_c:
        signal.signal(signal.SIGINT, lambda *_: os._exit(status))
    if term:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(status))
        _ENDING.append(status)


_ENDING: list[int] = []  # the command's status, once `_end_on_ctrl_c` handles a SIGTERM during the shutdown


def _ignore_sigterm_to_the_end() -> None:
    """After the last exit handler: SIGTERM ignored for the rest of the shutdown, where `_end_on_ctrl_c` set it to end
    the process with the command's status. Python then resets its handlers to the default (``_PySignal_Fini``),
    before freeing its modules (a second or more with torch loaded): a SIGTERM then killed a finished run (-15, status
    143). Ignored, it lets the process end as it is, with the command's status; an ignored signal is not reset."""
    if _ENDING and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


__all__ = ["main"]
