"""The configuration schema (pydantic), presets shipped as YAML, and `--set a.b=value` overrides."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan_core.augment import JITTER_TEXT
from gan_core.game import PRECISIONS
from gan_core.metrics.cas import CAS_EPOCHS
from gan_core.metrics.classifier import MIN_STEPS
from gan_core.metrics.table import TRAINING_METRICS
from gan_core.sampling import FORWARD_BLOCK

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A user error in a config file or override; the message names the file, key or value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits, '.', '_', '-', starting with a letter or digit"


def check_name(value: str | None, key: str) -> str | None:
    """Names that reach paths and MLflow search filters: a safe alphabet, no '..'."""
    if value is None:
        return value
    if not NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a valid name for {key} ({NAME_RULE})")
    return value


def _described(cls):
    """Every key of a section carries a description (checked at import)."""
    missing = [k for k, f in cls.model_fields.items() if not f.description and not isinstance(f.default, Section)
               and k not in SECTION_KEYS]
    if missing:
        raise TypeError(f"{cls.__name__}: keys without a description: {missing}")
    return cls


SECTION_KEYS = {"data", "model", "train", "eval", "ray", "mlflow", "tune", "registry", "generate", "workflow"}
STAGES = ("train", "tune", "evaluate", "register", "generate")  # the workflow's stages, in their order


@_described
class DataConfig(Section):
    source: str = Field("mnist5k", description="mnist5k | digits | idx:PATH | imagefolder:PATH | parquet:PATH | "
                                              "torchvision:NAME")
    image_size: int = Field(28, ge=8, le=256, description="images are resized to this many pixels a side")
    channels: Literal[1, 3] | None = Field(None, description="1 or 3; inferred from the data when unset")
    mixed_sizes: Literal["resize", "error"] = Field("resize", description="images of mixed sizes: resize or refuse")
    class_names: list[str] | None = Field(None, description="names of the classes, for sources that carry none")
    holdout_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of each class held out for evaluation")
    root: str | None = Field(None, description="download folder of torchvision sources")
    cache_dir: str | None = Field("~/.cache/ganpipe/data", description="where imagefolder: and parquet: sources "
                                  "are kept decoded, keyed by their files' paths, sizes and times, so that only "
                                  "the first load decodes them; unset: decode at every load")
    streaming: Literal["auto", "on", "off"] = Field(
        "auto", description="parquet: and imagefolder: sources: stream the train files to the workers through Ray "
                            "Data instead of loading the data into each worker; auto: when the files exceed "
                            "data.stream_above_mb")
    stream_above_mb: float = Field(2048, gt=0, description="size of a source's files above which auto streams it")
    stream_sample: int = Field(10000, ge=100, description="rows of streamed data held in memory: of the holdout "
                                                          "files for the metrics, of the train files for the "
                                                          "feature network")

    @field_validator("streaming", mode="before")
    @classmethod
    def _yaml_on_off(cls, v):  # YAML reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _streaming(self) -> "DataConfig":
        if self.streaming == "on" and not self.source.startswith(("parquet:", "imagefolder:")):
            raise ValueError(f"data.streaming=on: streaming reads parquet: and imagefolder: sources; data.source "
                             f"is {self.source!r}")
        return self


@_described
class ModelConfig(Section):
    arch: Literal["mlp", "dcgan"] = Field("dcgan", description="mlp (the original GAN) or dcgan")
    conditional: bool = Field(True, description="condition G and D on the label (conditional GAN)")
    z_dim: int = Field(64, ge=1, description="size of the latent vector z")
    g_width: int = Field(32, ge=1, description="G's width (channels of its last hidden layer)")
    d_width: int = Field(32, ge=1, description="D's width (channels of its first layer)")
    depth: int | None = Field(None, ge=1, description="stride-2 layers (dcgan) or hidden layers (mlp); "
                                                      "unset: from the image size")
    embed_dim: int = Field(16, ge=1, description="size of G's label embedding")
    g_conditioning: Literal["input", "batchnorm"] = Field(
        "input", description="how G hears the label: an embedding joined to z (input), or that and a scale and "
                             "shift per class in every BatchNorm (batchnorm: class-conditional BatchNorm; dcgan only)")
    d_conditioning: Literal["concat", "projection", "aux"] = Field(
        "concat", description="how D sees the label: one-hot channels (concat), a projection term, or not at "
                              "all while a second head classifies the image (aux: AC-GAN; dcgan only)")
    d_norm: Literal["batch", "spectral"] = Field(
        "batch", description="D's normalization: BatchNorm (DCGAN) or spectral normalization of every layer "
                             "and no BatchNorm (SN-GAN)")
    d_minibatch_std: bool = Field(False, description="D's head also sees the batch's mean standard deviation "
                                                     "of its last features as one more map (ProGAN's minibatch "
                                                     "standard deviation; dcgan only)")


Precision = Literal[("auto", *PRECISIONS)]  # the step's arithmetics, and auto: chosen by the device


@_described
class TrainConfig(Section):
    k: int = Field(1, ge=1, description="discriminator updates per generator update")
    batch_size: int = Field(64, ge=2, description="per worker; the global batch is this x workers")
    lr_g: float = Field(2e-4, gt=0, description="Adam learning rate of G")
    lr_d: float = Field(2e-4, gt=0, description="Adam learning rate of D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of both optimizers")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of both optimizers")
    g_loss: Literal["non_saturating", "minimax"] = Field(
        "non_saturating", description="G ascends log D(G(z)) (non_saturating) or descends log(1 - D(G(z))) (minimax)")
    ema_beta: float | None = Field(None, gt=0, lt=1, description="keep an EMA of G's weights with this beta; "
                                                                "unset: none")
    augment: str = Field("none", description="DiffAugment policy before every D call, real and generated alike: "
                                             "none, translation, cutout or translation,cutout")
    channels_last: bool = Field(True, description="G, D and the real batches in channels-last (NHWC) memory "
                                                  "layout: faster convolutions on CPU, the same game to float "
                                                  "tolerance")
    precision: Precision = Field(
        "fp32", description="arithmetic of the training step's forward passes: fp32, or bf16 (bfloat16 autocast; "
                            "weights, optimizer state and losses stay fp32); auto: bf16 where the device computes "
                            "it natively (a CUDA GPU with bf16, a CPU with AMX), else fp32")
    reuse_fake: bool = Field(False, description="the G update takes the last D update's generated batch (one G "
                                                "forward fewer, as DCGAN's reference loop); false: a fresh batch")
    mode_seeking: float = Field(0.0, ge=0, description="weight of MSGAN's mode-seeking term in G's loss (pairs of "
                                                       "generated rows with one label and two z kept apart); "
                                                       "0: the seed's G loss alone")
    r1: float = Field(0.0, ge=0, description="gamma of the R1 penalty on D (gamma/2 x |grad_x D(x)|^2 on real "
                                             "images, Mescheder et al. 2018); 0: off")
    r1_every: int = Field(1, ge=1, description="D updates between R1 penalties, each weighted by this interval "
                                               "(lazy regularization)")
    consistency: float = Field(0.0, ge=0, description="weight of balanced consistency regularization (Zhao et al. "
                                                      "2021): D's squared logit change between each real and "
                                                      "generated image and a translated copy; 0: off")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="one-sided label smoothing: D's target for "
                                                                  "real images is 1 minus this (Salimans et al. "
                                                                  "2016); 0: the seed's target 1")
    real_jitter: float = Field(0.0, ge=0, le=2, description=f"strength s of a random affine jitter of every real "
                                                           f"image D sees ({JITTER_TEXT}): G learns the data "
                                                           f"under it; 0: the data as it is")
    aux_weight: float = Field(1.0, ge=0, description="with model.d_conditioning=aux: the weight of the class "
                                                     "cross-entropy in D's loss (on real images) and G's (on "
                                                     "its samples)")
    lr_decay: float = Field(0.0, ge=0, le=1, description="the last fraction of the run over which both learning "
                                                         "rates fall linearly to 0 (the run's length: "
                                                         "train.time_budget_s when set, else its iterations; "
                                                         "set at each evaluation); 0: constant rates")
    epochs: int = Field(10, ge=1, description="passes over the training split by D (k batches per iteration)")
    iterations: int | None = Field(None, ge=1, description="run length in iterations; overrides epochs when set")
    time_budget_s: float | None = Field(None, gt=0, description="end the run at the first evaluation after this "
                                                               "many seconds of wall time (a resumed run counts "
                                                               "its earlier time); unset: no budget")
    target: float | None = Field(None, description="end the run at the first evaluation whose tune.metric reaches "
                                                   "this value (at or below it for fd); unset: no target; "
                                                   "judged only with eval.during_training")
    patience: int | None = Field(None, ge=1, description="end the run after this many evaluations in a row whose "
                                                         "tune.metric is worse than the best by more than "
                                                         "train.tolerance; unset: never; judged only with "
                                                         "eval.during_training")
    tolerance: float = Field(0.0, ge=0, lt=1, description="an evaluation whose tune.metric is within this "
                                                       "fraction of the run's best counts as no worse: it does not "
                                                       "spend patience, and the newest such kept checkpoint is the "
                                                       "one the run hands on; 0: the strictly best")
    log_every: int = Field(25, ge=1, description="iterations between logged loss means")
    eval_every: int = Field(100, ge=1, description="iterations between training-time metrics (fd, label fidelity)")
    checkpoint_every: int = Field(100, ge=1, description="iterations between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept, the best by tune.metric")
    eval_samples: int = Field(500, ge=10, description="generated samples for the training-time metrics")
    run_name: str | None = Field(None, description="the run's name; the same name resumes it (default: time stamp)")

    @field_validator("run_name")
    @classmethod
    def _name(cls, v):
        return check_name(v, "train.run_name")

    @field_validator("augment")
    @classmethod
    def _augment(cls, v):
        from gan_core.augment import parse_policy

        return ",".join(parse_policy(v)) or "none"


@_described
class EvalConfig(Section):
    cache_dir: str = Field("~/.cache/ganpipe/features", description="where feature networks and the real side of CAS are cached")
    classifier_epochs: int = Field(4, ge=1, description="epochs of the feature network's training")
    classifier_max_steps: int | None = Field(1500, ge=1, description="batches of 64 the feature network trains "
                                             "on at most, whatever the data's size (its training then costs "
                                             "the same from about 24,000 images up); unset: every epoch whole")
    during_training: bool = Field(True, description="compute fd and label fidelity during training")
    samples: int = Field(2000, ge=10, description="generated samples for `ganpipe evaluate` and the registry's "
                                                  "evaluation protocol")
    cas: bool = Field(True, description="train a classifier on generated samples (CAS) in `ganpipe evaluate`")
    cas_seeds: int = Field(3, ge=1, description="classifiers trained per side for CAS (seeds seed, seed+1, ...), "
                                               "their hits averaged per holdout row")
    cas_epochs: int = Field(CAS_EPOCHS, ge=1, description=f"epochs of each CAS classifier's training (at least "
                                                          f"{MIN_STEPS} steps)")
    cas_max_samples: int = Field(10000, ge=10, description="images each CAS classifier trains on, at most (the "
                                 "training split's size below it): the evaluation's cost stops growing with the "
                                 "data, and both sides train on as many, so the ratio stays fair")
    cas_max_steps: int | None = Field(600, ge=MIN_STEPS, description="batches of 64 each CAS classifier trains on "
                                      "at most (8 epochs of 4,800 images): with cas_max_samples, the evaluation "
                                      "costs the same from about 5,000 training images up; both sides train as "
                                      "long; unset: every epoch whole")


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
TUNE_METRICS = TRAINING_METRICS  # a sweep optimizes what the training probe reports
TUNABLE_SECTIONS = ("train.", "model.", "data.image_size")
# The cost a scheduler compares trials by, and the unit of tune.grace_period.
COSTS = {"train_seconds": "seconds of training (forward and backward passes, evaluation excluded)",
         "d_images": "images through D: (2k + 1) x batch x workers per iteration",
         "iteration": "iterations (unfair across k and widths; for reproducible tests)"}

GRACE_DEFAULTS = {"train_seconds": 20.0, "d_images": 20000.0, "iteration": 100.0}


@_described
class TuneConfig(Section):
    name: str | None = Field(None, description="the sweep's name; the same name resumes it (default: time stamp)")
    space: dict[str, SpaceEntry] = Field(default_factory=lambda: {k: SpaceEntry(**v) for k, v in DEFAULT_SPACE.items()},
                                         description="config key -> {choice: [...]} | {uniform: [lo, hi]} | "
                                                     "{loguniform: [lo, hi]}")
    num_samples: int = Field(8, ge=1, description="trials")
    metric: str = Field("fd", description="what ranks checkpoints, trials and registered versions: fd (lower is "
                                          "better) or label_fidelity (higher)")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops poor trials early; fifo runs all")
    search: Literal["random", "optuna"] = Field("random", description="random search or optuna (TPE)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="unset: as many as the cluster's CPUs fit")
    time_budget_s: float | None = Field(None, gt=0, description="the sweep's length in seconds: each trial ends, "
                                                                "as finished and with a checkpoint, at its last "
                                                                "evaluation before it; Tune stops what is left "
                                                                "a minute later")
    workers_per_trial: int = Field(1, ge=1, description="workers of each trial (1, with local storage and "
                                                        "in-memory data: the trial trains in its own process; "
                                                        "more: a Ray Train run per trial)")
    cost: Literal["train_seconds", "d_images", "iteration"] = Field(
        "train_seconds", description="what ASHA compares trials by: " + "; ".join(f"{k}: {v}" for k, v in COSTS.items()))
    grace_period: float | None = Field(None, gt=0, description="cost (in tune.cost's unit) a trial may spend "
                                                              "before ASHA may stop it; unset: " +
                                       ", ".join(f"{v:g} for {k}" for k, v in GRACE_DEFAULTS.items()))
    reduction_factor: int = Field(2, ge=2, description="ASHA keeps 1 / this of the trials at each rung")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return check_name(v, "tune.name")

    @property
    def grace(self) -> float:
        """ASHA's grace period in tune.cost's unit."""
        return self.grace_period if self.grace_period is not None else GRACE_DEFAULTS[self.cost]


@_described
class RegistryConfig(Section):
    model_name: str = Field("gan-generator", description="registered model name in MLflow")
    register_after_tune: bool = Field(True, description="register the sweep's best trial when it ends")


@_described
class GenerateConfig(Section):
    rows_per_file: int | None = Field(None, ge=FORWARD_BLOCK, description=f"rows per Parquet file (a multiple "
                                      f"of {FORWARD_BLOCK}, the generator's forward block); unset: 16,384, or "
                                      f"fewer where that gives a dataset at least 8 files, so that a small job "
                                      f"is shared among its actors")
    actors: int | None = Field(None, ge=1, description="generator replicas (Ray Data actors); unset: as many "
                                                       "as the cluster's CPUs fit, and a small local job is "
                                                       "written in the command's own process (docs/generation.md)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per generator replica")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs reserved per generator replica; above 0 the "
                                                         "replicas compute on their GPU (their bytes differ from a "
                                                         "CPU's, so the device is part of the request)")
    verifier: bool = Field(True, description="run the verifier (the feature network, a classifier trained on the "
                                            "real data) on every row and write its `verifier_label` and "
                                            "`verifier_confidence`; false: neither column, and the rows cost the "
                                            "generator and their PNG alone (a conditional model, no "
                                            "--min-confidence)")
    eval_samples: int = Field(2000, ge=10, description="rows of the dataset evaluated for its card")
    compare_samples: int = Field(4000, ge=20, description="with a quality filter: rows of the dataset and as many "
                                                          "unfiltered rows compared in parts of the holdout's size "
                                                          "for the card")
    max_tries: int = Field(50, ge=1, description="candidates tried per row with a quality filter before the "
                                                 "filter counts as unmet")
    drs_keep: float = Field(0.5, gt=0, lt=1, description="discriminator rejection sampling: share of a burn-in "
                                                         "sample with acceptance >= 1/2 (sets the paper's gamma)")
    drs_burn_in: int = Field(2000, ge=100, description="candidates whose largest D logit bounds the density ratio")

    @field_validator("rows_per_file")
    @classmethod
    def _aligned(cls, v):
        if v is not None and v % FORWARD_BLOCK:
            raise ValueError(f"{v} is not a multiple of {FORWARD_BLOCK}")
        return v


@_described
class WorkflowConfig(Section):
    name: str | None = Field(None, description="the workflow's name; the same name resumes it, skipping the stages "
                                               "that finished with the same inputs (default: time stamp)")
    stages: list[str] = Field(["train", "evaluate", "register", "generate"],
                              description="stages run by ganpipe run, in order: train or tune, evaluate, register, "
                                          "generate")
    model: str | None = Field(None, description="the generator of evaluate and generate when the workflow neither "
                                                "trains nor registers one (models:/..., runs:/..., a checkpoint)")
    rows: int = Field(10000, ge=1, description="rows of the workflow's dataset")
    labels: str = Field("balanced", description="its labels: balanced, proportional or CLASS=COUNT,...")
    out: str | None = Field(None, description="its folder (default: datasets/NAME-vVERSION)")
    reports: str = Field("eval_reports", description="folder of the evaluation reports (REPORTS/NAME)")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return check_name(v, "workflow.name")

    @field_validator("stages")
    @classmethod
    def _stages(cls, v):
        unknown = [s for s in v if s not in STAGES]
        if unknown or not v:
            raise ValueError(f"{unknown or 'no stages'}: the stages are {', '.join(STAGES)}")
        if len(set(v)) != len(v) or [s for s in STAGES if s in v] != list(v):
            raise ValueError(f"{v}: give each stage once, in the order {', '.join(STAGES)}")
        if "train" in v and "tune" in v:
            raise ValueError("train and tune both make the model; pick one")
        return v


@_described
class RayConfig(Section):
    address: str = Field("", description="empty: a fresh local Ray; else a cluster (HOST:PORT, ray://HOST:10001, auto)")
    connect_timeout_s: float = Field(15, gt=0, description="seconds to wait for a cluster address to answer")
    num_workers: int | None = Field(None, ge=1, description="DDP workers; unset: as many as fit the machine")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); CPU workers use gloo")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker")
    layout: Literal["auto", "per_cpu"] = Field(
        "auto", description="a local run on CPUs with ray.num_workers unset: auto times every split of the "
                            "per-CPU layout's global batch over workers and threads (N x 1 ... 1 x N) and trains "
                            "with the fastest, cached per machine and model (one worker trains as one Ray task, "
                            "not a TorchTrainer); per_cpu: one worker per ray.cpus_per_worker CPUs")
    layout_cache: str = Field("~/.cache/ganpipe/layouts.json", description="where ray.layout=auto keeps its "
                                                                           "measurements")
    gpus_per_worker: float = Field(1.0, ge=0, description="GPUs reserved per worker when ray.use_gpu")
    storage_path: str = Field("ganpipe_runs", description="checkpoints and Ray's run state; a shared path or s3:// "
                                                          "on a cluster")
    max_failures: int = Field(2, ge=-1, description="worker failures a run survives (-1: any number)")


@_described
class MLflowConfig(Section):
    tracking_uri: str | None = Field(None, description="unset: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = Field("ganpipe", description="MLflow experiment of every run")


@_described
class Config(Section):
    seed: int = Field(0, description="seeds rank r with seed + r, the split, the probes and the evaluation")
    auto: bool = Field(False, description="derive the keys this config leaves unset among the image size, the "
                                          "widths, the time budget, the patience, the EMA, R1's gamma and the "
                                          "learning rates from the data and the device (docs/configuration.md); "
                                          "false: the schema's defaults")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()
    mlflow: MLflowConfig = MLflowConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()
    generate: GenerateConfig = GenerateConfig()
    workflow: WorkflowConfig = WorkflowConfig()

    @model_validator(mode="after")
    def _tune(self) -> "Config":
        known = set(flatten(Config.model_construct()))
        for key in self.tune.space:
            if key not in known or not key.startswith(TUNABLE_SECTIONS):
                raise ValueError(f"tune.space: unknown hyperparameter {key!r} (tunable: train.*, model.*)")
        if self.tune.metric not in TUNE_METRICS:
            raise ValueError(f"tune.metric={self.tune.metric!r}: no trial reports it (reported: "
                             f"{', '.join(TUNE_METRICS)})")
        check_name(self.registry.model_name, "registry.model_name")
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


def describe(cfg: Config) -> list[tuple[str, Any, str]]:
    """(key, value, description) for every key of the resolved config, in schema order."""
    rows = []

    def walk(prefix: str, model: BaseModel) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}{name}"
            if isinstance(value, Section) and name in SECTION_KEYS:
                walk(key + ".", value)
            else:
                shown = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
                if isinstance(value, dict):
                    shown = {k: (v.model_dump(mode="json", exclude_none=True) if isinstance(v, BaseModel) else v)
                             for k, v in value.items()}
                rows.append((key, shown, field.description or ""))

    walk("", cfg)
    return rows


PRESETS = ("quick", "sweep")
CONFIG_ENV = "GANPIPE_CONFIG_YAML"  # a whole config as YAML text, read when no CONFIG is given


def preset_text(name: str) -> str:
    return resources.files("pipelines.config.presets").joinpath(f"{name}.yaml").read_text()


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.k=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_key(tree: dict, dotted: str | list[str], value: Any) -> None:
    """Set `section.key` (any depth) in a config tree; the one way every override is applied."""
    keys = dotted.split(".") if isinstance(dotted, str) else dotted
    node = tree
    for i, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(keys[:i + 1])} is a value, not a section (setting {'.'.join(keys)})")
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


def _config_tree(origin: str, text: str) -> dict:
    """A config's YAML tree; with `extends: PRESET`, its keys set over that preset's (which may
    extend another)."""
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML ({e})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    base = tree.pop("extends", None)
    if base is None:
        return tree
    if base not in PRESETS:
        raise ConfigError(f"{origin}: extends: {base!r} is not a preset ({', '.join(PRESETS)})")
    merged = _config_tree(f"preset {base!r}", preset_text(base))
    for dotted, value in _flatten_tree(tree).items():
        set_key(merged, dotted, value)
    return merged


def _flatten_tree(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A YAML tree as `section.key` -> value; mappings under `tune.space` stay whole (each is one entry)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and key != "tune.space" and v:
            out.update(_flatten_tree(v, key))
        else:
            out[key] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or a preset name, default `quick`), apply overrides, validate. With no
    path, a config given as YAML text in the environment variable CONFIG_ENV (how `ganpipe submit`
    hands a job its config) comes before the default preset."""
    import os

    if path is None and os.environ.get(CONFIG_ENV):
        origin, text = f"${CONFIG_ENV}", os.environ[CONFIG_ENV]
    elif path is None or str(path) in PRESETS:
        name = "quick" if path is None else str(path)
        origin, text = f"preset {name!r}", preset_text(name)
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist (presets: {', '.join(PRESETS)})")
        origin, text = str(p), p.read_text()
    tree = _config_tree(origin, text)
    for item in overrides:
        keys, value = _parse_override(item)
        set_key(tree, keys, value)
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
        "data": cfg.data.model_copy(update={"source": source, "cache_dir": cfg.data.cache_dir and
                                            absolute(cfg.data.cache_dir)}),
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


