"""The Fréchet distance's bootstrap interval (`gan_core.metrics.bootstrap.fd_interval`, 200 resamples
of both feature sets) of the code at git revision REV against this tree's, alternated in one run,
each side in its own fresh process on the same features. The protocol's evaluation and every
dataset card compute one; the features are what the protocol compares: the real holdout's and as
many real training images', embedded by the data's feature network (trained here once, in a
temporary cache). Both sides must give the same interval.

    python benchmarks/fd_interval.py --against 790352f --rounds 6
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record, tree_at  # noqa: E402

CALLS = 5  # intervals per process, after one untimed call

TIMED = """
import json, sys, time
import numpy as np
from gan_core.metrics.bootstrap import fd_interval
real, fake = np.load(sys.argv[1]), np.load(sys.argv[2])
fd_interval(real, fake)
seconds = []
for _ in range({calls}):
    t = time.perf_counter()
    interval = fd_interval(real, fake)
    seconds.append(time.perf_counter() - t)
print(json.dumps({{"seconds": seconds, "interval": interval}}))
"""


def features(folder: Path) -> tuple[Path, Path, int, int]:
    """The holdout's features and as many training images' (the pair of the protocol's `fd_real`),
    saved in `folder`; their paths, rows and dimension."""
    import numpy as np

    from pipelines.config import load_config
    from pipelines.config.build import feature_net, load_data

    cfg = load_config(None, [f"eval.cache_dir={folder}"])
    train, holdout = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
    net = feature_net(cfg, train, holdout)
    xh, _ = holdout.tensors()
    xt, _ = train.tensors()
    f_hold, _ = net.embed(xh)
    f_train, _ = net.embed(xt[: len(xh)])
    paths = folder / "real.npy", folder / "fake.npy"
    np.save(paths[0], f_hold)
    np.save(paths[1], f_train)
    return *paths, len(f_hold), f_hold.shape[1]


def timed(tree: Path, real: Path, fake: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", TIMED.format(calls=CALLS), str(real), str(fake)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", metavar="REV", required=True)
    p.add_argument("--rounds", type=int, default=6)
    add_outputs(p)
    a = p.parse_args()
    seconds: dict[str, list[float]] = {"before": [], "now": []}
    intervals = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        commit = tree_at(a.against, old)
        real, fake, n, dim = features(Path(tmp))
        for i in range(a.rounds):  # alternating which goes first
            for side in (("before", "now") if i % 2 == 0 else ("now", "before")):
                got = timed(old if side == "before" else ROOT, real, fake)
                seconds[side] += got["seconds"]
                intervals[side] = got["interval"]
    drift = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(intervals["before"], intervals["now"]))
    if drift > 1e-6:
        raise SystemExit(f"the two trees' intervals differ: {intervals['before']} vs {intervals['now']}")
    b, n_ = statistics.median(seconds["before"]), statistics.median(seconds["now"])
    row = (f"| {datetime.date.today()} | the Fréchet distance's bootstrap interval (200 resamples) of {n} x {dim} "
           f"features per side, {a.rounds} alternated processes of {CALLS} calls each | {commit}: median {b:.3f} s "
           f"| this tree: median {n_:.3f} s (the same interval, within {drift:.0e}) | **{b / n_:.2f}x** "
           f"| {cpu_model()}, {os.cpu_count()} CPUs |")
    record(row, a.out, {"before_s": seconds["before"], "now_s": seconds["now"], "interval": intervals["now"]}, a.json)


if __name__ == "__main__":
    main()
