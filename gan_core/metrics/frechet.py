"""Fréchet distance between two Gaussians fitted to feature sets (the FID formula on any features)."""
from __future__ import annotations

import numpy as np


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1^1/2 S2 S1^1/2)^1/2): the sum of the square roots of the eigenvalues of S1 S2, which are
    those of L^T S2 L for S1's Cholesky factor L (S1 = L L^T), a symmetric matrix; eigenvalues alone,
    without the eigenvectors a matrix square root needs. A singular S1 (no Cholesky factor) takes its
    square root instead."""
    try:
        low = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        low = _sqrtm_psd(s1)
    m = low.T @ s2 @ low
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def _moments(f: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    if weights is not None:
        return np.average(f, axis=0, weights=weights), np.cov(f, rowvar=False, aweights=weights)
    mu = f.mean(0)
    centered = f - mu
    return mu, centered.T @ centered / (len(f) - 1)


def frechet_distance(f1: np.ndarray, f2: np.ndarray, weights2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2); 0 for identical sets. `weights2`: the
    second set's rows weighted (its mean and covariance those of the weighted sample; a weight of 0
    drops a row)."""
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"Fréchet distance needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    return from_moments(*_moments(f1), *_moments(f2, weights2))


def from_moments(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians N(mu1, s1) and N(mu2, s2)."""
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2))
    return max(value, 0.0)
