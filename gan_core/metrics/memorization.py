"""Memorization: how close each generated sample is to its nearest real training image.

The yardstick is the real holdout: its nearest-training-image distances are what "a new image from
the same distribution" looks like. A generated sample closer than the holdout's 1st percentile is a
near-copy; a healthy generator has a near-copy share close to 1%.
"""
from __future__ import annotations

import numpy as np

from .prdc import pairwise_distances


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 2048) -> np.ndarray:
    return np.concatenate([pairwise_distances(queries[i:i + chunk], reference).min(1)
                           for i in range(0, len(queries), chunk)])


def memorization(train: np.ndarray, holdout: np.ndarray, fake: np.ndarray, quantile: float = 0.01) -> dict[str, float]:
    d_hold = nearest_distances(holdout, train)
    d_fake = nearest_distances(fake, train)
    threshold = float(np.quantile(d_hold, quantile))
    return {"near_copy_share": float((d_fake < threshold).mean()), "near_copy_threshold": threshold,
            "nn_distance_fake_median": float(np.median(d_fake)),
            "nn_distance_holdout_median": float(np.median(d_hold)),
            "near_copy_flags": (d_fake < threshold)}
