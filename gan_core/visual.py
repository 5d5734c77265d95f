"""Sample grids: one row per class for a conditional G, a square grid otherwise."""
from __future__ import annotations

import torch
from torch import nn

from .game import unwrap
from .sampling import sample_latent, seeded


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile (N, C, H, W) images in [-1, 1] into one (3, H', W') image in [0, 1], `nrow` to a row,
    `padding` black pixels around each tile (the layout of torchvision's make_grid, without
    importing torchvision, which costs seconds in every process that draws a grid)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) / 2).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = torch.zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = r * (h + padding) + padding, q * (w + padding) + padding
        out[:, top:top + h, left:left + w] = x[i]
    return out


def save_png(image: torch.Tensor, path) -> None:
    """Write a (3, H, W) image in [0, 1] (a `make_grid` tile) as a PNG, rounded as torchvision's
    save_image rounds it."""
    from PIL import Image

    pixels = image.detach().float().mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    Image.fromarray(pixels).save(path, format="PNG")


@torch.no_grad()
def sample_grid(generator: nn.Module, per_row: int = 8, rows: int | None = None, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) image in [0, 1]; fixed z (from `seed`) so grids of successive epochs compare."""
    g = unwrap(generator)
    was_training = g.training
    g.eval()
    device = next(g.parameters()).device
    if g.num_classes:
        rows = g.num_classes
        y = torch.arange(rows).repeat_interleave(per_row).to(device)
    else:
        rows = rows or per_row
        y = None
    z, _ = sample_latent(rows * per_row, g.z_dim, None, seeded(seed), device)
    images = g(z, y).float().cpu()
    g.train(was_training)
    return make_grid(images, nrow=per_row)


def grid_by_class(x: torch.Tensor, y: torch.Tensor | None, num_classes: int, per_row: int = 8) -> torch.Tensor:
    """One row per class of up to `per_row` images of that class (blank where there are fewer)."""
    if y is None:
        return make_grid(x[: per_row * per_row], nrow=per_row)
    blank = -torch.ones_like(x[0])
    tiles = []
    for c in range(num_classes):
        picked = list(x[y == c][:per_row])
        tiles += picked + [blank] * (per_row - len(picked))
    return make_grid(torch.stack(tiles), nrow=per_row)
