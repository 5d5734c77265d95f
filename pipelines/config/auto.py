"""`auto: true` (the quick preset): the keys a config leaves unset, derived from the data and the device.

A config file, a preset or `--set` that gives a key fixes it; every key in AUTO_KEYS that none of them
gives is derived here, once, on the driver, before the run starts: the image size from the source's
own side, the budget, the stopping rule, R1's gamma and the learning rates from the training split's
size (the budget and the rates from its channels too), the widths from the device, the EMA from the
global batch. The rule and the measurements behind each row: docs/configuration.md ("Derived
defaults").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gan_core.models.dcgan import DEFAULT_DEPTH

from . import Config, set_key

# The image sides the DCGAN geometry has a depth for; the data's side, or the next of these above it.
SIDES = tuple(sorted(DEFAULT_DEPTH))
MAX_SIDE_CPU = 32
# The time budget: BUDGET_S for a training split of up to BUDGET_IMAGES images (mnist5k: 4,500), and
# more per 1,000 images above that, at most a maximum that keeps the run to its dataset within 15
# minutes on 2 cores (20 for colour); a colour image costs the step about twice a grey one's time
# (2 cores, fp32: 669 against 1,308 images/s), so it gets twice the seconds.
BUDGET_S, BUDGET_IMAGES = 420.0, 5000
BUDGET_PER_1000_S = {1: 6.0, 3: 12.0}  # by channels
BUDGET_MAX_S = {1: 720.0, 3: 960.0}
# Patience (evaluations with fd worse than the best) for a split of up to BUDGET_IMAGES images; above
# it none: the 500-sample training fd of larger, more varied data stops falling long before the
# generator stops improving, so the budget ends the run.
PATIENCE = 10
# EMA of G's weights with a half-life of this many generated images (0.995 at a global batch of 128).
EMA_HALF_LIFE_IMAGES = 17_700
WIDTH_CPU, WIDTH_GPU = 32, 64
# R1's gamma: R1_GAMMA for a split of up to BUDGET_IMAGES images, in proportion to 1/size above it (one
# significant digit): R1 keeps D flat where it would otherwise fit the training images, and a larger split
# leaves less of that; at gamma 1 on 54,000 Fashion-MNIST images D's outputs sink to 0.5 on real and
# generated alike and the samples lose variety after about 15 minutes (docs/configuration.md).
R1_GAMMA = 1.0
# Both Adam rates: LR, but LR_LARGE for colour images above BUDGET_IMAGES, where the budget buys the
# fewest passes over the data (a colour step costs twice a grey one's time: CIFAR-10 about a dozen in 15
# minutes on 2 cores) and the faster pace carries the CAS ratio and recall further in those iterations;
# grey data of that size trains two dozen passes in its budget, where 6e-4 falls behind 3e-4 and
# Fashion-MNIST collapsed for a while at 22,000 iterations (docs/configuration.md).
LR, LR_LARGE = 3e-4, 6e-4

AUTO_KEYS = ("data.image_size", "model.g_width", "model.d_width", "train.time_budget_s", "train.patience",
             "train.ema_beta", "train.r1", "train.lr_g", "train.lr_d")


@dataclass(frozen=True)
class Device:
    """What the run computes on: CPUs (and GPUs) the workers share."""
    cpus: int
    gpus: int

    @classmethod
    def of(cls, cfg: Config) -> "Device":
        """The Ray cluster's resources when Ray is up, else this machine's (its GPUs with ray.use_gpu)."""
        try:
            import ray

            if ray.is_initialized():
                total = ray.cluster_resources()
                return cls(int(total.get("CPU", 1)), int(total.get("GPU", 0)) if cfg.ray.use_gpu else 0)
        except ImportError:  # the config command on a machine without Ray's extras
            pass
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if not cfg.ray.use_gpu:
            return cls(cpus, 0)
        import torch

        return cls(cpus, torch.cuda.device_count())

    def describe(self) -> str:
        return f"{self.gpus} GPU{'s' * (self.gpus != 1)}" if self.gpus else f"{self.cpus} CPU{'s' * (self.cpus != 1)}"


@dataclass(frozen=True)
class Choice:
    key: str
    value: Any
    reason: str


def given(cfg: Config) -> set[str]:
    """The `section.key`s the config file, its preset or `--set` gave (pydantic's fields set)."""
    out = set()
    for section in type(cfg).model_fields:
        value = getattr(cfg, section)
        fields = getattr(value, "model_fields_set", None)
        if fields is not None:
            out |= {f"{section}.{k}" for k in fields}
    return out


def _open(cfg: Config) -> list[str]:
    return [k for k in AUTO_KEYS if k not in given(cfg)] if cfg.auto else []


def _apply(cfg: Config, choices: list[Choice]) -> Config:
    """`cfg` with the choices set, marked key by key as given where `cfg` was: derived keys stay open
    (a resumed run derives them again, from the same data to the same values)."""
    if not choices:
        return cfg
    tree = cfg.model_dump(mode="json")
    for c in choices:
        set_key(tree, c.key, c.value)
    after = Config.model_validate(tree)
    for section in type(cfg).model_fields:
        b, a = getattr(cfg, section), getattr(after, section)
        if hasattr(b, "model_fields_set") and hasattr(a, "model_fields_set"):
            object.__setattr__(a, "__pydantic_fields_set__", set(b.model_fields_set))
    object.__setattr__(after, "__pydantic_fields_set__", set(cfg.model_fields_set))
    return after


def image_size(side: int | None, gpu: bool = False) -> tuple[int, str]:
    """The training side for a source of `side` pixels (None: not known before loading): the data's
    side, or the next the geometry has, at most MAX_SIDE_CPU on CPUs (a 64-pixel step costs about four
    times a 32-pixel one) and the largest with a GPU."""
    if side is None:
        return SIDES[0], f"the source's side is read only when it loads; {SIDES[0]}"
    most = SIDES[-1] if gpu else MAX_SIDE_CPU
    fit = min(next((s for s in SIDES if s >= side), SIDES[-1]), most)
    if fit == side:
        return fit, "the data's own side"
    if side > most:
        return fit, f"the data's side {side}, at most {most} on {'a GPU' if gpu else 'CPUs'}"
    return fit, f"the data's side {side}, up to the next size the DCGAN geometry has ({', '.join(map(str, SIDES))})"


def sized(cfg: Config) -> tuple[Config, list[Choice]]:
    """The config with data.image_size derived from the source (before the data is loaded at it)."""
    if "data.image_size" not in _open(cfg):
        return cfg, []
    from gan_core.data import native_side

    value, why = image_size(native_side(cfg.data.source), cfg.ray.use_gpu)
    choice = Choice("data.image_size", value, why)
    return _apply(cfg, [choice]), [choice]


def budget(n_train: int, channels: int = 1) -> tuple[float, str]:
    per, most = BUDGET_PER_1000_S[channels], BUDGET_MAX_S[channels]
    extra = max(0, n_train - BUDGET_IMAGES) / 1000 * per
    if not extra:
        return BUDGET_S, f"{n_train:,} training images (up to {BUDGET_IMAGES:,}: {BUDGET_S:g} s)"
    kind = "grey" if channels == 1 else "colour"
    return min(most, BUDGET_S + extra), (f"{n_train:,} {kind} training images: {BUDGET_S:g} s + {per:g} s per 1,000 "
                                         f"above {BUDGET_IMAGES:,}, at most {most:g} s")


def r1_gamma(n_train: int) -> tuple[float, str]:
    if n_train <= BUDGET_IMAGES:
        return R1_GAMMA, f"{n_train:,} training images (up to {BUDGET_IMAGES:,}: {R1_GAMMA:g})"
    value = float(f"{R1_GAMMA * BUDGET_IMAGES / n_train:.1g}")
    return value, f"{n_train:,} training images: {R1_GAMMA:g} x {BUDGET_IMAGES:,} / {n_train:,}, to one digit"


def rates(n_train: int, channels: int = 1) -> tuple[float, str]:
    if n_train <= BUDGET_IMAGES:
        return LR, f"{n_train:,} training images (up to {BUDGET_IMAGES:,}: {LR:g})"
    if channels == 1:
        return LR, f"{n_train:,} grey training images ({LR:g}; {LR_LARGE:g} for colour above {BUDGET_IMAGES:,})"
    return LR_LARGE, f"{n_train:,} colour training images (above {BUDGET_IMAGES:,}: {LR_LARGE:g})"


def derive(cfg: Config, data, device: Device, workers: int) -> tuple[Config, list[Choice]]:
    """The config with every open AUTO_KEY (but data.image_size: `sized`) derived from `data` (an
    ImageDataset at the training size), `device` and the per-CPU layout's `workers`."""
    open_keys = _open(cfg)
    n_train, _ = data.split_sizes(cfg.data.holdout_fraction)
    choices = []
    if "model.g_width" in open_keys or "model.d_width" in open_keys:
        width, why = (WIDTH_GPU, "a GPU") if device.gpus else (WIDTH_CPU, "CPUs only")
        choices += [Choice(k, width, why) for k in ("model.g_width", "model.d_width") if k in open_keys]
    if "train.time_budget_s" in open_keys:
        choices.append(Choice("train.time_budget_s", *budget(n_train, data.image_shape[0])))
    if "train.patience" in open_keys:
        small = n_train <= BUDGET_IMAGES
        choices.append(Choice("train.patience", PATIENCE if small else None,
                              f"{n_train:,} training images " + (f"(up to {BUDGET_IMAGES:,})" if small else
                                                                 f"(above {BUDGET_IMAGES:,}: the budget ends the run)")))
    if "train.r1" in open_keys:
        choices.append(Choice("train.r1", *r1_gamma(n_train)))
    choices += [Choice(k, *rates(n_train, data.image_shape[0])) for k in ("train.lr_g", "train.lr_d")
                if k in open_keys]
    if "train.ema_beta" in open_keys:
        batch = cfg.train.batch_size * workers
        beta = round(0.5 ** (batch / EMA_HALF_LIFE_IMAGES), 4)
        choices.append(Choice("train.ema_beta", beta, f"a half-life of {EMA_HALF_LIFE_IMAGES:,} images at a "
                                                      f"global batch of {batch}"))
    return _apply(cfg, choices), choices


def line(choices: list[Choice], data, device: Device) -> str:
    """The one line a run prints: what auto chose, from what."""
    c, s = data.image_shape[0], data.image_shape[1]
    what = ", ".join(f"{ch.key.split('.')[-1]} {'none' if ch.value is None else f'{ch.value:g}' if isinstance(ch.value, float) else ch.value}"
                     for ch in choices)
    return (f"auto: {what} for {len(data):,} {s}x{s} {'grey' if c == 1 else 'colour'} images in "
            f"{data.num_classes} classes on {device.describe()} (`ganpipe config` gives each reason; "
            f"--set KEY=VALUE fixes one)")


def preview(cfg: Config) -> tuple[Config, list[Choice]]:
    """What a run of `cfg` would derive on this machine (`ganpipe config`): the data is loaded to
    read its size and classes; the device is this machine's CPUs, and its GPUs with ray.use_gpu (a
    cluster's are read when the run starts)."""
    from .build import load_data

    cfg, sized_ = sized(cfg)
    if not _open(cfg):
        return cfg, sized_
    device = Device.of(cfg)
    workers = cfg.ray.num_workers or max(1, int(device.cpus // cfg.ray.cpus_per_worker))
    cfg, derived = derive(cfg, load_data(cfg), device, workers)
    return cfg, sized_ + derived
