"""The Hugging Face image layout for Parquet: `image` struct<bytes, path>, `label` int64 ClassLabel."""
from __future__ import annotations

import json

import pyarrow as pa

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
