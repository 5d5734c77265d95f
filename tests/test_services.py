"""Checkpoint files with checksums, the Ray runtime's address rules, the layers' import direction,
the z/y sampler and the metric table."""
import ast
import json
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_core import labels_for_rows, latent_rows
from gan_core.metrics import METRICS, TRAINING_METRICS, is_better, within
from pipelines.services import checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _ckpt(folder: Path, iteration: int, world: int = 2) -> Path:
    folder.mkdir(parents=True)
    state = {"G": {"w": torch.ones(3) * iteration}, "D": {}, "opt_g": {}, "opt_d": {}}
    for rank in range(world):
        checkpoints.save(folder, state, iteration, {"seed": 0}, rank)
    return folder


def test_checkpoints_carry_checksums_and_a_damaged_one_is_skipped_for_the_newest_good(tmp_path):
    run = tmp_path / "run"
    _ckpt(run / "checkpoint_00000010", 10)
    newest = _ckpt(run / "checkpoint_00000020", 20)
    assert (newest / "state.pt.sha256").is_file() and (newest / "rng_rank1.pt.sha256").is_file()
    assert checkpoints.latest_loadable(run, 2)[1]["iteration"] == 20
    data = bytearray((newest / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (newest / "state.pt").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checkpoint_00000020 skipped: state.pt does not match its sha256"):
        folder, state = checkpoints.latest_loadable(run, 2)
    assert folder.name == "checkpoint_00000010" and state["iteration"] == 10
    good, damaged = checkpoints.scan(run, 2)
    assert [p.name for p in good] == ["checkpoint_00000010"] and list(damaged) == [newest]
    with pytest.raises(checkpoints.CheckpointError, match="checkpoint_00000020/state.pt: state.pt does not match"):
        checkpoints.load_state(newest)
    # A folder cut short (a rank's file without its checksum) is incomplete, not loaded.
    (run / "checkpoint_00000010" / "rng_rank1.pt.sha256").unlink()
    with pytest.warns(UserWarning) as caught:
        assert checkpoints.latest_loadable(run, 2) is None
    said = sorted(str(w.message).split(": ", 1)[1] for w in caught)
    assert said == ["rng_rank1.pt has no checksum (written incompletely)",
                    "state.pt does not match its sha256 (damaged)"], said


def test_driver_names_damaged_checkpoints_and_refuses_when_none_is_good(tmp_path, capsys):
    from pipelines.stages.train.driver import TrainingError, check_resumable

    run = tmp_path / "run"
    _ckpt(run / "checkpoint_00000010", 10)
    bad = _ckpt(run / "checkpoint_00000020", 20)
    (bad / "rng_rank0.pt").write_bytes(b"cut")
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps({  # Ray Train's list, both registered
        "checkpoint_results": [{"checkpoint_dir_name": "checkpoint_00000020"},
                               {"checkpoint_dir_name": "checkpoint_00000010"}],
        "checkpoint_report_indices": [1, 0], "latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_00000020"},
        "pending_training_results": [], "pending_validation_specs": [],
        "validated_checkpoint_dir_names": ["checkpoint_00000020"]}))
    check_resumable(str(run), 2)
    assert "checkpoint_00000020 is skipped (rng_rank0.pt does not match its sha256 (damaged)); moved to " \
        f"{run / 'damaged' / 'checkpoint_00000020'}" in capsys.readouterr().err
    assert (run / "damaged" / "checkpoint_00000020" / "rng_rank0.pt").read_bytes() == b"cut"
    snap = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    assert snap["checkpoint_results"] == [{"checkpoint_dir_name": "checkpoint_00000010"}]
    assert snap["checkpoint_report_indices"] == [0] and snap["validated_checkpoint_dir_names"] == []
    assert snap["latest_checkpoint_result"] == {"checkpoint_dir_name": "checkpoint_00000010"}
    (run / "checkpoint_00000010" / "state.pt").write_bytes(b"cut")
    with pytest.raises(TrainingError, match="every checkpoint of .* is damaged"):
        check_resumable(str(run), 2)


