"""Classification Accuracy Score (Ravuri & Vinyals 2019): train on synthetic, test on real."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .bootstrap import ratio_interval, share_interval
from .classifier import MIN_STEPS, SIDE_BY_SIDE_THREADS, Fit, classifier_steps, fit_classifiers, hits

# Epochs of each CAS classifier's training: at 4 the one trained on real digits is still learning
# (holdout accuracy 0.933 at 4, 0.951 at 8, 0.950 at 16 on the default's split), at 8 it is done.
CAS_EPOCHS = 8


def classification_accuracy_score(synth_x: torch.Tensor, synth_y: torch.Tensor, real_x: torch.Tensor,
                                  real_y: torch.Tensor, holdout_x: torch.Tensor, holdout_y: torch.Tensor,
                                  num_classes: int, epochs: int = CAS_EPOCHS, seed: int = 0, min_steps: int = MIN_STEPS,
                                  seeds: int = 1, cache_dir: str | Path | None = None,
                                  max_steps: int | None = None) -> dict[str, float]:
    """Accuracy on the real holdout of a fresh classifier trained on synthetic data, next to the same
    classifier trained on as many real training images (a seeded random subset: a split is stored
    class by class, so its first n images may hold only some classes); and their ratio, with bootstrap
    intervals over the holdout rows (`cas_lo`/`cas_hi`, `cas_ratio_lo`/`cas_ratio_hi`), the images each
    side trained on (`cas_samples`: the smaller of the two sets), and both accuracies per holdout class
    (`cas_per_class`, `cas_real_per_class`: where the samples fall short).

    With `seeds` > 1 both classifiers are trained that many times (seeds `seed`, `seed` + 1, ...: the
    initialization, the batch order and the real subset change) and each holdout row counts by the
    share of classifiers that get it right. With `max_steps`, every classifier (both sides) trains
    at most that many batches, so the cost stops growing with the data (`cas_steps`: the steps each
    took). One training run moves the ratio by about 0.01 (its
    standard deviation over seeds on the default's generator), as much as the holdout's sampling.

    The real side does not depend on the samples: with `cache_dir`, its holdout hits are kept there
    under a digest of everything they depend on (`reference_path`), and every later evaluation of the
    same data at the same size reuses them."""
    if seeds < 1:
        raise ValueError(f"seeds={seeds}: at least one classifier per side")
    n = min(len(synth_x), len(real_x))
    seed_list = range(int(seed), int(seed) + seeds)
    fits = [Fit(synth_x[:n], synth_y[:n], num_classes, epochs, s, min_steps, max_steps) for s in seed_list]
    real: list[np.ndarray | None] = []
    paths = []
    for s in seed_list:
        pick = real_subset(len(real_x), n, s)
        fit = Fit(real_x[pick], real_y[pick], num_classes, epochs, s, min_steps, max_steps)
        paths.append(reference_path(fit, holdout_x, holdout_y, cache_dir))
        real.append(np.load(paths[-1]) if paths[-1] is not None and paths[-1].is_file() else None)
        if real[-1] is None:
            fits.append(fit)
    models = iter(fit_classifiers(fits))  # every classifier still to train, side by side
    synth = [hits(next(models), holdout_x, holdout_y) for _ in seed_list]
    for i, path in enumerate(paths):
        if real[i] is None:
            real[i] = hits(next(models), holdout_x, holdout_y)
            if path is not None:
                keep(path, real[i])
    synth_hits, real_hits = np.mean(synth, 0), np.mean(real, 0)
    cas, ref = float(synth_hits.mean()), float(real_hits.mean())
    (lo, hi), (rlo, rhi) = share_interval(synth_hits, seed=seed), ratio_interval(synth_hits, real_hits, seed=seed)
    labels = np.asarray(holdout_y)
    per_class = [[float(h[labels == c].mean()) if (labels == c).any() else float("nan") for c in range(num_classes)]
                 for h in (synth_hits, real_hits)]
    return {"cas": cas, "cas_real": ref, "cas_ratio": cas / ref if ref > 0 else float("nan"),
            "cas_lo": lo, "cas_hi": hi, "cas_ratio_lo": rlo, "cas_ratio_hi": rhi,
            "cas_per_class": per_class[0], "cas_real_per_class": per_class[1], "cas_samples": int(n),
            "cas_steps": classifier_steps(n, epochs, min_steps, max_steps)}


def real_subset(n_real: int, n: int, seed: int) -> torch.Tensor:
    """The `n` real training images (indices of `n_real`) CAS's real side trains on for a seed."""
    return torch.randperm(n_real, generator=torch.Generator().manual_seed(seed))[:n]


def reference_path(fit: Fit, holdout_x: torch.Tensor, holdout_y: torch.Tensor,
                   cache_dir: str | Path | None) -> Path | None:
    """Where the holdout hits of the real side's classifier `fit` are kept in `cache_dir` (None without
    one): under a digest of its images, labels, training settings, the holdout, torch's version and
    the intra-op threads it trains on (`SIDE_BY_SIDE_THREADS`: it always trains beside the synthetic
    side's)."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256()
    for t in (fit.x, fit.y, holdout_x, holdout_y):
        digest.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    digest.update(f"{fit.num_classes};{fit.epochs};{fit.seed};{fit.steps()};{torch.__version__};"
                  f"{SIDE_BY_SIDE_THREADS}".encode())
    return Path(cache_dir).expanduser() / "cas_reference" / f"{digest.hexdigest()[:32]}.npy"


def keep(path: Path, hits_: np.ndarray) -> None:
    """Write a real side's hits whole, or not at all (writers of the same digest do not mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, hits_)
    tmp.replace(path)
