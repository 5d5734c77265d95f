"""Data too large for a worker to hold (a `parquet:` folder, or an `imagefolder:` with one sub-folder
per class): the files are split into train files and holdout files, the train files are streamed to
the workers (by the pipeline, on Ray Data), and only a bounded sample is held in memory for what
needs images at hand (the metrics' holdout, the feature network).

The split is by whole files (a seeded choice of round(fraction x files) holdout files, at least
one; for an image folder a file is one image), so that it needs no pass over the rows and a streamed
row is never a holdout row. Any pyarrow filesystem URI works: a local or shared path, or
s3://BUCKET/PREFIX.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from .dataset import ImageDataset
from .errors import DataError


STREAMABLE = ("parquet", "imagefolder")  # the source kinds that can be streamed


def within(path: str) -> str:
    """The path inside its filesystem: a URI without its scheme, a local path as it is."""
    return path.split("://", 1)[1] if "://" in path else path


def filesystem_of(path: str):
    """(pyarrow filesystem, the path within it) of a local path or a URI such as s3://BUCKET/KEY."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)


def list_files(source: str) -> tuple[object, list[str], list[int], list[int] | None, list[str] | None]:
    """(pyarrow filesystem, the source's files in order, their sizes, and for an image folder each
    file's class index and the class names) of a `parquet:` or `imagefolder:` source."""
    import pyarrow.fs as pafs

    from .sources import IMAGE_SUFFIXES

    kind, _, path = source.partition(":")
    if kind not in STREAMABLE:
        raise DataError(f"{source}: only {' and '.join(k + ':' for k in STREAMABLE)} sources can be streamed")
    try:
        fs, root = filesystem_of(path)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File and kind == "parquet":
            found = [info]
        elif info.type == pafs.FileType.Directory:
            found = [f for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                     if f.type == pafs.FileType.File and not f.base_name.startswith(".")]
        else:
            raise DataError(f"{source}: path does not exist")
    except DataError:
        raise
    except Exception as e:  # unreachable store, missing bucket, bad credentials
        raise DataError(f"{source}: cannot list it ({e.__class__.__name__}: {e})") from None
    found.sort(key=lambda f: f.path)
    prefix = path.split("://", 1)[0] + "://" if "://" in path else ""
    labels = names = None
    if kind == "parquet":
        found = [f for f in found if f.path.endswith(".parquet")]
    else:  # ROOT/CLASS/.../IMAGE; the sorted class folder names are the classes
        base = root.rstrip("/") + "/"
        found = [f for f in found if "." + f.base_name.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES
                 and "/" in f.path[len(base):]]
        classes = [f.path[len(base):].split("/", 1)[0] for f in found]
        names = sorted(set(classes))
        labels = [names.index(c) for c in classes]
    if not found:
        raise DataError(f"{source}: no {'.parquet files' if kind == 'parquet' else 'images in class folders'}")
    return fs, [prefix + f.path for f in found], [int(f.size) for f in found], labels, names


def split_files(files: list[str], holdout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train files, holdout files): a seeded choice of round(fraction x files) holdout files, at least one."""
    if len(files) < 2:
        raise DataError(f"{files[0]}: streaming needs at least two files (train and holdout); "
                        f"write the data in several files or set data.streaming=off")
    n_hold = min(len(files) - 1, max(1, round(len(files) * holdout_fraction)))
    order = np.random.default_rng(seed).permutation(len(files))
    hold = set(order[:n_hold].tolist())
    return [f for i, f in enumerate(files) if i not in hold], [f for i, f in enumerate(files) if i in hold]


@dataclass
class StreamedDataset(ImageDataset):
    """The in-memory face of streamed data: `images` hold the first `n_holdout` rows of the holdout
    files, then a sample of the train files; `split` returns exactly those two parts, and the train
    part's label prior is that of all train rows."""

    train_files: list[str] = field(default_factory=list)
    holdout_files: list[str] = field(default_factory=list)
    kind: str = "parquet"  # or imagefolder: then a file is one image, of class train_labels[i]
    train_labels: list[int] = field(default_factory=list)
    n_holdout: int = 0
    train_rows: int = 0
    train_label_counts: list[int] = field(default_factory=list)

    def split_sizes(self, holdout_fraction: float) -> tuple[int, int]:
        return self.train_rows, self.n_holdout

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        train = _PriorDataset(self.images[self.n_holdout:], self.labels[self.n_holdout:], list(self.class_names),
                              f"{self.name}:train", self.fingerprint + ":train",
                              counts=list(self.train_label_counts))
        hold = self.subset(np.arange(self.n_holdout), "holdout")
        return train, hold


