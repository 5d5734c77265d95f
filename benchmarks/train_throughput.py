"""Training images/second: the same model and data in TorchTrainer (1 worker) vs the bare loop.

Both sides run gan_core's Game on the same BatchStream with one CPU thread; the TorchTrainer side
is the real `ganpipe train` worker loop (DDP not engaged with one worker), measured from inside the
worker over the last log windows, plus the end-to-end wall time including Ray's start-up.

    python benchmarks/train_throughput.py --iterations 200
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from gan_core.data.stream import BatchStream  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.config.build import build_game, load_data  # noqa: E402


def bare_loop(cfg, iterations: int, warmup: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    train, _ = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
    x, y = train.tensors()
    game, _ = build_game(cfg, train)
    t = cfg.train
    stream = BatchStream(x, y, t.batch_size, seed=cfg.seed)
    for _ in range(warmup):
        game.step(stream)
    start = time.perf_counter()
    for _ in range(iterations):
        game.step(stream)
    return iterations * t.k * t.batch_size / (time.perf_counter() - start)


def ray_trainer(cfg, iterations: int, warmup: int) -> tuple[float, float]:
    from mlflow.tracking import MlflowClient

    from pipelines.stages.train import run_training

    tmp = tempfile.mkdtemp()
    cfg = load_config(None, [f"train.iterations={warmup + iterations}", f"train.log_every={warmup}",
                             f"train.checkpoint_every={warmup + iterations}", "ray.num_workers=1",
                             f"ray.storage_path={tmp}/runs", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                             *OVERRIDES])
    start = time.perf_counter()
    out = run_training(cfg, quiet=True)
    wall = time.perf_counter() - start
    hist = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db").get_metric_history(out.run_id, "images_per_second")
    steady = [m.value for m in sorted(hist, key=lambda m: m.step) if m.step > warmup]
    return sum(steady) / len(steady), (warmup + iterations) * cfg.train.k * cfg.train.batch_size / wall


OVERRIDES: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md"))
    args = ap.parse_args()
    OVERRIDES.extend(args.overrides)
    cfg = load_config(None, args.overrides)
    first = bare_loop(cfg, args.iterations, args.warmup)
    steady, end_to_end = ray_trainer(cfg, args.iterations, args.warmup)
    second = bare_loop(cfg, args.iterations, args.warmup)  # before and after, to average out drift
    bare = (first + second) / 2
    row = (f"| {datetime.date.today()} | train throughput, {cfg.model.arch} "
           f"{'conditional ' if cfg.model.conditional else ''}{cfg.data.source}, batch {cfg.train.batch_size}, "
           f"{args.iterations} it | bare loop {bare:.0f} img/s ({first:.0f} before, {second:.0f} after) | TorchTrainer 1 worker {steady:.0f} img/s "
           f"(end to end incl. Ray start {end_to_end:.0f} img/s) | **{steady / bare:.2f}x** steady, "
           f"{end_to_end / bare:.2f}x end to end | {platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} cores |")
    record(row, args.out)


if __name__ == "__main__":
    main()
