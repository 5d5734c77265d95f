"""Small fixtures shared by tests: fixed samplers posing as generators, toy densities."""
import torch
from torch import nn


class FixedSampler(nn.Module):
    """A 'generator' whose distribution never changes: x = mean + std * z, shaped (N, 1, 1, 1)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.z_dim, self.num_classes, self.image_shape = 1, None, (1, 1, 1)
        self.mean, self.std = mean, std
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z, y=None):
        return (self.mean + self.std * z).view(-1, 1, 1, 1) + 0.0 * self.dummy
