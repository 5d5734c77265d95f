"""A sweep on 2 cores: ASHA stops some trials, every trial is a nested MLflow run, the best is
registered as champion; an interrupted sweep resumes without rerunning finished trials."""
import signal
import time

import pytest

from tests.integration.cli_run import ganpipe, set_args, start

pytestmark = pytest.mark.slow

SWEEP = [
    "tune.num_samples=6", "tune.name=sweep", "tune.grace_period=10", "tune.reduction_factor=2",
    'tune.space={"train.k": {"choice": [1, 2]}, "train.lr_d": {"choice": [0.0002, 0.02]}, '
    '"train.lr_g": {"choice": [0.0002, 0.001]}, "model.arch": {"choice": ["mlp", "dcgan"]}}',
    "model.g_width=8", "model.d_width=8", "train.iterations=60", "train.eval_every=10", "train.checkpoint_every=20",
    "train.batch_size=32", "train.eval_samples=200",
]


def _runs(tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = [e.experiment_id for e in c.search_experiments()]
    return c, c.search_runs(exps)


def test_sweep_stops_trials_early_nests_runs_registers_champion_and_resumes(tmp_path):
    args = ["tune", *set_args(SWEEP)]
    proc = start(tmp_path, *args)
    finished: list[str] = []
    deadline = time.time() + 600
    for line in proc.stdout:  # interrupt once two trials have ended
        if line.startswith("tune: trial "):
            finished.append(line.split()[2])
            if len(finished) == 2:
                proc.send_signal(signal.SIGINT)
                break
        assert time.time() < deadline
    proc.communicate(timeout=300)
    c, runs = _runs(tmp_path)
    before = {r.data.tags["ganpipe.trial_id"]: r for r in runs if "ganpipe.trial_id" in r.data.tags}
    assert set(finished) <= set(before)

    out = ganpipe(tmp_path, *args, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    c, runs = _runs(tmp_path)
    parent = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune"]
    trials = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune-trial"]
    assert len(parent) == 1 and len(trials) == 6
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in trials)
    # Finished trials were not run again: one run each, never resumed, and not reported ending twice.
    for trial_id in finished:
        (run,) = [r for r in trials if r.data.tags["ganpipe.trial_id"] == trial_id]
        assert [m.value for m in c.get_metric_history(run.info.run_id, "resumed_from")] == [0.0]
        assert f"tune: trial {trial_id} " not in out.stdout
    m = parent[0].data.metrics
    assert m["trials"] == 6 and m["trials_stopped_early"] >= 1, m
    assert m["trial_iterations_run"] < m["trial_iterations_full"] == 6 * 60
    arts = {a.path for a in c.list_artifacts(parent[0].info.run_id, "sweep")}
    assert arts == {"sweep/trials.md", "sweep/metric_vs_hyperparameters.png"}
    assert "register: gan-generator version" in out.stdout, out.stdout
    # The champion holds the best fd of the trials that ran to the end (the interrupted first
    # process may already have registered its best so far; equal or worse versions stay challenger).
    champion = c.get_model_version_by_alias("gan-generator", "champion")
    full = [r for r in trials if r.data.metrics.get("iteration") == 60]
    assert min(r.data.metrics["fd"] for r in full) == pytest.approx(float(champion.tags["metric_value"]))


@pytest.mark.parametrize("override,needle", [
    ('tune.space={"train.k": {"choice": []}}', "empty choice list"),
    ('tune.space={"train.lr_g": {"uniform": [0.1, 0.01]}}', "low 0.1 is above high 0.01"),
    ('tune.space={"train.widht": {"choice": [1]}}', "unknown hyperparameter 'train.widht'"),
    ("tune.metric=inception_score", "tune.metric='inception_score': no trial reports it"),
    ("registry.model_name=gans/best", "registry.model_name='gans/best'"),
])
def test_sweep_bad_input_fails_before_any_trial(tmp_path, override, needle):
    out = ganpipe(tmp_path, "tune", "--set", override, timeout=60)
    assert out.returncode == 2 and needle in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().count("\n") == 0 and not (tmp_path / "ganpipe_runs").exists()


def test_label_fidelity_metric_needs_a_conditional_model(tmp_path):
    out = ganpipe(tmp_path, "tune", "--set", "tune.metric=label_fidelity", "--set", "model.conditional=false",
                  timeout=60)
    assert out.returncode == 2 and "needs model.conditional=true" in out.stderr, out.stderr[-2000:]
