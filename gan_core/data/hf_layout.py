"""The Hugging Face image layout for Parquet: `image` struct<bytes, path>, `label` int64 ClassLabel."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pyarrow as pa
import torch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def features_metadata(class_names: list[str], extra: dict | None = None) -> dict[bytes, bytes]:
    """Schema metadata that `datasets` reads to decode `image` and name the labels."""
    features = {"image": {"_type": "Image"},
                "label": {"_type": "ClassLabel", "names": list(class_names)}}
    for col, kind in (extra or {}).items():
        features[col] = kind
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def class_names_from_metadata(metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """ClassLabel names from a schema's `huggingface` metadata, or None when absent."""
    if not metadata or b"huggingface" not in metadata:
        return None
    try:
        info = json.loads(metadata[b"huggingface"])
        names = info["info"]["features"]["label"]["names"]
        return [str(n) for n in names]
    except (ValueError, KeyError, TypeError):
        return None


def from_uint8(pixels) -> torch.Tensor:
    """uint8 pixels (a numpy array or tensor, any shape) as float32 in [-1, 1], the range G draws in:
    the inverse of `to_uint8`."""
    x = torch.as_tensor(np.ascontiguousarray(pixels) if isinstance(pixels, np.ndarray) else pixels)
    return x.to(torch.float32).div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) to uint8 pixels, rounding half away from the midpoint alike
    on every machine (clamp, scale, round)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """One uint8 image (C, H, W), C in {1, 3}, as PNG bytes (see `encode_pngs`)."""
    return encode_pngs(pixels[None] if isinstance(pixels, np.ndarray) and pixels.ndim == 3 else pixels)[0]


def encode_pngs(pixels: np.ndarray) -> list[bytes]:
    """uint8 images (N, C, H, W), C in {1, 3}, as PNG bytes each: 8-bit grayscale or RGB, no filter,
    deflate with run-length matching (zlib's Z_RLE strategy: lossless, deterministic, any PNG reader
    decodes it). On 28x28 digits Z_RLE takes 14 us an image against 24 us at zlib's default strategy,
    for 4% more bytes; on a generator's noisier images it is both faster and smaller. Written
    directly, the array work and the header done once for the whole batch (PIL: about 115 us)."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 4 or pixels.shape[1] not in (1, 3) \
            or pixels.dtype != np.uint8:
        kind, shape = getattr(pixels, "dtype", type(pixels)), getattr(pixels, "shape", None)
        shape = shape[1:] if shape is not None and len(shape) == 4 else shape
        raise ValueError(f"encode_png takes uint8 (C, H, W) with C in {{1, 3}}, not {kind} {shape}")
    n, c, h, w = pixels.shape
    rows = np.ascontiguousarray(pixels[:, 0] if c == 1 else np.moveaxis(pixels, 1, -1)).reshape(n, h, w * c)
    raw = np.zeros((n, h, w * c + 1), np.uint8)  # filter type 0 at the start of each row
    raw[:, :, 1:] = rows
    raw = raw.reshape(n, -1)
    head = PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0))
    tail = _chunk(b"IEND", b"")
    out = []
    for image in raw:
        deflate = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
        out.append(head + _chunk(b"IDAT", deflate.compress(image.tobytes()) + deflate.flush()) + tail)
    return out
