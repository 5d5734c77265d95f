"""Every speed target of ganpipe in one table: runs each benchmark in its own process, one after the
other on a quiet machine, and prints each measured ratio beside its target, marked met or not; a target
not met says why (from the same run's numbers, or the section of BENCHMARKS.md that measures it).
The table and the benchmarks' own rows replace the "All targets" section of BENCHMARKS.md.

    python benchmarks/run_all.py            # the full run (about 35 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # short runs of every benchmark, to check that they work
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
BENCHMARKS_MD = HERE.parent / "BENCHMARKS.md"
START, END = "<!-- run_all: start -->", "<!-- run_all: end -->"

# name -> (script arguments of the full run, of the quick run)
RUNS = {
    "game_step": (["--iterations", "60", "--rounds", "3", "--threads", "2", "--compile"],
                  ["--iterations", "5", "--rounds", "1", "--threads", "2", "--widths", "32,64"]),
    "train_1": (["--iterations", "200", "--workers", "1"], ["--iterations", "20", "--warmup", "5", "--workers", "1"]),
    "train_2": (["--iterations", "200", "--workers", "2"], ["--iterations", "20", "--warmup", "5", "--workers", "2"]),
    "train_auto": (["--iterations", "200", "--workers", "auto"], ["--iterations", "20", "--warmup", "5",
                                                                   "--workers", "auto"]),
    "generate": (["--small", "10000", "--large", "1000000"], ["--small", "2000", "--large", "20000"]),
    "startup": (["--rounds", "3"], ["--rounds", "1"]),
    "startup_one": (["--rounds", "3", "--one-worker"], ["--rounds", "1", "--one-worker"]),
    "fixed_costs": (["--budget", "60"], ["--budget", "20"]),
}
SCRIPT = {"game_step": "game_step.py", "train_1": "train_throughput.py", "train_2": "train_throughput.py",
          "train_auto": "train_throughput.py", "generate": "generate_throughput.py", "startup": "startup.py",
          "startup_one": "startup.py", "fixed_costs": "fixed_costs.py"}


class Target(NamedTuple):
    """One target of the table: what is measured, its measured text and value, the goal, whether it is
    met (None: reported, or not measured here) and, when it is not met, why (from the same run's
    numbers, or the section of BENCHMARKS.md that measures where the difference goes)."""
    what: str
    measured: str
    value: float | None
    goal: str
    met: bool | None
    why: str = ""


def times(value: float, goal: float | None = None) -> str:
    """A ratio as "1.23x"; with three decimals where two would print the goal itself for a value on
    the other side of it (0.949 against 0.95: "0.949x", not met, rather than "0.95x", not met)."""
    text = f"{value:.2f}x"
    if goal is not None and value != goal and f"{value:.2f}" == f"{goal:.2f}":
        text = f"{value:.3f}x"
    return text


def targets(r: dict) -> list[Target]:
    """Every target, judged from the benchmarks' numbers."""
    rows: list[Target] = []
    g = r.get("game_step")
    if g:
        for w in ("w32", "w64"):
            rows.append(Target(
                f"Step: `Game.step` at equal arithmetic ({g[w]['best']}) vs the plain DCGAN loop, width {w[1:]}, "
                "batch 64, 2 threads", times(g[w]['ratio'], 1.3), g[w]["ratio"], ">= 1.3x (or where it goes, recorded)",
                g[w]["ratio"] >= 1.3, "the ratio moves between runs by more than its margin; where the difference "
                "goes is measured in \"Game step against the plain DCGAN loop\""))
        rate = g["w64"]["img_s"]
        if "game_nhwc" in rate:
            shipped = rate["game_nhwc"] / rate["plain"]
            rows.append(Target("Step: the shipped step (a fresh batch for G's update, channels-last) vs the plain "
                               "DCGAN loop, width 64", f"{shipped:.2f}x", shipped, "reported", None))
        share = g["w64"]["flop_share"][g["w64"]["best"]]
        rows.append(Target(f"Step: width 64, share of the {g['matmul_gflops']:.0f} GFLOP/s fp32 matmul rate",
                           f"{share:.0%}", share, ">= 60%", share >= 0.6,
                           "where the step's time goes is measured in \"Game step against the plain DCGAN loop\""))
        if g["w64"].get("compile_s") is not None:
            c = g["w64"]["img_s"]["game_compiled"] / g["w64"]["img_s"]["game_reuse_nhwc"]
            rows.append(Target("Step: torch.compile vs the same step eager, width 64 (compile time apart)",
                               f"{c:.2f}x after {g['w64']['compile_s']:.0f} s", c, "pays within a default run", None))
    t1 = r.get("train_1")
    if t1:
        rows.append(Target("Workers: TorchTrainer, 1 worker, steady vs the bare step", times(t1['ratio'], 0.95),
                           t1["ratio"], ">= 0.95x", t1["ratio"] >= 0.95,
                           "where the worker's time goes is measured in \"Training throughput: TorchTrainer "
                           "(1 worker) vs the bare loop\""))
    t2 = r.get("train_2")
    if t2:
        rows.append(Target("Workers: 2 workers x 1 thread vs 1 process x 2 threads, same global batch",
                           times(t2['ratio'], 0.95), t2["ratio"], ">= 0.95x", t2["ratio"] >= 0.95,
                           "two processes on 2 cores all-reduce G's and D's gradients every iteration (\"DDP's own "
                           "cost on CPU, without Ray\"); the local default trains one two-thread worker instead "
                           "(the next row)"))
    ta = r.get("train_auto")
    if ta:
        picked = f"{ta['ran']['num_workers']} worker(s) x {ta['ran']['cpus_per_worker']} thread(s)"
        rows.append(Target(f"Workers: the local default layout (`ray.layout: auto` picked {picked}) vs 1 process x "
                           f"{ta['ran']['num_workers'] * ta['ran']['cpus_per_worker']} threads, same global batch",
                           times(ta['ratio'], 0.95), ta["ratio"], ">= 0.95x", ta["ratio"] >= 0.95,
                           "the layout's probe and the run are measured side by side in \"The local default's "
                           "layout\""))
    gen = r.get("generate")
    if gen:
        ceiling = (f"the per-row ceiling measured beside it is {gen['ceiling']:.2f}x of the bare forward pass"
                   if "ceiling" in gen else "")
        rows.append(Target(f"Batch stage: generate rows/s vs the bare G forward on the same CPUs "
                           f"({gen['large']['rows']:,} rows)", times(gen['ratio'], 0.6), gen["ratio"], ">= 0.6x",
                           gen["ratio"] >= 0.6, ceiling or "the verifier, PNG and Parquet on every row"))
        rows.append(Target(f"Batch stage: generate peak memory, {gen['large']['rows']:,} vs {gen['small']['rows']:,} "
                           "rows", times(gen['memory_ratio'], 1.2), gen["memory_ratio"], "<= 1.2x",
                           gen["memory_ratio"] <= 1.2, "the pool's memory grows with the rows (\"Batch stage\")"))
        if "ceiling" in gen:
            c = gen["per_row_us"]
            rows.append(Target("Batch stage: what the actors' arithmetic allows (one-thread actors at their measured "
                               "cost a row, no Ray, no fixed cost) vs the bare G forward",
                               f"{gen['ceiling']:.2f}x (a row: G {c['g_us']:.0f} us, verifier {c['verifier_us']:.0f} "
                               f"us, PNG {c['png_us']:.0f} us, Parquet and the rest {c['rest_us']:.0f} us; a job's "
                               f"fixed cost {gen['fixed_s']:.0f} s)", gen["ceiling"], "reported", None))
            of = gen["ratio"] / gen["ceiling"]
            rows.append(Target("Batch stage: generate rows/s vs that per-row ceiling, measured in the same run",
                               times(of, 0.8), of, ">= 0.8x", of >= 0.8,
                               "Ray's own processes, the driver and the phases with a CPU idle: the actors' start, "
                               "the card (\"Batch stage\")"))
            rows.append(Target(f"Batch stage: a {gen['small']['rows']:,}-row job's fixed cost (model, data, "
                               f"evaluation, card, run; "
                               f"{'written in its own process' if gen.get('small_here') else 'its Ray and actors'})",
                               f"{gen['fixed_s']:.0f} s", gen["fixed_s"], "<= 5 s", gen["fixed_s"] <= 5,
                               "the job's model, data, evaluation and card (\"Batch stage\")"))
        if "plain_ratio" in gen:
            rows.append(Target(f"Batch stage: generate without the verifier (generate.verifier=false) vs the bare G "
                               f"forward ({gen['plain']['rows']:,} rows)", times(gen['plain_ratio'], 0.6),
                               gen["plain_ratio"], ">= 0.6x", gen["plain_ratio"] >= 0.6,
                               "where an actor's time goes is measured in \"Batch stage\""))
    s = r.get("startup")
    o = r.get("startup_one")
    if s:
        one_task = f" ({o['task_first_s']:.1f} s in this run)" if o else ""
        rows.append(Target("Start-up: `ganpipe train` of 2 workers to its first iteration, Ray's share",
                           f"{s['first_s']:.1f} s, Ray {s['ray_share']:.0%} (without Ray {s['bare_first_s']:.1f} s)",
                           s["first_s"], "<= 10 s", s["first_s"] <= 10,
                           f"Ray's share, {s['ray_share']:.0%}: Ray Train's controller and its workers' processes; a "
                           f"local default run trains as one task{one_task}"))
        rows.append(Target("Start-up: ganpipe's local Ray settings vs Ray Train's defaults, to the end",
                           f"{s['ray_defaults_end_s'] / s['end_s']:.2f}x", s["ray_defaults_end_s"] / s["end_s"],
                           "reported", None))
    if o:
        rows.append(Target("Start-up: one worker as `ray.layout: auto` lays it out (one Ray task): `ganpipe train` to "
                           "its first iteration", f"{o['task_first_s']:.1f} s", o["task_first_s"], "<= 10 s",
                           o["task_first_s"] <= 10, "Ray's node and the task's process importing torch and MLflow "
                           "(\"Start-up of a local training run\")"))
        rows.append(Target("Start-up: one worker as one Ray task vs the same worker under a TorchTrainer, to the end",
                           f"{o['train_end_s'] / o['task_end_s']:.2f}x", o["train_end_s"] / o["task_end_s"],
                           "reported", None))
    f = r.get("fixed_costs")
    if f:
        w, c = f["warm"], f["cold"]
        heavy = (w["evaluate_s"] + w["before_loop_s"]) / w["outside_s"]
        rows.append(Target("Fixed costs: `ganpipe run` on mnist5k outside its training loop, warm home (before / "
                           "evaluate / register / generate)",
                           f"{w['outside_s']:.0f} s ({w['before_loop_s']:.0f} / {w['evaluate_s']:.0f} / "
                           f"{w['register_s']:.0f} / {w['generate_s']:.0f}); fresh home {c['outside_s']:.0f} s",
                           w["outside_s"], "<= 30 s", w["outside_s"] <= 30,
                           f"the protocol's evaluation ({w['evaluate_s']:.0f} s: CAS's three classifiers, CPU-bound "
                           f"on the machine's cores) and the time before the loop ({w['before_loop_s']:.0f} s: Ray's "
                           f"node and the task's process) are {heavy:.0%} of it (\"Fixed costs of `ganpipe run`\")"))
    return rows


