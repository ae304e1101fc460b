"""Render rows of dicts as an aligned text table, Markdown, CSV or JSON (every table in our docs comes from here), and
the small pieces our one-line messages are made of (counts, scores, which process of a torchrun job speaks)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence

FORMATS = ("table", "md", "csv", "json")
NUMBER_TEXT = re.compile(r"-?[\d,]*\.?\d+")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):  # NaN: a value rows keep numeric to sort
        return "-"  # by (select's unknown top-1), missing all the same
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.4g}" if abs(value) < 0.01 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def counted(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '0 unreadable files': ``n`` and ``noun``, made plural by an 's' unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def metric(value: float | None, digits: int = 4) -> str:
    """A score for a line of text: ``n/a`` where there is none (top-5 of 5 classes or fewer, an epoch not
    evaluated)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def rank_prefix(rank: int) -> str:
    """``[rank N] `` before a line of process ``rank`` of a torchrun job, nothing for rank 0 (or outside one): every
    process ends with its own line, and alike they could not be told apart. The CLI's closing line and the run's
    SIGTERM notices both say it this way."""
    return f"[rank {rank}] " if rank else ""


def render(rows: Sequence[dict], fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    """Format ``rows``; ``columns`` picks and orders the keys (default: the first row's keys)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    if fmt != "table":
        raise ValueError(f"format={fmt!r} is not allowed: format must be one of {', '.join(FORMATS)}")
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]

    def line(values):
        cells = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "  ".join(cells).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _is_number(value) -> bool:
    if isinstance(value, str):  # a number formatted already (`paper.as_printed`'s "4,866"): aligned as one
        return NUMBER_TEXT.fullmatch(value) is not None
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
