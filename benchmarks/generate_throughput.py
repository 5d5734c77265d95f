"""Batch stage: rows/second written to Parquet by `ganpipe generate` end to end (Ray Data, PNG
encoding, verifier, card, MLflow run) against the bare generator forward pass at the same block size
on the same CPUs (one process with as many threads as the job has CPUs), and the peak memory of a
large job against a small one, in one run.

    python benchmarks/generate_throughput.py --small 10000 --large 1000000

It also times, per row at one thread, what an actor does (G, the verifier, PNG, a whole shard), and
from that the rate the actors' arithmetic alone allows and a job's fixed cost. `--cpu-split ROWS`
instead says where the machine's CPU time goes during one job on the pool (the actors, Ray's other
processes, the driver, idle) against that ceiling:

    python benchmarks/generate_throughput.py --cpu-split 300000

Each job runs in its own process (its own local Ray). Its memory is the peak, sampled every 0.2 s,
of the summed resident memory of the job's process tree: the driver, Ray's processes and the actors.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [root]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _tree_rss_mib(root: int) -> tuple[float, dict[str, float]]:
    """Resident memory of `root` and all its descendants (Linux /proc), in all and by process name."""
    total, by_name = 0.0, {}
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1][:40] or str(pid)
        except (OSError, ValueError, IndexError):
            continue
        total += rss
        by_name[name] = by_name.get(name, 0.0) + rss
    return total, by_name


def _setup(tmp: Path, *sets: str):
    """A config (with `sets`) and a checkpoint of the quick preset's (untrained) conditional DCGAN."""
    from pipelines.config import load_config
    from pipelines.config.build import build_game, load_data
    from pipelines.services import checkpoints
    from pipelines.stages.train.worker import checkpoint_meta

    cfg = load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", "eval.cas=false",
                             "generate.eval_samples=500", *sets])
    data = load_data(cfg)
    train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
    game, spec = build_game(cfg, train)
    if not (tmp / "ckpt").exists():
        (tmp / "ckpt").mkdir()
        checkpoints.save(tmp / "ckpt", game.state_dict(), 1, cfg.model_dump(mode="json"), 0,
                         checkpoint_meta(spec, data, train, ""))
    return cfg, game


def job(rows: int, tmp: Path, verifier: bool = True, actors: int | None = None, gpus: float = 0.0) -> dict:
    """One `generate` job in this process (`actors`: on a pool of that many, whatever its size; `gpus`:
    generate.gpus_per_actor); its rows/second and the peak memory of its process tree."""
    from pipelines.stages.generate import generate

    cfg, _ = _setup(tmp, f"generate.verifier={str(verifier).lower()}", *([f"generate.actors={actors}"] if actors else []),
                    *([f"generate.gpus_per_actor={gpus}"] if gpus else []))
    peak, at_peak, done = [0.0], [{}], threading.Event()

    def sample():
        while not done.is_set():
            total, by_name = _tree_rss_mib(os.getpid())
            if total > peak[0]:
                peak[0], at_peak[0] = total, by_name
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start, cpu = time.perf_counter(), time.process_time()
    res = generate(cfg, str(tmp / "ckpt"), rows, str(tmp / f"ds{rows}{'' if verifier else '-plain'}{actors or ''}"))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    done.set()
    watcher.join()
    return {"rows": res.rows, "wall": wall, "rows_per_s": res.rows / wall, "driver_cpu_s": cpu, "peak_mib": peak[0],
            "peak_by_process_mib": {k: round(v) for k, v in sorted(at_peak[0].items(), key=lambda kv: -kv[1])}}


