"""Printing a benchmark's result row and appending it to BENCHMARKS.md (or the given file); the
numbers behind it can also go to a JSON file, which `run_all.py` reads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_model() -> str:
    """The CPU's model name, for the machine column of a row (speeds differ between CPUs of one kind)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def tree_at(rev: str, into: Path) -> str:
    """The project's files at git revision `rev` written into the folder `into` (a baseline's code, for
    a benchmark's `--against REV`); its short commit."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    subprocess.run(f"git -C {root} archive {rev} | tar -x -C {into}", shell=True, check=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", rev], capture_output=True, text=True,
                          check=True).stdout.strip()


def add_outputs(parser: argparse.ArgumentParser) -> None:
    """--out (the Markdown file the row is appended to) and --json (the numbers, for run_all.py)."""
    parser.add_argument("--out", default=str(DEFAULT), help="Markdown file the result row is appended to")
    parser.add_argument("--json", default=None, help="also write the measured numbers to this JSON file")


RECENT = "## Rows recorded since the last full run"
GENERATED = "## All targets"  # run_all.py's section: it stays the file's last


def add_row(text: str, row: str) -> str:
    """`text` with `row` at the end of the recent rows' table, a section kept just before the generated
    one (created there, or at the end of a file without it)."""
    table = "| date | what | baseline | ganpipe | ratio | machine |\n|---|---|---|---|---|---|\n"
    if RECENT not in text:
        section = f"{RECENT}\n\n{table}"
        at = text.find(GENERATED)
        text = text.rstrip() + "\n\n" + section if at < 0 else text[:at] + section + "\n" + text[at:]
    start = text.index(RECENT)
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    body = text[start:end].rstrip("\n") + "\n" + row + "\n"
    return text[:start] + body + ("\n" + text[end + 1:] if end < len(text) else "")


def record(row: str, out: str | Path = DEFAULT, numbers: dict | None = None, json_path: str | None = None) -> None:
    print(row)
    path = Path(out)
    path.write_text(add_row(path.read_text() if path.exists() else "# Benchmarks\n\n", row))
    if json_path:
        Path(json_path).write_text(json.dumps(numbers or {}, indent=1))
