"""Turning decoded images of any size and mode into one uint8 (N, C, S, S) array."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

SIZE_POLICIES = ("resize", "error")


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode PNG/JPEG/... bytes; a corrupt image is a DataError naming where it came from."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{where}: not a readable image ({e.__class__.__name__}: {e})") from None


def _mode_for(channels: int) -> str:
    if channels not in (1, 3):
        raise DataError(f"data.channels={channels} is not supported (1 or 3)")
    return "L" if channels == 1 else "RGB"


def stack_images(images: Sequence[Image.Image | np.ndarray], size: int, channels: int | None,
                 mixed_sizes: str, source: str, names: Sequence[str] | None = None) -> np.ndarray:
    """Resize to size x size and convert to `channels` (inferred from the first image when None).

    Images that share one size are resized to `size`. When sizes differ within the source,
    `mixed_sizes="resize"` resizes them all and `"error"` refuses, naming the first odd file.
    """
    if mixed_sizes not in SIZE_POLICIES:
        raise DataError(f"data.mixed_sizes={mixed_sizes!r} is not one of {SIZE_POLICIES}")
    if len(images) == 0:
        raise DataError(f"{source}: no images")
    pil = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in images]
    if channels is None:
        channels = 1 if pil[0].mode in ("L", "1", "I", "I;16", "F", "LA") else 3
    mode = _mode_for(channels)
    first = pil[0].size
    if mixed_sizes == "error":
        for i, im in enumerate(pil):
            if im.size != first:
                name = names[i] if names else f"image {i}"
                raise DataError(f"{source}: {name} is {im.size[0]}x{im.size[1]} but the first image is "
                                f"{first[0]}x{first[1]} (set data.mixed_sizes=resize to resize them)")
    out = np.empty((len(pil), channels, size, size), dtype=np.uint8)
    for i, im in enumerate(pil):
        if im.mode != mode:
            im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out


def arrays_to_dataset_images(arr: np.ndarray, size: int, channels: int | None, source: str) -> np.ndarray:
    """Fast path for uint8 arrays (N, H, W) or (N, H, W, C) that already share one size."""
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    n, h, w, c = arr.shape
    want = c if channels is None else channels
    if (h, w) == (size, size) and c == want:
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    return stack_images([a[:, :, 0] if a.shape[2] == 1 else a for a in arr], size, want, "resize", source)
