"""Start-up of a local `ganpipe train`: seconds from the command to its first logged iteration and to
its end, for a run so short (6 iterations of a width-8 model) that start-up is nearly all of it.
Ray Train's defaults for the controller (a health check every 2 s, a preemption watcher) against the
settings ganpipe uses for a local Ray (`pipelines.services.runtime.LOCAL_TRAIN_ENV`), alternated in
one run so that the machine's drift falls on both sides alike.

    python benchmarks/startup.py --rounds 3
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from pipelines.services.runtime import LOCAL_TRAIN_ENV  # noqa: E402

RAY_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
ARGS = ["model.g_width=8", "model.d_width=8", "train.iterations=6", "train.log_every=3", "train.checkpoint_every=6",
        "train.batch_size=16", "ray.num_workers=2"]


def one(env_extra: dict, folder: Path, cache: str) -> tuple[float, float]:
    """(seconds to the first logged iteration, seconds to the end) of one `ganpipe train`."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, **env_extra, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    args = [a for item in ARGS + [f"eval.cache_dir={cache}"] for a in ("--set", item)]
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", *args], cwd=folder, env=env,
                         capture_output=True, text=True, check=True).stdout
    end = time.time()
    run_id = out.split("MLflow run ")[1].split()[0]
    first = min(m.timestamp for m in MlflowClient(uri).get_metric_history(run_id, "iteration")) / 1000
    return first - start, end - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    sides = {"ray": RAY_DEFAULTS, "ganpipe": LOCAL_TRAIN_ENV}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "features")
        one(LOCAL_TRAIN_ENV, Path(tempfile.mkdtemp(dir=tmp)), cache)  # warm-up: trains the feature network once
        for _ in range(a.rounds):
            for side, env in sides.items():
                times[side].append(one(env, Path(tempfile.mkdtemp(dir=tmp)), cache))
    mean = {s: (sum(t[0] for t in v) / len(v), sum(t[1] for t in v) / len(v)) for s, v in times.items()}
    r, g = mean["ray"], mean["ganpipe"]
    row = (f"| {datetime.date.today()} | local `ganpipe train` start-up, 6 iterations, 2 workers, mean of {a.rounds} "
           f"| Ray Train defaults: first iteration {r[0]:.1f} s, end {r[1]:.1f} s "
           f"| ganpipe local settings: first iteration {g[0]:.1f} s, end {g[1]:.1f} s "
           f"| **{r[1] / g[1]:.2f}x** end, {r[0] / g[0]:.2f}x first iteration | {os.uname().machine}, {os.cpu_count()} cores |")
    record(row, a.out) if a.out else record(row)


if __name__ == "__main__":
    main()
