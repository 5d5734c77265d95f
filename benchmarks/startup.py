"""Start-up of a local `ganpipe train`: seconds from the command to its first logged iteration and to
its end, for a run so short (6 iterations of a width-8 model) that start-up is nearly all of it.
Ray Train's defaults for the controller (a health check every 2 s, a preemption watcher) against the
settings ganpipe uses for a local Ray (`pipelines.services.runtime.LOCAL_TRAIN_ENV`), alternated in
one run so that the machine's drift falls on both sides alike.

Ray's share: the same work without Ray (one process that imports ganpipe, opens an MLflow run on a
fresh store, loads the data, builds the game and runs its first iteration) is timed in the same
run; the rest of `ganpipe train`'s time to its first iteration is Ray's (its node, Train's
controller, the worker processes).

With `--one-worker`: a one-worker run (two threads) as `ray.layout: auto` lays it out, trained as
one Ray task (`pipelines.stages.train.driver.in_one_task`), against the same worker set in the config
(`ray.num_workers=1`), which trains under Ray Train's TorchTrainer; both with ganpipe's settings.

With `--against REV`: the one-task start-up of the code at git revision REV (a copy of its tree)
against the working tree's, alternated in one run. With `--ray-init` besides: the local Ray's own
start alone, `init_ray("")` and a first task in a fresh process, of each tree.

    python benchmarks/startup.py --rounds 3
    python benchmarks/startup.py --rounds 3 --one-worker
    python benchmarks/startup.py --rounds 4 --against 0dce231
    python benchmarks/startup.py --rounds 8 --against 0dce231 --ray-init
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record, tree_at  # noqa: E402

from pipelines.services.runtime import LOCAL_TRAIN_ENV  # noqa: E402

RAY_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
ARGS = ["model.g_width=8", "model.d_width=8", "train.iterations=6", "train.log_every=3", "train.checkpoint_every=6",
        "train.batch_size=16", "ray.num_workers=2"]
ONE_WORKER = {"task": [*ARGS[:-1], "ray.cpus_per_worker=2"],  # auto: 2 CPUs hold one worker of 2 threads
              "train": [*ARGS[:-1], "ray.cpus_per_worker=2", "ray.num_workers=1"]}


def one(env_extra: dict, folder: Path, cache: str, args_: list[str] = ARGS, tree: Path = ROOT) -> tuple[float, float]:
    """(seconds to the first logged iteration, seconds to the end) of one `ganpipe train` of the code
    in `tree`."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, **env_extra, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)
    args = [a for item in args_ + [f"eval.cache_dir={cache}"] for a in ("--set", item)]
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", *args], cwd=folder, env=env,
                         capture_output=True, text=True, check=True).stdout
    end = time.time()
    run_id = out.split("MLflow run ")[1].split()[0]
    first = min(m.timestamp for m in MlflowClient(uri).get_metric_history(run_id, "iteration")) / 1000
    return first - start, end - start


BARE = """
import time, sys
start = float(sys.argv[1])
import mlflow, torch
from gan_core.data.stream import BatchStream
from pipelines.config import load_config
from pipelines.config.build import build_game, load_data
cfg = load_config(None, sys.argv[3:])
mlflow.set_tracking_uri(sys.argv[2])
with mlflow.start_run():
    mlflow.log_params({"seed": cfg.seed})
    train, _ = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
    game, _ = build_game(cfg, train)
    x, y = train.tensors()
    game.step(BatchStream(x, y, cfg.train.batch_size, seed=0))
    mlflow.log_metric("iteration", 1)
    print(time.time() - start)
"""


def bare(folder: Path) -> float:
    """Seconds from the command to the first iteration of the same run in one process, without Ray."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", BARE, str(start), f"sqlite:///{folder / 'mlflow.db'}", *ARGS],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


RAY_INIT = """
import time
from pipelines.services.runtime import init_ray, stop_ray
import ray
start = time.time()
init_ray("")
ready = time.time()
ray.get(ray.remote(lambda: 0).options(num_cpus=0).remote())
print(ready - start, time.time() - ready)
stop_ray()
"""


def ray_init(tree: Path) -> tuple[float, float]:
    """(seconds of `init_ray("")`, seconds of a first task after it) in a fresh process of `tree`'s code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", RAY_INIT], cwd=cwd, env=env, capture_output=True, text=True,
                             check=True).stdout
    init, task = out.strip().splitlines()[-1].split()
    return float(init), float(task)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one-worker", action="store_true", help="one Ray task against a one-worker TorchTrainer")
    p.add_argument("--against", metavar="REV", help="the one-task start-up of git revision REV against this tree's")
    p.add_argument("--ray-init", action="store_true", help="with --against: the local Ray's start alone")
    add_outputs(p)
    a = p.parse_args()
    if a.against:
        return against(a)
    if a.one_worker:
        return one_worker(a)
    mean = alternated({"ray": (RAY_DEFAULTS, ARGS), "ganpipe": (LOCAL_TRAIN_ENV, ARGS)}, a.rounds, with_bare=True)
    r, g, b = mean["ray"], mean["ganpipe"], mean["bare"][0]
    ray_share = (g[0] - b) / g[0]
    row = (f"| {datetime.date.today()} | local `ganpipe train` start-up, 6 iterations, 2 workers, mean of {a.rounds} "
           f"| Ray Train defaults: first iteration {r[0]:.1f} s, end {r[1]:.1f} s "
           f"| ganpipe local settings: first iteration {g[0]:.1f} s, end {g[1]:.1f} s; the same first iteration "
           f"without Ray {b:.1f} s, so Ray's share {ray_share:.0%} "
           f"| **{r[1] / g[1]:.2f}x** end, {r[0] / g[0]:.2f}x first iteration | {cpu_model()}, {os.cpu_count()} cores |")
    record(row, a.out, {"ray_defaults_first_s": r[0], "ray_defaults_end_s": r[1], "first_s": g[0], "end_s": g[1],
                        "bare_first_s": b, "ray_share": ray_share}, a.json)


