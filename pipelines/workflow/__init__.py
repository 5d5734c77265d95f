"""`ganpipe run`: the workflow, from data to dataset: train (or tune) -> evaluate -> register ->
generate, the stages of `workflow.stages`, in that order.

The workflow is one MLflow run (stage `workflow`); each stage is an MLflow run nested under it,
tagged with its stage and a hash of its inputs. Stages hand each other URIs only (a run id, a
checkpoint, `models:/NAME/VERSION`, a dataset folder). When a stage ends, the parent run records
its inputs and outputs (tag `ganpipe.done.STAGE`); a rerun with the same `workflow.name` skips the
stages that finished with the same inputs and resumes the one that was running (training from its
newest checkpoint, generation from its complete files). A stage whose input nothing provides
(generate with no model) is refused before anything runs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import time

from ..config import Config, stage_inputs
from ..errors import UserError
from ..services import contract


def check_stages(cfg: Config) -> None:
    """Every stage's input is made by an earlier stage or given; refused before anything runs."""
    stages, model = cfg.workflow.stages, cfg.workflow.model
    makes_model = "train" in stages or "tune" in stages
    for stage in ("evaluate", "generate"):
        if stage in stages and not makes_model and not model:
            raise UserError(f"workflow.stages={stages}: {stage} needs a generator; add train or tune, or set "
                            f"workflow.model (models:/NAME@ALIAS, runs:/ID or a checkpoint)")
    if "register" in stages and not makes_model:
        raise UserError(f"workflow.stages={stages}: register needs a training run; add train or tune")


def _hash(what: dict) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Workflow:
    """The parent MLflow run and what it records of each stage."""

    def __init__(self, cfg: Config, uri: str, name: str):
        from ..services import contract, tracking

        self.warmed = None  # a training stage's warming task (`warm_start`), when the workflow began one
        self.c, self.contract, self.uri, self.name = tracking.client(uri), contract, uri, name
        exp = tracking.experiment_id(uri, cfg.mlflow.experiment)
        found = self.c.search_runs([exp], f"{contract.filter_eq(contract.WORKFLOW, name)} and "
                                          f"{contract.filter_eq(contract.STAGE, 'workflow')}", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.c.update_run(self.run_id, status="RUNNING")
        else:
            tags = {contract.WORKFLOW: name, contract.STAGE: "workflow", contract.RUN_DISPLAY_NAME: name}
            self.run_id = self.c.create_run(exp, tags=tags, run_name=name).info.run_id
        self.done = {k[len(contract.DONE_PREFIX):]: json.loads(v)
                     for k, v in self.c.get_run(self.run_id).data.tags.items() if k.startswith(contract.DONE_PREFIX)}

    def tags(self, inputs: str) -> dict:
        """Tags of a stage's own MLflow run: nested under the workflow, with its input hash."""
        c = self.contract
        return {c.PARENT_RUN: self.run_id, c.WORKFLOW: self.name, c.INPUTS: inputs}

    def finished(self, stage: str, inputs: str) -> dict | None:
        """The outputs of `stage` when it already finished with these inputs."""
        rec = self.done.get(stage)
        return rec["out"] if rec and rec.get("inputs") == inputs else None

    def record(self, stage: str, inputs: str, out: dict) -> None:
        self.done[stage] = {"inputs": inputs, "out": out}
        self.c.set_tag(self.run_id, f"{self.contract.DONE_PREFIX}{stage}", json.dumps(self.done[stage]))

    @contextlib.contextmanager
    def stage_run(self, stage: str, inputs: str, params: dict):
        """The MLflow run of a stage that has none of its own (evaluate, register), open around its
        work so that the run's duration is the stage's; the block fills the yielded `metrics` and
        `tags`, logged when it ends. A block that raises leaves the run FAILED."""
        from mlflow.entities import Metric, Param, RunTag

        c = self.contract
        run = self.c.create_run(self.c.get_run(self.run_id).info.experiment_id,
                                tags={**self.tags(inputs), c.STAGE: stage,
                                      c.RUN_DISPLAY_NAME: f"{self.name}-{stage}"})
        run_id = run.info.run_id
        self.c.log_batch(run_id, params=[Param(k, contract.param_value(v)) for k, v in params.items()])
        result = {"run_id": run_id, "metrics": {}, "tags": {}}
        try:
            yield result
        except BaseException:
            self.c.set_terminated(run_id, "FAILED")
            raise
        now = int(time.time() * 1000)
        self.c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in result["metrics"].items()
                                          if isinstance(v, (int, float))],
                         tags=[RunTag(k, str(v)) for k, v in result["tags"].items()])
        self.c.set_terminated(run_id, "FINISHED")

    def close(self, status: str, summary: dict) -> None:
        self.c.set_tag(self.run_id, contract.SUMMARY, contract.tag_value(json.dumps(summary, default=str)))
        self.c.set_terminated(self.run_id, status)


