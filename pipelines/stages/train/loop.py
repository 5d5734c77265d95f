"""The rules of the training loop, apart from Ray: every rank runs `run_loop` with its own `Hooks`.

- A non-finite loss on any rank stops every rank at the same iteration (`any_rank`).
- Every rank reports at the same iterations (Ray Train hangs on a mismatch): at each evaluation
  interval and at each checkpoint, the last iteration included.
- Losses are averaged over a window of `log_every` iterations (closed early at an evaluation).
- Checkpoints every `checkpoint_every` iterations and at the end; sample grids at each new epoch.
- The run's cost so far (training seconds and images through D) rides along with every report,
  so that a scheduler can compare trials of different k and widths fairly.
- Learning-rate decay (`train.lr_decay`): at the start and at each evaluation both rates are set
  from the run's progress (the larger of its share of the time budget and of its iterations, the
  largest over ranks, so that every rank steps with the same rates).
- Time to quality (`StopRule`): at an evaluation the run ends early when the metric reaches its
  target, when it has not improved for `patience` evaluations (an evaluation within `tolerance` of
  the best counts as no worse), or when the wall-clock budget is spent; every rank ends at the same
  iteration, with a checkpoint.

The Ray worker (`worker.py`) supplies the hooks; unit tests drive the same function in-process.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gan_core import Game
from gan_core.metrics import is_better, within
from gan_core.theory import equilibrium_gap

from ...config import TrainConfig
from ...config.plan import RunPlan


class Hooks(Protocol):
    rank: int

    def any_rank(self, flag: bool) -> bool: ...
    def max_over_ranks(self, value: float) -> float: ...
    def log_metrics(self, metrics: dict, step: int) -> None: ...  # rank 0
    def log_grid(self, game: Game, step: int) -> None: ...  # rank 0
    def probe(self, game: Game) -> dict: ...  # rank 0, at evaluations
    def allreduced_elements(self) -> int: ...
    def report(self, metrics: dict, step: int, checkpoint_state: dict | None) -> None: ...  # every rank


@dataclass
class LoopResult:
    status: str  # "finished" | "stopped" (by the StopRule) | "nan"
    iteration: int
    values: dict = field(default_factory=dict)  # the non-finite values, when status is "nan"
    last_metrics: dict = field(default_factory=dict)
    stop: "Stop | None" = None  # why a "stopped" run ended

    @property
    def reason(self) -> str:
        return self.stop.reason if self.stop else ""


STOP_KINDS = ("target", "patience", "budget", "sweep", "rank0")  # "rank0": another rank, told by rank 0


@dataclass(frozen=True)
class Stop:
    """Why a run ended before its plan: the rule that ended it and the sentence that says so."""
    kind: str
    reason: str

    def __post_init__(self):
        if self.kind not in STOP_KINDS:
            raise ValueError(f"stop kind {self.kind!r} is not one of {STOP_KINDS}")


@dataclass(frozen=True)
class RunEnd:
    """How a training run ended, as the workers return it to the driver (`to_dict`, over Ray) and the
    driver hands it to the workflow: finished its plan, stopped by a rule, or a non-finite loss."""
    status: str  # "finished" | "stopped" | "nan"
    iteration: int
    stop: Stop | None = None
    values: dict = field(default_factory=dict)  # the non-finite values of a "nan" end
    replica_digests: tuple = ()  # per rank: a digest of G's and D's weights

    @property
    def reason(self) -> str:
        return self.stop.reason if self.stop else ""

    @property
    def ended_on_budget(self) -> bool:
        return self.status == "stopped" and self.stop is not None and self.stop.kind == "budget"

    @property
    def replicas_identical(self) -> bool:
        return all(d == self.replica_digests[0] for d in self.replica_digests)

    def to_dict(self) -> dict:
        return {"status": self.status, "iteration": self.iteration, "values": self.values,
                "stop": {"kind": self.stop.kind, "reason": self.stop.reason} if self.stop else None,
                "replica_digests": list(self.replica_digests)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunEnd":
        stop = d.get("stop")
        return cls(d["status"], int(d["iteration"]), Stop(**stop) if stop else None, dict(d.get("values") or {}),
                   tuple(d.get("replica_digests") or ()))


@dataclass
class StopRule:
    """When a run is good enough or no longer improving (judged at evaluations on `metric`), or out
    of time. `check` is asked at every evaluation; `wall_seconds` counts a resumed run's earlier time."""
    metric: str
    target: float | None = None
    patience: int | None = None
    budget_s: float | None = None
    tolerance: float = 0.0  # an evaluation within this fraction of the best is not a stall
    deadline: float | None = None  # a sweep's end (time.time()): the run ends at its last evaluation before it
    best: float | None = None
    since_best: int = 0
    last_check: float = field(default_factory=time.time, compare=False)  # when the rule was last asked

    @classmethod
    def from_config(cls, train: TrainConfig, metric: str, evaluating: bool,
                    deadline: float | None = None) -> "StopRule":
        return cls(metric, train.target if evaluating else None, train.patience if evaluating else None,
                   train.time_budget_s, train.tolerance, deadline)

    def check(self, metrics: dict | None, wall_seconds: float, now: float | None = None) -> Stop | None:
        """Why to stop now (None: go on); `metrics` are rank 0's at this evaluation (None on
        the other ranks, which only judge the time). With a deadline the run ends here when the next
        evaluation, as far off as this one was from the last, would come after it."""
        now = time.time() if now is None else now
        interval, self.last_check = now - self.last_check, now
        value = (metrics or {}).get(self.metric)
        if value is not None and math.isfinite(value):
            if self.target is not None and (value == self.target or is_better(self.metric, value, self.target)):
                return Stop("target", f"{self.metric} {value:.4g} reached the target {self.target:g} (train.target)")
            if self.best is None or is_better(self.metric, value, self.best):
                self.best, self.since_best = value, 0
            elif within(self.metric, value, self.best, self.tolerance):
                self.since_best = 0
            else:
                self.since_best += 1
                if self.patience is not None and self.since_best >= self.patience:
                    return Stop("patience", f"{self.metric} has not improved on {self.best:.4g}"
                                + (f" (within {self.tolerance:.0%})" if self.tolerance else "")
                                + f" for {self.since_best} evaluations (train.patience)")
        if self.budget_s is not None and wall_seconds >= self.budget_s:
            return Stop("budget", f"the time budget of {self.budget_s:g} s is spent (train.time_budget_s)")
        if self.deadline is not None and now + interval >= self.deadline:
            return Stop("sweep", "the sweep's time budget ends before the next evaluation (tune.time_budget_s)")
        return None


