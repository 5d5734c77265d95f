import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray cluster for the in-process integration tests (2 CPUs, like CI)."""
    import ray

    from pipelines.services.runtime import init_ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    init_ray("", verbose=False)
    yield ray
    ray.shutdown()
