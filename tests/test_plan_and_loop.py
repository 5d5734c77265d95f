"""The run planner and the training loop's rules, driven in-process through the loop's seam."""
import math
import time

import pytest
import torch

from gan_core.data import load_dataset
from gan_core.data.stream import BatchStream
from pipelines.config import load_config
from pipelines.config.build import build_game
from pipelines.config.plan import plan_run
from pipelines.stages.train.loop import RunEnd, Stop, lr_scale, run_loop, schedule


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("k,world", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2)])
def test_plan_matches_what_the_stream_draws(digits, k, world):
    cfg = load_config(None, ["data.source=digits", f"train.k={k}", "train.epochs=3", "train.batch_size=32"])
    plan = plan_run(cfg, digits, world)
    train, holdout = digits.split(cfg.data.holdout_fraction, cfg.seed)
    assert (plan.n_train, plan.n_holdout) == (len(train), len(holdout))  # per-class rounding, not n x fraction
    x, y = train.tensors()
    streams = [BatchStream(x, y, 32, world, r, cfg.seed) for r in range(world)]
    assert all(s.batches_per_epoch == plan.batches_per_epoch for s in streams)
    # An iteration draws k real batches: epochs x batches / k iterations, and that many epochs seen.
    assert plan.iterations == 3 * plan.batches_per_epoch // k
    for _ in range(plan.iterations * k):
        next(streams[0])
    assert streams[0].epoch == 3 or (streams[0].epoch == 2 and (3 * plan.batches_per_epoch) % k)
    assert plan.d_images_per_iteration == (2 * k + 1) * 32 * world


def test_iterations_override_epochs(digits):
    cfg = load_config(None, ["data.source=digits", "train.k=2", "train.iterations=7"])
    assert plan_run(cfg, digits, 2).iterations == 7


def test_batch_larger_than_the_data_is_one_clear_error(digits):
    from pipelines.config import ConfigError

    cfg = load_config(None, ["data.source=digits", "train.batch_size=1000"])
    with pytest.raises(ConfigError, match="train.batch_size=1000 x 2 workers is larger than the 1618"):
        plan_run(cfg, digits, 2)


class FakeHooks:
    """The loop's hooks for one rank, recording what the Ray worker would do."""

    def __init__(self, rank=0, nan_from=None, other_rank_nan=False):
        self.rank, self.nan_from, self.other_rank_nan = rank, nan_from, other_rank_nan
        self.logged, self.grids, self.reports, self.probes, self.checks = [], [], [], 0, 0
        self.other_progress = 0.0  # how far the other rank says it is (max_over_ranks)

    def any_rank(self, flag):
        self.checks += 1
        return flag or (self.other_rank_nan and self.checks >= 3)

    def max_over_ranks(self, value):
        return max(value, self.other_progress)

    def allreduced_elements(self):
        return 0

    def probe(self, game):
        self.probes += 1
        return {"fd": 1.0}

    def log_metrics(self, metrics, step):
        self.logged.append((step, metrics))

    def log_grid(self, game, step):
        self.grids.append(step)

    def report(self, metrics, step, checkpoint_state):
        self.reports.append((step, checkpoint_state is not None, metrics))


def _setup(digits, *extra):
    cfg = load_config(None, ["data.source=digits", "model.arch=mlp", "model.g_width=8", "model.d_width=8",
                             "train.batch_size=32", "train.log_every=2", "train.eval_every=4",
                             "train.checkpoint_every=6", "train.iterations=14", *extra])
    train, _ = digits.split(cfg.data.holdout_fraction, cfg.seed)
    game, _ = build_game(cfg, train)
    x, y = train.tensors()
    return cfg, game, BatchStream(x, y, cfg.train.batch_size, seed=cfg.seed), plan_run(cfg, digits, 1)


