"""What each training rank runs: the loop's rules (`loop.run_loop`) wired to DDP, MLflow, and a
session for reports and checkpoints (`TrainSession` in a Ray Train worker; a one-worker sweep trial
brings its own, stages/tune/trial.py).

G and D are separate DDP modules. D is frozen during the G update (gan_core.Game), so DDP
all-reduces D's gradients only in D's own updates: k * |theta_D| + |theta_G| elements per
iteration, counted by a communication hook and reported as `allreduced_elements`.
D keeps per-rank BatchNorm statistics (broadcast_buffers=False): D always runs in training
mode, where BatchNorm uses the batch's own statistics, so D's running statistics are never read;
broadcasting them at each of D's 2k + 1 forwards per iteration would be traffic for nothing.
G's buffers are broadcast from rank 0 (broadcast_buffers=True) so that every rank samples alike.
"""

import hashlib
import json
import tempfile
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from gan_core import Game, ModelSpec, unwrap
from gan_core.data.stream import BatchStream
from gan_core.metrics import TrainingProbe
from gan_core.visual import sample_grid

from ...config import Config
from ...config.build import build_game, feature_net, load_data
from ...config.plan import plan_run
from ...services import checkpoints, contract, tracking
from .loop import RunEnd, StopRule, run_loop, set_learning_rates


@dataclass(frozen=True)
class WorkerTask:
    """What every rank's `run_worker` gets: the config (as JSON: it crosses Ray as plain data), where to
    log, where the run's checkpoints live, rank 0's progress queue, the streamed data's sample and
    shards, and a sweep trial's deadline (time.time() at the sweep's end: the run ends at its last
    evaluation before). Ray Train hands it over as a dict (`to_dict`)."""
    config: dict
    tracking_uri: str
    run_id: str
    run_dir: str
    progress: Any = None
    streamed: dict | None = None
    deadline: float | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # the queue is not copied

    @classmethod
    def from_dict(cls, d: dict) -> "WorkerTask":
        return cls(**d)


def checkpoint_meta(spec: ModelSpec, data, train, run_id: str | None) -> checkpoints.CheckpointMeta:
    """What a checkpoint carries besides weights, for evaluation, registry and generation."""
    return checkpoints.CheckpointMeta(spec, tuple(train.class_names), tuple(train.label_prior().tolist()),
                                      data.fingerprint, train.fingerprint, data.name, run_id)


