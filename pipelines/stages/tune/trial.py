"""A one-worker trial trains in the trial's own process.

A trial with one worker has no replicas to keep in sync, so it needs none of Ray Train's machinery:
no controller, no worker group, no process group. Run through a TorchTrainer, that machinery costs
three more processes per trial (each importing torch) and about 10 s of start-up, which on a small
machine is often longer than the trial's training. Here the worker's code (`run_worker`) runs in the
Tune trial itself: checkpoints go to the trial's run directory (named and kept as Ray Train names and
keeps them, so resuming and the sweep's summary read them alike), and reports go to Tune.

Used when a trial has one worker, its storage is a local (or shared) path and its data is in memory;
otherwise each trial is a TorchTrainer run.
"""
from __future__ import annotations

import torch

from ...config import Config
from ...config.build import streams
from ...services import checkpoints, names
from ..train.driver import TrainOutcome, checkpoint_score, loop_config, record_outcome, run_failed


def in_trial_process(cfg: Config) -> bool:
    """Whether the sweep's trials train in their own process (see the module's docstring)."""
    return cfg.tune.workers_per_trial == 1 and names.is_local(cfg.ray.storage_path) and not streams(cfg)


class TrialSession:
    """Rank 0 of 1 inside a Tune trial: checkpoints persisted to the run directory and pruned as
    Ray Train's CheckpointConfig would (the newest and the `keep` best), metrics reported to Tune."""

    rank, world = 0, 1

    def __init__(self, run_dir: str, keep: int | None, score: tuple[str, str]):
        self.run_dir, self.keep, self.score = run_dir, keep, score
        self.last: dict = {}

    @staticmethod
    def device(use_gpu: bool) -> torch.device:
        return torch.device("cuda") if use_gpu else torch.device("cpu")

    @staticmethod
    def checkpoint():
        return None  # `restore` finds the newest complete checkpoint in the run directory

    def report(self, metrics: dict, folder: str | None, step: int) -> None:
        from ray import tune

        if folder is not None:  # on disk before Tune hears of it: a stop decided on this report keeps it
            checkpoints.persist(folder, self.run_dir, step, metrics)
            checkpoints.prune(self.run_dir, self.keep, *self.score)
        self.last = metrics
        tune.report(metrics)


def run_in_trial(cfg: Config, uri: str, run_id: str, run_name: str, deadline: float | None = None) -> TrainOutcome:
    """Train one trial in this process and record its end as `fit_and_record` records a TorchTrainer's."""
    from ray.train import Checkpoint

    from ..train.worker import run_worker

    task = loop_config(cfg, uri, run_id, run_name, deadline=deadline)
    session = TrialSession(task.run_dir, cfg.train.keep_checkpoints, checkpoint_score(cfg))
    try:
        outcome = run_worker(task, session)
    except Exception as e:
        raise run_failed(uri, run_id, run_name, e) from None
    folders = checkpoints.checkpoint_folders(task.run_dir)
    kept = [(Checkpoint(str(f)), checkpoints.reported_metrics(f)) for f in folders]
    return record_outcome(cfg, uri, run_id, run_name, outcome, session.last, kept,
                          Checkpoint(str(folders[0])) if folders else None)