def test_a_file_that_is_not_a_checkpoint_is_one_error_naming_it(tmp_path):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(checkpoints.CheckpointError, match=r"noise\.pt: not a readable ganpipe checkpoint"):
        checkpoints.load_state(noise)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"G": Evil(), "iteration": 1}, evil, pickle_module=pickle)
    with pytest.raises(checkpoints.CheckpointError, match=r"evil\.pt: not a readable ganpipe checkpoint"):
        checkpoints.load_state(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(checkpoints.CheckpointError, match=r"other\.pt: not a ganpipe checkpoint"):
        checkpoints.load_state(other)


def test_evaluate_cli_names_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    from pipelines.cli import main

    noise = tmp_path / "some.pt"
    noise.write_bytes(b"\x00\x01random bytes" * 50)
    code = main(["evaluate", "--model", str(noise), "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "some.pt: not a readable ganpipe checkpoint" in err


def test_an_empty_address_starts_a_fresh_local_ray_never_a_stale_one(monkeypatch):
    """ray.init() with no address joins the last `ray start` found on disk (a dead one hangs)."""
    import ray

    from pipelines.services import runtime

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runtime.init_ray("")
    assert calls[-1]["address"] == "local"


def test_the_command_stops_its_local_ray_with_the_monitor_killed_first():
    """`runtime.stop_ray` (the command's end) kills the autoscaler's monitor of a local Ray with the
    dashboard (a sweep's: the only local one with a monitor) while the rest still runs (Ray's own
    shutdown would wait a second for it to exit on SIGTERM), and with the workers' logs on the terminal
    (-v) leaves the rest to Ray's exit handler; without them it shuts the whole node down itself."""
    script = """
import json
import ray
import ray._private.worker as w
from pipelines.services import runtime
runtime.init_ray("", dashboard=True)
procs = {kind: [i.process for i in infos] for kind, infos in w._global_node.all_processes.items()}
runtime.stop_ray(logs_to_driver=True)
first = {"up": ray.is_initialized(), "monitor": procs["monitor"][0].returncode,
         "others": sorted(k for k, ps in procs.items() if k != "monitor" and any(p.poll() is None for p in ps))}
runtime.stop_ray()
print(json.dumps({"first": first, "up": ray.is_initialized(),
                  "left": sorted(k for k, ps in procs.items() if any(p.poll() is None for p in ps))}))
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"]["up"] and got["first"]["monitor"] == -9
    assert {"raylet", "gcs_server"} <= set(got["first"]["others"])
    assert not got["up"] and got["left"] == []


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_joining_a_dead_cluster_is_one_clear_error_within_the_timeout(form):
    from pipelines.services.runtime import ClusterUnreachable, check_address

    address = form.format(port=_dead_port())
    start = time.monotonic()
    with pytest.raises(ClusterUnreachable, match=f"Ray cluster at {address} does not answer"):
        check_address(address, 2.0)
    assert time.monotonic() - start < 5
    with pytest.raises(ClusterUnreachable, match="expected HOST:PORT"):
        check_address("somewhere", 1.0)


LAYERS = {"errors": 0, "config": 1, "services": 2, "stages": 3, "workflow": 4, "jobs": 4, "cli": 5, "ui": 5}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module, line) of every import in a pipelines module."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
    return out


def test_pipelines_imports_point_down_the_layers_only():
    wrong = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        parts = path.relative_to(ROOT / "pipelines").parts
        if parts[0] == "__init__.py":
            continue
        mine = LAYERS[parts[0].removesuffix(".py")]
        for name, line in _imports(path):
            if name.startswith("pipelines."):
                theirs = LAYERS[name.split(".")[1]]
                if theirs > mine:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert wrong == []


def test_the_import_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = ROOT / "pipelines" / "services" / "_probe_upward.py"
    fake.write_text("from ..stages import train\n")
    try:
        with pytest.raises(AssertionError, match="_probe_upward.py:1 imports pipelines.stages"):
            test_pipelines_imports_point_down_the_layers_only()
    finally:
        fake.unlink()


def test_row_latents_depend_on_seed_and_row_only():
    ids = np.arange(0, 3000)
    whole = latent_rows(ids, seed=7, z_dim=16)
    pieces = torch.cat([latent_rows(ids[i:i + 333], 7, 16) for i in range(0, 3000, 333)])
    assert torch.equal(whole, pieces)
    shuffled = np.random.default_rng(0).permutation(ids)
    assert torch.equal(latent_rows(shuffled, 7, 16), whole[shuffled])
    assert not torch.equal(latent_rows(ids[:10], 8, 16), whole[:10])
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05


def test_rows_generator_folds_batchnorm_and_draws_the_plain_generators_images():
    from gan_core import ModelSpec, build_models, render_rows, rows_generator
    from gan_core.metrics import SmallCNN
    from gan_core.models import for_inference
    from tests.helpers import trained_batchnorm

    torch.manual_seed(0)
    g, _ = build_models(ModelSpec("dcgan", 16, (1, 28, 28), 3, 8, 8))
    g = trained_batchnorm(g)
    ids, y = np.arange(64), torch.arange(64) % 3
    plain = render_rows(g.eval(), ids, 5, y)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == 2
    keys = set(g.state_dict())
    fast = rows_generator(g)
    assert fast is not g and set(g.state_dict()) == keys and not fast.training  # g itself unchanged
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert next(p for p in fast.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(render_rows(fast, ids, 5, y), plain, atol=1e-5)
    for shape in ((1, 28, 28), (3, 32, 32), (3, 64, 64)):  # the 1x1 input, a wide middle layer, the image layer
        g, _ = build_models(ModelSpec("dcgan", 16, shape, None, 8, 8))
        g = trained_batchnorm(g)
        ids = np.arange(32)
        assert torch.allclose(render_rows(rows_generator(g), ids, 1), render_rows(g.eval(), ids, 1), atol=1e-5), shape
    net = trained_batchnorm(SmallCNN(1, 10)).eval()
    x = torch.rand(32, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        before = net(x)
        folded = for_inference(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(x.contiguous(memory_format=torch.channels_last)), before, atol=1e-5)


def test_row_labels_have_the_exact_counts_asked_for():
    counts = [5, 0, 17, 3]
    ids = np.arange(25)
    y = labels_for_rows(ids, counts, seed=1)
    assert np.bincount(y.numpy(), minlength=4).tolist() == counts
    assert torch.equal(labels_for_rows(ids[10:20], counts, 1), y[10:20])
    with pytest.raises(ValueError, match=r"row ids must lie in \[0, 25\)"):
        labels_for_rows(np.array([25]), counts, 1)


def test_the_row_shuffle_is_a_permutation_and_costs_only_the_rows_asked_for():
    import tracemalloc

    from gan_core.sampling import shuffled_index

    for total in (1, 2, 3, 7, 64, 1000, 4097):
        for seed in (0, 5):
            assert sorted(shuffled_index(np.arange(total), total, seed)) == list(range(total)), (total, seed)
    assert not np.array_equal(shuffled_index(np.arange(1000), 1000, 0), shuffled_index(np.arange(1000), 1000, 1))
    y = labels_for_rows(np.arange(100), [1000] * 10, seed=0).numpy()
    assert len(set(y.tolist())) == 10 and max(np.bincount(y)) < 25  # shuffled, not laid out class by class
    # A row of a dataset of 10^12 rows: no memory in proportion to the dataset.
    tracemalloc.start()
    far = labels_for_rows(np.array([10**12 - 1, 0]), [10**11] * 10, seed=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20 and far.tolist() == labels_for_rows(np.array([10**12 - 1, 0]), [10**11] * 10, 3).tolist()


def test_metric_table_directions():
    assert TRAINING_METRICS == {"fd": "min", "label_fidelity": "max"}
    assert is_better("fd", 1.0, 2.0) and not is_better("fd", 2.0, 1.0)
    assert is_better("label_fidelity", 0.9, 0.8)
    assert all(m.meaning and m.better for m in METRICS.values())
    with pytest.raises(ValueError, match="density"):
        is_better("density", 1.0, 0.5)
    assert within("fd", 0.42, 0.40, 0.05) and not within("fd", 0.43, 0.40, 0.05) and within("fd", 0.3, 0.4, 0)
    assert within("label_fidelity", 0.91, 0.95, 0.05) and not within("label_fidelity", 0.90, 0.95, 0.05)


def test_the_quality_bar_is_judged_against_the_real_values_beside_each_metric():
    from gan_core.metrics import quality_bar
    from pipelines.stages.evaluate import table

    m = {"fd": 0.50, "fd_real": 0.34, "precision": 0.95, "precision_real": 0.96, "recall": 0.85,
         "recall_real": 0.95, "coverage": 0.92, "coverage_real": 0.98, "label_fidelity": 0.94,
         "label_fidelity_real": 0.94, "cas_ratio": 0.94, "density": 0.9, "density_real": 1.0,
         "classifier_holdout_accuracy": 0.94, "samples": 500}
    bar = quality_bar(m)
    assert set(bar) == {"fd", "precision", "recall", "coverage", "label_fidelity", "cas_ratio"}
    assert bar["fd"] == pytest.approx((0.50, 0.51, True)) and bar["recall"] == pytest.approx((0.85, 0.855, False))
    assert bar["coverage"][2] is False and bar["label_fidelity"][2] is True and bar["cas_ratio"][2] is False
    assert "quality bar (docs/quality.md): 3 of 6 met; not met: recall 0.85 (bar 0.855), coverage 0.92" in table(m)
    assert quality_bar({"fd": 0.3}) == {}  # no real value beside it: nothing to judge


def test_the_eval_keys_of_cas_reach_its_classifiers_and_name_the_protocol(monkeypatch):
    """`eval.cas_seeds` and `eval.cas_epochs` are what the protocol's CAS trains with, and the protocol
    string carries both: an evaluation under other classifiers is not taken for this one."""
    from pipelines.config import load_config
    from pipelines.stages import evaluate

    seen = {}
    monkeypatch.setattr(evaluate, "feature_net", lambda *a, **k: "net")
    monkeypatch.setattr(evaluate, "full_metrics", lambda *a, **k: seen.update(k) or {})

    class Data:
        def split(self, fraction, seed):
            return "train", "holdout"

    cfg = load_config(None, ["eval.cas_seeds=2", "eval.cas_epochs=5"])
    evaluate.protocol_metrics(cfg, Data(), "x", "y")
    assert (seen["cas_seeds"], seen["cas_epochs"], seen["cas"]) == (2, 5, True)
    assert ";cas_seeds=2;cas_epochs=5;" in evaluate.protocol(cfg, 100)
    assert evaluate.protocol(cfg, 100) != evaluate.protocol(load_config(None, ["eval.cas_seeds=2"]), 100)


def test_a_new_sqlite_store_is_seeded_from_the_schema_template_and_an_old_one_is_left_alone(tmp_path, monkeypatch):
    """A fresh folder's store is a copy of an empty store with MLflow's schema (made once, by MLflow):
    MLflow's migrations do not run again, and the copy makes its own default experiment (its artifact
    root from the working directory, its time its own). An existing store is never replaced."""
    import os

    import mlflow.store.db.utils as db_utils

    from pipelines.services import tracking

    migrated = []
    initialize = db_utils._initialize_tables
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda engine: (migrated.append(engine.url), initialize(engine)))
    monkeypatch.setattr(tracking, "SCHEMA_CACHE", tmp_path / "cache")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    tracking.experiment_id(f"sqlite:///{first / 'mlflow.db'}", "made")
    template = next((tmp_path / "cache").glob("schema-*.db"))
    assert len(migrated) == 1 and str(template.parent) not in str(first)  # once, for the template
    os.utime(template, (1_000_000_000, 1_000_000_000))
    monkeypatch.chdir(second)  # MLflow's default artifact root: ./mlruns of the working directory
    uri = f"sqlite:///{second / 'mlflow.db'}"
    exp = tracking.experiment_id(uri, "copied")
    c = tracking.client(uri)
    run = c.create_run(exp)
    c.log_metric(run.info.run_id, "x", 1.0)
    assert len(migrated) == 1
    default = c.get_experiment("0")
    assert default.artifact_location.startswith(str(second)) and default.creation_time > 1_000_000_000_000
    assert [e.name for e in c.search_experiments()] == ["copied", "Default"]
    assert c.get_metric_history(run.info.run_id, "x")[0].value == 1.0
    before = (second / "mlflow.db").read_bytes()
    tracking.seed_sqlite(uri)
    assert (second / "mlflow.db").read_bytes() == before
    tracking.seed_sqlite(f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}")
    assert not (tmp_path / "absent").exists()
    monkeypatch.chdir(tmp_path / "cache")
    for other in (f"sqlite:///{second / 'with.db'}?timeout=30", "sqlite:///:memory:", "http://127.0.0.1:1"):
        tracking.seed_sqlite(other)
    assert sorted(p.name for p in second.iterdir() if p.is_file()) == ["mlflow.db"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [template.name]
    assert not [p for p in second.iterdir() if p.name.endswith(".part")]


def test_a_name_is_held_by_one_live_process_and_a_dead_holder_blocks_nothing(tmp_path):
    import os
    import signal

    from pipelines.services import names
    from tests.helpers import holder

    storage = str(tmp_path / "runs")
    proc = holder(f"with names.hold('run', 'a', {storage!r}, 'train.run_name'):")
    try:
        with pytest.raises(names.NameHeld, match=rf"train.run_name='a' is in use by process {proc.pid} on "):
            with names.hold("run", "a", storage, "train.run_name"):
                pass
        with names.hold("run", "b", storage, "train.run_name"):  # another name is free
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # dies holding the lock, its file left behind
        proc.wait()
    assert names.lock_path("run", "a", storage).exists()
    with names.hold("run", "a", storage, "train.run_name"):  # the kernel released the dead holder's lock
        assert '"pid": %d' % os.getpid() in names.lock_path("run", "a", storage).read_text()
    assert not names.lock_path("run", "a", storage).exists()
    # An object-store storage path keeps its locks on this machine, keyed by the URI.
    assert names.lock_path("sweep", "s", "s3://bucket/runs").parts[-4:-2] == ("ganpipe", "locks")


class _Runs:
    """The few MLflow client calls a trial's closing makes, kept in a dict."""

    def __init__(self, status: str, tags: dict):
        self.status, self.tags, self.logged = status, dict(tags), []

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def delete_tag(self, run_id, key):
        del self.tags[key]

    def set_terminated(self, run_id, status):
        self.status = status

    def log_artifact(self, run_id, path, folder):
        self.logged.append(folder)

    def run(self):
        from types import SimpleNamespace
        return SimpleNamespace(info=SimpleNamespace(run_id="r", status=self.status),
                               data=SimpleNamespace(tags=dict(self.tags)))


@pytest.mark.parametrize("status", ["RUNNING", "FAILED"])  # a stop that killed the actor, or one that raised out of fit
def test_a_trial_stopped_by_the_scheduler_is_tagged_however_the_stop_reached_it(status, tmp_path):
    from pipelines.services import contract
    from pipelines.stages.tune import _close_trial_run

    runs = _Runs(status, {})
    _close_trial_run(runs, runs.run(), {"stopped_early": True}, {"iteration": 20, "planned_iterations": 50},
                     str(tmp_path / "trial"))
    assert runs.tags == {contract.STOPPED_EARLY: "true"} and runs.status == "KILLED"
    # Interrupted once, then resumed to its planned end: the earlier tag goes, the run is finished.
    runs = _Runs("RUNNING", {contract.STOPPED_EARLY: "true"})
    _close_trial_run(runs, runs.run(), {"stopped_early": False}, {"iteration": 50, "planned_iterations": 50},
                     str(tmp_path / "trial"))
    assert runs.tags == {} and runs.status == "FINISHED"


def test_a_run_outside_ray_train_keeps_its_checkpoints_as_ray_train_keeps_them(tmp_path):
    """A one-worker run's task or sweep trial (`DirSession`): checkpoints persisted under the iteration's
    name with the metrics reported at it; pruned to the newest and the `keep` best (a folder without the
    score counts as worst); the best is what the run hands on."""
    from ray.train import Checkpoint

    from pipelines.stages.train.driver import best_checkpoint
    from pipelines.stages.train.worker import DirSession

    from pipelines.config import Config

    session = DirSession(str(tmp_path / "run"), 2, ("fd", "min"))
    for it, fd in ((10, 5.0), (20, 2.0), (30, None), (40, 3.0), (50, 9.0)):
        written = _ckpt(tmp_path / f"w{it}", it, world=1)
        checkpoints.persist(written, session.run_dir, it, {"iteration": it, **({"fd": fd} if fd else {})})
        checkpoints.prune(session.run_dir, session.keep, *session.score)
    kept = checkpoints.checkpoint_folders(session.run_dir)
    assert [checkpoints.iteration_of(f) for f in kept] == [50, 40, 20]  # the newest, then fd 2.0 and 3.0
    assert not list((tmp_path / "run").glob("*.part"))
    assert checkpoints.load_state(kept[1])["iteration"] == 40 and not checkpoints.problems(kept[1], 1)
    pairs = [(Checkpoint(str(f)), checkpoints.reported_metrics(f)) for f in kept]
    assert checkpoints.iteration_of(best_checkpoint(pairs, Config()).path) == 20
    # With a tolerance, the newest kept checkpoint within it of the best: fd 3.0 at 40 is within 60% of
    # 2.0, fd 9.0 at 50 is not.
    assert checkpoints.iteration_of(best_checkpoint(pairs, Config(train={"tolerance": 0.6})).path) == 40
    assert checkpoints.iteration_of(best_checkpoint(pairs, Config(train={"tolerance": 0.4})).path) == 20
    # Ranked by "max", keep 1: the newest and the highest fd (9.0 at 50) stay; a newest without a score
    # is kept as the newest only.
    for it, fd in ((60, 1.0), (70, 8.0)):
        checkpoints.persist(_ckpt(tmp_path / f"w{it}", it, world=1), session.run_dir, it, {"fd": fd})
    kept = checkpoints.prune(session.run_dir, 1, "fd", "max")
    assert [checkpoints.iteration_of(f) for f in kept] == [70, 50]
    checkpoints.persist(_ckpt(tmp_path / "w80", 80, world=1), session.run_dir, 80, {})
    assert [checkpoints.iteration_of(f) for f in checkpoints.prune(session.run_dir, 1, "fd", "max")] == [80, 50]


def test_ray_trains_latest_checkpoint_is_a_candidate_beside_its_best_by_score(tmp_path):
    """Ray Train's result lists the top `keep_checkpoints` by score; the latest, which it keeps besides
    them, is the newest within the tolerance when its metric is (here fd 0.35 against the best 0.33)."""
    from ray.train import Checkpoint

    from pipelines.config import Config
    from pipelines.stages.train.driver import best_checkpoint, with_latest

    ck = {it: Checkpoint(str(tmp_path / checkpoints.folder_name(it))) for it in (3000, 3400, 5200)}
    kept = [(ck[3000], {"iteration": 3000, "fd": 0.33}), (ck[3400], {"iteration": 3400, "fd": 0.334})]
    latest = {"iteration": 5200, "fd": 0.35}
    cfg = Config(train={"tolerance": 0.1})
    assert checkpoints.iteration_of(best_checkpoint(kept, cfg).path) == 3400
    assert checkpoints.iteration_of(best_checkpoint(with_latest(kept, ck[5200], latest), cfg).path) == 5200
    assert checkpoints.iteration_of(best_checkpoint(with_latest(kept, ck[5200], latest), Config()).path) == 3000
    assert with_latest(kept, ck[3400], {"fd": 9.0}) == kept and with_latest(kept, None, {}) == kept


def test_the_raylets_worker_pool_warning_stays_off_the_terminal_and_other_messages_pass(capsys):
    import ray._private.worker as ray_worker

    from pipelines.services.runtime import quiet_worker_pool_warning

    before = ray_worker.print_to_stdstream
    try:
        quiet_worker_pool_warning()
        quiet_worker_pool_warning()  # once is enough; a second call wraps nothing more
        warning = ("WARNING: 8 PYTHON worker processes have been started on node: abc with address: 10.0.0.1, "
                   "which is 4x the maximum expected startup concurrency (2).")
        ray_worker.print_to_stdstream({"lines": [warning], "pid": "raylet", "is_err": False}, ignore_prefix=False)
        ray_worker.print_to_stdstream({"lines": ["worker 12 died: out of memory"], "pid": "raylet", "is_err": False},
                                      ignore_prefix=False)
        out = capsys.readouterr().out
        assert "worker processes have been started" not in out and "worker 12 died: out of memory" in out
    finally:
        ray_worker.print_to_stdstream = before


def test_cas_trains_on_the_training_split_up_to_its_cap():
    """The protocol's samples follow the training split up to `eval.cas_max_samples` (60,000 images
    train CAS classifiers on 10,000 a side, as the table line says); mnist5k's 4,500 are below it."""
    from pipelines.config import load_config
    from pipelines.stages import evaluate

    class Data:
        def __init__(self, n):
            self.n = n

        def split_sizes(self, fraction):
            return self.n - int(self.n * fraction), int(self.n * fraction)

    cfg = load_config(None, [])
    assert evaluate.protocol_samples(cfg, Data(5000)) == 4500
    assert evaluate.protocol_samples(cfg, Data(60000)) == 10000
    assert evaluate.protocol_samples(load_config(None, ["eval.cas_max_samples=30000"]), Data(60000)) == 30000
    assert evaluate.protocol_samples(load_config(None, ["eval.cas=false"]), Data(60000)) == 2000
    line = evaluate.table({"classifier_holdout_accuracy": 0.9, "samples": 2000, "cas_samples": 10000,
                           "cas_steps": 600})
    assert ("CAS: each classifier trained on 10,000 images, generated or real, for 600 batches of 64 "
            "(eval.cas_max_samples and eval.cas_max_steps cap them)") in line
    assert "cas_max_steps=600" in evaluate.protocol(cfg, 10000)


def _module_graph(roots=("gan_core", "pipelines")) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its text (a function's imports too);
    `from . import name` counts as importing the submodule `name` where there is one."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for r in roots for p in (ROOT / r).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                names = [f"{name}.{a.name}" if f"{name}.{a.name}" in files else name for a in node.names]
            else:
                continue
            for name in names:
                while name not in files and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in files and name != module:
                    deps.add(name)
        graph[module] = deps
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_the_projects_modules():
    graph = _module_graph()
    assert len(graph) > 60 and "pipelines.services.dataset_folder" in graph["pipelines.stages.generate.writer"]
    assert import_circles(graph) == []
    # the check sees a circle, through a function's import too
    graph["pipelines.services.dataset_folder"] = graph["pipelines.services.dataset_folder"] | {
        "pipelines.stages.generate.writer"}
    assert import_circles(graph) == [["pipelines.services.dataset_folder", "pipelines.stages.generate.writer"]]


def test_one_parser_reads_every_registered_model_uri():
    from pipelines.services.contract import model_ref, model_uri, param_value, tag_value

    assert model_ref("models:/gan-generator@champion") == ("gan-generator", None, "champion")
    assert model_ref("models:/gan-generator/7") == ("gan-generator", "7", None)
    assert model_ref("runs:/abc/checkpoint") is None and model_ref("ganpipe_runs/x") is None
    assert model_uri("g", "3") == "models:/g/3" and model_uri("g", "3", "champion") == "models:/g@champion"
    assert len(param_value("x" * 7000)) == 6000 and len(tag_value("y" * 7000)) == 5000


def test_a_job_refuses_a_relative_sqlite_store_and_takes_an_absolute_one(tmp_path):
    """A cluster job's tracking store must be one every node sees: a relative SQLite file is one error
    naming the key; an absolute one and a server pass."""
    from pipelines.config import load_config
    from pipelines.errors import UserError
    from pipelines.jobs import check_shared

    shared = [f"ray.storage_path={tmp_path / 'runs'}", f"workflow.out={tmp_path / 'out'}",
              f"workflow.reports={tmp_path / 'reports'}"]
    with pytest.raises(UserError, match="mlflow.tracking_uri='sqlite:///mlflow.db' is a relative file"):
        check_shared(load_config(None, [*shared, "mlflow.tracking_uri=sqlite:///mlflow.db"]))
    for uri in (f"sqlite:///{tmp_path / 'mlflow.db'}", "http://127.0.0.1:5000"):
        check_shared(load_config(None, [*shared, f"mlflow.tracking_uri={uri}"]))


def test_the_progress_bar_draws_every_message_and_ends_without_waiting_out_its_poll():
    """At a run's end the driver wakes the bar's wait for the next message (a poll of 0.5 s) instead of
    letting it run out: no wait after the stop ends by its timeout, and every message sent is drawn."""
    import queue
    import threading

    from pipelines.stages.train import driver

    stop = threading.Event()
    drawn, late = [], []

    class Messages(queue.Queue):
        def get(self, timeout=None):
            try:
                msg = super().get(timeout=timeout)
            except queue.Empty:
                late.append(stop.is_set())
                raise
            drawn.append(msg)
            return msg

    q = Messages()
    bar = threading.Thread(target=driver._progress_bar, args=(q, stop, True), daemon=True)
    bar.start()
    q.put({"total": 10, "iteration": 0})
    q.put({"total": 10, "iteration": 10, "loss_d": 1.0, "loss_g": 1.0, "d_real": 0.5, "d_fake": 0.5, "epoch": 1})
    time.sleep(0.1)  # the bar is waiting for a third message
    driver.stop_progress_bar(bar, stop, q)
    assert not bar.is_alive()
    assert [m and m["iteration"] for m in drawn] == [0, 10, None]
    assert True not in late
