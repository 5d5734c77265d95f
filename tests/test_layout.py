"""`ray.layout: auto`: which splits of one global batch a local CPU run considers, when it chooses, the
fastest measured one taken and cached, and a resumed run keeping its own layout."""
import json

import pytest

from gan_core.data import load_dataset
from pipelines.config import load_config
from pipelines.config.build import build_game
from pipelines.services import checkpoints
from pipelines.stages.train import layout
from pipelines.stages.train.layout import Layout


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(tmp_path, *extra):
    return load_config(None, ["data.source=digits", "model.g_width=8", "model.d_width=8",
                              f"ray.layout_cache={tmp_path / 'layouts.json'}", *extra])


def test_candidates_split_the_per_cpu_global_batch(tmp_path):
    cfg = _cfg(tmp_path, "train.batch_size=64")
    assert layout.candidates(cfg, 2) == [Layout(2, 1, 64), Layout(1, 2, 128)]
    assert layout.candidates(cfg, 4) == [Layout(4, 1, 64), Layout(2, 2, 128), Layout(1, 4, 256)]
    assert layout.candidates(cfg, 3) == [Layout(3, 1, 64), Layout(1, 3, 192)]
    # Two CPUs per worker on 4 CPUs: 2 workers fit; the other split is one worker with all 4 threads.
    two = _cfg(tmp_path, "train.batch_size=64", "ray.cpus_per_worker=2")
    assert layout.candidates(two, 2) == [Layout(2, 2, 64), Layout(1, 4, 128)]
    for options in (layout.candidates(cfg, 4), layout.candidates(two, 2)):
        assert {o.workers * o.batch for o in options} == {options[0].workers * options[0].batch}
        assert {o.workers * o.threads for o in options} == {options[0].workers * options[0].threads}


@pytest.mark.parametrize("extra", [["ray.num_workers=2"], ["ray.use_gpu=true"], ["ray.address=127.0.0.1:6379"],
                                   ["ray.layout=per_cpu"], ["ray.cpus_per_worker=0.5"]])
def test_auto_applies_only_to_a_local_cpu_run_with_workers_unset(tmp_path, extra):
    assert layout.applies(_cfg(tmp_path))
    assert not layout.applies(_cfg(tmp_path, *extra))


def test_the_fastest_measured_layout_is_taken_said_and_cached(tmp_path, digits, monkeypatch):
    rates = {Layout(2, 1, 32): [900.0, 950.0], Layout(1, 2, 64): [1200.0, 700.0]}
    measured = []

    class NoProcesses:
        def __init__(self, cfg, data, options):
            started.append(options)

        def rate(self, option):  # each layout's rounds, in turn
            measured.append(option)
            return rates[option][(sum(o == option for o in measured) - 1) % 2]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    started = []
    monkeypatch.setattr(layout, "Probes", NoProcesses)
    cfg, said = _cfg(tmp_path, "train.batch_size=32", "train.precision=fp32"), []
    chosen = layout.choose(cfg, digits, 2, str(tmp_path / "runs" / "new"), say=said.append)
    # Two rounds, alternating; each layout's best round counts (a slow round is the machine's noise).
    assert measured == [Layout(2, 1, 32), Layout(1, 2, 64)] * 2 and started == [[Layout(2, 1, 32), Layout(1, 2, 64)]]
    assert (chosen.ray.num_workers, chosen.ray.cpus_per_worker, chosen.train.batch_size) == (1, 2.0, 64)
    assert said == ["train: layout 1 worker x 2 threads, batch 64 per worker, fp32 step: 1,200 images/s against 2 workers x "
                    "1 thread, batch 32 per worker 950 (measured now; ray.layout=per_cpu for one worker per CPU)"]
    # The same machine and model: the cache answers, nothing is measured again.
    said.clear()
    again = layout.choose(cfg, digits, 2, str(tmp_path / "runs" / "other"), say=said.append)
    assert len(measured) == 4 and again.ray.num_workers == 1 and "cached in" in said[0]
    # The step's arithmetic is part of its speed: bf16 is another entry, measured afresh.
    layout.choose(_cfg(tmp_path, "train.batch_size=32", "train.precision=bf16"), digits, 2,
                  str(tmp_path / "runs" / "half"), say=said.append)
    assert len(measured) == 8 and "measured now" in said[-1]
    # Another model is another entry: measured afresh; here the per-CPU split wins.
    measured.clear()
    rates.update({Layout(2, 1, 32): [1500.0, 1400.0]})
    wider = layout.choose(_cfg(tmp_path, "train.batch_size=32", "model.g_width=16"), digits, 2,
                          str(tmp_path / "runs" / "x"), say=said.append)
    assert len(measured) == 4 and (wider.ray.num_workers, wider.train.batch_size) == (2, 32)
    assert len(json.loads((tmp_path / "layouts.json").read_text())) == 3
    # Several workers must measure 10% faster than one: 1,040 against 990 is not enough.
    measured.clear()
    rates.update({Layout(2, 1, 32): [1000.0, 1040.0], Layout(1, 2, 64): [990.0, 980.0]})
    said.clear()
    close = layout.choose(_cfg(tmp_path, "train.batch_size=32", "model.g_width=24", "train.precision=bf16"), digits,
                          2, str(tmp_path / "runs" / "y"), say=said.append)
    assert (close.ray.num_workers, close.train.batch_size) == (1, 64)
    assert said == ["train: layout 1 worker x 2 threads, batch 64 per worker, bf16 step: 990 images/s against 2 workers x "
                    "1 thread, batch 32 per worker 1,040 (measured now; several workers are taken when 10% "
                    "faster; ray.layout=per_cpu for one worker per CPU)"]
    # Configured workers, or the per-CPU layout asked for: nothing measured, one worker per CPU.
    assert layout.choose(_cfg(tmp_path, "ray.num_workers=2"), digits, 2, "x").ray.num_workers == 2
    fixed = layout.choose(_cfg(tmp_path, "ray.layout=per_cpu", "train.batch_size=32"), digits, 2, "x")
    assert (fixed.ray.num_workers, fixed.train.batch_size, len(measured)) == (2, 32, 4)


