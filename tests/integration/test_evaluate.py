"""`ganpipe evaluate` on a generator checkpoint and on Parquet datasets; its bad input."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gan_core import Game, adam_pair, build_models
from gan_core.data import load_dataset
from pipelines.services import checkpoints
from pipelines.config import load_config
from pipelines.config.build import model_spec
from pipelines.stages.train.worker import checkpoint_meta
from tests.integration.cli_run import assert_one_line_error, ganpipe
from tests.test_data import write_hf_parquet

pytestmark = pytest.mark.slow
DIGITS = ["--set", "data.source=digits", "--set", "eval.samples=300"]


def _cache(tmp_path):
    return ["--set", f"eval.cache_dir={tmp_path / 'features'}"]


def _checkpoint(tmp_path):
    cfg = load_config(None, ["data.source=digits", "model.g_width=8", "model.d_width=8"])
    data = load_dataset("digits")
    train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
    spec = model_spec(cfg, train.image_shape, train.num_classes)
    g, d = build_models(spec)
    game = Game(g, d, *adam_pair(g, d, 1e-3, 1e-3))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    checkpoints.save(folder, game.state_dict(), 7, cfg.model_dump(mode="json"), 0,
                     checkpoint_meta(spec, data, train, run_id=""))
    return folder


def _real_digits_parquet(folder, n=400, labels_offset=0):
    folder.mkdir()
    ds = load_dataset("digits")
    imgs = ds.images[:n, 0]
    write_hf_parquet(folder / "part-0.parquet", imgs, ((ds.labels[:n] + labels_offset) % 10).tolist(),
                     ds.class_names)
    return folder


def test_evaluate_a_generator_prints_every_metric_with_the_real_reference(tmp_path):
    out = ganpipe(tmp_path, "evaluate", "--model", str(_checkpoint(tmp_path)), "--out", str(tmp_path / "rep"),
                  *DIGITS, *_cache(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("fd", "precision", "recall", "density", "coverage", "label_fidelity", "cas", "cas_ratio",
                 "near_copy_share", "feature network accuracy"):
        assert name in out.stdout, name
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["fd"] > 5 * metrics["fd_real"], "an untrained generator is far from the real floor"
    assert metrics["label_fidelity"] < 0.4 and metrics["label_fidelity_real"] > 0.85
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "samples_per_class.png" in report and report.count("\n| ") >= 10  # a fidelity row per class
    from PIL import Image
    grid = Image.open(tmp_path / "rep" / "samples_per_class.png")
    assert grid.size == (8 * 30 + 2, 10 * 30 + 2)  # 8 per row, one row per class, 28px + 2px padding


def test_evaluate_real_data_as_a_dataset_sits_at_the_real_reference(tmp_path):
    folder = _real_digits_parquet(tmp_path / "real")
    out = ganpipe(tmp_path, "evaluate", "--dataset", str(folder), "--out", str(tmp_path / "rep"), *DIGITS,
                  *_cache(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["fd"] < 3 * m["fd_real"] + 1.0, m
    assert m["label_fidelity"] > 0.85 and m["precision"] > 0.8, m
    # The training images are in this set: memorization sees near-copies.
    assert m["near_copy_share"] > 0.5, m
    # Shifted labels: same images, useless labels.
    wrong = _real_digits_parquet(tmp_path / "wrong", labels_offset=3)
    out = ganpipe(tmp_path, "evaluate", "--dataset", str(wrong), "--out", str(tmp_path / "rep2"), *DIGITS,
                  *_cache(tmp_path))
    m2 = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert m2["label_fidelity"] < 0.1 and m2["cas_ratio"] < 0.2, m2


def test_evaluate_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(ganpipe(tmp_path, "evaluate", "--dataset", str(tmp_path / "empty"), *DIGITS), "no .parquet files")
    (tmp_path / "nolabel").mkdir()
    pq.write_table(pa.table({"image": pa.array([b"x"])}), tmp_path / "nolabel" / "a.parquet")
    assert_one_line_error(ganpipe(tmp_path, "evaluate", "--dataset", str(tmp_path / "nolabel"), *DIGITS),
         "a.parquet: missing column(s) ['label']")
    assert_one_line_error(ganpipe(tmp_path, "evaluate", "--model", "models:/nothing@champion", *DIGITS), "does not resolve")
    assert_one_line_error(ganpipe(tmp_path, "evaluate", "--model", "0" * 32, *DIGITS), "MLflow run 00000000", "no checkpoint")
    few = _real_digits_parquet(tmp_path / "few", n=5)
    assert_one_line_error(ganpipe(tmp_path, "evaluate", "--dataset", str(few), *DIGITS, *_cache(tmp_path)),
         "5 samples, the metrics need at least 10")
    assert_one_line_error(ganpipe(tmp_path, "evaluate", *DIGITS), "exactly one of --model URI or --dataset DIR")
