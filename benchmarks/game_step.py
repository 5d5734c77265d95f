"""gan_core's `Game.step` against a plain loop written the way pytorch/examples' dcgan/main.py
writes it (the fake batch made once and reused for the D and G updates; D's weight gradients
computed during the G update; `.item()` every step), in one process, on the same G and D (copies of
one initialization; the plain loop's G built from torch's nn.ConvTranspose2d, as the example builds
it, where gan_core's transposed convolutions compute as matrix products where faster), data and
batch. Variants of the step alternate in rounds so that the machine's drift falls on all of them
alike.

Also, against the machine's arithmetic limit: the floating-point operations of one iteration are
counted (torch's FlopCounterMode: forward and backward of G and D, k included), the machine's fp32
matrix-multiply rate is measured in the same run, and each variant's GFLOP/s is reported as a share
of it. `--compile` adds a variant with G and D through `torch.compile`, its compile time apart.
`--bf16` adds the shipped step (fresh batch, channels-last) in fp32 and under bfloat16 autocast
(`train.precision`), and reports the second against the first.

    python benchmarks/game_step.py --iterations 60 --rounds 3 --threads 2 --compile --bf16
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_dcgan import plain_loop, with_torch_layers  # noqa: E402
from record import add_outputs, cpu_model, record  # noqa: E402

from gan_core import Game, GameOptions, adam_pair  # noqa: E402
from gan_core.data.stream import BatchStream  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.config.build import build_game, load_data  # noqa: E402


def matmul_rate(threads: int, seconds: float = 1.0) -> float:
    """The machine's fp32 matrix-multiply rate (FLOP/s) at `threads`: the best of square sizes 512 to 2048."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - start))
    return best


