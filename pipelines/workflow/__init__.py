"""`ganpipe run`: the workflow: train, evaluate the final checkpoint, register its generator.

Stages hand each other URIs only (a run id, a checkpoint path)."""
from __future__ import annotations

from ..config import Config


def run_workflow(cfg: Config, verbose: bool = False, say=print) -> dict:
    """Train, evaluate and register with `cfg`; returns the URIs each stage made."""
    from ..stages.evaluate import evaluate, table
    from ..stages.register import register
    from ..stages.train import run_training

    out = run_training(cfg, verbose=verbose)
    say_training(out, say)
    res = evaluate(cfg, out.checkpoint, None, f"eval_reports/{out.run_name}")
    say_evaluation(res, table, say)
    reg = register(cfg, out.run_id)
    say_registration(reg, say)
    return {"run_id": out.run_id, "checkpoint": out.checkpoint, "report": str(res.report),
            "model": f"models:/{reg.name}/{reg.version}", "alias": reg.alias}


def say_training(out, say=print) -> None:
    m = out.metrics
    keys = ("loss_d", "loss_g", "d_real", "d_fake", "value", "fd", "label_fidelity")
    summary = ", ".join(f"{k}={m[k]:.4g}" for k in keys if k in m)
    w = out.worker_result or {}
    if w.get("status") == "stopped":
        say(f"train: stopped at iteration {m.get('iteration', '?')} of {m.get('planned_iterations', '?')}: "
            f"{w.get('reason')} ({summary})")
    else:
        say(f"train: finished {m.get('iteration', '?')} iterations ({summary})")
    say(f"train: MLflow run {out.run_id} (run name {out.run_name})")
    say(f"train: checkpoints in {out.storage}; the run's checkpoint (best by the evaluation metric, "
        f"else newest): {out.checkpoint}")


def say_evaluation(res, table, say=print) -> None:
    say(table(res.metrics))
    where = f"; logged to MLflow run {res.run_id}" if res.run_id else ""
    say(f"evaluate: report {res.report}{where}")


def say_registration(reg, say=print) -> None:
    say(f"register: {reg.name} version {reg.version} is {reg.alias} ({reg.reason}); "
        f"load it with mlflow.pytorch.load_model('models:/{reg.name}@{reg.alias}')")
