"""DCGAN (Radford et al. 2015): all-convolutional G and D, BatchNorm, no pooling, no FC hidden layers.

Geometry: `depth` stride-2 layers. G starts from a 1x1 latent, a transposed convolution grows it to
s0 = size / 2**depth, then `depth` stride-2 transposed convolutions double it to `size`.
D mirrors this with stride-2 convolutions and ends in a convolution whose kernel covers the last
s0 x s0 map, giving one logit. Sizes 28 (s0 = 7), 32 and 64 (s0 = 4) use the default depths.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import ClassBatchNorm2d, LabelEmbedding, check_labels, dcgan_init_, one_hot_channels

DEFAULT_DEPTH = {28: 2, 32: 3, 64: 4}


def resolve_depth(size: int, depth: int | None) -> int:
    """Depth for an image size; refuses geometries that do not divide evenly."""
    depth = DEFAULT_DEPTH.get(size, None) if depth is None else depth
    if depth is None or depth < 1 or size % (2 ** depth) != 0:
        raise ValueError(f"model.depth={depth} does not fit image size {size}: size must be divisible by 2**depth")
    return depth


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (same parameters, same state_dict) that computes as one matrix product
    where that beats the transposed-convolution kernel on CPU, forward and backward: on a 1x1 input
    (G's first layer: the product, reshaped, is the output) and with at most 4 output channels (G's
    image layer: the product's columns summed into place by col2im, `F.fold`). Other layers, and
    layers on a GPU, go to the kernel. The same function to float rounding (tested)."""

    def _fast(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and x.dim() == 4 and self.groups == 1 and self.dilation == (1, 1)
                and self.output_padding == (0, 0) and self.padding_mode == "zeros"
                and (x.shape[-2:] == (1, 1) or self.out_channels <= 4))

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or not self._fast(x):
            return super().forward(x, output_size)
        n, c, h, w = x.shape
        (kh, kw), (ph, pw), (sh, sw) = self.kernel_size, self.padding, self.stride
        weight = self.weight.reshape(c, -1)  # (C_in, C_out * kh * kw)
        if h == w == 1:
            out = (x.reshape(n, c) @ weight).view(n, self.out_channels, kh, kw)[:, :, ph:kh - ph, pw:kw - pw]
        else:
            cols = weight.t() @ x.reshape(n, c, h * w)
            size = ((h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw)
            out = nn.functional.fold(cols, size, (kh, kw), stride=(sh, sw), padding=(ph, pw))
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        if self.weight.is_contiguous(memory_format=torch.channels_last) and not self.weight.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out


class LabelChannelsConv2d(nn.Conv2d):
    """D's first layer under `concat` conditioning: nn.Conv2d over the image joined with its label as
    `num_classes` one-hot constant channels (same parameters, same state_dict), computed without
    building those channels. A convolution is linear in its input, so conv([x, onehot(y)]) =
    conv(x) + conv(onehot(y)), and the second term is one of `num_classes` maps, made once per call
    from the label part of the weights (a convolution of `num_classes` planes) and picked by y
    (with the sum, one matrix product of the one-hot labels and the maps). The
    image part then convolves `image_channels` channels instead of `image_channels + num_classes`,
    forward and backward. Called without y, it is the plain layer on the joined input. The same
    function to float rounding (tested)."""

    def __init__(self, image_channels: int, num_classes: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int):
        super().__init__(image_channels + num_classes, out_channels, kernel_size, stride, padding)
        self.image_channels, self.num_classes = image_channels, num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return super().forward(x)
        c, k = self.image_channels, self.num_classes
        out = nn.functional.conv2d(x, self.weight[:, :c], self.bias, self.stride, self.padding)
        planes = one_hot_channels(torch.arange(k, device=x.device), k, x.shape[2], x.shape[3]).to(x.dtype)
        maps = nn.functional.conv2d(planes, self.weight[:, c:], None, self.stride, self.padding)  # (k, C, h, w)
        onehot = nn.functional.one_hot(y, k).to(out.dtype)  # picks and adds each row's map in one product
        n, channels, h, w = out.shape
        if out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():  # NHWC in memory
            joined = torch.addmm(out.permute(0, 2, 3, 1).reshape(n, -1), onehot,
                                 maps.permute(0, 2, 3, 1).reshape(k, -1))
            return joined.view(n, h, w, channels).permute(0, 3, 1, 2)
        return torch.addmm(out.reshape(n, -1), onehot, maps.reshape(k, -1)).view(n, channels, h, w)


def with_minibatch_std(h: torch.Tensor) -> torch.Tensor:
    """`h` (N, C, H, W) with one more channel: the mean over features and positions of the standard
    deviation over the batch, constant over the map (a batch of one: about 0)."""
    stat = (h.var(0, unbiased=False) + 1e-8).sqrt().mean()  # the epsilon keeps the gradient finite at 0
    return torch.cat([h, stat.expand(h.shape[0], 1, *h.shape[2:]).to(h.dtype)], dim=1)


G_CONDITIONINGS = ("input", "batchnorm")


class DCGANGenerator(nn.Module):
    """z (+ label embedding) -> ConvTranspose/BatchNorm/ReLU blocks -> tanh image.

    Conditional modes: `input` joins the label embedding to z (the conditional GAN of Mirza &
    Osindero); `batchnorm` also gives every BatchNorm a scale and shift per class (ClassBatchNorm2d).
    """

    def __init__(self, z_dim: int, image_shape: tuple[int, int, int], width: int = 64,
                 depth: int | None = None, num_classes: int | None = None, embed_dim: int = 16,
                 conditioning: str = "input"):
        super().__init__()
        self.z_dim, self.image_shape, self.num_classes = z_dim, tuple(image_shape), num_classes
        channels, size, _ = self.image_shape
        depth = resolve_depth(size, depth)
        s0 = size // 2 ** depth
        self.label = LabelEmbedding(num_classes, embed_dim) if num_classes else None
        class_bn = bool(num_classes) and conditioning == "batchnorm"

        def norm(c: int) -> nn.Module:
            return ClassBatchNorm2d(c, num_classes) if class_bn else nn.BatchNorm2d(c)

        c = width * 2 ** (depth - 1)
        layers: list[nn.Module] = [
            ConvTranspose2d(z_dim + (embed_dim if num_classes else 0), c, s0, 1, 0, bias=False),
            norm(c), nn.ReLU(True),
        ]
        for i in range(depth - 1):
            layers += [ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), norm(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(y, self.num_classes, "generator")
        h = (z if self.label is None else torch.cat([z, self.label(y)], dim=1))[:, :, None, None]
        for layer in self.net:
            h = layer(h, y) if isinstance(layer, ClassBatchNorm2d) else layer(h)
        return h


class DCGANDiscriminator(nn.Module):
    """Strided Conv/BatchNorm/LeakyReLU(0.2) blocks (no BatchNorm on the first) -> conv to one logit.

    With `minibatch_std` (Karras et al. 2018), the head also sees one more feature map: the standard
    deviation over the batch of every last-layer feature, averaged, the same value at every position
    (`with_minibatch_std`), so D can tell a batch with too little variety from a real one.

    Conditional modes: `concat` adds the label as one-hot image channels (LabelChannelsConv2d: the
    same function without building them); `projection` adds
    <embed(y), sum of the last feature map> to the logit; `aux` (AC-GAN, Odena et al. 2017) leaves
    the real/fake logit unconditional and adds a second head on the same features, `num_classes`
    class logits, returned with the first by `forward(x, y, classes=True)`.
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64, depth: int | None = None,
                 num_classes: int | None = None, conditioning: str = "concat", minibatch_std: bool = False):
        super().__init__()
        self.image_shape, self.num_classes, self.conditioning = tuple(image_shape), num_classes, conditioning
        self.minibatch_std = minibatch_std
        channels, size, _ = self.image_shape
        depth = resolve_depth(size, depth)
        s0 = size // 2 ** depth
        self.label_channels = bool(num_classes) and conditioning == "concat"
        first = (LabelChannelsConv2d(channels, num_classes, width, 4, 2, 1) if self.label_channels
                 else nn.Conv2d(channels, width, 4, 2, 1))
        layers: list[nn.Module] = [first, nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c + int(minibatch_std), 1, s0, 1, 0)
        self.proj = nn.Embedding(num_classes, c) if num_classes and conditioning == "projection" else None
        self.classes = nn.Conv2d(c, num_classes, s0, 1, 0) if num_classes and conditioning == "aux" else None
        dcgan_init_(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, classes: bool = False):
        """The real/fake logit per row; with `classes` (`aux` conditioning only) also the class logits."""
        check_labels(y, self.num_classes, "discriminator")
        h = x
        for i, layer in enumerate(self.body):
            h = layer(h, y) if i == 0 and self.label_channels else layer(h)
        logit = self.head(with_minibatch_std(h) if self.minibatch_std else h).flatten(1).squeeze(1)
        if self.proj is not None:
            logit = logit + (self.proj(y) * h.sum((2, 3))).sum(1)
        if classes:
            if self.classes is None:
                raise ValueError("class logits come from a discriminator with d_conditioning='aux'")
            return logit, self.classes(h).flatten(1)
        return logit
