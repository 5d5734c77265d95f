"""Checkpoint files: the game's state (G, D, optimizers, EMA), the iteration, RNG states, the config.

A checkpoint directory holds `state.pt` (written by rank 0) and `rng_rank{R}.pt` (one per rank, so
that every rank continues its own random stream); each file has a `FILE.sha256` beside it, written
after the file itself. Reading verifies the checksum first: a damaged or cut-short file is named and
passed over, never loaded. Loading uses torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_core import ModelSpec

from ..errors import UserError
from .names import is_local

STATE_FILE = "state.pt"
SUM_SUFFIX = ".sha256"


class CheckpointError(UserError):
    """A file that is not a readable ganpipe checkpoint; the message names it."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_with_checksum(obj, path: Path) -> None:
    """torch.save to `path`, then its sha256 beside it (the checksum's presence marks it complete)."""
    torch.save(obj, path)
    tmp = path.with_name(path.name + SUM_SUFFIX + ".tmp")
    tmp.write_text(sha256_file(path) + "\n")
    os.replace(tmp, path.with_name(path.name + SUM_SUFFIX))


def verify(path: str | Path) -> str | None:
    """None when `path` matches its checksum; else what is wrong with it."""
    path = Path(path)
    side = path.with_name(path.name + SUM_SUFFIX)
    if not path.is_file():
        return f"{path.name} is missing"
    if not side.is_file():
        return f"{path.name} has no checksum (written incompletely)"
    if sha256_file(path) != side.read_text().strip():
        return f"{path.name} does not match its sha256 (damaged)"
    return None


def rng_state() -> dict:
    """torch's and numpy's global RNG states, as tensors and numbers (loadable with weights_only)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_cached": float(cached)}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint carries besides weights, for evaluation, the registry and generation."""
    spec: ModelSpec
    class_names: tuple[str, ...]
    label_prior: tuple[float, ...]
    data_fingerprint: str
    train_fingerprint: str = ""
    data_source: str = ""
    run_id: str | None = None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "class_names": list(self.class_names),
                "label_prior": list(self.label_prior)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "checkpoint") -> "CheckpointMeta":
        if "spec" not in d:
            raise UserError(f"{source}: this checkpoint does not describe its model (no spec); retrain with ganpipe")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "spec": ModelSpec.from_dict(d["spec"]),
                      "class_names": tuple(d.get("class_names") or ()),
                      "label_prior": tuple(d.get("label_prior") or ())})


def save(directory: str | Path, game_state: dict, iteration: int, config: dict, rank: int,
         meta: CheckpointMeta | None = None) -> None:
    """Rank 0 writes the model state (with its `meta`); every rank its RNG."""
    directory = Path(directory)
    if rank == 0:
        write_with_checksum({**game_state, "iteration": iteration, "config": json.dumps(config),
                             "meta": json.dumps(meta.to_dict() if meta else {})}, directory / STATE_FILE)
    write_with_checksum(rng_state(), directory / f"rng_rank{rank}.pt")


