"""`ganpipe train`: one Ray Train run of the worker loop, tracked as one MLflow run.

The driver validates everything it can before Ray starts (config, data, tracking store, worker
placement), opens (or, for a resumed run name, reopens) the MLflow run, runs TorchTrainer, and
logs the final checkpoint as an artifact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...config import Config, auto, flatten, with_absolute_paths
from ...config.build import class_names_note, feature_net, imbalance_note, load_data
from ...errors import UserError
from ...services import checkpoints, contract, names, tracking
from . import layout
from .loop import RunEnd, Stop
from .worker import WorkerTask, train_loop_per_worker


class TrainingError(UserError):
    """Training stopped (NaN loss, workers lost beyond max_failures); the message says where."""


@dataclass
class TrainOutcome:
    run_id: str
    run_name: str
    checkpoint: str | None
    metrics: dict
    storage: str
    end: RunEnd
    config: Config | None = None  # the run's config, with what `auto` derived


def open_mlflow_run(uri: str, cfg: Config, run_name: str, data, stage: str, extra_tags: dict | None = None) -> str:
    """The MLflow run for this run name: the existing one when resuming, else a new one with every
    config value as a param, the data as a dataset input and the contract's tags."""
    c = tracking.client(uri)
    exp_id = tracking.experiment_id(uri, cfg.mlflow.experiment)
    found = c.search_runs([exp_id], contract.filter_eq(contract.RUN_NAME, run_name), max_results=1)
    if found:
        run_id = found[0].info.run_id
        c.update_run(run_id, status="RUNNING")
        return run_id
    tags = {contract.RUN_NAME: run_name, contract.STAGE: stage, contract.DATA_FINGERPRINT: data.fingerprint,
            contract.RUN_DISPLAY_NAME: run_name, **(extra_tags or {})}
    commit = tracking.git_commit()
    if commit:
        tags[contract.GIT_COMMIT] = commit
    run = c.create_run(exp_id, tags=tags, run_name=run_name)
    from mlflow.entities import Param

    params = [Param(k, contract.param_value(v)) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        c.log_batch(run.info.run_id, params=params[i:i + 100])
    tracking.log_dataset_input(uri, run.info.run_id, cfg.data.source, data.fingerprint, cfg.data.source, "training",
                               {"images": len(data), "classes": data.num_classes,
                                "image_shape": list(data.image_shape)})
    return run.info.run_id


def _progress_bar(queue, stop: threading.Event, quiet: bool, started: threading.Event | None = None) -> None:
    """Drains rank 0's progress messages into one tqdm bar; sets `started` at the first."""
    from tqdm import tqdm

    bar = None
    while not stop.is_set() or not queue.empty():
        try:
            msg = queue.get(timeout=0.5)
        except Exception:
            continue
        if msg is None:  # the driver's wake-up at the run's end
            continue
        if started is not None:
            started.set()
        if bar is None:  # the first message is the run's start (a resumed run's part way): the rate counts from it
            bar = tqdm(total=msg["total"], initial=msg["iteration"], unit="it", disable=quiet, dynamic_ncols=True)
        bar.n = msg["iteration"]
        bar.total = msg["total"]
        if "loss_d" not in msg:
            continue
        bar.set_postfix(loss_d=f"{msg['loss_d']:.3f}", loss_g=f"{msg['loss_g']:.3f}",
                        D_x=f"{msg['d_real']:.2f}", D_Gz=f"{msg['d_fake']:.2f}", epoch=msg["epoch"],
                        **({"fd": f"{msg['fd']:.2f}"} if "fd" in msg else {}))
    if bar is not None:
        bar.close()


def _import_once_started(started: threading.Event, stop: threading.Event, modules: tuple[str, ...]) -> None:
    """Import `modules` once the run trains (its first progress message), unless it ends first: what the
    caller's next stages import, imported while the driver only waits. A `module:function` entry also
    calls that function of the module (without arguments): work the next stages would do first."""
    import importlib

    while not started.wait(0.5):
        if stop.is_set():
            return
    for name in modules:
        module, _, function = name.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as e:  # a later torch without it: the stage imports what it needs itself
            logging.getLogger(__name__).debug("not imported ahead: %s (%s)", name, e)
            continue
        if function:
            try:
                getattr(loaded, function)()
            except Exception as e:  # done ahead only: the stage does it again itself if it must
                logging.getLogger(__name__).debug("not done ahead: %s (%s)", name, e)


def stop_progress_bar(bar: threading.Thread, stop: threading.Event, queue) -> None:
    """End `_progress_bar` once the messages it has are drawn: a None message wakes its wait for the
    next one (up to 0.5 s) at once."""
    stop.set()
    if bar.is_alive():
        with contextlib.suppress(Exception):
            queue.put_nowait(None)
        bar.join(timeout=5)


def prepare_features(cfg: Config, data) -> None:
    """Cache the feature network of the training evaluation, so that workers and trials find it."""
    if cfg.eval.during_training:
        feature_net(cfg, *data.split(cfg.data.holdout_fraction, cfg.seed))


def preflight(cfg: Config, verbose: bool = False, dashboard: bool = False, say=print, stage: str = "train",
              workers: int | None = None):
    """Everything checked before Ray does work: paths made absolute, the tracking store reachable,
    the data loadable; then Ray started or joined, the keys `auto` leaves open derived (one line
    says what from what; `workers`: those sharing the global batch, default the per-CPU layout's) and
    the feature network cached. Returns (cfg, uri, data)."""
    from ...services.runtime import init_ray, resolve_num_workers

    cfg = with_absolute_paths(cfg)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    cfg, sized = auto.sized(cfg)
    data = load_data(cfg)
    init_ray(cfg.ray.address, verbose, cfg.ray.connect_timeout_s, dashboard)
    device = auto.Device.of(cfg)
    cfg, derived = auto.derive(cfg, data, device, workers or resolve_num_workers(cfg))
    if sized or derived:
        say(f"{stage}: {auto.line(sized + derived, data, device)}")
    prepare_features(cfg, data)
    return cfg, uri, data


def build_trainer(cfg: Config, uri: str, run_id: str, run_name: str, progress=None, callbacks=(), data=None,
                  deadline: float | None = None):
    """The TorchTrainer of one training run; `cfg.ray.num_workers` must be resolved. Streamed `data`
    (a StreamedDataset) goes to the workers as one Ray Data shard each, its in-memory sample with them."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ...services.runtime import worker_resources

    from .stream import trainer_datasets

    storage = cfg.ray.storage_path  # made absolute by preflight (with_absolute_paths)
    datasets, data_config, rows = trainer_datasets(cfg, data)
    streamed = {"sample": data, "rows": rows} if datasets else None
    attribute, order = checkpoint_score(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, uri, run_id, run_name, progress, streamed, deadline).to_dict(),
        **({"datasets": datasets, "dataset_config": data_config} if datasets else {}),
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=worker_resources(cfg)),
        run_config=RunConfig(
            name=run_name, storage_path=storage, callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                               checkpoint_score_attribute=attribute, checkpoint_score_order=order),
        ),
    )


def loop_config(cfg: Config, uri: str, run_id: str, run_name: str, progress=None, streamed=None,
                deadline: float | None = None) -> WorkerTask:
    """The task every rank runs (see WorkerTask)."""
    return WorkerTask(cfg.model_dump(mode="json"), uri, run_id, f"{cfg.ray.storage_path}/{run_name}", progress,
                      streamed, deadline)


def checkpoint_score(cfg: Config) -> tuple[str, str]:
    """(metric, "min" | "max") by which a run's checkpoints are ranked and the best kept: the tuning
    metric when the training evaluation runs, else the iteration (the newest is best)."""
    from gan_core.metrics import TRAINING_METRICS

    if cfg.eval.during_training:
        return cfg.tune.metric, TRAINING_METRICS[cfg.tune.metric]
    return "iteration", "max"


def fit_and_record(trainer, cfg: Config, uri: str, run_id: str, run_name: str) -> TrainOutcome:
    """Run the trainer; on success log the final checkpoint and close the MLflow run."""
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError and friends: name the run and the cause
        raise run_failed(uri, run_id, run_name, e, f"{cfg.ray.storage_path}/{run_name}") from None
    kept = with_latest([(ckpt, m) for ckpt, m in getattr(result, "best_checkpoints", None) or []],
                       result.checkpoint, dict(result.metrics or {}))
    return record_outcome(cfg, uri, run_id, run_name, result.return_value or {}, dict(result.metrics or {}),
                          kept, result.checkpoint)


def record_from_dir(cfg: Config, uri: str, run_id: str, run_name: str, returned: dict, metrics: dict,
                    run_dir: str) -> TrainOutcome:
    """A run trained outside Ray Train (`DirSession`) recorded as `fit_and_record` records a
    TorchTrainer's: its checkpoints are the run directory's, each with the metrics reported at it."""
    from ray.train import Checkpoint

    folders = checkpoints.checkpoint_folders(run_dir)
    kept = [(Checkpoint(str(f)), checkpoints.reported_metrics(f)) for f in folders]
    return record_outcome(cfg, uri, run_id, run_name, returned, metrics, kept,
                          Checkpoint(str(folders[0])) if folders else None)


def in_one_task(cfg: Config, laid_out: bool) -> bool:
    """Whether a run trains as one Ray task instead of a TorchTrainer: `ray.layout: auto` laid it out
    (`laid_out`: a local Ray, CPUs only, workers unset) as one worker, its checkpoints on a local path,
    its data in memory. One worker has no replicas to keep in sync, so Ray Train's controller, worker
    group and process group would be start-up and nothing else; the task holds the worker's CPUs, and
    Ray runs it again, resuming from the newest complete checkpoint, when its process dies (up to
    `ray.max_failures` times). Workers set in the config train under Ray Train, one or many."""
    return laid_out and cfg.ray.num_workers == 1 and _local_in_memory(cfg)


def _local_in_memory(cfg: Config) -> bool:
    """Checkpoints on a local path and the data in memory: what a run trained as one task needs."""
    from ...config.build import streams

    return names.is_local(cfg.ray.storage_path) and not streams(cfg)


def train_one_worker(task: dict, keep: int | None, score: tuple[str, str], tell=None) -> tuple[dict, dict]:
    """A run of one worker outside Ray Train (a Ray task, a sweep's trial): the worker's loop on a
    `DirSession` (`tell`: where each report also goes); returns (its RunEnd as a dict, the last metrics
    it reported)."""
    from .worker import DirSession, WorkerTask, run_worker

    session = DirSession(task["run_dir"], keep, score, tell)
    return run_worker(WorkerTask.from_dict(task), session), session.last


def warm_worker() -> int:
    """What a one-task run's worker imports first (torch, the worker's loop, MLflow), imported in an
    idle process of Ray's pool while the driver opens the run's MLflow record (`start_warming`); the
    process id."""
    import os

    import mlflow  # noqa: F401

    from . import worker  # noqa: F401

    return os.getpid()


def start_warming():
    """A zero-CPU task that imports the worker's modules (`warm_worker`) in one of Ray's idle worker
    processes. Ray hands a job's next task to the idle worker that ran its last one, so the run's task,
    submitted once this one is done (`fit_one_task`), starts in a process that has torch loaded: about
    2 s of imports overlap the driver's own work instead of following it."""
    import ray

    return ray.remote(warm_worker).options(num_cpus=0).remote()


def warm_start(cfg: Config, verbose: bool = False):
    """For a workflow that trains first: a local Ray started, and the worker's imports begun
    (`start_warming`), before the workflow opens its own MLflow run, so that the imports overlap that
    work; the warming task, or None when the run could not be one task (`in_one_task` before the
    layout: a cluster, GPUs, workers set, object storage, streamed data)."""
    from ...services.runtime import init_ray

    if not layout.applies(cfg) or not _local_in_memory(cfg):
        return None
    init_ray(cfg.ray.address, verbose, cfg.ray.connect_timeout_s)
    return start_warming()


def fit_one_task(cfg: Config, uri: str, run_id: str, run_name: str, progress, warmed=None) -> TrainOutcome:
    """Train a one-worker run as one Ray task (`in_one_task`) and record it as a TorchTrainer's;
    `warmed`: the `start_warming` task, whose end the run's task waits for (see there)."""
    import ray

    if warmed is not None:
        ray.wait([warmed])
    remote = ray.remote(train_one_worker).options(num_cpus=cfg.ray.cpus_per_worker, max_retries=cfg.ray.max_failures,
                                                  retry_exceptions=False)
    task = loop_config(cfg, uri, run_id, run_name, progress)
    try:
        returned, metrics = ray.get(remote.remote(task.to_dict(), cfg.train.keep_checkpoints, checkpoint_score(cfg)))
    except Exception as e:  # the loop's error, or its process lost more often than ray.max_failures
        raise run_failed(uri, run_id, run_name, e, task.run_dir) from None
    return record_from_dir(cfg, uri, run_id, run_name, returned, metrics, task.run_dir)


def with_latest(kept: list, latest, metrics: dict) -> list:
    """Ray's best checkpoints (the top `keep_checkpoints` by score) and its latest one, which Ray keeps
    besides them, with the metrics it was reported with: the newest checkpoint within the tolerance
    is a candidate even when it is not among the top by score."""
    if latest is None or any(ckpt.path == latest.path for ckpt, _ in kept):
        return kept
    return [*kept, (latest, metrics)]


def record_outcome(cfg: Config, uri: str, run_id: str, run_name: str, returned: dict, metrics: dict,
                   kept: list, latest) -> TrainOutcome:
    """A run's end in MLflow: a NaN stop fails the run naming the last good checkpoint; otherwise the
    best of the `kept` (Checkpoint, metrics) pairs (else `latest`) is logged and the run is finished."""
    end = RunEnd.from_dict(returned)
    if end.status == "nan":
        _finish(uri, run_id, "FAILED")
        last = latest.path if latest else None
        raise TrainingError(f"run {run_name!r}: loss became NaN/inf at iteration {end.iteration} "
                            f"({end.values}); the last good checkpoint is kept at {last}")
    best = best_checkpoint(kept, cfg) or latest
    c = tracking.client(uri)
    ckpt = None
    if best is not None:
        with best.as_directory() as folder:  # a local folder, or a download from s3:// storage
            state = Path(folder) / "state.pt"
            if state.is_file():
                c.log_artifact(run_id, str(state), contract.CHECKPOINT_DIR)
                c.set_tag(run_id, contract.CHECKPOINT_ITERATION, str(checkpoints.iteration_of(best.path)))
        # What later stages load: the folder when it is local, else the run's logged copy of it.
        ckpt = best.path if names.is_local(cfg.ray.storage_path) else f"runs:/{run_id}"
        if names.is_local(cfg.ray.storage_path):  # `--model RUN_FOLDER` finds it
            checkpoints.record_handed_on(f"{cfg.ray.storage_path}/{run_name}", best.path)
    if end.status == "stopped":  # the rule as rank 0 judged it (every rank stopped with it)
        tags = c.get_run(run_id).data.tags
        if contract.STOP_KIND in tags:
            end = dataclasses.replace(end, stop=Stop(tags[contract.STOP_KIND], tags.get(contract.STOP_REASON, "")))
    _finish(uri, run_id, "FINISHED")
    return TrainOutcome(run_id, run_name, ckpt, metrics, f"{cfg.ray.storage_path}/{run_name}", end, cfg)


def best_checkpoint(kept: list, cfg: Config):
    """The checkpoint (Ray's Checkpoint) a run hands on: among the (checkpoint, metrics) pairs kept (the
    training evaluation runs at every checkpoint), the newest whose tune.metric is within
    `train.tolerance` of the best kept value (with tolerance 0, the best itself); None when none has it."""
    import math

    from gan_core.metrics import is_better, within

    metric = cfg.tune.metric
    if not cfg.eval.during_training:
        return None
    scored = [(ckpt, m[metric], m.get("iteration", 0)) for ckpt, m in kept
              if isinstance(m.get(metric), (int, float)) and math.isfinite(m[metric])]
    if not scored:
        return None
    best = scored[0][1]
    for _, value, _ in scored[1:]:
        if is_better(metric, value, best):
            best = value
    good = [(it, ckpt) for ckpt, value, it in scored if within(metric, value, best, cfg.train.tolerance)]
    return max(good, key=lambda pair: pair[0])[1]


def run_training(cfg: Config, verbose: bool = False, quiet: bool = False, tags: dict | None = None,
                 warmed=None, later_imports: tuple[str, ...] = ()) -> TrainOutcome:
    """`ganpipe train`: a config in; one Ray Train run (resumed when `train.run_name` exists) out, as
    its MLflow run id, run name, best (else newest) checkpoint folder, final metrics and the workers'
    result. `tags` go on a new MLflow run (a workflow's parent run and input hash); `warmed`: the
    workflow's `warm_start`; `later_imports`: modules the caller imports next (or `module:function`,
    work it does next), imported in the driver once the run trains (done before this returns)."""
    run_name = cfg.train.run_name or time.strftime("train-%Y%m%d-%H%M%S")
    with names.hold("run", run_name, cfg.ray.storage_path, "train.run_name"):  # refused at once when held
        return _run_training(cfg, run_name, verbose, quiet, tags, warmed, later_imports)


def _run_training(cfg: Config, run_name: str, verbose: bool, quiet: bool, tags: dict | None,
                  warmed=None, later_imports: tuple[str, ...] = ()) -> TrainOutcome:
    import ray
    from ray.util.queue import Queue

    from ...services.runtime import check_fits, resolve_num_workers

    cfg, uri, data = preflight(cfg, verbose, say=(lambda line: None) if quiet else print)
    for note in (class_names_note(cfg, data), imbalance_note(cfg, data)):
        if note and not quiet:
            print(f"train: {note}")
    laid_out = layout.applies(cfg)
    if warmed is not None:
        ray.wait([warmed])  # the layout's probe, when it runs, never beside the imports
    cfg = layout.choose(cfg, data, resolve_num_workers(cfg), f"{cfg.ray.storage_path}/{run_name}",
                        say=(lambda line: None) if quiet else print)
    workers = cfg.ray.num_workers
    check_fits(cfg, workers)
    one_task = in_one_task(cfg, laid_out)
    progress = Queue(actor_options={"num_cpus": 0})  # its actor has a process before the warming task takes one
    stop, started = threading.Event(), threading.Event()
    bar = threading.Thread(target=_progress_bar, args=(progress, stop, quiet, started), daemon=True)
    imports = threading.Thread(target=_import_once_started, args=(started, stop, later_imports), daemon=True)
    try:
        if one_task and warmed is None:  # after the layout's probe: never beside its timings
            warmed = start_warming()
        resumed = check_resumable(f"{cfg.ray.storage_path}/{run_name}", workers)
        if resumed is not None and not quiet:
            from ...config.plan import plan_run

            at = checkpoints.iteration_of(resumed)
            print(f"train: resuming training run {run_name} from checkpoint {at}, iteration {at:,} of "
                  f"{plan_run(cfg, data, workers).iterations:,}")
        run_id = open_mlflow_run(uri, cfg, run_name, data, "train", tags)
        trainer = None if one_task else build_trainer(cfg, uri, run_id, run_name, progress, data=data)
        bar.start()
        if later_imports:
            imports.start()
        if one_task:
            return fit_one_task(cfg, uri, run_id, run_name, progress, warmed)
        return fit_and_record(trainer, cfg, uri, run_id, run_name)
    finally:
        stop_progress_bar(bar, stop, progress)
        ray.kill(progress.actor)
        if imports.is_alive():
            imports.join()  # the caller's own imports never run beside these


def check_resumable(run_dir: str, world: int) -> Path | None:
    """Name every damaged checkpoint of a run being resumed and move it aside (out of Ray's list too);
    refuse when no good one is left. Returns the checkpoint the run resumes from (None: it starts)."""
    import sys

    good, damaged = checkpoints.scan(run_dir, world)
    if damaged and not good:
        raise TrainingError(f"every checkpoint of {run_dir} is damaged ({', '.join(p.name for p in damaged)}); "
                            f"remove {run_dir} to start over, or choose another train.run_name")
    moved = checkpoints.set_aside(run_dir, list(damaged))
    for (folder, found), dest in zip(damaged.items(), moved):
        print(f"train: warning: checkpoint {folder.name} is skipped ({'; '.join(found)}); moved to {dest}",
              file=sys.stderr)
    return good[0] if good else None


def _finish(uri: str, run_id: str, status: str) -> None:
    tracking.client(uri).set_terminated(run_id, status)


def run_failed(uri: str, run_id: str, run_name: str, e: BaseException, run_dir: str | None = None) -> TrainingError:
    """Mark the MLflow run failed; the one error that names the run and the root cause (a full disk
    under the run's storage: where, the checkpoint it was writing and the last good one)."""
    _finish(uri, run_id, "FAILED")
    cause = _root_cause(e)
    if run_dir and names.is_local(run_dir) and ("No space left on device" in cause or "Errno 28" in cause):
        return TrainingError(f"run {run_name!r}: {disk_full(run_dir)}")
    return TrainingError(f"run {run_name!r} failed: {cause}")


def disk_full(run_dir: str) -> str:
    """What a full disk under a run's folder left: the checkpoint cut short, the newest good one."""
    import os

    root = Path(run_dir)
    mount = next(p for p in (root, *root.parents) if p.exists())
    while not os.path.ismount(mount):
        mount = mount.parent
    good, damaged = checkpoints.scan(root, 1)
    writing = f"checkpoint {checkpoints.iteration_of(next(iter(damaged)))}" if damaged else "a checkpoint"
    last = f"the last good checkpoint is {good[0]}" if good else "no checkpoint was complete"
    return f"no space left on {mount} ({root}) while writing {writing}; {last}"


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[-1] if text else ''}"
