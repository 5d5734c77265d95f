"""Registry: champion only when better on the same metric and data; pt2 model loads and samples."""
import pytest
import torch

from pipelines.config import load_config
from pipelines.errors import UserError
from pipelines.stages.register import decide, register
from tests.integration.test_evaluate import _checkpoint

pytestmark = pytest.mark.slow


def test_decide_rules():
    champ = {"metric_name": "fd", "metric_value": "10.0", "data_fingerprint": "abc"}
    assert decide(5.0, None, "fd", "abc")[0] == "champion"
    assert decide(5.0, champ, "fd", "abc") == ("champion", "fd 5 beats the champion's 10")
    assert decide(12.0, champ, "fd", "abc") == ("challenger", "fd 12 does not beat the champion's 10")
    assert decide(1.0, champ, "fd", "other")[0] == "challenger"
    assert decide(0.9, champ, "label_fidelity", "abc")[0] == "challenger"
    lf = {"metric_name": "label_fidelity", "metric_value": "0.5", "data_fingerprint": "abc"}
    assert decide(0.9, lf, "label_fidelity", "abc")[0] == "champion"  # higher is better there


def _run_with_checkpoint(tmp_path, uri, fd, sub):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("ganpipe") or c.get_experiment(c.create_experiment("ganpipe"))
    run = c.create_run(exp.experiment_id)
    folder = _checkpoint(tmp_path / sub)
    c.log_artifact(run.info.run_id, str(folder / "state.pt"), "checkpoint")
    c.log_metric(run.info.run_id, "fd", fd)
    return run.info.run_id


def test_champion_moves_only_when_beaten_and_the_model_samples_labeled_images(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}", "data.source=digits"])
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    first = register(cfg, _run_with_checkpoint(tmp_path, uri, 20.0, "a"))
    assert (first.version, first.alias) == ("1", "champion")
    worse = register(cfg, _run_with_checkpoint(tmp_path, uri, 25.0, "b"))
    assert (worse.version, worse.alias) == ("2", "challenger") and "does not beat" in worse.reason
    better = register(cfg, _run_with_checkpoint(tmp_path, uri, 15.0, "c"))
    assert (better.version, better.alias) == ("3", "champion")
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=uri)
    v = c.get_model_version_by_alias("gan-generator", "champion")
    assert str(v.version) == "3" and v.tags["metric_value"] == "15.0" and v.tags["z_dim"] == "64"
    assert v.tags["class_names"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert len(v.tags["data_fingerprint"]) == 64 and v.tags["image_shape"] == "[1, 28, 28]"
    mlflow.set_tracking_uri(uri)
    g = mlflow.pytorch.load_model("models:/gan-generator@champion")
    x = g(torch.randn(5, 64), torch.tensor([0, 1, 2, 3, 9]))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    art = mlflow.artifacts.list_artifacts(artifact_uri="models:/gan-generator@champion")
    assert any(a.path.endswith("data") for a in art)
    files = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri="models:/gan-generator@champion/data")}
    assert any(f.endswith("model.pt2") for f in files), files  # pickle-free export


def test_register_bad_input(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}"])
    with pytest.raises(UserError, match="no checkpoint"):
        register(cfg, "0" * 32)
