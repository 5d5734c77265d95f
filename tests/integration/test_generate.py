"""`ganpipe generate`: a registered generator to a labeled Parquet dataset on Ray Data; the layout
readers expect, exact counts, the same bytes whatever the actors and file sizes, resume after a
kill, and bad input."""
import json
import re

import pyarrow.parquet as pq
import pytest

from pipelines.config import load_config
from pipelines.services import contract
from pipelines.stages.register import register
from tests.helpers import assert_one_line, run_cli
from tests.integration.test_evaluate import _checkpoint

pytestmark = pytest.mark.slow
FAST = ["--set", "eval.cas=false", "--set", "generate.eval_samples=200", "--set", "eval.samples=200"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, feature_cache):
    """A tracking store with `gan-generator@champion` (a small conditional DCGAN on digits) and an
    unconditional checkpoint."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("ganpipe")
    run = c.create_run(exp)
    folder = _checkpoint(tmp / "cond", 0, run.info.run_id)
    c.log_artifact(run.info.run_id, str(folder / "state.pt"), contract.CHECKPOINT_DIR)
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}", "eval.cas=false", "eval.samples=200",
                             f"eval.cache_dir={feature_cache}"])
    register(cfg, run.info.run_id)
    uncond = _checkpoint(tmp / "uncond", 0, "", ["model.conditional=false"])
    return {"uri": uri, "uncond": str(uncond)}


def _gen(capsys, registry, out, *args):
    return run_cli(capsys, "generate", "--model", "models:/gan-generator@champion", "--out", str(out),
                   "--set", f"mlflow.tracking_uri={registry['uri']}", *FAST, *args)


def _rows(folder):
    """id -> (PNG bytes, label) over every file of a dataset."""
    out = {}
    for f in sorted((folder / "data").glob("*.parquet")):
        t = pq.read_table(f)
        for i, img, lab in zip(t.column("id").to_pylist(), t.column("image").to_pylist(), t.column("label").to_pylist()):
            out[i] = (img["bytes"], lab)
    return out


def test_dataset_layout_counts_readers_and_reproducibility(workdir, capsys, ray_local, registry):
    out = workdir / "ds"
    code, stdout, err = _gen(capsys, registry, out, "--rows", "600", "--set", "generate.rows_per_file=256",
                             "--set", "generate.actors=2")
    assert code == 0, err[-3000:]
    assert "generate: 600 rows (60, 60, 60, 60, 60, 60, 60, 60, 60, 60 per class) in 3 files, 3 written now by 2 " \
           "actors;" in stdout
    files = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert files == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["rows"] for f in manifest["files"]] == [256, 256, 88] and manifest["counts"] == [60] * 10
    # pyarrow: the HF layout, provenance columns and file-level metadata.
    pf = pq.ParquetFile(out / "data" / files[0])
    assert pf.schema_arrow.names == ["id", "image", "label", "verifier_label", "verifier_confidence"]
    meta = json.loads(pf.schema_arrow.metadata[b"ganpipe"])
    assert meta["model"] == "models:/gan-generator@champion" and meta["model_version"] == "1" and meta["seed"] == 0
    # Hugging Face datasets decodes images and names the labels; pandas reads it too.
    import datasets

    hf = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert hf.features["label"].names == [str(i) for i in range(10)] and len(hf) == 600
    assert hf[0]["image"].size == (28, 28)
    import pandas as pd

    df = pd.read_parquet(out / "data")
    assert sorted(df["id"]) == list(range(600)) and df["label"].value_counts().tolist() == [60] * 10
    assert ((df["verifier_confidence"] > 0) & (df["verifier_confidence"] <= 1)).all()
    # The card and the dataset's own evaluation.
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "num_examples: 600" in card and "| 7 | 60 |" in card
    assert (out / "evaluation" / "samples_per_class.png").is_file() and "| fd |" in card
    # Its per-class agreement is over the dataset's own rows, as the verifier_label column has it.
    for c, rows_c in df.groupby("label"):
        agree = (rows_c["verifier_label"] == c).mean()
        assert f"| {c} | 60 | {agree:.3f} |" in card, (c, agree)
    assert re.search(r"## Evaluation \(\d+ rows against the real holdout\)", card)  # says how many it used
    assert not (out / ".ganpipe" / "weights.pt").exists(), "a shared dataset must not carry the model"
    # The same request with larger files and the pool left to ganpipe: a job this small is written in
    # the command's own process, with the same bytes for every row, the verifier's columns too.
    again = workdir / "ds1"
    code, stdout, err = _gen(capsys, registry, again, "--rows", "600", "--set", "generate.rows_per_file=512")
    assert code == 0, err[-3000:]
    assert "in 2 files, 2 written now in this process;" in stdout
    assert _rows(again) == _rows(out)
    verdicts = [pd.read_parquet(d / "data").sort_values("id")[["verifier_label", "verifier_confidence"]].to_numpy()
                for d in (out, again)]
    assert (verdicts[0] == verdicts[1]).all()
    # Without the verifier: the same rows, neither verifier column, no agreement on the card.
    plain = workdir / "plain"
    code, _, err = _gen(capsys, registry, plain, "--rows", "600", "--set", "generate.verifier=false")
    assert code == 0, err[-3000:]
    assert _rows(plain) == _rows(out)
    assert pq.read_schema(next((plain / "data").glob("*.parquet"))).names == ["id", "image", "label"]
    plain_card = (plain / "README.md").read_text()
    assert "verifier_label" not in plain_card and "| 7 | 60 |  |" in plain_card
    assert json.loads((plain / "manifest.json").read_text())["request"]["verifier"] is False
    # ganpipe's own parquet source reads it (and so training and `evaluate --dataset` can).
    from gan_core.data import load_dataset

    ds = load_dataset(f"parquet:{out / 'data'}")
    assert len(ds) == 600 and ds.class_names == [str(i) for i in range(10)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served(registry, workdir, payload: dict) -> list[dict]:
    """`mlflow models serve` for the champion on localhost, one request posted; stopped however it ends."""
    import os
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry["uri"],  # uvicorn from the same environment
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(workdir / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/gan-generator@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, (workdir / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["predictions"]
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def test_explicit_counts_are_exact_and_the_served_model_draws_the_same_rows(workdir, capsys, ray_local, registry):
    import base64

    code, stdout, err = _gen(capsys, registry, workdir / "a", "--labels", "0=5,3=300,9=1", "--seed", "3")
    assert code == 0, err[-3000:]
    assert json.loads((workdir / "a" / "manifest.json").read_text())["counts"] == [5, 0, 0, 300, 0, 0, 0, 0, 0, 1]
    # `mlflow models serve` answers the same request with the same rows, byte for byte.
    answer = _served(registry, workdir, {"dataframe_records": [{"label": 0, "count": 5}, {"label": 3, "count": 300},
                                                                {"label": 9, "count": 1}], "params": {"seed": 3}})
    rows = _rows(workdir / "a")
    assert len(answer) == 306
    assert {a["id"]: (base64.b64decode(a["image"]), a["label"]) for a in answer} == rows


def test_proportional_counts_are_exact(workdir, capsys, ray_local, registry):
    code, _, err = _gen(capsys, registry, workdir / "p", "--rows", "333", "--labels", "proportional")
    assert code == 0, err[-3000:]
    counts = json.loads((workdir / "p" / "manifest.json").read_text())["counts"]
    assert sum(counts) == 333 and max(counts) - min(counts) <= 8  # digits' classes are near balanced


def _digests(folder) -> dict:
    """sha256 of every file a dataset folder shows its readers (its own state folder left out; of the
    evaluation report, all but its heading, which names the folder, and the time it was written)."""
    import hashlib

    def content(p):
        body = p.read_bytes()
        return body.split(b"\n", 3)[3] if p.name == "report.md" else body

    return {p.relative_to(folder).as_posix(): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".ganpipe" not in p.parts}


def test_a_generation_killed_for_real_resumes_to_the_same_bytes(workdir, capsys, ray_local, registry):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipelines.services.dataset_folder import file_complete
    from tests.integration.cli_run import env_for, with_cache

    args = ("--rows", "6144", "--seed", "3", "--set", "generate.rows_per_file=768", "--set", "generate.actors=1")
    killed = workdir / "killed"
    # `ganpipe generate` in a process group of its own, a driver on the session's Ray; SIGKILL to the
    # group once its first file is complete.
    cmd = [sys.executable, "-m", "pipelines.cli", *with_cache(("generate", "--model", "models:/gan-generator@champion",
           "--out", str(killed), "--set", f"mlflow.tracking_uri={registry['uri']}", *FAST, *args, "--set",
           f"ray.address={ray_local.get_runtime_context().gcs_address}"))]
    log = workdir / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env_for(workdir), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    data = killed / "data"
    deadline = time.monotonic() + 300
    while not (data.is_dir() and any(file_complete(p) for p in data.glob("train-*.parquet"))):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = sum(file_complete(p) for p in data.glob("train-*.parquet"))
    assert 1 <= at_kill < 8 and not (killed / "manifest.json").exists(), at_kill
    # The same command again, the pool left to ganpipe: the missing files are written in this process.
    here = args[:-2]
    code, stdout, err = _gen(capsys, registry, killed, *here)
    assert code == 0, err[-3000:]
    written = int(re.search(r"(\d+) written now in this process", stdout)[1])
    assert 1 <= written <= 8 - at_kill, (written, at_kill)
    whole = workdir / "whole"  # the same request, never interrupted
    code, stdout, err = _gen(capsys, registry, whole, *args)
    assert code == 0 and "8 written now" in stdout, err[-3000:]
    assert len(_digests(whole)) > 10 and _digests(killed) == _digests(whole)
    # A different request into the same folder is refused; --overwrite replaces it.
    manifest = (killed / "manifest.json").read_text()
    code, _, err = _gen(capsys, registry, killed, "--rows", "50")
    assert_one_line(code, err, "holds another dataset", "--overwrite")
    assert (killed / "manifest.json").read_text() == manifest
    code, _, err = _gen(capsys, registry, killed, "--rows", "50", "--overwrite")
    assert code == 0, err[-2000:]
    assert json.loads((killed / "manifest.json").read_text())["rows"] == 50


def test_generate_bad_input(workdir, capsys, registry, ray_local):
    def fails(*args, model="models:/gan-generator@champion", out=workdir / "bad"):
        code, _, err = run_cli(capsys, "generate", "--model", model, "--out", str(out),
                               "--set", f"mlflow.tracking_uri={registry['uri']}", *args)
        return code, err

    assert_one_line(*fails("--rows", "10", model="models:/gan-generator@nobody"), "models:/gan-generator@nobody",
                    "does not resolve")
    assert_one_line(*fails("--rows", "0"), "--rows 0: give a positive number of rows")
    assert_one_line(*fails("--rows", "-5"), "--rows -5")
    assert_one_line(*fails("--rows", "9"), "--rows 9: a dataset needs at least 10 rows")
    import time

    began = time.monotonic()  # a request the disk cannot hold: refused at once, nothing allocated or written
    code, err = fails("--rows", "1000000000000", out=workdir / "huge")
    assert_one_line(code, err, "--rows 1,000,000,000,000: the dataset needs about", "bytes a row, measured on its "
                    "first 256 rows", "free")
    assert time.monotonic() - began < 30 and not (workdir / "huge").exists()
    assert_one_line(*fails("--labels", "11=5"), "the model has no class '11'")
    assert_one_line(*fails("--labels", "3=-1"), "counts cannot be negative")
    assert_one_line(*fails("--rows", "10", "--labels", "0=5"), "--rows 10 disagrees")
    assert_one_line(*fails("--labels", "0=5", model=registry["uncond"]), "unconditional")
    assert_one_line(*fails("--rows", "10", "--set", "generate.verifier=false", model=registry["uncond"]),
                    "generate.verifier=false: the model is unconditional")
    assert_one_line(*fails("--rows", "10", "--min-confidence", "0.5", "--set", "generate.verifier=false"),
                    "--min-confidence 0.5", "generate.verifier=false turns the verifier off")
    blocker = workdir / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "generate", "--model", "models:/gan-generator@champion", "--out",
                           str(blocker / "sub"), "--rows", "10", "--set", f"mlflow.tracking_uri={registry['uri']}")
    assert_one_line(code, err, "cannot write there")
    assert not (workdir / "bad").exists()
    # GPU actors on a cluster without GPUs: refused instead of waiting for resources that never come
    assert_one_line(*fails("--rows", "10", "--set", "generate.gpus_per_actor=1", out=workdir / "gpu"),
                    "generate.gpus_per_actor=1.0: the Ray cluster has 0 GPUs")
    assert not (workdir / "gpu" / "manifest.json").exists() and not list((workdir / "gpu").rglob("*.parquet"))
    # more actors than the cluster holds, with a file for each: refused at once, not a pool waiting for
    # actors that never start (fewer files than actors: as many actors as files)
    cpus = int(ray_local.cluster_resources()["CPU"])
    began = time.monotonic()
    assert_one_line(*fails("--rows", str(256 * (cpus + 1)), "--set", "generate.rows_per_file=256", "--set",
                           "generate.actors=64", out=workdir / "many"), "generate.actors=64: the Ray cluster",
                    f"holds {cpus} actor(s) of 1 CPU; lower generate.actors")
    assert time.monotonic() - began < 60 and not list((workdir / "many").rglob("*.parquet"))
    import os
    import signal

    from tests.helpers import holder

    busy = workdir / "busy"
    proc = holder(f"with names.hold_dataset({str(busy)!r}):")
    try:  # one writer per dataset folder
        assert_one_line(*fails("--rows", "10", out=busy), f"--out '{busy}' is in use by process {proc.pid}")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()


def test_quality_filters_keep_exact_counts_report_acceptance_or_fail_clearly(workdir, capsys, ray_local, registry):
    code, stdout, err = _gen(capsys, registry, workdir / "drs", "--labels", "0=200,8=200", "--rejection", "drs",
                             "--set", "generate.drs_burn_in=500")
    assert code == 0, err[-3000:]
    manifest = json.loads((workdir / "drs" / "manifest.json").read_text())
    assert manifest["counts"] == [200, 0, 0, 0, 0, 0, 0, 0, 200, 0]
    accept = manifest["acceptance"]
    assert 0 < accept[0] < 1 and 0 < accept[8] < 1, accept
    card = (workdir / "drs" / "README.md").read_text()
    assert "discriminator rejection sampling" in card and "| 0 | 200 |" in card
    # The evaluation with and without the filter, side by side (the rows' first candidates).
    assert "| metric | dataset | without the filter | real data | better |" in card
    fd_row = next(line for line in card.splitlines() if line.startswith("| fd |")).split("|")
    with_filter, without = float(fd_row[2]), float(fd_row[3])
    plain = json.loads((workdir / "drs" / "evaluation" / "without_filter" / "metrics.json").read_text())
    assert without == pytest.approx(plain["fd"], abs=1e-4) and with_filter != without
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(registry["uri"]).get_run(re.search(r"MLflow run (\w+)", stdout).group(1)).data.metrics
    assert logged[f"{contract.UNFILTERED_EVAL_PREFIX}fd"] == pytest.approx(plain["fd"])
    assert logged[f"{contract.EVAL_PREFIX}fd"] == pytest.approx(with_filter, abs=1e-4)
    assert "scale" in manifest["request"]["drs"] and manifest["request"]["drs"]["scale"] >= 0
    # ... and compared in parts of the holdout's size, each set's mean and error in the card.
    parts = json.loads((workdir / "drs" / "evaluation" / "filter_comparison.json").read_text())
    assert parts["parts"] == 400 // parts["rows_per_part"] >= 2
    a, b = parts["sets"]["with the filter"]["fd"], parts["sets"]["without"]["fd"]
    row = f"| fd | {a['mean']:.4f} ± {a['se']:.4f} | {b['mean']:.4f} ± {b['se']:.4f} | {a['mean'] - b['mean']:+.4f}"
    assert row in card
    # The verifier filter: the untrained generator draws what the verifier calls an 8 and nothing else.
    code, _, err = _gen(capsys, registry, workdir / "conf", "--labels", "8=30", "--min-confidence", "0.5")
    assert code == 0, err[-3000:]
    df = pq.read_table(workdir / "conf" / "data").to_pandas()
    assert (df["verifier_label"] == 8).all() and (df["verifier_confidence"] >= 0.5).all() and len(df) == 30
    code, _, err = _gen(capsys, registry, workdir / "never", "--labels", "0=30", "--min-confidence", "0.9",
                        "--set", "generate.max_tries=3")
    assert_one_line(code, err, "rows found none in 3 tries", "loosen the filter")
    import time

    deadline = time.time() + 20  # the generator actors are released: the next stage gets every CPU
    while ray_local.available_resources().get("CPU", 0) < ray_local.cluster_resources()["CPU"]:
        assert time.time() < deadline, ray_local.available_resources()
        time.sleep(0.5)
    assert not (workdir / "never" / "manifest.json").exists()
    assert not list((workdir / "never" / "data").glob("*.parquet"))
    # A generator without its discriminator cannot do DRS.
    import torch

    state = torch.load(registry["uncond"] + "/state.pt", weights_only=True)
    del state["D"]
    torch.save(state, workdir / "no_d.pt")
    code, _, err = run_cli(capsys, "generate", "--model", str(workdir / "no_d.pt"), "--out", str(workdir / "x"),
                           "--rows", "10", "--rejection", "drs")
    assert_one_line(code, err, "--rejection drs needs the run's discriminator")


def test_a_datasets_cas_is_its_generators_own_when_the_rows_are_its_plain_samples(workdir, capsys, ray_local,
                                                                                   registry):
    # CAS under one protocol: one classifier per side, at the floor of steps (cheap on digits).
    cas = ["--set", "eval.cas=true", "--set", "eval.cas_seeds=1", "--set", "eval.cas_max_steps=300",
           "--set", "eval.samples=200", "--set", f"mlflow.tracking_uri={registry['uri']}"]
    code, _, err = run_cli(capsys, "evaluate", "--model", "models:/gan-generator@champion", "--out",
                           str(workdir / "rep"), *cas)
    assert code == 0, err[-3000:]
    own = json.loads((workdir / "rep" / "metrics.json").read_text())
    out = workdir / "ds"
    code, stdout, err = run_cli(capsys, "generate", "--model", "models:/gan-generator@champion", "--out", str(out),
                                "--rows", "200", "--set", "generate.eval_samples=200", *cas)
    assert code == 0, err[-3000:]
    m = json.loads((out / "evaluation" / "metrics.json").read_text())
    # The generator's numbers, whole (its samples' count, not the dataset's 200 rows), and said so.
    assert m["cas_from"] == "generator" and m["protocol"].endswith(";cas_from=generator")
    for key in ("cas", "cas_ratio", "cas_ratio_lo", "cas_ratio_hi", "cas_per_class", "cas_samples", "cas_steps"):
        assert m[key] == own[key], key
    assert m["cas_samples"] == own["cas_samples"] > 200  # its samples, not the 200 rows
    assert "CAS: the generator's, from its own evaluation" in stdout
    card = (out / "README.md").read_text()
    assert f"CAS and its ratio are the generator's, from its own evaluation (classifiers trained on " \
           f"{own['cas_samples']:,} of its samples" in card
    assert f"| cas_ratio | {own['cas_ratio']:.4f} |" in card
    # With a filter the rows are no longer its plain samples: their CAS is trained on them (in proportion,
    # tests/integration/test_evaluate.py), whatever the generator's evaluation holds.
    from types import SimpleNamespace

    from pipelines.services.models import resolve
    from pipelines.stages.evaluate import generator_data
    from pipelines.stages.generate import rows_cas

    cfg = load_config(None, [c for c in cas if c != "--set"])
    loaded = resolve("models:/gan-generator@champion", registry["uri"])
    gcfg, data = generator_data(cfg, loaded, "models:/gan-generator@champion")
    assert rows_cas(loaded, gcfg, data, registry["uri"], SimpleNamespace(filter=None)).given["cas_ratio"] == \
        own["cas_ratio"]
    assert rows_cas(loaded, gcfg, data, registry["uri"], SimpleNamespace(filter=object())).given is None
