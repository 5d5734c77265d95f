"""Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

Each real (fake) sample's k-NN radius defines a manifold of balls. Precision: the share of fakes
inside the real manifold. Recall: the share of reals inside the fake manifold. Density: how many
real balls hold each fake, over k. Coverage: the share of reals whose ball holds a fake.
"""
from __future__ import annotations

import numpy as np


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    d = pairwise_distances(x, x)
    return np.partition(d, k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples per set, got {len(real)} and {len(fake)}")
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    d = pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real = d < r_real[:, None]
    return {
        "precision": float(inside_real.any(0).mean()),
        "recall": float((d < r_fake[None, :]).any(1).mean()),
        "density": float(inside_real.sum(0).mean() / k),
        "coverage": float((d.min(1) < r_real).mean()),
    }
