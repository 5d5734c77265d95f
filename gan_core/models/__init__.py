"""Generators and discriminators built by name: `mlp` (original GAN) and `dcgan`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


class _InferenceConvTranspose(nn.Module):
    """A trained ConvTranspose2d for inference, computed as one matrix product where that beats the
    transposed-convolution kernel on CPU: on a 1x1 input (G's first layer: the product reshaped is
    the output) and with at most 4 output channels (G's image layer: the product's columns summed
    into place by col2im, `F.fold`). Other inputs go to the convolution itself. Same function to
    float rounding."""

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        self.conv = conv
        w = conv.weight.detach()
        self.register_buffer("w_rows", w.reshape(conv.in_channels, -1).contiguous(), persistent=False)
        self.register_buffer("w_cols", self.w_rows.t().contiguous(), persistent=False)

    @staticmethod
    def applies(conv: nn.Module) -> bool:
        return (type(conv) is nn.ConvTranspose2d and conv.groups == 1 and conv.dilation == (1, 1)
                and conv.output_padding == (0, 0) and conv.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        n, _, h, w = x.shape
        (kh, kw), (ph, pw), (sh, sw) = c.kernel_size, c.padding, c.stride
        if h == w == 1:
            out = (x.reshape(n, -1) @ self.w_rows).view(n, c.out_channels, kh, kw)[:, :, ph:kh - ph, pw:kw - pw]
        elif c.out_channels <= 4:
            cols = self.w_cols @ x.reshape(n, c.in_channels, h * w)
            size = ((h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw)
            out = nn.functional.fold(cols, size, (kh, kw), stride=(sh, sw), padding=(ph, pw))
        else:
            return c(x)
        if c.bias is not None:
            out = out + c.bias.view(1, -1, 1, 1)
        return out.contiguous(memory_format=torch.channels_last)


def for_inference(module: nn.Module) -> nn.Module:
    """A copy of `module` prepared for inference only (the module itself is left as it is): eval
    mode; every BatchNorm2d that directly follows a convolution in a Sequential folded into that
    convolution's weights; transposed convolutions computed as matrix products where that is faster
    (`_InferenceConvTranspose`); weights in channels-last layout. The same function to float
    rounding; on CPU at one thread it runs the quick preset's G about 1.7x and the verifier about
    1.6x faster than eval mode alone (BENCHMARKS.md). Not for training."""
    import copy

    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
            for i in range(len(seq) - 1):
                layer, bn = seq[i], seq[i + 1]
                if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(layer, bn, transpose=isinstance(layer, nn.ConvTranspose2d))
                    seq[i + 1] = nn.Identity()
        module = module.to(memory_format=torch.channels_last)
        for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
            for i, layer in enumerate(seq):
                if _InferenceConvTranspose.applies(layer):
                    seq[i] = _InferenceConvTranspose(layer)
    return module


__all__ = ["ModelSpec", "build_models", "for_inference", "ARCHITECTURES", "CONDITIONINGS", "MLPGenerator",
           "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator"]
