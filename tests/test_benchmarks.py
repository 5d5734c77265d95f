"""benchmarks/run_all.py: each target is judged from the benchmarks' numbers, and its section of
BENCHMARKS.md is replaced, never appended twice."""
import sys
from pathlib import Path

# appended, after site-packages: benchmarks/datasets.py must not hide Hugging Face datasets
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run_all  # noqa: E402


def _numbers(step_ratio: float, share: float, gen_ratio: float) -> dict:
    step = {"img_s": {"plain": 100.0, "game_nhwc": 95.0 * step_ratio, "game_reuse_nhwc": 100.0 * step_ratio},
            "best": "game_reuse_nhwc",
            "ratio": step_ratio, "flop_share": {"game_reuse_nhwc": share}, "compile_s": None}
    return {"game_step": {"matmul_gflops": 160.0, "w32": step, "w64": step},
            "train_1": {"ratio": 0.97}, "train_2": {"ratio": 0.90},
            "train_auto": {"ratio": 0.96, "ran": {"num_workers": 1, "cpus_per_worker": 2}},
            "generate": {"ratio": gen_ratio, "memory_ratio": 1.1, "large": {"rows": 1000}, "small": {"rows": 10},
                         "ceiling": 0.66, "fixed_s": 12.4,
                         "per_row_us": {"g_us": 68.7, "verifier_us": 42.4, "png_us": 17.0, "rest_us": 8.4}},
            "startup": {"first_s": 30.0, "bare_first_s": 10.0, "ray_share": 2 / 3, "end_s": 40.0,
                        "ray_defaults_end_s": 44.0},
            "fixed_costs": {"cold": {"outside_s": 120.0}, "warm": {"outside_s": 29.0, "before_loop_s": 10.0,
                                                                  "evaluate_s": 12.0, "register_s": 2.0,
                                                                  "generate_s": 5.0}}}


def test_each_target_is_marked_met_or_not_from_its_number():
    marks = [t.met for t in run_all.targets(_numbers(1.31, 0.55, 0.61))]
    assert marks == [True, True, None, False, True, False, True, True, True, None, True, False, False, None, True]
    assert [t.met for t in run_all.targets(_numbers(1.29, 0.61, 0.59))][:4] == [False, False, None, True]
    table = run_all.table(run_all.targets(_numbers(1.31, 0.55, 0.61)))
    assert "| 55% | >= 60% | **not met**: where the step's time goes is measured in" in table
    assert "| 1.31x | >= 1.3x (or where it goes, recorded) | met |" in table
    assert "the plain DCGAN loop, width 64 | 1.24x | reported | - |" in table  # the shipped step: 0.95 x 1.31
    assert ("Ray 67% (without Ray 10.0 s) | <= 10 s | **not met**: Ray's share, 67%: Ray Train's controller and its "
            "workers' processes; a local default run trains as one task |") in table
    assert "| 0.92x | >= 0.8x | met |" in table and "| 12 s | <= 5 s | **not met**: the job's model, data" in table
    assert "| 29 s (10 / 12 / 2 / 5); fresh home 120 s | <= 30 s | met |" in table
    # a target not met says why, from the same run's numbers where it can
    slow = _numbers(1.31, 0.55, 0.61)
    slow["fixed_costs"]["warm"].update(outside_s=40.0, before_loop_s=14.0, evaluate_s=18.0)
    assert ("| 40 s (14 / 18 / 2 / 5); fresh home 120 s | <= 30 s | **not met**: the protocol's evaluation (18 s: "
            "CAS's three classifiers, CPU-bound on the machine's cores) and the time before the loop (14 s: Ray's node "
            "and the task's process) are 80% of it") in run_all.table(run_all.targets(slow))
    low = _numbers(1.31, 0.61, 0.55)
    assert ("| 0.55x | >= 0.6x | **not met**: the per-row ceiling measured beside it is 0.66x of the bare forward "
            "pass |") in run_all.table(run_all.targets(low))
    assert all(t.why for t in run_all.targets(slow) if t.met is not None)
    assert ("| 0.66x (a row: G 69 us, verifier 42 us, PNG 17 us, Parquet and the rest 8 us; a job's fixed cost 12 s) "
            "| reported | - |") in table
    assert "(`ray.layout: auto` picked 1 worker(s) x 2 thread(s)) vs 1 process x 2 threads" in table
    # a ratio just under its goal does not print as the goal itself
    edge = _numbers(1.31, 0.61, 0.61)
    edge["train_1"]["ratio"] = 0.9488
    assert "| 0.949x | >= 0.95x | **not met**:" in run_all.table(run_all.targets(edge))
    assert run_all.times(0.95, 0.95) == "0.95x" and run_all.times(0.9612, 0.95) == "0.96x"


