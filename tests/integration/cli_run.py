"""Run `ganpipe` in a subprocess with a private working directory, MLflow store and run storage."""
import os
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["model.g_width=8", "model.d_width=8", "train.batch_size=32", "ray.num_workers=2", "ray.max_failures=2"]


def env_for(tmp: Path) -> dict:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env.pop("RAY_ADDRESS", None)
    return env


def with_cache(args: tuple[str, ...]) -> list[str]:
    """The session's feature-network cache (tests/conftest.py) for commands that take a config."""
    folder = os.environ.get("GANPIPE_TEST_FEATURES")
    return [*args, "--set", f"eval.cache_dir={folder}"] if folder and args and args[0] != "--help" else list(args)


def ganpipe(tmp: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *with_cache(args)], cwd=tmp, env=env_for(tmp),
                          capture_output=True, text=True, timeout=timeout)


def start(tmp: Path, *args: str) -> subprocess.Popen:
    """`ganpipe ARGS` in a process group of its own (so that a test can kill the group)."""
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *with_cache(args)], cwd=tmp, env=env_for(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path} appeared: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.2)


def set_args(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def metric_history(tmp: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


def run_id_from(stdout: str) -> str:
    for line in stdout.splitlines():
        if "MLflow run " in line:
            return line.split("MLflow run ")[1].split()[0]
    raise AssertionError(f"no run id in output: {stdout}")

