"""Faults in one run: a second process with the same run name is refused while the first goes on; a
worker killed mid-run is replaced and training continues from the newest checkpoint; then the driver's
process group is killed (SIGKILL), and the same command says it resumes, starts its progress bar there,
and trains to the same final iteration with its optimizer state."""
import os
import signal
import subprocess
import time

import pytest
import torch

from pipelines.services import checkpoints
from tests.helpers import assert_one_line, run_cli
from tests.integration.cli_run import SMALL, metric_history, run_id_from, set_args, start, wait_for

pytestmark = pytest.mark.slow


def _worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line]


def _newest_complete(run, proc, timeout: float = 120, world: int = 2) -> int:
    """The iteration of the run's newest complete checkpoint, waiting for one to be complete."""
    import warnings

    deadline = time.time() + timeout
    while True:
        with warnings.catch_warnings():  # a checkpoint being written counts as damaged until it is whole
            warnings.simplefilter("ignore")
            found = checkpoints.latest_loadable(run, world)
        if found is not None:
            return int(found[1]["iteration"])
        assert (proc is None or proc.poll() is None) and time.time() < deadline, "no complete checkpoint"
        time.sleep(0.1)


def test_killed_worker_is_replaced_and_an_interrupted_run_resumes_with_optimizer_state(workdir, capsys, ray_local):
    tmp_path = workdir
    every, total, k = 20, 160, 2
    args = ["train", *set_args(SMALL + [f"train.iterations={total}", f"train.checkpoint_every={every}",
                                         f"train.eval_every={every}", "train.log_every=5", f"train.k={k}",
                                         "train.run_name=faults"])]
    run = tmp_path / "ganpipe_runs" / "faults"
    # The first process joins the session's Ray as a driver of its own; the rerun runs in process.
    proc = start(tmp_path, *args, "--set", f"ray.address={ray_local.get_runtime_context().gcs_address}")
    wait_for(run / f"checkpoint_{2 * every:08d}", proc)
    # A second process with the same run name is refused at once, naming the first, which goes on.
    code, _, err = run_cli(capsys, *args)
    assert_one_line(code, err, f"train.run_name='faults' is in use by process {proc.pid}")
    at_kill = _newest_complete(run, proc)  # that checkpoint complete: the kill lands after it
    pids = _worker_pids()
    assert len(pids) >= 2, pids
    os.kill(pids[-1], signal.SIGKILL)
    # The replaced worker group goes on; interrupt the driver once it has written a later checkpoint:
    # two intervals past the newest one at the kill, which only the replaced group can write.
    wait_for(run / f"checkpoint_{max(4 * every, at_kill + 2 * every):08d}", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    at_rerun = _newest_complete(run, None)

    code, stdout, err = run_cli(capsys, *args)  # the same command (in process, on the session's Ray)
    assert code == 0, err[-3000:]
    assert f"resuming training run faults from checkpoint {at_rerun}, iteration {at_rerun} of {total}" in stdout
    frames = [f.strip() for f in err.replace("\r", "\n").splitlines() if f"/{total} [" in f]
    assert f" {at_rerun}/{total} [00:00<?, ?it/s]" in frames[0], frames[:3]  # from the resumed iteration, no rate yet
    assert f"finished {total} iterations" in stdout
    run_id = run_id_from(stdout)
    resumed = [v for _, v in metric_history(tmp_path, run_id, "resumed_from")]
    assert resumed[0] == 0 and len(resumed) == 3, resumed
    restart, rerun = int(resumed[1]), int(resumed[2])
    assert restart >= 2 * every and restart % every == 0, resumed  # the replaced worker group
    assert rerun == at_rerun >= 4 * every, resumed  # the rerun command
    # Work redone after the worker loss = iterations logged twice, all past the checkpoint resumed from.
    logged = [s for s, _ in metric_history(tmp_path, run_id, "iteration")]
    assert max(logged) == total
    repeated = sorted(s for s in set(logged) if logged.count(s) > 1)
    assert all(restart < s <= restart + every or rerun < s <= rerun + every for s in repeated), \
        (restart, rerun, repeated)
    state = checkpoints.load_state(run / f"checkpoint_{total:08d}")
    assert state["iteration"] == total
    # Adam's step counters continue across both restarts: k D steps and one G step per iteration.
    assert all(int(s["step"]) == k * total for s in state["opt_d"]["state"].values())
    assert all(int(s["step"]) == total for s in state["opt_g"]["state"].values())
    assert torch.isfinite(state["G"]["net.0.weight"]).all()


def test_a_one_worker_run_is_one_ray_task_and_a_killed_task_process_is_run_again_from_its_newest_checkpoint(
        workdir):
    """`ray.layout: auto` lays a run whose CPUs hold one worker out as one Ray task, not a TorchTrainer
    (no Train worker process is started); killed (SIGKILL) after a checkpoint, the task's process is
    replaced by Ray and the run goes on from its newest complete checkpoint to its last iteration, its
    optimizer state carried over."""
    every, total, k = 20, 100, 2
    args = ["train", *set_args(["model.g_width=8", "model.d_width=8", "train.batch_size=32", "ray.cpus_per_worker=2",
                                f"train.iterations={total}", f"train.checkpoint_every={every}", f"train.k={k}",
                                f"train.eval_every={every}", "train.log_every=5", "train.run_name=task"])]
    run = workdir / "ganpipe_runs" / "task"
    proc = start(workdir, *args)  # a local Ray of its own: the layout is laid out here
    wait_for(run / f"checkpoint_{every:08d}", proc)
    at_kill = _newest_complete(run, proc, world=1)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    tasks = [int(line.split()[0]) for line in ps.splitlines() if "ray::train_one_worker" in line]
    assert len(tasks) == 1 and "RayTrainWorker" not in ps, ps
    os.kill(tasks[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"finished {total} iterations" in out
    resumed = [v for _, v in metric_history(workdir, run_id_from(out), "resumed_from")]
    assert len(resumed) == 2 and resumed[0] == 0 and at_kill <= resumed[1] < total, (at_kill, resumed)
    state = checkpoints.load_state(run / f"checkpoint_{total:08d}")
    assert all(int(s["step"]) == k * total for s in state["opt_d"]["state"].values())
    assert all(int(s["step"]) == total for s in state["opt_g"]["state"].values())
