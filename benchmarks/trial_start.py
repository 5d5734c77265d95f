"""A sweep of short one-worker trials: each trial trained in the trial's own process (ganpipe's
default) against each trial as a TorchTrainer run (controller, worker group and process group per
trial, the baseline). The same sweep (same seed, trials, FIFO, same data) runs once each way, each in
a fresh process with its own local Ray; the trials' final fd must agree, so only the start-up differs.

    python benchmarks/trial_start.py --trials 4
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402


def child(mode: str, trials: int, iterations: int) -> None:
    import pipelines.stages.tune as tune_stage
    from pipelines.config import load_config

    if mode == "trainer":  # the baseline: every trial a TorchTrainer run
        tune_stage.in_trial_process = lambda cfg: False
    tmp = tempfile.mkdtemp()
    cfg = load_config(None, [
        f"tune.num_samples={trials}", f"train.iterations={iterations}", "train.eval_every=25",
        f"train.checkpoint_every={iterations}", "train.eval_samples=200", "tune.scheduler=fifo", "seed=3",
        "train.patience=null", "train.target=null", "train.time_budget_s=null", "train.ema_beta=null",
        "model.g_width=8", "model.d_width=8", "train.batch_size=32", "registry.register_after_tune=false",
        'tune.space={"train.lr_d": {"choice": [0.0002, 0.001]}, "train.lr_g": {"choice": [0.0002, 0.001]}}',
        f"ray.storage_path={tmp}/runs", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db"])
    start = time.perf_counter()
    out = tune_stage.run_sweep(cfg)
    wall = time.perf_counter() - start
    fds = {json.dumps({k: v for k, v in t.items() if "." in k}, sort_keys=True): t[out.metric] for t in out.trials}
    print("RESULT " + json.dumps({"wall": wall, "fd": fds}), flush=True)


def run(mode: str, trials: int, iterations: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--trials", str(trials),
                           "--iterations", str(iterations)], capture_output=True, text=True, cwd=tempfile.mkdtemp())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{mode} sweep failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--child", choices=["trainer", "process"])
    add_outputs(ap)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.trials, args.iterations)
        return
    trainer = run("trainer", args.trials, args.iterations)
    process = run("process", args.trials, args.iterations)
    same = trainer["fd"].keys() == process["fd"].keys() and all(
        abs(trainer["fd"][k] - process["fd"][k]) <= 1e-6 * max(1.0, abs(trainer["fd"][k])) for k in trainer["fd"])
    ratio = trainer["wall"] / process["wall"]
    row = (f"| {datetime.date.today()} | sweep of {args.trials} one-worker trials x {args.iterations} it (width 8, "
           f"FIFO, 2 at a time), wall of the sweep incl. Ray start | every trial a TorchTrainer run: "
           f"{trainer['wall']:.1f} s | trials in their own process: {process['wall']:.1f} s; final fd of every "
           f"trial {'identical' if same else 'DIFFERENT'} | **{ratio:.2f}x** | {cpu_model()}, {os.cpu_count()} cores |")
    record(row, args.out, {"trainer_s": trainer["wall"], "process_s": process["wall"], "ratio": ratio,
                           "same_fd": same}, args.json)
    if not same:
        raise SystemExit(f"the trials' fd differ: {trainer['fd']} vs {process['fd']}")


if __name__ == "__main__":
    main()
