"""`ganpipe evaluate` on a generator checkpoint and on Parquet datasets; its bad input (in process)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gan_core.data import load_dataset
from pipelines.config import load_config
from pipelines.config.build import build_game
from pipelines.services import checkpoints
from pipelines.stages.train.worker import checkpoint_meta
from tests.helpers import assert_one_line, run_cli
from tests.test_data import write_hf_parquet

pytestmark = pytest.mark.slow
DIGITS = ["--set", "data.source=digits", "--set", "eval.samples=300"]


def _cache(feature_cache):
    return ["--set", f"eval.cache_dir={feature_cache}"]


def _checkpoint(folder, seed: int = 0, run_id: str = "", overrides=()):
    import torch

    torch.manual_seed(seed)
    cfg = load_config(None, ["data.source=digits", "model.g_width=8", "model.d_width=8", *overrides])
    data = load_dataset("digits")
    train, _ = data.split(cfg.data.holdout_fraction, cfg.seed)
    game, spec = build_game(cfg, train)
    folder.mkdir(parents=True)
    checkpoints.save(folder, game.state_dict(), 7, cfg.model_dump(mode="json"), 0,
                     checkpoint_meta(spec, data, train, run_id=run_id))
    return folder


def _real_digits_parquet(folder, n=400, labels_offset=0):
    folder.mkdir()
    ds = load_dataset("digits")
    imgs = ds.images[:n, 0]
    write_hf_parquet(folder / "part-0.parquet", imgs, ((ds.labels[:n] + labels_offset) % 10).tolist(),
                     ds.class_names)
    return folder


def test_evaluate_a_generator_prints_every_metric_with_the_real_reference(workdir, capsys, feature_cache):
    # The checkpoint names a training run of another tracking store (a folder copied between machines):
    # it is evaluated all the same, with one warning, and nothing is logged to a run this store lacks.
    foreign = "ab" * 16
    code, out, err = run_cli(capsys, "evaluate", "--model", str(_checkpoint(workdir / "ckpt", run_id=foreign)),
                             "--out", str(workdir / "rep"), *DIGITS, *_cache(feature_cache))
    assert code == 0, err[-3000:]
    assert f"its training run {foreign} is not in the tracking store" in err and "Traceback" not in err
    for name in ("fd", "precision", "recall", "density", "coverage", "label_fidelity", "cas", "cas_ratio",
                 "near_copy_share", "feature network accuracy"):
        assert name in out, name
    metrics = json.loads((workdir / "rep" / "metrics.json").read_text())
    assert metrics["fd"] > 5 * metrics["fd_real"], "an untrained generator is far from the real floor"
    assert metrics["label_fidelity"] < 0.4 and metrics["label_fidelity_real"] > 0.85
    assert metrics["protocol"].startswith("samples=1618;seed=0")  # CAS: as many samples as the train split
    assert ";cas_seeds=3;cas_epochs=8;" in metrics["protocol"]  # three classifiers per side of 8 epochs
    report = (workdir / "rep" / "report.md").read_text()
    assert "samples_per_class.png" in report and report.count("\n| ") >= 10  # a fidelity row per class
    # Per class also the CAS of both sides and their gap: the row of class 0 holds the numbers of metrics.json.
    s, r = metrics["cas_per_class"][0], metrics["cas_real_per_class"][0]
    assert "| trained on real | gap |" in report and f"| {s:.3f} | {r:.3f} | {r - s:+.3f} |" in report
    from PIL import Image
    grid = Image.open(workdir / "rep" / "samples_per_class.png")
    assert grid.size == (8 * 30 + 2, 10 * 30 + 2)  # 8 per row, one row per class, 28px + 2px padding


def test_evaluate_real_data_as_a_dataset_sits_at_the_real_reference(workdir, capsys, feature_cache):
    folder = _real_digits_parquet(workdir / "real")
    one = ("--set", "eval.cas_seeds=1")  # one classifier per side: what this test asserts needs no mean
    code, _, err = run_cli(capsys, "evaluate", "--dataset", str(folder), "--out", str(workdir / "rep"), *DIGITS,
                           *_cache(feature_cache), *one)
    assert code == 0, err[-3000:]
    m = json.loads((workdir / "rep" / "metrics.json").read_text())
    assert m["fd"] < 3 * m["fd_real"] + 1.0, m
    assert m["label_fidelity"] > 0.85 and m["precision"] > 0.8, m
    # The training images are in this set: memorization sees near-copies.
    assert m["near_copy_share"] > 0.5, m
    # Shifted labels: same images, useless labels.
    wrong = _real_digits_parquet(workdir / "wrong", labels_offset=3)
    code, _, err = run_cli(capsys, "evaluate", "--dataset", str(wrong), "--out", str(workdir / "rep2"), *DIGITS,
                           *_cache(feature_cache), *one)
    m2 = json.loads((workdir / "rep2" / "metrics.json").read_text())
    assert m2["label_fidelity"] < 0.1 and m2["cas_ratio"] < 0.2, m2


def test_evaluate_bad_input(workdir, capsys, feature_cache):
    def err_of(*args):
        return run_cli(capsys, "evaluate", *args, *DIGITS)[::2]

    (workdir / "empty").mkdir()
    assert_one_line(*err_of("--dataset", str(workdir / "empty")), "no .parquet files")
    (workdir / "nolabel").mkdir()
    pq.write_table(pa.table({"image": pa.array([b"x"])}), workdir / "nolabel" / "a.parquet")
    assert_one_line(*err_of("--dataset", str(workdir / "nolabel")), "a.parquet: missing column(s) ['label']")
    assert_one_line(*err_of("--model", "models:/nothing@champion"), "does not resolve")
    assert_one_line(*err_of("--model", "0" * 32), "MLflow run 00000000", "no checkpoint")
    assert_one_line(*err_of("--model", str(workdir / "empty")), "empty/state.pt: no checkpoint state here")
    few = _real_digits_parquet(workdir / "few", n=5)
    assert_one_line(*err_of("--dataset", str(few), *_cache(feature_cache)), "5 samples, the metrics need at least 10")
    assert_one_line(*err_of(), "exactly one of --model URI or --dataset DIR")


def test_a_datasets_rows_train_cas_in_proportion_or_take_the_generators(feature_cache, monkeypatch):
    from gan_core.metrics import suite
    from pipelines.stages.evaluate import RowsCas, protocol_metrics

    cfg = load_config(None, ["data.source=digits", "eval.cas_seeds=1", f"eval.cache_dir={feature_cache}"])
    data = load_dataset("digits")
    x, y = data.tensors()
    steps = {n: protocol_metrics(cfg, data, x[:n], y[:n], RowsCas())["cas_steps"] for n in (128, 256)}
    assert steps == {128: 16, 256: 32}  # eval.cas_epochs (8) over the rows, no floor: cost in proportion

    def no_training(*a, **k):
        raise AssertionError("CAS trained although the generator's was given")

    monkeypatch.setattr(suite, "classification_accuracy_score", no_training)
    given = {"cas": 0.5, "cas_ratio": 0.55, "cas_lo": 0.4, "cas_per_class": [0.5] * 10, "cas_samples": 1618,
             "fd": 99.0}
    m = protocol_metrics(cfg, data, x[:128], y[:128], RowsCas(given))
    assert {k: m[k] for k in ("cas", "cas_ratio", "cas_lo", "cas_per_class", "cas_samples", "cas_from")} == {
        **{k: v for k, v in given.items() if k != "fd"}, "cas_from": "generator"}
    assert m["fd"] != 99.0  # only CAS is taken; the rest is measured on the rows