def _load(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # random bytes, a truncated zip, a pickle that weights_only refuses
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: not a readable {what} ({e.__class__.__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a {what} (holds a {type(state).__name__})")
    return state


def load_state(directory: str | Path) -> dict:
    """The model state of a checkpoint directory (or a state.pt path). A file that fails its checksum
    or is not a ganpipe checkpoint raises CheckpointError naming it."""
    path = Path(directory)
    path = path / STATE_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint state here ({listing(path.parent)})")
    if path.with_name(path.name + SUM_SUFFIX).is_file():
        problem = verify(path)
        if problem:
            raise CheckpointError(f"{path}: {problem}")
    state = _load(path, "ganpipe checkpoint")
    if "G" not in state or "iteration" not in state:
        raise CheckpointError(f"{path}: not a ganpipe checkpoint (no generator state or iteration)")
    return state


def load_rng(directory: str | Path, rank: int) -> dict | None:
    path = Path(directory) / f"rng_rank{rank}.pt"
    return _load(path, "RNG state") if path.is_file() else None


def problems(folder: str | Path, world_size: int) -> list[str]:
    """What keeps a checkpoint folder from being resumed from by `world_size` ranks (empty: nothing)."""
    folder = Path(folder)
    names = [STATE_FILE, *(f"rng_rank{r}.pt" for r in range(world_size))]
    return [p for p in (verify(folder / n) for n in names) if p]


def folder_name(iteration: int) -> str:
    """The name of the checkpoint folder of an iteration (Ray Train's and a one-worker trial's alike)."""
    return f"checkpoint_{iteration:08d}"


def iteration_of(folder: str | Path) -> int:
    """The iteration of a `checkpoint_NNNNNNNN` folder, from its name."""
    return int(Path(folder).name.split("_")[-1])


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """`checkpoint_*` folders of a local run directory, newest first."""
    root = Path(run_dir)
    if not is_local(str(run_dir)) or not root.is_dir():
        return []
    folders = [p for p in root.glob("checkpoint_*") if p.is_dir() and p.name.split("_")[-1].isdigit()]
    return sorted(folders, reverse=True)


def scan(run_dir: str | Path, world_size: int = 1) -> tuple[list[Path], dict[Path, list[str]]]:
    """(good folders newest first, {damaged folder: its problems}) of a run directory."""
    good, damaged = [], {}
    for folder in checkpoint_folders(run_dir):
        found = problems(folder, world_size)
        if found:
            damaged[folder] = found
        else:
            good.append(folder)
    return good, damaged


def latest_loadable(run_dir: str | Path, world_size: int = 1) -> tuple[Path, dict] | None:
    """The newest complete, undamaged `checkpoint_*` folder of a local run directory, with its state.

    Ray hands a restarted worker group its latest *registered* checkpoint, which can lag behind
    what is on disk (or be none) when a worker is lost while checkpoints are being registered.
    Complete means: every file (state and each rank's RNG) matches its checksum and loads; a damaged
    folder is named in a warning and passed over.
    """
    good, damaged = scan(run_dir, world_size)
    for folder, found in damaged.items():
        warnings.warn(f"checkpoint {folder} skipped: {'; '.join(found)}", stacklevel=2)
    for folder in good:
        try:
            return folder, load_state(folder)
        except CheckpointError as e:
            warnings.warn(f"checkpoint {folder} skipped: {e}", stacklevel=2)
    return None


DAMAGED_DIR = "damaged"  # where a resumed run's damaged checkpoint folders are moved, inside the run folder
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's registered checkpoints


def set_aside(run_dir: str | Path, folders: list[Path]) -> list[Path]:
    """Move damaged checkpoint folders of a run being resumed into RUN/damaged/ (kept for inspection,
    never loaded) and drop them from Ray Train's checkpoint list, which would otherwise delete the
    folder the resumed run writes under the same name and then fail the run for its absence."""
    root = Path(run_dir)
    moved = []
    for folder in folders:
        dest = root / DAMAGED_DIR / folder.name
        n = 1
        while dest.exists():
            dest, n = root / DAMAGED_DIR / f"{folder.name}.{n}", n + 1
        dest.parent.mkdir(exist_ok=True)
        os.replace(folder, dest)
        moved.append(dest)
    forget_in_ray_snapshot(root, {f.name for f in folders})
    return moved


def forget_in_ray_snapshot(run_dir: str | Path, names: set[str]) -> None:
    """Ray Train's snapshot of a run without the checkpoints named (written whole or not at all)."""
    path = Path(run_dir) / RAY_SNAPSHOT
    if not names or not path.is_file():
        return
    snap = json.loads(path.read_text())
    pairs = [(r, i) for r, i in zip(snap.get("checkpoint_results", []), snap.get("checkpoint_report_indices", []))
             if r.get("checkpoint_dir_name") not in names]
    snap["checkpoint_results"] = [r for r, _ in pairs]
    snap["checkpoint_report_indices"] = [i for _, i in pairs]
    latest = snap.get("latest_checkpoint_result")
    if latest is not None and latest.get("checkpoint_dir_name") in names:
        snap["latest_checkpoint_result"] = max(pairs, key=lambda p: p[1])[0] if pairs else None
    pending = [(r, v) for r, v in zip(snap.get("pending_training_results", []), snap.get("pending_validation_specs", []))
               if r.get("checkpoint_dir_name") not in names]
    snap["pending_training_results"] = [r for r, _ in pending]
    snap["pending_validation_specs"] = [v for _, v in pending]
    for key in ("validated_checkpoint_dir_names", "timed_out_validation_checkpoint_dir_names",
                "failed_validation_checkpoint_dir_names"):
        if key in snap:
            snap[key] = [n for n in snap[key] if n not in names]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snap))
    os.replace(tmp, path)


METRICS_FILE = "metrics.json"
HANDED_ON = "handed_on.json"  # in a run folder: the checkpoint the finished run handed on to later stages


def record_handed_on(run_dir: str | Path, folder: str | Path) -> None:
    """Note in a local run folder which of its checkpoints the run handed on (read by `run_checkpoint`)."""
    path = Path(run_dir) / HANDED_ON
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"checkpoint": Path(folder).name}) + "\n")
    os.replace(tmp, path)


