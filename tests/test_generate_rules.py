"""The batch stage's rules without Ray: label counts, shard writing, reproducibility by row id."""
import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gan_core import ModelSpec, build_models
from pipelines.errors import UserError
from pipelines.stages.generate.labels import label_counts
from pipelines.services.dataset_folder import DatasetRequest, Filter, file_complete
from pipelines.stages.generate.writer import ShardWriter

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


SPEC = ModelSpec("dcgan", 16, (1, 28, 28), 3, 8, 8)


def _models():
    """A small conditional G and a verifier, with BatchNorm statistics as training leaves them."""
    from gan_core.metrics import SmallCNN
    from tests.helpers import trained_batchnorm

    torch.manual_seed(0)
    g, _ = build_models(SPEC)
    return trained_batchnorm(g), trained_batchnorm(SmallCNN(1, 3))


def _writer(tmp_path, counts=(3, 250, 47), seed=5, verifier=True):
    spec = SPEC
    g, net = _models()
    request = DatasetRequest("m", None, 0, "fp", seed, sum(counts), list(counts), NAMES, 1024,
                             verifier=verifier).to_dict()
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    return ShardWriter({"spec": spec.__dict__, "state": g.state_dict()}, {"state": net.state_dict(), "channels": 1,
                       "num_classes": 3}, request, str(tmp_path / "data"), {"seed": seed})


