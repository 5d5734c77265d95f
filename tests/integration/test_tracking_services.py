"""Tracking on real services: an MLflow server on PostgreSQL with its artifacts in S3 (moto's server),
all started here and stopped after. The workflow logs, checkpoints, registers and generates through
the server over HTTP; a sweep's parallel trials, training on the dataset in the bucket (streamed),
lose nothing on the server; two writers at once lose nothing on SQLite."""
import json
import multiprocessing as mp

import pytest

from tests.helpers import run_cli
from tests.integration.cli_run import set_args
from tests.integration.services import mlflow_server, postgres, s3_server

pytestmark = pytest.mark.slow
BUCKET = "ganpipe-artifacts"
STEPS = 80  # logging steps per writer, both at once


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("services")
    with postgres() as db, s3_server(BUCKET) as s3, \
            mlflow_server(folder, db, f"s3://{BUCKET}/mlflow", s3) as url:
        yield {"url": url, "s3": s3, "db": db}


@pytest.fixture(scope="module")
def ray_s3(ray_local, server):
    """The session's Ray restarted with the object store's endpoint in its environment, as a cluster's
    nodes have theirs (Ray's storage reaches s3:// through pyarrow, which reads AWS_ENDPOINT_URL)."""
    import os

    from pipelines.services.runtime import init_ray

    ray_local.shutdown()
    os.environ["AWS_ENDPOINT_URL"] = server["s3"]
    init_ray("", verbose=False)
    yield ray_local
    ray_local.shutdown()
    os.environ.pop("AWS_ENDPOINT_URL")
    init_ray("", verbose=False)


def _writer(uri: str, run_id: str, barrier, key: str) -> None:
    from pipelines.services import tracking

    barrier.wait()
    for step in range(STEPS):
        tracking.log_metrics(uri, run_id, {key: float(step), f"{key}_b": -float(step)}, step=step)


