"""`ganpipe tune`: a Ray Tune sweep whose trials are training runs, each a nested MLflow run.

A trial with one worker trains in the trial's own process (`trial.py`: no DDP to set up, about 10 s
less start-up per trial). A trial with several workers is a driver function holding no CPU (so trial
drivers never starve their own workers) that builds a TorchTrainer; Train's reports reach Tune
through TuneReportCallback. ASHA stops poor trials on the metric reported at each evaluation interval, comparing trials at equal cost
(`tune.cost`: training seconds by default, or images through D) rather than at equal iterations,
which cost more with k = 2 or a wider model. Each trial plans and reports its own length
(`planned_iterations`), so a k = 2 trial given in epochs ends as "finished", not "stopped early".
With `tune.time_budget_s` every trial still running ends itself at its last evaluation before the
sweep's end, with a checkpoint, as finished: a trial ASHA kept going is the sweep's to register.
Concurrency is derived from the cluster's CPUs and the per-trial worker count. Rerunning with the
same `tune.name` resumes the sweep: finished trials are not run again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_core.data.streamed import StreamedDataset

from ...config import TUNE_METRICS, Config, set_key
from ...config.plan import plan_run
from ...errors import UserError
from ...services import checkpoints, contract, names, tracking
from ...services.runtime import worker_resources
from ..train.driver import build_trainer, fit_and_record, open_mlflow_run, preflight
from ..train.loop import SWEEP_END
from .trial import in_trial_process, run_in_trial

ASHA_MAX_T = 10 ** 12  # trials end at their own planned length; the scheduler never cuts one at max_t
TUNE_STOP_SLACK_S = 60  # Tune stops what still runs this long after tune.time_budget_s


@dataclass
class SweepOutcome:
    name: str
    parent_run_id: str
    trials: list[dict]
    best: dict | None
    metric: str
    mode: str


def check_sweep(cfg: Config) -> None:
    """What a sweep needs beyond a valid config; raised before any trial starts."""
    if cfg.tune.metric == "label_fidelity" and not cfg.model.conditional:
        raise UserError("tune.metric='label_fidelity' needs model.conditional=true")
    if not cfg.eval.during_training:
        raise UserError("ganpipe tune needs eval.during_training=true: trials are scheduled on its metrics")
    if not cfg.tune.space:
        raise UserError("tune.space is empty: nothing to search")


def search_space(cfg: Config) -> dict[str, Any]:
    from ray import tune

    space = {}
    for key, entry in cfg.tune.space.items():
        if entry.choice is not None:
            space[key] = tune.choice(list(entry.choice))
        elif entry.uniform is not None:
            space[key] = tune.uniform(*entry.uniform)
        else:
            space[key] = tune.loguniform(*entry.loguniform)
    return space


def trial_config(base: dict, params: dict[str, Any]) -> Config:
    """The base config with a trial's sampled `section.key` values applied."""
    import copy

    tree = copy.deepcopy(base)
    for key, value in params.items():
        set_key(tree, key, value)
    return Config.model_validate(tree)


