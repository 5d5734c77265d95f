"""An endless stream of real batches, sharded across ranks, resumable at any batch index.

Batch b of rank r comes from epoch b // batches_per_epoch of a DistributedSampler seeded by `seed`,
so a stream restarted at `start_batch` yields exactly what the uninterrupted stream would have.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler


def batches_per_epoch(num_train: int, batch_size: int, world_size: int = 1) -> int:
    """Batches each rank draws per epoch: a DistributedSampler without padding gives each rank
    floor(num_train / world_size) images, cut into whole batches."""
    return (num_train // world_size) // batch_size


class BatchStream:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, start_batch: int = 0, device: torch.device | str = "cpu"):
        self.x, self.y, self.batch_size, self.device = x, y, batch_size, torch.device(device)
        self.sampler = DistributedSampler(range(len(x)), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.batches_per_epoch = batches_per_epoch(len(x), batch_size, world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"train.batch_size={batch_size} x {world_size} workers is larger than the "
                             f"{len(x)} training images")
        self.batch = start_batch
        self._order: list[int] = []
        self._epoch = -1

    @property
    def epoch(self) -> int:
        return self.batch // self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.epoch != self._epoch:
            self._epoch = self.epoch
            self.sampler.set_epoch(self._epoch)
            self._order = list(self.sampler)
        i = (self.batch % self.batches_per_epoch) * self.batch_size
        idx = torch.tensor(self._order[i: i + self.batch_size])
        self.batch += 1
        return self.x[idx].to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)