def hardware_rows(amx: bool, cuda: bool) -> list[Target]:
    """The targets on hardware of their own, which this run does not time: each row names the command
    that measures it and says whether this machine has the hardware."""
    return [Target("Time to quality in bfloat16 on an AMX CPU (`python benchmarks/time_to_target.py`, about 20 "
                   "minutes)", "run it on this CPU (AMX: `train.precision: auto` takes bf16)" if amx
                   else "not measured: this CPU has no AMX (`train.precision: auto` takes fp32)", None,
                   "recorded beside fp32's", None),
            Target("GPU path: the step, one Ray Train worker, `ganpipe run` and the batch stage on the GPU "
                   "(`bash benchmarks/gpu_check.sh`, under 8 minutes)",
                   "run it on this machine (a CUDA device)" if cuda else "not measured: no CUDA device here", None,
                   "batch stage >= 0.6x the bare forward pass on the GPU", None)]


def table(rows: list[Target]) -> str:
    """The printed table: each target's measurement, goal and mark; a target not met says why."""
    mark = {True: "met", False: "**not met**", None: "-"}
    lines = ["| target | measured | goal | |", "|---|---|---|---|"]
    for t in rows:
        why = f": {t.why}" if t.met is False and t.why else ""
        lines.append(f"| {t.what} | {t.measured} | {t.goal} | {mark[t.met]}{why} |")
    return "\n".join(lines)