def test_the_probe_starts_each_layouts_processes_once_and_times_them_in_turn(tmp_path, digits, monkeypatch):
    """The real probe: one process for 1 x 2, two (a gloo group) for 2 x 1, started together, each
    layout timed twice in the same processes (a positive rate each time), all gone after."""
    monkeypatch.setattr(layout, "PROBE_STEPS", 3)
    monkeypatch.setattr(layout, "WARMUP_STEPS", 1)
    cfg = _cfg(tmp_path, "train.batch_size=16", "model.g_width=8", "model.d_width=8", "train.precision=fp32")
    options = layout.candidates(cfg, 2)
    assert options == [Layout(2, 1, 16), Layout(1, 2, 32)]
    with layout.Probes(cfg, digits, options) as probes:
        assert len(probes.procs) == 3 and all(p.is_alive() for p in probes.procs)
        rates = [probes.rate(o) for o in options * 2]
        pids = {p.pid for p in probes.procs}
        assert all(p.is_alive() for p in probes.procs)  # the second round ran in the same processes
    assert all(r > 0 for r in rates) and len(pids) == 3
    assert not any(p.is_alive() for p in probes.procs)


def test_a_resumed_run_keeps_the_layout_of_its_checkpoints(tmp_path, digits, monkeypatch):
    monkeypatch.setattr(layout, "Probes", lambda *a: pytest.fail("a resumed run is not measured again"))
    trained = _cfg(tmp_path, "ray.num_workers=1", "ray.cpus_per_worker=2", "train.batch_size=64")
    train, _ = digits.split(trained.data.holdout_fraction, trained.seed)
    game, _ = build_game(trained, train)
    run_dir = tmp_path / "runs" / "r"
    (run_dir / checkpoints.folder_name(20)).mkdir(parents=True)
    checkpoints.save(run_dir / checkpoints.folder_name(20), game.state_dict(), 20, trained.model_dump(mode="json"),
                     0)
    said = []
    cfg = layout.choose(_cfg(tmp_path, "train.batch_size=32"), digits, 2, str(run_dir), say=said.append)
    assert (cfg.ray.num_workers, cfg.ray.cpus_per_worker, cfg.train.batch_size) == (1, 2.0, 64)
    assert said == ["train: layout 1 worker x 2 threads, batch 64 per worker, as the run's checkpoints were trained"]


def test_the_cache_key_follows_every_setting_of_the_step(tmp_path, digits):
    """A layout timed under other step settings is not reused: R1 and its interval, DiffAugment,
    consistency, mode seeking, jitter, k, precision, the model all reach the key; the learning rates
    (no cost) do not."""
    base = _cfg(tmp_path)
    options = layout.candidates(base, 2)
    key = layout.cache_key(base, digits, options)
    for change in ["train.r1=3.5", "train.r1_every=7", "train.augment=translation", "train.consistency=1.0",
                   "train.mode_seeking=1.0", "train.real_jitter=0.5", "train.k=3", "train.precision=bf16" if layout.precision("auto") == "fp32" else "train.precision=fp32",
                   "train.reuse_fake=true", "model.d_width=16"]:
        assert layout.cache_key(_cfg(tmp_path, change), digits, options) != key, change
    assert layout.cache_key(_cfg(tmp_path, "train.lr_g=0.01"), digits, options) == key


def test_a_run_laid_out_as_one_worker_trains_as_one_ray_task_and_every_other_under_ray_train(tmp_path, monkeypatch):
    """`in_one_task`: a run `ray.layout: auto` laid out (`applies` before the choice) whose layout is one
    worker, with local checkpoints and in-memory data, is one Ray task; several workers, workers set in
    the config, object storage or streamed data go to a TorchTrainer (and a workflow starts no Ray and
    no imports ahead for them: `warm_start`)."""
    from pipelines.stages.train.driver import in_one_task
    from pipelines.stages.train.layout import with_layout

    cfg = _cfg(tmp_path)
    one, two = with_layout(cfg, Layout(1, 2, 128)), with_layout(cfg, Layout(2, 1, 64))
    assert layout.applies(cfg) and in_one_task(one, laid_out=True)
    assert not in_one_task(two, laid_out=True)
    set_in_config = _cfg(tmp_path, "ray.num_workers=1")
    assert not layout.applies(set_in_config) and not in_one_task(set_in_config, laid_out=False)
    s3 = with_layout(_cfg(tmp_path, "ray.storage_path=s3://bucket/runs"), Layout(1, 2, 128))
    assert not in_one_task(s3, laid_out=True)
    streamed = with_layout(_cfg(tmp_path, f"data.source=imagefolder:{tmp_path}", "data.streaming=on"),
                           Layout(1, 2, 128))
    assert not in_one_task(streamed, laid_out=True)
    # A workflow starts Ray and the worker's imports early only for a run that can be one task.
    from pipelines.services import runtime
    from pipelines.stages.train.driver import warm_start

    started = []
    monkeypatch.setattr(runtime, "init_ray", lambda *a, **k: started.append(a))
    for other in ("ray.num_workers=1", "ray.storage_path=s3://bucket/runs", "ray.use_gpu=true",
                  "ray.address=10.0.0.1:6379", f"data.source=imagefolder:{tmp_path}"):
        extra = ["data.streaming=on"] if other.startswith("data.source") else []
        assert warm_start(_cfg(tmp_path, other, *extra)) is None, other
    assert started == []
