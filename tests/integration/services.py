"""Real services for tests, started here and always stopped: PostgreSQL (Debian's binaries, run as the
`postgres` user since initdb refuses root), an S3-compatible object store (moto's server), and an
MLflow tracking server on both (runs in PostgreSQL, artifacts in S3, served over HTTP)."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not start within {timeout:.0f}s")


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@contextlib.contextmanager
def postgres():
    """A PostgreSQL server on a free port with a database `mlflow`, in a temporary folder of its own
    (the `postgres` user cannot enter pytest's root-only folders); yields its SQLAlchemy URL."""
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
    bin_dir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="ganpipe-pg-"))
    data, port = folder / "pgdata", free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    _run(_as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust"))
    _run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "pg.log"), "-w",
                      "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"))
    try:
        _run(_as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"))
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def s3_server(bucket: str):
    """moto's S3 server on a free port with `bucket` created; yields its endpoint URL. The AWS
    credentials it accepts are set in this process's environment while it runs."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def mlflow_server(folder: Path, backend: str, artifacts: str, s3_endpoint: str):
    """`mlflow server` on a free port over `backend` with artifacts in `artifacts` (proxied, so clients
    need no S3 credentials); yields its URL; stops its whole process group."""
    import requests

    port = free_port()
    env = {**os.environ, **S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = open(folder / "mlflow-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and requests.get(url + "/health", timeout=2).ok, "mlflow server", 120)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
