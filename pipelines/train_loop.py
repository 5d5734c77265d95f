"""The training loop each Ray Train worker runs: gan_core's Game under DDP, checkpoints, MLflow.

G and D are separate DDP modules. D is frozen during the G update (gan_core.Game), so DDP
all-reduces D's gradients only in D's own updates: k * |theta_D| + |theta_G| elements per
iteration, counted by a communication hook and reported as `allreduced_elements`.
D keeps per-rank BatchNorm statistics (broadcast_buffers=False): D always runs in training
mode, where BatchNorm uses the batch's own statistics, so D's running statistics are never read;
broadcasting them at each of D's 2k + 1 forwards per iteration would be traffic for nothing.
G's buffers are broadcast from rank 0 (broadcast_buffers=True) so that every rank samples alike.
"""
import math
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from gan_core import Game, ModelSpec, adam_pair, build_models, unwrap
from gan_core.data import load_dataset
from gan_core.data.stream import BatchStream
from gan_core.metrics import TrainingProbe, load_or_train
from gan_core.theory import equilibrium_gap
from gan_core.visual import sample_grid

from . import checkpoints, tracking
from .config import Config


def model_spec(cfg: Config, image_shape: tuple, num_classes: int) -> ModelSpec:
    m = cfg.model
    return ModelSpec(arch=m.arch, z_dim=m.z_dim, image_shape=tuple(image_shape),
                     num_classes=num_classes if m.conditional else None, g_width=m.g_width, d_width=m.d_width,
                     depth=m.depth, embed_dim=m.embed_dim, d_conditioning=m.d_conditioning)


def checkpoint_meta(spec: ModelSpec, data, train, run_id: str) -> dict:
    """What a checkpoint carries besides weights, for evaluation, registry and generation."""
    import dataclasses

    return {"spec": dataclasses.asdict(spec), "class_names": list(train.class_names),
            "label_prior": train.label_prior().tolist(), "data_fingerprint": data.fingerprint,
            "train_fingerprint": train.fingerprint, "data_source": data.name, "run_id": run_id}


def load_data(cfg: Config):
    d = cfg.data
    return load_dataset(d.source, d.image_size, d.channels, d.mixed_sizes, d.class_names, d.root)


