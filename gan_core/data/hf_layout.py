"""The Hugging Face image layout for Parquet: `image` struct<bytes, path>, `label` int64 ClassLabel."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import torch

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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) to uint8 pixels, rounding half away from the midpoint alike
    on every machine (clamp, scale, round)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def encode_png(pixels: np.ndarray) -> bytes:
    """One uint8 image (C, H, W), C in {1, 3}, as PNG bytes (lossless, deterministic)."""
    from PIL import Image

    arr = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
