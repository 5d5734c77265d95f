"""The value function V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))], computed from logits.

With D = sigmoid(l): log D = -softplus(-l) and log(1 - D) = -softplus(l), both exact and
finite for any finite logit (no log(0), no saturation to NaN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

G_LOSSES = ("non_saturating", "minimax")


def log_d(logits: torch.Tensor) -> torch.Tensor:
    """log D(x) for D = sigmoid(logits)."""
    return -F.softplus(-logits)


def log_one_minus_d(logits: torch.Tensor) -> torch.Tensor:
    """log(1 - D(x)) for D = sigmoid(logits)."""
    return -F.softplus(logits)


def value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo estimate of V(D, G) on one real and one generated batch."""
    return log_d(real_logits).mean() + log_one_minus_d(fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """D ascends V, so it descends -V. With one-sided label smoothing (Salimans et al. 2016) D's target
    for real images is 1 - `smoothing` instead of 1: the real term becomes (1 - s) log D(x) + s log(1 -
    D(x)), and D's optimum (1 - s) p_data / (p_data + p_g); generated images keep the target 0."""
    if not smoothing:
        return -value(real_logits, fake_logits)
    real = (1.0 - smoothing) * log_d(real_logits) + smoothing * log_one_minus_d(real_logits)
    return -(real.mean() + log_one_minus_d(fake_logits).mean())


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """`minimax` descends E[log(1 - D(G(z)))] exactly as V says; `non_saturating` ascends E[log D(G(z))]."""
    if kind == "minimax":
        return log_one_minus_d(fake_logits).mean()
    if kind == "non_saturating":
        return -log_d(fake_logits).mean()
    raise ValueError(f"g_loss={kind!r} is not one of {G_LOSSES}")


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al. 2019): rows i and i + n/2 of `fake` share their
    condition and differ in z; G is pushed to keep the ratio of their images' distance to their
    latents' distance, mean|G(z1) - G(z2)| / mean|z1 - z2|, from collapsing, by descending its
    reciprocal (plus `eps`). The first 2 * (n // 2) rows are paired."""
    h = fake.shape[0] // 2
    if h == 0:
        raise ValueError("the mode-seeking term needs at least two generated rows")
    ratio = (fake[:h] - fake[h:2 * h]).abs().mean() / (z[:h] - z[h:2 * h]).abs().mean()
    return 1.0 / (ratio + eps)


def r1_penalty(real_logits: torch.Tensor, real_x: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the mean over real rows of |grad_x D's logit|^2, the gradient
    taken with its graph so that descending the penalty reaches D's parameters. `real_x` must have
    required grad before D saw it. With the weight gamma / 2 it pulls D's surface flat on the data."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def consistency_penalty(logits: torch.Tensor, augmented_logits: torch.Tensor) -> torch.Tensor:
    """Consistency regularization (Zhang et al. 2020; balanced: Zhao et al. 2021): the mean squared
    difference between D's logits for images and for their augmented copies; its gradient reaches D
    through both, so that D's verdict stops depending on the augmentation."""
    return (logits - augmented_logits).pow(2).mean()