def test_every_rank_reports_at_the_same_steps_with_checkpoints_on_cadence(digits):
    cfg, game, stream, plan = _setup(digits)
    ranks = [FakeHooks(rank=0), FakeHooks(rank=1)]
    results = []
    for hooks in ranks:
        torch.manual_seed(0)
        _, game, stream, plan = _setup(digits)
        results.append(run_loop(game, stream, plan, cfg.train, hooks))
    assert [r.status for r in results] == ["finished", "finished"]
    steps = [[(s, ck) for s, ck, _ in h.reports] for h in ranks]
    assert steps[0] == steps[1] == [(4, False), (6, True), (8, False), (12, True), (14, True)]
    # Only rank 0 logs, probes and draws grids; logs every log_every and at every evaluation.
    assert ranks[1].logged == [] and ranks[1].probes == 0 and ranks[1].grids == []
    assert [s for s, _ in ranks[0].logged] == [2, 4, 6, 8, 10, 12, 14]
    assert ranks[0].probes == 5 and 14 in ranks[0].grids
    m = dict(ranks[0].logged[-1][1])
    assert m["planned_iterations"] == 14 and m["iteration"] == 14 and m["fd"] == 1.0
    assert m["d_images"] == 14 * 3 * 32 and m["images_seen"] == 14 * 32 and m["train_seconds"] > 0
    assert all(math.isfinite(v) for v in m.values())
    for step in range(1, 15):
        assert schedule(step, plan, cfg.train)[2] == (step in (6, 12, 14))


def test_window_means_are_the_means_of_the_iterations_in_the_window(digits):
    cfg, game, stream, plan = _setup(digits, "train.iterations=4", "train.log_every=4")
    torch.manual_seed(0)
    per_step = []
    step = game.step

    def recording(s):
        out = step(s)
        per_step.append(out.loss_d)
        return out

    game.step = recording
    hooks = FakeHooks()
    run_loop(game, stream, plan, cfg.train, hooks)
    (_, metrics), = hooks.logged
    assert metrics["loss_d"] == pytest.approx(sum(per_step) / 4)


def test_lr_decay_falls_linearly_over_the_runs_last_fraction_from_each_evaluation(digits):
    assert [lr_scale(p, 0.5) for p in (0.0, 0.5, 0.75, 1.0, 1.2)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert lr_scale(0.99, 0.0) == 1.0
    cfg, game, stream, plan = _setup(digits, "train.lr_decay=0.5")
    rates, step = [], game.step

    def recording(s):
        rates.append((game.opt_g.param_groups[0]["lr"], game.opt_d.param_groups[0]["lr"]))
        return step(s)

    game.step = recording
    hooks = FakeHooks()
    run_loop(game, stream, plan, cfg.train, hooks)
    # 14 iterations, evaluations at 4, 8, 12 and 14: progress 4/14 keeps the rates; 8/14 and 12/14 are
    # in the last half: factors 6/7 and 2/7, for the iterations after each evaluation.
    g, d = cfg.train.lr_g, cfg.train.lr_d
    want = [1.0] * 8 + [6 / 7] * 4 + [2 / 7] * 2
    assert [r[0] for r in rates] == pytest.approx([g * f for f in want])
    assert [r[1] for r in rates] == pytest.approx([d * f for f in want])
    assert [m["lr_scale"] for _, m in hooks.logged] == pytest.approx([1, 1, 1, 1, 6 / 7, 6 / 7, 2 / 7])
    # With a time budget the run's progress is the larger share: a resumed run 3/4 through its budget
    # starts at half the rates; the rank furthest through sets the rates of all.
    cfg, game, stream, plan = _setup(digits, "train.lr_decay=0.5", "train.time_budget_s=1000")
    hooks = FakeHooks()
    run_loop(game, stream, plan, cfg.train, hooks, start=4, wall_seconds=750.0)
    assert [m["lr_scale"] for _, m in hooks.logged] == pytest.approx([0.5, 0.5, 0.5, 0.5, 2 / 7], abs=1e-3)
    cfg, game, stream, plan = _setup(digits, "train.lr_decay=0.5", "train.time_budget_s=1000", "train.iterations=3")
    hooks = FakeHooks()
    hooks.other_progress = 0.75
    run_loop(game, stream, plan, cfg.train, hooks, wall_seconds=0.0)
    assert [m["lr_scale"] for _, m in hooks.logged] == pytest.approx([0.5, 0.5])
    # Off (the schema's default): the configured rates throughout, and no lr_scale logged.
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    run_loop(game, stream, plan, cfg.train, hooks)
    assert game.opt_g.param_groups[0]["lr"] == cfg.train.lr_g and "lr_scale" not in hooks.logged[-1][1]


def test_a_nan_on_any_rank_stops_every_rank_at_the_same_iteration(digits):
    cfg, game, stream, plan = _setup(digits)
    out = run_loop(game, stream, plan, cfg.train, FakeHooks(rank=1, other_rank_nan=True))
    assert (out.status, out.iteration) == ("nan", 3)
    cfg, game, stream, plan = _setup(digits, "train.lr_d=1e30", "train.lr_g=1e30")
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks)
    assert out.status == "nan" and out.values and all(not math.isfinite(v) for v in out.values.values())
    assert all(s < out.iteration for s, _, _ in hooks.reports)


