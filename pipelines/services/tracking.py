"""MLflow tracking: the tracking URI, a reachability check before any work, and a client whose every
call retries when SQLite reports "database is locked" (several processes writing one file). A new
SQLite store starts as a copy of an empty store with this MLflow's schema (`seed_sqlite`)."""
from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import UserError
from . import contract

SQLITE = "sqlite:///"
DEFAULT_URI = f"{SQLITE}mlflow.db"
T = TypeVar("T")


class TrackingError(UserError):
    """The tracking store cannot be used; the message names the URI."""


def sqlite_file(uri: str) -> Path | None:
    """The file of a SQLite tracking URI; None for any other URI."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def resolve_tracking_uri(configured: str | None) -> str:
    """config value > MLFLOW_TRACKING_URI > sqlite:///mlflow.db; relative SQLite paths made absolute
    so that Ray workers, whose working directory differs, write to the same file."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    path = sqlite_file(uri)
    if path is not None and not path.is_absolute():
        uri = f"{SQLITE}{path.resolve()}"
    return uri


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before training, when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
        except requests.RequestException as e:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({e.__class__.__name__}); "
                                f"start it or set mlflow.tracking_uri / MLFLOW_TRACKING_URI") from None
    elif (path := sqlite_file(uri)) is not None:
        folder = path.parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist")
    elif uri.startswith("file:") or "://" not in uri:
        raise TrackingError(f"MLflow tracking URI {uri!r}: MLflow 3 refuses the file store; use "
                            f"sqlite:///PATH.db or an http(s) tracking server")


def with_retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Call fn, retrying with jittered backoff while SQLite says the database is locked."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MlflowException wraps the sqlalchemy OperationalError
            if "database is locked" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.05 * 2 ** i * (1 + random.random()))
    raise AssertionError("unreachable")


SCHEMA_CACHE = Path.home() / ".cache" / "ganpipe" / "mlflow"


def _schema_template() -> Path:
    """An empty SQLite store with this MLflow version's schema and no experiment, made once per version
    under SCHEMA_CACHE by MLflow itself (its migrations take seconds; copying the result, milliseconds)."""
    import mlflow

    template = SCHEMA_CACHE / f"schema-{mlflow.__version__}.db"
    if template.is_file():
        return template
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SCHEMA_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCHEMA_CACHE) as tmp:
        db = Path(tmp) / "store.db"
        SqlAlchemyStore(f"sqlite:///{db}", str(Path(tmp) / "artifacts")).engine.dispose()
        with sqlite3.connect(db) as con:  # the store a copy opens makes its own default experiment, here
            con.execute("DELETE FROM experiments")
        con.close()
        os.replace(db, template)  # whole or absent, whichever process made it
    return template


def seed_sqlite(uri: str) -> None:
    """A SQLite tracking store that does not exist yet starts as a copy of `_schema_template()`, never
    over a store another process made meanwhile; any other URI (a server, SQLite in memory or with
    connection options), or an existing file, is left alone."""
    path = sqlite_file(uri)
    if path is None or "?" in uri or path.name == ":memory:":  # options, or no file
        return
    if path.exists() or not path.parent.is_dir():
        return
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(_schema_template(), part)
        os.link(part, path)
    except OSError:  # made meanwhile, or a file system without hard links: MLflow makes the store itself
        pass
    finally:
        part.unlink(missing_ok=True)


class Client:
    """MlflowClient with retries built in: every method call goes through `with_retry`; a new SQLite
    store is seeded first (`seed_sqlite`)."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        seed_sqlite(uri)
        self.uri = uri
        self._client = MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: with_retry(lambda: attr(*args, **kwargs))


def client(uri: str) -> Client:
    return Client(uri)


def find_run(uri: str, run_id: str):
    """The run `run_id` of the tracking store at `uri`, or None when the store lacks it (a checkpoint
    copied from another store names a run this one lacks)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(uri).get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def has_run(uri: str, run_id: str) -> bool:
    """Whether the tracking store at `uri` holds the run `run_id`."""
    return find_run(uri, run_id) is not None


def experiment_id(uri: str, name: str) -> str:
    """The experiment's id, created if needed, marked as a model-training experiment for MLflow's UI."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else c.create_experiment(name)
    if exp is None or exp.tags.get(contract.EXPERIMENT_KIND_TAG) != contract.EXPERIMENT_KIND:
        c.set_experiment_tag(exp_id, contract.EXPERIMENT_KIND_TAG, contract.EXPERIMENT_KIND)
    return exp_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
    client(uri).log_batch(run_id, metrics=batch)


def log_dataset_input(uri: str, run_id: str, name: str, fingerprint: str, source: str, context: str,
                      profile: dict | None = None) -> None:
    """Record the run's data as an MLflow dataset input (the runs table's Dataset column), with the
    content fingerprint as its digest (MLflow keeps 36 characters of it)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    ds = Dataset(name=name, digest=fingerprint[:32], source_type="ganpipe", source=json.dumps({"source": source}),
                 profile=json.dumps(profile or {}))
    client(uri).log_inputs(run_id, datasets=[DatasetInput(ds, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def log_image(uri: str, run_id: str, image, artifact_file: str) -> None:
    """Log a (3, H, W) tensor in [0, 1] as a PNG artifact."""
    import tempfile

    from gan_core.visual import save_png

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        save_png(image, path)
        folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        client(uri).log_artifact(run_id, str(path), folder)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None
