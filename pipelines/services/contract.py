"""The MLflow contract: every tag, artifact path and model-version tag ganpipe writes, by name.

Stages, the registry and every reader (evaluation, generation, the UI) import these names; a
value that reaches a search filter goes through `filter_eq`.
"""
from __future__ import annotations

# Experiment
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow's UI: a model-training experiment, not GenAI

# Run tags
RUN_NAME = "ganpipe.run_name"
STAGE = "ganpipe.stage"  # workflow | train | tune | tune-trial | evaluate | register | generate
WORKFLOW = "ganpipe.workflow"  # the workflow's name, on its parent run
INPUTS = "ganpipe.inputs"  # a stage run's input hash (a rerun with the same inputs skips the stage)
DONE_PREFIX = "ganpipe.done."  # on a workflow's parent run: ganpipe.done.STAGE = {"inputs": ..., "out": ...}
SWEEP = "ganpipe.sweep"
TRIAL_ID = "ganpipe.trial_id"
STOPPED_EARLY = "ganpipe.stopped_early"
BEST_RUN_ID = "ganpipe.best_run_id"
PLANNED_ITERATIONS = "ganpipe.planned_iterations"
STOP_REASON = "ganpipe.stop_reason"  # why a run ended before its planned length (train.target, ...)
STOP_KIND = "ganpipe.stop_kind"  # ... the rule that ended it: target | patience | budget | sweep
CHECKPOINT_ITERATION = "ganpipe.checkpoint_iteration"  # the iteration of checkpoint/state.pt (the best)
STREAM_SHARD = "ganpipe.stream_shard"  # .RANK: JSON {file: rows read} of a worker's streamed shard
NODES = "ganpipe.nodes"  # JSON list of the Ray node ids a stage ran on (training ranks in order; generate actors)
PRECISION = "ganpipe.precision"  # the arithmetic the training step ran in: fp32 or bf16 (train.precision resolved)
DATA_FINGERPRINT = "data.fingerprint"
EVAL_PROTOCOL = "ganpipe.eval_protocol"  # the protocol of the eval_* metrics on the run
PARENT_RUN = "mlflow.parentRunId"
SOURCE_RUN = "ganpipe.model_run_id"  # on a generate run: the training run of the generator it used
RUN_DISPLAY_NAME = "mlflow.runName"
GIT_COMMIT = "mlflow.source.git.commit"
SUMMARY = "ganpipe.summary"  # on a workflow's parent run: JSON of what it made
REPORT = "ganpipe.report"  # on an evaluate stage run: the report folder
MODEL_URI = "ganpipe.model"  # on a register stage run: the registered version's models:/ URI
ALIAS = "ganpipe.alias"  # ... and the alias it holds

# MLflow's size limits: longer values are cut to them
PARAM_MAX = 6000
TAG_MAX = 5000


def param_value(value) -> str:
    return str(value)[:PARAM_MAX]


def tag_value(value) -> str:
    return str(value)[:TAG_MAX]


def model_ref(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, version, alias) of `models:/NAME/VERSION` or `models:/NAME@ALIAS` (one of version and
    alias set); None for any other URI."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, None, alias
    name, _, version = ref.partition("/")
    return name, version or None, None


def model_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"

# Artifact paths
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "checkpoint/state.pt"
SAMPLES_DIR = "samples"
EVALUATION_DIR = "evaluation"
SWEEP_DIR = "sweep"
MODEL_NAME = "generator"  # the logged model's name inside a run

# Metric names written besides the training metrics
EVAL_PREFIX = "eval_"
UNFILTERED_EVAL_PREFIX = "unfiltered_eval_"  # a filtered dataset's rows without the filter (generate)
RESUMED_FROM = "resumed_from"
NAN_AT = "nan_at_iteration"

# Model-version tags
V_DATA_FINGERPRINT = "data_fingerprint"
V_METRIC_NAME = "metric_name"
V_METRIC_VALUE = "metric_value"
V_METRIC_INTERVAL = "metric_interval"  # JSON [lo, hi]: the value's 95% bootstrap interval
V_EVAL_PROTOCOL = "eval_protocol"
V_ITERATION = "iteration"
# Written on a registered version, each read by the registry (the champion's) or the UI; the model's
# shape, classes and label prior travel inside the logged model (its ganpipe.json).
VERSION_TAGS = (V_DATA_FINGERPRINT, V_METRIC_NAME, V_METRIC_VALUE, V_METRIC_INTERVAL, V_EVAL_PROTOCOL, V_ITERATION)

V_DATASETS = "ganpipe.datasets"  # JSON list of dataset folders made from this version

# Dataset folders written by `ganpipe generate`
DATASET_DATA_DIR = "data"
DATASET_MANIFEST = "manifest.json"
DATASET_CARD = "README.md"
DATASET_EVALUATION_DIR = "evaluation"
DATASET_STATE_DIR = ".ganpipe"  # the request a folder is being written for (resume key), and its writer's lock
DATASET_WRITER_LOCK = "writer.lock"
DATASET_ARTIFACTS = "dataset"  # artifact path of the card and manifest on the generate run

CHAMPION = "champion"
CHALLENGER = "challenger"


def filter_eq(key: str, value: str) -> str:
    """`tags.`key` = 'value'` for MLflow's search filter. Values are names validated by the config
    (no quotes); a quote here is a programming error, refused rather than pasted."""
    if "'" in value or "\\" in value:
        raise ValueError(f"{key}={value!r}: quotes cannot reach an MLflow filter")
    return f"tags.`{key}` = '{value}'"
