"""A run's planned length and split sizes, computed once from the config, the data and the
number of workers: the worker, the sweep, the benchmarks and the tests all read it here."""
from __future__ import annotations

from dataclasses import dataclass

from gan_core.data.stream import batches_per_epoch

from . import Config


@dataclass(frozen=True)
class RunPlan:
    n_data: int
    n_train: int
    n_holdout: int
    world: int
    batch_size: int  # per worker
    k: int
    batches_per_epoch: int  # per worker
    iterations: int  # the run's full length

    @property
    def d_images_per_iteration(self) -> int:
        """Images through D in one iteration, all workers: k real and k fake batches in D's updates
        and one fake batch in G's."""
        return (2 * self.k + 1) * self.batch_size * self.world

    @property
    def real_images_per_iteration(self) -> int:
        return self.k * self.batch_size * self.world


def plan_run(cfg: Config, data, world: int) -> RunPlan:
    """The plan of a run of `cfg` on `data` (an ImageDataset) over `world` workers.

    With the length in epochs, an iteration draws k real batches, so an epoch is
    batches_per_epoch / k iterations."""
    n_train, n_holdout = data.split_sizes(cfg.data.holdout_fraction)
    t = cfg.train
    per_epoch = batches_per_epoch(n_train, t.batch_size, world)
    if per_epoch < 1:
        from . import ConfigError

        raise ConfigError(f"train.batch_size={t.batch_size} x {world} workers is larger than the {n_train} "
                          f"training images of {cfg.data.source!r}")
    iterations = t.iterations or max(1, t.epochs * per_epoch // t.k)
    return RunPlan(len(data), n_train, n_holdout, world, t.batch_size, t.k, per_epoch, iterations)