# What each workflow stage reads from the config: a rerun of the workflow skips a stage whose inputs
# (these keys' values, and the URIs handed to it) are those it finished with. Sections are given whole;
# WHERE_NOT_WHAT are keys that say where a stage runs or caches, not what it computes or hands on.
STAGE_INPUTS = {
    "train": ("seed", "data", "model", "train", "ray", "eval.during_training", "eval.classifier_epochs",
              "eval.classifier_max_steps", "tune.metric"),
    "tune": ("seed", "data", "model", "train", "ray", "eval.during_training", "eval.classifier_epochs",
             "eval.classifier_max_steps", "tune"),
    "evaluate": ("seed", "data", "eval"),
    "register": ("registry", "tune.metric", "eval", "data"),
    "generate": ("seed", "generate", "eval", "workflow.rows", "workflow.labels", "workflow.out"),
}
WHERE_NOT_WHAT = ("ray.address", "ray.connect_timeout_s", "ray.layout_cache", "eval.cache_dir", "data.cache_dir")


def stage_inputs(cfg: Config, stage: str) -> dict[str, Any]:
    """The `section.key` values stage `stage` reads (STAGE_INPUTS less WHERE_NOT_WHAT)."""
    read = STAGE_INPUTS[stage]
    return {k: v for k, v in flatten(cfg).items()
            if any(k == r or k.startswith(r + ".") for r in read) and k not in WHERE_NOT_WHAT}
