"""`ganpipe register`: log a run's generator as an MLflow model (pt2, pickle-free), register it,
and give it the alias `champion` only when it beats the current champion on the same metric and
data fingerprint; otherwise `challenger`."""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np

from . import tracking
from .config import TUNE_METRICS, Config
from .errors import UserError
from .generators import resolve


@dataclass
class Registration:
    name: str
    version: str
    alias: str
    reason: str


def _validate_name(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as e:
        raise UserError(f"registry.model_name={name!r}: {e.message}") from None


def decide(new_value: float, champion: dict | None, metric: str, fingerprint: str) -> tuple[str, str]:
    """(alias, reason) for a new version given the champion's tags (None when there is none)."""
    if champion is None:
        return "champion", "there is no champion yet"
    if champion.get("metric_name") != metric:
        return "challenger", f"the champion was chosen by {champion.get('metric_name')!r}, not {metric!r}"
    if champion.get("data_fingerprint") != fingerprint:
        return "challenger", "the champion was trained on other data (fingerprint differs)"
    old = float(champion["metric_value"])
    better = new_value < old if TUNE_METRICS[metric] == "min" else new_value > old
    verb = "beats" if better else "does not beat"
    return ("champion" if better else "challenger"), f"{metric} {new_value:.4g} {verb} the champion's {old:.4g}"


def _example_and_signature(g):
    """Tensor signature (z, and y when conditional) with a dynamic batch, as pt2 export needs."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    n = 4
    z = np.random.default_rng(0).standard_normal((n, g.z_dim)).astype(np.float32)
    inputs = [TensorSpec(np.dtype(np.float32), (-1, g.z_dim), "z")]
    example = [z]
    if g.num_classes:
        example.append((np.arange(n) % g.num_classes).astype(np.int64))
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "y"))
    outputs = [TensorSpec(np.dtype(np.float32), (-1, *g.image_shape), "images")]
    return example, ModelSignature(Schema(inputs), Schema(outputs))


def register(cfg: Config, run_id: str, alias: str = "champion", verbose: bool = False) -> Registration:
    import mlflow

    name, metric = cfg.registry.model_name, cfg.tune.metric
    _validate_name(name)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    loaded = resolve(run_id, uri)
    c = tracking.client(uri)
    run = c.get_run(run_id)
    if metric not in run.data.metrics:
        raise UserError(f"--run {run_id}: the run has no {metric!r} metric to be compared by")
    value = float(run.data.metrics[metric])
    g = loaded.generator
    example, signature = _example_and_signature(g)
    mlflow.set_tracking_uri(uri)
    quiet = contextlib.redirect_stderr(io.StringIO()) if not verbose else contextlib.nullcontext()
    with mlflow.start_run(run_id=run_id), quiet:  # MLflow prints its own registration lines to stderr
        info = mlflow.pytorch.log_model(g, name="generator", signature=signature, input_example=example,
                                        serialization_format="pt2", registered_model_name=name)
    version = str(info.registered_model_version)
    meta = loaded.meta
    tags = {"z_dim": g.z_dim, "num_classes": g.num_classes or 0, "class_names": json.dumps(meta["class_names"]),
            "image_shape": json.dumps(list(g.image_shape)), "data_fingerprint": meta["data_fingerprint"],
            "label_prior": json.dumps(meta["label_prior"]), "metric_name": metric, "metric_value": value,
            "run_id": run_id, "iteration": loaded.iteration}
    for k, v in tags.items():
        tracking.with_retry(lambda: c.set_model_version_tag(name, version, k, str(v)))
    from mlflow.exceptions import MlflowException

    try:
        current = c.get_model_version_by_alias(name, alias)
        champion = dict(current.tags) if str(current.version) != version else None
    except MlflowException:  # the alias does not exist yet
        champion = None
    chosen, reason = decide(value, champion, metric, meta["data_fingerprint"])
    chosen = alias if chosen == "champion" else "challenger"
    tracking.with_retry(lambda: c.set_registered_model_alias(name, chosen, version))
    return Registration(name, version, chosen, reason)
