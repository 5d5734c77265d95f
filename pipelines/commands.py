"""The CLI's sub-commands; each returns an exit code."""
from __future__ import annotations

import argparse
import sys

from .config import load_config


def train(args: argparse.Namespace) -> int:
    from .train import run_training

    cfg = load_config(args.config, args.overrides)
    out = run_training(cfg, verbose=getattr(args, "verbose", False))
    m = out.metrics
    summary = ", ".join(f"{k}={m[k]:.4g}" for k in ("loss_d", "loss_g", "d_real", "d_fake", "value") if k in m)
    print(f"train: finished {m.get('iteration', '?')} iterations ({summary})")
    print(f"train: MLflow run {out.run_id} (run name {out.run_name})")
    print(f"train: checkpoints in {out.storage}; latest {out.checkpoint}")
    return 0


def run(args: argparse.Namespace) -> int:
    """The workflow as far as its stages exist: train now; evaluate, register, generate follow."""
    code = train(args)
    if code == 0:
        print("run: evaluate, register and generate are not built yet; the trained run is tracked in MLflow",
              file=sys.stderr)
    return code
