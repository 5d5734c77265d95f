"""Ray runtime: start a fresh local Ray or join a cluster (with a timeout), quietly; size the worker
group; refuse what cannot fit."""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys

from ..config import Config
from ..errors import UserError


class PlacementError(UserError):
    """The requested workers cannot be placed on the cluster."""


class ClusterUnreachable(UserError):
    """A Ray cluster address that does not answer."""


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_address(address: str, timeout_s: float) -> str:
    """The address to join, after checking that something answers there within `timeout_s`.

    `auto` is resolved the way Ray resolves it (RAY_ADDRESS, then the last `ray start` on this
    machine); an address that does not answer is one clear error naming it."""
    resolved = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            resolved = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise ClusterUnreachable("ray.address='auto': no running Ray cluster found on this machine "
                                     "(start one with `ray start --head`, or leave ray.address empty "
                                     "for a local Ray)") from None
    hp = _host_port(resolved)
    if hp is None:
        raise ClusterUnreachable(f"ray.address={address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    import socket

    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except OSError as e:
        raise ClusterUnreachable(f"Ray cluster at {resolved} does not answer within {timeout_s:g}s "
                                 f"({e.__class__.__name__}); check ray.address") from None
    return resolved


LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


POOL_WARNING = "worker processes have been started"


def quiet_worker_pool_warning() -> None:
    """Keep the raylet's "N PYTHON worker processes have been started ..." warning off the terminal.

    Ray prints it on the driver's stdout (through its error channel, whatever `log_to_driver` says)
    whenever many worker processes start at once, as a sweep's trials make them do; it is about
    Ray's own process pool, not the user's run. It goes to the `ray` logger at debug level instead;
    with -v it is printed as Ray prints it. Every other message on that channel is printed."""
    import ray._private.worker as ray_worker

    printer = ray_worker.print_to_stdstream
    if getattr(printer, "keeps_pool_warning_off", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool):
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and any(POOL_WARNING in str(line) for line in lines):
            logging.getLogger("ray").debug("%s", " ".join(map(str, lines)))
            return
        printer(data, ignore_prefix)

    print_to_stdstream.keeps_pool_warning_off = True
    ray_worker.print_to_stdstream = print_to_stdstream


def requested_address(address: str) -> str:
    """The cluster a run asks for: `ray.address`, else an exported RAY_ADDRESS; empty means a fresh
    local Ray."""
    return address or os.environ.get("RAY_ADDRESS", "")


def init_ray(address: str, verbose: bool = False, connect_timeout_s: float = 15.0, dashboard: bool = False) -> None:
    """Join the cluster at `address` or, when it is empty, start a fresh local Ray (never a stale
    cluster found on disk; RAY_ADDRESS, when exported, counts as an address). Ray's own logs stay
    out of the default output.

    A local Ray starts its dashboard only when asked (`dashboard`, for sweeps): it serves the state
    API, which Ray Train uses to release the resources of a run whose driver died (a trial stopped
    by Tune's scheduler), and costs about a third of a core while it runs. Without it, a local Ray
    starts only the processes a local run uses (`_lean_local_node`)."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if not verbose:
        os.environ.setdefault("RAY_TQDM", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        quiet_worker_pool_warning()
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    kwargs = dict(logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
                  include_dashboard=dashboard, configure_logging=True)
    if dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    address = requested_address(address)
    resolved = check_address(address, connect_timeout_s) if address else "local"
    if ray.is_initialized():  # a workflow's earlier stage (or a test session) already started it
        return
    if resolved == "local":
        # Processes of a local Ray inherit this environment. Ray Train's controller polls its
        # workers every 2 s by default, and each run starts a preemption watcher meant for cloud
        # nodes: polling at 0.25 s and no watcher take about 4 s off every local training run
        # (BENCHMARKS.md, start-up).
        for key, value in LOCAL_TRAIN_ENV.items():
            os.environ.setdefault(key, value)
    if resolved == "local" and not dashboard:
        with _lean_local_node(logs_to_driver=kwargs["log_to_driver"]):
            ray.init(address=resolved, **kwargs)
    else:
        ray.init(address=resolved, **kwargs)


@contextlib.contextmanager
def _lean_local_node(logs_to_driver: bool):
    """A local Ray started with the processes a local run uses, not the three that serve nothing here
    (BENCHMARKS.md, "A lean local Ray"):
    - Ray's API server process: without the dashboard Ray still starts it, with its usage-statistics
      module alone, and waits for it to publish its address before it starts the raylet. Nothing a
      local run uses is served there (the state API and the jobs API are dashboard modules).
    - The autoscaler's monitor: one machine has no nodes to add or remove.
    - The log monitor, unless `logs_to_driver`: it sends the workers' log lines to the driver, which
      prints them only with -v.
    Ray's own methods are back afterwards."""
    from ray._private.node import Node

    kept = {name: getattr(Node, name) for name in ("start_api_server", "start_monitor", "start_log_monitor")}

    def start_api_server(self, *, include_dashboard, raise_on_failure):
        self._webui_url = None

    Node.start_api_server = start_api_server
    Node.start_monitor = lambda self: None
    if not logs_to_driver:
        Node.start_log_monitor = lambda self: None
    try:
        yield
    finally:
        for name, method in kept.items():
            setattr(Node, name, method)


def stop_ray(logs_to_driver: bool = False) -> None:
    """Shut down the Ray this process started or joined, at once, where Ray's exit handler first
    sleeps half a second for worker logs still on their way to the terminal (kept when
    `logs_to_driver`: with -v they are printed), then gives each process of a local Ray a second to
    exit on SIGTERM, which the autoscaler's monitor never does (Ray then kills it): here the monitor (a
    local Ray has one only with the dashboard, `_lean_local_node`) is killed first (BENCHMARKS.md, "The
    command's end"). Nothing when Ray is not running."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    from ray._private import ray_constants

    node = getattr(sys.modules.get("ray._private.worker"), "_global_node", None)
    for info in (getattr(node, "all_processes", None) or {}).get(ray_constants.PROCESS_TYPE_MONITOR, []):
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:  # Ray's own shutdown reports a process that stays
                pass
    if not logs_to_driver:
        ray.shutdown()


def worker_resources(cfg: Config) -> dict[str, float]:
    res = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        res["GPU"] = cfg.ray.gpus_per_worker
    return res


def resolve_num_workers(cfg: Config) -> int:
    """The configured count, or as many workers as the cluster's CPUs (and GPUs) hold."""
    import ray

    if cfg.ray.num_workers:
        return cfg.ray.num_workers
    total = ray.cluster_resources()
    fit = [int(total.get(k, 0) // v) for k, v in worker_resources(cfg).items() if v > 0]
    return max(1, min(fit) if fit else 1)


def check_fits(cfg: Config, num_workers: int) -> None:
    """A clear error instead of a run that waits forever for resources that do not exist."""
    import ray

    total = ray.cluster_resources()
    for key, per in worker_resources(cfg).items():
        need, have = per * num_workers, total.get(key, 0.0)
        if need > have:
            raise PlacementError(
                f"{num_workers} workers x {per:g} {key} = {need:g} {key}, but the Ray cluster has {have:g} "
                f"{key}; lower ray.num_workers or ray.cpus_per_worker, or add nodes")