def test_the_targets_on_other_hardware_say_whether_this_machine_has_it():
    none = run_all.table(run_all.hardware_rows(amx=False, cuda=False))
    assert "not measured: this CPU has no AMX" in none and "not measured: no CUDA device here" in none
    both = run_all.table(run_all.hardware_rows(amx=True, cuda=True))
    assert "not measured" not in both and "`bash benchmarks/gpu_check.sh`" in both
    assert all(t.met is None for t in run_all.hardware_rows(amx=False, cuda=True))


def test_the_section_is_replaced_between_its_markers():
    md = "# Benchmarks\n\nintro\n"
    once = run_all.replace_section(md, "first")
    twice = run_all.replace_section(once + "\n## Later section\n", "second")
    assert twice.count(run_all.START) == 1 and "first" not in twice and "second" in twice
    assert twice.startswith("# Benchmarks\n\nintro") and twice.rstrip().endswith("## Later section")


def test_the_plain_loops_models_are_torchs_layers_with_the_same_weights():
    import torch

    from gan_core import ModelSpec, build_models
    from gan_core.models.dcgan import LabelChannelsConv2d
    from plain_dcgan import JoinedLabelConv2d, with_torch_layers

    g, d = build_models(ModelSpec("dcgan", 16, (1, 28, 28), 3, 8, 8))
    plain = with_torch_layers(g)
    kinds = {type(m) for m in plain.modules() if isinstance(m, torch.nn.ConvTranspose2d)}
    assert kinds == {torch.nn.ConvTranspose2d} and type(g.net[0]) is not torch.nn.ConvTranspose2d
    z, y = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        assert torch.allclose(plain.eval()(z, y), g.eval()(z, y), atol=1e-5)
    plain_d = with_torch_layers(d)
    assert type(d.body[0]) is LabelChannelsConv2d and type(plain_d.body[0]) is JoinedLabelConv2d
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(plain_d(x, y), d(x, y), atol=1e-5)


def test_the_drs_effect_is_the_acceptance_weighted_expectation():
    """drs_effect.py: weights normalized within each class, classes equal; with equal weights the
    weighted Fréchet distance (gan_core) is the plain one, and a weight of zero drops a row; the AUC of a score
    that ranks every positive first is 1, of its reverse 0."""
    import numpy as np

    import drs_effect
    from gan_core.metrics.frechet import frechet_distance

    y = np.array([0, 0, 0, 1])
    w = drs_effect._class_weights(np.array([1.0, 1.0, 2.0, 5.0]), y, 2)
    assert np.allclose(w, [0.125, 0.125, 0.25, 0.5]) and w.sum() == 1.0
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 4)), rng.normal(0.3, 1.2, size=(200, 4))
    assert abs(frechet_distance(real, fake, np.full(200, 0.3)) - frechet_distance(real, fake)) < 1e-9
    keep = np.r_[np.ones(150), np.zeros(50)]
    assert abs(frechet_distance(real, fake, keep) - frechet_distance(real, fake[:150])) < 1e-9
    target = np.array([True, True, False, False])
    assert drs_effect._auc(np.array([3.0, 2.0, 1.0, 0.0]), target) == 1.0
    assert drs_effect._auc(np.array([0.0, 1.0, 2.0, 3.0]), target) == 0.0


