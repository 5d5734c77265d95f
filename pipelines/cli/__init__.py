"""`ganpipe` command line: the parser is built from one command table; a user error is one line on
stderr and exit code 2."""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from dataclasses import dataclass, field

from ..errors import UserError


@dataclass(frozen=True)
class Command:
    help: str
    config: bool = True  # takes [CONFIG] and --set
    args: tuple = field(default_factory=tuple)  # (flags, kwargs) pairs for add_argument


COMMANDS: dict[str, Command] = {
    "run": Command("the workflow: train (or tune) -> evaluate -> register -> generate, resumable by name"),
    "train": Command("one Ray Train run (DDP over N workers, checkpoints, MLflow tracking)"),
    "tune": Command("one Ray Tune sweep over k, learning rates and architectures"),
    "evaluate": Command("metrics for a generator (--model URI) or a dataset (--dataset DIR)", args=(
        (("--model",), {"help": "checkpoint folder or state.pt, runs:/RUN_ID, a run id, or models:/NAME@ALIAS"}),
        (("--dataset",), {"help": "a dataset folder of Parquet files (the Hugging Face image layout)"}),
        (("--out",), {"help": "report folder (default: eval_reports/TIMESTAMP)"}),
    )),
    "register": Command("register a run's generator in the MLflow registry", args=(
        (("--run",), {"required": True, "help": "MLflow run id of a training run"}),
        (("--alias",), {"default": "champion", "help": "alias to compete for (default: champion)"}),
    )),
    "generate": Command("write a labeled synthetic dataset (Parquet, on Ray Data) from a generator", args=(
        (("--model",), {"required": True, "help": "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID, a run "
                                                  "id, or a checkpoint"}),
        (("--rows",), {"type": int, "help": "rows in all (optional with explicit --labels counts)"}),
        (("--out",), {"required": True, "help": "the dataset folder"}),
        (("--labels",), {"default": "balanced", "help": "balanced (default), proportional, or counts like "
                                                        "0=500,3=2000"}),
        (("--seed",), {"type": int, "default": 0, "help": "row i depends on (seed, i) only (default 0)"}),
        (("--overwrite",), {"action": "store_true", "help": "replace a different dataset already in --out"}),
        (("--rejection",), {"choices": ["drs"], "help": "discriminator rejection sampling (needs the run's D)"}),
        (("--min-confidence",), {"type": float, "help": "keep rows the verifier labels as requested with at "
                                                        "least this confidence"}),
    )),
    "submit": Command("run the workflow as a job on a Ray cluster (Ray Jobs API), or act on a job", args=(
        (("--address",), {"required": True, "help": "the cluster's dashboard URL, http://HEAD:8265"}),
        (("--no-wait",), {"action": "store_true", "help": "return once submitted instead of streaming the logs"}),
        (("--env",), {"action": "append", "default": [], "metavar": "NAME=VALUE",
                      "help": "an environment variable for the job (repeatable), e.g. MLFLOW_TRACKING_URI=..."}),
        (("--status",), {"metavar": "JOB_ID", "help": "print a job's status"}),
        (("--logs",), {"metavar": "JOB_ID", "help": "print a job's logs"}),
        (("--stop",), {"metavar": "JOB_ID", "help": "stop a job"}),
    )),
    "ui": Command("a web page: generators, Try it, datasets, and a form that starts a batch", args=(
        (("--host",), {"default": "127.0.0.1", "help": "interface to bind (default 127.0.0.1; any other needs a token)"}),
        (("--port",), {"type": int, "default": 8000, "help": "port (default 8000)"}),
        (("--data",), {"action": "append", "default": [], "metavar": "DIR",
                       "help": "a folder of datasets (repeatable; default: datasets); batches are written to the first"}),
        (("--token",), {"help": "the token a browser must present (default: $GANPIPE_UI_TOKEN)"}),
        (("--mlflow",), {"action": "store_true", "help": "also serve MLflow's own UI on the next port"}),
        (("--address",), {"help": "a Ray cluster's dashboard URL: batches run there as jobs"}),
    )),
    "config": Command("print the resolved config, each key with its meaning", args=(
        (("--markdown",), {"action": "store_true", "help": "print the reference of every key (schema default, "
                                                         "the quick preset's value, meaning) as Markdown: "
                                                         "docs/config-reference.md"}),
    )),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganpipe", description="Train GANs on Ray, track them in MLflow, "
                                     "and turn them into labeled synthetic datasets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and Ray's own logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
        if cmd.config:
            p.add_argument("config", nargs="?", default=None, help="YAML config file or preset name (default: quick)")
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key, e.g. --set train.k=2 (repeatable)")
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
    return parser


# Whether the command runs with -v (its Ray then prints the workers' logs until the end).
_verbose = False


def main(argv: list[str] | None = None) -> int:
    global _verbose
    parser = build_parser()
    args = parser.parse_args(argv)
    _verbose = bool(getattr(args, "verbose", False))
    if args.command is None:
        parser.print_help()
        return 2
    if not getattr(args, "verbose", False):
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # when mlflow was imported already
    from gan_core.data import DataError

    try:
        from . import commands

        return getattr(commands, args.command)(args)
    except (DataError, UserError) as e:
        print(f"ganpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ganpipe {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `ganpipe` command and `python -m pipelines.cli`: `main`, then the process ends without
    tearing its modules down one by one (torch, Ray, MLflow, pyarrow: about 2 s on 2 cores,
    BENCHMARKS.md). First everything a normal exit does before that: output flushed, the threads
    Python waits for joined (`threading._shutdown`, as the interpreter calls it), every exit handler
    run (Ray's shutdown, logging's flush, temporary folders removed); then `os._exit` with main's code.
    Ray is shut down first, promptly (`runtime.stop_ray`).
    An exception leaves the normal way, with its traceback, and so does a process under a tracer or
    profiler (coverage, a debugger, `python -m cProfile`), which writes its results after the program."""
    code = main()
    from ..services.runtime import stop_ray

    stop_ray(logs_to_driver=_verbose)
    if sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
