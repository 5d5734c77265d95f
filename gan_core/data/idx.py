"""MNIST's IDX format (MNIST, Fashion-MNIST, KMNIST): read and write, plain or gzipped."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file; a bad header or a truncated body is a DataError naming the file."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header promises {shape} ({expected} bytes) but the file holds "
                        f"{len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    body = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    body += array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def find_idx_pair(folder: Path) -> tuple[Path, Path]:
    """The images and labels files in a folder, preferring the `train-` pair when several exist."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if "idx3" in p.name]
    labels = [p for p in files if "idx1" in p.name]
    for prefix in ("train", ""):
        im = [p for p in images if p.name.startswith(prefix)]
        lb = [p for p in labels if p.name.startswith(prefix)]
        if len(im) == 1 and len(lb) == 1:
            return im[0], lb[0]
    raise DataError(f"{folder}: expected one *idx3* images file and one *idx1* labels file "
                    f"(as in train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz); found "
                    f"{[p.name for p in images]} and {[p.name for p in labels]}")
