"""Bad input to `ganpipe train`, in process: one clear line on stderr, exit 2, nothing half done;
a NaN loss, a damaged checkpoint and a dead cluster address."""
import json
import socket
from pathlib import Path

import pytest

from pipelines.services import checkpoints
from tests.helpers import assert_one_line, run_cli
from tests.integration.cli_run import SMALL, metric_history, run_id_from, set_args

pytestmark = pytest.mark.slow


def test_unknown_key_missing_dataset_and_unreachable_tracking_server(workdir, capsys):
    assert_one_line(*run_cli(capsys, "train", "--set", "train.epochz=1")[::2], "unknown key 'train.epochz'")
    missing = workdir / "no-such-folder"
    assert_one_line(*run_cli(capsys, "train", "--set", f"data.source=imagefolder:{missing}")[::2],
                    str(missing), "does not exist")
    code, _, err = run_cli(capsys, "train", "--set", "mlflow.tracking_uri=http://127.0.0.1:9")
    assert_one_line(code, err, "http://127.0.0.1:9", "unreachable")
    assert not (workdir / "ganpipe_runs").exists()


def test_a_dead_cluster_address_is_one_error_not_a_hang(workdir, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, _, err = run_cli(capsys, "train", "--set", f"ray.address=127.0.0.1:{port}",
                           "--set", "ray.connect_timeout_s=2")
    assert_one_line(code, err, f"Ray cluster at 127.0.0.1:{port} does not answer within 2s", "ray.address")


def test_more_workers_than_the_cluster_places(workdir, capsys, ray_local):
    code, _, err = run_cli(capsys, "train", "--set", "ray.num_workers=16")
    assert_one_line(code, err, "16 workers", "the Ray cluster has 2 CPU")


def test_damaged_checkpoint_is_skipped_for_the_newest_good_and_a_nan_keeps_the_last_good(workdir, capsys,
                                                                                      ray_local):
    # Ray Train keeps the default 2 best checkpoints and the newest, deleting the rest as it goes.
    base = SMALL + ["ray.num_workers=1", "train.run_name=faults", "train.checkpoint_every=10", "train.eval_every=10"]
    code, _, err = run_cli(capsys, "train", *set_args(base + ["train.iterations=20"]))
    assert code == 0, err[-2000:]
    run = workdir / "ganpipe_runs" / "faults"
    state = run / "checkpoint_00000020" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # cut short, as a full disk would leave it
    code, out, err = run_cli(capsys, "train", *set_args(base + ["train.iterations=30"]))
    assert code == 0, err[-3000:]
    assert "checkpoint_00000020 is skipped (state.pt does not match its sha256 (damaged)); moved to " \
        f"{run / 'damaged' / 'checkpoint_00000020'}" in err
    assert "finished 30 iterations" in out
    resumed = [v for _, v in metric_history(workdir, run_id_from(out), "resumed_from")]
    assert resumed == [0.0, 10.0], resumed
    assert checkpoints.load_state(run / "checkpoint_00000030")["iteration"] == 30
    # Checkpoint 20 was written again by the resumed run; Ray's list names each checkpoint on disk once.
    assert checkpoints.load_state(run / "checkpoint_00000020")["iteration"] == 20
    snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    listed = [r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]]
    assert len(listed) == len(set(listed)) and all((run / n).is_dir() for n in listed), listed
    # The run folder, as the output names it, stands for the checkpoint the run handed on.
    from pipelines.services.models import resolve

    handed = out.split("newest): ")[1].split()[0]
    loaded = resolve(str(run), f"sqlite:///{workdir / 'mlflow.db'}")
    assert loaded.source == handed and loaded.iteration == checkpoints.iteration_of(handed)
    assert f"model: {run} is a training run's folder; using {Path(handed).name}, the checkpoint the run handed on" \
        in capsys.readouterr().err
    # Anything else in it that is not a checkpoint: one line naming the checkpoints there.
    code, _, err = run_cli(capsys, "generate", "--model", str(run / "checkpoint_manager_snapshot.json"), "--rows", "10",
                           "--out", str(workdir / "ds"))
    assert_one_line(code, err, "checkpoint_manager_snapshot.json: not a checkpoint",
                    "checkpoints there: checkpoint_00000030, checkpoint_00000020, checkpoint_00000010")
    code, _, err = run_cli(capsys, "generate", "--model", str(run / "damaged"), "--rows", "10",
                           "--out", str(workdir / "ds"))
    assert_one_line(code, err, "damaged: no complete checkpoint in this run folder (checkpoints there: "
                               "checkpoint_00000020)")
    # The same run, resumed with a learning rate that overflows the weights at once.
    code, _, err = run_cli(capsys, "train", *set_args(base + ["train.iterations=50", "train.lr_d=1e30",
                                                             "train.lr_g=1e30"]))
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bar; the damaged one is gone
    assert "is skipped" not in err
    assert_one_line(code, last, "NaN/inf at iteration 31", "checkpoint_00000030")
    assert checkpoints.load_state(run / "checkpoint_00000030")["iteration"] == 30
    assert not list(run.glob("checkpoint_0000004*"))


def test_a_full_disk_names_the_checkpoint_it_cut_short_and_keeps_the_last_good(workdir, capsys, ray_local):
    """`ray.storage_path` on a 3 MB tmpfs: the first checkpoint (1.9 MB) fits, the second does not."""
    import subprocess

    disk = workdir / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        code, _, err = run_cli(capsys, "train", *set_args(SMALL + [
            "ray.num_workers=1", "ray.max_failures=0", "train.run_name=full", "train.iterations=30",
            "train.checkpoint_every=10", "train.eval_every=10", f"ray.storage_path={disk}"]))
        run = disk / "full"
        last = err.replace("\r", "\n").strip().splitlines()[-1]
        assert_one_line(code, last, f"run 'full': no space left on {disk} ({run}) while writing checkpoint 20; "
                                    f"the last good checkpoint is {run / 'checkpoint_00000010'}")
        assert checkpoints.load_state(run / "checkpoint_00000010")["iteration"] == 10  # intact
        assert checkpoints.problems(run / "checkpoint_00000010", 1) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
