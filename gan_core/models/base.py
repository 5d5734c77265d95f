"""Shared pieces of every generator and discriminator: the label inputs (embedding, class-conditional
BatchNorm) and DCGAN's weight init."""
from __future__ import annotations

import torch
from torch import nn


class LabelEmbedding(nn.Module):
    """Maps integer labels to vectors; the conditional GAN's way of giving y to G (joined to z)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embed(y)


class ClassBatchNorm2d(nn.Module):
    """Class-conditional BatchNorm (de Vries et al. 2017; the cGAN generators of Miyato & Koyama 2018
    and BigGAN): the batch statistics of BatchNorm, then a scale and a shift looked up by the label,
    so the label shapes every layer of G rather than its input alone. Scales start at N(1, 0.02) and
    shifts at 0 for every class, as DCGAN's BatchNorm."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.scale, self.shift = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(h) * self.scale(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


def check_labels(y: torch.Tensor | None, num_classes: int | None, who: str) -> None:
    """A conditional model needs labels, an unconditional one refuses them."""
    if num_classes and y is None:
        raise ValueError(f"{who} is conditional on {num_classes} classes and needs labels y")
    if not num_classes and y is not None:
        raise ValueError(f"{who} is unconditional but was given labels")


def one_hot_channels(y: torch.Tensor, num_classes: int, height: int, width: int) -> torch.Tensor:
    """The label as `num_classes` constant image channels, for concatenation to D's input."""
    onehot = torch.nn.functional.one_hot(y, num_classes).to(torch.float32)
    return onehot[:, :, None, None].expand(-1, -1, height, width)


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al.: all weights from N(0, 0.02); BatchNorm scale from N(1, 0.02), shift 0.

    The label embedding joined to z keeps N(0, 1), the scale of z, so the label is heard from the start.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, LabelEmbedding):
            nn.init.normal_(m.embed.weight, 0.0, 1.0)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ClassBatchNorm2d):  # every class's scale and shift as BatchNorm's
            nn.init.normal_(m.scale.weight, 1.0, 0.02)
            nn.init.zeros_(m.shift.weight)
