"""The dataset every stage sees: uint8 images (N, C, H, W), int64 labels, class names, a fingerprint."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from .hf_layout import from_uint8


@dataclass
class ImageDataset:
    """Images kept as uint8 to stay small; `tensor()` scales them to [-1, 1] for the models."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str = "dataset"
    fingerprint: str = field(default="")

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = content_fingerprint(self.images, self.labels, self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_prior(self) -> torch.Tensor:
        """Class frequencies, the distribution a conditional G draws its labels from."""
        counts = np.bincount(self.labels, minlength=self.num_classes).astype(np.float64)
        return torch.as_tensor(counts / counts.sum(), dtype=torch.float32)

    def tensors(self, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [-1, 1] as float32, labels as int64) for the given rows (all by default)."""
        imgs = self.images if indices is None else self.images[indices]
        labs = self.labels if indices is None else self.labels[indices]
        x = from_uint8(imgs)
        return x, torch.from_numpy(np.ascontiguousarray(labs)).to(torch.int64)

    def subset(self, indices: np.ndarray, name: str) -> "ImageDataset":
        return ImageDataset(self.images[indices], self.labels[indices], list(self.class_names),
                            f"{self.name}:{name}")

    def holdout_counts(self, holdout_fraction: float) -> list[int]:
        """Holdout images per class: round(class count x fraction). The train split holds the rest."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"data.holdout_fraction={holdout_fraction} must be in (0, 1)")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return [int(round(int(c) * holdout_fraction)) for c in counts]

    def split_sizes(self, holdout_fraction: float) -> tuple[int, int]:
        """(train, holdout) sizes of `split` with this fraction."""
        hold = sum(self.holdout_counts(holdout_fraction))
        return len(self) - hold, hold

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """Deterministic stratified train/holdout split: the same data and seed give the same split."""
        counts = self.holdout_counts(holdout_fraction)
        rng = np.random.default_rng(seed)
        hold = []
        for c in range(self.num_classes):
            idx = np.flatnonzero(self.labels == c)
            idx = idx[rng.permutation(len(idx))]
            hold.append(idx[: counts[c]])
        hold_idx = np.sort(np.concatenate(hold)) if hold else np.array([], dtype=np.int64)
        mask = np.ones(len(self), dtype=bool)
        mask[hold_idx] = False
        return self.subset(np.flatnonzero(mask), "train"), self.subset(hold_idx, "holdout")


def content_fingerprint(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> str:
    """sha256 of the pixels, the labels, the shape and the class names."""
    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(images.shape), "classes": list(class_names)}).encode())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()