def alternated(sides: dict[str, tuple], rounds: int, with_bare: bool = False) -> dict:
    """Each side's (environment, settings[, code tree]) run `rounds` times, alternating, after one
    warm-up run that trains the feature network; the mean (first iteration, end) seconds per side (and
    of `bare`)."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "features")
        one(LOCAL_TRAIN_ENV, Path(tempfile.mkdtemp(dir=tmp)), cache)
        for _ in range(rounds):
            for side, (env, args_, *tree) in sides.items():
                times[side].append(one(env, Path(tempfile.mkdtemp(dir=tmp)), cache, args_, *tree))
            if with_bare:
                times.setdefault("bare", []).append((bare(Path(tempfile.mkdtemp(dir=tmp))), 0.0))
    return {s: (sum(t[0] for t in v) / len(v), sum(t[1] for t in v) / len(v)) for s, v in times.items()}


def one_worker(a) -> None:
    mean = alternated({side: (LOCAL_TRAIN_ENV, args_) for side, args_ in ONE_WORKER.items()}, a.rounds)
    t, k = mean["train"], mean["task"]
    row = (f"| {datetime.date.today()} | local `ganpipe train` start-up, 6 iterations, one worker of 2 threads, mean "
           f"of {a.rounds} | Ray Train (ray.num_workers=1): first iteration {t[0]:.1f} s, end {t[1]:.1f} s "
           f"| one Ray task (ray.layout: auto): first iteration {k[0]:.1f} s, end {k[1]:.1f} s "
           f"| **{t[1] / k[1]:.2f}x** end, {t[0] / k[0]:.2f}x first iteration | {cpu_model()}, {os.cpu_count()} CPUs |")
    record(row, a.out, {"train_first_s": t[0], "train_end_s": t[1], "task_first_s": k[0], "task_end_s": k[1]},
           a.json)


def against(a) -> None:
    with tempfile.TemporaryDirectory() as old:
        commit = tree_at(a.against, Path(old))
        if a.ray_init:
            return against_ray_init(a, Path(old), commit)
        mean = alternated({"before": (LOCAL_TRAIN_ENV, ONE_WORKER["task"], Path(old)),
                           "now": (LOCAL_TRAIN_ENV, ONE_WORKER["task"], ROOT)}, a.rounds)
    b, n = mean["before"], mean["now"]
    row = (f"| {datetime.date.today()} | local `ganpipe train` start-up, 6 iterations, one Ray task of 2 threads, "
           f"mean of {a.rounds} | {commit}: first iteration {b[0]:.1f} s, end {b[1]:.1f} s "
           f"| this tree: first iteration {n[0]:.1f} s, end {n[1]:.1f} s "
           f"| **{b[0] / n[0]:.2f}x** first iteration, {b[1] / n[1]:.2f}x end | {cpu_model()}, {os.cpu_count()} CPUs |")
    record(row, a.out, {"before_first_s": b[0], "before_end_s": b[1], "first_s": n[0], "end_s": n[1]}, a.json)


def against_ray_init(a, old: Path, commit: str) -> None:
    times: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
    for i in range(a.rounds):  # alternating which goes first
        for side in (("before", "now") if i % 2 == 0 else ("now", "before")):
            times[side].append(ray_init(old if side == "before" else ROOT))

    def text(side: str) -> str:
        init, task = [t[0] for t in times[side]], [t[1] for t in times[side]]
        return (f"`init_ray` mean {statistics.mean(init):.2f} s (median {statistics.median(init):.2f}, "
                f"{min(init):.2f}-{max(init):.2f}), then a first task {statistics.mean(task):.2f} s")

    b, n = (statistics.mean(t[0] + t[1] for t in times[side]) for side in ("before", "now"))
    row = (f"| {datetime.date.today()} | a local Ray's start in a fresh process, {a.rounds} alternated rounds each "
           f"| {commit}: {text('before')} | this tree: {text('now')} | **{b / n:.2f}x** (the call and the task) "
           f"| {cpu_model()}, {os.cpu_count()} CPUs |")
    record(row, a.out, {"before": times["before"], "now": times["now"]}, a.json)


if __name__ == "__main__":
    main()
