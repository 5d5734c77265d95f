"""The evaluation's CAS classifiers trained side by side (`fit_classifiers`: each on one intra-op
thread, all at once) against one after the other on the process's threads (`fit_classifier` each, as
the evaluation trained them before): a machine's first evaluation of a data set (`eval.cas_seeds`
classifiers a side, both sides: here both on real training images, the same sizes and steps) and every
later one (the synthetic side alone). The rounds alternate so that the machine's drift falls on both
alike; beside the times, each way's mean holdout accuracy.

    python benchmarks/classifiers_side_by_side.py --source mnist5k --source idx:/usr/share/datasets/fashion-mnist
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from classifier_layout import arguments, protocol_sides  # noqa: E402
from record import cpu_model, record  # noqa: E402


def main() -> None:
    args = arguments(__doc__)

    import numpy as np
    import torch

    from gan_core.metrics.cas import real_subset
    from gan_core.metrics.classifier import Fit, accuracy, fit_classifier, fit_classifiers

    numbers = {}
    for source in args.source or ["mnist5k"]:
        cfg, train, (xt, yt), (xh, yh), n, picks, steps = protocol_sides(source)
        e = cfg.eval
        # the other side's classifiers: other seeds' subsets of the same size, as many
        other = [(s + len(picks), real_subset(len(xt), n, s + len(picks))) for s, _ in picks]
        cases = {"first": picks + other, "later": picks}
        for case, chosen in cases.items():
            fits = [Fit(xt[p], yt[p], train.num_classes, e.cas_epochs, s, max_steps=e.cas_max_steps) for s, p in chosen]
            seconds: dict[str, list[float]] = {"after": [], "side": []}
            acc = {}
            for _ in range(args.rounds):
                for way in seconds:
                    start = time.perf_counter()
                    models = (fit_classifiers(fits) if way == "side" else
                              [fit_classifier(f.x, f.y, f.num_classes, f.epochs, f.seed, max_steps=f.max_steps)
                               for f in fits])
                    seconds[way].append(time.perf_counter() - start)
                    acc[way] = float(np.mean([accuracy(m, xh, yh) for m in models]))
            before, after = min(seconds["after"]), min(seconds["side"])
            what = (f"a first evaluation's {len(fits)} CAS classifiers (both sides)" if case == "first" else
                    f"a later evaluation's {len(fits)} (the synthetic side)")
            row = (f"| {datetime.date.today()} | {what} on {source} ({n:,} images of "
                   f"{'x'.join(map(str, train.image_shape))}, {steps} batches of 64 each), best of {args.rounds} | "
                   f"one after the other on {torch.get_num_threads()} threads {before:.1f} s, holdout accuracy "
                   f"{acc['after']:.3f} | side by side, one thread each {after:.1f} s, holdout accuracy "
                   f"{acc['side']:.3f} | **{before / after:.2f}x** | {cpu_model()} |")
            record(row, args.out)
            numbers[f"{source}:{case}"] = {"after_s": before, "side_s": after, "ratio": before / after,
                                           "accuracy_after": acc["after"], "accuracy_side": acc["side"]}
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
