"""Regenerate the tables in README.md from the code (`python scripts/update_readme.py [--check]`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mobilenets.cli import PAPER_COLUMNS, model_rows
from mobilenets.formatting import render
from mobilenets.paper import compare

README = Path(__file__).resolve().parents[1] / "README.md"


def sections() -> dict[str, str]:
    misprints = [r for r in compare() if r["status"] == "misprint"]
    return {
        "mobilenets list": render(model_rows(), "md"),
        "mobilenets paper misprints": render(misprints, "md", PAPER_COLUMNS),
    }


def updated(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        text = pattern.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    current = README.read_text()
    new = updated(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    README.write_text(new)
