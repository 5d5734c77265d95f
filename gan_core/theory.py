"""The theory the game rests on (Goodfellow et al. 2014, Prop. 1 and Thm. 1), as code.

For fixed G the discriminator that maximizes V is D*(x) = p_data(x) / (p_data(x) + p_g(x)), and
V(D*, G) = -log 4 + 2 JS(p_data || p_g), which is minimal (-log 4) exactly when p_g = p_data.

Densities are numpy arrays: probability masses over a discrete support (dx=None), or density
values on a uniform grid with spacing dx (integrals become Riemann sums). Logs are natural.
"""
from __future__ import annotations

import math

import numpy as np

LOG4 = math.log(4.0)


def _as_arrays(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"densities must share a support: shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("densities must be non-negative")
    return p, q


def optimal_discriminator(p_data, p_g, smoothing: float = 0.0) -> np.ndarray:
    """D*(x) = p_data / (p_data + p_g); where both are 0 D* is undefined and set to 1/2. With one-sided
    label smoothing s (D's target 1 - s for real images) the optimum is (1 - s) p_data / (p_data + p_g)."""
    p, q = _as_arrays(p_data, p_g)
    total = p + q
    return (1.0 - smoothing) * np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def _kl_to_mixture(p: np.ndarray, q: np.ndarray, dx: float) -> float:
    """KL(p || (p + q) / 2), in log space so that tail values near underflow stay finite."""
    mask = p > 0
    lp = np.log(p[mask])
    with np.errstate(divide="ignore"):
        lq = np.log(q[mask])
    log_m = np.logaddexp(lp, lq) - math.log(2.0)
    return float(np.sum(p[mask] * (lp - log_m)) * dx)


def jensen_shannon(p, q, dx: float | None = None) -> float:
    """JS(p || q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2; in [0, log 2]."""
    p, q = _as_arrays(p, q)
    step = 1.0 if dx is None else float(dx)
    return 0.5 * _kl_to_mixture(p, q, step) + 0.5 * _kl_to_mixture(q, p, step)


def value_function(p_data, p_g, d, dx: float | None = None) -> float:
    """V(D, G) = E_{p_data}[log D] + E_{p_g}[log(1 - D)] by quadrature (0 log 0 taken as 0).

    D is clipped to [eps, 1 - eps] at float64 resolution: in far tails p/(p+q) rounds to exactly 1
    where q is still a positive 1e-49, and q * log(0) would poison the sum with -inf.
    """
    p, q = _as_arrays(p_data, p_g)
    eps = np.finfo(np.float64).epsneg
    d = np.clip(np.asarray(d, dtype=np.float64), np.finfo(np.float64).tiny, 1.0 - eps)
    step = 1.0 if dx is None else float(dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(d), 0.0)
        b = np.where(q > 0, q * np.log1p(-d), 0.0)
    return float((a.sum() + b.sum()) * step)


def value_at_optimum(p_data, p_g, dx: float | None = None) -> float:
    """V(D*, G) = 2 JS(p_data || p_g) - log 4."""
    return 2.0 * jensen_shannon(p_data, p_g, dx) - LOG4


def equilibrium_gap(value_estimate: float) -> float:
    """How far a V estimate is from -log 4, its value at the game's equilibrium p_g = p_data."""
    return float(value_estimate + LOG4)


def drs_acceptance(logits, max_logit: float, gamma: float = 0.0, eps: float = 1e-6) -> np.ndarray:
    """Discriminator rejection sampling (Azadi et al. 2019): the probability of keeping a sample whose
    discriminator logit is D̃(x), given the largest logit D̃_M seen in a burn-in sample.

    Proposition 1 gives D*(x) = p_data / (p_data + p_g), so p_data(x) / p_g(x) = exp(D̃*(x)). With
    F(x) = D̃ - D̃_M - log(1 - exp(D̃ - D̃_M - eps)) - gamma the sample is kept with probability
    sigmoid(F); at gamma = 0 (and eps -> 0) that is exp(D̃ - D̃_M) = (p_data / p_g) / max, exact
    rejection sampling of p_data from p_g. A larger gamma keeps fewer samples, a smaller one more.
    Logits above D̃_M are clipped to it (the bound is then the burn-in's)."""
    a = np.minimum(np.asarray(logits, dtype=np.float64), max_logit) - max_logit
    f = a - np.log1p(-np.exp(a - eps)) - gamma
    return 1.0 / (1.0 + np.exp(-f))


def logit_calibration(real_logits, fake_logits, iters: int = 50) -> tuple[float, float]:
    """(a, b) such that sigmoid(a * logit + b) best tells held-out real samples from generated ones
    (logistic regression on D's logit, both sets weighted equally; Newton's method). A discriminator
    at its optimum D* needs none, (a, b) = (1, 0): its logit already is log p_data / p_g. A trained
    D is not at D*: it fits its training batches and trails G, so its logit is too sharp or too flat;
    a * logit + b is the calibrated estimate of log p_data / p_g that DRS needs (Azadi et al. 2019,
    section 4)."""
    r = np.asarray(real_logits, dtype=np.float64).ravel()
    f = np.asarray(fake_logits, dtype=np.float64).ravel()
    x = np.concatenate([r, f])
    t = np.concatenate([np.ones_like(r), np.zeros_like(f)])
    w = np.concatenate([np.full(len(r), 0.5 / len(r)), np.full(len(f), 0.5 / len(f))])
    feats = np.stack([x, np.ones_like(x)], 1)
    theta = np.array([1.0, 0.0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(feats @ theta)))
        grad = feats.T @ (w * (p - t))
        hess = (feats * (w * p * (1 - p))[:, None]).T @ feats + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def drs_gamma(logits, max_logit: float, keep_share: float, eps: float = 1e-6) -> float:
    """The gamma at which `keep_share` of a burn-in sample has F >= 0 (acceptance >= 1/2): the
    paper's percentile rule for setting the acceptance rate."""
    a = np.minimum(np.asarray(logits, dtype=np.float64), max_logit) - max_logit
    f = a - np.log1p(-np.exp(a - eps))
    return float(np.quantile(f, 1.0 - keep_share))
