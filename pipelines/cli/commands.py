"""The CLI's sub-commands: parse, call the stage or workflow, print; each returns an exit code."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import describe, load_config
from ..workflow import say_evaluation, say_registration, say_training


def _cfg(args: argparse.Namespace):
    return load_config(args.config, args.overrides)


def _verbose(args: argparse.Namespace) -> bool:
    return getattr(args, "verbose", False)


def train(args: argparse.Namespace) -> int:
    from ..stages.train import run_training

    say_training(run_training(_cfg(args), verbose=_verbose(args)))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ..stages.evaluate import evaluate as run_evaluation, table

    say_evaluation(run_evaluation(_cfg(args), args.model, args.dataset, args.out), table)
    return 0


def register(args: argparse.Namespace) -> int:
    from ..stages.register import register as run_register

    say_registration(run_register(_cfg(args), args.run, args.alias, _verbose(args)))
    return 0


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tune(args: argparse.Namespace) -> int:
    from ..stages.register import register as run_register
    from ..stages.tune import run_sweep

    cfg = _cfg(args)
    out = run_sweep(cfg, _verbose(args))
    stopped = sum(bool(t["stopped_early"]) for t in out.trials)
    errors = sum(bool(t["error"]) for t in out.trials)
    print(f"tune: sweep {out.name}: {len(out.trials)} trials, {stopped} stopped early by the scheduler, "
          f"{errors} failed; MLflow parent run {out.parent_run_id}")
    if out.best is None:
        print("tune: no trial ran to its end with the metric; nothing to register", file=sys.stderr)
        return 1
    params = ", ".join(f"{k}={_short(v)}" for k, v in out.best.items() if "." in k)
    print(f"tune: best trial {out.best['trial_id']} {out.metric}={out.best[out.metric]:.4g} ({params}); "
          f"MLflow run {out.best['run_id']}")
    if cfg.registry.register_after_tune:
        say_registration(run_register(cfg, out.best["run_id"], verbose=_verbose(args)))
    return 0


def run(args: argparse.Namespace) -> int:
    from ..workflow import run_workflow

    run_workflow(_cfg(args), _verbose(args))
    return 0


def generate(args: argparse.Namespace) -> int:
    from ..stages.generate import generate as run_generate
    from ..stages.evaluate import table

    res = run_generate(_cfg(args), args.model, args.rows, args.out, args.labels, args.seed, args.overwrite,
                       _verbose(args), args.rejection, args.min_confidence)
    print(table(res.metrics))
    counts = ", ".join(str(c) for c in res.counts)
    print(f"generate: {res.rows} rows ({counts} per class) in {len(res.files)} files, {res.written_now()}; "
          f"card {res.out}/README.md; MLflow run {res.run_id}")
    return 0


def submit(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .. import jobs

    acted = [(flag, job) for flag, job in (("status", args.status), ("logs", args.logs), ("stop", args.stop)) if job]
    if len(acted) > 1:
        raise UserError("give one of --status, --logs, --stop")
    if acted:
        flag, job = acted[0]
        if flag == "status":
            print(f"submit: job {job} {jobs.status(args.address, job)}")
        elif flag == "logs":
            print(jobs.logs(args.address, job), end="")
        else:
            print(f"submit: job {job} {'stopping' if jobs.stop(args.address, job) else 'had already ended'}")
        return 0
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    _, status = jobs.submit(_cfg(args), args.address, env, wait=not args.no_wait)
    return 0 if args.no_wait or status == "SUCCEEDED" else 1


def ui(args: argparse.Namespace) -> int:
    from ..ui import serve

    serve(_cfg(args), args.host, args.port, args.data, args.token, args.mlflow, args.address)
    return 0


def config(args: argparse.Namespace) -> int:
    """The resolved config: every key, its value and what it means; with `auto`, the keys it derives
    (from the data, loaded for this, and this machine) with their reasons."""
    from ..config import auto

    if args.markdown:
        from ..config.reference import markdown

        print(markdown(), end="")
        return 0
    cfg = _cfg(args)
    derived = {}
    if cfg.auto:
        print(f"config: auto: reading {cfg.data.source} to derive what the config leaves open", file=sys.stderr)
        cfg, choices = auto.preview(cfg)
        derived = {c.key: c.reason for c in choices}
    rows = describe(cfg)
    width = max(len(k) for k, _, _ in rows)
    for key, value, meaning in rows:
        shown = json.dumps(value) if not isinstance(value, str) else value
        if key in derived:
            meaning = f"auto: {derived[key]} ({meaning})"
        print(f"{key:<{width}}  {shown}\n{'':<{width}}  # {meaning}" if len(shown) > 40 else
              f"{key:<{width}}  {shown:<40}  # {meaning}")
    return 0
