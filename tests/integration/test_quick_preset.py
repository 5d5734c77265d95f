"""The README's main job: `ganpipe run` on the built-in preset, in a fresh working directory: train
(ended by its time budget, here cut short), evaluate, register the best checkpoint, generate."""
import json
from dataclasses import dataclass

import pytest

from pipelines.config import load_config
from pipelines.config.build import precision
from pipelines.stages.train.driver import best_checkpoint
from pipelines.stages.train.layout import Layout, fastest
from tests.helpers import run_cli
from tests.integration.cli_run import metric_history, run_id_from

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Ckpt:
    step: int


def test_ganpipe_run_on_the_quick_preset_trains_to_its_budget_registers_the_best_and_generates(workdir, capsys,
                                                                                             ray_local):
    from mlflow.tracking import MlflowClient

    # The preset's own budget (420 s) cut to 20 s, evaluations every 40 iterations: several checkpoints.
    # The evaluations after training are the schema's own (tested elsewhere), made smaller here.
    # The layout is measured on this machine (a cache of the test's own, so it is measured here).
    cache = workdir / "layouts.json"
    code, out, err = run_cli(capsys, "run", "--set", "train.time_budget_s=20", "--set", "train.eval_every=40",
                             "--set", "train.checkpoint_every=40", "--set", "workflow.rows=1000",
                             "--set", "eval.cas=false", "--set", "eval.samples=500", "--set", "generate.eval_samples=500",
                             "--set", f"ray.layout_cache={cache}")
    assert code == 0, err[-3000:]
    run_id = run_id_from(out)
    lines = [ln for ln in out.splitlines() if ln.startswith("train:")]
    assert len(lines) == 5, out
    # The preset's auto derives on mnist5k and 2 CPUs what the preset fixed before; the budget given
    # with --set is not derived.
    derived = lines.pop(0)
    assert derived.startswith("train: auto: image_size 28, g_width 32, d_width 32, patience 10, r1 1, lr_g 0.0003, "
                              "lr_d 0.0003, ema_beta 0.995 "
                              "for 5,000 28x28 grey images in 10 classes on 2 CPUs"), derived
    assert "time_budget_s" not in derived
    # Both splits of the global batch of 2 x 64 were timed; the run trains with the faster one.
    rates = next(iter(json.loads(cache.read_text()).values()))
    timed = [(Layout(**json.loads(k)), r) for k, r in rates.items()]
    assert {(o.workers, o.threads, o.batch) for o, _ in timed} == {(2, 1, 64), (1, 2, 128)}, timed
    assert all(r > 50 for _, r in timed), timed
    chosen = fastest(timed)[0]
    workers, batch = chosen.workers, chosen.batch
    assert lines[0].startswith(f"train: layout {workers} worker"), lines[0]
    # The preset's train.precision is auto: the arithmetic it resolved to on this machine is named.
    assert f", {precision('auto')} step: " in lines[0], lines[0]
    # The preset's epochs x 35 batches of the global batch of 128 (4,500 training digits) is the cap;
    # the budget ends it first.
    cap = load_config(None, []).train.epochs * (4500 // 128)
    assert f"of {cap}: the time budget of 20 s is spent (train.time_budget_s)" in lines[1], lines[1]
    # Below the quality bar after a run its budget ended, the evaluation says so and what to change.
    stopped_at = int(lines[1].split("stopped at iteration ")[1].split()[0])
    hint = next(ln for ln in out.splitlines() if ln.startswith("evaluate: ") and "time budget" in ln)
    assert hint.startswith("evaluate: fd") and f"(20 s, iteration {stopped_at:,})" in hint, hint
    assert "a larger train.time_budget_s trains further" in hint
    assert (workdir / "mlflow.db").is_file()
    assert "RayTrainWorker" not in out + err  # Ray's own log lines stay out of the default output
    d_x = metric_history(workdir, run_id, "d_real")
    ended = max(step for step, _ in metric_history(workdir, run_id, "iteration"))
    every = load_config(None, []).train.log_every
    assert ended >= 80 and len(d_x) >= ended // every and all(0 < v < 1 for _, v in d_x)
    assert all(v > 0 for _, v in metric_history(workdir, run_id, "images_per_second"))
    # The run hands on its best checkpoint by fd (the newest within the preset's tolerance of the best,
    # among the kept best and the latest), not simply its last; that is what is evaluated and registered.
    c = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    run = c.get_run(run_id)
    assert (run.data.params["ray.num_workers"], run.data.params["train.batch_size"]) == (str(workers), str(batch))
    fd = metric_history(workdir, run_id, "fd")
    assert len(fd) >= 2, fd
    preset = load_config(None, [])
    assert preset.train.tolerance > 0
    kept = sorted(fd, key=lambda sv: sv[1])[:preset.train.keep_checkpoints]
    candidates = [(Ckpt(step), {"fd": v, "iteration": step}) for step, v in {*kept, max(fd)}]
    best_step = best_checkpoint(candidates, preset).step
    assert run.data.tags["ganpipe.checkpoint_iteration"] == str(best_step), (fd, run.data.tags)
    assert "time budget" in run.data.tags["ganpipe.stop_reason"]
    assert run.data.params["train.precision"] == "auto" and run.data.tags["ganpipe.precision"] == precision("auto")
    assert "register: gan-generator version 1 is champion (there is no champion yet)" in out
    version = c.get_model_version("gan-generator", "1")
    assert version.tags["iteration"] == str(best_step)
    assert len(metric_history(workdir, run_id, "eval_fd")) == 1  # the registry reused the workflow's evaluation
    # ... and ends with a dataset made by that version.
    manifest = json.loads(next((workdir / "datasets").glob("*-v1/manifest.json")).read_text())
    assert manifest["rows"] == 1000 and manifest["model"]["uri"] == "models:/gan-generator/1"
    assert "run:   dataset " in out
    # The python blocks of README.md and docs/ run here, on this run's champion and dataset.
    from tests.test_docs import blocks

    folder = next((workdir / "datasets").glob("*-v1")).name
    ran = {}
    for where, code, _ in blocks("python"):
        space = {}
        exec(compile(code.replace("datasets/RUN-v1", f"datasets/{folder}"), where, "exec"), space)
        ran.update(space)
    assert ran["ds"].num_rows == 1000 and set(ran["ds"].features) >= {"image", "label"}
    assert tuple(ran["images"].shape) == (10, 1, 28, 28) and float(ran["images"].abs().max()) <= 1
