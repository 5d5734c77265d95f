"""A small batch from a registered model, as the UI or `ganpipe generate` asks for one: seconds from
the command to its manifest, for this tree and for a baseline tree (another checkout of ganpipe),
alternating, in the folder of an earlier `ganpipe run` (its MLflow store holds the champion, which
the run evaluated under the protocol). Each call writes to a fresh --out.

    python benchmarks/small_batch.py --folder RUN_FOLDER --home HOME --baseline OTHER_TREE --rows 1000
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import add_outputs, cpu_model, record  # noqa: E402


def one(tree: Path, folder: Path, home: Path, rows: int, model: str) -> float:
    out = Path(tempfile.mkdtemp(prefix="ganpipe-batch-")) / "ds"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(tree),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", "generate", "--model", model, "--rows", str(rows),
                    "--out", str(out)], cwd=folder, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not (out / "manifest.json").is_file():
        raise SystemExit(f"{tree}: no manifest in {out}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, type=Path, help="the folder of an earlier `ganpipe run`")
    ap.add_argument("--home", required=True, type=Path, help="the HOME that run used (its caches)")
    ap.add_argument("--baseline", required=True, type=Path, help="another checkout of ganpipe")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="models:/gan-generator@champion")
    add_outputs(ap)
    a = ap.parse_args()
    times: dict[str, list[float]] = {"baseline": [], "this tree": []}
    for _ in range(a.rounds):
        for name, tree in (("baseline", a.baseline), ("this tree", ROOT)):
            times[name].append(one(tree, a.folder.resolve(), a.home.resolve(), a.rows, a.model))
    base, now = min(times["baseline"]), min(times["this tree"])
    row = (f"| {datetime.date.today()} | {cpu_model()}, {os.cpu_count()} CPUs | `ganpipe generate --rows {a.rows}` "
           f"from {a.model} (evaluated by its run), command to manifest, best of {a.rounds} | baseline "
           f"({a.baseline.name}) {base:.1f} s | this tree {now:.1f} s | **{base / now:.2f}x** |")
    record(row, a.out, {"seconds": times, "rows": a.rows}, a.json)


if __name__ == "__main__":
    main()
