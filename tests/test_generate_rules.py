"""The batch stage's rules without Ray: label counts, shard writing, reproducibility by row id."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gan_core import ModelSpec, build_models
from pipelines.errors import UserError
from pipelines.stages.generate.labels import label_counts
from pipelines.stages.generate.writer import ShardWriter, file_complete

NAMES = ["a", "b", "c"]


def test_balanced_proportional_and_explicit_counts_are_exact():
    assert label_counts("balanced", 10, NAMES, None) == [4, 3, 3]
    assert label_counts("proportional", 10, NAMES, [0.5, 0.3, 0.2]) == [5, 3, 2]
    assert label_counts("proportional", 7, NAMES, [0.5, 0.25, 0.25]) == [3, 2, 2]
    assert label_counts("a=5,2=7", None, NAMES, None) == [5, 0, 7]
    assert label_counts("a=5,2=7", 12, NAMES, None) == [5, 0, 7]
    for spec, rows, needle in [("balanced", 0, "--rows 0"), ("d=3", None, "no class 'd'"),
                               ("a=-1", None, "cannot be negative"), ("a=0", None, "asks for no rows"),
                               ("a=5", 6, "--rows 6 disagrees"), ("a:5", None, "CLASS=COUNT"),
                               ("proportional", 5, "class shares")]:
        with pytest.raises(UserError, match=needle):
            label_counts(spec, rows, NAMES, None)


def _writer(tmp_path, counts=(3, 250, 47), seed=5):
    torch.manual_seed(0)
    spec = ModelSpec("dcgan", 16, (1, 28, 28), 3, 8, 8)
    g, _ = build_models(spec)
    from gan_core.metrics import SmallCNN

    net = SmallCNN(1, 3)
    request = {"rows": sum(counts), "counts": list(counts), "seed": seed, "class_names": NAMES}
    (tmp_path / "data").mkdir(exist_ok=True)
    return ShardWriter({"spec": spec.__dict__, "state": g.state_dict()}, {"state": net.state_dict(), "channels": 1,
                       "num_classes": 3}, request, str(tmp_path / "data"), {"seed": seed})


def test_rows_depend_on_seed_and_id_only_and_counts_are_exact(tmp_path):
    w = _writer(tmp_path)
    whole = w.rows(0, 300)
    parts = [w.rows(a, b) for a, b in ((256, 300), (0, 100), (100, 256))]
    by_id = {i: img["bytes"] for t in parts for i, img in zip(t.column("id").to_pylist(), t.column("image").to_pylist())}
    assert by_id == dict(zip(whole.column("id").to_pylist(), [im["bytes"] for im in whole.column("image").to_pylist()]))
    assert np.bincount(whole.column("label").to_numpy()).tolist() == [3, 250, 47]
    other = _writer(tmp_path, seed=6).rows(0, 10)
    assert other.column("image").to_pylist() != whole.slice(0, 10).column("image").to_pylist()


def test_a_shard_is_complete_or_absent(tmp_path):
    w = _writer(tmp_path)
    entry = w.write(1, 2, 256, 300)
    path = tmp_path / "data" / "train-00001-of-00002.parquet"
    assert entry["rows"] == 44 and file_complete(path) and pq.read_table(path).num_rows == 44
    assert not list((tmp_path / "data").glob(".*tmp"))
    path.write_bytes(path.read_bytes()[:-10])
    assert not file_complete(path)
