"""gan_core's game step on each available device, side by side: images/second of one iteration
(k D updates + one G update) of the conditional DCGAN, on CPU and, where present, CUDA.

Needs only gan_core's own dependencies (torch, torchvision, numpy, scikit-learn for the data), so it
also runs on a bare GPU machine.

    python benchmarks/game_step_devices.py --iterations 100
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models  # noqa: E402
from gan_core.data import load_dataset  # noqa: E402
from gan_core.data.stream import BatchStream  # noqa: E402
from gan_core.metrics import TrainingProbe, load_or_train  # noqa: E402
from gan_core.visual import sample_grid  # noqa: E402


def rate(device: str, iterations: int, batch: int, k: int, width: int, data, probe) -> dict:
    torch.manual_seed(0)
    train, _ = data
    spec = ModelSpec("dcgan", 64, train.image_shape, train.num_classes, width, width)
    g, d = build_models(spec)
    g, d = g.to(device), d.to(device)
    game = Game(g, d, *adam_pair(g, d, 2e-4, 2e-4), GameOptions(k=k, ema_beta=0.999), label_prior=train.label_prior())
    x, y = train.tensors()
    stream = BatchStream(x, y, batch, device=device)
    for _ in range(5):
        game.step(stream)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        stats = game.step(stream)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    grid = sample_grid(game.ema.model)
    metrics = probe(game.ema.model)
    assert all(map(lambda v: v == v, stats.as_dict().values())), "NaN in the game's statistics"
    assert grid.shape[0] == 3 and metrics["fd"] > 0
    return {"images_per_second": iterations * k * batch / secs, "fd": metrics["fd"],
            "label_fidelity": metrics["label_fidelity"], **stats.as_dict()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the row to this file (default: print only)")
    args = ap.parse_args()
    data = load_dataset("digits").split(0.1)
    net, _ = load_or_train(*data, cache_dir="/tmp/ganpipe-features")
    probe = TrainingProbe(net, data[1], 150, data[0].label_prior())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    res = {dev: rate(dev, args.iterations, args.batch, args.k, args.width, data, probe) for dev in devices}
    for dev, r in res.items():
        print(dev, {k: round(v, 4) for k, v in r.items()})
    gpu = torch.cuda.get_device_name(0) if "cuda" in res else "none"
    ratio = res["cuda"]["images_per_second"] / res["cpu"]["images_per_second"] if "cuda" in res else float("nan")
    row = (f"| {datetime.date.today()} | game step, conditional DCGAN width {args.width}, digits 28x28, batch "
           f"{args.batch}, k={args.k}, {args.iterations} it | CPU {res['cpu']['images_per_second']:.0f} img/s | "
           + (f"CUDA {res['cuda']['images_per_second']:.0f} img/s" if "cuda" in res else "no CUDA")
           + f" | **{ratio:.1f}x** | {gpu}; CPU {platform.machine()}, torch {torch.__version__} |")
    print(row)
    if args.out:
        with open(args.out, "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
