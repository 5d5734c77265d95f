"""`auto`: the keys a config leaves open, derived from the data and the device; what is given stays."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan_core.data import ImageDataset, native_side, write_idx
from gan_core.data.cache import cached
from pipelines.config import load_config
from pipelines.config import auto
from pipelines.config.build import load_data

TWO_CPUS = auto.Device(cpus=2, gpus=0)


def derived(cfg, data, device=TWO_CPUS, workers=2):
    cfg, first = auto.sized(cfg)
    cfg, rest = auto.derive(cfg, data, device, workers)
    return cfg, {c.key: c.value for c in first + rest}


def fake(n: int, classes: int = 10, side: int = 28) -> ImageDataset:
    labels = np.arange(n) % classes
    return ImageDataset(np.zeros((n, 1, side, side), np.uint8), labels, [str(c) for c in range(classes)], "fake", "x")


def test_on_mnist5k_and_two_cpus_auto_derives_what_the_preset_fixed_before():
    cfg = load_config(None, [])
    assert cfg.auto
    cfg, values = derived(cfg, load_data(cfg))
    assert values == {"data.image_size": 28, "model.g_width": 32, "model.d_width": 32, "train.time_budget_s": 420.0,
                      "train.patience": 10, "train.ema_beta": 0.995, "train.r1": 1.0, "train.lr_g": 3e-4,
                      "train.lr_d": 3e-4}
    assert (cfg.train.time_budget_s, cfg.train.patience, cfg.train.ema_beta) == (420.0, 10, 0.995)
    # derived keys stay open: a second pass (a resumed run) derives them again, to the same values
    assert auto.derive(cfg, fake(5000), TWO_CPUS, 2)[0] == cfg


def test_the_rule_follows_the_data_size_the_device_and_the_global_batch():
    cfg = load_config(None, ["data.source=digits"])
    _, values = derived(cfg, fake(60000), auto.Device(cpus=16, gpus=1), workers=4)
    # 54,000 training images: 420 s + 6 s per 1,000 above 5,000 = 714 s; no patience; a GPU's widths;
    # the EMA's half-life of 17,700 images at a global batch of 4 x 64
    assert values["train.time_budget_s"] == pytest.approx(714.0)
    assert values["train.patience"] is None
    assert values["model.g_width"] == values["model.d_width"] == auto.WIDTH_GPU
    assert values["train.ema_beta"] == round(0.5 ** (256 / 17700), 4) == 0.99
    assert values["data.image_size"] == 28  # digits are 8x8: the next side the geometry has
    assert values["train.r1"] == 0.09  # R1's gamma 1 x 5,000 / 54,000, to one digit
    assert values["train.lr_g"] == values["train.lr_d"] == auto.LR == 3e-4  # grey images, whatever their number
    _, values = derived(cfg, fake(500_000))
    assert values["train.time_budget_s"] == auto.BUDGET_MAX_S[1] == 720
    # colour images cost the step twice a grey one's time: twice the seconds per 1,000, a larger cap
    colour = ImageDataset(np.zeros((50000, 3, 32, 32), np.uint8), np.arange(50000) % 10, [str(c) for c in range(10)],
                          "c", "x")
    assert derived(cfg, colour)[1]["train.time_budget_s"] == pytest.approx(420 + 12 * 40)  # 45,000 training images
    assert derived(cfg, colour)[1]["train.r1"] == 0.1
    # colour images above 5,000 training images train at the faster rates; up to it at the small data's
    assert derived(cfg, colour)[1]["train.lr_g"] == derived(cfg, colour)[1]["train.lr_d"] == auto.LR_LARGE == 6e-4
    few = ImageDataset(np.zeros((5555, 3, 32, 32), np.uint8), np.arange(5555) % 10, [str(c) for c in range(10)], "c", "x")
    assert derived(cfg, few)[1]["train.lr_g"] == auto.LR  # 5,000 training images


def test_what_a_config_or_set_gives_is_never_derived(tmp_path):
    cfg = load_config(None, ["train.time_budget_s=100", "data.image_size=32", "train.patience=null",
                             "model.g_width=48", "train.r1=0.5", "train.lr_d=1e-4"])
    cfg, values = derived(cfg, fake(60000))
    assert "train.r1" not in values and cfg.train.r1 == 0.5
    assert "train.lr_d" not in values and cfg.train.lr_d == 1e-4 and cfg.train.lr_g == values["train.lr_g"] == auto.LR
    assert "train.time_budget_s" not in values and cfg.train.time_budget_s == 100
    assert "data.image_size" not in values and cfg.data.image_size == 32
    assert "train.patience" not in values and cfg.train.patience is None
    assert cfg.model.g_width == 48 and values["model.d_width"] == 32
    own = tmp_path / "own.yaml"
    own.write_text("train:\n  epochs: 3\n")  # a config of its own, without auto: the schema's defaults
    cfg = load_config(own)
    assert not cfg.auto and derived(cfg, fake(60000))[1] == {}


@pytest.mark.parametrize("side, cpu, gpu", [(8, 28, 28), (28, 28, 28), (30, 32, 32), (32, 32, 32), (48, 32, 64),
                                             (64, 32, 64), (300, 32, 64)])
def test_the_image_size_is_the_datas_side_or_the_next_the_geometry_has_at_most_32_on_cpus(side, cpu, gpu):
    assert auto.image_size(side)[0] == cpu and auto.image_size(side, gpu=True)[0] == gpu


def test_native_side_reads_headers_and_first_files(tmp_path):
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", np.zeros((3, 20, 20), np.uint8))
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", np.array([0, 1, 0], np.uint8))
    assert native_side(f"idx:{tmp_path / 'idx'}") == 20
    # a folder of JPEGs of mixed sizes: the median side over the first images of each class
    for cls, size in (("a", (40, 30)), ("b", (40, 40)), ("c", (64, 64))):
        (tmp_path / "jpg" / cls).mkdir(parents=True)
        Image.new("RGB", size, (9, 9, 9)).save(tmp_path / "jpg" / cls / "1.jpg")
        Image.new("RGB", (17, 17)).save(tmp_path / "jpg" / cls / "2.jpg")
    assert native_side(f"imagefolder:{tmp_path / 'jpg'}") == 28  # the median of 40, 17, 40, 17, 64, 17 ... 28.5
    assert native_side("mnist5k") == 28 and native_side("digits") == 8
    assert native_side("parquet:s3://bucket/data") is None and auto.image_size(None)[0] == 28


def test_ganpipe_config_shows_each_derived_value_with_its_reason():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "config", "--set", "data.source=digits",
                          "--set", "train.patience=3"], capture_output=True, text=True, check=True)
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln and not ln.startswith(" ")}
    assert "# auto: 1,618 training images (up to 5,000: 420 s)" in rows["train.time_budget_s"]
    assert "# auto: the data's side 8, up to the next size" in rows["data.image_size"]
    assert "# auto: 1,618 training images (up to 5,000: 1)" in rows["train.r1"]
    assert "# auto: 1,618 training images (up to 5,000: 0.0003)" in rows["train.lr_g"]
    assert "auto:" not in rows["train.patience"] and " 3 " in rows["train.patience"]
    assert "reading digits" in out.stderr


def test_a_folder_source_is_decoded_once_and_again_when_a_file_changes(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (12, 12), 40 * i).save(tmp_path / "src" / cls / f"{i}.png")
    source, options, cache = f"imagefolder:{tmp_path / 'src'}", {"size": 16}, str(tmp_path / "cache")
    loads = []

    def load():
        from gan_core.data import load_dataset

        loads.append(1)
        return load_dataset(source, 16)

    first = cached(source, options, cache, load)
    again = cached(source, options, cache, load)
    assert len(loads) == 1 and again.fingerprint == first.fingerprint
    assert np.array_equal(again.images, first.images) and np.array_equal(again.labels, first.labels)
    assert again.class_names == ["a", "b"]
    Image.new("L", (12, 12), 255).save(tmp_path / "src" / "b" / "2.png")  # changed: decoded afresh
    changed = cached(source, options, cache, load)
    assert len(loads) == 2 and changed.fingerprint != first.fingerprint
    assert cached(source, {"size": 28}, cache, load).images.shape[-1] == 16 and len(loads) == 3  # other options


def test_without_ray_the_device_is_this_machines_cpus_and_with_ray_use_gpu_its_gpus(monkeypatch):
    import torch

    import ray

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the suite's own Ray may be up: not this case
    assert auto.Device.of(load_config(None, [])).gpus == 0  # CPU workers: the GPUs are not the run's
    gpu = auto.Device.of(load_config(None, ["ray.use_gpu=true"]))
    assert gpu.gpus == 2 and gpu.cpus >= 1 and gpu.describe() == "2 GPUs"
