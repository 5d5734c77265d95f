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
from ray._private import ray_constants
from ray._private.node import Node

init_ray("", dashboard=sys.argv[1] == "dashboard")
processes = ray._private.worker._global_node.all_processes
print(ray_constants.PROCESS_TYPE_DASHBOARD in processes, ray.get(ray.remote(lambda: 6 * 7).remote()),
      Node.start_api_server.__module__)
stop_ray()
"""


def test_a_local_ray_starts_its_api_server_only_with_the_dashboard(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for mode, expected in (("plain", "False 42 ray._private.node"), ("dashboard", "True 42 ray._private.node")):
        out = subprocess.run([sys.executable, "-c", LOCAL_RAY, mode], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split("\n")[-2] == expected, out.stdout  # Ray's own method is back afterwards
