"""ganpipe on one GPU, measured in one script of under 8 minutes:

1. step: `Game.step` in fp32 and bf16 against the plain DCGAN loop on the GPU (gpu_step.py);
2. worker: one Ray Train GPU worker against the bare step on the same GPU (train_throughput.py);
3. run: `ganpipe run --set ray.use_gpu=true` on mnist5k end to end, a fresh home, a training budget of
   `--budget` seconds: its wall time, the time outside its training loop and its quality bar;
4. batch: `ganpipe generate` on GPU actors against the bare generator forward pass on the GPU, with and
   without the verifier.

Each part runs in its own process group under its own time limit (they add up to under 8 minutes);
a part that fails or runs out of time is recorded as such and the next one runs. Rows go to `--out`,
the numbers to `--json`, the run's per-class grid beside them; the summary table is printed last.

    python benchmarks/gpu_check.py --out gpu_results.md --json gpu_results.json
    python benchmarks/gpu_check.py --device cpu --quick   # the same parts on the CPU, short: a check of the script

On a GPU machine without ganpipe's dependencies, `bash benchmarks/gpu_check.sh` first unpacks what
`python benchmarks/gpu_bundle.py` packed (docs/benchmarks.md, "On a GPU").
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# part -> seconds it may take on a GPU (the four: 450 s) and in the CPU check of the script
LIMITS = {"step": (60, 90), "worker": (90, 150), "run": (200, 300), "batch": (100, 200)}


def _run(name: str, cmd: list[str], limit: int, log: Path, stop_ray: bool = True) -> tuple[bool, str]:
    """`cmd` in a process group of its own, killed whole at `limit` seconds, then (`stop_ray`) any Ray
    it left running stopped; (it ended well, why not)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    if stop_ray:  # what a killed part left running
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    took = time.perf_counter() - start
    print(f"== {name}: {'done' if code == 0 else 'FAILED'} in {took:.0f} s (log {log})", flush=True)
    if code == 0:
        return True, ""
    return False, (f"ran out of its {limit} s" if code is None else f"exit {code}") + f"; its log: {log.name}"


def part_run(a, folder: Path) -> dict:
    """Part 3 in this process (run as `--part run`): `ganpipe run` on mnist5k on the GPU, timed."""
    from datasets import one

    from gan_core.metrics import quality_bar

    sets = ("ray.use_gpu=true",) if a.device == "cuda" else ()
    try:
        r = one("gpu-mnist5k", a.source, folder / "run", (*sets, f"train.time_budget_s={a.budget}"), img=Path(a.img))
    except SystemExit:  # the run's own output is what tells why: into this part's log, which travels
        print((folder / "run" / "run.log").read_text()[-20_000:])
        raise
    bar = quality_bar(r["metrics"])
    r["bars_met"], r["bars"] = sum(met for _, _, met in bar.values()), len(bar)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="short parts, to check that the script works")
    ap.add_argument("--budget", type=int, default=None, help="part 3's training budget in seconds "
                                                             "(default 100; 20 with --quick)")
    ap.add_argument("--source", default="mnist5k")
    ap.add_argument("--only", default=",".join(LIMITS), help="comma-separated subset of " + ",".join(LIMITS))
    ap.add_argument("--out", default="gpu_results.md")
    ap.add_argument("--json", default="gpu_results.json")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--img", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.budget = a.budget or (20 if a.quick else 100)
    if set(a.only.split(",")) - set(LIMITS):
        sys.exit(f"gpu_check.py: --only {a.only}: the parts are {', '.join(LIMITS)}")
    sys.path[:0] = [str(HERE.parent), str(HERE)]  # ganpipe, and the other benchmarks
    if a.part:  # one part, in the process the check started for it
        part = {"run": part_run, "batch": part_batch}[a.part]
        Path(a.work, f"{a.part}.json").write_text(json.dumps(part(a, Path(a.work)), default=str))
        return
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check.py: no CUDA device on this machine (--device cpu checks the script on the CPU)")
    from record import cpu_model

    gpu = a.device == "cuda"
    machine = f"{torch.cuda.get_device_name(0) if gpu else cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    out, js = Path(a.out).resolve(), Path(a.json).resolve()
    work = Path(tempfile.mkdtemp(prefix="ganpipe-gpu-"))
    py = sys.executable
    q = a.quick
    cmds = {
        "step": [py, str(HERE / "gpu_step.py"), "--device", a.device, "--json", str(work / "step.json"),
                 *(["--iterations", "3", "--batch", "16", "--sizes", "28"] if q else
                   ["--iterations", "200", "--batch", "128", "--sizes", "28,64"])],
        "worker": [py, str(HERE / "train_throughput.py"), "--workers", "1", "--json", str(work / "worker.json"),
                   *(["--set", "ray.use_gpu=true"] if gpu else []),
                   *(["--iterations", "10", "--warmup", "3"] if q else ["--iterations", "300", "--warmup", "30"])],
        "run": [py, __file__, "--part", "run", "--work", str(work), "--device", a.device, "--budget", str(a.budget),
                "--source", a.source, "--img", str(out.parent)],
        "batch": [py, __file__, "--part", "batch", "--work", str(work), "--device", a.device, *(["--quick"] if q else [])],
    }
    results: dict = {"machine": machine, "date": str(datetime.date.today()), "failed": {}}
    total = time.perf_counter()
    for name in a.only.split(","):
        cmd = cmds[name] + (["--out", str(work / f"{name}.md")] if name in ("step", "worker") else [])
        ok, why = _run(name, cmd, LIMITS[name][0 if gpu else 1], work / f"{name}.log")
        if not ok:
            results["failed"][name] = why
            continue
        results[name] = json.loads((work / f"{name}.json").read_text())
    results["wall_s"] = time.perf_counter() - total
    text = summary(results)
    print(text)
    rows = "\n".join(line for n in ("step", "worker") if (work / f"{n}.md").exists()
                     for line in (work / f"{n}.md").read_text().splitlines() if line.startswith("| 2"))
    out.write_text(f"{text}\n\nRows:\n\n| date | what | baseline | ganpipe | ratio | machine |\n"
                   f"|---|---|---|---|---|---|\n{rows}\n")
    js.write_text(json.dumps(results, indent=1, default=str))
    for log in work.glob("*.log"):  # the logs travel with the results
        (out.parent / f"gpu_check-{log.name}").write_text(log.read_text()[-200_000:])


