"""`ganpipe submit`: the workflow as a Ray job on a cluster, through the Ray Jobs API.

The resolved config travels with the job (as YAML in the job's environment variable
GANPIPE_CONFIG_YAML, which `ganpipe run` reads when given no CONFIG); the job's entrypoint is the
cluster's own `ganpipe` console script, so the nodes need ganpipe installed. Ray 2.60 clusters use token authentication:
the token is read from `RAY_AUTH_TOKEN` or `~/.ray/auth_token` and sent with every request."""
from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from ..config import CONFIG_ENV, Config
from ..errors import UserError
from ..services import contract, tracking

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _headers() -> dict | None:
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path.home() / ".ray" / "auth_token"
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else None


def client(address: str):
    """A JobSubmissionClient for `address` (http://HEAD:8265); one clear error when it does not answer."""
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address!r}: give the cluster's dashboard URL, http://HEAD:8265")
    try:
        return JobSubmissionClient(address, headers=_headers())
    except Exception as e:  # ConnectionError, an authentication refusal
        text = str(e).strip().splitlines()
        raise UserError(f"--address {address}: the Ray Jobs API does not answer ({e.__class__.__name__}: "
                        f"{text[-1] if text else ''})") from None


def check_shared(cfg: Config) -> None:
    """On a cluster every node reads the checkpoints and the tracking store: no relative local paths."""
    from ..services.names import is_local

    storage, uri = cfg.ray.storage_path, cfg.mlflow.tracking_uri or ""
    if is_local(storage) and not Path(storage).expanduser().is_absolute():
        raise UserError(f"ray.storage_path={storage!r} is relative: on a cluster it would land in the job's "
                        f"temporary folder; give a path every node sees (absolute, shared) or s3://BUCKET/PATH")
    for key, path in (("workflow.out", cfg.workflow.out), ("workflow.reports", cfg.workflow.reports)):
        if "out" in key and path is None:
            path = "datasets"
        if is_local(path) and not Path(path).expanduser().is_absolute():
            raise UserError(f"{key}={path!r} is relative: on a cluster it would land in the job's temporary "
                            f"working folder, which Ray removes; give an absolute path every node sees"
                            + (" or s3://BUCKET/PATH" if "out" in key else ""))
    if (store := tracking.sqlite_file(uri)) is not None and not store.is_absolute():
        raise UserError(f"mlflow.tracking_uri={uri!r} is a relative file; give an MLflow server "
                        f"(http://HOST:5000) or an absolute path every node sees")


def submit(cfg: Config, address: str, env: dict | None = None, wait: bool = True, say=print) -> tuple[str, str]:
    """Submit `ganpipe run` with `cfg`; with `wait`, stream its logs until it ends. Returns (job id, status)."""
    check_shared(cfg)
    c = client(address)
    # The config travels as an environment variable: a `working_dir` would be removed by Ray's
    # runtime-environment cleanup while the job still runs in it (once its training workers exit).
    env_vars = {**(env or {}), CONFIG_ENV: yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)}
    deadline = time.monotonic() + 60
    while True:  # a cluster that has just started may not have its job agent up yet
        try:
            job_id = c.submit_job(entrypoint="ganpipe run", runtime_env={"env_vars": env_vars},
                                  metadata={contract.WORKFLOW: cfg.workflow.name or ""})
            break
        except RuntimeError as e:
            if "try again later" not in str(e) or time.monotonic() > deadline:
                raise UserError(f"--address {address}: the job was not accepted ({str(e).strip()})") from None
            time.sleep(2)
    say(f"submit: job {job_id} on {address}")
    if not wait:
        return job_id, str(c.get_job_status(job_id))
    return job_id, follow(c, job_id, say)


def follow(c, job_id: str, say=print, poll_s: float = 1.0) -> str:
    """Print the job's new log lines until it ends; returns its final status."""
    shown = 0
    while True:
        status = str(c.get_job_status(job_id)).split(".")[-1]
        logs = c.get_job_logs(job_id)
        for line in logs[shown:].splitlines():
            say(f"  {line}")
        shown = len(logs)
        if status in TERMINAL:
            say(f"submit: job {job_id} {status}")
            return status
        time.sleep(poll_s)


def status(address: str, job_id: str) -> str:
    return str(client(address).get_job_status(job_id)).split(".")[-1]


def logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return bool(client(address).stop_job(job_id))
