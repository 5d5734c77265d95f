"""The protocol's evaluation of one generated set (`gan_core.metrics.full_metrics` as
`pipelines.stages.evaluate.protocol_metrics` calls it: every metric, CAS with `eval.cas_seeds`
classifier pairs of `eval.cas_epochs` epochs) with CAS's real side
trained in the call, as every evaluation did before it was cached, against the same call reading it
from `eval.cache_dir` (`gan_core.metrics.cas.reference_path`). The rounds alternate so that the
machine's drift falls on both sides alike; both sides must give the same numbers.

The generated set is what the quick preset's G, freshly initialized with the run's seed, makes: the
classifiers train on as many rows and for as many steps whatever the samples look like.

    python benchmarks/evaluate_cost.py --rounds 2
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cas-seeds", type=int, default=None, help="default: the quick preset's eval.cas_seeds")
    add_outputs(parser)
    args = parser.parse_args()

    import torch

    from gan_core.metrics import full_metrics
    from pipelines.config.build import feature_net
    from gan_core.metrics.suite import sample_generator
    from pipelines.config import load_config
    from pipelines.config.build import build_game, load_data
    from pipelines.stages.evaluate import protocol_samples

    with tempfile.TemporaryDirectory() as cache:
        sets = [f"eval.cache_dir={cache}"] + ([f"eval.cas_seeds={args.cas_seeds}"] if args.cas_seeds else [])
        cfg = load_config(None, sets)
        data = load_data(cfg)
        train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
        torch.manual_seed(cfg.seed)
        game, _ = build_game(cfg, train)
        fake_x, fake_y = sample_generator(game.G, protocol_samples(cfg, data), train.label_prior(), cfg.seed)
        net = feature_net(cfg, train, holdout)

        def evaluate(cache_dir):
            return full_metrics(net, train, holdout, fake_x, fake_y, cfg.seed, cas=True, cas_seeds=cfg.eval.cas_seeds,
                                cas_epochs=cfg.eval.cas_epochs, cache_dir=cache_dir)

        evaluate(cfg.eval.cache_dir)  # CAS's real side, into the cache
        seconds: dict[str, list[float]] = {"trained": [], "cached": []}
        values = {}
        for _ in range(args.rounds):
            for side, cache_dir in (("trained", None), ("cached", cfg.eval.cache_dir)):
                start = time.perf_counter()
                values[side] = evaluate(cache_dir)
                seconds[side].append(time.perf_counter() - start)
    same = all(values["trained"][k] == values["cached"][k] for k in ("cas", "cas_real", "cas_ratio", "fd"))
    if not same:
        raise SystemExit("the cached real side changed the numbers: "
                         f"{[(k, values['trained'][k], values['cached'][k]) for k in ('cas', 'cas_real')]}")
    trained, cached = min(seconds["trained"]), min(seconds["cached"])
    row = (f"| {datetime.date.today()} | the protocol's evaluation of {len(fake_x):,} samples, "
           f"{cfg.eval.cas_seeds} CAS classifier pairs of {cfg.eval.cas_epochs} epochs, best of {args.rounds} | "
           f"CAS's real side trained in the call {trained:.1f} s | real side read from eval.cache_dir "
           f"{cached:.1f} s, the same numbers (CAS ratio {values['cached']['cas_ratio']:.4f}) | "
           f"**{trained / cached:.2f}x** | {torch.get_num_threads()} threads |")
    record(row, args.out, {"trained_s": trained, "cached_s": cached, "ratio": trained / cached}, args.json)


if __name__ == "__main__":
    main()