def test_a_resumed_loop_continues_its_cost_and_ends_at_the_plan(digits):
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks, start=12, train_seconds=100.0)
    assert out.status == "finished" and [s for s, _, _ in hooks.reports] == [14]
    assert hooks.reports[0][2]["train_seconds"] > 100.0


class ProbeSeries(FakeHooks):
    """Rank 0's hooks whose probe reports the given fd values, one per evaluation."""

    def __init__(self, values, rank=0):
        super().__init__(rank=rank)
        self.values = list(values)

    def probe(self, game):
        self.probes += 1
        return {"fd": self.values[min(self.probes, len(self.values)) - 1]}


def _stop(cfg, **kw):
    from pipelines.stages.train.loop import StopRule

    return StopRule("fd", **kw)


def test_a_run_stops_at_its_target_with_a_checkpoint_on_every_rank(digits):
    cfg, game, stream, plan = _setup(digits, "train.checkpoint_every=100")  # evaluations at 4, 8, 12; end 14
    hooks = ProbeSeries([3.0, 0.9, 0.5])
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, target=1.0))
    assert (out.status, out.iteration) == ("stopped", 8) and "reached the target 1" in out.reason
    assert [(s, ck) for s, ck, _ in hooks.reports] == [(4, False), (8, True)] and 8 in hooks.grids
    # Another rank has no metrics; rank 0's judgement (through any_rank) ends it at the same step.
    other = FakeHooks(rank=1)
    calls = []

    def any_rank(flag):  # one call per iteration (non-finite check), one more at each evaluation (stop):
        calls.append(flag)  # at step 8 the 10th call is the 2nd evaluation's, where rank 0 says stop
        return flag or len(calls) == 10

    other.any_rank = any_rank
    _, game, stream, _ = _setup(digits, "train.checkpoint_every=100")
    out1 = run_loop(game, stream, plan, cfg.train, other, stop=_stop(cfg, target=1.0))
    assert (out1.status, out1.iteration) == ("stopped", 8) and other.reports[-1][:2] == (8, True)


