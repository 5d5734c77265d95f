import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import assert_one_line, run_cli

from pipelines.cli import COMMANDS
from pipelines.config import Config, ConfigError, describe, flatten, load_config, preset_text, set_key
from pipelines.config import auto


def test_quick_preset_is_the_default():
    cfg = load_config()
    assert cfg.data.source == "mnist5k" and cfg.model.arch == "dcgan" and cfg.model.conditional
    assert cfg.mlflow.tracking_uri is None and cfg.ray.address == ""


def test_set_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["train.k=3", "train.lr_d=1e-3", "model.arch=mlp", "data.class_names=[a, b]"])
    assert cfg.train.k == 3 and cfg.train.lr_d == pytest.approx(1e-3) and cfg.model.arch == "mlp"
    assert cfg.data.class_names == ["a", "b"]
    assert flatten(cfg)["train.k"] == 3


def test_unknown_key_is_named_with_its_path(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  kk: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'train\.kk'"):
        load_config(f)
    with pytest.raises(ConfigError, match="unknown key 'model.widht'"):
        load_config(None, ["model.widht=3"])


def test_bad_values_and_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.k: Input should be greater than or equal to 1"):
        load_config(None, ["train.k=0"])
    with pytest.raises(ConfigError, match="model.arch"):
        load_config(None, ["model.arch=vae"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.k"])
    with pytest.raises(ConfigError, match="model.depth=3 does not fit image size 28"):
        load_config(None, ["model.depth=3"])
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True)


def test_console_wiring_help_and_one_line_errors():
    """The few subprocess checks: the module entry point, its help, a user error's exit code."""
    out = _cli("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout
    out = _cli("train", "--set", "train.nope=1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown key 'train.nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_command_ends_without_module_teardown_after_all_a_normal_exit_does(tmp_path):
    """`pipelines.cli.run` (the `ganpipe` script) skips the interpreter's module teardown: everything a
    normal exit does comes first (all output, the threads Python waits for, the exit handlers, temporary
    folders removed), and main's exit code is the process's; under a profiler it exits the normal way."""
    script = f"""
import atexit, sys, tempfile, threading, time
from pathlib import Path
import pipelines.cli as cli
keep = tempfile.TemporaryDirectory(dir={str(tmp_path)!r})
print(keep.name)
threading.Thread(target=lambda: (time.sleep(0.5), Path({str(tmp_path / 'joined')!r}).write_text('yes'))).start()
atexit.register(lambda: print("handler ran"))
sys.argv = ["ganpipe", *sys.argv[1:]]
cli.run()
"""
    ok = subprocess.run([sys.executable, "-c", script, "config"], capture_output=True, text=True)
    lines = ok.stdout.splitlines()
    assert ok.returncode == 0 and lines[-1] == "handler ran"
    assert "\n".join(lines[1:-1]).strip() == _cli("config").stdout.strip()  # the whole output, as piped
    assert (tmp_path / "joined").read_text() == "yes" and not os.path.exists(lines[0])
    bad = subprocess.run([sys.executable, "-c", script, "train", "--set", "train.nope=1"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown key 'train.nope'" in bad.stderr and bad.stdout.endswith("handler ran\n")
    # Under a profiler the command exits the normal way, so that the profiler writes its results.
    profiled = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "prof"), "-m", "pipelines.cli",
                               "config"], capture_output=True, text=True)
    assert profiled.returncode == 0 and (tmp_path / "prof").stat().st_size > 0


@pytest.mark.parametrize("key,value", [("train.run_name", "a'b"), ("train.run_name", "../escape"),
                                       ("tune.name", "x/../../y"), ("registry.model_name", "gans/best"),
                                       ("train.run_name", 'a"b')])
def test_names_that_reach_paths_or_filters_are_refused(capsys, key, value):
    code, _, err = run_cli(capsys, "train", "--set", f"{key}={value}")
    assert_one_line(code, err, key, "not a valid name")


def test_schema_is_the_one_source_of_defaults():
    """A user's own YAML without `epochs` trains what the configuration doc says (the schema once said 3
    while the docs said 10); the preset's own length (a cap, ended by its time budget) is documented too."""
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    schema_epochs, preset_epochs = Config().train.epochs, load_config().train.epochs
    assert (schema_epochs, preset_epochs) == (10, 400)
    assert f"| {schema_epochs} / unset (quick preset: {preset_epochs} epochs, a cap above" in readme
    tree = yaml.safe_load(preset_text("quick")) or {}
    schema = flatten(Config())
    preset = flatten(Config.model_validate(tree))
    changed = {k for k in preset if preset[k] != schema[k]}
    given = set(flatten_tree(tree))
    assert given == changed, "the preset holds exactly the keys it changes"


def flatten_tree(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and not prefix.startswith("tune.space"):
            out.update(flatten_tree(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_key_is_described_and_ganpipe_config_prints_them(capsys):
    rows = describe(load_config())
    keys = {k if not k.startswith("tune.space.") else "tune.space" for k in flatten(Config())}
    assert {k for k, _, _ in rows} == keys and all(meaning for _, _, meaning in rows)
    code, out, _ = run_cli(capsys, "config", "--set", "train.k=2")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("train.k "))
    assert " 2 " in line and "discriminator updates per generator update" in line
    assert all(key in out for key, _, _ in rows)


def test_set_key_is_the_one_way_to_set_a_dotted_key():
    tree = {"train": {"k": 1}}
    set_key(tree, "train.k", 2)
    set_key(tree, "model.arch", "mlp")
    assert tree == {"train": {"k": 2}, "model": {"arch": "mlp"}}
    with pytest.raises(ConfigError, match="train.k is a value, not a section"):
        set_key(tree, "train.k.x", 1)


def test_the_sweep_preset_builds_on_quick_and_a_config_may_extend_a_preset(tmp_path):
    quick, sweep = load_config("quick"), load_config("sweep")
    assert sweep.auto and sweep.train.eval_every == quick.train.eval_every
    # A trial runs until ASHA stops it or the sweep's time is up: no budget, target or patience of its own
    # (given as none, so auto derives neither).
    assert {"train.time_budget_s", "train.patience"} <= auto.given(sweep)
    assert sweep.train.time_budget_s is None and sweep.train.target is None and sweep.train.patience is None
    assert sweep.tune.workers_per_trial == 1 and sweep.tune.time_budget_s == 1800
    assert set(sweep.tune.space) == {"train.lr_g", "train.lr_d", "train.batch_size", "train.ema_beta", "model.d_width"}
    # What the space leaves out is the default's: G conditioned at its input, k = 1.
    assert sweep.model.g_conditioning == quick.model.g_conditioning == "input" and sweep.train.k == 1
    assert sweep.workflow.stages[0] == "tune"
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: sweep\ntune:\n  num_samples: 3\n  space:\n    train.k: {choice: [1]}\n")
    cfg = load_config(mine)
    assert cfg.tune.num_samples == 3 and list(cfg.tune.space) == ["train.k"]
    assert cfg.train.epochs == sweep.train.epochs != quick.train.epochs
    # The cap is above what a kept trial trains in the sweep's time: one-thread bf16 trials at the space's
    # smallest batch train about 24 iterations a second on 2 cores (docs/quality.md), on 4,500 digits.
    smallest = min(sweep.tune.space["train.batch_size"].choice)
    assert sweep.train.epochs * (4500 // smallest) > 24 * sweep.tune.time_budget_s
    mine.write_text("extends: fast\n")
    with pytest.raises(ConfigError, match="extends: 'fast' is not a preset"):
        load_config(mine)


@pytest.mark.parametrize("amx, cuda_bf16, device, expected", [
    (True, False, "cpu", "bf16"), (False, False, "cpu", "fp32"),
    (False, True, "cuda", "bf16"), (True, False, "cuda", "fp32")])
def test_precision_auto_is_bf16_only_where_the_device_computes_it_natively(monkeypatch, amx, cuda_bf16, device,
                                                                           expected):
    import torch

    from pipelines.config.build import build_game, load_data, precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert precision("auto", device) == expected
    assert precision("fp32", device) == "fp32" and precision("bf16", device) == "bf16"
    with pytest.raises(ConfigError, match="train.precision: Input should be 'auto', 'fp32' or 'bf16'"):
        load_config(None, ["train.precision=fp16"])
    if device == "cpu":  # what the training worker builds
        cfg = load_config(None, ["data.source=digits", "train.precision=auto"])
        assert build_game(cfg, load_data(cfg))[0].precision == expected


def test_a_workflow_stage_reruns_when_any_key_it_reads_changes():
    """Every key a stage reads is in its input hash; only where-not-what keys are left out."""
    from pipelines.config import STAGE_INPUTS, WHERE_NOT_WHAT, flatten, stage_inputs
    from pipelines.workflow import _hash

    base = load_config(None, [])
    flat = flatten(base)
    changed = {"ray.num_workers": "3", "ray.use_gpu": "true", "ray.cpus_per_worker": "2", "ray.storage_path": "elsewhere",
               "ray.max_failures": "0", "ray.layout": "per_cpu", "eval.during_training": "false",
               "eval.classifier_epochs": "2", "tune.metric": "label_fidelity", "train.r1_every": "7",
               "model.g_width": "16", "data.holdout_fraction": "0.2", "seed": "5"}
    for key, value in changed.items():
        other = load_config(None, [f"{key}={value}"])
        assert _hash(stage_inputs(other, "train")) != _hash(stage_inputs(base, "train")), key
    for key in WHERE_NOT_WHAT:  # where a stage runs or caches: a rerun elsewhere does not train again
        assert key not in stage_inputs(base, "train")
    other = load_config(None, ["ray.address=127.0.0.1:6379", "eval.cache_dir=/tmp/x", "mlflow.experiment=e"])
    assert _hash(stage_inputs(other, "train")) == _hash(stage_inputs(base, "train"))
    # Whole sections: every key of ray, train, model and data reaches the hash, whatever is added later.
    for stage, read in STAGE_INPUTS.items():
        inputs = stage_inputs(base, stage)
        for key in flat:
            reads = any(key == r or key.startswith(r + ".") for r in read)
            assert (key in inputs) == (reads and key not in WHERE_NOT_WHAT), (stage, key)


def test_a_source_without_class_names_is_told_how_to_name_them(tmp_path):
    """An IDX pair carries numbers only: the run says so and names the key; named classes, the digit
    sources and data.class_names say nothing."""
    import gzip

    from gan_core.data import load_dataset
    from pipelines.config.build import class_names_note

    images = np.zeros((6, 28, 28), np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], np.uint8)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (6).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (6).to_bytes(4, "big") + labels.tobytes())
    source = f"idx:{tmp_path}"
    cfg = load_config(None, [f"data.source={source}"])
    note = class_names_note(cfg, load_dataset(source))
    assert note == (f"data {source}: its 3 classes carry no names and are called 0..2; --set "
                    "data.class_names=[NAME,...] names them (the dataset card, the UI and generate's --labels use them)")
    named = load_config(None, [f"data.source={source}", "data.class_names=[shirt,shoe,bag]"])
    assert class_names_note(named, load_dataset(source, class_names=["shirt", "shoe", "bag"])) is None
    assert class_names_note(load_config(None, ["data.source=digits"]), load_dataset("digits")) is None


def test_an_imbalanced_source_names_its_rare_classes():
    """Classes under half the mean per class are named with their counts; a balanced source says nothing."""
    from gan_core.data.dataset import ImageDataset
    from pipelines.config.build import imbalance_note

    labels = np.array([0] * 500 + [1] * 480 + [2] * 40 + [3] * 100)
    data = ImageDataset(np.zeros((len(labels), 1, 4, 4), np.uint8), labels, ["cat", "dog", "owl", "fox"], "zoo")
    cfg = load_config(None, ["data.source=imagefolder:/zoo"])
    assert imbalance_note(cfg, data) == (
        "data imagefolder:/zoo: classes imbalanced: rare owl (40 images), fox (100 images) against 280 a class on "
        "average; training keeps the data's class shares, and generate --labels proportional keeps them (balanced "
        "asks each class alike)")
    even = ImageDataset(np.zeros((40, 1, 4, 4), np.uint8), np.arange(40) % 4, ["a", "b", "c", "d"], "even")
    assert imbalance_note(cfg, even) is None


def test_the_committed_config_reference_is_the_schemas():
    from pathlib import Path

    from pipelines.config.reference import markdown

    committed = (Path(__file__).resolve().parents[1] / "docs" / "config-reference.md").read_text()
    assert committed == markdown(), "docs/config-reference.md is stale: ganpipe config --markdown > docs/config-reference.md"
    assert "| `train.time_budget_s` | `null` | auto |" in committed and "| `auto` | `false` | `true` |" in committed
