"""The conditional DCGAN's training step on a GPU against the plain DCGAN loop (pytorch/examples'
dcgan iteration, fp32) on the same models and batch, in one process: gan_core's `Game.step` as
shipped (a fresh batch for G's update) and at the plain loop's arithmetic (`reuse_fake`), each in
fp32 and in bf16 autocast (`train.precision`), NCHW and channels-last; `--compile` adds torch.compile of the shipped
step. Needs torch and gan_core only. `--device cpu` runs the same on the CPU (a check of the script).

    python benchmarks/gpu_step.py --iterations 200 --batch 128 --sizes 28,64
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_dcgan import plain_loop, with_torch_layers  # noqa: E402

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models  # noqa: E402
from gan_core.data.stream import BatchStream  # noqa: E402


def device_name(dev: str) -> str:
    return torch.cuda.get_device_name(0) if dev == "cuda" else "CPU"


def synchronize(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def measure(dev: str, size: int, width: int, batch: int, iterations: int, compiled: bool) -> dict[str, float]:
    """Images/second of each variant at one image size, the plain loop first."""
    torch.manual_seed(0)
    n, classes, z_dim = 4096, 10, 100
    x = torch.rand(n, 1, size, size, device=dev) * 2 - 1  # content does not change the step's cost
    y = torch.randint(0, classes, (n,), device=dev)
    base_g, base_d = build_models(ModelSpec("dcgan", z_dim, (1, size, size), classes, width, width))
    stream = BatchStream(x, y, batch, device=dev)

    def timed(step, warmup: int = 10) -> float:
        for _ in range(warmup):
            step()
        synchronize(dev)
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        synchronize(dev)
        return iterations * batch / (time.perf_counter() - start)

    G, D = with_torch_layers(base_g).to(dev), with_torch_layers(base_d).to(dev)
    og, od = adam_pair(G, D, 2e-4, 2e-4)
    rates = {"plain loop, fp32": timed(lambda: plain_loop(G, D, og, od, stream, z_dim, classes, 1))}
    variants = [(p, reuse, nhwc, False) for p in ("fp32", "bf16") for reuse in (False, True) for nhwc in (False, True)]
    variants += [("bf16", False, True, True)] if compiled else []
    for precision, reuse, nhwc, comp in variants:
        g, d = copy.deepcopy(base_g).to(dev), copy.deepcopy(base_d).to(dev)
        game = Game(g, d, *adam_pair(g, d, 2e-4, 2e-4),
                    GameOptions(k=1, reuse_fake=reuse, channels_last=nhwc, precision=precision))
        if comp:
            game.G, game.D = torch.compile(game.G), torch.compile(game.D)

        def step(game=game):
            game.step(stream)

        name = (f"Game.step {'reuse_fake (the plain loop arithmetic)' if reuse else 'shipped (fresh batch)'}, "
                f"{precision}{', channels-last' if nhwc else ''}{', compiled' if comp else ''}")
        rates[name] = timed(step)
        print(f"{size}x{size}: {name}: {rates[name]:.0f} img/s", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--sizes", default="28,64", help="image sides, comma-separated (28: mnist5k's)")
    ap.add_argument("--compile", action="store_true", help="also the shipped bf16 step under torch.compile")
    ap.add_argument("--out", default=None, help="append the rows to this file (default: print only)")
    ap.add_argument("--json", default=None, help="write the rates to this JSON file")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_step.py: no CUDA device on this machine")
    results = {int(s): measure(a.device, int(s), a.width, a.batch, a.iterations, a.compile)
               for s in a.sizes.split(",")}
    rows = []
    for size, rates in results.items():
        plain = rates["plain loop, fp32"]
        rows += [f"| {datetime.date.today()} | {name}, conditional DCGAN {size}x{size} width {a.width}, batch "
                 f"{a.batch}, {a.iterations} it | plain loop fp32 {plain:.0f} img/s | {rate:.0f} img/s | "
                 f"**{rate / plain:.2f}x** | {device_name(a.device)}, torch {torch.__version__} |"
                 for name, rate in rates.items() if not name.startswith("plain")]
    print("\n".join(rows))
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(rows) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({str(s): r for s, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
