"""infra/: every manifest parses and has what its kind requires; every job's entrypoint is a real
`ganpipe` command whose config validates; the versions named there agree with pyproject.toml and
with the Ray the suite runs on."""
import re
import shlex
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from pipelines.cli import COMMANDS
from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PINS = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
DOCKERFILE = (INFRA / "docker" / "Dockerfile").read_text()


def _docs() -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(INFRA.rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            assert isinstance(doc, dict), f"{f}: a document that is not a mapping"
            out.append((f, doc))
    return out


DOCS = _docs()
KINDS = {doc.get("kind") for _, doc in DOCS}


def _kind(kind: str) -> list[tuple[Path, dict]]:
    return [(f, d) for f, d in DOCS if d.get("kind") == kind]


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _images() -> list[str]:
    text = "\n".join(f.read_text() for f in INFRA.rglob("*.yaml"))
    return re.findall(r"image:\s*(\S+)", text)


def test_every_manifest_parses_and_the_kinds_a_deployment_needs_are_there():
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "Deployment", "StatefulSet", "Service",
            "Secret"} <= KINDS
    for f, doc in DOCS:
        if "kind" in doc:
            assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), f


def test_the_ray_cluster_has_a_cpu_head_a_gpu_worker_group_and_token_authentication():
    ((f, rc),) = _kind("RayCluster")
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token", f
    head = _containers(spec["headGroupSpec"]["template"])[0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    worker = _containers(gpu["template"])[0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    mounts = {m["mountPath"] for c in (head, worker) for m in c["volumeMounts"]}
    assert mounts == {"/mnt/ganpipe"}
    ((_, pvc),) = _kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # workers on several nodes write one run folder
    claims = {v["persistentVolumeClaim"]["claimName"] for t in (spec["headGroupSpec"], gpu)
              for v in t["template"]["spec"]["volumes"]}
    assert claims == {pvc["metadata"]["name"]}


@pytest.mark.parametrize("kind", ["train", "sweep", "generate"])
def test_each_job_runs_a_real_ganpipe_command_whose_config_validates(kind):
    ((f, job),) = [(f, d) for f, d in _kind("RayJob") if d["metadata"]["name"] == f"ganpipe-{kind}"]
    ((_, rc),) = _kind("RayCluster")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "ganpipe" and argv[1] in COMMANDS, argv
    # The image copies infra/configs to configs/ (the Dockerfile's working directory).
    assert "COPY --chown=ray:users infra/configs ./configs" in DOCKERFILE
    config = INFRA / argv[2]  # configs/X.yaml in the image is infra/configs/X.yaml here
    cfg = load_config(config, [a for a in argv[3:] if a != "--set"])
    shared = "/mnt/ganpipe"
    assert cfg.ray.address == "auto" and cfg.ray.storage_path.startswith(shared)
    assert cfg.mlflow.tracking_uri == "http://ganpipe-mlflow:5000"
    (svc,) = [d for _, d in _kind("Service") if d["metadata"]["name"] == "ganpipe-mlflow"]
    assert svc["spec"]["ports"][0]["port"] == 5000
    if "generate" in cfg.workflow.stages:
        assert cfg.workflow.out is None or cfg.workflow.out.startswith(shared)
    if kind == "sweep":
        assert cfg.workflow.stages[0] == "tune" and cfg.ray.use_gpu and cfg.tune.workers_per_trial == 1


def test_versions_agree_with_pyproject_and_the_installed_ray():
    ray_version = version("ray")
    ((_, rc),) = _kind("RayCluster")
    assert rc["spec"]["rayVersion"] == ray_version
    assert PINS["ray"].specifier.contains(ray_version)
    base = re.search(r"ARG RAY_IMAGE=rayproject/ray:(\S+)-py(\d)(\d+)-cpu", DOCKERFILE)
    assert base and base.group(1) == ray_version
    assert f"ARG TORCH_VERSION={PINS['torch'].specifier}".replace("==", "") in DOCKERFILE
    assert f"ARG TORCHVISION_VERSION={PINS['torchvision'].specifier}".replace("==", "") in DOCKERFILE
    assert re.search(r'RUN pip install --no-cache-dir "\.\[cluster\]"', DOCKERFILE)
    assert "cluster" in PROJECT["optional-dependencies"]
    ours = [i for i in _images() if i.startswith("ganpipe:")]
    assert ours and all(i.split(":")[1].split("-")[0] == PROJECT["version"] for i in ours), ours


def test_the_cluster_launcher_and_the_tracking_services_are_complete():
    launcher = yaml.safe_load((INFRA / "cluster-launcher" / "aws-gpu.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert {"cluster_name", "provider", "head_start_ray_commands", "worker_start_ray_commands"} <= set(launcher)
    assert "RAY_AUTH_MODE=token" in " ".join(launcher["docker"]["run_options"])
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())
    assert {"postgres", "minio", "mlflow"} <= set(compose["services"])
    for command in (compose["services"]["mlflow"]["command"],
                    next(d for _, d in _kind("Deployment"))["spec"]["template"]["spec"]["containers"][0]["args"][0]):
        assert "--backend-store-uri" in command and "postgresql://" in command
        assert "--artifacts-destination s3://" in command
    for _, d in _kind("Deployment") + _kind("StatefulSet"):  # every workload's selector picks its own pods
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    workloads = [d["spec"]["template"]["metadata"]["labels"] for _, d in _kind("Deployment") + _kind("StatefulSet")]
    for _, svc in _kind("Service"):
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in workloads), svc
