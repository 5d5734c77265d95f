import subprocess
import sys

import pytest

from pipelines.config import ConfigError, flatten, load_config


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


def test_cli_help_lists_the_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for cmd in ("run", "train", "tune", "evaluate", "register", "generate", "ui"):
        assert cmd in out.stdout


def test_cli_unbuilt_command_says_so():
    out = _cli("generate")
    assert out.returncode == 2 and "not built yet" in out.stderr


def test_cli_bad_key_is_one_line_and_nonzero():
    out = _cli("train", "--set", "train.nope=1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown key 'train.nope'" in out.stderr
    assert "Traceback" not in out.stderr
