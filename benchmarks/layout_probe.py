"""The layout probe's cost on a new model shape (a fresh home): every layout's processes started
together and kept for both rounds (`pipelines.stages.train.layout.Probes`, as `ganpipe train` runs
it) against fresh processes for every measurement, alternated in one run; the quick preset's model
at the shape `auto` derives for `--data` on this machine's CPUs.

    python benchmarks/layout_probe.py --data idx:/usr/share/datasets/fashion-mnist --rounds 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="idx:/usr/share/datasets/fashion-mnist")
    parser.add_argument("--rounds", type=int, default=2)
    add_outputs(parser)
    args = parser.parse_args()

    from pipelines.config import auto, load_config
    from pipelines.config.build import load_data
    from pipelines.stages.train.layout import ROUNDS, Probes, candidates

    cfg = load_config(None, [f"data.source={args.data}"])
    cfg, _ = auto.sized(cfg)
    data = load_data(cfg)
    cpus = os.cpu_count() or 1
    cfg, _ = auto.derive(cfg, data, auto.Device(cpus, 0), cpus)
    options = candidates(cfg, cpus)

    def kept() -> None:  # as layout.choose probes
        with Probes(cfg, data, options) as probes:
            for _ in range(ROUNDS):
                for o in options:
                    probes.rate(o)

    def fresh() -> None:  # fresh processes for every measurement
        for _ in range(ROUNDS):
            for o in options:
                with Probes(cfg, data, [o]) as probes:
                    probes.rate(o)

    seconds: dict[str, list[float]] = {"kept": [], "fresh": []}
    for _ in range(args.rounds):
        for name, f in (("fresh", fresh), ("kept", kept)):
            start = time.perf_counter()
            f()
            seconds[name].append(time.perf_counter() - start)
    new, old = min(seconds["kept"]), min(seconds["fresh"])
    row = (f"| {datetime.date.today()} | {cpu_model()}, {cpus} CPUs | the layout probe on {args.data} "
           f"({', '.join(o.describe() for o in options)}; {ROUNDS} rounds each), best of {args.rounds} | fresh "
           f"processes per measurement {old:.1f} s | each layout's processes started together and kept "
           f"{new:.1f} s | **{old / new:.2f}x** |")
    record(row, args.out, {"fresh_s": old, "kept_s": new, "ratio": old / new}, args.json)


if __name__ == "__main__":
    main()
