"""The README's main job: `ganpipe run` on the built-in preset, in a fresh working directory: train
(ended by its time budget, here cut short), evaluate, register the best checkpoint, generate."""
import json

import pytest

from pipelines.config import load_config
from tests.helpers import run_cli
from tests.integration.cli_run import metric_history, run_id_from

pytestmark = pytest.mark.slow


def test_ganpipe_run_on_the_quick_preset_trains_to_its_budget_registers_the_best_and_generates(workdir, capsys,
                                                                                             ray_local):
    from mlflow.tracking import MlflowClient

    # The preset's own budget (420 s) cut to 20 s, evaluations every 40 iterations: several checkpoints.
    # The evaluations after training are the schema's own (tested elsewhere), made smaller here.
    code, out, err = run_cli(capsys, "run", "--set", "train.time_budget_s=20", "--set", "train.eval_every=40",
                             "--set", "train.checkpoint_every=40", "--set", "workflow.rows=1000",
                             "--set", "eval.cas=false", "--set", "eval.samples=500", "--set", "generate.eval_samples=500")
    assert code == 0, err[-3000:]
    run_id = run_id_from(out)
    lines = [ln for ln in out.splitlines() if ln.startswith("train:")]
    assert len(lines) == 3, out
    # 200 epochs x 35 batches per worker (2 workers, batch 64) is the cap; the budget ends it first.
    assert "of 7000: the time budget of 20 s is spent (train.time_budget_s)" in lines[0], lines[0]
    assert (workdir / "mlflow.db").is_file()
    assert "RayTrainWorker" not in out + err  # Ray's own log lines stay out of the default output
    d_x = metric_history(workdir, run_id, "d_real")
    ended = max(step for step, _ in metric_history(workdir, run_id, "iteration"))
    every = load_config(None, []).train.log_every
    assert ended >= 80 and len(d_x) >= ended // every and all(0 < v < 1 for _, v in d_x)
    assert all(v > 0 for _, v in metric_history(workdir, run_id, "images_per_second"))
    # The run hands on its best checkpoint by fd, not its last; that is what is evaluated and registered.
    c = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    run = c.get_run(run_id)
    fd = metric_history(workdir, run_id, "fd")
    assert len(fd) >= 2, fd
    best_step = min(fd, key=lambda sv: sv[1])[0]
    assert run.data.tags["ganpipe.checkpoint_iteration"] == str(best_step), (fd, run.data.tags)
    assert "time budget" in run.data.tags["ganpipe.stop_reason"]
    assert "register: gan-generator version 1 is champion (there is no champion yet)" in out
    version = c.get_model_version("gan-generator", "1")
    assert version.tags["iteration"] == str(best_step)
    assert len(metric_history(workdir, run_id, "eval_fd")) == 1  # the registry reused the workflow's evaluation
    # ... and ends with a dataset made by that version.
    manifest = json.loads(next((workdir / "datasets").glob("*-v1/manifest.json")).read_text())
    assert manifest["rows"] == 1000 and manifest["model"]["uri"] == "models:/gan-generator/1"
    assert "run:   dataset " in out
