"""The configuration schema (pydantic), presets shipped as YAML, and `--set a.b=value` overrides."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A user error in a config file or override; the message names the file, key or value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = "mnist5k"
    image_size: int = Field(28, ge=8, le=256)
    channels: Literal[1, 3] | None = None
    mixed_sizes: Literal["resize", "error"] = "resize"
    class_names: list[str] | None = None
    holdout_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    root: str | None = None


class ModelConfig(Section):
    arch: Literal["mlp", "dcgan"] = "dcgan"
    conditional: bool = True
    z_dim: int = Field(64, ge=1)
    g_width: int = Field(32, ge=1)
    d_width: int = Field(32, ge=1)
    depth: int | None = Field(None, ge=1)
    embed_dim: int = Field(16, ge=1)
    d_conditioning: Literal["concat", "projection"] = "concat"


class TrainConfig(Section):
    k: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=2, description="per worker; the global batch is this x workers")
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    g_loss: Literal["non_saturating", "minimax"] = "non_saturating"
    ema_beta: float | None = Field(None, gt=0, lt=1)
    epochs: int = Field(3, ge=1)
    iterations: int | None = Field(None, ge=1, description="overrides epochs when set")
    log_every: int = Field(25, ge=1)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_samples: int = Field(500, ge=10)
    run_name: str | None = None


class EvalConfig(Section):
    cache_dir: str = "~/.cache/ganpipe/features"
    classifier_epochs: int = Field(4, ge=1)
    during_training: bool = True
    samples: int = Field(2000, ge=10, description="generated samples for `ganpipe evaluate`")
    cas: bool = True


class SpaceEntry(Section):
    """One hyperparameter's range: exactly one of a choice list, a uniform or a log-uniform range."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "SpaceEntry":
        given = [k for k in ("choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, loguniform (got {given or 'none'})")
        if self.choice is not None and len(self.choice) == 0:
            raise ValueError("empty choice list")
        for kind in ("uniform", "loguniform"):
            rng = getattr(self, kind)
            if rng is not None and rng[0] > rng[1]:
                raise ValueError(f"{kind} range low {rng[0]} is above high {rng[1]}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform range must be positive, got low {self.loguniform[0]}")
        return self


DEFAULT_SPACE = {
    "train.k": {"choice": [1, 2]},
    "train.lr_g": {"loguniform": [5e-5, 1e-3]},
    "train.lr_d": {"loguniform": [5e-5, 1e-3]},
    "train.beta1": {"choice": [0.0, 0.5]},
    "train.g_loss": {"choice": ["non_saturating", "minimax"]},
    "model.arch": {"choice": ["mlp", "dcgan"]},
    "model.g_width": {"choice": [16, 32, 64]},
    "model.d_width": {"choice": [16, 32, 64]},
    "model.d_conditioning": {"choice": ["concat", "projection"]},
    "model.z_dim": {"choice": [32, 64, 100]},
}
TUNE_METRICS = {"fd": "min", "label_fidelity": "max"}
TUNABLE_SECTIONS = ("train.", "model.", "data.image_size")


class TuneConfig(Section):
    name: str | None = None
    space: dict[str, SpaceEntry] = Field(default_factory=lambda: {k: SpaceEntry(**v) for k, v in DEFAULT_SPACE.items()})
    num_samples: int = Field(8, ge=1)
    metric: str = "fd"
    scheduler: Literal["asha", "fifo"] = "asha"
    search: Literal["random", "optuna"] = "random"
    max_concurrent_trials: int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    workers_per_trial: int = Field(1, ge=1)
    grace_period: int = Field(100, ge=1, description="iterations before ASHA may stop a trial")
    reduction_factor: int = Field(2, ge=2)


class RegistryConfig(Section):
    model_name: str = "gan-generator"
    register_after_tune: bool = True


class RayConfig(Section):
    address: str = ""
    num_workers: int | None = Field(None, ge=1, description="None: as many as fit the machine")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)
    storage_path: str = "ganpipe_runs"
    max_failures: int = Field(2, ge=-1)


class MLflowConfig(Section):
    tracking_uri: str | None = None
    experiment: str = "ganpipe"


class Config(Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()
    mlflow: MLflowConfig = MLflowConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _tune(self) -> "Config":
        known = set(flatten(Config.model_construct()))
        for key in self.tune.space:
            if key not in known or not key.startswith(TUNABLE_SECTIONS):
                raise ValueError(f"tune.space: unknown hyperparameter {key!r} (tunable: train.*, model.*)")
        if self.tune.metric not in TUNE_METRICS:
            raise ValueError(f"tune.metric={self.tune.metric!r}: no trial reports it (reported: "
                             f"{', '.join(TUNE_METRICS)})")
        name = self.registry.model_name
        if not name.strip() or "/" in name or ":" in name:
            raise ValueError(f"registry.model_name={name!r}: MLflow refuses empty names and names with '/' or ':'")
        return self

    @model_validator(mode="after")
    def _geometry(self) -> "Config":
        if self.model.arch == "dcgan":
            from gan_core.models.dcgan import resolve_depth

            try:
                resolve_depth(self.data.image_size, self.model.depth)
            except ValueError as e:
                raise ValueError(f"{e} (data.image_size={self.data.image_size})") from None
        return self


PRESETS = ("quick",)


def preset_text(name: str) -> str:
    return resources.files("pipelines.presets").joinpath(f"{name}.yaml").read_text()


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.k=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply(tree: dict, keys: list[str], value: Any, item: str) -> None:
    node = tree
    for i, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(keys[:i + 1])} is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def _format_error(e: ValidationError, origin: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        elif not err["loc"]:
            parts.append(err["msg"].removeprefix("Value error, "))
        else:
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
    return f"{origin}: " + "; ".join(parts)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or a preset name, default `quick`), apply overrides, validate."""
    if path is None or str(path) in PRESETS:
        name = "quick" if path is None else str(path)
        origin, text = f"preset {name!r}", preset_text(name)
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist (presets: {', '.join(PRESETS)})")
        origin, text = str(p), p.read_text()
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML ({e})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    for item in overrides:
        keys, value = _parse_override(item)
        _apply(tree, keys, value, item)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin + (" with --set overrides" if overrides else ""))) from None


def with_absolute_paths(cfg: Config) -> Config:
    """Local paths made absolute, so that Ray workers and Tune trials (other working directories)
    see the same files."""
    import os

    def absolute(p: str) -> str:
        return p if "://" in p else str(Path(os.path.expanduser(p)).resolve())

    kind, sep, arg = cfg.data.source.partition(":")
    source = f"{kind}:{absolute(arg)}" if sep and kind in ("idx", "imagefolder", "parquet") else cfg.data.source
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"source": source}),
        "ray": cfg.ray.model_copy(update={"storage_path": absolute(cfg.ray.storage_path)}),
        "eval": cfg.eval.model_copy(update={"cache_dir": absolute(cfg.eval.cache_dir)}),
    })


def flatten(cfg: Config) -> dict[str, Any]:
    """`section.key` -> value, for logging every config value as a param."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return out