def run_workflow(cfg: Config, verbose: bool = False, say=print) -> dict:
    """Run (or resume) the stages of `cfg.workflow.stages`; returns the URIs each stage made. A
    workflow name is held by one live process at a time."""
    from ..services import names

    check_stages(cfg)
    name = cfg.workflow.name or time.strftime("run-%Y%m%d-%H%M%S")
    with names.hold("workflow", name, cfg.ray.storage_path, "workflow.name"):  # refused at once when held
        return _run_workflow(cfg, name, verbose, say)


def _run_workflow(cfg: Config, name: str, verbose: bool, say) -> dict:
    from ..services import tracking

    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    warmed = None
    if cfg.workflow.stages[:1] == ["train"] and not cfg.workflow.name:  # a new workflow that trains first
        from ..stages.train.driver import warm_start

        warmed = warm_start(cfg, verbose)  # Ray and the worker's imports while the workflow's run opens
    flow = Workflow(cfg, uri, name)
    flow.warmed = warmed
    out: dict = {"workflow": name, "workflow_run_id": flow.run_id}
    try:
        for stage in cfg.workflow.stages:
            out.update(_STAGES[stage](cfg, flow, out, verbose, say))
    except BaseException:
        flow.close("FAILED", out)
        raise
    flow.close("FINISHED", out)
    say_summary(out, say)
    return out


def _skip(say, stage: str, flow: Workflow) -> None:
    say(f"{stage}: done before in workflow {flow.name} with the same inputs; skipped")


# What the evaluation (the first torch.optim step of CAS's classifiers) and the registration
# (torch.export) import first, imported while the run trains (BENCHMARKS.md, "The evaluation's first
# imports made while the run trains"); and what the registration's first model save checks first
# (BENCHMARKS.md, "The registration's requirement check made while the run trains").
LATER_IMPORTS = ("torch._dynamo", "torch.export")
LATER_REGISTER = ("pipelines.services.serving:check_requirements_ahead",)


def _train(cfg: Config, flow: Workflow, out: dict, verbose: bool, say) -> dict:
    from ..stages.train import run_training

    inputs = _hash(stage_inputs(cfg, "train"))
    done = flow.finished("train", inputs)
    if done:
        _skip(say, "train", flow)
        return done
    run_name = cfg.train.run_name or f"{flow.name}-train-{inputs[:8]}"  # the same inputs resume this run
    tcfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"run_name": run_name})})
    stages = set(cfg.workflow.stages)
    later = LATER_IMPORTS if {"evaluate", "register"} & stages else ()
    if "register" in stages:
        later += LATER_REGISTER
    res = run_training(tcfg, verbose=verbose, tags=flow.tags(inputs), warmed=flow.warmed, later_imports=later)
    say_training(res, say)
    made = {"run_id": res.run_id, "checkpoint": res.checkpoint, "train_metrics": _headline(res.metrics)}
    if res.end.ended_on_budget:
        made["ended_on_budget"] = {"iteration": res.end.iteration,
                                   "budget_s": (res.config or cfg).train.time_budget_s}
    flow.record("train", inputs, made)
    return made


def _tune(cfg: Config, flow: Workflow, out: dict, verbose: bool, say) -> dict:
    from ..stages.tune import run_sweep

    inputs = _hash(stage_inputs(cfg, "tune"))
    done = flow.finished("tune", inputs)
    if done:
        _skip(say, "tune", flow)
        return done
    sweep = cfg.tune.name or f"{flow.name}-tune-{inputs[:8]}"
    scfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"name": sweep})})
    res = run_sweep(scfg, verbose, tags=flow.tags(inputs))
    if res.best is None:
        raise UserError(f"tune: no trial of sweep {sweep} ran to its end with {res.metric}; nothing to evaluate")
    say(f"tune: best trial {res.best['trial_id']} {res.metric}={res.best[res.metric]:.4g}; "
        f"MLflow run {res.best['run_id']}")
    made = {"run_id": res.best["run_id"], "checkpoint": f"runs:/{res.best['run_id']}", "sweep": sweep}
    flow.record("tune", inputs, made)
    return made


def _model_of(cfg: Config, out: dict) -> str:
    return out.get("model") or out.get("checkpoint") or cfg.workflow.model


def _evaluate(cfg: Config, flow: Workflow, out: dict, verbose: bool, say) -> dict:
    from gan_core.metrics import quality_bar

    from ..stages.evaluate import evaluate, table

    model = out.get("checkpoint") or cfg.workflow.model
    inputs = _hash({"model": model, **stage_inputs(cfg, "evaluate")})
    done = flow.finished("evaluate", inputs)
    if done:
        _skip(say, "evaluate", flow)
        return done
    with flow.stage_run("evaluate", inputs, {"model": model}) as run:
        res = evaluate(cfg, model, None, f"{cfg.workflow.reports}/{flow.name}")
        metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}
        run.update(metrics=metrics, tags={contract.REPORT: res.report})
    run_id = run["run_id"]
    say_evaluation(res, table, say)
    budget = out.get("ended_on_budget")
    missed = [name for name, (_, _, met) in quality_bar(res.metrics).items() if not met]
    if budget and missed:
        say(f"evaluate: {', '.join(missed)} below the bar, and training ended on its time budget "
            f"({budget['budget_s']:g} s, iteration {int(budget['iteration']):,}); a slower machine trains fewer "
            f"iterations in it: a larger train.time_budget_s trains further (docs/quality.md)")
    made = {"report": str(res.report), "metrics": _headline(metrics), "evaluate_run_id": run_id}
    flow.record("evaluate", inputs, made)
    return made


