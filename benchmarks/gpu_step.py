"""The 64x64 conditional DCGAN's training step on a GPU: gan_core's `Game.step` in fp32 and bf16
autocast, with and without channels-last and `torch.compile`, against the plain DCGAN loop (fp32)
on the same models and batch, in one process. Needs torch and gan_core only, so it runs on a bare
GPU machine; `gpu_check.sh` runs it with the rest of the GPU checks.

    python benchmarks/gpu_step.py --iterations 200 --batch 128
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_dcgan import plain_loop, with_torch_layers  # noqa: E402

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models  # noqa: E402
from gan_core.data.stream import BatchStream  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default=None, help="append the rows to this file (default: print only)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_step.py: no CUDA device on this machine")
    dev = "cuda"
    torch.manual_seed(0)
    n, classes = 4096, 10
    x = torch.rand(n, 1, a.size, a.size, device=dev) * 2 - 1  # content does not change the step's cost
    y = torch.randint(0, classes, (n,), device=dev)
    base_g, base_d = build_models(ModelSpec("dcgan", 100, (1, a.size, a.size), classes, a.width, a.width))

    def game(nhwc: bool, compiled: bool, reuse: bool = True) -> Game:
        G, D = copy.deepcopy(base_g).to(dev), copy.deepcopy(base_d).to(dev)
        g = Game(G, D, *adam_pair(G, D, 2e-4, 2e-4), GameOptions(k=1, reuse_fake=reuse, channels_last=nhwc))
        if compiled:
            g.G, g.D = torch.compile(g.G), torch.compile(g.D)
        return g

    def timed(step, warmup: int = 10) -> tuple[float, float]:
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(a.iterations):
            step()
        torch.cuda.synchronize()
        return a.iterations * a.batch / (time.perf_counter() - start), first

    results = {}
    stream = BatchStream(x, y, a.batch, device=dev)
    G, D = with_torch_layers(base_g).to(dev), with_torch_layers(base_d).to(dev)
    og, od = adam_pair(G, D, 2e-4, 2e-4)
    results["plain loop, fp32"] = timed(lambda: plain_loop(G, D, og, od, stream, 100, classes, 1))
    for precision in ("fp32", "bf16"):
        cast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        for nhwc in (False, True):
            for compiled in (False, True):
                g = game(nhwc, compiled)

                def step(g=g, cast=cast):
                    with cast():
                        g.step(stream)

                name = f"Game.step, {precision}{', channels-last' if nhwc else ''}{', compiled' if compiled else ''}"
                results[name] = timed(step)
                print(f"{name}: {results[name][0]:.0f} img/s (warm-up {results[name][1]:.1f} s)", flush=True)
    plain = results["plain loop, fp32"][0]
    rows = [f"| {datetime.date.today()} | {name}, conditional DCGAN {a.size}x{a.size} width {a.width}, batch {a.batch}, "
            f"{a.iterations} it | plain loop fp32 {plain:.0f} img/s | {rate:.0f} img/s (first 10 it {first:.1f} s) | "
            f"**{rate / plain:.2f}x** | {torch.cuda.get_device_name(0)}, torch {torch.__version__} |"
            for name, (rate, first) in results.items() if not name.startswith("plain")]
    print("\n".join(rows))
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
