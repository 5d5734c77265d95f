"""Bootstrap intervals: how far a metric computed from finite samples could move on another draw of
the same size. Each interval is the 2.5th to 97.5th percentile of the metric over resamples (with
replacement, seeded) of the rows it was computed from, shifted by the resamples' bias (their mean
minus the value): a resample repeats rows, which inflates a Fréchet distance by more than its
spread, so the uncorrected percentiles can lie wholly above the value itself."""
from __future__ import annotations

import numpy as np

from .frechet import frechet_distance

ROUNDS = 200  # resamples per interval
LEVEL = 0.95


def _interval(values: np.ndarray, value: float, level: float = LEVEL) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2 * 100
    bias = float(values.mean()) - value
    lo, hi = np.percentile(values, [tail, 100 - tail]) - bias
    return float(lo), float(hi)


def fd_interval(real: np.ndarray, fake: np.ndarray, rounds: int = ROUNDS, seed: int = 0) -> tuple[float, float]:
    """The Fréchet distance between feature sets `real` and `fake`, both resampled."""
    rng = np.random.default_rng([seed, 1])
    values = [frechet_distance(real[rng.integers(0, len(real), len(real))], fake[rng.integers(0, len(fake), len(fake))])
              for _ in range(rounds)]
    lo, hi = _interval(np.asarray(values), frechet_distance(real, fake))
    return max(lo, 0.0), hi


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
