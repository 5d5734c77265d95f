import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the in-process integration tests of the whole session (2 CPUs in CI)."""
    import ray

    from pipelines.services.runtime import init_ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    init_ray("", verbose=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_dashboard(ray_local):
    """The session's Ray restarted with its dashboard, as `ganpipe tune` starts it (Train's cleanup
    of trials stopped by the scheduler uses the state API the dashboard serves)."""
    from pipelines.services.runtime import init_ray

    ray_local.shutdown()
    init_ray("", verbose=False, dashboard=True)
    yield ray_local
    # A fresh Ray again for the modules after: nothing a stopped trial held carries over to them.
    ray_local.shutdown()
    init_ray("", verbose=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch, feature_cache):
    """A private working directory and MLflow store for in-process CLI calls."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path
