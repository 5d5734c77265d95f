"""A one-task run's start: its task starts in the process that imported its modules beforehand."""


def test_the_run_task_starts_in_the_process_the_warming_task_prepared(ray_local):
    from pipelines.stages.train.driver import start_warming

    def job() -> tuple[int, bool]:
        import os
        import sys

        return os.getpid(), "torch" in sys.modules and "mlflow" in sys.modules

    ray = ray_local
    remote = ray.remote(job).options(num_cpus=2)  # as a one-task run asks: the worker's CPUs
    for _ in range(3):
        warmed = start_warming()
        ray.wait([warmed])  # as fit_one_task does before it submits
        assert ray.get(remote.remote()) == (ray.get(warmed), True)


LOCAL_RAY = """
import sys
from pipelines.services.runtime import init_ray, stop_ray
import ray
from ray._private import ray_constants as rc
from ray._private.node import Node

init_ray("", verbose=sys.argv[1] == "verbose", dashboard=sys.argv[1] == "dashboard")
processes = ray._private.worker._global_node.all_processes
started = [kind for kind in (rc.PROCESS_TYPE_DASHBOARD, rc.PROCESS_TYPE_MONITOR, rc.PROCESS_TYPE_LOG_MONITOR)
           if kind in processes]
methods = {Node.start_api_server.__module__, Node.start_monitor.__module__, Node.start_log_monitor.__module__}
print(",".join(started), ray.get(ray.remote(lambda: 6 * 7).remote()), *methods)
stop_ray()
"""


def test_a_local_ray_starts_only_the_processes_a_local_run_uses(tmp_path):
    """Without the dashboard a local Ray has no API server process and no autoscaler monitor, and a log
    monitor only when the workers' logs go to the driver (-v); a sweep's dashboard brings all three."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for mode, started in (("plain", ""), ("verbose", "log_monitor"),
                          ("dashboard", "dashboard,monitor,log_monitor")):
        out = subprocess.run([sys.executable, "-c", LOCAL_RAY, mode], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        # a task runs, and Ray's own methods are back afterwards
        assert out.stdout.split("\n")[-2] == f"{started} 42 ray._private.node", out.stdout


def test_a_run_imports_its_callers_next_modules_once_it_trains(tmp_path, ray_local, monkeypatch, feature_cache):
    """`later_imports` are imported in the driver after the worker's first progress message (once the
    run trains, not while the driver still prepares it) and before `run_training` returns; a
    `module:function` entry is called there too, and one that fails does not fail the run."""
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from pipelines.config import load_config
    from pipelines.services import contract
    from pipelines.stages.train import run_training

    (tmp_path / "next_stage_module.py").write_text(
        "import time\nIMPORTED_AT = time.time()\nCALLED_AT = []\n\n\n"
        "def ahead():\n    CALLED_AT.append(time.time())\n\n\n"
        "def broken():\n    raise RuntimeError('not done ahead')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "next_stage_module", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, ["model.g_width=8", "model.d_width=8", "train.iterations=6", "train.log_every=3",
                             "train.checkpoint_every=6", "train.batch_size=16", "ray.num_workers=1",
                             f"eval.cache_dir={feature_cache}", f"ray.storage_path={tmp_path / 'runs'}",
                             f"mlflow.tracking_uri={uri}"])
    out = run_training(cfg, quiet=True, later_imports=("next_stage_module", "next_stage_module:broken",
                                                           "next_stage_module:ahead"))
    returned = time.time()
    assert "next_stage_module" in sys.modules
    imported = sys.modules["next_stage_module"].IMPORTED_AT
    # The worker logs where it starts just before its first progress message.
    started = MlflowClient(uri).get_metric_history(out.run_id, contract.RESUMED_FROM)[0].timestamp / 1000
    assert started <= imported <= returned, (started, imported, returned)
    called = sys.modules["next_stage_module"].CALLED_AT
    assert len(called) == 1 and imported <= called[0] <= returned, (imported, called, returned)
