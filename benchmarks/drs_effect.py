"""What discriminator rejection sampling does to precision and the Fréchet distance of a generator's
output, in expectation, without the noise of drawing one filtered set.

    python benchmarks/drs_effect.py --model models:/gan-generator@champion [--candidates 8000]

`generate --rejection drs` keeps candidate x with probability p(x) (D's calibrated logit through
`gan_core.theory.drs_acceptance`, set up exactly as generate sets it up: `_drs_bound`), and keeps each
class's count. So the filtered dataset is, in expectation, the candidates weighted by p within each
class, the classes equally. Precision (Kynkäänniemi et al.) is a mean of one indicator per generated
image (inside the real holdout's k-NN manifold, in the evaluation's feature space), so its expected
value under the filter is that indicator's p-weighted mean; the Fréchet distance is computed from the
p-weighted mean and covariance of the candidates' features. Both against the unfiltered candidates
(every weight 1), with a bootstrap over candidates for the difference. Also reported: how well the
acceptance (monotone in D's calibrated logit) ranks the indicator (AUC within each class, averaged;
0.5 is no information).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _class_weights(p: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Each candidate's weight in the filtered set: p normalized within its class, classes equal."""
    w = np.zeros_like(p)
    for c in range(k):
        m = y == c
        w[m] = p[m] / p[m].sum() / k
    return w


def _auc(score: np.ndarray, target: np.ndarray) -> float:
    pos, neg = score[target], score[~target]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def measure(model: str, tracking_uri: str, candidates: int, keep: float, seed: int, boot: int) -> dict:
    import torch

    from gan_core import aligned_blocks, labels_for_rows, render_rows, rows_generator
    from gan_core.data import from_uint8, to_uint8
    from gan_core.metrics.frechet import frechet_distance
    from gan_core.metrics.prdc import knn_radii, pairwise_distances
    from pipelines.config import load_config
    from pipelines.services import tracking
    from pipelines.services.models import resolve
    from pipelines.stages.generate import _drs_bound, _verifier, discriminator
    from pipelines.stages.generate.writer import drs_keep_probability

    cfg = load_config(None, [f"mlflow.tracking_uri={tracking_uri}", f"generate.drs_keep={keep}"])
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    loaded = resolve(model, uri)
    if loaded.d_state is None or not loaded.generator.num_classes:
        raise SystemExit(f"{model}: a conditional generator whose run kept its discriminator is needed")
    net, gcfg, data = _verifier(cfg, loaded, model)
    k = loaded.generator.num_classes
    counts = [candidates // k + (1 if c < candidates % k else 0) for c in range(k)]
    drs = _drs_bound(cfg, loaded, counts, seed, gcfg, data)
    d, g = discriminator(loaded), rows_generator(loaded.generator)
    feats, probs, labels = [], [], []
    with torch.no_grad():
        for ids, _ in aligned_blocks(0, candidates, candidates):  # the rows generate would make first
            y = labels_for_rows(ids, counts, seed)
            x = from_uint8(to_uint8(render_rows(g, ids, seed, y)))
            probs.append(drs_keep_probability(d, x, y, drs))
            feats.append(net.embed(x)[0])
            labels.append(y.numpy())
    p = np.concatenate(probs)
    f, y = np.concatenate(feats), np.concatenate(labels)
    _, holdout = data.split(gcfg.data.holdout_fraction, gcfg.seed)
    f_real = net.embed(holdout.tensors()[0])[0]
    radii = knn_radii(f_real, 5)
    inside = np.zeros(len(f), dtype=bool)
    for lo in range(0, len(f), 2048):
        inside[lo:lo + 2048] = (pairwise_distances(f_real, f[lo:lo + 2048]) < radii[:, None]).any(0)

    def both(idx):
        ones = _class_weights(np.ones(len(idx)), y[idx], k)
        w = _class_weights(p[idx], y[idx], k)
        return ((ones * inside[idx]).sum(), (w * inside[idx]).sum(),
                frechet_distance(f_real, f[idx], ones), frechet_distance(f_real, f[idx], w))

    prec0, prec1, fd0, fd1 = both(np.arange(len(f)))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(boot):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), (y == c).sum()) for c in range(k)])
        a, b, c0, c1 = both(idx)
        diffs.append((b - a, c1 - c0))
    diffs = np.array(diffs)
    auc = float(np.nanmean([_auc(p[y == c], inside[y == c]) for c in range(k)]))
    return {"model": model, "iteration": loaded.iteration, "candidates": candidates, "drs_keep": keep,
            "acceptance": float(p.mean()), "scale": drs["scale"], "shift": drs["shift"],
            "precision_plain": float(prec0), "precision_drs": float(prec1),
            "precision_diff_ci": [float(v) for v in np.quantile(diffs[:, 0], [0.025, 0.975])],
            "fd_plain": fd0, "fd_drs": fd1, "fd_diff_ci": [float(v) for v in np.quantile(diffs[:, 1], [0.025, 0.975])],
            "auc_acceptance_vs_inside": auc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models:/gan-generator@champion")
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--candidates", type=int, default=8000)
    ap.add_argument("--keep", type=float, default=None, help="generate.drs_keep (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    from pipelines.config import load_config

    keep = args.keep if args.keep is not None else load_config(None, []).generate.drs_keep
    r = measure(args.model, args.tracking_uri, args.candidates, keep, args.seed, args.bootstrap)
    print(json.dumps(r, indent=1))
    print(f"| {r['model']} (iteration {r['iteration']}) | {r['candidates']} | {r['acceptance']:.2f} | "
          f"{r['precision_plain']:.4f} | {r['precision_drs']:.4f} | "
          f"{r['precision_drs'] - r['precision_plain']:+.4f} ({r['precision_diff_ci'][0]:+.4f} to "
          f"{r['precision_diff_ci'][1]:+.4f}) | {r['fd_plain']:.3f} | {r['fd_drs']:.3f} | "
          f"{r['fd_drs'] - r['fd_plain']:+.3f} ({r['fd_diff_ci'][0]:+.3f} to {r['fd_diff_ci'][1]:+.3f}) | "
          f"{r['auc_acceptance_vs_inside']:.3f} |")


if __name__ == "__main__":
    main()
