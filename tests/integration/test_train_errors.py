"""Bad input to `ganpipe train`: one clear line on stderr, a non-zero exit, nothing half done."""
import pytest

from pipelines.services import checkpoints
from tests.integration.cli_run import SMALL, assert_one_line_error, ganpipe, set_args

pytestmark = pytest.mark.slow


def test_unknown_key_and_missing_dataset(tmp_path):
    assert_one_line_error(ganpipe(tmp_path, "train", "--set", "train.epochz=1"), "unknown key 'train.epochz'")
    missing = tmp_path / "no-such-folder"
    assert_one_line_error(ganpipe(tmp_path, "train", "--set", f"data.source=imagefolder:{missing}"),
                    str(missing), "does not exist")
    assert not (tmp_path / "ganpipe_runs").exists()


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    out = ganpipe(tmp_path, "train", "--set", "mlflow.tracking_uri=http://127.0.0.1:9", timeout=60)
    assert_one_line_error(out, "http://127.0.0.1:9", "unreachable")
    assert not (tmp_path / "ganpipe_runs").exists()


def test_more_workers_than_the_cluster_places(tmp_path):
    out = ganpipe(tmp_path, "train", "--set", "ray.num_workers=16", timeout=120)
    assert_one_line_error(out, "16 workers", "the Ray cluster has 2 CPU")


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    base = SMALL + ["train.run_name=nan", "train.checkpoint_every=10"]
    ok = ganpipe(tmp_path, "train", *set_args(base + ["train.iterations=10"]))
    assert ok.returncode == 0, ok.stderr[-2000:]
    # Same run, resumed with a learning rate that overflows the weights at once.
    out = ganpipe(tmp_path, "train", *set_args(base + ["train.iterations=30", "train.lr_d=1e30", "train.lr_g=1e30"]))
    assert_one_line_error(out, "NaN/inf at iteration 11", "checkpoint_00000010")
    run = tmp_path / "ganpipe_runs" / "nan"
    assert sorted(p.name for p in run.glob("checkpoint_0*")) == ["checkpoint_00000010"]
    assert checkpoints.load_state(run / "checkpoint_00000010")["iteration"] == 10
