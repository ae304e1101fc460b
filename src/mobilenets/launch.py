"""The ``mobilenets`` command's entry point (``[project.scripts]``, and ``python -m mobilenets``).

`cli` imports torch, which takes seconds; a Ctrl-C during that import used to end in a traceback from inside torch,
raised before `cli.main` could catch it. Here it ends as a Ctrl-C later does: one line, status 130. This module
imports nothing heavy itself (``import mobilenets`` is lazy, see the package's ``__getattr__``).
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:  # during the imports: `cli.main` catches one raised later, naming the subcommand
        print("\nmobilenets: interrupted", file=sys.stderr)
        return 130


__all__ = ["main"]
