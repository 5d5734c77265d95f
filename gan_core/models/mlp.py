"""The original GAN (Goodfellow et al. 2014): MLP generator and MLP discriminator."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import LabelEmbedding, check_labels


class MLPGenerator(nn.Module):
    """z (joined with a label embedding when conditional) -> ReLU hidden layers -> tanh image."""

    def __init__(self, z_dim: int, image_shape: tuple[int, int, int], width: int = 256,
                 depth: int = 2, num_classes: int | None = None, embed_dim: int = 16):
        super().__init__()
        self.z_dim, self.image_shape, self.num_classes = z_dim, tuple(image_shape), num_classes
        self.label = LabelEmbedding(num_classes, embed_dim) if num_classes else None
        layers, d_in = [], z_dim + (embed_dim if num_classes else 0)
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
            d_in = width
        layers += [nn.Linear(d_in, math.prod(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(y, self.num_classes, "generator")
        h = z if self.label is None else torch.cat([z, self.label(y)], dim=1)
        return self.net(h).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Flattened image -> LeakyReLU hidden layers -> one logit.

    Conditional modes: `concat` joins a one-hot label to the input; `projection` adds
    <embed(y), h> to the logit (Miyato & Koyama 2018).
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 256, depth: int = 2,
                 num_classes: int | None = None, conditioning: str = "concat"):
        super().__init__()
        self.image_shape, self.num_classes, self.conditioning = tuple(image_shape), num_classes, conditioning
        d_in = math.prod(self.image_shape) + (num_classes if num_classes and conditioning == "concat" else 0)
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.LeakyReLU(0.2, inplace=True)]
            d_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, 1)
        self.proj = nn.Embedding(num_classes, d_in) if num_classes and conditioning == "projection" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(y, self.num_classes, "discriminator")
        h = x.flatten(1)
        if self.num_classes and self.conditioning == "concat":
            h = torch.cat([h, nn.functional.one_hot(y, self.num_classes).to(h.dtype)], dim=1)
        h = self.body(h)
        logit = self.head(h).squeeze(1)
        if self.proj is not None:
            logit = logit + (self.proj(y) * h).sum(1)
        return logit
