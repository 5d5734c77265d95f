import os

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> str:
    """One feature-network cache for the whole session: each dataset's network is trained once."""
    folder = str(tmp_path_factory.mktemp("features"))
    os.environ["GANPIPE_TEST_FEATURES"] = folder  # subprocess runs (tests/integration/cli_run.py) use it too
    return folder