SWEEP_END = "ended_at_sweep_end"  # reported (1) with the last metrics of a trial its sweep's time ended


def lr_scale(progress: float, fraction: float) -> float:
    """The learning rates' factor at `progress` (0 at the start, 1 at the end of the run): 1 until the
    last `fraction` of the run, then falling linearly to 0 at its end; always 1 when `fraction` is 0."""
    if fraction <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / fraction))


def set_learning_rates(game: Game, t: TrainConfig, scale: float = 1.0) -> None:
    """G's and D's rates from the config (times `scale`), and Adam's betas."""
    for opt, lr in ((game.opt_g, t.lr_g), (game.opt_d, t.lr_d)):
        for group in opt.param_groups:
            group.update(lr=lr * scale, betas=(t.beta1, t.beta2))


def progress(step: int, plan: RunPlan, t: TrainConfig, wall_seconds: float) -> float:
    """How far through its run a rank is: the larger of its share of the time budget and of its iterations."""
    share = step / plan.iterations
    return max(share, wall_seconds / t.time_budget_s) if t.time_budget_s else share


def schedule(step: int, plan: RunPlan, t: TrainConfig) -> tuple[bool, bool, bool]:
    """(log, evaluate, checkpoint) at iteration `step` (1-based): the same on every rank."""
    ckpt = step % t.checkpoint_every == 0 or step == plan.iterations
    evaluate = step % t.eval_every == 0 or ckpt
    log = step % t.log_every == 0 or evaluate
    return log, evaluate, ckpt