def part_batch(a, work: Path) -> dict:
    """Part 4 in this process (run as `--part batch`): the bare forward pass on the device, then
    `generate` jobs, each in its own process as generate_throughput.py runs them: one actor on the
    whole GPU, with and without the verifier, and four actors sharing it."""
    import torch

    from generate_throughput import bare_forward

    gpu = a.device == "cuda"
    rows = 4_000 if a.quick else 100_000
    tmp = work / "batch"
    tmp.mkdir(exist_ok=True)
    bare = max(bare_forward(tmp, rows, os.cpu_count(), a.device) for _ in range(2))
    jobs = ({"1 actor, verifier": (1.0, True, None), "1 actor, no verifier": (1.0, False, None),
             "4 actors, verifier": (0.25, True, 4)} if gpu else  # on a CPU: the same jobs on 2 CPU actors
            {"2 CPU actors, verifier": (0, True, 2), "2 CPU actors, no verifier": (0, False, 2)})
    out = {"bare": bare, "rows": rows, "jobs": {}}
    for name, (gpus, verifier, actors) in jobs.items():
        cmd = [sys.executable, str(HERE / "generate_throughput.py"), "--job", str(rows), "--tmp", str(tmp),
               *([] if verifier else ["--plain"])]
        cmd += (["--gpus", str(gpus)] if gpus else []) + (["--actors", str(actors)] if actors else [])
        job = subprocess.run(cmd, capture_output=True, text=True)
        if job.returncode:
            sys.exit(f"the job '{name}' failed (exit {job.returncode}):\n{job.stdout[-3000:]}{job.stderr[-5000:]}")
        out["jobs"][name] = json.loads(job.stdout.strip().splitlines()[-1])
        print(f"{name}: {out['jobs'][name]['rows_per_s']:.0f} rows/s against the bare pass's {bare:.0f}", flush=True)
    out["device"] = torch.cuda.get_device_name(0) if gpu else "CPU"
    return out


def summary(r: dict) -> str:
    """The results as a table of what each part measured against its target."""
    mark = {True: "met", False: "**not met**", None: "-"}
    lines = [f"GPU check, {r['date']}, {r['machine']}, {r['wall_s']:.0f} s in all (`python benchmarks/gpu_check.py`):",
             "", "| part | measured | goal | |", "|---|---|---|---|"]

    def add(what, measured, goal="reported", met=None):
        lines.append(f"| {what} | {measured} | {goal} | {mark[met]} |")

    for name, why in r["failed"].items():
        add(name, f"failed: {why}", "runs", False)
    for size, rates in r.get("step", {}).items():
        plain = rates["plain loop, fp32"]
        for precision in ("fp32", "bf16"):
            best = max((v, k) for k, v in rates.items() if "reuse_fake" in k and f", {precision}" in k)
            shipped = max(v for k, v in rates.items() if "shipped" in k and f", {precision}" in k
                          and "compiled" not in k)
            add(f"step {size}x{size}, {precision}: `Game.step` at the plain loop's arithmetic (best layout) and "
                f"as shipped vs the plain DCGAN loop in fp32 ({plain:.0f} img/s)",
                f"{best[0] / plain:.2f}x, shipped {shipped / plain:.2f}x")
    w = r.get("worker")
    if w:
        add("one Ray Train worker vs the bare step on the same device", f"{w['ratio']:.2f}x "
            f"({w['steady']:.0f} against {w['bare']:.0f} img/s)", ">= 0.95x", w["ratio"] >= 0.95)
    run = r.get("run")
    if run:
        add(f"`ganpipe run` on {run['source']} end to end ({run['iterations']:,} iterations in {run['loop_s']:.0f} s; "
            f"{run['wall_s'] - run['loop_s']:.0f} s outside the loop)", f"{run['bars_met']} of {run['bars']} bars "
            f"in {run['wall_s']:.0f} s", "the quality bar", run["bars_met"] == run["bars"])
    b = r.get("batch")
    if b:
        for name, job in b["jobs"].items():
            ratio = job["rows_per_s"] / b["bare"]
            add(f"batch stage, {b['rows']:,} rows, {name}, vs the bare G forward on the device ({b['bare']:.0f} "
                f"rows/s)", f"{ratio:.2f}x ({job['rows_per_s']:.0f} rows/s)", ">= 0.6x", ratio >= 0.6)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
