"""Two trials logging at the same moment to one SQLite store: no 'database is locked' failure."""
import multiprocessing as mp

import pytest

pytestmark = pytest.mark.slow


def _writer(uri: str, run_id: str, barrier, key: str) -> None:
    from pipelines.services import tracking

    barrier.wait()
    for step in range(150):
        tracking.log_metrics(uri, run_id, {key: float(step), f"{key}_b": -float(step)}, step=step)


def test_two_writers_at_once_lose_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("concurrency")
    runs = [c.create_run(exp).info.run_id for _ in range(2)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(uri, runs[i], barrier, f"m{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    for i, run_id in enumerate(runs):
        hist = c.get_metric_history(run_id, f"m{i}")
        assert sorted(m.step for m in hist) == list(range(150))
