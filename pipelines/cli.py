"""`ganpipe` command line: one sub-command per stage, one clear line on stderr for user errors."""
from __future__ import annotations

import argparse
import os
import sys

from gan_core.data import DataError

from .errors import UserError

COMMANDS = {
    "run": "whole workflow: train -> evaluate -> register (generate to come)",
    "train": "one Ray Train run (DDP over N workers, checkpoints, MLflow tracking)",
    "tune": "one Ray Tune sweep over k, learning rates and architectures",
    "evaluate": "metrics for a generator (--model URI) or a dataset (--dataset DIR)",
    "register": "register a run's generator in the MLflow registry",
    "generate": "write a labeled synthetic dataset to Parquet",
    "ui": "MLflow UI on the configured tracking store",
}
NOT_BUILT = {"generate", "ui"}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML config file or preset name (default: quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.k=2 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganpipe", description="Train GANs on Ray, track them in MLflow, "
                                     "and turn them into labeled synthetic datasets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and Ray's own logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text + (" [not built yet]" if name in NOT_BUILT else ""))
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
        if name in ("run", "train", "tune", "evaluate", "register"):
            _config_args(p)
        if name == "register":
            p.add_argument("--run", required=True, help="MLflow run id of a training run")
            p.add_argument("--alias", default="champion", help="alias to compete for (default: champion)")
        if name == "evaluate":
            p.add_argument("--model", help="checkpoint folder or state.pt, runs:/RUN_ID, or a run id")
            p.add_argument("--dataset", help="a dataset folder of Parquet files (the Hugging Face image layout)")
            p.add_argument("--out", help="report folder (default: eval_reports/TIMESTAMP)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not getattr(args, "verbose", False):
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.command in NOT_BUILT:
        print(f"ganpipe {args.command}: not built yet", file=sys.stderr)
        return 2
    try:
        from . import commands

        return getattr(commands, args.command)(args)
    except (DataError, UserError) as e:
        print(f"ganpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ganpipe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
