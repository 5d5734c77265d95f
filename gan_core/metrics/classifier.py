"""The feature network: a small CNN trained on the run's own real data (nothing is downloaded).

Its penultimate layer gives the features for the Fréchet distance, precision/recall and
memorization; its softmax gives the labels for label fidelity. It is cached on disk by the data
fingerprint, so every trial and stage of the same data uses the same network.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class SmallCNN(nn.Module):
    """Three strided conv blocks, global average pooling, a linear head; works for any size >= 8."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, width * 2, 3, 2, 1), nn.BatchNorm2d(width * 2), nn.ReLU(True),
            nn.Conv2d(width * 2, width * 4, 3, 2, 1), nn.BatchNorm2d(width * 4), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width * 4, num_classes)
        self.feature_dim = width * 4

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class FeatureNet:
    """A trained SmallCNN with the facts that make it comparable across evaluations."""

    model: SmallCNN
    fingerprint: str
    holdout_accuracy: float

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(features, softmax probabilities) of images in [-1, 1]."""
        self.model.eval()
        feats, probs = [], []
        for i in range(0, len(x), batch):
            f = self.model.features(x[i:i + batch].float())
            feats.append(f.numpy())
            probs.append(F.softmax(self.model.head(f), 1).numpy())
        return np.concatenate(feats).astype(np.float64), np.concatenate(probs)


# The fewest steps a fresh classifier trains, however small its data.
MIN_STEPS = 300


def classifier_steps(n: int, epochs: int, min_steps: int = MIN_STEPS, max_steps: int | None = None,
                     batch: int = 64) -> int:
    """The batches a classifier of `fit_classifier` trains on `n` images: `epochs` of them, at least
    `min_steps`, at most `max_steps` (when given; never below `min_steps`)."""
    steps = max(min_steps, epochs * max(1, n // min(batch, n)))
    return min(steps, max(min_steps, max_steps)) if max_steps else steps


def fit_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 4, seed: int = 0,
                   batch: int = 64, lr: float = 3e-3, min_steps: int = MIN_STEPS,
                   max_steps: int | None = None, channels_last: bool = True) -> SmallCNN:
    """Train a SmallCNN from scratch, for `epochs` but at least `min_steps` steps and at most
    `max_steps` (when given); deterministic for a seed. `channels_last`: the weights and batches in
    NHWC while it trains (oneDNN's convolutions of these small layers run faster so; the same
    arithmetic up to float rounding), the returned model in the usual layout."""
    fit = Fit(x, y, num_classes, epochs, seed, min_steps, max_steps, batch, lr)
    return _train(fit, fit.start(), channels_last)


@dataclass(frozen=True)
class Fit:
    """One classifier training of `fit_classifier`: its images, labels and settings."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    epochs: int = 4
    seed: int = 0
    min_steps: int = MIN_STEPS
    max_steps: int | None = None
    batch: int = 64
    lr: float = 3e-3

    def steps(self) -> int:
        return classifier_steps(len(self.x), self.epochs, self.min_steps, self.max_steps, self.batch)

    def start(self) -> SmallCNN:
        """The untrained model, initialized from the seed (the global RNG: call it from one thread)."""
        torch.manual_seed(self.seed)
        return SmallCNN(self.x.shape[1], self.num_classes)


# Several classifiers train side by side, each on one intra-op thread: one training of these small
# convolutions gains little from a second thread, so trainings side by side finish sooner than one
# after the other on all threads (BENCHMARKS.md, "The evaluation's classifiers side by side").
SIDE_BY_SIDE_THREADS = 1


def fit_classifiers(fits: list[Fit], channels_last: bool = True) -> list[SmallCNN]:
    """Every training of `fits`, each the model `fit_classifier` would train from its seed, side by
    side in threads of `SIDE_BY_SIDE_THREADS` intra-op thread each (the process's count restored
    after): each one's arithmetic is the same whatever trains beside it, and whatever the machine's
    core count."""
    from concurrent.futures import ThreadPoolExecutor

    models = [f.start() for f in fits]  # in order, on this thread: each seed's initialization
    threads = torch.get_num_threads()
    torch.set_num_threads(SIDE_BY_SIDE_THREADS)
    try:
        with ThreadPoolExecutor(max(1, len(fits)), thread_name_prefix="classifier") as pool:
            return list(pool.map(lambda fm: _train(*fm, channels_last), zip(fits, models)))
    finally:
        torch.set_num_threads(threads)


def _train(fit: Fit, model: SmallCNN, channels_last: bool) -> SmallCNN:
    gen = torch.Generator().manual_seed(fit.seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=fit.lr, fused=True)
    steps = fit.steps()
    x, y = fit.x, fit.y
    batch = min(fit.batch, len(x))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, fit.lr, total_steps=steps)
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x[idx].float().contiguous(memory_format=layout)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done == steps:
                break
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def hits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Per row: whether the model's predicted class is `y`."""
    model.eval()
    return torch.cat([model(x[i:i + batch].float()).argmax(1) == y[i:i + batch]
                      for i in range(0, len(x), batch)]).numpy() if len(x) else np.zeros(0, dtype=bool)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    return float(hits(model, x, y, batch).mean()) if len(x) else 0.0


def load_or_train(train, holdout, cache_dir: str | Path, epochs: int = 4, seed: int = 0,
                  max_steps: int | None = None) -> tuple[FeatureNet, bool]:
    """The cached feature network for this training data, or a new one trained and cached.

    Returns (net, trained_now). The cache key is the training split's fingerprint and the training's
    length (epochs, max_steps); the first seed to train it is the one every later load gets.
    """
    folder = Path(cache_dir).expanduser() / f"{train.fingerprint[:32]}-{epochs}-{max_steps or 0}"
    weights, meta = folder / "classifier.pt", folder / "meta.json"
    channels, num_classes = train.image_shape[0], train.num_classes
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        model = SmallCNN(channels, num_classes)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return FeatureNet(model.eval(), train.fingerprint, info["holdout_accuracy"]), False
    x, y = train.tensors()
    model = fit_classifier(x, y, num_classes, epochs, seed, max_steps=max_steps)
    xh, yh = holdout.tensors()
    acc = accuracy(model, xh, yh)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(weights)
    meta.write_text(json.dumps({"fingerprint": train.fingerprint, "holdout_accuracy": acc, "epochs": epochs}))
    return FeatureNet(model, train.fingerprint, acc), True
