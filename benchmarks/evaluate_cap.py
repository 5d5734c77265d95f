"""The protocol's evaluation on a large dataset with CAS capped at `eval.cas_max_samples` images a
side against the same evaluation uncapped (CAS on as many generated images as the training split
holds, as before the cap), in one run, alternating. Both train CAS's real side in the call, as a
first evaluation on a machine does; the other metrics are the same computation on both sides.

The generated set is what the quick preset's G, freshly initialized with the run's seed, makes: the
classifiers train on as many rows and for as many steps whatever the samples look like.

    python benchmarks/evaluate_cap.py --data idx:/usr/share/datasets/fashion-mnist --rounds 1
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

from record import add_outputs, cpu_model, record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="idx:/usr/share/datasets/fashion-mnist")
    parser.add_argument("--rounds", type=int, default=1)
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
        cfg = load_config(None, [f"data.source={args.data}", f"eval.cache_dir={cache}"])
        data = load_data(cfg)
        train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
        torch.manual_seed(cfg.seed)
        game, _ = build_game(cfg, train)
        n_train = len(train)
        capped = protocol_samples(cfg, data)
        fake_x, fake_y = sample_generator(game.G, n_train, train.label_prior(), cfg.seed)
        net = feature_net(cfg, train, holdout)
        seconds: dict[int, list[float]] = {capped: [], n_train: []}
        values = {}
        for _ in range(args.rounds):
            for n in (capped, n_train):
                start = time.perf_counter()
                values[n] = full_metrics(net, train, holdout, fake_x[:n], fake_y[:n], cfg.seed, cas=True,
                                         cas_seeds=cfg.eval.cas_seeds, cas_epochs=cfg.eval.cas_epochs)
                seconds[n].append(time.perf_counter() - start)
    fast, slow = min(seconds[capped]), min(seconds[n_train])
    a, b = values[capped], values[n_train]
    row = (f"| {datetime.date.today()} | {cpu_model()}, {torch.get_num_threads()} threads | the protocol's "
           f"evaluation on {args.data} ({n_train:,} training images), {cfg.eval.cas_seeds} CAS pairs of "
           f"{cfg.eval.cas_epochs} epochs, best of {args.rounds} | CAS on {n_train:,} a side {slow:.0f} s "
           f"(CAS ratio {b['cas_ratio']:.3f}, {b['cas_ratio_lo']:.3f}-{b['cas_ratio_hi']:.3f}) | CAS on "
           f"{capped:,} a side (eval.cas_max_samples) {fast:.0f} s (CAS ratio {a['cas_ratio']:.3f}, "
           f"{a['cas_ratio_lo']:.3f}-{a['cas_ratio_hi']:.3f}) | **{slow / fast:.2f}x** |")
    record(row, args.out, {"uncapped_s": slow, "capped_s": fast, "ratio": slow / fast}, args.json)


if __name__ == "__main__":
    main()
