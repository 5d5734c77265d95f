"""Registry: the champion is chosen on one fixed evaluation protocol and moves only when beaten on
the same metric, data and protocol; registering a run twice keeps one version; the pt2 model loads
and samples."""
import json

import pytest
import torch

from pipelines.config import load_config
from pipelines.errors import UserError
from pipelines.services import contract
from pipelines.stages.register import decide, register
from tests.integration.test_evaluate import _checkpoint

pytestmark = pytest.mark.slow
PROTO = "samples=200;seed=0"


def test_decide_rules():
    champ = {"metric_name": "fd", "metric_value": "10.0", "data_fingerprint": "abc", "eval_protocol": PROTO}
    assert decide(5.0, None, "fd", "abc", PROTO)[0] == "champion"
    assert decide(5.0, champ, "fd", "abc", PROTO) == ("champion", "fd 5 beats the champion's 10")
    assert decide(12.0, champ, "fd", "abc", PROTO) == ("challenger", "fd 12 does not beat the champion's 10")
    assert decide(1.0, champ, "fd", "other", PROTO)[0] == "challenger"
    assert decide(0.9, champ, "label_fidelity", "abc", PROTO)[0] == "challenger"
    alias, reason = decide(1.0, champ, "fd", "abc", "samples=500;seed=0")
    assert alias == "challenger" and "another protocol" in reason
    lf = {"metric_name": "label_fidelity", "metric_value": "0.5", "data_fingerprint": "abc", "eval_protocol": PROTO}
    assert decide(0.9, lf, "label_fidelity", "abc", PROTO)[0] == "champion"  # higher is better there
    # With its bootstrap interval, a new version wins only when better beyond it
    assert decide(9.0, champ, "fd", "abc", PROTO, (8.0, 9.9)) == (
        "champion", "fd 9 (95% interval 8-9.9) beats the champion's 10 beyond its interval")
    assert decide(9.0, champ, "fd", "abc", PROTO, (8.0, 10.5)) == (
        "challenger", "fd 9 (95% interval 8-10.5) is better than the champion's 10, but not beyond its interval")
    assert decide(0.6, lf, "label_fidelity", "abc", PROTO, (0.45, 0.7))[0] == "challenger"
    assert decide(0.6, lf, "label_fidelity", "abc", PROTO, (0.55, 0.7))[0] == "champion"


def _run_with_checkpoint(tmp_path, uri, seed, sub, noisy_fd):
    """A run whose training probe logged a (misleading) fd, with a checkpoint artifact."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("ganpipe") or c.get_experiment(c.create_experiment("ganpipe"))
    run = c.create_run(exp.experiment_id)
    folder = _checkpoint(tmp_path / sub, seed, run.info.run_id)
    c.log_artifact(run.info.run_id, str(folder / "state.pt"), contract.CHECKPOINT_DIR)
    c.log_metric(run.info.run_id, "fd", noisy_fd)
    return run.info.run_id


def test_champion_is_chosen_on_the_protocol_moves_only_when_beaten_and_samples_labeled_images(tmp_path,
                                                                                         feature_cache):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}", "data.source=digits", "eval.samples=200",
                             "eval.cas=false", f"eval.cache_dir={feature_cache}"])
    c = MlflowClient(tracking_uri=uri)
    regs, best = [], None
    for i, seed in enumerate((0, 1, 2)):
        # The training probe's fd says the opposite of the truth: the registry must not read it.
        run_id = _run_with_checkpoint(tmp_path, uri, seed, f"r{i}", noisy_fd=float(i))
        reg = register(cfg, run_id)
        value = reg.metrics["fd"]
        assert reg.metrics["protocol"] == ("samples=200;seed=0;holdout=0.1;cas=0;cas_seeds=3;cas_epochs=8;cas_max_steps=600;"
                                           "classifier_epochs=4;classifier_max_steps=1500;bootstrap=200")
        v = c.get_model_version(reg.name, reg.version)
        assert float(v.tags["metric_value"]) == value and v.tags["eval_protocol"] == reg.metrics["protocol"]
        lo, hi = json.loads(v.tags["metric_interval"])
        assert lo == reg.metrics["fd_lo"] and hi == reg.metrics["fd_hi"] and lo < hi
        assert c.get_run(run_id).data.metrics["eval_fd"] == pytest.approx(value)  # the same evaluation, logged
        expected = "champion" if best is None or hi < best else "challenger"  # better beyond its interval
        assert reg.alias == expected, (reg, best)
        best = value if expected == "champion" else best
        regs.append((run_id, reg))
    assert len({round(r.metrics["fd"], 6) for _, r in regs}) == 3
    assert {r.alias for _, r in regs} == {"champion", "challenger"}  # both outcomes are exercised
    champion = c.get_model_version_by_alias("gan-generator", "champion")
    assert float(champion.tags["metric_value"]) == best
    # Registering a run again returns its version: no second version, no second evaluation.
    run_id, first = regs[0]
    again = register(cfg, run_id)
    assert again.version == first.version and "already version" in again.reason
    now = c.get_model_version("gan-generator", first.version).aliases
    assert again.alias == (now[0] if now else "")  # the alias it holds now, or none
    assert len(c.search_model_versions("name = 'gan-generator'")) == 3
    v = champion
    assert {k for k in v.tags if not k.startswith("mlflow.")} == set(contract.VERSION_TAGS)  # each read by the registry or the UI
    assert len(v.tags["data_fingerprint"]) == 64
    mlflow.set_tracking_uri(uri)
    g = mlflow.pytorch.load_model("models:/gan-generator@champion")
    info = mlflow.models.get_model_info("models:/gan-generator@champion").metadata
    assert (info["z_dim"], info["num_classes"], info["image_shape"]) == (cfg.model.z_dim, 10, [1, 28, 28])
    assert info["class_names"] == [str(i) for i in range(10)]
    x = g(torch.randn(5, cfg.model.z_dim), torch.tensor([0, 1, 2, 3, 9]))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    files = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri="models:/gan-generator@champion/data")}
    assert any(f.endswith("model.pt2") for f in files), files  # pickle-free export


def test_register_bad_input(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}"])
    with pytest.raises(UserError, match="no checkpoint"):
        register(cfg, "0" * 32)
    with pytest.raises(UserError, match="not a valid name for --alias"):
        register(cfg, "0" * 32, alias="x'y")
    with pytest.raises(UserError, match="expected an MLflow run id"):
        register(cfg, "a' or name = 'b")
