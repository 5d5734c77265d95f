"""A sweep on 2 cores, its length in epochs and k in its space: each trial plans its own length (a
k = 2 trial runs half the iterations of a k = 1 trial and still counts as finished), ASHA compares
trials at equal cost and stops some, every trial is a nested MLflow run, the best finished trial is
registered; an interrupted sweep resumes without rerunning finished trials."""
import signal
import time

import pytest

from tests.helpers import assert_one_line, run_cli
from tests.integration.cli_run import set_args, start

pytestmark = pytest.mark.slow

SWEEP = [
    "tune.num_samples=4", "tune.name=sweep", "tune.cost=d_images", "tune.grace_period=960",
    "tune.reduction_factor=2", "seed=3",
    'tune.space={"train.k": {"choice": [1, 2]}, "train.lr_d": {"choice": [0.0002, 0.02]}, '
    '"train.lr_g": {"choice": [0.0002, 0.001]}, "model.arch": {"choice": ["mlp", "dcgan"]}}',
    "data.source=digits", "model.g_width=8", "model.d_width=8", "train.epochs=1", "train.eval_every=5",
    "train.checkpoint_every=20", "train.batch_size=32", "train.eval_samples=200", "eval.samples=200",
    "eval.cas=false", "train.patience=null", "train.target=null", "train.time_budget_s=null",  # ASHA alone ends trials
    "train.ema_beta=null",  # the preset's EMA G needs more than these 50 iterations to differ between trials
]


def _runs(tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = [e.experiment_id for e in c.search_experiments()]
    return c, c.search_runs(exps)


def test_epoch_sweep_with_k_stops_trials_at_equal_cost_nests_runs_registers_and_resumes(workdir, capsys,
                                                                                        ray_local):
    tmp_path = workdir
    args = ["tune", *set_args(SWEEP)]
    # The interrupted sweep joins the session's Ray as a driver of its own; the resumed one runs in process.
    proc = start(tmp_path, *args, "--set", f"ray.address={ray_local.get_runtime_context().gcs_address}")
    finished: list[str] = []
    seen = []
    deadline = time.time() + 600
    for line in proc.stdout:  # interrupt once a trial has ended
        seen.append(line)
        if line.startswith("tune: trial "):
            finished.append(line.split()[2])
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline
    rest, _ = proc.communicate(timeout=300)
    assert "worker processes have been started" not in "".join(seen) + rest  # Ray's pool warning stays off
    c, runs = _runs(tmp_path)
    before = {r.data.tags["ganpipe.trial_id"]: r for r in runs if "ganpipe.trial_id" in r.data.tags}
    assert set(finished) <= set(before)

    code, stdout, err = run_cli(capsys, *args)  # the same command resumes the sweep (here in process)
    assert code == 0, err[-3000:]
    import ray  # the sweep leaves nothing reserved: a next stage in the same process (generate) gets every CPU

    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], ray.available_resources()
    c, runs = _runs(tmp_path)
    parent = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune"]
    trials = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune-trial"]
    assert len(parent) == 1 and len(trials) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in trials)
    # Finished trials were not run again: one run each, never resumed, and not reported ending twice.
    for trial_id in finished:
        (run,) = [r for r in trials if r.data.tags["ganpipe.trial_id"] == trial_id]
        assert [m.value for m in c.get_metric_history(run.info.run_id, "resumed_from")] == [0.0]
        assert f"tune: trial {trial_id} " not in stdout
    # digits: 1,618 training images, batch 32 -> 50 batches an epoch: 50 iterations with k = 1, 25 with k = 2.
    planned = {r.data.params["train.k"]: r.data.metrics["planned_iterations"] for r in trials
               if "planned_iterations" in r.data.metrics}
    assert planned == {"1": 50, "2": 25}, planned
    ran_to_end = [r for r in trials if r.data.metrics["iteration"] == r.data.metrics["planned_iterations"]]
    assert ran_to_end and all(r.data.tags.get("ganpipe.stopped_early") is None for r in ran_to_end)
    # At equal cost: every trial stopped by ASHA had spent at least the grace period in images through D.
    # (Whether ASHA stops one here depends on the order in which two concurrent trials report on 2 cores;
    # benchmarks/sweep_cost.py measures what it saves.)
    stopped = [r for r in trials if r.data.tags.get("ganpipe.stopped_early") == "true"]
    assert all(r.data.metrics["d_images"] >= 960 for r in stopped)
    m = parent[0].data.metrics
    assert m["trials"] == 4 and m["trials_stopped_early"] == len(stopped), m
    assert m["trial_iterations_full"] == sum(r.data.metrics["planned_iterations"] for r in trials)
    assert (m["trial_iterations_run"] < m["trial_iterations_full"]) == bool(stopped), m
    arts = {a.path for a in c.list_artifacts(parent[0].info.run_id, "sweep")}
    assert arts == {"sweep/trials.md", "sweep/metric_vs_hyperparameters.png"}
    assert "register: gan-generator version" in stdout, stdout
    # The registered best is the best trial (training fd) among those that ran to their end (the search
    # may draw one configuration twice, and two such trials tie: either is the best).
    (best,) = [r for r in ran_to_end if r.info.run_id == parent[0].data.tags["ganpipe.best_run_id"]]
    assert best.data.metrics["fd"] == min(r.data.metrics["fd"] for r in ran_to_end)
    versions = c.search_model_versions(f"run_id = '{best.info.run_id}'")
    assert len(versions) == 1 and versions[0].tags["eval_protocol"].startswith("samples=200;seed=3")