def listing(run_dir: str | Path) -> str:
    """The checkpoint folders of a run folder, for an error message."""
    found = [p.name for p in checkpoint_folders(run_dir)]
    return f"checkpoints there: {', '.join(found)}" if found else "it holds no checkpoint_* folder"


def run_checkpoint(run_dir: str | Path) -> tuple[Path, str]:
    """The checkpoint a run folder stands for: the one the run handed on when it finished, else (a run
    that did not finish) its newest complete one; with the reason, for the user."""
    root = Path(run_dir)
    try:
        name = json.loads((root / HANDED_ON).read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        name = None
    if name and (root / name / STATE_FILE).is_file():
        return root / name, "the checkpoint the run handed on"
    good, _ = scan(root, 1)
    if not good:
        raise CheckpointError(f"{root}: no complete checkpoint in this run folder ({listing(root)})")
    return good[0], "the run's newest complete checkpoint (it did not finish)"


def persist(folder: str | Path, run_dir: str | Path, iteration: int, metrics: dict) -> Path:
    """Copy a written checkpoint into a local run directory under its iteration's name, with the
    metrics reported at it; the folder appears complete or not at all (copied beside, then renamed)."""
    import shutil

    dest = Path(run_dir) / folder_name(iteration)
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    shutil.copytree(folder, part)
    (part / METRICS_FILE).write_text(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(part, dest)
    return dest


def reported_metrics(folder: str | Path) -> dict:
    """The metrics a persisted checkpoint was reported with ({} when none were kept)."""
    path = Path(folder) / METRICS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def prune(run_dir: str | Path, keep: int | None, attribute: str, order: str) -> list[Path]:
    """Keep the newest checkpoint folder and the `keep` best by the reported `attribute` ("min" or "max"
    `order`; a folder without a finite score counts as worst), as Ray Train's CheckpointConfig(num_to_keep)
    keeps them; delete the rest. Returns the folders kept, newest first."""
    import math
    import shutil

    folders = checkpoint_folders(run_dir)
    if keep is None or len(folders) <= keep:
        return folders

    def rank(folder: Path) -> tuple[bool, float]:
        x = reported_metrics(folder).get(attribute)
        if not (isinstance(x, (int, float)) and math.isfinite(x)):
            return True, 0.0
        return False, x if order == "min" else -x

    kept = set(sorted(folders, key=rank)[:keep]) | {folders[0]}
    for f in folders:
        if f not in kept:
            shutil.rmtree(f, ignore_errors=True)
    return [f for f in folders if f in kept]
