"""`ganpipe train`: one Ray Train run of the worker loop, tracked as one MLflow run.

The driver validates everything it can before Ray starts (config, data, tracking store, worker
placement), opens (or, for a resumed run name, reopens) the MLflow run, runs TorchTrainer, and
logs the final checkpoint as an artifact.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import tracking
from .config import Config, flatten, with_absolute_paths
from .errors import UserError
from .train_loop import load_data, train_loop_per_worker


class TrainingError(UserError):
    """Training stopped (NaN loss, workers lost beyond max_failures); the message says where."""


@dataclass
class TrainOutcome:
    run_id: str
    run_name: str
    checkpoint: str | None
    metrics: dict
    storage: str
    worker_result: dict


def open_mlflow_run(uri: str, cfg: Config, run_name: str, fingerprint: str, extra_tags: dict | None = None) -> str:
    """The MLflow run for this run name: the existing one when resuming, else a new one."""
    c = tracking.client(uri)
    exp = tracking.with_retry(lambda: c.get_experiment_by_name(cfg.mlflow.experiment))
    exp_id = exp.experiment_id if exp else tracking.with_retry(lambda: c.create_experiment(cfg.mlflow.experiment))
    found = tracking.with_retry(lambda: c.search_runs([exp_id], f"tags.`ganpipe.run_name` = '{run_name}'",
                                                      max_results=1))
    if found:
        run_id = found[0].info.run_id
        tracking.with_retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = {"ganpipe.run_name": run_name, "ganpipe.stage": "train", "data.fingerprint": fingerprint,
            "mlflow.runName": run_name, **(extra_tags or {})}
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = tracking.with_retry(lambda: c.create_run(exp_id, tags=tags, run_name=run_name))
    from mlflow.entities import Param

    params = [Param(k, str(v)[:6000]) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        tracking.with_retry(lambda: c.log_batch(run.info.run_id, params=params[i:i + 100]))
    return run.info.run_id


def _progress_bar(queue, stop: threading.Event, quiet: bool) -> None:
    """Drains rank 0's progress messages into one tqdm bar."""
    from tqdm import tqdm

    bar = None
    while not stop.is_set() or not queue.empty():
        try:
            msg = queue.get(timeout=0.5)
        except Exception:
            continue
        if bar is None:
            bar = tqdm(total=msg["total"], initial=0, unit="it", disable=quiet, dynamic_ncols=True)
        bar.n = msg["iteration"]
        bar.set_postfix(loss_d=f"{msg['loss_d']:.3f}", loss_g=f"{msg['loss_g']:.3f}",
                        D_x=f"{msg['d_real']:.2f}", D_Gz=f"{msg['d_fake']:.2f}", epoch=msg["epoch"],
                        **({"fd": f"{msg['fd']:.2f}"} if "fd" in msg else {}))
    if bar is not None:
        bar.close()


def prepare_data(cfg: Config):
    """Load the data on the driver (bad input fails here, before Ray) and cache the feature network."""
    data = load_data(cfg)
    if cfg.eval.during_training:  # trained once, here, so that workers and trials find it cached
        from gan_core.metrics import load_or_train

        load_or_train(*data.split(cfg.data.holdout_fraction, cfg.seed), cfg.eval.cache_dir,
                      cfg.eval.classifier_epochs, cfg.seed)
    return data


def preflight(cfg: Config, verbose: bool = False):
    """Everything checked before Ray does work: paths made absolute, the tracking store reachable,
    the data loadable (feature network cached); then Ray started or joined. Returns (cfg, uri, data)."""
    from .runtime import init_ray

    cfg = with_absolute_paths(cfg)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    data = prepare_data(cfg)
    init_ray(cfg.ray.address, verbose)
    return cfg, uri, data


def build_trainer(cfg: Config, uri: str, run_id: str, run_name: str, progress=None, callbacks=()):
    """The TorchTrainer of one training run; `cfg.ray.num_workers` must be resolved."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .runtime import worker_resources

    storage = cfg.ray.storage_path  # made absolute by preflight (with_absolute_paths)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "tracking_uri": uri, "run_id": run_id,
                           "progress": progress, "run_dir": f"{storage}/{run_name}"},
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=worker_resources(cfg)),
        run_config=RunConfig(
            name=run_name, storage_path=storage, callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="fd" if cfg.eval.during_training else "iteration",
                checkpoint_score_order="min" if cfg.eval.during_training else "max"),
        ),
    )


def fit_and_record(trainer, cfg: Config, uri: str, run_id: str, run_name: str) -> TrainOutcome:
    """Run the trainer; on success log the final checkpoint and close the MLflow run."""
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError and friends: name the run and the cause
        _finish(uri, run_id, "FAILED")
        raise TrainingError(f"run {run_name!r} failed: {_root_cause(e)}") from None
    ckpt = result.checkpoint.path if result.checkpoint else None
    outcome = result.return_value or {}
    if outcome.get("status") == "nan":
        _finish(uri, run_id, "FAILED")
        raise TrainingError(f"run {run_name!r}: loss became NaN/inf at iteration {outcome['iteration']} "
                            f"({outcome.get('values')}); the last good checkpoint is kept at {ckpt}")
    if ckpt:
        state = Path(ckpt) / "state.pt"
        if state.is_file():
            tracking.with_retry(lambda: tracking.client(uri).log_artifact(run_id, str(state), "checkpoint"))
    _finish(uri, run_id, "FINISHED")
    return TrainOutcome(run_id, run_name, ckpt, dict(result.metrics or {}), f"{cfg.ray.storage_path}/{run_name}",
                        outcome)


def run_training(cfg: Config, verbose: bool = False, quiet: bool = False) -> TrainOutcome:
    import ray
    from ray.util.queue import Queue

    from .runtime import check_fits, resolve_num_workers

    cfg, uri, data = preflight(cfg, verbose)
    workers = resolve_num_workers(cfg)
    check_fits(cfg, workers)
    cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_workers": workers})})
    run_name = cfg.train.run_name or time.strftime("train-%Y%m%d-%H%M%S")
    run_id = open_mlflow_run(uri, cfg, run_name, data.fingerprint)

    progress = Queue(actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, uri, run_id, run_name, progress)
    stop = threading.Event()
    bar = threading.Thread(target=_progress_bar, args=(progress, stop, quiet), daemon=True)
    bar.start()
    try:
        return fit_and_record(trainer, cfg, uri, run_id, run_name)
    finally:
        stop.set()
        bar.join(timeout=5)
        ray.kill(progress.actor)


def _finish(uri: str, run_id: str, status: str) -> None:
    tracking.with_retry(lambda: tracking.client(uri).set_terminated(run_id, status))


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[-1] if text else ''}"