def test_the_datasets_table_has_every_bar_metric_with_its_interval_and_the_bars_met(tmp_path, monkeypatch):
    import importlib.util

    from PIL import Image

    # by its path: `import datasets` may be Hugging Face's, imported by another test; and with sys.path
    # restored after, since the script puts benchmarks/ first, where a later `import datasets` (Hugging
    # Face's, in the README's example) would find the benchmark
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_datasets", Path(run_all.__file__).parent / "datasets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    m = {"fd": 1.2, "fd_lo": 1.1, "fd_hi": 1.3, "fd_real": 0.2, "precision": 0.9, "precision_real": 0.8,
         "recall": 0.5, "recall_real": 0.8, "coverage": 0.7, "coverage_real": 0.9, "label_fidelity": 0.95,
         "label_fidelity_lo": 0.94, "label_fidelity_hi": 0.96, "label_fidelity_real": 0.93, "cas_ratio": 0.96}
    r = {"name": "toy", "source": "idx:/toy", "wall_s": 725.0, "loop_s": 650.4, "iterations": 6200, "metrics": m,
         "before_loop_s": 30.2, "after_loop_s": 3.1, "evaluate_s": 25.0, "register_s": 4.0, "generate_s": 12.0,
         "auto": "auto: time_budget_s 714", "stop": "stopped at iteration 6200", "measured": "2026-12-06, abc1234"}
    text = bench.table([r], "Some CPU")
    assert text.startswith("Some CPU, 2 cores; `python benchmarks/datasets.py` (each column's date and commit")
    assert "| measured | 2026-12-06, abc1234 |" in text
    assert "| wall, command to dataset | 12 min 05 s |" in text and "| time outside the training loop | 75 s |" in text
    assert "| of which: before the loop, after it, evaluate, register, generate | 30 / 3 / 25 / 4 / 12 s |" in text
    assert "| fd | 1.200 (1.100-1.300); real 0.200 |" in text and "| recall | 0.500; real 0.800 |" in text
    assert "| bars met | 3 of 6 |" in text  # precision, label fidelity, CAS ratio
    # the jpeg-mixed folder: classes at their counts, JPEGs of mixed sides
    cifar = tmp_path / "cifar"
    for cls in bench.JPEG_CLASSES:
        (cifar / "test" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32)).save(cifar / "test" / cls / f"{i}.png")
    out = bench.make_jpeg_mixed(cifar, tmp_path / "mixed")
    sizes = {Image.open(f).size for f in out.rglob("*.jpg")}
    assert len(list(out.rglob("*.jpg"))) == 15 and len(sizes) > 1 and all(20 <= w <= 64 for w, _ in sizes)


def test_a_recorded_row_goes_before_the_generated_section_never_after_it():
    from record import GENERATED, RECENT, add_row

    md = f"# Benchmarks\n\nintro\n\n## Game step\n\n| a |\n\n{GENERATED}\n\n{run_all.START}\nx\n{run_all.END}\n"
    once = add_row(md, "| 2026-12-06 | one |")
    twice = add_row(once, "| 2026-12-06 | two |")
    assert twice.rstrip().endswith(run_all.END) and twice.count(RECENT) == 1
    assert twice.index(RECENT) < twice.index("| 2026-12-06 | one |") < twice.index("| 2026-12-06 | two |") \
        < twice.index(GENERATED)
    assert add_row("# Benchmarks\n\n", "| r |").rstrip().endswith("| r |")


def _wheel(folder: Path, name: str, files: dict[str, tuple[bytes, int]]) -> Path:
    import zipfile

    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        for inside, (data, mode) in files.items():
            info = zipfile.ZipInfo(inside)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return path


