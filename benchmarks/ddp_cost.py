"""What DDP itself costs on CPU, without Ray: two one-thread processes training the quick preset's
model on batch 64 each, as independent processes and as one DDP group (gloo, the worker's
settings: G's buffers broadcast, D's not), against one two-thread process on batch 128, all in
one run. The two-process sides use torch.multiprocessing; nothing of Ray starts.

    python benchmarks/ddp_cost.py --iterations 150
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402

from pipelines.config import load_config  # noqa: E402
from pipelines.stages.train.layout import steady_rate  # noqa: E402
from pipelines.stages.train.worker import wrap_ddp  # noqa: E402
from train_throughput import bare_game, bare_loop  # noqa: E402

WARMUP = 20


def _worker(rank: int, ddp: bool, iterations: int, port: int, out) -> None:
    torch.set_num_threads(1)
    cfg = load_config(None, ["train.batch_size=64"])
    game, stream = bare_game(cfg, rank, 2)
    if ddp:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=2)
        wrap_ddp(game)
    out.put(steady_rate(game, stream, cfg, iterations, WARMUP))
    if ddp:
        dist.destroy_process_group()


def two_processes(ddp: bool, iterations: int, port: int) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, ddp, iterations, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def one_process(iterations: int) -> float:
    return bare_loop(load_config(None, ["train.batch_size=128"]), iterations, WARMUP, threads=2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--port", type=int, default=29533)
    add_outputs(ap)
    a = ap.parse_args()
    # Each side twice, interleaved: this machine drifts between measurements.
    sides = {"one": [], "independent": [], "ddp": []}
    for _ in range(2):
        sides["one"].append(one_process(a.iterations))
        sides["independent"].append(two_processes(False, a.iterations, a.port))
        sides["ddp"].append(two_processes(True, a.iterations, a.port))
    mean = {k: sum(v) / len(v) for k, v in sides.items()}
    spread = {k: f"{min(v):.0f}-{max(v):.0f}" for k, v in sides.items()}
    row = (f"| {datetime.date.today()} | DDP without Ray, quick preset model, global batch 128, {a.iterations} it, "
           f"each side twice | 2 independent processes x 1 thread: {mean['independent']:.0f} img/s "
           f"({spread['independent']}) | the same 2 processes as one DDP group (gloo): {mean['ddp']:.0f} img/s "
           f"({spread['ddp']}); 1 process x 2 threads: {mean['one']:.0f} img/s ({spread['one']}) | "
           f"**{mean['ddp'] / mean['independent']:.2f}x** DDP vs independent, "
           f"{mean['ddp'] / mean['one']:.2f}x DDP vs 1 process x 2 threads | "
           f"{cpu_model()}, {os.cpu_count()} cores |")
    record(row, a.out, {"sides": sides, "mean": mean}, a.json)


if __name__ == "__main__":
    main()