def iteration_flops(game: Game, stream) -> float:
    """Floating-point operations of one `game.step` (multiply-adds count 2), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        game.step(stream)
    return float(counter.get_total_flops())


WHERE_SIDES = ("plain", "game_nhwc", "game_reuse_nhwc")
# Kinds of operation (torch.profiler's op names): the first kind whose exact names or name parts match.
KINDS = (("convolution", (), ("convolution", "conv_transpose", "slow_conv")),
         ("matmul (G's matrix-product layers, linear)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                                          "aten::linear"), ()),
         ("col2im / im2col", (), ("col2im", "im2col")),
         ("batch norm", (), ("batch_norm",)),
         ("optimizer (Adam) and in-place arithmetic", ("aten::sqrt", "aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::mul_",
                               "aten::div", "aten::add_", "aten::zero_"), ("_foreach", "Optimizer.")),
         ("activations and loss", (), ("relu", "threshold", "tanh", "sigmoid", "binary_cross", "softplus",
                                       "leaky")),
         ("layout copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone",
                            "aten::cat", "aten::stack", "aten::empty", "aten::empty_strided", "aten::empty_like",
                            "aten::as_strided", "aten::as_strided_", "aten::permute", "aten::view",
                            "aten::reshape", "aten::_reshape_alias", "aten::transpose", "aten::t", "aten::expand",
                            "aten::unsqueeze", "aten::select", "aten::slice", "aten::index", "aten::resize_"), ()))


def kind_of(name: str) -> str:
    for kind, exact, parts in KINDS:
        if name in exact or any(p in name for p in parts):
            return kind
    return "other"


def where_time_goes(game: Game, x, y, batch: int, iterations: int, plain: bool) -> dict[str, float]:
    """Milliseconds per iteration of one loop (the plain loop for the `plain_loop` game, else `game.step`)
    by kind of operation (`KINDS`, by torch.profiler's self CPU time), and `wall` (the profiled
    iterations' own time: the profiler adds its own cost to every op, alike on every side)."""
    from torch.profiler import ProfilerActivity, profile

    stream = BatchStream(x, y, batch, seed=7)
    run = (lambda n: plain_loop(game.G, game.D, game.opt_g, game.opt_d, stream, game.z_dim, game.num_classes, n)) \
        if plain else (lambda n: [game.step(stream) for _ in range(n)])
    run(3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run(iterations)
        wall = time.perf_counter() - start
    out: dict[str, float] = {}
    for e in prof.key_averages():
        kind = kind_of(e.key)
        out[kind] = out.get(kind, 0.0) + e.self_cpu_time_total / 1e3 / iterations
    return {**{k: out.get(k, 0.0) for k, *_ in KINDS}, "other": out.get("other", 0.0), "wall": wall * 1e3 / iterations}


def where_table(where: dict, width: int, iterations: int) -> str:
    """Milliseconds per iteration by kind, each side beside the plain loop's, and the differences."""
    sides = list(where)
    head = (f"where the time goes, width {width}, {iterations} profiled iterations, ms per iteration (each op's "
            f"self time as torch.profiler records it; wall: the iterations' own time under the profiler)")
    lines = [head, "| kind | " + " | ".join(sides) + " | " + " | ".join(f"{s} - plain" for s in sides[1:]) + " |",
             "|---|" + "---|" * (2 * len(sides) - 1)]
    for kind in [k for k, *_ in KINDS] + ["other", "wall"]:
        vals = [where[s][kind] for s in sides]
        lines.append(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in vals) + " | "
                     + " | ".join(f"{v - vals[0]:+.2f}" for v in vals[1:]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", default="32,64")
    p.add_argument("--compile", action="store_true", help="add a variant with G and D through torch.compile")
    p.add_argument("--bf16", action="store_true", help="add the shipped step (fresh batch, channels-last) in bf16")
    p.add_argument("--where", type=int, default=0, metavar="N",
                   help="also profile N iterations of the plain loop, the shipped step and reuse_fake + channels_last, "
                        "and print milliseconds per iteration by kind of operation")
    add_outputs(p)
    a = p.parse_args()
    peak = matmul_rate(a.threads)
    torch.set_num_threads(a.threads)
    numbers: dict = {"matmul_gflops": peak / 1e9}
    rows = []
    for width in [int(w) for w in a.widths.split(",")]:
        cfg = load_config(None, [f"model.g_width={width}", f"model.d_width={width}", "train.ema_beta=null",
                                "train.channels_last=false"])  # the plain loop's copies start in NCHW
        train, _ = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
        x, y = train.tensors()
        torch.manual_seed(0)
        base, _ = build_game(cfg, train)
        batch = cfg.train.batch_size

        def fresh(reuse: bool, nhwc: bool = False, torch_layers: bool = False, precision: str = "fp32") -> Game:
            G, D = copy.deepcopy(base.G), copy.deepcopy(base.D)
            if torch_layers:  # the plain loop's G and D are built as pytorch/examples' are
                G, D = with_torch_layers(G), with_torch_layers(D)
            opt_g, opt_d = adam_pair(G, D, cfg.train.lr_g, cfg.train.lr_d, (cfg.train.beta1, cfg.train.beta2))
            return Game(G, D, opt_g, opt_d, GameOptions(k=1, reuse_fake=reuse, channels_last=nhwc, precision=precision),
                        label_prior=base.label_prior)

        sides = {"plain": fresh(False, torch_layers=True), "game": fresh(False), "game_reuse": fresh(True),
                 "game_nhwc": fresh(False, True), "game_reuse_nhwc": fresh(True, True)}  # game_nhwc: as shipped
        if a.bf16:
            sides |= {"game_nhwc_bf16": fresh(False, True, precision="bf16")}
        flops = {name: iteration_flops(game, BatchStream(x, y, batch, seed=99))
                 for name, game in sides.items() if name != "plain"}
        compile_s = None
        if a.compile:
            sides["game_compiled"] = fresh(True, True)
            flops["game_compiled"] = flops["game_reuse_nhwc"]
            g = sides["game_compiled"]
            g.G, g.D = torch.compile(g.G), torch.compile(g.D)
            start = time.perf_counter()
            for _ in range(3):
                g.step(BatchStream(x, y, batch, seed=98))
            compile_s = time.perf_counter() - start
        seconds = {k: 0.0 for k in sides}
        for r in range(a.rounds + 1):  # round 0 warms every side up and is not counted
            for name, game in sides.items():
                stream = BatchStream(x, y, batch, seed=r)
                n = a.warmup if r == 0 else a.iterations
                start = time.perf_counter()
                if name == "plain":
                    plain_loop(game.G, game.D, game.opt_g, game.opt_d, stream, game.z_dim, game.num_classes, n)
                else:
                    for _ in range(n):
                        game.step(stream)
                if r:
                    seconds[name] += time.perf_counter() - start
        rate = {k: a.rounds * a.iterations * batch / v for k, v in seconds.items()}
        best = max((k for k in sides if k.startswith("game") and k not in ("game_compiled", "game_nhwc_bf16")),
                   key=rate.get)  # the plain loop's arithmetic: fp32
        # share of the matmul rate: the FLOPs each variant executes, at its measured iterations/second
        share = {k: flops[k] * rate[k] / batch / peak for k in flops}
        numbers[f"w{width}"] = {"img_s": rate, "gflop_per_iteration": {k: v / 1e9 for k, v in flops.items()},
                                "flop_share": share, "best": best, "ratio": rate[best] / rate["plain"],
                                "compile_s": compile_s}
        compiled = (f"; torch.compile {rate['game_compiled']:.0f} img/s after {compile_s:.0f} s compiling"
                    if compile_s is not None else "")
        if a.bf16:
            numbers[f"w{width}"]["bf16_ratio"] = rate["game_nhwc_bf16"] / rate["game_nhwc"]
            compiled += (f"; the shipped step in bf16 {rate['game_nhwc_bf16']:.0f} img/s "
                         f"(**{rate['game_nhwc_bf16'] / rate['game_nhwc']:.2f}x** of it in fp32)")
        if a.where:
            numbers[f"w{width}"]["where_ms"] = where = {
                name: where_time_goes(sides[name], x, y, batch, a.where, name == "plain") for name in WHERE_SIDES}
            print(where_table(where, width, a.where))
        rows.append(f"| {datetime.date.today()} | game step vs plain dcgan loop, conditional DCGAN width {width}, mnist5k, "
                    f"batch {batch}, k=1, {a.threads} threads, {a.rounds}x{a.iterations} it "
                    f"| plain loop {rate['plain']:.0f} img/s "
                    f"| Game.step NCHW {rate['game']:.0f} img/s; reuse_fake NCHW {rate['game_reuse']:.0f} img/s; shipped "
                    f"(fresh batch, channels_last) {rate['game_nhwc']:.0f} img/s; reuse_fake + channels_last "
                    f"{rate['game_reuse_nhwc']:.0f} img/s{compiled}; {flops[best] / 1e9:.2f} GFLOP "
                    f"per iteration, {share[best]:.0%} of the {peak / 1e9:.0f} GFLOP/s matmul rate "
                    f"| **{rate[best] / rate['plain']:.2f}x** ({best}), shipped {rate['game_nhwc'] / rate['plain']:.2f}x "
                    f"| {cpu_model()}, {os.cpu_count()} cores |")
    for i, row in enumerate(rows):
        record(row, a.out, numbers, a.json if i == len(rows) - 1 else None)


if __name__ == "__main__":
    main()