def table_rows(md: str) -> list[str]:
    """The measured rows of a benchmark's output file, without its headings and table headers."""
    return [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| date ")]


def replace_section(md: str, section: str) -> str:
    """`md` with the text between the run_all markers replaced (the section appended if absent)."""
    block = f"{START}\n{section}\n{END}"
    if START in md and END in md:
        return md[:md.index(START)] + block + md[md.index(END) + len(END):]
    return md.rstrip("\n") + "\n\n## All targets: `python benchmarks/run_all.py`\n\n" + block + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs, to check that every benchmark works")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument("--results", default=None, help="folder of each benchmark's numbers and rows (default: a new "
                                                     "temporary one); with --only, the others are read from it")
    ap.add_argument("--out", default=str(BENCHMARKS_MD))
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))  # as a script only: benchmarks/ holds a datasets.py that tests must not import
    from record import cpu_model

    tmp = Path(a.results or tempfile.mkdtemp(prefix="ganpipe-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"results in {tmp}", flush=True)
    results = {}
    for name in RUNS:
        out, rows = tmp / f"{name}.json", tmp / f"{name}.md"
        if name in a.only.split(","):
            args = RUNS[name][1 if a.quick else 0]
            print(f"== {name}: python benchmarks/{SCRIPT[name]} {' '.join(args)}", flush=True)
            rows.unlink(missing_ok=True)
            subprocess.run([sys.executable, str(HERE / SCRIPT[name]), *args, "--out", str(rows), "--json", str(out)],
                           check=True)
        if out.exists():
            results[name] = json.loads(out.read_text())
    import torch

    from pipelines.config.build import precision

    summary = table(targets(results) + hardware_rows(precision("auto", "cpu") == "bf16", torch.cuda.is_available()))
    print(summary)
    if a.quick:
        return  # short runs are not measurements: nothing is recorded
    section = (f"Latest full run, {datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores "
               f"(`python benchmarks/run_all.py`):\n\n{summary}\n\nThe benchmarks' own rows from that run:\n\n"
               f"| date | what | baseline | ganpipe | ratio | machine |\n|---|---|---|---|---|---|\n"
               + "\n".join(row for r in (tmp / f"{n}.md" for n in RUNS) if r.exists()
                           for row in table_rows(r.read_text())))
    path = Path(a.out)
    path.write_text(replace_section(path.read_text() if path.exists() else "# Benchmarks\n", section))


if __name__ == "__main__":
    main()
