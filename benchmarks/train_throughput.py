"""Training images/second: the same model and data in TorchTrainer (1 worker) vs the bare loop.

Both sides run gan_core's Game on the same BatchStream with one CPU thread; the TorchTrainer side
is the real `ganpipe train` worker loop (DDP not engaged with one worker), measured from inside the
worker over the last log windows (MLflow logging and the per-epoch sample grid included; the
training evaluation once, after the last window), plus the end-to-end wall time including Ray's
start-up.

    python benchmarks/train_throughput.py --iterations 200
    python benchmarks/train_throughput.py --iterations 200 --workers 2

With `--workers N` the TorchTrainer side runs N DDP workers with one thread each, and the bare loop
one process with N threads on the same global batch (N x train.batch_size): the two layouts of the
same training on N cores. With `--workers auto` the TorchTrainer side is the local default
(`ray.layout: auto`, measured afresh: the layout it picks on this machine), against one process with
as many threads as the machine has cores.

    python benchmarks/train_throughput.py --iterations 200 --workers auto

With `--set ray.use_gpu=true` both sides train on the GPU: one Ray Train GPU worker against the bare
step on the same GPU.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402

from gan_core.data.stream import BatchStream  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.config.build import build_game, load_data  # noqa: E402
from pipelines.stages.train.layout import steady_rate  # noqa: E402


def bare_game(cfg, rank: int = 0, world: int = 1):
    """gan_core's Game for `cfg` (with what `auto` derives for `world` workers, as the run's driver does)
    and this rank's BatchStream, as a worker builds them, outside Ray."""
    from pipelines.config import auto

    torch.manual_seed(cfg.seed)
    cfg, _ = auto.sized(cfg)
    data = load_data(cfg)
    cfg, _ = auto.derive(cfg, data, auto.Device.of(cfg), world)
    train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
    x, y = train.tensors()
    on = "cuda" if cfg.ray.use_gpu else "cpu"
    game, _ = build_game(cfg, train, on)
    return game, BatchStream(x, y, cfg.train.batch_size, world, rank, seed=cfg.seed, device=on)


def bare_loop(cfg, iterations: int, warmup: int, threads: int = 1) -> float:
    torch.set_num_threads(threads)
    game, stream = bare_game(cfg)
    return steady_rate(game, stream, cfg, iterations, warmup)


def ray_trainer(cfg, iterations: int, warmup: int, workers: int | None = 1) -> tuple[float, float, dict]:
    """(steady images/s from inside the run, end-to-end images/s, the run's layout params); `workers`
    None: the local default layout (`ray.layout: auto`, measured afresh in a cache of its own)."""
    from mlflow.tracking import MlflowClient

    from pipelines.stages.train import run_training

    tmp = tempfile.mkdtemp()
    layout = [f"ray.num_workers={workers}"] if workers else [f"ray.layout_cache={tmp}/layouts.json"]
    # The training evaluation (fd on 500 samples, about a second) runs once, at the end, after the last
    # measured window: it is a cost of its own, not of the step. Logging and the per-epoch sample grid
    # stay in the windows.
    cfg = load_config(None, [f"train.iterations={warmup + iterations}", f"train.log_every={warmup}",
                             f"train.checkpoint_every={warmup + iterations}",
                             f"train.eval_every={warmup + iterations}", *layout,
                             f"ray.storage_path={tmp}/runs", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                             *OVERRIDES])
    start = time.perf_counter()
    out = run_training(cfg, quiet=True)
    wall = time.perf_counter() - start
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    hist = client.get_metric_history(out.run_id, "images_per_second")
    steady = [m.value for m in sorted(hist, key=lambda m: m.step) if m.step > warmup]
    params = client.get_run(out.run_id).data.params
    ran = {k: int(float(params[f"ray.{k}" if k != "batch_size" else "train.batch_size"]))
           for k in ("num_workers", "cpus_per_worker", "batch_size")}
    images = (warmup + iterations) * cfg.train.k * ran["batch_size"] * ran["num_workers"]
    return sum(steady) / len(steady), images / wall, ran


OVERRIDES: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--workers", default="1", help="N, or auto: the local default layout")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    add_outputs(ap)
    args = ap.parse_args()
    OVERRIDES.extend(args.overrides)
    cfg = load_config(None, args.overrides)
    auto = args.workers == "auto"
    n = os.cpu_count() if auto else int(args.workers)
    bare_cfg = load_config(None, [*args.overrides, f"train.batch_size={cfg.train.batch_size * n}"])
    first = bare_loop(bare_cfg, args.iterations, args.warmup, threads=n)
    steady, end_to_end, ran = ray_trainer(cfg, args.iterations, args.warmup, workers=None if auto else n)
    second = bare_loop(bare_cfg, args.iterations, args.warmup, threads=n)  # before and after: drift averages out
    bare = (first + second) / 2
    gpu = cfg.ray.use_gpu
    side = (f"TorchTrainer, the local default (`ray.layout: auto`) picked {ran['num_workers']} worker(s) x "
            f"{ran['cpus_per_worker']} thread(s)" if auto
            else f"TorchTrainer {n} worker(s) x {'1 GPU' if gpu else '1 thread'}")
    machine = (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}" if gpu
               else f"{cpu_model()}, {os.cpu_count()} cores")
    row = (f"| {datetime.date.today()} | train throughput, {cfg.model.arch} "
           f"{'conditional ' if cfg.model.conditional else ''}{cfg.data.source}, global batch "
           f"{cfg.train.batch_size * n}, {args.iterations} it | bare loop, 1 process x "
           f"{'1 GPU' if gpu else f'{n} thread(s)'} {bare:.0f} img/s "
           f"({first:.0f} before, {second:.0f} after) | {side} {steady:.0f} img/s "
           f"(end to end incl. Ray start{' and the layout probe' if auto else ''} {end_to_end:.0f} img/s) | "
           f"**{steady / bare:.2f}x** steady, {end_to_end / bare:.2f}x end to end | "
           f"{machine} |")
    record(row, args.out, {"workers": args.workers, "ran": ran, "bare": bare, "steady": steady,
                           "end_to_end": end_to_end, "ratio": steady / bare}, args.json)


if __name__ == "__main__":
    main()
