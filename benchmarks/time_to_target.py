"""Time to quality: seconds from `ganpipe train` to its first checkpoint that meets the whole quality
bar (target 1 of docs/quality.md: fd, precision, recall, coverage, label fidelity and the CAS ratio,
each against the real data's own value, judged under the fixed evaluation protocol), for the shipped
default (the `quick` preset, with its stopping rules) against the fixed-length default it replaced
(10 epochs, the plain generator, no stopping rule; a checkpoint every 50 iterations here so that its
best is seen). Both run in one invocation, one after the other, each a fresh `ganpipe train` with its
own local Ray on the same data, every checkpoint kept.

A protocol evaluation (4,500 samples, CAS) costs about half a minute, so checkpoints are evaluated in
order from the first whose training fd is within the bar's fd bound, until one meets the whole bar
(`--all`: every such checkpoint, for the table of the bar over a run; `--stride N`: only every N
iterations from that first one). A checkpoint's time is the MLflow timestamp of its training
evaluation. `--budget S` gives the shipped default S seconds of training instead of its
`train.time_budget_s` (no patience, no epoch cap), for how long it takes to meet the bar where its
own budget does not.

    python benchmarks/time_to_target.py [--all] [--stride N] [--budget S]

On other data, the default alone (what `auto` derives, its budget replaced by --budget), each bar
metric at the checkpoints nearest the given wall times, and where each bar would be met:

    python benchmarks/time_to_target.py --source idx:/usr/share/datasets/fashion-mnist --budget 2700 \
        --at 300,600,900,1800,2700 [--set train.r1=0.1 ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402

OLD_DEFAULT = ["train.epochs=10", "train.target=null", "train.patience=null", "train.time_budget_s=null",
               "train.ema_beta=null", "train.r1=0", "train.tolerance=0", "train.eval_every=50",
               "train.checkpoint_every=50", "train.precision=fp32"]
KEEP_ALL = "train.keep_checkpoints=100000"


def one(overrides: list[str], folder: Path) -> dict:
    """Run `ganpipe train` with `overrides` keeping every checkpoint; its training evaluations as
    (seconds since start, iteration, fd), its checkpoint folders by iteration, its end."""
    from mlflow.tracking import MlflowClient

    from pipelines.services import checkpoints

    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    args = [a for item in [*overrides, KEEP_ALL] for a in ("--set", item)]
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", *args], cwd=folder, env=env,
                         capture_output=True, text=True, check=True).stdout
    end = time.time()
    run_id = out.split("MLflow run ")[1].split()[0]
    c = MlflowClient(uri)
    fds = sorted((m.timestamp / 1000 - start, m.step, m.value) for m in c.get_metric_history(run_id, "fd"))
    storage = out.split("checkpoints in ")[1].split(";")[0]
    folders = {checkpoints.iteration_of(f): f for f in checkpoints.checkpoint_folders(storage)}
    return {"fds": fds, "end": end - start, "checkpoints": folders,
            "iterations": int(c.get_run(run_id).data.metrics["iteration"])}


def protocol_of(checkpoint: Path, base) -> tuple[dict, dict]:
    """(the protocol's metrics, its quality bar) of a checkpoint, under config `base`'s evaluation."""
    from gan_core.metrics import quality_bar, sample_generator
    from pipelines.services.models import resolve
    from pipelines.stages.evaluate import generator_data, protocol_metrics, protocol_samples

    loaded = resolve(str(checkpoint), "")
    cfg, data = generator_data(base, loaded, str(checkpoint))
    fake_x, fake_y = sample_generator(loaded.generator, protocol_samples(cfg, data), loaded.label_prior, cfg.seed)
    metrics = protocol_metrics(cfg, data, fake_x, fake_y)
    return metrics, quality_bar(metrics)


def judge_at(run: dict, seconds: list[float], base_overrides: list[str]) -> list[dict]:
    """The protocol's metrics and bar of the run's checkpoints nearest (at or before) each of `seconds`
    of wall time since the command."""
    from pipelines.config import load_config

    base, judged = load_config(None, base_overrides), []
    for at in seconds:
        seen = [(t, it) for t, it, _ in run["fds"] if t <= at and it in run["checkpoints"]]
        if not seen:
            continue
        t, it = seen[-1]
        metrics, bar = protocol_of(run["checkpoints"][it], base)
        judged.append({"seconds": t, "iteration": it, "bar": bar, "met": sum(m for _, _, m in bar.values()),
                       "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        print(f"  {t:.0f} s, iteration {it}: {judged[-1]['met']} of {len(bar)} ("
              + ", ".join(f"{k} {v:.3f} (bar {b:.3f})" for k, (v, b, _) in bar.items()) + ")", flush=True)
    return judged


def curve_table(judged: list[dict], source: str, settings: list[str] = ()) -> str:
    """Each bar metric against wall time (rows: metrics; columns: the judged checkpoints)."""
    names = list(judged[0]["bar"]) if judged else []
    head = "| metric (bar) | " + " | ".join(f"{j['seconds'] / 60:.0f} min ({j['iteration']:,} it)" for j in judged) + " |"
    with_ = "".join(f" `{s}`" for s in settings)
    lines = [f"`{source}`, the default with `auto`{' and' + with_ if with_ else ''}, one run; each checkpoint under "
             "the evaluation protocol:", "",
             head, "|---" * (len(judged) + 1) + "|"]
    for k in names:
        bound = judged[-1]["bar"][k][1]
        cells = []
        for j in judged:
            v, _, met = j["bar"][k]
            lo, hi = j["metrics"].get(f"{k}_lo"), j["metrics"].get(f"{k}_hi")
            cells.append(("**" if met else "") + f"{v:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if lo is not None else "")
                         + ("**" if met else ""))
        lines.append(f"| {k} ({'<=' if k == 'fd' else '>='} {bound:.3f}) | " + " | ".join(cells) + " |")
    lines.append("| bars met | " + " | ".join(f"{j['met']} of {len(j['bar'])}" for j in judged) + " |")
    return "\n".join(lines)


def judge(run: dict, fd_bound: float, every: bool, stride: int | None = None) -> list[dict]:
    """The protocol's metrics and quality bar of the run's checkpoints in iteration order, from the
    first whose training fd is within `fd_bound` (every `stride` iterations from it when given); up to
    the first that meets the whole bar unless `every`."""
    from pipelines.config import load_config

    judged, base = [], load_config(None, [])
    first = next((it for _, it, fd in run["fds"] if fd <= fd_bound and it in run["checkpoints"]), None)
    for t, it, _ in run["fds"]:
        if first is None or it < first or it not in run["checkpoints"] or (stride and (it - first) % stride):
            continue
        metrics, bar = protocol_of(run["checkpoints"][it], base)
        judged.append({"seconds": t, "iteration": it, "bar": bar, "met": sum(m for _, _, m in bar.values()),
                       **{k: metrics[k] for k in bar}})
        print(f"  iteration {it}: {judged[-1]['met']} of {len(bar)} ("
              + ", ".join(f"{k} {v:.3f}" for k, (v, _, _) in bar.items()) + ")", flush=True)
        if judged[-1]["met"] == len(bar) and not every:
            break
    return judged


def main() -> None:
    from gan_core.metrics import METRICS, full_metrics
    from pipelines.config.build import feature_net
    from pipelines.config import load_config
    from pipelines.config.build import load_data

    ap = argparse.ArgumentParser()
    add_outputs(ap)
    ap.add_argument("--all", action="store_true",
                    help="evaluate every screened checkpoint, not only up to the first hit")
    ap.add_argument("--stride", type=int, help="judge a checkpoint every STRIDE iterations from the first screened")
    ap.add_argument("--budget", type=float,
                    help="seconds of training for the shipped default, without patience or epoch cap")
    ap.add_argument("--source", help="data.source: the default alone on this data (with --budget and --at)")
    ap.add_argument("--at", help="comma-separated wall times in seconds: judge the checkpoint nearest each")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --source: a setting on top of the default (repeatable), to compare against it")
    args = ap.parse_args()
    if args.source:
        if not (args.budget and args.at):
            ap.error("--source needs --budget and --at")
        source = [f"data.source={args.source}", *args.set]
        run = one([*source, f"train.time_budget_s={args.budget}", "train.patience=null", "train.epochs=100000"],
                  Path(tempfile.mkdtemp()) / "default")
        print(f"default: {run['iterations']} iterations in {run['end']:.0f} s", flush=True)
        judged = judge_at(run, [float(x) for x in args.at.split(",")], source)
        table = curve_table(judged, args.source, args.set)
        print(table)
        if args.json:
            Path(args.json).write_text(json.dumps({"judged": judged, "end": run["end"],
                                                   "iterations": run["iterations"]}, indent=1, default=str))
        return
    cfg = load_config(None, [])
    train, holdout = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
    net = feature_net(cfg, train, holdout)
    # The screen: the real data's fd floor at the training evaluation's sample count, times the bar's factor.
    real_x = train.tensors()[0][: cfg.train.eval_samples]
    floor = full_metrics(net, train, holdout, real_x, None, seed=cfg.seed, cas=False)["fd_real"]
    fd_bound = METRICS["fd"].bar * floor
    tmp = Path(tempfile.mkdtemp())
    runs, judged = {}, {}
    longer = [f"train.time_budget_s={args.budget}", "train.patience=null", "train.epochs=100000"] if args.budget else []
    for name, overrides in (("old", OLD_DEFAULT), ("new", longer)):
        runs[name] = one(overrides, tmp / name)
        print(f"{name}: {runs[name]['iterations']} iterations in {runs[name]['end']:.0f} s", flush=True)
        judged[name] = judge(runs[name], fd_bound, args.all, args.stride)
    hits = {name: next((j for j in judged[name] if j["met"] == len(j["bar"])), None) for name in runs}

    new = f"shipped default with {args.budget:.0f} s of training" if args.budget else "shipped default"

    def side(name: str, what: str) -> str:
        run, hit, seen = runs[name], hits[name], judged[name]
        best = max(seen, key=lambda j: (j["met"], j["iteration"]), default=None)
        when = (f"the whole bar at {hit['seconds']:.0f} s (iteration {hit['iteration']}, CAS ratio "
                f"{hit['cas_ratio']:.3f})" if hit else "the whole bar never")
        most = (f"; best {best['met']} of {len(best['bar'])} at iteration {best['iteration']} (CAS ratio "
                f"{best['cas_ratio']:.3f})" if best and not hit else "")
        return (f"{what}: {when}{most}; ended at {run['end']:.0f} s after {run['iterations']} it, "
                f"{len(seen)} checkpoints judged")

    ratio = (f"**{hits['old']['seconds'] / hits['new']['seconds']:.2f}x**" if hits["old"] and hits["new"] else
             "**bar met only by the default**" if hits["new"] else "**bar not met**")
    row = (f"| {datetime.date.today()} | time from `ganpipe train` to the first checkpoint that meets the "
           f"whole quality bar under the protocol (training fd screen <= {fd_bound:.2f}), quick preset data | "
           f"{side('old', 'fixed 10 epochs, plain G')} | "
           f"{side('new', new)}"
           f"{f' (a checkpoint judged every {args.stride} it)' if args.stride else ''} | {ratio} | "
           f"{cpu_model()}, {os.cpu_count()} cores |")
    record(row, args.out, {"fd_bound": fd_bound, "floor": floor, "runs": {k: {**v, "checkpoints": None}
                                                                          for k, v in runs.items()},
                           "judged": judged}, args.json)


if __name__ == "__main__":
    main()
