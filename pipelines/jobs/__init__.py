"""`ganpipe submit`: the workflow as a Ray job on a cluster, through the Ray Jobs API.

The resolved config travels with the job (its runtime environment's working directory holds
`ganpipe.yaml`); the job's entrypoint is the cluster's own `ganpipe` console script, so the nodes
need ganpipe installed (the image in infra/ has it). Ray 2.60 clusters use token authentication:
the token is read from `RAY_AUTH_TOKEN` or `~/.ray/auth_token` and sent with every request."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

from ..config import Config
from ..errors import UserError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
CONFIG_NAME = "ganpipe.yaml"


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
    storage, uri = cfg.ray.storage_path, cfg.mlflow.tracking_uri or ""
    if "://" not in storage and not Path(storage).expanduser().is_absolute():
        raise UserError(f"ray.storage_path={storage!r} is relative: on a cluster it would land in the job's "
                        f"temporary folder; give a path every node sees (absolute, shared) or s3://BUCKET/PATH")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raise UserError(f"mlflow.tracking_uri={uri!r} is a relative file; give an MLflow server "
                        f"(http://HOST:5000) or an absolute path every node sees")


def submit(cfg: Config, address: str, env: dict | None = None, wait: bool = True, say=print) -> tuple[str, str]:
    """Submit `ganpipe run` with `cfg`; with `wait`, stream its logs until it ends. Returns (job id, status)."""
    check_shared(cfg)
    c = client(address)
    folder = Path(tempfile.mkdtemp(prefix="ganpipe-job-"))
    (folder / CONFIG_NAME).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    runtime_env = {"working_dir": str(folder)}
    if env:
        runtime_env["env_vars"] = dict(env)
    job_id = c.submit_job(entrypoint=f"ganpipe run {CONFIG_NAME}", runtime_env=runtime_env,
                          metadata={"ganpipe.workflow": cfg.workflow.name or ""})
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