def trial_run_name(sweep: str, trial_id: str) -> str:
    """A trial's run name: its MLflow run's resume key and its folder under ray.storage_path."""
    return f"{sweep}-{trial_id}"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep gets besides its sampled parameters (through Tune's object store)."""
    base: dict  # the sweep's config as JSON; a trial's parameters are set over it
    uri: str  # the tracking store
    parent: str  # the sweep's MLflow run
    sweep: str  # the sweep's name
    deadline: float | None  # time.time() at the sweep's end
    data: "DataRef"
    workers: int  # per trial
    streamed: StreamedDataset | None  # the sweep's streamed data (its sample), for each trial's shards
    in_process: bool  # a one-worker trial trains in its own process


def _trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """One trial: a Ray Train run with its own MLflow run nested under the sweep's."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(setup.base, params)
    name = trial_run_name(setup.sweep, trial_id)
    cfg = cfg.model_copy(update={
        "ray": cfg.ray.model_copy(update={"num_workers": setup.workers}),
        "train": cfg.train.model_copy(update={"run_name": name}),
    })
    tags = {contract.PARENT_RUN: setup.parent, contract.SWEEP: setup.sweep, contract.TRIAL_ID: trial_id}
    run_id = open_mlflow_run(setup.uri, cfg, name, setup.data, "tune-trial", tags)
    if setup.in_process:
        run_in_trial(cfg, setup.uri, run_id, name, setup.deadline)
    else:
        fit_and_record(build_trainer(cfg, setup.uri, run_id, name, callbacks=[TuneReportCallback()],
                                     data=setup.streamed, deadline=setup.deadline),
                       cfg, setup.uri, run_id, name)


def _concurrency(cfg: Config) -> int:
    import ray

    per_trial = cfg.tune.workers_per_trial * cfg.ray.cpus_per_worker
    cpus = ray.cluster_resources().get("CPU", 0)
    fits = int(cpus // per_trial)
    if fits < 1:
        raise UserError(f"one trial needs {cfg.tune.workers_per_trial} workers x {cfg.ray.cpus_per_worker:g} CPU "
                        f"= {per_trial:g} CPU, but the Ray cluster has {cpus:g} CPU; lower tune.workers_per_trial")
    return min(fits, cfg.tune.max_concurrent_trials or fits)


def run_sweep(cfg: Config, verbose: bool = False, tags: dict | None = None) -> SweepOutcome:
    """Run (or resume) the sweep `cfg.tune` describes. Returns its trials (parameters, metric,
    iterations run against planned, MLflow run id) and the best trial that ran to its end."""
    check_sweep(cfg)
    name = cfg.tune.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"name": name})})
    with names.hold("sweep", name, cfg.ray.storage_path, "tune.name"):  # refused at once when held
        return _run_sweep(cfg, name, verbose, tags)


def _run_sweep(cfg: Config, name: str, verbose: bool, tags: dict | None) -> SweepOutcome:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    in_process = in_trial_process(cfg)
    # Train's cleanup of trials stopped by the scheduler needs the dashboard's state API.
    cfg, uri, data = preflight(cfg, verbose, dashboard=not in_process, stage="tune",
                                workers=cfg.tune.workers_per_trial)
    plan_run(cfg, data, cfg.tune.workers_per_trial)  # a batch too large for the data fails here, once
    concurrency = _concurrency(cfg)
    metric, mode = cfg.tune.metric, TUNE_METRICS[cfg.tune.metric]
    parent = open_mlflow_run(uri, cfg, name, data, "tune", tags)
    if cfg.tune.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr=cfg.tune.cost, max_t=ASHA_MAX_T, grace_period=cfg.tune.grace,
                                  reduction_factor=cfg.tune.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    if cfg.tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.seed)
    else:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=cfg.seed)
    budget = cfg.tune.time_budget_s
    # Trials end themselves at their last evaluation before the sweep's end, with a checkpoint, as
    # "finished"; Tune's own stop, a little later, only catches a trial that could not.
    deadline = time.time() + budget if budget else None
    setup = TrialSetup(cfg.model_dump(mode="json"), uri, parent, name, deadline,
                       DataRef(cfg.data.source, data.fingerprint, len(data), data.num_classes, data.image_shape),
                       cfg.tune.workers_per_trial, data if isinstance(data, StreamedDataset) else None, in_process)
    # A trial that trains in its own process holds its worker's resources; a trial driver of a TorchTrainer
    # asks for no CPU (a token of memory only), so its CPUs go to its workers.
    resources = worker_resources(cfg) if in_process else {"CPU": 0, "memory": 64 * 2**20}
    trainable = tune.with_resources(tune.with_parameters(_trial, setup=setup), resources)
    storage = cfg.ray.storage_path
    path = f"{storage}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=search_space(cfg),
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=cfg.tune.num_samples,
                                        scheduler=scheduler, search_alg=search_alg,
                                        max_concurrent_trials=concurrency,
                                        time_budget_s=budget + TUNE_STOP_SLACK_S if budget else None),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1 if verbose else 0,
                                      callbacks=[TrialLines(metric)],
                                      # a lost trial process restarts and resumes from its run directory
                                      failure_config=tune.FailureConfig(
                                          max_failures=cfg.ray.max_failures if in_process else 0)),
        )
    grid = tuner.fit()
    trials = summarize_trials(grid, uri, name, metric, cfg.tune.cost, storage)
    # The best trial among those that ran to their end: a trial stopped early was already judged worse
    # by the scheduler, and its last value comes from fewer iterations.
    done = [t for t in trials if t.get(metric) is not None and not t["stopped_early"] and not t["error"]]
    best = (min if mode == "min" else max)(done, key=lambda t: t[metric]) if done else None
    record_sweep(uri, parent, trials, metric, best)
    tracking.client(uri).set_terminated(parent, "FINISHED")
    return SweepOutcome(name, parent, trials, best, metric, mode)


@dataclass
class DataRef:
    """What a trial's MLflow run records of the sweep's data (no images travel to trials)."""

    source: str
    fingerprint: str
    n: int
    num_classes: int
    image_shape: tuple

    def __len__(self) -> int:
        return self.n


def finished(result: dict) -> bool:
    """A trial ran to its end: its last report is at its own planned length, or its own stopping rule
    (train.target, train.patience, train.time_budget_s) ended it."""
    it, planned = int(result.get("iteration", 0) or 0), int(result.get("planned_iterations", 0) or 0)
    return bool(result.get("ended")) or (planned > 0 and it >= planned)


def _trial_lines_class():
    from ray.tune import Callback

    class TrialLines(Callback):
        """One line per trial as it ends."""

        def __init__(self, metric: str):
            self.metric = metric

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            it = int(r.get("iteration", 0) or 0)
            how = "finished" if finished(r) else "stopped early"
            why = " (the sweep's time budget)" if r.get(SWEEP_END) else ""
            value = r.get(self.metric)
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
            print(f"tune: trial {trial.trial_id} {how} at iteration {it}{why}: {self.metric}={shown}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"tune: trial {trial.trial_id} failed (see {trial.local_path})", flush=True)

    return TrialLines


def TrialLines(metric: str):  # noqa: N802 - built lazily so that importing this module needs no Ray
    return _trial_lines_class()(metric)


def summarize_trials(grid, uri: str, sweep: str, metric: str, cost: str, storage: str) -> list[dict]:
    """One row per trial: its parameters, its last metric, iterations run and planned, its MLflow run id."""
    c = tracking.client(uri)
    exp_ids = [e.experiment_id for e in c.search_experiments()]
    exp_runs = c.search_runs(exp_ids, contract.filter_eq(contract.SWEEP, sweep))
    by_trial = {r.data.tags.get(contract.TRIAL_ID): r for r in exp_runs}
    rows = []
    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id")
        run = by_trial.get(trial_id)
        if run is not None and not finished(m) and finished(run.data.metrics):
            # The scheduler's stop, decided at an earlier report, reached the trial after its workers
            # had logged their final iteration: the run's own record says it ran to its end.
            m = {**m, **{k: run.data.metrics[k] for k in ("iteration", metric, cost) if k in run.data.metrics}}
            m["ended"] = 1
        rows.append({"trial_id": trial_id, "run_id": run.info.run_id if run else None,
                     **{k: v for k, v in (result.config or {}).items()}, metric: m.get(metric),
                     "iterations": int(m.get("iteration", 0) or 0),
                     "planned_iterations": int(m.get("planned_iterations", 0) or 0),
                     "cost": m.get(cost),
                     "stopped_early": not finished(m) and result.error is None,
                     "error": str(result.error).splitlines()[0] if result.error else None})
        if run is not None:
            _close_trial_run(c, run, rows[-1], m, f"{storage}/{trial_run_name(sweep, trial_id)}")
    return rows


def _close_trial_run(c, run, row: dict, m: dict, run_dir: str) -> None:
    """The trial's MLflow run says how the trial ended, whichever way its driver was stopped: a stop
    reaches it either as a killed actor (the run left RUNNING) or as an error out of fit (left FAILED)."""
    run_id, status = run.info.run_id, run.info.status
    if finished(m):
        if run.data.tags.get(contract.STOPPED_EARLY):
            c.delete_tag(run_id, contract.STOPPED_EARLY)  # interrupted before, resumed to its end
        if status != "FINISHED":  # stopped by the scheduler at its very last report: it ran to its end
            _complete(c, run_id, run_dir, int(m["iteration"]))
    elif row["stopped_early"]:
        c.set_tag(run_id, contract.STOPPED_EARLY, "true")
        if status != "KILLED":
            c.set_terminated(run_id, "KILLED")


def _complete(c, run_id: str, run_dir: str, iteration: int) -> None:
    """Record a trial that reached its planned length as a finished run, with its final checkpoint."""
    from ray.train import Checkpoint

    folder = f"{run_dir}/{checkpoints.folder_name(iteration)}"
    if not names.is_local(run_dir) or Path(folder).is_dir():
        with Checkpoint(folder).as_directory() as local:  # a download when the storage is s3://
            state = Path(local) / "state.pt"
            if state.is_file():
                c.log_artifact(run_id, str(state), contract.CHECKPOINT_DIR)
    c.set_terminated(run_id, "FINISHED")


def record_sweep(uri: str, parent: str, trials: list[dict], metric: str, best: dict | None) -> None:
    """The parent run gets the trial table, a plot of the metric against the hyperparameters, totals."""
    import tempfile

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = tracking.client(uri)
    keys = [k for k in (trials[0] if trials else {}) if "." in k]
    with tempfile.TemporaryDirectory() as tmp:
        header = ["trial_id", *keys, metric, "iterations", "planned_iterations", "stopped_early", "run_id"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for t in trials:
            lines.append("| " + " | ".join(_fmt(t.get(h)) for h in header) + " |")
        (Path(tmp) / "trials.md").write_text("\n".join(lines) + "\n")
        fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3), squeeze=False)
        for ax, key in zip(axes[0], keys):
            pts = [(t[key], t[metric]) for t in trials if t.get(metric) is not None]
            xs = [p[0] if isinstance(p[0], (int, float)) else str(p[0]) for p in pts]
            ax.scatter(xs, [p[1] for p in pts])
            ax.set_xlabel(key)
            if isinstance(xs[0] if xs else 0, float) and key.split(".")[-1].startswith("lr"):
                ax.set_xscale("log")
            ax.set_ylabel(metric)
        fig.tight_layout()
        fig.savefig(Path(tmp) / "metric_vs_hyperparameters.png", dpi=80)
        plt.close(fig)
        for f in ("trials.md", "metric_vs_hyperparameters.png"):
            c.log_artifact(parent, str(Path(tmp) / f), contract.SWEEP_DIR)
    totals = {"trials": len(trials), "trial_iterations_run": sum(t["iterations"] for t in trials),
              "trial_iterations_full": sum(t["planned_iterations"] for t in trials),
              "trials_stopped_early": sum(bool(t["stopped_early"]) for t in trials)}
    if best is not None:
        totals[f"best_{metric}"] = best[metric]
        c.set_tag(parent, contract.BEST_RUN_ID, str(best["run_id"]))
    tracking.log_metrics(uri, parent, totals, step=0)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
