"""Building G, D, their optimizers and the game from a config: the one place that maps config keys
to gan_core objects (used by the training worker, the benchmarks and the tests)."""
from __future__ import annotations

import numpy as np
import torch

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models

from . import Config


def model_spec(cfg: Config, image_shape: tuple, num_classes: int) -> ModelSpec:
    """The ModelSpec of `cfg.model` for images of `image_shape` and `num_classes` classes."""
    m = cfg.model
    return ModelSpec(arch=m.arch, z_dim=m.z_dim, image_shape=tuple(image_shape),
                     num_classes=num_classes if m.conditional else None, g_width=m.g_width, d_width=m.d_width,
                     depth=m.depth, embed_dim=m.embed_dim, d_conditioning=m.d_conditioning,
                     d_norm=m.d_norm, d_minibatch_std=m.d_minibatch_std, g_conditioning=m.g_conditioning)


def precision(name: str, device: torch.device | str = "cpu") -> str:
    """The step's arithmetic for train.precision `name` on `device`: auto is bf16 where the device
    computes bfloat16 natively (a CUDA GPU that supports it; a CPU with AMX tiles), else fp32."""
    if name != "auto":
        return name
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16" if kind == "cpu" and amx() else "fp32"


def build_game(cfg: Config, train, device: torch.device | str = "cpu") -> tuple[Game, ModelSpec]:
    """(Game, spec) for a training split `train` (an ImageDataset): models on `device`, Adam pair,
    k, the G loss, the label prior of the data, the EMA generator if configured."""
    spec = model_spec(cfg, train.image_shape, train.num_classes)
    g, d = build_models(spec)
    g, d = g.to(device), d.to(device)
    t = cfg.train
    opt_g, opt_d = adam_pair(g, d, t.lr_g, t.lr_d, (t.beta1, t.beta2))
    game = Game(g, d, opt_g, opt_d, game_options(cfg, device),
                label_prior=train.label_prior() if spec.num_classes else None)
    return game, spec


def game_options(cfg: Config, device: torch.device | str = "cpu") -> GameOptions:
    """The Game's options from the config, filled once here: what its step computes (the layout cache
    keys on the whole object). Each field is the train key of its name, the precision resolved for
    `device`."""
    from dataclasses import fields

    t = cfg.train
    return GameOptions(**{f.name: getattr(t, f.name) for f in fields(GameOptions) if f.name != "precision"},
                       precision=precision(t.precision, device))


def streams(cfg: Config) -> bool:
    """Whether the train split reaches the workers as a stream (Ray Data) rather than in memory: the
    one rule, read by the driver, the worker and the stages that load the data."""
    from gan_core.data.streamed import STREAMABLE, list_files

    d = cfg.data
    if d.streaming == "off" or d.source.partition(":")[0] not in STREAMABLE:
        return False
    if d.streaming == "on":
        return True
    from gan_core.data import DataError

    try:
        return sum(list_files(d.source)[2]) > d.stream_above_mb * 2 ** 20
    except DataError:  # the in-memory loader names what is wrong with the source
        return False


def load_data(cfg: Config):
    """The configured dataset (an ImageDataset; for streamed data a StreamedDataset, its in-memory
    sample and file split); bad input raises DataError naming the file or value."""
    from gan_core.data import load_dataset

    d = cfg.data
    if streams(cfg):
        from gan_core.data.streamed import load_streamed

        return load_streamed(d.source, d.image_size, d.channels, d.holdout_fraction, cfg.seed, d.stream_sample,
                             d.mixed_sizes, d.class_names)
    from gan_core.data.cache import cached

    options = {"size": d.image_size, "channels": d.channels, "mixed_sizes": d.mixed_sizes, "names": d.class_names}
    return cached(d.source, options, d.cache_dir,
                  lambda: load_dataset(d.source, d.image_size, d.channels, d.mixed_sizes, d.class_names, d.root))


def feature_net(cfg: Config, train, holdout, seed: int | None = None):
    """The feature network of `train` (cached; trained on first use) under cfg.eval's settings."""
    from gan_core.metrics import load_or_train

    e = cfg.eval
    return load_or_train(train, holdout, e.cache_dir, e.classifier_epochs, cfg.seed if seed is None else seed,
                         e.classifier_max_steps)[0]


NAMED_BY_NUMBER = ("mnist5k", "digits")  # sources whose classes are the digits their numbers name


def class_names_note(cfg: Config, data) -> str | None:
    """A line for a source whose classes carry no names (an IDX pair, a Parquet file without a
    ClassLabel): they are called 0..K-1 in the card, the UI and the labels, and `data.class_names`
    names them. None when the classes have names."""
    numbered = list(data.class_names) == [str(i) for i in range(data.num_classes)]
    if not numbered or cfg.data.class_names or cfg.data.source in NAMED_BY_NUMBER:
        return None
    return (f"data {cfg.data.source}: its {data.num_classes} classes carry no names and are called "
            f"0..{data.num_classes - 1}; --set data.class_names=[NAME,...] names them (the dataset card, the "
            f"UI and generate's --labels use them)")


IMBALANCED = 0.5  # a class with fewer images than this share of the mean per class is reported as rare


def imbalance_note(cfg: Config, data) -> str | None:
    """A line for a source whose classes are far from balanced: its rare classes, and that training
    keeps the data's class shares (G draws its labels by them) while generate asks for what it is
    told (`--labels proportional` keeps the shares, `balanced` gives each class alike). None when
    every class holds at least IMBALANCED of the mean."""
    counts = np.bincount(np.asarray(data.labels), minlength=data.num_classes)
    mean = counts.sum() / max(1, data.num_classes)
    rare = [(data.class_names[c], int(counts[c])) for c in np.argsort(counts, kind="stable")
            if counts[c] < IMBALANCED * mean]
    if not rare:
        return None
    names = ", ".join(f"{name} ({n:,} images)" for name, n in rare)
    return (f"data {cfg.data.source}: classes imbalanced: rare {names} against {mean:,.0f} a class on average; "
            f"training keeps the data's class shares, and generate --labels proportional keeps them (balanced "
            f"asks each class alike)")

