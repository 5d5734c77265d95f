"""`ganpipe submit` on a real two-node Ray cluster on this machine (a head and a second node, each with
one CPU and token authentication on): the workflow runs as a job over the Jobs API, its training
workers and its generation actors run on both nodes, and both nodes are stopped however it ends."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.integration.cli_run import set_args

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def two_nodes(tmp: Path):
    """`ray start --head` and `ray start --address` in their own process groups; SIGKILL to both
    groups at the end (never `ray stop`, which would end every Ray on the machine)."""
    gcs, dash = _port(), _port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    ray = os.path.join(bin_dir, "ray")
    procs = []
    short = tempfile.mkdtemp(prefix="gp", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    try:
        procs.append(subprocess.Popen(
            [ray, "start", "--head", "--block", "--port", str(gcs), "--dashboard-port", str(dash),
             "--dashboard-host", "127.0.0.1", "--num-cpus", "1", "--temp-dir", short],
            env=env, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        address = f"http://127.0.0.1:{dash}"
        _wait_for(address, env, procs[0], tmp / "head.log")
        procs.append(subprocess.Popen(
            [ray, "start", "--block", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "1"],
            env=env, stdout=open(tmp / "node.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_nodes(address, env, 2)
        yield address, env
    finally:
        for p in reversed(procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(2 if sig == signal.SIGTERM else 0)
            p.wait(30)
        shutil.rmtree(short, ignore_errors=True)


def _wait_for(address: str, env: dict, proc, log: Path, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(f"{address}/api/version",
                                         headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
            urllib.request.urlopen(req, timeout=2)
            return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)


def _wait_for_nodes(address: str, env: dict, n: int, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{address}/nodes?view=summary",
                                     headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
        try:
            body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            alive = [x for x in body["data"]["summary"] if x.get("raylet", {}).get("state") == "ALIVE"]
            if len(alive) >= n:
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"the cluster did not reach {n} nodes")


def test_the_workflow_runs_as_a_job_on_two_nodes(tmp_path, capsys, monkeypatch, feature_cache):
    from mlflow.tracking import MlflowClient

    with two_nodes(tmp_path) as (address, env):
        monkeypatch.setenv("RAY_AUTH_TOKEN", env["RAY_AUTH_TOKEN"])
        db = f"sqlite:///{tmp_path / 'mlflow.db'}"
        overrides = set_args([
            f"mlflow.tracking_uri={db}", f"ray.storage_path={tmp_path / 'runs'}", f"eval.cache_dir={feature_cache}",
            "ray.num_workers=2", "data.source=digits", "model.g_width=8", "model.d_width=8", "train.iterations=20",
            "train.eval_every=10", "train.checkpoint_every=10", "train.batch_size=32", "train.eval_samples=100",
            "eval.samples=200", "eval.cas=false", "generate.eval_samples=100", "generate.rows_per_file=256",
            "generate.actors=2", "workflow.rows=512", f"workflow.out={tmp_path / 'ds'}", "workflow.name=job",
            f"workflow.reports={tmp_path / 'reports'}"])
        code, out, err = run_cli(capsys, "submit", "--address", address, *overrides)
        assert code == 0, (out[-4000:], err[-2000:])
        job_id = out.split("submit: job ")[1].split()[0]
        assert f"submit: job {job_id} SUCCEEDED" in out and "run: workflow job" in out
        code, status, _ = run_cli(capsys, "submit", "--address", address, "--status", job_id)
        assert code == 0 and status.strip() == f"submit: job {job_id} SUCCEEDED"
        code, logs, _ = run_cli(capsys, "submit", "--address", address, "--logs", job_id)
        assert "run:   dataset " in logs
        # From the recorded node ids: training ranks and generation actors ran on both nodes (two files,
        # one for each actor: neither actor takes both while the other waits).
        c = MlflowClient(tracking_uri=db)
        runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
        by_stage = {r.data.tags.get("ganpipe.stage"): r for r in runs}
        train_nodes = json.loads(by_stage["train"].data.tags["ganpipe.nodes"])
        actor_nodes = json.loads(by_stage["generate"].data.tags["ganpipe.nodes"])
        assert len(set(train_nodes)) == 2 and set(actor_nodes) == set(train_nodes), (train_nodes, actor_nodes)
        assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["rows"] == 512
    # A relative storage path would land in the job's temporary folder on the cluster: refused first.
    code, _, err = run_cli(capsys, "submit", "--address", address, "--set", "ray.storage_path=runs")
    assert code == 2 and "ray.storage_path='runs' is relative" in err
