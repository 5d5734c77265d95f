"""gan_core's `Game.step` against a plain loop written the way pytorch/examples' dcgan/main.py writes
it (the fake batch made once and reused for the D and G updates; D's weight gradients computed
during the G update; `.item()` every step), in one process, on the same G and D (copies of one
initialization), data and batch. Variants of the step alternate in rounds so that the machine's
drift falls on all of them alike.

    python benchmarks/game_step.py --iterations 60 --rounds 3 --threads 2
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from gan_core import Game, adam_pair  # noqa: E402
from gan_core.data.stream import BatchStream  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.config.build import build_game, load_data  # noqa: E402


def plain_loop(G, D, opt_g, opt_d, stream, z_dim: int, num_classes: int, iterations: int) -> None:
    """pytorch/examples dcgan/main.py's iteration, conditional: labels drawn uniformly."""
    for _ in range(iterations):
        x, y = next(stream)
        n = x.shape[0]
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        out = D(x, y)
        err_real = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_real.backward()
        d_x = torch.sigmoid(out).mean().item()
        z = torch.randn(n, z_dim)
        y_fake = torch.randint(0, num_classes, (n,))
        fake = G(z, y_fake)
        out = D(fake.detach(), y_fake)
        err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
        err_fake.backward()
        d_g1 = torch.sigmoid(out).mean().item()
        opt_d.step()
        # (2) Update G network: maximize log(D(G(z)))
        G.zero_grad()
        out = D(fake, y_fake)
        err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
        _ = (err_real.item() + err_fake.item(), err_g.item(), d_x, d_g1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", default="32,64")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for width in [int(w) for w in a.widths.split(",")]:
        cfg = load_config(None, [f"model.g_width={width}", f"model.d_width={width}", "train.ema_beta=null"])
        train, _ = load_data(cfg).split(cfg.data.holdout_fraction, cfg.seed)
        x, y = train.tensors()
        torch.manual_seed(0)
        base, _ = build_game(cfg, train)
        batch = cfg.train.batch_size

        def fresh(reuse: bool, nhwc: bool = False) -> Game:
            G, D = copy.deepcopy(base.G), copy.deepcopy(base.D)
            opt_g, opt_d = adam_pair(G, D, cfg.train.lr_g, cfg.train.lr_d, (cfg.train.beta1, cfg.train.beta2))
            return Game(G, D, opt_g, opt_d, k=1, label_prior=base.label_prior, reuse_fake=reuse, channels_last=nhwc)

        sides = {"plain": fresh(False), "game": fresh(False), "game_reuse": fresh(True),
                 "game_reuse_nhwc": fresh(True, True)}
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
        best = max(("game", "game_reuse", "game_reuse_nhwc"), key=rate.get)
        row = (f"| {datetime.date.today()} | game step vs plain dcgan loop, conditional DCGAN width {width}, mnist5k, "
               f"batch {batch}, k=1, {a.threads} threads, {a.rounds}x{a.iterations} it "
               f"| plain loop {rate['plain']:.0f} img/s "
               f"| Game.step {rate['game']:.0f} img/s; reuse_fake {rate['game_reuse']:.0f} img/s; reuse_fake + "
               f"channels_last {rate['game_reuse_nhwc']:.0f} img/s "
               f"| **{rate[best] / rate['plain']:.2f}x** ({best}), {rate['game'] / rate['plain']:.2f}x fresh batch "
               f"| {os.uname().machine}, {os.cpu_count()} cores |")
        record(row, a.out) if a.out else record(row)


if __name__ == "__main__":
    main()
