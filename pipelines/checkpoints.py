"""Checkpoint files: the game's state (G, D, optimizers, EMA), the iteration, RNG states, the config.

A checkpoint directory holds `state.pt` (written by rank 0) and `rng_rank{R}.pt` (one per rank, so
that every rank continues its own random stream). Loading uses torch.load(weights_only=True).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"


def rng_state() -> dict:
    """torch's and numpy's global RNG states, as tensors and numbers (loadable with weights_only)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_cached": float(cached)}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))


def save(directory: str | Path, game_state: dict, iteration: int, config: dict, rank: int,
         meta: dict | None = None) -> None:
    """Rank 0 writes the model state (with `meta`: model spec, class names, run id); every rank its RNG."""
    directory = Path(directory)
    if rank == 0:
        torch.save({**game_state, "iteration": iteration, "config": json.dumps(config),
                    "meta": json.dumps(meta or {})}, directory / STATE_FILE)
    torch.save(rng_state(), directory / f"rng_rank{rank}.pt")


def load_state(directory: str | Path) -> dict:
    """The model state of a checkpoint directory (or a state.pt path)."""
    path = Path(directory)
    path = path / STATE_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint state here")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_rng(directory: str | Path, rank: int) -> dict | None:
    path = Path(directory) / f"rng_rank{rank}.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None


def latest_loadable(run_dir: str | Path, world_size: int = 1) -> tuple[Path, dict] | None:
    """The newest complete `checkpoint_*` folder of a local run directory, with its state.

    Ray hands a restarted worker group its latest *registered* checkpoint, which can lag behind
    what is on disk (or be none) when a worker is lost while checkpoints are being registered.
    Complete means: the state loads and every rank's RNG file is there; a folder whose copy was
    cut short is passed over.
    """
    root = Path(run_dir)
    if "://" in str(run_dir) or not root.is_dir():
        return None
    folders = [p for p in root.glob("checkpoint_*") if p.is_dir() and p.name.split("_")[-1].isdigit()]
    for folder in sorted(folders, reverse=True):
        if not all((folder / f"rng_rank{r}.pt").is_file() for r in range(world_size)):
            continue
        try:
            return folder, load_state(folder)
        except (FileNotFoundError, RuntimeError, EOFError, OSError):
            continue
    return None
