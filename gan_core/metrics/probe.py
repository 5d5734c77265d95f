"""The cheap metrics computed during training, on a fixed holdout sample and fixed latents."""
from __future__ import annotations

import torch
from torch import nn

from .classifier import FeatureNet
from .suite import cheap_metrics, sample_generator


class TrainingProbe:
    """Fréchet distance (and label fidelity when conditional) of a generator, every call on the
    same `n` holdout images and the same latent seed, so successive values are comparable."""

    def __init__(self, net: FeatureNet, holdout, n: int, label_prior: torch.Tensor | None, seed: int = 0):
        x, _ = holdout.tensors()
        self.n, self.seed, self.label_prior, self.net = min(n, len(x)), seed, label_prior, net
        self.holdout_features = net.embed(x[: self.n])[0]
        self.num_classes = holdout.num_classes

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        fake_x, fake_y = sample_generator(generator, self.n, self.label_prior, self.seed)
        return cheap_metrics(self.net, fake_x, fake_y, self.holdout_features, self.num_classes)
