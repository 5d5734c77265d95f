"""Printing a benchmark's result row and appending it to BENCHMARKS.md (or the given file)."""
from __future__ import annotations

from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def record(row: str, out: str | Path = DEFAULT) -> None:
    print(row)
    path = Path(out)
    if not path.exists():
        path.write_text("# Benchmarks\n\n")
    with path.open("a") as f:
        f.write(row + "\n")
