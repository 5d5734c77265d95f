"""The README's main job: `ganpipe run` on the built-in defaults, in a fresh working directory."""
import pytest

from tests.helpers import run_cli
from tests.integration.cli_run import metric_history, run_id_from

pytestmark = pytest.mark.slow


def test_ganpipe_run_with_no_arguments_trains_evaluates_and_registers_the_quick_preset(workdir, capsys, ray_local):
    code, out, err = run_cli(capsys, "run")
    assert code == 0, err[-3000:]
    run_id = run_id_from(out)
    lines = [ln for ln in out.splitlines() if ln.startswith("train:")]
    assert len(lines) == 3, out
    assert "finished 350 iterations" in lines[0]  # 10 epochs x 35 batches per worker (2 workers, batch 64)
    assert (workdir / "mlflow.db").is_file()
    # Ray's own log lines stay out of the default output.
    assert "RayTrainWorker" not in out + err
    d_x = metric_history(workdir, run_id, "d_real")
    assert len(d_x) == 14 and all(0 < v < 1 for _, v in d_x)
    ips = metric_history(workdir, run_id, "images_per_second")
    assert all(v > 0 for _, v in ips)
    # Evaluated once, under the registry's protocol, and registered as the first champion.
    assert f"evaluate: report eval_reports/" in out
    assert "register: gan-generator version 1 is champion (there is no champion yet)" in out
    assert [ln for ln in out.splitlines() if ln.startswith("fd ")], out
    assert len(metric_history(workdir, run_id, "eval_fd")) == 1  # the registry reused the evaluation
