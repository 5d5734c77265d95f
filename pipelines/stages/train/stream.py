"""Streamed training data: the train files of a `parquet:` or `imagefolder:` source read through Ray
Data and handed to each worker as its own shard (`ray.train.get_dataset_shard`), for data larger than
a worker should hold (`data.streaming`; the split into train and holdout files is
gan_core.data.streamed's).

Worker r reads the train files r, r + W, r + 2W, ... (W workers; for an image folder a file is one
image) in a fixed order, each epoch with its own seeded local shuffle, so its batch b is always the
same rows: a run resumed at batch b goes on with the batch the uninterrupted run would have drawn.
The in-memory path stays for small data.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ...config import Config, ConfigError

SHUFFLE_BUFFER = 4096  # rows in each worker's local shuffle buffer
IMAGES_PER_READ = 256  # image files read by one Ray Data task


def dataset_name(rank: int) -> str:
    return f"train_{rank}"


def rank_files(train_files: list[str], world: int) -> list[list[str]]:
    """The train files of each of `world` workers: worker r takes files r, r + W, ..."""
    if len(train_files) < world:
        raise ConfigError(f"data.source: {len(train_files)} train file(s) cannot be shared by {world} workers; "
                          f"write the data in more files or use fewer workers (ray.num_workers)")
    return [train_files[r::world] for r in range(world)]


def _open(f: str):
    """A Parquet file (local path or URI) opened for reading."""
    import pyarrow.parquet as pq

    from gan_core.data.streamed import filesystem_of

    fs, path = filesystem_of(f)
    return pq.ParquetFile(fs.open_input_file(path))


def row_groups(files: list[str]) -> list[dict]:
    """(file, row group, rows) of each row group of `files`, in order, from the footers only."""
    out = []
    for f in files:
        meta = _open(f).metadata
        out += [{"file": f, "group": g, "rows": meta.row_group(g).num_rows} for g in range(meta.num_row_groups)]
    return out


def rank_items(data, world: int) -> list[list[dict]]:
    """What each worker's dataset reads, in order: row groups of its Parquet files, or chunks of its
    image files with their classes."""
    per_rank = rank_files(data.train_files, world)
    if data.kind == "parquet":
        return [row_groups(files) for files in per_rank]
    label = dict(zip(data.train_files, data.train_labels))
    return [[{"images": files[i:i + IMAGES_PER_READ], "labels": [label[f] for f in files[i:i + IMAGES_PER_READ]]}
             for i in range(0, len(files), IMAGES_PER_READ)] for files in per_rank]


def item_rows(items: list[dict]) -> int:
    """Rows a worker's items hold: from the Parquet footers, or the number of its images."""
    return sum(i["rows"] if "rows" in i else len(i["images"]) for i in items)


def read_items(batch):
    """A Ray Data batch of items -> their rows: `image` ({bytes, path}), `label`, and `path` (the file read)."""
    import pyarrow as pa

    from gan_core.data import IMAGE_TYPE
    from gan_core.data.streamed import filesystem_of, read_bytes

    tables = []
    if "group" in batch.column_names:
        for f, g in zip(batch["file"].to_pylist(), batch["group"].to_pylist()):
            t = _open(f).read_row_group(g, columns=["image", "label"])
            tables.append(t.append_column("path", pa.array([f] * t.num_rows)))
        return pa.concat_tables(tables)
    for files, labels in zip(batch["images"].to_pylist(), batch["labels"].to_pylist()):
        fs, _ = filesystem_of(files[0])
        cells = [{"bytes": read_bytes(fs, f), "path": f.rsplit("/", 1)[-1]} for f in files]
        tables.append(pa.table({"image": pa.array(cells, IMAGE_TYPE), "label": pa.array(labels, pa.int64()),
                                "path": pa.array(files)}))
    return pa.concat_tables(tables)


def trainer_datasets(cfg: Config, data) -> tuple[dict, object | None, list[int]]:
    """(datasets, DataConfig, rows per worker) for TorchTrainer: one Ray Data dataset per worker, not
    split further, read in order (row group by row group, or images in chunks); ({}, None, []) when the
    data is in memory."""
    from gan_core.data.streamed import StreamedDataset

    if not isinstance(data, StreamedDataset):
        return {}, None, []
    import ray.data
    from ray.train import DataConfig

    per_rank = rank_items(data, cfg.ray.num_workers)
    # Every step reserves no CPU: the workers hold the CPUs they run on, and a read waiting for one
    # of them would wait forever. Reading is I/O; the PNG decoding happens in the worker.
    datasets = {dataset_name(r): ray.data.from_items(items).map_batches(read_items, batch_size=1,
                                                                       batch_format="pyarrow", num_cpus=0)
                for r, items in enumerate(per_rank)}
    options = ray.data.ExecutionOptions(preserve_order=True)
    return datasets, DataConfig(datasets_to_split=[], execution_options=options), [item_rows(i) for i in per_rank]


class StreamedBatches:
    """Endless (x, y) batches of one worker's shard. Batch b is batch b % per_epoch of epoch
    b // per_epoch; `epoch_batches(epoch)` yields that epoch's numpy batches ({"image", "label",
    "path"}) in a fixed order. Records which files the worker read (`files`)."""

    def __init__(self, epoch_batches, rows: int, batch_size: int, image_size: int, channels: int | None,
                 mixed_sizes: str, start_batch: int = 0, device: torch.device | str = "cpu"):
        self.epoch_batches, self.batch_size = epoch_batches, batch_size
        self.batches_per_epoch = rows // batch_size
        if self.batches_per_epoch < 1:
            raise ConfigError(f"train.batch_size={batch_size} is larger than the {rows} rows of a worker's files")
        self.size, self.channels, self.mixed_sizes = image_size, channels, mixed_sizes
        self.batch, self.device = start_batch, torch.device(device)
        self.files: dict[str, int] = {}
        self._it: Iterator | None = None
        self._epoch = -1

    @property
    def epoch(self) -> int:
        return self.batch // self.batches_per_epoch

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        from gan_core.data.streamed import decode_batch

        if self.epoch != self._epoch:  # a new epoch, or the first batch after a resume: skip to the position
            self._epoch = self.epoch
            self._it = iter(self.epoch_batches(self._epoch))
            for _ in range(self.batch % self.batches_per_epoch):
                next(self._it)
        b = next(self._it)
        self.batch += 1
        for p in b["path"]:
            self.files[str(p)] = self.files.get(str(p), 0) + 1
        x = decode_batch(list(b["image"]), self.size, self.channels, self.mixed_sizes, "streamed batch")
        x = torch.from_numpy(x).to(torch.float32).div_(127.5).sub_(1.0)
        y = torch.from_numpy(np.asarray(b["label"], dtype=np.int64))
        return x.to(self.device), y.to(self.device)


def worker_stream(cfg: Config, rank: int, rows: int, start_batch: int, device) -> StreamedBatches:
    """Worker `rank`'s stream of its own shard (inside a Ray Train worker)."""
    import ray.train

    shard = ray.train.get_dataset_shard(dataset_name(rank))
    t, d = cfg.train, cfg.data

    def epoch_batches(epoch: int):
        return shard.iter_batches(batch_size=t.batch_size, batch_format="numpy", drop_last=True,
                                  local_shuffle_buffer_size=min(SHUFFLE_BUFFER, rows),
                                  local_shuffle_seed=cfg.seed * 100003 + epoch * 1009 + rank)

    return StreamedBatches(epoch_batches, rows, t.batch_size, d.image_size, d.channels, d.mixed_sizes,
                           start_batch, device)
