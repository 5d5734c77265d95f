"""Fréchet distance between two Gaussians fitted to feature sets (the FID formula on any features)."""
from __future__ import annotations

import numpy as np


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray, weights2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2); 0 for identical sets. `weights2`: the
    second set's rows weighted (its mean and covariance those of the weighted sample; a weight of 0
    drops a row)."""
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"Fréchet distance needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    if weights2 is None:
        mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    else:
        mu2, s2 = np.average(f2, axis=0, weights=weights2), np.cov(f2, rowvar=False, aweights=weights2)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))
    return max(value, 0.0)
