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


def run(args: argparse.Namespace) -> int:
    """The workflow as far as its stages exist: train, then evaluate the final checkpoint."""
    cfg = load_config(args.config, args.overrides)
    out = _train(cfg, getattr(args, "verbose", False))
    _evaluate(cfg, out.checkpoint, None, f"eval_reports/{out.run_name}")
    print("run: register and generate are not built yet", file=sys.stderr)
    return 0
