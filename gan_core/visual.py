"""Sample grids: one row per class for a conditional G, a square grid otherwise."""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.utils import make_grid

from .game import unwrap


@torch.no_grad()
def sample_grid(generator: nn.Module, per_row: int = 8, rows: int | None = None, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) image in [0, 1]; fixed z (from `seed`) so grids of successive epochs compare."""
    g = unwrap(generator)
    was_training = g.training
    g.eval()
    device = next(g.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if g.num_classes:
        rows = g.num_classes
        y = torch.arange(rows).repeat_interleave(per_row).to(device)
    else:
        rows = rows or per_row
        y = None
    z = torch.randn(rows * per_row, g.z_dim, generator=gen).to(device)
    images = g(z, y).float().cpu()
    g.train(was_training)
    return make_grid(images, nrow=per_row, normalize=True, value_range=(-1, 1), padding=2)


def square_rows(n: int) -> int:
    return max(1, int(math.sqrt(n)))
