"""The CLI's sub-commands; each returns an exit code."""
from __future__ import annotations

import argparse
import sys

from .config import load_config


def _train(cfg, verbose: bool):
    from .train import run_training

    out = run_training(cfg, verbose=verbose)
    m = out.metrics
    keys = ("loss_d", "loss_g", "d_real", "d_fake", "value", "fd", "label_fidelity")
    summary = ", ".join(f"{k}={m[k]:.4g}" for k in keys if k in m)
    print(f"train: finished {m.get('iteration', '?')} iterations ({summary})")
    print(f"train: MLflow run {out.run_id} (run name {out.run_name})")
    print(f"train: checkpoints in {out.storage}; latest {out.checkpoint}")
    return out


def _evaluate(cfg, model: str | None, dataset: str | None, out_dir: str | None) -> None:
    from .evaluate import evaluate as run_evaluation, table

    res = run_evaluation(cfg, model, dataset, out_dir)
    print(table(res.metrics))
    where = f"; logged to MLflow run {res.run_id}" if res.run_id else ""
    print(f"evaluate: report {res.report}{where}")


def train(args: argparse.Namespace) -> int:
    _train(load_config(args.config, args.overrides), getattr(args, "verbose", False))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    _evaluate(load_config(args.config, args.overrides), args.model, args.dataset, args.out)
    return 0


def _register(cfg, run_id: str, alias: str = "champion") -> None:
    from .register import register as run_register

    reg = run_register(cfg, run_id, alias)
    print(f"register: {reg.name} version {reg.version} is {reg.alias} ({reg.reason}); "
          f"load it with mlflow.pytorch.load_model('models:/{reg.name}@{reg.alias}')")


def _tune(cfg, verbose: bool) -> str | None:
    from .tune import run_sweep

    out = run_sweep(cfg, verbose)
    stopped = sum(bool(t["stopped_early"]) for t in out.trials)
    errors = sum(bool(t["error"]) for t in out.trials)
    print(f"tune: sweep {out.name}: {len(out.trials)} trials, {stopped} stopped early by the scheduler, "
          f"{errors} failed; MLflow parent run {out.parent_run_id}")
    if out.best is None:
        print("tune: no trial reported the metric; nothing to register", file=sys.stderr)
        return None
    params = ", ".join(f"{k}={_short(v)}" for k, v in out.best.items() if "." in k)
    print(f"tune: best trial {out.best['trial_id']} {out.metric}={out.best[out.metric]:.4g} ({params}); "
          f"MLflow run {out.best['run_id']}")
    return out.best["run_id"]


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tune(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    best = _tune(cfg, getattr(args, "verbose", False))
    if best and cfg.registry.register_after_tune:
        _register(cfg, best)
    return 0 if best else 1


def register(args: argparse.Namespace) -> int:
    _register(load_config(args.config, args.overrides), args.run, args.alias)
    return 0


def run(args: argparse.Namespace) -> int:
    """The workflow as far as its stages exist: train, evaluate the final checkpoint, register."""
    cfg = load_config(args.config, args.overrides)
    out = _train(cfg, getattr(args, "verbose", False))
    _evaluate(cfg, out.checkpoint, None, f"eval_reports/{out.run_name}")
    _register(cfg, out.run_id)
    print("run: generate is not built yet", file=sys.stderr)
    return 0
