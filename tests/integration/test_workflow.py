"""`ganpipe run`: train -> evaluate -> register -> generate as one workflow, one parent MLflow run with
each stage nested under it; a rerun with the same name skips finished stages and resumes the one that
was interrupted; a stage with no input is refused before anything runs."""
import json

import pytest

from tests.helpers import assert_one_line, run_cli
from tests.integration.cli_run import set_args

pytestmark = pytest.mark.slow

SMALL = set_args([
    "data.source=digits", "model.g_width=8", "model.d_width=8", "train.iterations=40", "train.eval_every=20",
    "train.checkpoint_every=20", "train.batch_size=32", "train.eval_samples=200", "eval.samples=200",
    "eval.cas=false", "generate.eval_samples=200", "generate.rows_per_file=256", "workflow.rows=600",
    "workflow.name=wf", "seed=4",
])


def _runs(workdir):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    return c, c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_the_workflow_nests_its_stages_skips_what_is_done_and_resumes_generation(workdir, capsys, ray_local):
    code, out, err = run_cli(capsys, "run", *SMALL)
    assert code == 0, err[-3000:]
    c, runs = _runs(workdir)
    (parent,) = [r for r in runs if r.data.tags.get("ganpipe.stage") == "workflow"]
    assert parent.data.tags["ganpipe.workflow"] == "wf" and parent.info.status == "FINISHED"
    stages = {r.data.tags["ganpipe.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") ==
              parent.info.run_id}
    assert set(stages) == {"train", "evaluate", "register", "generate"}
    assert all(len(r.data.tags["ganpipe.inputs"]) == 16 for r in stages.values())
    # Each stage's run is open around its work: one after the other, they cover the workflow's time.
    span = parent.info.end_time - stages["train"].info.start_time
    covered = sum(r.info.end_time - r.info.start_time for r in stages.values())
    assert covered >= 0.85 * span, {k: (r.info.start_time, r.info.end_time) for k, r in stages.items()}
    assert all(r.info.status == "FINISHED" for r in stages.values())
    # Stages hand on URIs: the registered version made the dataset; the summary names everything.
    done = {k.split(".")[-1]: json.loads(v) for k, v in parent.data.tags.items() if k.startswith("ganpipe.done.")}
    assert done["register"]["out"]["model"] == "models:/gan-generator/1"
    assert done["generate"]["out"]["dataset"].endswith("datasets/wf-v1")
    manifest = json.loads((workdir / "datasets" / "wf-v1" / "manifest.json").read_text())
    assert manifest["rows"] == 600 and manifest["model"]["uri"] == "models:/gan-generator/1"
    assert f"run: workflow wf (MLflow run {parent.info.run_id}) made:" in out
    assert "run:   model models:/gan-generator/1 (champion)" in out and "run:   dataset " in out

    # The same command again: every stage is skipped, no run is added, the summary is the same.
    code, again, err = run_cli(capsys, "run", *SMALL)
    assert code == 0, err[-3000:]
    assert again.count("with the same inputs; skipped") == 4
    assert len(_runs(workdir)[1]) == len(runs)

    # As a kill during generation leaves it: the stage not recorded, no manifest, a file missing.
    c.delete_tag(parent.info.run_id, "ganpipe.done.generate")
    ds = workdir / "datasets" / "wf-v1"
    (ds / "manifest.json").unlink()
    (ds / "data" / "train-00001-of-00003.parquet").unlink()
    code, resumed, err = run_cli(capsys, "run", *SMALL)
    assert code == 0, err[-3000:]
    assert resumed.count("with the same inputs; skipped") == 3
    assert "600 rows in 3 files, 1 written now" in resumed
    assert json.loads((ds / "manifest.json").read_text()) == manifest


def test_a_stage_without_its_input_is_refused_before_anything_runs(workdir, capsys):
    code, _, err = run_cli(capsys, "run", "--set", "workflow.stages=[generate]")
    assert_one_line(code, err, "generate needs a generator", "workflow.model")
    code, _, err = run_cli(capsys, "run", "--set", "workflow.stages=[register]")
    assert_one_line(code, err, "register needs a training run")
    code, _, err = run_cli(capsys, "run", "--set", "workflow.stages=[generate, train]")
    assert_one_line(code, err, "workflow.stages", "in the order train, tune, evaluate, register, generate")
    code, _, err = run_cli(capsys, "run", "--set", "workflow.stages=[train, bake]")
    assert_one_line(code, err, "workflow.stages", "the stages are train, tune, evaluate, register, generate",
                    "got ['train', 'bake']")
    assert not (workdir / "mlflow.db").exists()  # nothing ran, not even the tracking store


@pytest.mark.parametrize("command,kind,key", [("run", "workflow", "workflow.name"), ("train", "run", "train.run_name"),
                                              ("tune", "sweep", "tune.name")])
def test_a_name_held_by_a_live_process_is_refused_at_once(workdir, capsys, command, kind, key):
    import os
    import signal

    from tests.helpers import holder

    storage = str(workdir / "ganpipe_runs")
    proc = holder(f"with names.hold({kind!r}, 'busy', {storage!r}, {key!r}):")
    try:
        code, _, err = run_cli(capsys, command, "--set", f"{key}=busy")
        assert_one_line(code, err, f"{key}='busy' is in use by process {proc.pid}", "choose another name")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()
    assert not (workdir / "mlflow.db").exists()  # refused before anything ran
