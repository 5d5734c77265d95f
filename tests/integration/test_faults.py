"""A worker killed mid-run is replaced and training continues from the latest checkpoint; an
interrupted run resumes to the same final iteration with its optimizer state."""
import os
import signal
import subprocess
import time

import pytest
import torch

from pipelines.services import checkpoints
from tests.integration.cli_run import SMALL, ganpipe, metric_history, run_id_from, set_args, start, wait_for

pytestmark = pytest.mark.slow


def _worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line]


def test_killed_worker_is_replaced_and_training_continues_from_checkpoint(tmp_path):
    every, total = 20, 160
    args = ["train", *set_args(SMALL + [f"train.iterations={total}", f"train.checkpoint_every={every}",
                                         "train.log_every=5", "train.run_name=kill"])]
    proc = start(tmp_path, *args)
    wait_for(tmp_path / "ganpipe_runs" / "kill" / f"checkpoint_{2 * every:08d}", proc)
    time.sleep(3)  # let that checkpoint complete; the kill lands mid-interval
    pids = _worker_pids()
    assert len(pids) >= 2, pids
    os.kill(pids[-1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"finished {total} iterations" in stdout
    run_id = run_id_from(stdout)
    resumed = [v for _, v in metric_history(tmp_path, run_id, "resumed_from")]
    assert resumed[0] == 0 and len(resumed) == 2, resumed
    restart = int(resumed[1])
    assert restart >= 2 * every and restart % every == 0, resumed
    # Work redone = iterations logged twice (the first attempt went past the checkpoint it resumed from).
    logged = [s for s, _ in metric_history(tmp_path, run_id, "iteration")]
    assert max(logged) == total
    repeated = sorted(s for s in set(logged) if logged.count(s) > 1)
    assert all(restart < s <= restart + every for s in repeated), (restart, repeated, logged)
    state = checkpoints.load_state(tmp_path / "ganpipe_runs" / "kill" / f"checkpoint_{total:08d}")
    assert state["iteration"] == total


def test_interrupted_run_resumes_to_the_same_final_iteration_with_optimizer_state(tmp_path):
    every, total, k = 20, 80, 2
    args = ["train", *set_args(SMALL + [f"train.iterations={total}", f"train.checkpoint_every={every}",
                                         f"train.k={k}", "train.run_name=resume"])]
    proc = start(tmp_path, *args)
    wait_for(tmp_path / "ganpipe_runs" / "resume" / f"checkpoint_{every:08d}", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the interrupted run must not report success"
    out = ganpipe(tmp_path, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"finished {total} iterations" in out.stdout
    resumed = [v for _, v in metric_history(tmp_path, run_id_from(out.stdout), "resumed_from")]
    assert resumed[0] == 0 and resumed[-1] >= every, resumed
    state = checkpoints.load_state(tmp_path / "ganpipe_runs" / "resume" / f"checkpoint_{total:08d}")
    assert state["iteration"] == total
    # Adam's step counters continue across the restart: k D steps and one G step per iteration.
    assert all(int(s["step"]) == k * total for s in state["opt_d"]["state"].values())
    assert all(int(s["step"]) == total for s in state["opt_g"]["state"].values())
    assert torch.isfinite(state["G"]["net.0.weight"]).all()
