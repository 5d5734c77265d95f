"""The layout of a local CPU training run: how one global batch is split over DDP workers and threads.

On one CPU machine, N workers with one thread each and one worker with N threads play the same game
on the same global batch; which is faster depends on the machine and the model (gloo's all-reduce
between processes against intra-op threads in one). With `ray.layout: auto` (the default), a local run
on CPUs with `ray.num_workers` unset times the training step of every split of the per-CPU layout's
global batch (N x 1, ..., 1 x N) for a few seconds, each in its own fresh processes (started together,
kept for both rounds) and twice, alternating,
and trains with the fastest (several workers only when 10% faster than one). The answer is cached
by machine, torch version and model, so only the first run pays for it. A resumed run keeps the
layout its checkpoints were written with.
"""
from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

from ...config import Config
from ...config.build import game_options, model_spec, precision
from ...services import checkpoints, names
from ...services.runtime import requested_address

WARMUP_STEPS = 10
REWARM_STEPS = 3
PROBE_STEPS = 30
ROUNDS = 2  # each layout timed this many times, alternating; its best counts (other work on the
            # machine, Ray's own start among it, only ever slows a round down)
# A layout of several workers is taken only when the probe measures it this much faster than the best
# single-worker one. The probe runs without Ray's processes beside it; in a training run they take
# turns on the same CPUs, and workers that wait for each other at every all-reduce lose more to that
# than one worker's threads do (2 cores, width 32: two one-thread workers measured 0.94x of one
# two-thread worker in the probe, 0.78-0.89x inside TorchTrainer; BENCHMARKS.md).
SEVERAL_WORKERS_MARGIN = 1.10


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int
    batch: int  # per worker

    def describe(self) -> str:
        return (f"{self.workers} worker{'s' if self.workers > 1 else ''} x {self.threads} "
                f"thread{'s' if self.threads > 1 else ''}, batch {self.batch} per worker")


def applies(cfg: Config) -> bool:
    """Whether `ray.layout: auto` chooses this run's layout: a local Ray, CPUs only, workers unset, whole
    CPUs per worker (a fraction means workers share CPUs on purpose)."""
    return (cfg.ray.layout == "auto" and not cfg.ray.num_workers and not cfg.ray.use_gpu
            and float(cfg.ray.cpus_per_worker).is_integer()
            and not requested_address(cfg.ray.address))


def candidates(cfg: Config, fit: int) -> list[Layout]:
    """Every split of the per-CPU layout's global batch (`fit` workers x train.batch_size) over
    workers that divide `fit`, the threads making up the same CPUs; the per-CPU layout first."""
    threads = max(1, int(cfg.ray.cpus_per_worker))
    total = fit * cfg.train.batch_size
    return [Layout(w, threads * fit // w, total // w) for w in range(fit, 0, -1) if fit % w == 0]


def with_layout(cfg: Config, layout: Layout) -> Config:
    return cfg.model_copy(update={
        "ray": cfg.ray.model_copy(update={"num_workers": layout.workers, "cpus_per_worker": float(layout.threads)}),
        "train": cfg.train.model_copy(update={"batch_size": layout.batch})})


def cache_key(cfg: Config, data, options: list[Layout]) -> str:
    """What the step's speed depends on: the machine, torch, the model and every option of the step
    (the Game's options as `build_game` passes them)."""
    import torch

    spec = model_spec(cfg, data.image_shape, data.num_classes)
    return json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "spec": asdict(spec), "game": asdict(game_options(cfg)),
                       "options": [asdict(o) for o in options]}, sort_keys=True, default=str)


def steady_rate(game, stream, cfg: Config, steps: int, warmup: int) -> float:
    """Real images/second of `game.step` on this rank over `steps` iterations after `warmup` more."""
    for _ in range(warmup):
        game.step(stream)
    start = time.perf_counter()
    for _ in range(steps):
        game.step(stream)
    return steps * cfg.train.k * cfg.train.batch_size / (time.perf_counter() - start)


def _probe_rank(rank: int, cfg_json: str, shape: dict, layout: dict, port: int, commands, out) -> None:
    """One rank of a layout's probe: the run's Game on random images of the data's shape, set up once
    (then "ready" on `out`), and timed at each command until None comes: after `WARMUP_STEPS` the
    first time, `REWARM_STEPS` later (its caches went cold while the other layouts ran)."""
    import torch
    import torch.distributed as dist

    from gan_core.data.stream import BatchStream

    from ...config.build import build_game
    from .worker import wrap_ddp

    warnings.simplefilter("ignore")  # DDP's notes on gradient strides: the probe's output is its rate alone
    lay = Layout(**layout)
    torch.set_num_threads(lay.threads)
    torch.manual_seed(rank)
    cfg = with_layout(Config.model_validate_json(cfg_json), lay)
    prior = torch.tensor(shape["label_prior"]) if shape["label_prior"] else None
    train = SimpleNamespace(image_shape=tuple(shape["image_shape"]), num_classes=shape["num_classes"],
                            label_prior=lambda: prior)
    game, _ = build_game(cfg, train)
    n = lay.batch * lay.workers * 4
    x = torch.rand(n, *train.image_shape) * 2 - 1
    y = torch.randint(0, max(1, train.num_classes), (n,))
    stream = BatchStream(x, y, lay.batch, lay.workers, rank, seed=0)
    if lay.workers > 1:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=lay.workers)
        wrap_ddp(game)
    out.put("ready")
    warmup = WARMUP_STEPS
    while commands.get() is not None:
        out.put(steady_rate(game, stream, cfg, PROBE_STEPS, warmup))
        warmup = REWARM_STEPS
    if lay.workers > 1:
        dist.destroy_process_group()


