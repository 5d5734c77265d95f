"""The default on data it was not tuned for: `ganpipe run` with only `data.source` set, on each dataset
in a fresh folder with a fresh home (no cached feature network, decoded data or layout), and the
registered champion's own evaluation. Writes its table into docs/quality.md ("The current
default", between its markers): wall time from the command to the
dataset, the training loop's iterations and span, the time outside it, every bar metric with its
interval and the real data's value, the bars met, and each run's per-class grid (docs/img/).

    python benchmarks/datasets.py --cifar DIR [--only mnist5k,fashion-mnist,cifar10,jpeg-mixed]

DIR holds CIFAR-10 as PNGs (DIR/train/CLASS/*.png, DIR/test/CLASS/*.png; docs/data.md says where to
get it offline). `jpeg-mixed` is made from DIR/test: five classes at 1,000 / 500 / 250 / 125 / 60
images, each saved as a JPEG of a random side between 20 and 64 pixels (a class-imbalanced folder of
mixed sizes). Fashion-MNIST is read from /usr/share/datasets/fashion-mnist (Debian's
dataset-fashion-mnist) or --fashion DIR.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import cpu_model  # noqa: E402

DOC = ROOT / "docs" / "quality.md"
IMG = ROOT / "docs" / "img"
START, END = "<!-- datasets: start -->", "<!-- datasets: end -->"
DATA_NOTE = ("mnist5k: the built-in 5,000 digits; fashion-mnist: Debian's dataset-fashion-mnist; cifar10: PNG "
             "folders from the public repository cyizhuo/CIFAR-10-dataset; jpeg-mixed: five CIFAR-10 test classes at "
             "1,000 / 500 / 250 / 125 / 60 images, each a JPEG of a random side between 20 and 64 pixels")
JPEG_CLASSES = {"airplane": 1000, "automobile": 500, "bird": 250, "cat": 125, "deer": 60}
BAR_METRICS = ("fd", "precision", "recall", "coverage", "label_fidelity", "cas_ratio")


def make_jpeg_mixed(cifar: Path, out: Path, seed: int = 0) -> Path:
    """A class-imbalanced folder of JPEGs of mixed sizes from CIFAR-10's test split."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls, count in JPEG_CLASSES.items():
        (out / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((cifar / "test" / cls).glob("*.png"))[:count]:
            side = int(rng.integers(20, 65))
            Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC).save(out / cls / f"{f.stem}.jpg",
                                                                                   quality=90)
    return out


def sources(args) -> dict[str, str]:
    return {"mnist5k": "mnist5k", "fashion-mnist": f"idx:{args.fashion}",
            "cifar10": f"imagefolder:{Path(args.cifar) / 'train'}", "jpeg-mixed": None}


def timeline(folder: Path, run_id: str, start: float) -> dict:
    """Where the wall time went: the training loop (its first to its last logged loss, and the
    iterations before the first log at the loop's mean pace), the time before
    it (data, Ray, the feature network, the layout probe, the workers' start), the span from the loop's
    end to the evaluation's run, and each later stage's MLflow run."""
    from mlflow.tracking import MlflowClient

    from pipelines.services import contract

    c = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    hist = c.get_metric_history(run_id, "loss_d")
    times = [m.timestamp / 1000 for m in hist]
    first, last = min(times), max(times)
    first_step, last_step = min(m.step for m in hist), max(m.step for m in hist)
    # The first loss is logged after train.log_every iterations: those are the loop's, at its mean pace.
    early = first_step * (last - first) / (last_step - first_step) if last_step > first_step else 0.0
    out = {"loop_s": last - first + early, "iterations": last_step, "before_loop_s": first - early - start}
    exp = c.get_run(run_id).info.experiment_id
    for stage in ("evaluate", "register", "generate"):
        runs = c.search_runs([exp], contract.filter_eq(contract.STAGE, stage), max_results=1)
        if runs:
            r = runs[0].info
            out[f"{stage}_s"] = (r.end_time - r.start_time) / 1000
            if stage == "evaluate":
                out["after_loop_s"] = r.start_time / 1000 - last
    return out


