"""Every code block of README.md and docs/: each `ganpipe` command parses and its config (with every
--set) validates; the set-up block is what CI runs; python blocks run in the integration test that has
a champion and a dataset (tests/integration/test_quick_preset.py); blocks marked as needing a cluster
or a server are parsed, not run."""
import re
import shlex
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS, build_parser
from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSED_ONLY = "<!-- parsed, not run:"  # the comment before a block that needs a cluster or a server
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[tuple[str, str, bool]]:
    """(file:line, text, parsed_only) of every fenced block of this language."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == kind:
                before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
                line = text[:m.start()].count("\n") + 1
                out.append((f"{path.relative_to(ROOT)}:{line}", m.group(2), before[0].startswith(PARSED_ONLY)))
    return out


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped, `&&` split."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1:]
    return [c for c in out if c]


SHELL = [(where, cmd, parsed) for where, text, parsed in blocks("bash") for cmd in commands(text)]
PROGRAMS = {"ganpipe", "python", "python3", "pip", ".", "ray", "mlflow", "curl"}


def test_the_docs_have_code_blocks_and_only_known_programs():
    assert len(SHELL) >= 15 and len(blocks("python")) >= 2
    unknown = [(where, cmd[0]) for where, cmd, _ in SHELL if cmd[0] not in PROGRAMS]
    assert not unknown, unknown
    # a program that needs a cluster or a running server is only in blocks marked as parsed, not run
    outside = [(w, c) for w, c, parsed in SHELL if c[0] in ("ray", "mlflow", "curl") and not parsed]
    assert not outside, outside


@pytest.mark.parametrize("where, cmd", [(w, c) for w, c, _ in SHELL if c[0] == "ganpipe"],
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_each_ganpipe_command_parses_and_its_config_validates(where, cmd):
    args = build_parser().parse_args(cmd[1:])
    assert args.command in COMMANDS, where
    if COMMANDS[args.command].config:
        config = args.config if args.config in (None, "quick", "sweep") else None  # a file of the user's own
        load_config(config, args.overrides)


def test_the_set_up_block_is_what_ci_runs():
    readme = [c for w, c, _ in SHELL if w.startswith("README.md")]
    install, tests = readme[:4], readme[4]
    ci = [shlex.split(ln) for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert install[:3] == [["python3", "-m", "venv", ".venv"], [".", ".venv/bin/activate"],
                           ["pip", "install", "-e", ".[dev]"]] and install[3] == ["ganpipe", "run"]
    for cmd in (*install[:3], tests):
        assert cmd in ci, cmd
