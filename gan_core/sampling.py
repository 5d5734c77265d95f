"""The one sampler of latent vectors z and labels y: training, metrics, sample grids, the model
export and the batch stage all draw through it.

Two ways to draw:
- `sample_latent(n, ...)`: n rows from a torch.Generator (or the global RNG), for training.
- `latent_rows(ids, seed, ...)`: rows addressed by their index: row i depends on (seed, i) only,
  whatever the batch it falls in, so a dataset of N rows is the same however it is split up.
"""
from __future__ import annotations

import functools

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
    labels are laid out class by class and shuffled by a permutation fixed by (seed, total)."""
    total = int(sum(counts))
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= total):
        raise ValueError(f"row ids must lie in [0, {total})")
    return torch.from_numpy(_label_layout(tuple(int(c) for c in counts), int(seed))[ids].astype(np.int64))


@functools.lru_cache(maxsize=2)
def _label_layout(counts: tuple[int, ...], seed: int) -> np.ndarray:
    """Every row's label, computed once per (counts, seed): a batch job asks for a few hundred rows at
    a time, and the permutation costs O(total). Stored in the smallest integer type that holds the
    classes (1 byte per row for up to 256 classes), read-only."""
    total = sum(counts)
    layout = np.repeat(np.arange(len(counts), dtype=np.min_scalar_type(max(len(counts) - 1, 0))), counts)
    perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, total, 1]))).permutation(total)
    out = layout[perm]
    out.flags.writeable = False
    return out


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