class AllReduceCounter:
    """DDP communication hook state: counts the gradient elements all-reduced."""

    def __init__(self):
        self.elements = 0

    @staticmethod
    def hook(state: "AllReduceCounter", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        state.elements += bucket.buffer().numel()
        return default_hooks.allreduce_hook(None, bucket)


def replica_digests(game: Game, world: int) -> list[dict[str, str]]:
    """sha256 of G's parameters and buffers and of D's parameters on every rank, gathered.

    Equal digests prove the DDP replicas stayed in sync. D's buffers (BatchNorm running
    statistics) are per rank by design and left out.
    """
    import hashlib

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


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces device tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def restore(game: Game, cfg: Config, run_dir: str | None, rank: int, world: int) -> int:
    """Load the newest checkpoint, Ray's or a newer complete one on disk; returns its iteration (0 if none)."""
    import ray.train

    found = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            found = (checkpoints.load_state(folder), checkpoints.load_rng(folder, rank))
    on_disk = checkpoints.latest_loadable(run_dir, world) if run_dir else None
    if on_disk is not None and (found is None or on_disk[1]["iteration"] > found[0]["iteration"]):
        found = (on_disk[1], checkpoints.load_rng(on_disk[0], rank))
    if found is None:
        return 0
    state, rng = found
    game.load_state_dict(state)
    if rng is not None:
        checkpoints.set_rng_state(rng)
    t = cfg.train  # moments come from the checkpoint; learning rates and betas from the config in force
    for opt, lr in ((game.opt_g, t.lr_g), (game.opt_d, t.lr_d)):
        for group in opt.param_groups:
            group.update(lr=lr, betas=(t.beta1, t.beta2))
    return int(state["iteration"])


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every worker. Returns {"status": "finished" | "nan", "iteration": i}."""
    import ray.train

    cfg = Config.model_validate(loop_config["config"])
    uri, run_id, progress = loop_config["tracking_uri"], loop_config["run_id"], loop_config.get("progress")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.ray.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)

    data = load_data(cfg)
    train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
    x_all, y_all = train.tensors()
    spec = model_spec(cfg, train.image_shape, train.num_classes)
    G, D = build_models(spec)
    meta = checkpoint_meta(spec, data, train, run_id)
    G, D = G.to(device), D.to(device)
    t = cfg.train
    opt_g, opt_d = adam_pair(G, D, t.lr_g, t.lr_d, (t.beta1, t.beta2))
    game = Game(G, D, opt_g, opt_d, k=t.k, g_loss=t.g_loss, label_prior=train.label_prior(), ema_beta=t.ema_beta)

    start = restore(game, cfg, loop_config.get("run_dir"), rank, world)

    counter = AllReduceCounter()
    if world > 1:
        game.G = DDP(G, broadcast_buffers=True)
        game.D = DDP(D, broadcast_buffers=False)
        game.G.register_comm_hook(counter, AllReduceCounter.hook)
        game.D.register_comm_hook(counter, AllReduceCounter.hook)

    stream = BatchStream(x_all, y_all, t.batch_size, world, rank, cfg.seed, start_batch=start * t.k, device=device)
    total = t.iterations or max(1, t.epochs * stream.batches_per_epoch // t.k)
    probe = None
    if rank == 0:
        tracking.log_metrics(uri, run_id, {"resumed_from": start}, step=start)
        if cfg.eval.during_training:
            net, _ = load_or_train(train, holdout, cfg.eval.cache_dir, cfg.eval.classifier_epochs, cfg.seed)
            probe = TrainingProbe(net, holdout, t.eval_samples,
                                  train.label_prior() if spec.num_classes else None, cfg.seed)
    window: list[dict[str, float]] = []
    window_start = time.perf_counter()
    counted_since = counter.elements
    epoch_seen = stream.epoch
    for it in range(start, total):
        stats = game.step(stream).as_dict()
        step = it + 1
        if _any_rank(not all(math.isfinite(v) for v in stats.values()), world, device):
            bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
            if rank == 0:
                tracking.log_metrics(uri, run_id, {"nan_at_iteration": step}, step=step)
            return {"status": "nan", "iteration": step, "values": bad}
        window.append(stats)
        metrics = None
        ckpt_now = step % t.checkpoint_every == 0 or step == total
        eval_now = step % t.eval_every == 0 or ckpt_now
        if step % t.log_every == 0 or eval_now:
            metrics = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            metrics["value_gap"] = abs(equilibrium_gap(metrics["value"]))
            metrics["allreduced_elements"] = (counter.elements - counted_since) / len(window)
            now = time.perf_counter()
            metrics.update(iteration=step, epoch=stream.epoch, images_seen=step * t.k * t.batch_size * world,
                           images_per_second=len(window) * t.k * t.batch_size * world / (now - window_start))
            window, counted_since, window_start = [], counter.elements, now
            if probe is not None and eval_now:
                metrics.update(probe(game.ema.model if game.ema else game.G))
            if rank == 0:
                tracking.log_metrics(uri, run_id, metrics, step=step)
                if progress is not None:
                    progress.put_nowait({"iteration": step, "total": total, **metrics})
        if rank == 0 and (stream.epoch != epoch_seen or step == total):
            grid = sample_grid(game.ema.model if game.ema else game.G, seed=cfg.seed)
            tracking.log_image(uri, run_id, grid, f"samples/iter_{step:06d}.png")
        epoch_seen = stream.epoch
        if ckpt_now:
            with tempfile.TemporaryDirectory() as folder:
                checkpoints.save(folder, game.state_dict(), step, cfg.model_dump(mode="json"), rank, meta)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                                 checkpoint_dir_name=f"checkpoint_{step:08d}")
        elif eval_now:  # every rank reports at the same steps (a mismatch would hang the run)
            ray.train.report(metrics)
    if world > 1:  # G's BatchNorm statistics moved locally in the last forward; align them with rank 0
        for b in unwrap(game.G).buffers():
            dist.broadcast(b, src=0)
    digests = replica_digests(game, world)
    return {"status": "finished", "iteration": total, "replica_digests": digests,
            "replicas_identical": all(d == digests[0] for d in digests)}