def test_patience_stops_a_run_that_no_longer_improves_and_no_rule_runs_to_the_plan(digits):
    cfg, game, stream, plan = _setup(digits, "train.checkpoint_every=100", "train.iterations=30")
    hooks = ProbeSeries([2.0, 1.0, 1.5, 1.2, 0.9, 3.0])  # best 1.0 at the 2nd; 2 evaluations without a new best
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, patience=2))
    assert (out.status, out.iteration) == ("stopped", 16) and "not improved on 1 for 2 evaluations" in out.reason
    # With a tolerance of 25%, 1.2 is as good as 1.0 (no patience spent): the new best 0.9 follows, and
    # the run ends two evaluations after it, at 28 rather than 16.
    cfg, game, stream, plan = _setup(digits, "train.checkpoint_every=100", "train.iterations=30")
    hooks = ProbeSeries([2.0, 1.0, 1.5, 1.2, 0.9, 3.0])
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, patience=2, tolerance=0.25))
    assert (out.status, out.iteration) == ("stopped", 28) and "not improved on 0.9 (within 25%) for 2" in out.reason
    cfg, game, stream, plan = _setup(digits)
    out = run_loop(game, stream, plan, cfg.train, ProbeSeries([5.0, 4.0]), stop=_stop(cfg, target=0.1, patience=9))
    assert (out.status, out.iteration) == ("finished", 14)


def test_the_time_budget_counts_a_resumed_runs_earlier_wall_time(digits):
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, budget_s=50.0), wall_seconds=60.0)
    assert (out.status, out.iteration) == ("stopped", 4) and "time budget of 50 s" in out.reason
    assert hooks.reports[-1][:2] == (4, True) and hooks.reports[-1][2]["wall_seconds"] >= 60.0
    # The workflow tells a run its budget ended from one its target or patience ended.
    assert out.stop == Stop("budget", "the time budget of 50 s is spent (train.time_budget_s)")
    end = RunEnd(out.status, out.iteration, out.stop, replica_digests=("a", "a"))
    assert end.ended_on_budget and RunEnd.from_dict(end.to_dict()) == end and end.replicas_identical
    assert not RunEnd("finished", 14).ended_on_budget
    target = _stop(cfg, target=2.0).check({"fd": 1.0}, 99.0)
    assert target.kind == "target" and not RunEnd("stopped", 4, target).ended_on_budget
    with pytest.raises(ValueError, match="stop kind 'later'"):
        Stop("later", "")
    cfg, game, stream, plan = _setup(digits)
    out = run_loop(game, stream, plan, cfg.train, FakeHooks(), stop=_stop(cfg, budget_s=3600.0))
    assert out.status == "finished"


def test_a_sweep_trial_ends_at_its_last_evaluation_before_the_sweeps_deadline(digits):
    """The next evaluation, as far off as the last one was, would come after the deadline: stop now."""
    from pipelines.stages.train.loop import SWEEP_END

    rule = _stop(None, deadline=1000.0, last_check=700.0)
    assert rule.check({"fd": 2.0}, 10.0, now=800.0) is None  # next at about 900: before the deadline
    assert rule.check({"fd": 1.0}, 20.0, now=900.0).kind == "sweep"  # next at 1,000: not before
    assert _stop(None, last_check=0.0).check({"fd": 1.0}, 10.0, now=1e12) is None  # no deadline: no end
    # In the loop: a deadline already near ends the run at its first evaluation, with a checkpoint,
    # as a run that ended (the sweep counts it as finished, not stopped by the scheduler).
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, deadline=time.time() + 0.01))
    assert (out.status, out.iteration) == ("stopped", 4) and "sweep's time budget" in out.reason
    assert hooks.reports[-1][:2] == (4, True) and hooks.reports[-1][2]["ended"] == 1.0
    assert hooks.reports[-1][2][SWEEP_END] == 1.0  # the sweep's line for the trial says why it ended
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks, stop=_stop(cfg, deadline=time.time() + 3600))
    assert SWEEP_END not in hooks.reports[-1][2]
    assert out.status == "finished"


def test_target_and_patience_are_judged_only_when_the_training_evaluation_runs():
    from pipelines.stages.train.loop import StopRule

    cfg = load_config(None, ["train.target=0.5", "train.patience=3", "train.time_budget_s=60", "train.tolerance=0.1"])
    assert StopRule.from_config(cfg.train, "fd", True) == StopRule("fd", 0.5, 3, 60.0, 0.1)
    assert StopRule.from_config(cfg.train, "fd", False) == StopRule("fd", None, None, 60.0, 0.1)


