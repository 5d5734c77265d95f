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


@pytest.fixture
def workdir(tmp_path, monkeypatch, feature_cache):
    """A private working directory and MLflow store for in-process CLI calls."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path
