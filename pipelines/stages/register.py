"""`ganpipe register`: log a run's generator as an MLflow model (pt2, pickle-free, plus a
python_function flavor that serves labeled images; see services/serving.py), register it,
evaluate it under the fixed protocol, and give it the alias `champion` only when it beats the
current champion on the same metric, data fingerprint and protocol, beyond its bootstrap interval;
otherwise `challenger`."""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

from gan_core.metrics import METRICS, is_better

from ..config import Config, check_name
from ..errors import UserError
from ..services import contract, serving, tracking
from ..services.models import RUN_ID, resolve
from .evaluate import evaluate_once


@dataclass
class Registration:
    name: str
    version: str
    alias: str
    reason: str
    metrics: dict | None = None


def _validate_name(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as e:
        raise UserError(f"registry.model_name={name!r}: {e.message}") from None


def decide(new_value: float, champion: dict | None, metric: str, fingerprint: str,
           protocol: str | None = None, interval: tuple[float, float] | None = None) -> tuple[str, str]:
    """(alias, reason) for a new version given the champion's tags (None when there is none).
    Values compare only under the same metric, data fingerprint and evaluation protocol. With the new
    value's bootstrap `interval`, the new version wins only when it is better beyond it: its whole
    interval lies on the better side of the champion's value."""
    if champion is None:
        return contract.CHAMPION, "there is no champion yet"
    if champion.get(contract.V_METRIC_NAME) != metric:
        return contract.CHALLENGER, f"the champion was chosen by {champion.get(contract.V_METRIC_NAME)!r}, not {metric!r}"
    if champion.get(contract.V_DATA_FINGERPRINT) != fingerprint:
        return contract.CHALLENGER, "the champion was trained on other data (fingerprint differs)"
    if protocol is not None and champion.get(contract.V_EVAL_PROTOCOL) != protocol:
        return contract.CHALLENGER, (f"the champion was evaluated under another protocol "
                                     f"({champion.get(contract.V_EVAL_PROTOCOL)}, not {protocol})")
    old = float(champion[contract.V_METRIC_VALUE])
    if not is_better(metric, new_value, old):
        return contract.CHALLENGER, f"{metric} {new_value:.4g} does not beat the champion's {old:.4g}"
    if interval is None:
        return contract.CHAMPION, f"{metric} {new_value:.4g} beats the champion's {old:.4g}"
    lo, hi = interval
    band = f"{metric} {new_value:.4g} (95% interval {lo:.4g}-{hi:.4g})"
    far = hi if METRICS[metric].direction == "min" else lo  # the end nearest the champion
    if is_better(metric, far, old):
        return contract.CHAMPION, f"{band} beats the champion's {old:.4g} beyond its interval"
    return contract.CHALLENGER, f"{band} is better than the champion's {old:.4g}, but not beyond its interval"


def _existing_version(c, name: str, run_id: str, iteration: int):
    """The version already registered from this run at this iteration, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get(contract.V_ITERATION) == str(iteration):
            return v
    return None


def register(cfg: Config, run_id: str, alias: str = contract.CHAMPION, verbose: bool = False) -> Registration:
    """A training run's generator (from its checkpoint artifact) in, a registered model version out:
    logged as a pt2 model, tagged with what the batch stage needs, evaluated under the fixed protocol
    (`ganpipe evaluate`'s code, `eval.samples` samples, seed `seed`), and given `alias` only when it
    beats the current holder on the same metric, data and protocol (else `challenger`). Registering
    the same run at the same iteration again returns the existing version."""
    import mlflow
    from mlflow.models import Model

    name, metric = cfg.registry.model_name, cfg.tune.metric
    _validate_name(name)
    try:
        check_name(alias, "--alias")
    except ValueError as e:
        raise UserError(str(e)) from None
    run_id = run_id.removeprefix("runs:/").split("/")[0]
    if not RUN_ID.match(run_id):
        raise UserError(f"--run {run_id!r}: expected an MLflow run id (32 hex digits) or runs:/RUN_ID")
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    loaded = resolve(run_id, uri)
    c = tracking.client(uri)
    existing = _existing_version(c, name, run_id, loaded.iteration)
    if existing is not None:
        aliases = list(c.get_model_version(name, existing.version).aliases or [])  # search results carry none
        return Registration(name, str(existing.version), aliases[0] if aliases else "",
                            f"run {run_id} at iteration {loaded.iteration} is already version {existing.version}")
    metrics = evaluate_once(cfg, loaded, run_id, uri, f"eval_reports/{run_id}")
    if metric not in metrics:
        raise UserError(f"--run {run_id}: the evaluation has no {metric!r} metric to be compared by")
    value = float(metrics[metric])
    interval = (float(metrics[f"{metric}_lo"]), float(metrics[f"{metric}_hi"])) \
        if f"{metric}_lo" in metrics and f"{metric}_hi" in metrics else None
    g = loaded.generator
    mlflow.set_tracking_uri(uri)
    quiet = contextlib.redirect_stderr(io.StringIO()) if not verbose else contextlib.nullcontext()
    with mlflow.start_run(run_id=run_id), quiet:  # MLflow prints its own registration lines to stderr
        info = Model.log(None, name=contract.MODEL_NAME, flavor=serving, registered_model_name=name, generator=g,
                         spec=loaded.meta.to_dict()["spec"], class_names=list(loaded.meta.class_names))
    version = str(info.registered_model_version)
    # what the next registration compares against (VERSION_TAGS: each is read by the registry or the UI)
    tags = {contract.V_DATA_FINGERPRINT: loaded.meta.data_fingerprint, contract.V_METRIC_NAME: metric,
            contract.V_METRIC_VALUE: value, contract.V_METRIC_INTERVAL: json.dumps(list(interval) if interval else None),
            contract.V_EVAL_PROTOCOL: metrics["protocol"], contract.V_ITERATION: loaded.iteration}
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, str(v))
    from mlflow.exceptions import MlflowException

    try:
        current = c.get_model_version_by_alias(name, alias)
        champion = dict(current.tags) if str(current.version) != version else None
    except MlflowException:  # the alias does not exist yet
        champion = None
    chosen, reason = decide(value, champion, metric, loaded.meta.data_fingerprint, metrics["protocol"], interval)
    chosen = alias if chosen == contract.CHAMPION else contract.CHALLENGER
    c.set_registered_model_alias(name, chosen, version)
    return Registration(name, version, chosen, reason, metrics)