def test_files_are_16384_rows_or_fewer_so_that_a_small_dataset_has_eight():
    from pipelines.stages.generate.writer import rows_per_file

    assert rows_per_file(1_000_000, None) == 16384
    assert rows_per_file(10_000, None) == 1280  # 8 files: 7 x 1280 + 1040
    assert rows_per_file(100, None) == 256  # one block at least
    assert rows_per_file(131_072, None) == 16384 and rows_per_file(131_073, None) == 16384
    assert rows_per_file(10_000, 512) == 512  # as configured
    for rows in (1, 255, 2048, 10_000, 99_999, 500_000):
        per = rows_per_file(rows, None)
        assert per % 256 == 0 and (-(-rows // per) >= 8 or per == 256)


def test_rows_depend_on_seed_and_id_only_and_counts_are_exact(tmp_path):
    w = _writer(tmp_path)
    whole = w.rows(0, 300)
    parts = [w.rows(a, b) for a, b in ((256, 300), (0, 100), (100, 256))]
    by_id = {i: img["bytes"] for t in parts for i, img in zip(t.column("id").to_pylist(), t.column("image").to_pylist())}
    assert by_id == dict(zip(whole.column("id").to_pylist(), [im["bytes"] for im in whole.column("image").to_pylist()]))
    assert np.bincount(whole.column("label").to_numpy()).tolist() == [3, 250, 47]
    other = _writer(tmp_path, seed=6).rows(0, 10)
    assert other.column("image").to_pylist() != whole.slice(0, 10).column("image").to_pylist()


def test_without_the_verifier_the_rows_are_the_same_images_and_labels_without_its_columns(tmp_path):
    """generate.verifier=false: the same ids, images and labels, no verifier columns in the schema or the
    files, the verifier never called; the request's key differs (another folder), while a request with
    the verifier keeps the key it had before the switch existed."""
    with_v = _writer(tmp_path / "a").rows(0, 300)
    w = _writer(tmp_path / "b", verifier=False)
    assert w.net is None
    without = w.rows(0, 300)
    assert without.column_names == ["id", "image", "label"]
    for col in ("id", "image", "label"):
        assert without.column(col).to_pylist() == with_v.column(col).to_pylist()
    w.write(0, 1, 0, 300)
    assert pq.read_schema(tmp_path / "b" / "data" / "train-00000-of-00001.parquet").names == ["id", "image", "label"]
    on = DatasetRequest("m", None, 0, "fp", 5, 300, [3, 250, 47], NAMES, 1024)
    off = dataclasses.replace(on, verifier=False)
    assert on.key != off.key and DatasetRequest.from_dict(off.to_dict()) == off
    assert "verifier" not in on.what()  # folders written before keep their key
    # The UI's rows page lists such a dataset by row id, with nothing "seen" under the images.
    from pipelines.ui.views import Dataset, rows

    page, total = rows(Dataset(0, "b", tmp_path / "b", {"class_names": NAMES, "counts": [3, 250, 47], "request": off.to_dict()}), None, "asc", 0)
    assert total == 300 and [r["id"] for r in page] == list(range(48))
    assert all(r["seen"] is None and r["confidence"] is None for r in page)
    page, total = rows(Dataset(0, "b", tmp_path / "b", {"class_names": NAMES, "counts": [3, 250, 47], "request": off.to_dict()}), 0, "asc", 0)
    assert total == 3 and {r["label"] for r in page} == {NAMES[0]}


def test_a_shard_is_complete_or_absent(tmp_path):
    w = _writer(tmp_path)
    entry = w.write(1, 2, 256, 300)
    path = tmp_path / "data" / "train-00001-of-00002.parquet"
    assert entry["rows"] == 44 and file_complete(path) and pq.read_table(path).num_rows == 44
    assert not list((tmp_path / "data").glob(".*tmp"))
    path.write_bytes(path.read_bytes()[:-10])
    assert not file_complete(path)


class HashVerifier(torch.nn.Module):
    """A stand-in verifier whose class is a hash of the image: it agrees with a requested label about
    one time in three, with confidence 0.79."""

    def forward(self, x):
        cls = (x.flatten(1).sum(1) * 1000).long() % 3
        return torch.nn.functional.one_hot(cls, 3).float() * 2.0


def test_filters_keep_only_accepted_rows_and_stay_reproducible(tmp_path):
    w = _writer(tmp_path)
    w.net = HashVerifier()
    w.request = dataclasses.replace(w.request, filter=Filter(0.5, 30, None))
    t = w.rows(0, 300)
    conf = t.column("verifier_confidence").to_numpy()
    assert (conf >= 0.5).all() and (t.column("verifier_label").to_numpy() == t.column("label").to_numpy()).all()
    assert np.bincount(t.column("label").to_numpy()).tolist() == [3, 250, 47]  # counts stay exact
    assert w.tries.sum() > 300  # some candidates were rejected and retried
    again = _writer(tmp_path)
    again.net, again.request = HashVerifier(), w.request
    assert again.rows(100, 200).column("image").to_pylist() == t.slice(100, 100).column("image").to_pylist()
    from pipelines.stages.generate.writer import FilterUnmet

    w.request = dataclasses.replace(w.request, filter=Filter(0.999, 2, None))
    with pytest.raises(FilterUnmet, match="rows found none in 2 tries"):
        w.rows(0, 256)
    with pytest.raises(FilterUnmet):
        w.write(0, 2, 0, 256)
    assert not list((tmp_path / "data").glob("*.parquet")) and not list((tmp_path / "data").glob(".*"))


def test_drs_accepts_by_the_density_ratio_and_recovers_p_data():
    """With D = D* for p_g = N(0, 1), p_data = N(0.5, 1): logit = 0.5x - 0.125; DRS at gamma = 0 on
    samples of p_g keeps exactly a sample of p_data."""
    from gan_core.theory import drs_acceptance, drs_gamma

    rng = np.random.default_rng(0)
    x = rng.standard_normal(400_000)
    logits = 0.5 * x - 0.125
    top = float(logits[:20_000].max())
    kept = x[rng.random(len(x)) < drs_acceptance(logits, top, gamma=0.0)]
    assert abs(kept.mean() - 0.5) < 0.02 and abs(kept.std() - 1.0) < 0.02
    gamma = drs_gamma(logits[:20_000], top, keep_share=0.5)
    assert abs((drs_acceptance(logits, top, gamma) >= 0.5).mean() - 0.5) < 0.01


def test_logit_calibration_recovers_the_density_ratio_from_a_sharp_or_flat_discriminator():
    """p_g = N(0, 1), p_data = N(0.5, 1): log p_data / p_g = 0.5x - 0.125. A discriminator whose logit
    is that times 3 (too sharp) or times 1/2 plus 1 (too flat, biased) is mapped back to it; D* itself
    is left as it is."""
    from gan_core.theory import logit_calibration

    rng = np.random.default_rng(1)
    real, fake = rng.normal(0.5, 1, 200_000), rng.normal(0, 1, 200_000)
    true = lambda v: 0.5 * v - 0.125  # noqa: E731
    for d in (true, lambda v: 3 * true(v), lambda v: 0.5 * true(v) + 1):
        a, b = logit_calibration(d(real), d(fake))
        v = np.linspace(-3, 3, 7)
        assert np.allclose(a * d(v) + b, true(v), atol=0.03)
    assert np.allclose(logit_calibration(true(real), true(fake)), (1, 0), atol=0.02)


def test_the_served_model_draws_the_rows_generate_writes(tmp_path):
    """The python_function flavor: (label, count) rows and a seed in; the same PNG bytes, ids and labels
    as the batch stage's rows of that request; bad requests are one clear error."""
    import base64

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from pipelines.services import serving

    w = _writer(tmp_path, counts=(3, 250, 47), seed=5)
    serving.save_model(str(tmp_path / "model"), Model(), generator=_models()[0], spec=SPEC.__dict__, class_names=NAMES)
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    out = served.predict(pd.DataFrame({"label": [1, 0, 2], "count": [250, 3, 47]}), params={"seed": 5})
    rows = w.rows(0, 300)
    assert out["id"].tolist() == rows.column("id").to_pylist()
    assert out["label"].tolist() == rows.column("label").to_pylist()
    assert [base64.b64decode(s) for s in out["image"]] == [im["bytes"] for im in rows.column("image").to_pylist()]
    g = mlflow.pytorch.load_model(str(tmp_path / "model"))  # the pt2 flavor still loads as G(z, y)
    assert g(torch.randn(2, 16), torch.tensor([0, 2])).shape == (2, 1, 28, 28)
    for request, needle in [({"label": [3], "count": [1]}, "outside the model's classes"),
                            ({"label": [0], "count": [0]}, "positive counts"),
                            ({"label": [0], "count": [serving.MAX_ROWS + 1]}, "at most")]:
        with pytest.raises(MlflowException, match=needle):
            served.predict(pd.DataFrame(request), params={"seed": 5})


def test_the_models_pins_are_the_installed_packages_so_the_check_made_ahead_warns_of_nothing(monkeypatch):
    """`check_requirements_ahead` runs MLflow's check of the served model's pins (what the first
    save_model runs first), while a run trains: the pins are the installed versions, so it warns of no
    mismatch."""
    from mlflow.utils import requirements_utils

    from pipelines.services import serving

    seen = []
    monkeypatch.setattr(requirements_utils._logger, "warning", lambda msg, *a, **k: seen.append(msg))
    serving.check_requirements_ahead()
    assert seen == [] and len(serving.requirements()) == 5
    monkeypatch.setattr(serving, "requirements", lambda: ["numpy==0.0.1"])
    serving.check_requirements_ahead()
    assert len(seen) == 1 and "numpy" in seen[0]  # a pin that does not match is what it would warn of