def ganpipe_run(folder: Path, home: Path, sets: tuple[str, ...],
                tree: Path | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """`ganpipe run --set KEY=VALUE ...` in `folder` (created), its HOME `home`, its MLflow store
    folder/mlflow.db, its output kept in folder/run.log; (the process, its wall time, its start).
    `tree`: the code of another copy of the project, in place of the installed one."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "PYTHONUNBUFFERED": "1", **({"PYTHONPATH": str(tree)} if tree else {})}
    env.pop("RAY_ADDRESS", None)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", *(a for kv in sets for a in ("--set", kv))],
                          cwd=folder, env=env, capture_output=True, text=True)
    wall = time.time() - start
    (folder / "run.log").write_text(proc.stdout + proc.stderr)
    return proc, wall, start


def one(name: str, source: str, folder: Path, sets: tuple[str, ...] = (), img: Path | None = None) -> dict:
    """`ganpipe run --set data.source=SOURCE` (and `sets`) in `folder` with HOME there too; its numbers.
    The champion's per-class grid is copied to `img` (docs/img by default) as datasets-NAME.png."""
    home = folder / "home"
    home.mkdir(parents=True)
    proc, wall, start = ganpipe_run(folder, home, (f"data.source={source}", *sets))
    if proc.returncode:
        raise SystemExit(f"{name}: ganpipe run failed (exit {proc.returncode}); its output: {folder / 'run.log'}")
    out = proc.stdout
    run_id = re.search(r"train: MLflow run (\w+)", out).group(1)
    report = Path(re.search(r"evaluate: report (\S+?)(;|$)", out, re.M).group(1))
    report = report if report.is_absolute() else folder / report
    report = report.parent if report.suffix == ".md" else report  # the line names the report file
    metrics = json.loads((report / "metrics.json").read_text())
    times = timeline(folder, run_id, start)
    auto_line = next((ln for ln in out.splitlines() if ln.startswith("train: auto:")), "")
    notes = [ln.removeprefix("train: ") for ln in out.splitlines() if ln.startswith("train: data ")]
    stop = next((ln for ln in out.splitlines() if ln.startswith("train: stopped") or ln.startswith("train: finished")), "")
    img = IMG if img is None else img
    img.mkdir(parents=True, exist_ok=True)
    shutil.copy(report / "samples_per_class.png", img / f"datasets-{name}.png")
    return {"name": name, "source": source, "wall_s": wall, **times, "metrics": metrics, "auto": auto_line.removeprefix("train: "), "stop": stop.removeprefix("train: "), "notes": notes}


def cell(m: dict, key: str) -> str:
    v = m.get(key)
    if v is None:
        return "-"
    lo, hi, real = m.get(f"{key}_lo"), m.get(f"{key}_hi"), m.get(f"{key}_real")
    text = f"{v:.3f}"
    if lo is not None and hi is not None:
        text += f" ({lo:.3f}-{hi:.3f})"
    if real is not None:
        text += f"; real {real:.3f}"
    return text


def table(results: list[dict], cpu: str) -> str:
    from gan_core.metrics import quality_bar

    def minutes(s: float) -> str:
        return f"{int(s // 60)} min {int(s % 60):02d} s"

    rows = [("measured", lambda r: r.get("measured", "-")), ("data", lambda r: f"`{r['source']}`"), ("wall, command to dataset", lambda r: minutes(r["wall_s"])),
            ("iterations (training loop)", lambda r: f"{r['iterations']:,} in {r['loop_s']:.0f} s"),
            ("time outside the training loop", lambda r: f"{r['wall_s'] - r['loop_s']:.0f} s"),
            ("of which: before the loop, after it, evaluate, register, generate",
             lambda r: " / ".join(f"{r.get(k, 0):.0f}" for k in ("before_loop_s", "after_loop_s", "evaluate_s",
                                                                 "register_s", "generate_s")) + " s")]
    rows += [(k, (lambda key: lambda r: cell(r["metrics"], key))(k)) for k in BAR_METRICS]
    rows.append(("bars met", lambda r: "{} of {}".format(sum(met for _, _, met in quality_bar(r["metrics"]).values()),
                                                          len(quality_bar(r["metrics"])))))
    head = "| | " + " | ".join(r["name"] for r in results) + " |"
    lines = [f"{cpu}, 2 cores; `python benchmarks/datasets.py` (each column's date and commit in its first row)",
             "", head,
             "|---" * (len(results) + 1) + "|"]
    lines += ["| " + what + " | " + " | ".join(f(r) for r in results) + " |" for what, f in rows]
    lines += ["", "What auto chose, and how each run ended:", ""]
    lines += [f"- **{r['name']}**: {r['auto'] or '(nothing derived)'}; {r['stop']}"
              + "".join(f"; {n}" for n in r.get("notes", [])) for r in results]
    lines += ["", "Per-class grids of each champion (10 samples a class, rows by class):", ""]
    lines += [f"- {r['name']}: ![{r['name']}](img/datasets-{r['name']}.png)" for r in results]
    lines += ["", f"The data ({DATA_NOTE})."]
    return "\n".join(lines)


def write(text: str) -> None:
    body = f"{START}\n{text}\n{END}"
    old = DOC.read_text()
    if START not in old:
        raise SystemExit(f"{DOC}: no {START} marker to write the table at")
    before, _, rest = old.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(before + body + after)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar", required=True, help="CIFAR-10 as PNG folders (DIR/train, DIR/test)")
    p.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--only", default="mnist5k,fashion-mnist,cifar10,jpeg-mixed")
    p.add_argument("--keep", default=None, help="keep each run's folder under this folder")
    args = p.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="ganpipe-datasets-"))
    srcs = sources(args)
    order = list(srcs)
    # Columns not run now keep their earlier result from the same --keep folder (their own date and commit).
    earlier = json.loads((base / "results.json").read_text()) if (base / "results.json").is_file() else []
    kept = {r["name"]: r for r in earlier if r["name"] not in args.only.split(",")}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    results = []
    for name in args.only.split(","):
        folder = base / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        source = srcs[name] or f"imagefolder:{make_jpeg_mixed(Path(args.cifar), base / 'jpeg-mixed-data')}"
        results.append({**one(name, source, folder), "measured": f"{datetime.date.today()}, {commit}"})
        print(json.dumps({k: v for k, v in results[-1].items() if k != "metrics"}), flush=True)
        every = sorted([*kept.values(), *results], key=lambda r: order.index(r["name"]))
        (base / "results.json").write_text(json.dumps(every, indent=1))
    write(table(every, cpu_model()))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