def test_an_epoch_sweep_registers_a_k2_trial_when_it_is_best(workdir, capsys, ray_local):
    """The trial's own plan (25 iterations for one epoch at k = 2) is its end: it finishes, is the best,
    and is registered (a k-blind plan of 50 iterations called it stopped early and registered nothing)."""
    args = [a for a in SWEEP if not a.startswith(("tune.space", "tune.num_samples", "tune.name"))]
    code, out, err = run_cli(capsys, "tune", *set_args(args + [
        'tune.space={"train.k": {"choice": [2]}}', "tune.num_samples=1", "tune.scheduler=fifo", "tune.name=k2"]))
    assert code == 0, err[-3000:]
    assert "finished at iteration 25" in out and "stopped early" not in out.split("tune: sweep")[0]
    assert "register: gan-generator version 1 is champion" in out, out


def test_a_sweeps_time_budget_ends_its_trial_as_finished_with_a_checkpoint(workdir, capsys, ray_local):
    """A trial with no end of its own (1,000 epochs) ends at its last evaluation before the sweep's end,
    as a finished trial with its checkpoint: the sweep registers it."""
    from pipelines.stages.tune import TUNE_STOP_SLACK_S

    args = [a for a in SWEEP if not a.startswith(("tune.space", "tune.num_samples", "tune.name", "train.epochs"))]
    budget, t0 = 10, time.time()
    code, out, err = run_cli(capsys, "tune", *set_args(args + [
        'tune.space={"train.k": {"choice": [1]}}', "tune.num_samples=1", "tune.scheduler=fifo", "tune.name=timed",
        "train.epochs=1000", f"tune.time_budget_s={budget}"]))
    assert code == 0, err[-3000:]
    assert time.time() - t0 < budget + TUNE_STOP_SLACK_S
    ((it,),) = [line.split("finished at iteration ")[1].split(" (the sweep's time budget):")[:1]
                for line in out.splitlines() if line.startswith("tune: trial ")]
    assert 5 <= int(it) < 50 * 1000 and int(it) % 5 == 0  # at an evaluation, long before its plan
    c, runs = _runs(workdir)
    (trial,) = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune-trial"]
    assert trial.data.tags["ganpipe.stop_kind"] == "sweep" and trial.info.status == "FINISHED"
    assert trial.data.tags["ganpipe.stop_reason"].endswith("(tune.time_budget_s)")
    assert "register: gan-generator version 1 is champion" in out, out


@pytest.mark.parametrize("override,needle", [
    ('tune.space={"train.k": {"choice": []}}', "empty choice list"),
    ('tune.space={"train.lr_g": {"uniform": [0.1, 0.01]}}', "low 0.1 is above high 0.01"),
    ('tune.space={"train.widht": {"choice": [1]}}', "unknown hyperparameter 'train.widht'"),
    ("tune.metric=inception_score", "tune.metric='inception_score': no trial reports it"),
    ("registry.model_name=gans/best", "'gans/best' is not a valid name for registry.model_name"),
    ("tune.name=../up", "'../up' is not a valid name for tune.name"),
])
def test_sweep_bad_input_fails_before_any_trial(workdir, capsys, override, needle):
    assert_one_line(*run_cli(capsys, "tune", "--set", override)[::2], needle)
    assert not (workdir / "ganpipe_runs").exists()


def test_label_fidelity_metric_needs_a_conditional_model(workdir, capsys):
    code, _, err = run_cli(capsys, "tune", "--set", "tune.metric=label_fidelity", "--set", "model.conditional=false")
    assert_one_line(code, err, "needs model.conditional=true")