def run_loop(game: Game, stream, plan: RunPlan, t: TrainConfig, hooks: Hooks, start: int = 0,
             train_seconds: float = 0.0, evaluate: bool = True, stop: StopRule | None = None,
             wall_seconds: float = 0.0) -> LoopResult:
    """Iterations start+1 .. plan.iterations of the game on `stream`, or fewer when `stop` says so."""
    if start >= plan.iterations:  # resumed from its final checkpoint: say once more that it ended, and where
        metrics = {"iteration": start, "planned_iterations": plan.iterations, "epoch": stream.epoch,
                   "images_seen": start * plan.real_images_per_iteration,
                   "d_images": start * plan.d_images_per_iteration, "train_seconds": train_seconds,
                   "wall_seconds": wall_seconds, "ended": 1.0}
        if hooks.rank == 0 and evaluate:
            metrics.update(hooks.probe(game))
        hooks.report(metrics, start, None)
        return LoopResult("finished", start, {}, metrics)
    window: list[dict[str, float]] = []
    window_start = loop_start = time.perf_counter()
    counted_since = hooks.allreduced_elements()
    epoch_seen = stream.epoch
    last: dict = {}

    scale = 1.0

    def decay(step: int, wall: float) -> None:
        nonlocal scale
        if t.lr_decay > 0:
            scale = lr_scale(hooks.max_over_ranks(progress(step, plan, t, wall)), t.lr_decay)
            set_learning_rates(game, t, scale)

    decay(start, wall_seconds)
    for it in range(start, plan.iterations):
        t0 = time.perf_counter()
        stats = game.step(stream).as_dict()
        train_seconds += time.perf_counter() - t0
        step = it + 1
        if hooks.any_rank(not all(math.isfinite(v) for v in stats.values())):
            bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
            return LoopResult("nan", step, bad, last)
        window.append(stats)
        log_now, eval_now, ckpt_now = schedule(step, plan, t)
        metrics = None
        wall = wall_seconds + time.perf_counter() - loop_start
        if log_now:
            metrics = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            metrics["value_gap"] = abs(equilibrium_gap(metrics["value"]))
            elements = hooks.allreduced_elements()
            metrics["allreduced_elements"] = (elements - counted_since) / len(window)
            now = time.perf_counter()
            metrics.update(iteration=step, planned_iterations=plan.iterations, epoch=stream.epoch,
                           images_seen=step * plan.real_images_per_iteration,
                           d_images=step * plan.d_images_per_iteration, train_seconds=train_seconds,
                           wall_seconds=wall,
                           images_per_second=len(window) * plan.real_images_per_iteration / (now - window_start))
            if t.lr_decay > 0:
                metrics["lr_scale"] = scale  # the factor the window's iterations stepped with
            window, counted_since, window_start = [], elements, now
            if hooks.rank == 0:
                if evaluate and eval_now:
                    metrics.update(hooks.probe(game))
                hooks.log_metrics(metrics, step)
            last = metrics
        if eval_now:
            decay(step, wall)
        ended = None
        if stop is not None and eval_now and step < plan.iterations:
            ended = stop.check(metrics if hooks.rank == 0 else None, wall)
            if hooks.any_rank(ended is not None):  # rank 0's judgement of the metric ends every rank here
                ckpt_now = True
                ended = ended or Stop("rank0", "stopped by rank 0")
        if hooks.rank == 0 and (stream.epoch != epoch_seen or step == plan.iterations or ended):
            hooks.log_grid(game, step)
        epoch_seen = stream.epoch
        if ended or step == plan.iterations:
            metrics["ended"] = 1.0  # the run's last report, whether it ran to its plan or its StopRule ended it
            if ended and ended.kind == "sweep":
                metrics[SWEEP_END] = 1.0
        if ckpt_now:
            hooks.report(metrics, step, {**game.state_dict(), "train_seconds": train_seconds, "wall_seconds": wall})
        elif eval_now:
            hooks.report(metrics, step, None)
        if ended:
            return LoopResult("stopped", step, {}, last, ended)
    return LoopResult("finished", plan.iterations, {}, last)