def _register(cfg: Config, flow: Workflow, out: dict, verbose: bool, say) -> dict:
    from ..stages.register import register

    inputs = _hash({"run": out["run_id"], **stage_inputs(cfg, "register")})
    done = flow.finished("register", inputs)
    if done:
        _skip(say, "register", flow)
        return done
    with flow.stage_run("register", inputs, {"run_id": out["run_id"]}) as run:
        reg = register(cfg, out["run_id"], verbose=verbose)
        model = contract.model_uri(reg.name, reg.version)
        run["tags"].update({contract.MODEL_URI: model, contract.ALIAS: reg.alias})
    run_id = run["run_id"]
    say_registration(reg, say)
    made = {"model": model, "alias": reg.alias, "register_run_id": run_id}
    flow.record("register", inputs, made)
    return made


def _generate(cfg: Config, flow: Workflow, out: dict, verbose: bool, say) -> dict:
    from ..stages.evaluate import table
    from ..stages.generate import generate

    w = cfg.workflow
    model = _model_of(cfg, out)
    ref = contract.model_ref(model)
    dest = w.out or f"datasets/{flow.name}" + (f"-v{ref[1]}" if ref and ref[1] else "")
    inputs = _hash({"model": model, "out": dest, **stage_inputs(cfg, "generate")})
    done = flow.finished("generate", inputs)
    if done:
        _skip(say, "generate", flow)
        return done
    res = generate(cfg, model, w.rows, dest, w.labels, cfg.seed, verbose=verbose, tags=flow.tags(inputs))
    say(table(res.metrics))
    say(f"generate: {res.rows} rows in {len(res.files)} files, {res.written_now()}; dataset {res.out}; "
        f"card {res.out}/README.md")
    made = {"dataset": str(res.out), "rows": res.rows, "generate_run_id": res.run_id}
    flow.record("generate", inputs, made)
    return made


_STAGES = {"train": _train, "tune": _tune, "evaluate": _evaluate, "register": _register, "generate": _generate}


def _headline(metrics: dict) -> dict:
    keys = ("fd", "precision", "recall", "coverage", "label_fidelity", "cas_ratio", "iteration")
    return {k: metrics[k] for k in keys if isinstance(metrics.get(k), (int, float))}


def say_summary(out: dict, say=print) -> None:
    """What the workflow made, in one block."""
    say(f"run: workflow {out['workflow']} (MLflow run {out['workflow_run_id']}) made:")
    if "run_id" in out:
        say(f"run:   training run {out['run_id']}, checkpoint {out.get('checkpoint')}")
    if "model" in out:
        say(f"run:   model {out['model']} ({out.get('alias')})")
    if "metrics" in out:
        say("run:   " + ", ".join(f"{k}={v:.4g}" for k, v in out["metrics"].items()))
    if "dataset" in out:
        say(f"run:   dataset {out['dataset']} ({out['rows']} rows)")


def say_training(out, say=print) -> None:
    m = out.metrics
    keys = ("loss_d", "loss_g", "d_real", "d_fake", "value", "fd", "label_fidelity")
    summary = ", ".join(f"{k}={m[k]:.4g}" for k in keys if k in m)
    if out.end.status == "stopped":
        say(f"train: stopped at iteration {m.get('iteration', '?')} of {m.get('planned_iterations', '?')}: "
            f"{out.end.reason} ({summary})")
    else:
        say(f"train: finished {m.get('iteration', '?')} iterations ({summary})")
    say(f"train: MLflow run {out.run_id} (run name {out.run_name})")
    say(f"train: checkpoints in {out.storage}; the run's checkpoint (best by the evaluation metric, the newest "
        f"within train.tolerance of it; else newest): {out.checkpoint}")


def say_evaluation(res, table, say=print) -> None:
    say(table(res.metrics))
    where = f"; logged to MLflow run {res.run_id}" if res.run_id else ""
    say(f"evaluate: report {res.report}{where}")


def say_registration(reg, say=print) -> None:
    uri = contract.model_uri(reg.name, reg.version, reg.alias)
    state = f"is {reg.alias}" if reg.alias else "holds no alias now"
    say(f"register: {reg.name} version {reg.version} {state} ({reg.reason}); "
        f"load it with mlflow.pytorch.load_model('{uri}')")
