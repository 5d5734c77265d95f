"""Ray runtime: connect (local or cluster) quietly, size the worker group, refuse what cannot fit."""
from __future__ import annotations

import logging
import os

from .config import Config
from .errors import UserError


class PlacementError(UserError):
    """The requested workers cannot be placed on the cluster."""


def init_ray(address: str, verbose: bool = False) -> None:
    """Start or join Ray. Ray's own logs stay out of the default output."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if not verbose:
        os.environ.setdefault("RAY_TQDM", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    # The dashboard serves the state API, which Ray Train uses to release the resources of a run
    # whose driver died (a trial stopped by Tune's scheduler); without it they leak.
    kwargs = dict(logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
                  include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(**kwargs)


def worker_resources(cfg: Config) -> dict[str, float]:
    res = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        res["GPU"] = cfg.ray.gpus_per_worker
    return res


def resolve_num_workers(cfg: Config) -> int:
    """The configured count, or as many workers as the cluster's CPUs (and GPUs) hold."""
    import ray

    if cfg.ray.num_workers:
        return cfg.ray.num_workers
    total = ray.cluster_resources()
    fit = [int(total.get(k, 0) // v) for k, v in worker_resources(cfg).items() if v > 0]
    return max(1, min(fit) if fit else 1)


def check_fits(cfg: Config, num_workers: int) -> None:
    """A clear error instead of a run that waits forever for resources that do not exist."""
    import ray

    total = ray.cluster_resources()
    for key, per in worker_resources(cfg).items():
        need, have = per * num_workers, total.get(key, 0.0)
        if need > have:
            raise PlacementError(
                f"{num_workers} workers x {per:g} {key} = {need:g} {key}, but the Ray cluster has {have:g} "
                f"{key}; lower ray.num_workers or ray.cpus_per_worker, or add nodes")
