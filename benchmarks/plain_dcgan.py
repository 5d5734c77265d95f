"""The baseline of the step benchmarks: pytorch/examples' dcgan/main.py iteration, conditional (labels
drawn uniformly, joined to D's input as channels): the fake batch made once and used for both
updates, D's weight gradients computed during the G update, `.item()` every step. Needs torch, and
gan_core's model classes to swap them for torch's plain layers."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from gan_core.models.base import one_hot_channels
from gan_core.models.dcgan import LabelChannelsConv2d


class JoinedLabelConv2d(nn.Conv2d):
    """A conditional DCGAN's first D layer as it is usually written: the label joined to the image as
    one-hot constant channels, then one convolution over them all."""

    def __init__(self, layer: nn.Conv2d, num_classes: int):
        super().__init__(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         bias=layer.bias is not None)
        self.load_state_dict(layer.state_dict())
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            x = torch.cat([x, one_hot_channels(y, self.num_classes, x.shape[2], x.shape[3]).to(x.dtype)], dim=1)
        return super().forward(x)


def with_torch_layers(module: nn.Module) -> nn.Module:
    """A copy of `module` whose layers are computed as pytorch/examples' dcgan computes them (same
    weights): torch's own nn.ConvTranspose2d in G, and in D the label joined to the image as channels
    before the first convolution."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ConvTranspose2d) and type(child) is not nn.ConvTranspose2d:
                plain = nn.ConvTranspose2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                           child.padding, child.output_padding, child.groups, child.bias is not None,
                                           child.dilation)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
            elif isinstance(child, LabelChannelsConv2d):
                setattr(parent, name, JoinedLabelConv2d(child, child.num_classes))
    return module


def plain_loop(G, D, opt_g, opt_d, stream, z_dim: int, num_classes: int, iterations: int) -> None:
    """pytorch/examples dcgan/main.py's iteration, conditional: labels drawn uniformly."""
    for _ in range(iterations):
        x, y = next(stream)
        n = x.shape[0]
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        out = D(x, y)
        err_real = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_real.backward()
        d_x = torch.sigmoid(out).mean().item()
        z = torch.randn(n, z_dim, device=x.device)
        y_fake = torch.randint(0, num_classes, (n,), device=x.device)
        fake = G(z, y_fake)
        out = D(fake.detach(), y_fake)
        err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
        err_fake.backward()
        d_g1 = torch.sigmoid(out).mean().item()
        opt_d.step()
        # (2) Update G network: maximize log(D(G(z)))
        G.zero_grad()
        out = D(fake, y_fake)
        err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
        _ = (err_real.item() + err_fake.item(), err_g.item(), d_x, d_g1)
