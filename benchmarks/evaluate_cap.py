"""The protocol's evaluation on a large dataset with CAS's classifiers capped (`eval.cas_max_samples`
images a side, `eval.cas_max_steps` batches each) against the same evaluation with only the sample
cap (every classifier 8 whole epochs: the protocol before the step cap), in one run, alternating. Both
train CAS's real side in the call, as a first evaluation on a machine does; the other metrics are the
same computation on both sides.

The generated set is `--model`'s (a checkpoint folder, a run's or a registered model's URI; its
training config gives the data), else what the quick preset's G, freshly initialized with the run's
seed, makes on `--data` (the classifiers then train on as many rows and as long, but the ratio says
nothing of a trained generator).

    python benchmarks/evaluate_cap.py --model RUN/checkpoint_00007200 --rounds 1
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
    parser.add_argument("--model", default=None, help="a trained generator (checkpoint folder or URI)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="where --model's runs are")
    parser.add_argument("--rounds", type=int, default=1)
    add_outputs(parser)
    args = parser.parse_args()

    import torch

    from gan_core.metrics.suite import sample_generator
    from pipelines.config import load_config
    from pipelines.config.build import build_game, feature_net, load_data
    from pipelines.services.models import resolve
    from pipelines.stages.evaluate import generator_config, protocol_metrics, protocol_samples

    with tempfile.TemporaryDirectory() as cache:
        sets = [f"data.source={args.data}", f"eval.cache_dir={cache}"]
        cfg = load_config(None, sets)
        if args.model:
            loaded = resolve(args.model, args.tracking_uri)
            cfg = generator_config(load_config(None, [f"eval.cache_dir={cache}"]), loaded)
        data = load_data(cfg)
        train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
        n = protocol_samples(cfg, data)
        if args.model:
            what = f"{args.model} (iteration {loaded.iteration})"
            fake_x, fake_y = sample_generator(loaded.generator, n, loaded.label_prior, cfg.seed)
        else:
            what = "the quick preset's G at its initialization"
            torch.manual_seed(cfg.seed)
            game, _ = build_game(cfg, train)
            fake_x, fake_y = sample_generator(game.G, n, train.label_prior(), cfg.seed)
        feature_net(cfg, *data.split(cfg.data.holdout_fraction, cfg.seed))  # trained once, outside the timing
        uncapped = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"cas_max_steps": None})})
        seconds: dict[str, list[float]] = {"capped": [], "uncapped": []}
        values = {}
        for r in range(args.rounds):
            for name, c in (("capped", cfg), ("uncapped", uncapped)):
                for f in Path(cache, "cas_reference").glob("*.npy"):
                    f.unlink()  # both sides train CAS's real side in the call, every round
                start = time.perf_counter()
                values[name] = protocol_metrics(c, data, fake_x, fake_y)
                seconds[name].append(time.perf_counter() - start)
    fast, slow = min(seconds["capped"]), min(seconds["uncapped"])
    a, b = values["capped"], values["uncapped"]

    def cas(m: dict) -> str:
        return (f"CAS ratio {m['cas_ratio']:.3f} ({m['cas_ratio_lo']:.3f}-{m['cas_ratio_hi']:.3f}), real-trained "
                f"accuracy {m['cas_real']:.3f}")

    row = (f"| {datetime.date.today()} | {cpu_model()}, {torch.get_num_threads()} threads | the protocol's "
           f"evaluation of {what} on {cfg.data.source} ({len(train):,} training images), {cfg.eval.cas_seeds} CAS "
           f"pairs on {int(a['cas_samples']):,} images a side, best of {args.rounds} | "
           f"{int(b['cas_steps']):,} batches each ({cfg.eval.cas_epochs} epochs) {slow:.0f} s ({cas(b)}) | "
           f"{int(a['cas_steps']):,} batches each (eval.cas_max_steps) {fast:.0f} s ({cas(a)}) | "
           f"**{slow / fast:.2f}x** |")
    record(row, args.out, {"uncapped_s": slow, "capped_s": fast, "ratio": slow / fast,
                           "cas_ratio_capped": a["cas_ratio"], "cas_ratio_uncapped": b["cas_ratio"]}, args.json)


if __name__ == "__main__":
    main()