def bare_forward(tmp: Path, rows: int, threads: int, device: str = "cpu") -> float:
    """Rows/second of G alone (plain eval mode, NCHW) on FORWARD_BLOCK-row blocks with `threads` threads,
    on `device` (each row's noise drawn on the CPU from its own seed, as the batch stage draws it)."""
    import torch

    from gan_core import FORWARD_BLOCK, aligned_blocks, labels_for_rows, render_rows

    _, game = _setup(tmp)
    g = game.G.eval().to(device)
    torch.set_num_threads(threads)
    counts = [rows // 10 + (1 if c < rows % 10 else 0) for c in range(10)]
    if device == "cuda":  # the device's first calls (its kernels' set-up) are not the pass
        for ids, _ in aligned_blocks(0, 2 * FORWARD_BLOCK, rows):
            render_rows(g, ids, 0, labels_for_rows(ids, counts, 0))
        torch.cuda.synchronize()
    start = time.perf_counter()
    for ids, _ in aligned_blocks(0, rows, rows):
        render_rows(g, ids, 0, labels_for_rows(ids, counts, 0))
    if device == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - start)


def per_row_costs(tmp: Path, rounds: int = 3) -> dict[str, float]:
    """Microseconds per row of what an actor does, at one thread in this process, on FORWARD_BLOCK-row
    blocks (the fastest of `rounds`): G (its images rounded to pixels), the verifier, PNG encoding,
    and a whole 4,096-row shard written by `ShardWriter.write` (Parquet, checksum and the rest
    included); `rest` is the shard's time not spent in the first three."""
    import dataclasses

    import numpy as np
    import torch

    from gan_core import FORWARD_BLOCK, labels_for_rows, render_rows
    from gan_core.data import encode_pngs, from_uint8, to_uint8
    from gan_core.metrics import SmallCNN
    from pipelines.config.build import model_spec
    from pipelines.services.dataset_folder import DatasetRequest
    from pipelines.stages.generate.writer import ShardWriter, verdicts

    cfg, game = _setup(tmp)
    torch.set_num_threads(1)
    shard_rows, total = 4096, 1_000_000
    counts = [total // 10] * 10
    spec = dataclasses.asdict(model_spec(cfg, game.G.image_shape, game.G.num_classes))
    verifier = SmallCNN(1, 10)
    shards = tmp / "per_row" / "data"
    shards.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter({"spec": spec, "state": game.G.state_dict(), "d_state": None},
                         {"state": verifier.state_dict(), "channels": 1, "num_classes": 10},
                         DatasetRequest("benchmark", None, 0, "", 0, total, counts, [str(c) for c in range(10)],
                                        shard_rows).to_dict(),
                         str(shards), {"benchmark": "per_row_costs"})
    ids = np.arange(FORWARD_BLOCK)
    y = labels_for_rows(ids, counts, 0)
    pixels = to_uint8(render_rows(writer.G, ids, 0, y))
    x = from_uint8(pixels)

    def best(fn, repeat: int, rows: int) -> float:
        fn()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            times.append((time.perf_counter() - start) / repeat / rows * 1e6)
        return min(times)

    with torch.no_grad():
        g = best(lambda: to_uint8(render_rows(writer.G, ids, 0, y)), 8, FORWARD_BLOCK)
        v = best(lambda: verdicts(writer.net, x), 8, FORWARD_BLOCK)
    png = best(lambda: encode_pngs(pixels), 8, FORWARD_BLOCK)
    shard = best(lambda: writer.write(0, 2, 0, shard_rows), 1, shard_rows)
    return {"g_us": g, "verifier_us": v, "png_us": png, "shard_us": shard, "rest_us": shard - g - v - png}


def _cpu_seconds(pid: int) -> tuple[float, str]:
    """(CPU seconds used so far, the process's name: a Ray worker's proctitle or its program)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        name = f.read().split(b"\0")[0].decode(errors="replace").strip()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), name


def cpu_split(tmp: Path, rows: int, cpus: int) -> dict:
    """Where the machine's CPU time goes during one `rows`-row job on a pool of `cpus` actors, sampled
    from /proc every 0.25 s: the job's own process (the driver), the actors (Ray Data's map workers),
    and Ray's other processes (GCS, raylet, its agents and helper actors); and the idle rest."""
    proc = subprocess.Popen([sys.executable, __file__, "--job", str(rows), "--tmp", str(tmp), "--actors", str(cpus)],
                            stdout=subprocess.PIPE, text=True)
    used: dict[int, tuple[float, str]] = {}
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            try:
                seconds, name = _cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue
            used[pid] = (seconds, name or used.get(pid, (0, ""))[1])
        time.sleep(0.25)
    res = json.loads(proc.stdout.read().strip().splitlines()[-1])
    used.pop(proc.pid, None)  # its imports and set-up precede the job: its CPU during the job is its own count
    driver = res["driver_cpu_s"]
    actors = sum(c for c, n in used.values() if n.startswith("ray::MapWorker"))
    ray_own = sum(c for c, n in used.values() if not n.startswith("ray::MapWorker"))
    return {"rows": res["rows"], "wall": res["wall"], "rows_per_s": res["rows_per_s"], "driver_s": driver,
            "actors_s": actors, "ray_s": ray_own, "actor_us_per_row": actors / res["rows"] * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--job", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--actors", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--gpus", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--cpu-split", type=int, metavar="ROWS", help="only: where the CPU time of one ROWS-row job "
                                                                   "on the pool goes, against the per-row ceiling")
    add_outputs(ap)
    args = ap.parse_args()
    if args.job:
        print(json.dumps(job(args.job, Path(args.tmp), verifier=not args.plain, actors=args.actors, gpus=args.gpus)))
        return
    from pipelines.stages.generate import IN_PROCESS_ROWS

    tmp = Path(tempfile.mkdtemp())
    cpus = os.cpu_count()
    if args.cpu_split:
        costs = per_row_costs(tmp)
        ceiling = cpus * 1e6 / costs["shard_us"]
        c = cpu_split(tmp, args.cpu_split, cpus)
        idle = cpus * c["wall"] - c["actors_s"] - c["ray_s"] - c["driver_s"]
        row = (f"| {datetime.date.today()} | generate, {c['rows']:,} rows on {cpus} one-CPU actors: where the "
               f"machine's CPU time goes during the job (Ray's start to the card) | per-row cost of one actor alone "
               f"{costs['shard_us']:.0f} us, so a ceiling of {ceiling:.0f} rows/s | {c['rows_per_s']:.0f} rows/s, "
               f"{c['wall']:.0f} s x {cpus} CPUs = {cpus * c['wall']:.0f} CPU-s: the actors {c['actors_s']:.0f} "
               f"({c['actor_us_per_row']:.0f} us a row, their start included), Ray's other processes "
               f"{c['ray_s']:.0f}, the driver {c['driver_s']:.0f}, idle {idle:.0f} | **{c['rows_per_s'] / ceiling:.2f}x** "
               f"of the ceiling | {cpu_model()}, {cpus} cores |")
        record(row, args.out, {**c, "per_row_us": costs, "ceiling_rows_per_s": ceiling, "idle_s": idle}, args.json)
        return
    # The baseline, G alone on the CPUs the job has, is the fastest of three rounds before and three
    # after the jobs (this machine's speed drifts by 20%; the fastest is the baseline hardest to meet).
    rounds = [bare_forward(tmp, 20_000, cpus) for _ in range(3)]
    bare1 = max(bare_forward(tmp, 20_000, 1) for _ in range(3))
    costs = per_row_costs(tmp)
    runs = {}
    for rows, plain, actors in ((args.small, False, None), (args.large, False, None), (args.large, True, None),
                                (args.small, False, cpus)):
        out = subprocess.run([sys.executable, __file__, "--job", str(rows), "--tmp", str(tmp)]
                             + (["--plain"] if plain else []) + (["--actors", str(actors)] if actors else []),
                             check=True, capture_output=True, text=True).stdout
        runs[(rows, plain, actors)] = json.loads(out.strip().splitlines()[-1])
    rounds += [bare_forward(tmp, 20_000, cpus) for _ in range(3)]
    bare = max(rounds)
    s, big, plain = runs[(args.small, False, None)], runs[(args.large, False, None)], runs[(args.large, True, None)]
    pool = runs[(args.small, False, cpus)]
    here = args.small <= IN_PROCESS_ROWS  # the small job written in the command's own process
    row = (f"| {datetime.date.today()} | generate, conditional DCGAN width 32 (quick preset), "
           f"{cpus} actors x 1 CPU | bare G forward (eval mode), 256-row blocks, {cpus} threads, fastest of 6 "
           f"rounds: {bare:.0f} rows/s (slowest {min(rounds):.0f}; 1 thread: {bare1:.0f}) | "
           f"ganpipe generate end to end (Ray start, PNG, verifier, Parquet, card, MLflow): "
           f"{args.large:,} rows {big['rows_per_s']:.0f} rows/s ({big['wall']:.0f} s), "
           f"{args.small:,} rows {s['rows_per_s']:.0f} rows/s ({s['wall']:.0f} s); peak memory of the job's "
           f"processes {big['peak_mib']:.0f} MiB vs {pool['peak_mib']:.0f} MiB for {args.small:,} rows on the same "
           f"pool | "
           f"**{big['rows_per_s'] / bare:.2f}x** of the bare forward pass on {cpus} threads "
           f"({big['rows_per_s'] / bare1:.2f}x of one thread), at {args.large:,} rows; memory "
           f"**{big['peak_mib'] / pool['peak_mib']:.2f}x** ({args.large:,} vs {args.small:,} rows) | "
           f"{cpu_model()}, {os.cpu_count()} cores |")
    # What the actors' arithmetic allows: `cpus` one-thread actors writing shards at the measured rate,
    # with no Ray, no start-up and no card; and the fixed cost of a job (the small job's time beyond it).
    ceiling = cpus * 1e6 / costs["shard_us"]
    fixed = s["wall"] - s["rows"] * costs["shard_us"] / 1e6 if here else s["wall"] - s["rows"] / ceiling
    row += (f"\n| {datetime.date.today()} | generate: where an actor's time goes, per row at one thread (fastest of "
            f"3) | bare G forward, {cpus} threads: {bare:.0f} rows/s | G {costs['g_us']:.0f} us, verifier "
            f"{costs['verifier_us']:.0f} us, PNG {costs['png_us']:.0f} us, Parquet and the rest "
            f"{costs['rest_us']:.0f} us: a {costs['shard_us']:.0f} us row, so {cpus} actors can write at most "
            f"{ceiling:.0f} rows/s; fixed cost of a job about {fixed:.0f} s ("
            f"{'written in its own process: model, data, card, MLflow' if here else 'Ray, actors, card, MLflow'}) | "
            f"**{ceiling / bare:.2f}x** ceiling of the compute alone | {cpu_model()}, {os.cpu_count()} cores |")
    row += (f"\n| {datetime.date.today()} | generate without the verifier (generate.verifier=false), {args.large:,} "
            f"rows | bare G forward, {cpus} threads: {bare:.0f} rows/s | {plain['rows_per_s']:.0f} rows/s "
            f"({plain['wall']:.0f} s) against {big['rows_per_s']:.0f} with it | "
            f"**{plain['rows_per_s'] / bare:.2f}x** of the bare forward pass (target 0.6x) | {cpu_model()}, {os.cpu_count()} cores |")
    row += (f"\n| {datetime.date.today()} | generate, {args.small:,} rows: in the command's own process (up to "
            f"{IN_PROCESS_ROWS:,} rows) vs on a pool of {cpus} actors (generate.actors={cpus}) | the pool: "
            f"{pool['wall']:.1f} s | its own process: {s['wall']:.1f} s | **{pool['wall'] / s['wall']:.2f}x** | "
            f"{cpu_model()}, {os.cpu_count()} CPUs |")
    record(row, args.out, {"bare": bare, "bare_rounds": rounds, "bare_1_thread": bare1, "large": big, "small": s,
                           "plain": plain, "plain_ratio": plain["rows_per_s"] / bare,
                           "ratio": big["rows_per_s"] / bare, "memory_ratio": big["peak_mib"] / pool["peak_mib"],
                           "per_row_us": costs, "ceiling": ceiling / bare, "fixed_s": fixed,
                           "small_pool": pool, "small_here": here}, args.json)


if __name__ == "__main__":
    main()
