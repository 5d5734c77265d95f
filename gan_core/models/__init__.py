"""Generators and discriminators built by name: `mlp` (original GAN) and `dcgan`."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator

ARCHITECTURES = ("mlp", "dcgan")
CONDITIONINGS = ("concat", "projection")


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to build a (G, D) pair; plain data so it can travel in configs and checkpoints."""

    arch: str
    z_dim: int
    image_shape: tuple[int, int, int]
    num_classes: int | None = None
    g_width: int = 64
    d_width: int = 64
    depth: int | None = None
    embed_dim: int = 16
    d_conditioning: str = "concat"


def build_models(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for a spec; unknown names raise a ValueError that names the value."""
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={spec.arch!r} is not one of {ARCHITECTURES}")
    if spec.d_conditioning not in CONDITIONINGS:
        raise ValueError(f"model.d_conditioning={spec.d_conditioning!r} is not one of {CONDITIONINGS}")
    shape = tuple(spec.image_shape)
    if spec.arch == "mlp":
        depth = spec.depth or 2
        g = MLPGenerator(spec.z_dim, shape, spec.g_width, depth, spec.num_classes, spec.embed_dim)
        d = MLPDiscriminator(shape, spec.d_width, depth, spec.num_classes, spec.d_conditioning)
    else:
        g = DCGANGenerator(spec.z_dim, shape, spec.g_width, spec.depth, spec.num_classes, spec.embed_dim)
        d = DCGANDiscriminator(shape, spec.d_width, spec.depth, spec.num_classes, spec.d_conditioning)
    return g, d


__all__ = ["ModelSpec", "build_models", "ARCHITECTURES", "CONDITIONINGS", "MLPGenerator",
           "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator"]
