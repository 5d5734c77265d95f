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
