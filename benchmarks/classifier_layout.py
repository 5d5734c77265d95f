"""The evaluation's classifiers trained channels-last (`fit_classifier`'s default: weights and batches
in NHWC) against the same training in PyTorch's usual NCHW layout: the protocol's `eval.cas_seeds` CAS
classifiers of one side, each on `eval.cas_max_samples` real training images of the data for
`eval.cas_epochs` epochs up to `eval.cas_max_steps` batches, one after the other, as the evaluation
trains them. The rounds alternate so that the machine's drift falls on both alike; beside the times,
each side's mean holdout accuracy (the same arithmetic up to float rounding: the classifiers must
learn as well).

    python benchmarks/classifier_layout.py --source mnist5k --source idx:/usr/share/datasets/fashion-mnist
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402


def protocol_sides(source: str):
    """The protocol's CAS classifiers of `source`: (cfg, train split, its tensors, the holdout's tensors,
    the images each classifier trains on, (seed, real subset) per classifier of one side, batches each)."""
    from gan_core.metrics.cas import real_subset
    from gan_core.metrics.classifier import classifier_steps
    from pipelines.config import load_config
    from pipelines.config.auto import sized
    from pipelines.config.build import load_data
    from pipelines.stages.evaluate import protocol_samples

    cfg, _ = sized(load_config(None, [f"data.source={source}"]))
    data = load_data(cfg)
    train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
    xt, yt = train.tensors()
    n = min(len(xt), protocol_samples(cfg, data))  # as classification_accuracy_score sizes both sides
    picks = [(s, real_subset(len(xt), n, s)) for s in range(cfg.seed, cfg.seed + cfg.eval.cas_seeds)]
    steps = classifier_steps(n, cfg.eval.cas_epochs, max_steps=cfg.eval.cas_max_steps)
    return cfg, train, (xt, yt), holdout.tensors(), n, picks, steps


def arguments(doc: str) -> argparse.Namespace:
    """--source (repeatable), --rounds and the outputs of a classifier benchmark described by `doc`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--source", action="append", default=None, help="data.source (repeatable; default mnist5k)")
    parser.add_argument("--rounds", type=int, default=2)
    add_outputs(parser)
    return parser.parse_args()


def main() -> None:
    args = arguments(__doc__)

    import numpy as np
    import torch

    from gan_core.metrics.classifier import accuracy, fit_classifier

    numbers = {}
    for source in args.source or ["mnist5k"]:
        cfg, train, (xt, yt), (xh, yh), n, picks, steps = protocol_sides(source)
        seconds: dict[str, list[float]] = {"NCHW": [], "NHWC": []}
        acc = {}
        for _ in range(args.rounds):
            for layout in seconds:
                start = time.perf_counter()
                models = [fit_classifier(xt[p], yt[p], train.num_classes, cfg.eval.cas_epochs, s,
                                         max_steps=cfg.eval.cas_max_steps, channels_last=layout == "NHWC")
                          for s, p in picks]
                seconds[layout].append(time.perf_counter() - start)
                acc[layout] = float(np.mean([accuracy(m, xh, yh) for m in models]))
        before, after = min(seconds["NCHW"]), min(seconds["NHWC"])
        shape = "x".join(map(str, train.image_shape))
        row = (f"| {datetime.date.today()} | CAS's {len(picks)} classifiers of one side on {source} ({n:,} images "
               f"of {shape}, {steps} batches of 64 each), best of {args.rounds} | NCHW {before:.1f} s, holdout "
               f"accuracy {acc['NCHW']:.3f} | channels-last {after:.1f} s, holdout accuracy {acc['NHWC']:.3f} | "
               f"**{before / after:.2f}x** | {cpu_model()}, {torch.get_num_threads()} threads |")
        record(row, args.out)
        numbers[source] = {"nchw_s": before, "nhwc_s": after, "ratio": before / after,
                           "accuracy_nchw": acc["NCHW"], "accuracy_nhwc": acc["NHWC"]}
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