def test_a_run_resumed_from_its_final_checkpoint_reports_its_end_once(digits):
    """A sweep interrupted just after a trial's last checkpoint resumes that trial at its end: it must
    still report that it ended (and its metric), or the scheduler keeps its earlier, unfinished result."""
    cfg, game, stream, plan = _setup(digits)
    hooks = FakeHooks()
    out = run_loop(game, stream, plan, cfg.train, hooks, start=14, train_seconds=7.0)
    assert (out.status, out.iteration) == ("finished", 14)
    ((step, ckpt, metrics),) = hooks.reports
    assert (step, ckpt) == (14, False) and metrics["ended"] == 1.0 and metrics["fd"] == 1.0
    assert metrics["iteration"] == metrics["planned_iterations"] == 14 and metrics["train_seconds"] == 7.0


def test_each_quality_option_changes_what_it_says(digits):
    """The options compared in docs/quality.md, each from its config key to the game it builds: the two
    learning rates, the widths, how D hears the label, the G loss, k, the EMA generator (the batch
    size: test_plan_matches_what_the_stream_draws)."""
    train, _ = digits.split(0.1, 0)

    def game(*sets):
        return build_game(load_config(None, ["data.source=digits", *sets]), train)[0]

    base = game()
    ttur = game("train.lr_g=0.0001", "train.lr_d=0.0004")
    assert [g["lr"] for g in ttur.opt_g.param_groups] == [1e-4] and [g["lr"] for g in ttur.opt_d.param_groups] == [4e-4]
    preset = load_config(None, ["data.source=digits"]).train
    assert (base.opt_g.param_groups[0]["lr"], base.opt_d.param_groups[0]["lr"]) == (preset.lr_g, preset.lr_d)
    wide = game("model.g_width=64", "model.d_width=16")
    first_g = lambda gm: next(m for m in gm.G.modules() if isinstance(m, torch.nn.ConvTranspose2d))  # noqa: E731
    first_d = lambda gm: next(m for m in gm.D.modules() if isinstance(m, torch.nn.Conv2d))  # noqa: E731
    assert first_g(wide).out_channels == 2 * first_g(base).out_channels  # quick's g_width is 32
    assert first_d(wide).out_channels == 16 and first_d(base).in_channels == 1 + 10  # concat: one-hot label channels
    proj = game("model.d_conditioning=projection")
    assert first_d(proj).in_channels == 1 and proj.D.proj is not None
    x = torch.rand(4, *train.image_shape) * 2 - 1
    proj.D.eval()
    with torch.no_grad():  # the label enters the logit only through <embed(y), sum of D's last features>
        h = proj.D.body(x).sum((2, 3))
        y0, y1 = torch.zeros(4, dtype=torch.int64), torch.full((4,), 3)
        shift = proj.D(x, y1).reshape(-1) - proj.D(x, y0).reshape(-1)
        assert torch.allclose(shift, ((proj.D.proj(y1) - proj.D.proj(y0)) * h).sum(1), atol=1e-5)
    aux = game("model.d_conditioning=aux", "train.aux_weight=0.5")
    assert first_d(aux).in_channels == 1 and aux.D.classes.out_channels == 10 and aux.aux_weight == 0.5
    assert base.D.classes is None and base.aux_weight == 0.0
    assert game("train.g_loss=minimax").g_loss == "minimax" and base.g_loss == "non_saturating"
    assert game("train.k=3").k == 3 and game("train.ema_beta=0.995").ema.beta == 0.995
    assert base.ema is None  # the quick preset leaves the EMA to auto, derived at the run's start
    assert game("train.consistency=10").consistency == 10.0 and base.consistency == 0.0
    assert game("train.label_smoothing=0.1").label_smoothing == 0.1 and base.label_smoothing == 0.0
    assert game("train.real_jitter=0.5").real_jitter == 0.5 and base.real_jitter == 0.0
