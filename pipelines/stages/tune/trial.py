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

from ...config import Config
from ...config.build import streams
from ...services import names
from ..train.driver import (TrainOutcome, checkpoint_score, loop_config, record_from_dir, run_failed,
                            train_one_worker)


def in_trial_process(cfg: Config) -> bool:
    """Whether the sweep's trials train in their own process (see the module's docstring)."""
    return cfg.tune.workers_per_trial == 1 and names.is_local(cfg.ray.storage_path) and not streams(cfg)


def run_in_trial(cfg: Config, uri: str, run_id: str, run_name: str, deadline: float | None = None) -> TrainOutcome:
    """Train one trial in this process and record its end as `fit_and_record` records a TorchTrainer's."""
    from ray import tune

    task = loop_config(cfg, uri, run_id, run_name, deadline=deadline)
    try:
        outcome, last = train_one_worker(task.to_dict(), cfg.train.keep_checkpoints, checkpoint_score(cfg),
                                         tell=tune.report)
    except Exception as e:
        raise run_failed(uri, run_id, run_name, e) from None
    return record_from_dir(cfg, uri, run_id, run_name, outcome, last, task.run_dir)
