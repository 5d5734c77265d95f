"""The README's main job: `ganpipe run` on the built-in defaults, on a fresh working directory."""
import pytest

from tests.integration.cli_run import ganpipe, metric_history, run_id_from

pytestmark = pytest.mark.slow


def test_ganpipe_run_with_no_arguments_trains_the_quick_preset(tmp_path):
    out = ganpipe(tmp_path, "run", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = run_id_from(out.stdout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("train:")]
    assert len(lines) == 3, out.stdout
    assert "finished 350 iterations" in lines[0]  # 10 epochs x 35 batches per worker (2 workers, batch 64)
    assert (tmp_path / "mlflow.db").is_file()
    # Ray's own log lines stay out of the default output.
    assert "RayTrainWorker" not in out.stdout + out.stderr
    d_x = metric_history(tmp_path, run_id, "d_real")
    assert len(d_x) == 14 and all(0 < v < 1 for _, v in d_x)
    ips = metric_history(tmp_path, run_id, "images_per_second")
    assert all(v > 0 for _, v in ips)
    # Evaluated once, under the registry's protocol, and registered as the first champion.
    assert "evaluate: report eval_reports/" in out.stdout
    assert "register: gan-generator version 1 is champion (there is no champion yet)" in out.stdout
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("fd ")], out.stdout
    assert len(metric_history(tmp_path, run_id, "eval_fd")) == 1  # the registry reused the evaluation
