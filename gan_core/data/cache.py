"""Decoded images of a folder source kept on disk: a folder of PNGs or JPEGs (imagefolder:) or of Parquet
files is decoded once and read back as one array by every later load (the driver, each worker, the
evaluation, the batch stage), keyed by every file's path, size and modification time and by the
loading options, so that a changed file means a fresh decode."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .dataset import ImageDataset

CACHED_KINDS = ("imagefolder", "parquet")


def _listing(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            st = os.stat(os.path.join(dirpath, f))
            out.append((os.path.relpath(os.path.join(dirpath, f), root), st.st_size, st.st_mtime_ns))
    return out


def key(source: str, options: dict) -> str | None:
    """The cache key of a folder source under these loading options; None for sources not cached."""
    kind, _, arg = source.partition(":")
    root = Path(os.path.expanduser(arg))
    if kind not in CACHED_KINDS or not root.exists():
        return None
    listing = _listing(root) if root.is_dir() else [(root.name, root.stat().st_size, root.stat().st_mtime_ns)]
    h = hashlib.sha256(json.dumps({"source": source, "options": options, "files": listing}).encode())
    return h.hexdigest()[:32]


def cached(source: str, options: dict, cache_dir: str | None, load: Callable[[], ImageDataset]) -> ImageDataset:
    """`load()`'s dataset, from `cache_dir` when this source under these options was decoded before
    (no cache_dir, or a source not cached: `load()` itself)."""
    k = key(source, options) if cache_dir else None
    if k is None:
        return load()
    folder = Path(os.path.expanduser(cache_dir))
    images, meta = folder / f"{k}.npy", folder / f"{k}.json"
    if images.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return ImageDataset(np.load(images), np.asarray(info["labels"], dtype=np.int64), info["class_names"],
                            info["name"], info["fingerprint"])
    data = load()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{k}.{os.getpid()}.tmp.npy"
    np.save(tmp, data.images)
    tmp.replace(images)  # the array first: a meta file means both are complete
    tmp_meta = folder / f"{k}.{os.getpid()}.tmp.json"
    tmp_meta.write_text(json.dumps({"labels": data.labels.tolist(), "class_names": list(data.class_names),
                                    "name": data.name, "fingerprint": data.fingerprint}))
    tmp_meta.replace(meta)
    return data