class AllReduceCounter:
    """DDP communication hook state: counts the gradient elements all-reduced."""

    def __init__(self):
        self.elements = 0

    @staticmethod
    def hook(state: "AllReduceCounter", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        state.elements += bucket.buffer().numel()
        return default_hooks.allreduce_hook(None, bucket)


def wrap_ddp(game: Game, counter: AllReduceCounter | None = None) -> None:
    """G and D as DDP modules (the module docstring says why their buffers are treated apart); with a
    `counter`, every all-reduced gradient element is counted."""
    game.G = DDP(game.G, broadcast_buffers=True)
    game.D = DDP(game.D, broadcast_buffers=False)
    if counter is not None:
        game.G.register_comm_hook(counter, AllReduceCounter.hook)
        game.D.register_comm_hook(counter, AllReduceCounter.hook)


def replica_digests(game: Game, world: int) -> list[dict[str, str]]:
    """sha256 of G's parameters and buffers and of D's parameters on every rank, gathered.

    Equal digests prove the DDP replicas stayed in sync. D's buffers (BatchNorm running
    statistics) are per rank by design and left out.
    """
    def digest(tensors) -> str:
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    g, d = unwrap(game.G), unwrap(game.D)
    mine = {"G": digest(list(g.parameters()) + list(g.buffers())), "D": digest(d.parameters())}
    if world == 1:
        return [mine]
    out: list = [None] * world
    dist.all_gather_object(out, mine)
    return out


class TrainSession:
    """A Ray Train worker's side of the run: its rank, the checkpoint Ray hands it, its reports."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    @staticmethod
    def device(use_gpu: bool) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device() if use_gpu else torch.device("cpu")

    @staticmethod
    def checkpoint():
        import ray.train

        return ray.train.get_checkpoint()

    @staticmethod
    def report(metrics: dict, folder: str | None, step: int) -> None:
        import ray.train

        if folder is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=checkpoints.folder_name(step))


class DirSession:
    """Rank 0 of 1 outside Ray Train (a one-worker run's Ray task, a sweep's one-worker trial):
    checkpoints persisted to the run directory and pruned as Ray Train's CheckpointConfig would (the
    newest and the `keep` best), each report handed to `tell` (Tune's, for a trial) when given."""

    rank, world = 0, 1

    def __init__(self, run_dir: str, keep: int | None, score: tuple[str, str], tell=None):
        self.run_dir, self.keep, self.score, self.tell = run_dir, keep, score, tell
        self.last: dict = {}

    @staticmethod
    def device(use_gpu: bool) -> torch.device:
        return torch.device("cuda") if use_gpu else torch.device("cpu")

    @staticmethod
    def checkpoint():
        return None  # `restore` finds the newest complete checkpoint in the run directory

    def report(self, metrics: dict, folder: str | None, step: int) -> None:
        if folder is not None:  # on disk before anyone hears of it: a stop decided on this report keeps it
            checkpoints.persist(folder, self.run_dir, step, metrics)
            checkpoints.prune(self.run_dir, self.keep, *self.score)
        self.last = metrics
        if self.tell is not None:
            self.tell(metrics)


def restore(game: Game, cfg: Config, run_dir: str | None, rank: int, world: int,
            session) -> tuple[int, float, float]:
    """Load the newest undamaged checkpoint, the session's or a newer complete one on disk; returns its
    (iteration, training seconds, wall seconds), (0, 0.0, 0.0) when there is none."""
    found = None
    ckpt = session.checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            if not checkpoints.problems(folder, world):
                found = (checkpoints.load_state(folder), checkpoints.load_rng(folder, rank))
    on_disk = checkpoints.latest_loadable(run_dir, world) if run_dir else None
    if on_disk is not None and (found is None or on_disk[1]["iteration"] > found[0]["iteration"]):
        found = (on_disk[1], checkpoints.load_rng(on_disk[0], rank))
    if found is None:
        return 0, 0.0, 0.0
    state, rng = found
    game.load_state_dict(state)
    if rng is not None:
        checkpoints.set_rng_state(rng)
    set_learning_rates(game, cfg.train)  # moments come from the checkpoint; rates and betas from the config
    return int(state["iteration"]), float(state.get("train_seconds", 0.0)), float(state.get("wall_seconds", 0.0))


class RayHooks:
    """The loop's hooks on a rank: collective checks, MLflow, reports and checkpoints through the session."""

    def __init__(self, cfg: Config, uri: str, run_id: str, session, device, counter, probe, progress, plan,
                 meta: checkpoints.CheckpointMeta):
        self.cfg, self.uri, self.run_id, self.session = cfg, uri, run_id, session
        self.rank, self.world = session.rank, session.world
        self.device, self.counter, self._probe, self.progress, self.plan, self.meta = \
            device, counter, probe, progress, plan, meta

    def any_rank(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)  # NCCL reduces device tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max_over_ranks(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def allreduced_elements(self) -> int:
        return self.counter.elements

    def probe(self, game: Game) -> dict:
        return self._probe(game.ema.model if game.ema else game.G) if self._probe is not None else {}

    def log_metrics(self, metrics: dict, step: int) -> None:
        tracking.log_metrics(self.uri, self.run_id, metrics, step=step)
        if self.progress is not None:
            self.progress.put_nowait({"iteration": step, "total": self.plan.iterations, **metrics})

    def log_grid(self, game: Game, step: int) -> None:
        grid = sample_grid(game.ema.model if game.ema else game.G, seed=self.cfg.seed)
        tracking.log_image(self.uri, self.run_id, grid, f"{contract.SAMPLES_DIR}/iter_{step:06d}.png")

    def report(self, metrics: dict, step: int, checkpoint_state: dict | None) -> None:
        if checkpoint_state is None:
            self.session.report(metrics, None, step)
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoints.save(folder, checkpoint_state, step, self.cfg.model_dump(mode="json"), self.rank, self.meta)
            self.session.report(metrics, folder, step)


def train_loop_per_worker(task: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker. Returns its RunEnd as a dict (RunEnd.to_dict)."""
    return run_worker(WorkerTask.from_dict(task), TrainSession())


def run_worker(task: WorkerTask, session) -> dict[str, Any]:
    """One rank's training: data, game, restore, the loop, its hooks. `session` is where the rank comes
    from and where reports and checkpoints go (Ray Train's, or a one-worker trial's own)."""
    import ray

    cfg = Config.model_validate(task.config)
    uri, run_id = task.tracking_uri, task.run_id
    rank, world = session.rank, session.world
    device = session.device(cfg.ray.use_gpu)
    if not cfg.ray.use_gpu:  # the CPUs reserved for this worker are its threads
        torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)

    streamed = task.streamed
    data = streamed["sample"] if streamed else load_data(cfg)  # streamed: the sample the driver read
    plan = plan_run(cfg, data, world)
    train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
    game, spec = build_game(cfg, train, device)
    meta = checkpoint_meta(spec, data, train, run_id)
    start, seconds, wall = restore(game, cfg, task.run_dir, rank, world, session)

    counter = AllReduceCounter()
    if world > 1:
        wrap_ddp(game, counter)

    t = cfg.train
    if streamed:  # this worker's own files, through Ray Data
        from .stream import worker_stream

        stream = worker_stream(cfg, rank, streamed["rows"][rank], start * t.k, device)
    else:
        stream = BatchStream(*train.tensors(), t.batch_size, world, rank, cfg.seed, start_batch=start * t.k,
                             device=device)
    probe = None
    if rank == 0:
        tracking.log_metrics(uri, run_id, {contract.RESUMED_FROM: start}, step=start)
        if cfg.eval.during_training:
            net = feature_net(cfg, train, holdout)
            probe = TrainingProbe(net, holdout, t.eval_samples,
                                  train.label_prior() if spec.num_classes else None, cfg.seed)
    hooks = RayHooks(cfg, uri, run_id, session, device, counter, probe, task.progress, plan, meta)
    if rank == 0 and task.progress is not None:  # the bar starts now, at the run's first iteration
        task.progress.put_nowait({"iteration": start, "total": plan.iterations})
    node = ray.get_runtime_context().get_node_id()
    nodes = [node] * world
    if world > 1:
        dist.all_gather_object(nodes, node)
    if rank == 0:
        client = tracking.client(uri)
        client.set_tag(run_id, contract.NODES, json.dumps(nodes))
        client.set_tag(run_id, contract.PRECISION, game.precision)
    stop = StopRule.from_config(t, cfg.tune.metric, cfg.eval.during_training, task.deadline)
    result = run_loop(game, stream, plan, t, hooks, start, seconds, evaluate=cfg.eval.during_training, stop=stop,
                      wall_seconds=wall)
    if result.status == "stopped" and rank == 0:  # only rank 0 saw the metric that ended the run
        client = tracking.client(uri)
        client.set_tag(run_id, contract.STOP_REASON, contract.tag_value(result.reason))
        client.set_tag(run_id, contract.STOP_KIND, result.stop.kind)
    if result.status == "nan":
        if rank == 0:
            tracking.log_metrics(uri, run_id, {contract.NAN_AT: result.iteration}, step=result.iteration)
        return RunEnd("nan", result.iteration, values=result.values).to_dict()
    if world > 1:  # G's BatchNorm statistics moved locally in the last forward; align them with rank 0
        for b in unwrap(game.G).buffers():
            dist.broadcast(b, src=0)
    if streamed:  # which files this worker read, and how many rows of each
        shard = json.dumps(stream.files)
        if len(shard) > 5000:  # many files (an image folder): their count and rows instead
            shard = json.dumps({"files": len(stream.files), "rows": sum(stream.files.values())})
        tracking.client(uri).set_tag(run_id, f"{contract.STREAM_SHARD}.{rank}", shard)
    digests = replica_digests(game, world)
    return RunEnd(result.status, result.iteration, result.stop, replica_digests=tuple(digests)).to_dict()
