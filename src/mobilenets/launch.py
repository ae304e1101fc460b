"""The ``mobilenets`` command's entry point (``[project.scripts]``, and ``python -m mobilenets``).

`cli` imports torch, which takes seconds; a Ctrl-C during that import used to end in a traceback from inside torch,
raised before `cli.main` could catch it. Here it ends as a Ctrl-C later does: one line, status 130. A Ctrl-C after the
command, during Python's shutdown, ends the process too (`_end_on_ctrl_c`). This module imports nothing heavy itself
(``import mobilenets`` is lazy, see the package's ``__getattr__``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


def main() -> int:
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
    its files are closed by then. Left alone where SIGINT is not Python's default handler (ignored, or the caller's)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: Python's shutdown reports it
            stream.flush()
    signal.signal(signal.SIGINT, lambda *_: os._exit(status))


__all__ = ["main"]