@dataclass
class _PriorDataset(ImageDataset):
    """A sample whose label prior is that of the rows it was drawn from."""

    counts: list[int] = field(default_factory=list)

    def label_prior(self) -> torch.Tensor:
        c = np.asarray(self.counts, dtype=np.float64)
        return torch.as_tensor(c / c.sum(), dtype=torch.float32)


def read_bytes(fs, f: str) -> bytes:
    """A file's bytes through its filesystem (`f` as listed, with its URI scheme when it has one)."""
    with fs.open_input_file(within(f)) as handle:
        return handle.read()


def load_streamed(source: str, size: int, channels: int | None, holdout_fraction: float, seed: int,
                  sample_rows: int, mixed_sizes: str = "resize", class_names: list[str] | None = None) -> StreamedDataset:
    """The StreamedDataset of a `parquet:` or `imagefolder:` source: the file split, the label counts of
    the train files (Parquet: their label column; images: their class folders), and up to
    `sample_rows` rows of the holdout files and of the train files, decoded."""
    import pyarrow.parquet as pq

    from .hf_layout import class_names_from_metadata
    from .images import decode_image, stack_images
    from .sources import _check_labels, parquet_rows

    kind, _, path = source.partition(":")
    fs, files, sizes, file_labels, folder_names = list_files(source)
    train_files, hold_files = split_files(files, holdout_fraction, seed)
    label_of = dict(zip(files, file_labels or []))

    def read(f: str, columns=None):
        try:
            return pq.read_table(within(f), columns=columns, filesystem=fs)
        except Exception as e:  # pyarrow raises several types for a damaged or foreign file
            raise DataError(f"{f}: not a readable Parquet file with 'image' and 'label' ({e})") from None

    if kind == "parquet":
        names = class_names or class_names_from_metadata(pq.read_schema(within(files[0]), filesystem=fs).metadata)
    else:
        names = class_names or folder_names
    counts, train_rows = np.zeros(len(names or []), dtype=np.int64), 0
    for f in train_files if kind == "parquet" else []:  # the label column only, file by file
        labels = read(f, ["label"]).column("label").to_numpy(zero_copy_only=False).astype(np.int64)
        bad = labels[(labels < 0) | (labels >= (len(names) if names else np.iinfo(np.int64).max))]
        if len(bad):
            raise DataError(f"{f}: label {int(bad[0])} is outside the classes {names or '0, 1, ...'}")
        c = np.bincount(labels, minlength=len(counts)) if len(labels) else np.zeros(len(counts), np.int64)
        counts = np.pad(counts, (0, len(c) - len(counts))) + c
        train_rows += len(labels)
    if kind == "imagefolder":
        counts = np.bincount([label_of[f] for f in train_files], minlength=len(names))
        train_rows = len(train_files)

    def sample(group: list[str]) -> tuple[list, list, list]:
        images, labels, where = [], [], []
        for f in group:
            if len(images) >= sample_rows:
                break
            if kind == "parquet":
                i, lab, w = parquet_rows(read(f), f, limit=sample_rows - len(images))
            else:
                i, lab, w = [decode_image(read_bytes(fs, f), f)], [label_of[f]], [f]
            images += i
            labels += lab
            where += w
        return images, labels, where

    hold, train = sample(hold_files), sample(train_files)
    names = names or [str(i) for i in range(max(len(counts), max(hold[1], default=0) + 1))]
    arr = stack_images(hold[0] + train[0], size, channels, mixed_sizes, source, hold[2] + train[2])
    labels = _check_labels(np.array(hold[1] + train[1]), names, source, allow_empty=True)
    counts = np.pad(counts, (0, len(names) - len(counts)))
    if (counts == 0).any():
        raise DataError(f"{source}: class(es) {[names[c] for c in np.flatnonzero(counts == 0)]} have no "
                        f"rows in the train files")
    fp = hashlib.sha256(json.dumps({"files": files, "sizes": sizes, "names": names,
                                    "counts": counts.tolist()}).encode()).hexdigest()
    return StreamedDataset(arr, labels, list(names), path.rstrip("/").split("/")[-1] or kind, fp,
                           train_files=train_files, holdout_files=hold_files, kind=kind,
                           train_labels=[label_of[f] for f in train_files] if kind == "imagefolder" else [],
                           n_holdout=len(hold[0]), train_rows=train_rows, train_label_counts=counts.tolist())


def decode_batch(cells, size: int, channels: int | None, mixed_sizes: str, where: str) -> np.ndarray:
    """uint8 images (N, C, H, W) of a streamed batch's `image` cells ({bytes, path} structs or bytes)."""
    from .images import decode_image, stack_images

    images = [decode_image(c["bytes"] if isinstance(c, dict) else c, where) for c in cells]
    return stack_images(images, size, channels, mixed_sizes, where, [where] * len(images))
