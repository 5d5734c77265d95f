"""What a sweep costs: trial-iterations run under ASHA vs the same trials run to the end, and what
the best trial reached. Runs a real `ganpipe tune` sweep on this machine and appends a row to
BENCHMARKS.md.

    python benchmarks/sweep_cost.py --trials 8
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import cpu_model, record  # noqa: E402

from pipelines.config import load_config  # noqa: E402
from pipelines.stages.tune import run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    cfg = load_config(None, [
        f"tune.num_samples={args.trials}", f"train.iterations={args.iterations}", "train.eval_every=25",
        "train.checkpoint_every=100", "train.eval_samples=300",
        'tune.space={"train.k": {"choice": [1, 2]}, "train.lr_g": {"loguniform": [0.00005, 0.002]}, '
        '"train.lr_d": {"loguniform": [0.00005, 0.002]}, "model.arch": {"choice": ["mlp", "dcgan"]}}',
        f"ray.storage_path={tmp}/runs", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", *args.overrides])
    start = time.perf_counter()
    out = run_sweep(cfg)
    wall = time.perf_counter() - start
    run = sum(t["iterations"] for t in out.trials)
    full = sum(t["planned_iterations"] for t in out.trials)
    best = out.best or {}
    arch = best.get("model.arch", "?")
    row = (f"| {datetime.date.today()} | sweep: {len(out.trials)} trials x {args.iterations} it, ASHA on "
           f"{cfg.tune.cost} (grace {cfg.tune.grace:g}, rf {cfg.tune.reduction_factor}), 1 worker/trial | {full} trial-iterations to the end "
           f"| {run} run, {sum(bool(t['stopped_early']) for t in out.trials)} trials stopped early, "
           f"{wall / 60:.1f} min | **{run / full:.2f}x** of the work | best {out.metric}="
           f"{best.get(out.metric, float('nan')):.1f} ({arch}) | {cpu_model()}, {os.cpu_count()} cores |")
    record(row, args.out)


if __name__ == "__main__":
    main()
