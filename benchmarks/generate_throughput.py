"""Batch stage throughput: rows/second written to Parquet by `ganpipe generate` end to end (Ray
Data, PNG encoding, verifier, card), against the bare generator forward pass at the same block size
in one process, side by side in one run; and the driver's peak memory at two row counts.

    python benchmarks/generate_throughput.py --rows 20000
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from gan_core import aligned_blocks, labels_for_rows, render_rows  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.config.build import build_game, load_data  # noqa: E402
from pipelines.services import checkpoints  # noqa: E402
from pipelines.stages.generate import generate  # noqa: E402
from pipelines.stages.train.worker import checkpoint_meta  # noqa: E402


def bare_forward(g, rows: int, counts: list[int]) -> float:
    """Rows/second of G alone on FORWARD_BLOCK-row blocks, one thread per process, as each actor runs."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with torch.no_grad():
        for ids, _ in aligned_blocks(0, rows, rows):
            render_rows(g, ids, 0, labels_for_rows(ids, counts, 0))
    return rows / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cfg = load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", "eval.cas=false",
                             "generate.eval_samples=500"])
    data = load_data(cfg)
    train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
    game, spec = build_game(cfg, train)
    (tmp / "ckpt").mkdir()
    checkpoints.save(tmp / "ckpt", game.state_dict(), 1, cfg.model_dump(mode="json"), 0,
                     checkpoint_meta(spec, data, train, ""))
    g = game.G.eval()
    counts = [args.rows // 10 + (1 if c < args.rows % 10 else 0) for c in range(10)]
    bare = bare_forward(g, args.rows, counts)
    start = time.perf_counter()
    res = generate(cfg, str(tmp / "ckpt"), args.rows, str(tmp / "ds"))
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    actors = os.cpu_count()
    row = (f"| {datetime.date.today()} | generate {args.rows} rows, conditional DCGAN width 32 (quick preset), "
           f"{actors} actors x 1 CPU | bare G forward, 1 thread: {bare:.0f} rows/s | ganpipe generate end to end "
           f"(Ray Data start, PNG, verifier, Parquet, card): {res.rows / wall:.0f} rows/s, driver peak RSS "
           f"{rss:.0f} MiB | **{res.rows / wall / bare:.2f}x** (of one thread) | {os.cpu_count()} cores |")
    record(row, args.out)


if __name__ == "__main__":
    main()