def test_the_gpu_bundle_packs_what_the_gpu_machine_lacks_with_programs_still_executable(tmp_path):
    import re
    import tarfile
    from importlib.metadata import version

    import pytest

    import gpu_bundle

    reqs = gpu_bundle.requirements()  # pyproject's dependencies at the versions the tests run with, but PyTorch's
    assert not {"torch", "torchvision"} & {re.split(r"[\[=]", r)[0] for r in reqs}
    assert f"ray[train,tune,data,default]=={version('ray')}" in reqs and f"mlflow=={version('mlflow')}" in reqs
    ray = _wheel(tmp_path, "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
                 {"ray/__init__.py": (b"", 0o644), "ray/core/src/ray/raylet/raylet": (b"#!/bin/sh\n", 0o755),
                  "ray/jars/ray_dist.jar": (b"java", 0o644), "ray/rllib/__init__.py": (b"", 0o644)})
    others = [_wheel(tmp_path, n, {"x/__init__.py": (b"", 0o644)}) for n in
              ("numpy-2.5.2-cp312-cp312-manylinux_2_28_x86_64.whl", "torch-2.11.0-cp312-cp312-linux_x86_64.whl",
               "nvidia_cublas-13.0-py3-none-manylinux_2_27_x86_64.whl")]
    kept = gpu_bundle.keep([ray, *others], gpu_bundle.present(str(gpu_bundle.PRESENT)))
    assert kept == [ray]  # numpy is on the GPU machine's list; PyTorch and CUDA's libraries always are
    out = tmp_path / "out" / "site.tar.xz"
    assert gpu_bundle.pack(kept, tmp_path / "site", out, 1.0) < 1.0
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./ray/core/src/ray/raylet/raylet"].mode & 0o111  # Ray starts it as a program
    assert "./ray/__init__.py" in members and not [m for m in members if "/jars" in m or "/rllib" in m]
    with pytest.raises(SystemExit, match=r"over --limit-mib 0.0001; its largest packages: ray-2.60.0"):
        gpu_bundle.pack(kept, tmp_path / "site2", tmp_path / "out2" / "site.tar.xz", 0.0001)
    assert list((tmp_path / "out2").iterdir()) == []  # nothing half-written left behind


def test_a_gpu_check_part_past_its_limit_is_killed_with_its_children_and_recorded(tmp_path):
    import os
    import time

    import gpu_check

    child = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(child)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    began = time.monotonic()
    ok, why = gpu_check._run("step", [sys.executable, "-c", script], 3, tmp_path / "step.log", stop_ray=False)
    assert not ok and why == "ran out of its 3 s; its log: step.log" and time.monotonic() - began < 10
    time.sleep(0.5)
    pid = int(child.read_text())
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # killed: at most a zombie until its new parent reaps it
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except ProcessLookupError:
        pass
    ok, why = gpu_check._run("worker", [sys.executable, "-c", "raise SystemExit(3)"], 10, tmp_path / "w.log",
                             stop_ray=False)
    assert not ok and why == "exit 3; its log: w.log"


def test_the_gpu_check_summary_marks_each_part_against_its_target():
    import gpu_check

    rates = {"plain loop, fp32": 1000.0, "Game.step shipped (fresh batch), fp32": 1100.0,
             "Game.step reuse_fake (the plain loop arithmetic), fp32, channels-last": 1300.0,
             "Game.step shipped (fresh batch), bf16": 1500.0,
             "Game.step reuse_fake (the plain loop arithmetic), bf16": 2000.0}
    r = {"date": "2026-12-07", "machine": "NVIDIA H100, 16 CPUs, torch 2.11", "wall_s": 401.0,
         "failed": {"worker": "ran out of its 90 s; its log: worker.log"}, "step": {"28": rates},
         "run": {"source": "mnist5k", "iterations": 30000, "loop_s": 120.0, "wall_s": 190.0, "bars_met": 6, "bars": 6},
         "batch": {"bare": 100000.0, "rows": 100000, "jobs": {"1 actor, verifier": {"rows_per_s": 55000.0},
                                                              "4 actors, verifier": {"rows_per_s": 70000.0}}}}
    text = gpu_check.summary(r)
    assert text.startswith("GPU check, 2026-12-07, NVIDIA H100, 16 CPUs, torch 2.11, 401 s in all")
    assert "| worker | failed: ran out of its 90 s; its log: worker.log | runs | **not met** |" in text
    assert "step 28x28, fp32:" in text and "| 1.30x, shipped 1.10x | reported | - |" in text
    assert "| 2.00x, shipped 1.50x | reported | - |" in text
    assert "(30,000 iterations in 120 s; 70 s outside the loop) | 6 of 6 bars in 190 s | the quality bar | met |" in text
    assert "1 actor, verifier, vs the bare G forward on the device (100000 rows/s) | 0.55x (55000 rows/s) | >= 0.6x | **not met** |" in text
    assert "| 0.70x (70000 rows/s) | >= 0.6x | met |" in text
