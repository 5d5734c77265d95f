"""What `ganpipe run` spends outside its training loop, cold and warm: the same short run (a
60-second training budget) twice, each in a fresh folder, the first with a fresh home (nothing
cached: the decoded data, the feature network, CAS's real side, the layout probe's answer) and the
second with that home again (all of them cached, as on a user's second run of their data). Each
part from the run's MLflow records: before the loop (Ray, data, feature network, layout probe,
Train's workers), after it, the evaluation, the registration and the batch stage with its card.

    python benchmarks/fixed_costs.py --source idx:/usr/share/datasets/fashion-mnist

With `--against REV`: the warm run of the code at git revision REV (a copy of its tree) against this
tree's, alternated `--rounds` times on one warm home (a first run warms it), each part's mean.

    python benchmarks/fixed_costs.py --against 787f3c4 --rounds 4 --budget 20
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import ganpipe_run, timeline  # noqa: E402
from record import add_outputs, cpu_model, record, tree_at  # noqa: E402

PARTS = ("before_loop_s", "after_loop_s", "evaluate_s", "register_s", "generate_s")


def one(source: str, folder: Path, home: Path, budget: int, tree: Path | None = None) -> dict:
    proc, wall, start = ganpipe_run(folder, home, (f"data.source={source}", f"train.time_budget_s={budget}"), tree)
    if proc.returncode:
        raise SystemExit(f"ganpipe run failed (exit {proc.returncode}); its output: {folder / 'run.log'}")
    times = timeline(folder, re.search(r"train: MLflow run (\w+)", proc.stdout).group(1), start)
    return {"wall_s": wall, "outside_s": wall - times["loop_s"], **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mnist5k")
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--against", metavar="REV", help="the warm run of git revision REV against this tree's")
    parser.add_argument("--rounds", type=int, default=4, help="with --against: alternated pairs")
    add_outputs(parser)
    args = parser.parse_args()
    if args.against:
        return against(args)
    base = Path(tempfile.mkdtemp(prefix="ganpipe-fixed-"))
    home = base / "home"
    home.mkdir()
    cold = one(args.source, base / "cold", home, args.budget)
    warm = one(args.source, base / "warm", home, args.budget)
    row = (f"| {datetime.date.today()} | {cpu_model()}, {os.cpu_count()} CPUs | `ganpipe run` on {args.source}, "
           f"train.time_budget_s={args.budget}, a fresh folder each | fresh home: {parts(cold)} | the same home "
           f"again: {parts(warm)} | **{cold['outside_s'] / warm['outside_s']:.2f}x** |")
    record(row, args.out, {"cold": cold, "warm": warm}, args.json)


def parts(r: dict, places: int = 0) -> str:
    """A run's seconds outside its loop, part by part."""
    def s(key: str) -> str:
        return f"{r[key]:.{places}f}"

    return (f"{s('outside_s')} s outside the loop (before {s('before_loop_s')}, after {s('after_loop_s')}, evaluate "
            f"{s('evaluate_s')}, register {s('register_s')}, generate {s('generate_s')}; loop {s('loop_s')} s)")


def against(args) -> None:
    root = Path(__file__).resolve().parents[1]
    base = Path(tempfile.mkdtemp(prefix="ganpipe-fixed-"))
    old, home = base / "old", base / "home"
    old.mkdir()
    home.mkdir()
    commit = tree_at(args.against, old)
    one(args.source, base / "warm-up", home, args.budget)  # the home's caches, for both sides
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    for i in range(args.rounds):  # alternating which goes first
        for side in (("before", "now") if i % 2 == 0 else ("now", "before")):
            runs[side].append(one(args.source, base / f"{side}-{i}", home, args.budget,
                                  old if side == "before" else root))

    mean = {side: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    row = (f"| {datetime.date.today()} | {cpu_model()}, {os.cpu_count()} CPUs | `ganpipe run` on {args.source}, "
           f"train.time_budget_s={args.budget}, a warm home, {args.rounds} alternated pairs, means | {commit}: "
           f"{parts(mean['before'], 2)} | this tree: {parts(mean['now'], 2)} "
           f"| **{mean['before']['outside_s'] / mean['now']['outside_s']:.2f}x** |")
    record(row, args.out, runs, args.json)


if __name__ == "__main__":
    main()