class Probes:
    """Every layout's probe processes, started together (their imports and set-up overlap) and kept
    for all rounds, so that each is paid once per layout instead of once per measurement; `rate`
    times one layout while the others wait."""

    def __init__(self, cfg: Config, data, options: list[Layout]):
        import socket

        import torch.multiprocessing as mp

        prior = data.label_prior().tolist() if data.num_classes else None
        shape = {"image_shape": list(data.image_shape), "num_classes": data.num_classes, "label_prior": prior}
        ctx = mp.get_context("spawn")
        self.ranks: dict[Layout, tuple[list, object]] = {}
        self.procs = []
        for option in options:
            with socket.socket() as s:  # a free port for this layout's own process group
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            out, commands = ctx.Queue(), [ctx.Queue() for _ in range(option.workers)]
            self.ranks[option] = (commands, out)
            for r in range(option.workers):
                self.procs.append(ctx.Process(target=_probe_rank, daemon=True, args=(
                    r, cfg.model_dump_json(), shape, asdict(option), port, commands[r], out)))
        for p in self.procs:
            p.start()
        for option, (commands, out) in self.ranks.items():
            for _ in commands:
                if out.get(timeout=300) != "ready":
                    raise RuntimeError(f"the layout probe of {option.describe()} did not start")

    def rate(self, option: Layout) -> float:
        """Images/second of the training step in `option`, summed over its ranks."""
        commands, out = self.ranks[option]
        for c in commands:
            c.put(True)
        return sum(out.get(timeout=300) for _ in commands)

    def __enter__(self) -> "Probes":
        return self

    def __exit__(self, *exc) -> None:
        for commands, _ in self.ranks.values():
            for c in commands:
                c.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def resumed_layout(run_dir: str) -> Layout | None:
    """The layout a run's newest checkpoint was trained with, when the run exists (it is resumed)."""
    if not names.is_local(run_dir):
        return None
    for folder in reversed(checkpoints.checkpoint_folders(run_dir)):
        try:
            saved = json.loads(checkpoints.load_state(folder).get("config", "{}"))
        except Exception:  # a damaged checkpoint: the resume check names it
            continue
        ray, train = saved.get("ray", {}), saved.get("train", {})
        if ray.get("num_workers") and train.get("batch_size"):
            return Layout(int(ray["num_workers"]), max(1, int(ray.get("cpus_per_worker", 1))),
                          int(train["batch_size"]))
    return None


def fastest(measured: list[tuple[Layout, float]]) -> tuple[Layout, float]:
    """The layout to train with among (layout, images/s) pairs: the fastest, several workers only
    when `SEVERAL_WORKERS_MARGIN` times faster than one."""
    return max(measured, key=lambda m: m[1] / (SEVERAL_WORKERS_MARGIN if m[0].workers > 1 else 1.0))


def choose(cfg: Config, data, fit: int, run_dir: str, say=print) -> Config:
    """`cfg` with its layout resolved: the configured workers, a resumed run's own layout, or under
    `ray.layout: auto` the fastest split measured on this machine (cached); else `fit` workers."""
    if cfg.ray.num_workers:
        return cfg
    options = candidates(cfg, fit)
    if not applies(cfg) or len(options) == 1:
        return cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_workers": fit})})
    resumed = resumed_layout(run_dir)
    if resumed is not None:
        say(f"train: layout {resumed.describe()}, as the run's checkpoints were trained")
        return with_layout(cfg, resumed)
    cache = Path(cfg.ray.layout_cache).expanduser()
    key = cache_key(cfg, data, options)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    rates = known.get(key)
    if not rates:
        rates = {json.dumps(asdict(o)): 0.0 for o in options}
        with Probes(cfg, data, options) as probes:
            for _ in range(ROUNDS):
                for o in options:
                    key_o = json.dumps(asdict(o))
                    rates[key_o] = max(rates[key_o], probes.rate(o))
        known[key] = rates
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache)
        source = "measured now"
    else:
        source = f"measured before, cached in {cache}"
    measured = [(Layout(**json.loads(k)), v) for k, v in rates.items()]
    best, rate = fastest(measured)
    others = "; ".join(f"{o.describe()} {r:,.0f}" for o, r in measured if o != best)
    margin = (f"; several workers are taken when {SEVERAL_WORKERS_MARGIN - 1:.0%} faster"
              if any(r > rate for _, r in measured) else "")
    say(f"train: layout {best.describe()}, {precision(cfg.train.precision)} step: {rate:,.0f} images/s against "
        f"{others} ({source}{margin}; ray.layout=per_cpu for one worker per CPU)")
    return with_layout(cfg, best)