@pytest.mark.parametrize("store", ["sqlite"])  # on the server: the sweep in the workflow test below
def test_two_writers_at_once_lose_nothing(tmp_path, request, store):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else request.getfixturevalue("server")["url"]
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment(f"concurrency-{tmp_path.name}")
    runs = [c.create_run(exp).info.run_id for _ in range(2)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(uri, runs[i], barrier, f"m{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    for i, run_id in enumerate(runs):
        for key in (f"m{i}", f"m{i}_b"):
            assert sorted(m.step for m in c.get_metric_history(run_id, key)) == list(range(STEPS))


def _objects(server) -> list[str]:
    import boto3

    pages = boto3.client("s3", endpoint_url=server["s3"]).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_workflow_tracks_registers_checkpoints_to_s3_and_generates_through_the_server(workdir, capsys, ray_s3,
                                                                                        server):
    import mlflow
    from mlflow.tracking import MlflowClient

    url = server["url"]
    small = ["data.source=digits", "model.g_width=8", "model.d_width=8", "train.eval_every=10",
             "train.checkpoint_every=10", "train.batch_size=32", "train.eval_samples=200", "eval.samples=200",
             "eval.cas=false", "generate.eval_samples=200", "generate.rows_per_file=256", "workflow.rows=800",
             f"mlflow.tracking_uri={url}", f"ray.storage_path=s3://{BUCKET}/runs"]
    dataset = f"s3://{BUCKET}/datasets/served"
    code, out, err = run_cli(capsys, "run", *set_args(small + ["train.iterations=20", "workflow.name=served",
                                                               f"workflow.out={dataset}"]))
    assert code == 0, err[-3000:]
    assert not (workdir / "ganpipe_runs").exists() and not (workdir / "datasets").exists()  # all in the bucket
    assert not (workdir / "mlflow.db").exists()  # everything went to the server
    c = MlflowClient(tracking_uri=url)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("ganpipe.stage") == "workflow"]
    stages = {r.data.tags["ganpipe.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") ==
              parent.info.run_id}
    assert set(stages) == {"train", "evaluate", "register", "generate"}
    assert [m.step for m in c.get_metric_history(stages["train"].info.run_id, "fd")] == [10, 20]
    # The registry lives in PostgreSQL; the artifacts (checkpoint, model, dataset card) in the bucket.
    version = c.get_model_version_by_alias("gan-generator", "champion")
    assert version.version == "1" and version.run_id == stages["train"].info.run_id
    keys = _objects(server)
    train_name = stages["train"].data.tags["ganpipe.run_name"]
    assert {f"runs/{train_name}/checkpoint_000000{i}/state.pt" for i in (10, 20)} <= set(keys), keys
    assert any(k.endswith("checkpoint/state.pt") for k in keys), keys
    assert any(k.endswith("dataset/README.md") for k in keys), keys  # the generate run's dataset card
    assert any(k.endswith("MLmodel") for k in keys), keys
    # A client with only the tracking URI (no bucket credentials) loads the champion through the server.
    mlflow.set_tracking_uri(url)
    g = mlflow.pytorch.load_model("models:/gan-generator@champion")
    assert g is not None
    # The dataset in the bucket: shards with their checksums, card, evaluation, and the manifest.
    import boto3
    import pyarrow.parquet as pq

    s3 = boto3.client("s3", endpoint_url=server["s3"])
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="datasets/served/manifest.json")["Body"].read())
    assert manifest["rows"] == 800 and [f["rows"] for f in manifest["files"]] == [256, 256, 256, 32]
    keys = set(_objects(server))
    for f in manifest["files"]:
        assert f"datasets/served/{f['file']}" in keys
        assert f"datasets/served/.ganpipe/sums/{f['file'].split('/')[-1]}.sha256" in keys
    assert {"datasets/served/README.md", "datasets/served/evaluation/metrics.json"} <= keys
    table = pq.read_table(f"{dataset}/data")  # readers take the bucket directly
    assert table.num_rows == 800 and sorted(table.column("id").to_pylist()) == list(range(800))
    assert f"dataset {dataset} (800 rows)" in out
    code, _, err = run_cli(capsys, "generate", "--model", "models:/gan-generator@champion", "--rows", "10", "--out",
                           "s3://no-such-bucket/x", "--set", f"mlflow.tracking_uri={url}")
    assert code == 2 and "the bucket 'no-such-bucket' does not exist" in err and "Traceback" not in err
    # The same training run, longer: it resumes from its newest checkpoint in the bucket.
    code, out, err = run_cli(capsys, "train", *set_args(small + ["train.iterations=30", f"train.run_name={train_name}"]))
    assert code == 0, err[-3000:]
    run = c.get_run(stages["train"].info.run_id)
    assert [m.value for m in c.get_metric_history(run.info.run_id, "resumed_from")] == [0.0, 20.0]
    assert f"runs/{train_name}/checkpoint_00000030/state.pt" in _objects(server)
    # A sweep on the server: two trials at once, each training on the dataset in the bucket, streamed
    # to its worker through Ray Data; neither loses a metric.
    code, out, err = run_cli(capsys, "tune", *set_args(small + [
        f"data.source=parquet:{dataset}/data", "data.streaming=on", "data.stream_sample=300",
        "train.iterations=10", "train.log_every=5", "tune.num_samples=2", "tune.scheduler=fifo",
        "tune.name=served-sweep", "registry.register_after_tune=false",
        "tune.max_concurrent_trials=2", 'tune.space={"train.lr_d": {"choice": [0.0002, 0.0004]}}']))
    assert code == 0, err[-3000:]
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         filter_string="tags.`ganpipe.sweep` = 'served-sweep'")
    trials = [r for r in runs if r.data.tags.get("ganpipe.stage") == "tune-trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    first_end = min(r.info.end_time for r in trials)
    assert max(r.info.start_time for r in trials) < first_end  # the two ran at the same time
    for r in trials:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "fd")] == [10]
        assert sorted(m.step for m in c.get_metric_history(r.info.run_id, "loss_d")) == [5, 10]
        shard = json.loads(r.data.tags["ganpipe.stream_shard.0"])
        assert sum(shard.values()) == 10 * 32 and all("datasets/served/data/train-" in f for f in shard)
