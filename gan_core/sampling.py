"""The one sampler of latent vectors z and labels y: training, metrics, sample grids, the model
export and the batch stage all draw through it.

Two ways to draw:
- `sample_latent(n, ...)`: n rows from a torch.Generator (or the global RNG), for training.
- `latent_rows(ids, seed, ...)`: rows addressed by their index: row i depends on (seed, i) only,
  whatever the batch it falls in, so a dataset of N rows is the same however it is split up.
"""
from __future__ import annotations


import numpy as np
import torch

from .models import for_inference

BLOCK = 1024  # rows per independently seeded block of `latent_rows`


def seeded(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed`."""
    return torch.Generator().manual_seed(int(seed))


def sample_latent(n: int, z_dim: int, label_prior: torch.Tensor | None = None,
                  generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """z ~ N(0, I) of shape (n, z_dim) and, when `label_prior` is given, labels drawn from it."""
    z = torch.randn(n, z_dim, generator=generator)
    y = None
    if label_prior is not None:
        y = torch.multinomial(label_prior, n, replacement=True, generator=generator).to(device)
    return z.to(device), y


def _block(seed: int, block: int, z_dim: int) -> torch.Tensor:
    # numpy's SeedSequence mixes (seed, block) into independent streams.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(block), int(z_dim)])))
    return torch.from_numpy(rng.standard_normal((BLOCK, z_dim), dtype=np.float32))


def latent_rows(ids: np.ndarray | torch.Tensor, seed: int, z_dim: int) -> torch.Tensor:
    """z for the given row ids: row i's vector depends on (seed, i, z_dim) only."""
    ids = np.asarray(ids, dtype=np.int64)
    out = torch.empty(len(ids), z_dim)
    if len(ids) == 0:
        return out
    blocks = ids // BLOCK
    for b in np.unique(blocks):
        sel = np.flatnonzero(blocks == b)
        out[torch.from_numpy(sel)] = _block(seed, int(b), z_dim)[torch.from_numpy(ids[sel] % BLOCK)]
    return out


def uniform_rows(ids: np.ndarray | torch.Tensor, seed: int, stream: int = 0) -> torch.Tensor:
    """U(0, 1) numbers for the given row ids: row i's number depends on (seed, stream, i) only
    (independent of the z stream of `latent_rows`)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = torch.empty(len(ids), dtype=torch.float64)
    blocks = ids // BLOCK
    for b in np.unique(blocks):
        sel = np.flatnonzero(blocks == b)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(b), 0, 7, int(stream)])))
        out[torch.from_numpy(sel)] = torch.from_numpy(rng.random(BLOCK))[torch.from_numpy(ids[sel] % BLOCK)]
    return out


def labels_for_rows(ids: np.ndarray | torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Labels for the given row ids of a dataset with exactly `counts[c]` rows of class c: the
    labels are laid out class by class and shuffled by a permutation fixed by (seed, total). The
    permutation is computed for the ids asked for only (`shuffled_index`): memory and time grow with
    len(ids), never with the dataset's size."""
    total = int(sum(counts))
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= total):
        raise ValueError(f"row ids must lie in [0, {total})")
    bounds = np.cumsum(np.asarray(counts, dtype=np.int64))
    return torch.from_numpy(np.searchsorted(bounds, shuffled_index(ids, total, seed), side="right").astype(np.int64))


FEISTEL_ROUNDS = 6
_MASK64 = np.uint64(2**64 - 1)


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    """splitmix64's finalizer of x + key: a well-mixed 64-bit hash, elementwise."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(key & (2**64 - 1))) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def shuffled_index(ids: np.ndarray, total: int, seed: int) -> np.ndarray:
    """Where rows `ids` land in a pseudo-random permutation of range(total) fixed by (seed, total): a
    balanced Feistel network on the smallest even number of bits that holds `total`, walked again
    for a value at or beyond `total` (cycle-walking keeps it a bijection of range(total))."""
    ids = np.asarray(ids, dtype=np.uint64)
    if total <= 1:
        return ids.astype(np.int64)
    half = max(1, ((int(total) - 1).bit_length() + 1) // 2)
    low = np.uint64((1 << half) - 1)
    keys = [int(_mix(np.array([r], dtype=np.uint64), (seed * 0x9E3779B97F4A7C15 + total) & (2**64 - 1))[0])
            for r in range(FEISTEL_ROUNDS)]

    def permute(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & low
        for k in keys:
            left, right = right, left ^ (_mix(right, k) & low)
        return (left << np.uint64(half)) | right

    out = permute(ids)
    while True:
        outside = out >= np.uint64(total)
        if not outside.any():
            return out.astype(np.int64)
        out[outside] = permute(out[outside])


FORWARD_BLOCK = 256  # rows per generator forward pass when rows are addressed by id


def aligned_blocks(start: int, stop: int, total: int):
    """The FORWARD_BLOCK-aligned blocks of row ids (within [0, total)) that cover [start, stop):
    yields (block ids, mask of the ids in [start, stop)). A row's forward pass always shares its
    batch with the same rows, so its pixels do not depend on how a job is split up."""
    lo = start
    while lo < stop:
        base = lo - lo % FORWARD_BLOCK
        block = np.arange(base, min(base + FORWARD_BLOCK, total))
        yield block, (block >= start) & (block < stop)
        lo = base + FORWARD_BLOCK


@torch.no_grad()
def render_rows(g: torch.nn.Module, ids: np.ndarray, seed: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """G's images (in [-1, 1]) for rows `ids` under `seed` (labels `y` for a conditional G): row i's
    z depends on (seed, i) only. Call it on the blocks of `aligned_blocks` for pixels that match
    however a job is split up. Prepare G with `rows_generator` first: every caller that must give
    generate's bytes runs G the same way."""
    device = next(g.parameters()).device
    return g(latent_rows(ids, seed, g.z_dim).to(device), None if y is None else y.to(device))


def rows_generator(g: torch.nn.Module) -> torch.nn.Module:
    """G as `render_rows` runs it: a copy made by `gan_core.models.for_inference` (eval mode,
    BatchNorm folded into the convolutions, channels-last); `g` itself is left as it is."""
    return for_inference(g)
