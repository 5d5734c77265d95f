"""Two Ray Train workers under DDP, on data streamed through Ray Data: replicas stay identical, each
iteration all-reduces exactly k * |theta_D| + |theta_G| gradient elements (D frozen during the G
update), and each worker reads only its own train files (never another's, never a holdout file).
The in-memory data path runs multi-worker in the faults, workflow and quick-preset tests."""
import json

import numpy as np
import pytest

from gan_core import ModelSpec, build_models
from pipelines.config import flatten, load_config
from pipelines.services import contract
from pipelines.stages.train import run_training

pytestmark = pytest.mark.slow


def _numel(module):
    return sum(p.numel() for p in module.parameters())


def _parquet_digits(root, files=5, rows=100):
    """mnist5k digits (stored class by class, so a shuffled pick) in `files` Parquet files."""
    from gan_core.data import load_dataset
    from tests.test_data import write_hf_parquet

    digits = load_dataset("mnist5k")
    pick = np.random.default_rng(0).permutation(len(digits))[:files * rows]
    root.mkdir()
    for f in range(files):
        sel = pick[f * rows:(f + 1) * rows]
        write_hf_parquet(root / f"train-{f:05d}-of-{files:05d}.parquet", digits.images[sel, 0], digits.labels[sel],
                         digits.class_names)
    return root


@pytest.mark.parametrize("k,arch", [(2, "dcgan")])
def test_two_workers_stay_in_sync_allreduce_k_d_plus_g_and_read_their_own_streamed_files(tmp_path, ray_local, k,
                                                                                         arch):
    from mlflow.tracking import MlflowClient

    from gan_core.data.streamed import load_streamed

    root = _parquet_digits(tmp_path / "parquet")
    cfg = load_config(None, [
        f"data.source=parquet:{root}", "data.streaming=on", "data.stream_sample=300",
        f"eval.cache_dir={tmp_path / 'features'}", f"model.arch={arch}", "model.g_width=8", "model.d_width=8",
        f"train.k={k}", "train.iterations=6", "train.log_every=3", "train.checkpoint_every=6", "train.batch_size=16",
        "train.eval_samples=100", "ray.num_workers=2", f"ray.storage_path={tmp_path / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "train.lr_decay=1.0", "train.eval_every=3",
    ])
    out = run_training(cfg, quiet=True)
    g, d = build_models(ModelSpec(arch, cfg.model.z_dim, (1, 28, 28), 10, 8, 8))
    expected = k * _numel(d) + _numel(g)
    assert out.metrics["allreduced_elements"] == expected, (out.metrics["allreduced_elements"], expected)
    digests = out.end.replica_digests
    assert len(digests) == 2 and digests[0] == digests[1], digests
    assert out.end.replicas_identical is True
    assert out.metrics["iteration"] == 6
    # Each worker read its own train files through Ray Data: files r, r + 2, ... of the file split.
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = c.get_run(out.run_id)
    split = load_streamed(f"parquet:{root}", 28, None, 0.1, 0, 300)
    names = lambda files: {f.rsplit("/", 1)[-1] for f in files}  # noqa: E731
    seen = [json.loads(run.data.tags[f"{contract.STREAM_SHARD}.{r}"]) for r in range(2)]
    assert names(seen[0]) == names(split.train_files[0::2]) and names(seen[1]) == names(split.train_files[1::2])
    assert not (names(seen[0]) | names(seen[1])) & names(split.holdout_files)
    assert sum(seen[0].values()) == sum(seen[1].values()) == 6 * k * 16  # k real batches per iteration
    assert run.data.tags["data.fingerprint"] == split.fingerprint
    # The MLflow run holds every config value, the metric curves, a sample grid, the checkpoint.
    assert run.info.status == "FINISHED"
    assert run.data.params["train.k"] == str(k) and run.data.params["ray.num_workers"] == "2"
    assert len(run.data.params) == len(flatten(cfg))
    assert [m.step for m in c.get_metric_history(out.run_id, "loss_d")] == [3, 6]
    # The learning rates' factor, agreed over the two ranks (a max over them) at the start and at each
    # evaluation: 1 for iterations 1-3, 1 - 3/6 after the evaluation at 3; the replicas above stayed
    # identical with it.
    assert [m.value for m in c.get_metric_history(out.run_id, "lr_scale")] == [1.0, 0.5]
    for key in ("loss_g", "d_real", "d_fake", "value", "value_gap"):
        assert len(c.get_metric_history(out.run_id, key)) == 2
    # The cheap metrics of evaluation, at each evaluation and the checkpoint.
    assert [m.step for m in c.get_metric_history(out.run_id, "fd")] == [3, 6]
    assert 0 <= out.metrics["label_fidelity"] <= 1 and out.metrics["fd"] > 0
    arts = {a.path for a in c.list_artifacts(out.run_id, "samples")}
    assert arts == {"samples/iter_000006.png"}
    assert {a.path for a in c.list_artifacts(out.run_id, "checkpoint")} == {"checkpoint/state.pt"}
    # MLflow's UI: a model-training experiment, and the run's data in its Dataset column.
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags[contract.EXPERIMENT_KIND_TAG] == "custom_model_development"
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.name == cfg.data.source and ds.dataset.digest == run.data.tags["data.fingerprint"][:32]
    assert [t.value for t in ds.tags] == ["training"]
    assert out.metrics["planned_iterations"] == 6 and out.metrics["d_images"] == 6 * (2 * k + 1) * 16 * 2
