"""Differentiable augmentation of D's inputs (DiffAugment: Zhao et al. 2020, "Differentiable Augmentation
for Data-Efficient GAN Training").

With few training images D memorizes them, and its gradient stops telling G anything new. DiffAugment
applies the same random transformations to real and generated images before D, in D's update and in
G's alike; they are differentiable, so G's gradient passes through them. A translation by up to 1/8 of
the image (the border filled with zeros) and a cutout of a square half the image's side are the
policies the paper recommends for limited data.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

POLICIES = ("translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' or None -> (); an unknown name is an error."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip() and p.strip() != "none")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"augmentation {', '.join(unknown)!s} is not one of {', '.join(POLICIES)}")
    return names


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by its own random offset of up to `ratio` of its size, zeros shifted in."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Each image with a square of `ratio` of its size, at a random place, set to zero."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


# The jitter's largest rotation (degrees), scale change and horizontal shear at strength 1.
JITTER_DEGREES, JITTER_SCALE, JITTER_SHEAR = 20.0, 0.1, 0.2
JITTER_TEXT = (f"rotation up to {JITTER_DEGREES:g} degrees x s, scale 1 +- {JITTER_SCALE:g} x s, horizontal "
               f"shear up to {JITTER_SHEAR:g} x s")


def jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image under its own small random affine change about its centre (JITTER_TEXT with s =
    `strength`), resampled bilinearly with the border's pixels extended. Applied to the real images
    alone, it is not DiffAugment: the target distribution itself becomes the data under these
    changes, which a generator then learns (handwriting's own variation in slant, size and angle).
    `strength` 0 returns `x` itself; the caller sets the memory layout of the result."""
    if strength < 0:
        raise ValueError(f"jitter strength={strength}: a value >= 0")
    if not strength:
        return x
    u = torch.rand(x.shape[0], 3, generator=generator).to(x.device) * 2 - 1  # uniform in [-1, 1]
    angle = torch.deg2rad(u[:, 0] * (JITTER_DEGREES * strength))
    scale = 1 + u[:, 1] * (JITTER_SCALE * strength)
    shear = u[:, 2] * (JITTER_SHEAR * strength)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)  # output -> input coordinates
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + shear * sin
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` through each policy in order (a new random draw per image and call)."""
    for name in policy:
        x = translation(x) if name == "translation" else cutout(x)
    return x
