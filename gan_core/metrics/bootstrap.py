"""Bootstrap intervals: how far a metric computed from finite samples could move on another draw of
the same size. Each interval is the 2.5th to 97.5th percentile of the metric over resamples (with
replacement, seeded) of the rows it was computed from, shifted by the resamples' bias (their mean
minus the value): a resample repeats rows, which inflates a Fréchet distance by more than its
spread, so the uncorrected percentiles can lie wholly above the value itself."""
from __future__ import annotations

import numpy as np

from .frechet import frechet_distance, from_moments

ROUNDS = 200  # resamples per interval
LEVEL = 0.95


def _interval(values: np.ndarray, value: float, level: float = LEVEL) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2 * 100
    bias = float(values.mean()) - value
    lo, hi = np.percentile(values, [tail, 100 - tail]) - bias
    return float(lo), float(hi)


def fd_interval(real: np.ndarray, fake: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> tuple[float, float]:
    """The Fréchet distance between feature sets `real` and `fake`, both resampled. A resample's mean and
    covariance come from how often it draws each row (the same numbers as those of its rows gathered,
    without gathering them)."""
    rng = np.random.default_rng([seed, 1])
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    real_mean, fake_mean = real.mean(0), fake.mean(0)
    shift = real_mean - fake_mean
    real_c, fake_c = real - real_mean, fake - fake_mean
    values = []
    for _ in range(rounds):
        mu1, s1 = _resampled_moments(real_c, rng.integers(0, len(real), len(real)))
        mu2, s2 = _resampled_moments(fake_c, rng.integers(0, len(fake), len(fake)))
        values.append(from_moments(mu1 + shift, s1, mu2, s2))
    lo, hi = _interval(np.asarray(values), frechet_distance(real, fake))
    return max(lo, 0.0), hi


def _resampled_moments(centered: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and covariance of `centered`'s rows `rows` (drawn with replacement), from each row's
    count; `centered` is centered on its own mean, so that the covariance subtracts a small mean."""
    counts = np.bincount(rows, minlength=len(centered)).astype(np.float64)
    n = len(rows)
    mu = counts @ centered / n
    return mu, (centered.T @ (centered * counts[:, None]) - n * np.outer(mu, mu)) / (n - 1)


def share_interval(hits: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> tuple[float, float]:
    """A share of rows that are right (accuracy, label fidelity), its rows resampled."""
    hits = np.asarray(hits, dtype=np.float64)
    rng = np.random.default_rng([seed, 2])
    return _interval(hits[rng.integers(0, len(hits), (rounds, len(hits)))].mean(1), float(hits.mean()))


def ratio_interval(hits: np.ndarray, reference_hits: np.ndarray, rounds: int = ROUNDS,
                   seed: int = 0) -> tuple[float, float]:
    """share(hits) / share(reference_hits) where both were scored on the same rows (the same test
    set), resampled together."""
    a, b = np.asarray(hits, dtype=np.float64), np.asarray(reference_hits, dtype=np.float64)
    rng = np.random.default_rng([seed, 3])
    idx = rng.integers(0, len(a), (rounds, len(a)))
    num, den = a[idx].mean(1), b[idx].mean(1)
    return _interval(num / np.where(den > 0, den, np.nan), float(a.mean() / b.mean()) if b.mean() > 0 else np.nan)
