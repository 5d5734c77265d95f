"""All metrics for one set of generated (image, label) samples against the real data, with the
real-vs-real values beside them (the floor of the Fréchet distance, the ceiling of the rest)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..game import unwrap
from ..sampling import sample_latent, seeded
from .bootstrap import fd_interval, share_interval
from .cas import CAS_EPOCHS, classification_accuracy_score
from .classifier import MIN_STEPS, FeatureNet
from .fidelity import label_fidelity
from .frechet import frechet_distance
from .memorization import memorization
from .prdc import prdc

MIN_SAMPLES = 10


@torch.no_grad()
def sample_generator(generator: nn.Module, n: int, label_prior: torch.Tensor | None, seed: int = 0,
                     batch: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples in [-1, 1] from a fixed seed; labels drawn from `label_prior` when conditional."""
    g = unwrap(generator)
    was = g.training
    g.eval()
    device = next(g.parameters()).device
    if g.num_classes and label_prior is None:
        label_prior = torch.full((g.num_classes,), 1.0 / g.num_classes)
    z, y = sample_latent(n, g.z_dim, label_prior if g.num_classes else None, seeded(seed))
    out = [g(z[i:i + batch].to(device), None if y is None else y[i:i + batch].to(device)).float().cpu()
           for i in range(0, n, batch)]
    g.train(was)
    return torch.cat(out), y


def _check_count(n: int, what: str) -> None:
    if n < MIN_SAMPLES:
        raise ValueError(f"{what}: {n} samples, the metrics need at least {MIN_SAMPLES}")


def cheap_metrics(net: FeatureNet, fake_x: torch.Tensor, fake_y: torch.Tensor | None, holdout_features: np.ndarray,
                  num_classes: int) -> dict[str, float]:
    """The metrics computed during training: Fréchet distance and (conditional) label fidelity."""
    _check_count(len(fake_x), "generated set")
    feats, probs = net.embed(fake_x)
    out = {"fd": frechet_distance(holdout_features, feats)}
    if fake_y is not None:
        out["label_fidelity"] = label_fidelity(probs, fake_y.numpy(), num_classes)["label_fidelity"]
    return out


def full_metrics(net: FeatureNet, train, holdout, fake_x: torch.Tensor, fake_y: torch.Tensor | None,
                 seed: int = 0, cas: bool = True, prdc_k: int = 5, max_points: int = 2000,
                 cas_seeds: int = 1, cas_epochs: int = CAS_EPOCHS, cache_dir=None,
                 cas_max_steps: int | None = None, cas_min_steps: int = MIN_STEPS) -> dict:
    """Every metric, each with its real-data reference under the key `<name>_real`; fd, label
    fidelity, CAS and the CAS ratio also with a 95% bootstrap interval (`<name>_lo`, `<name>_hi`); CAS
    over `cas_seeds` classifier trainings per side, each `cas_epochs` epochs long and at most
    `cas_max_steps` and at least `cas_min_steps` batches (the real side's kept in `cache_dir` when
    given)."""
    _check_count(len(fake_x), "generated set")
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    rng = np.random.default_rng(seed)
    n = min(len(fake_x), len(xh), max_points)
    fi = rng.choice(len(fake_x), n, replace=False)
    ti = rng.choice(len(xt), min(len(xt), max_points), replace=False)
    f_fake, p_fake = net.embed(fake_x[fi])
    f_hold, _ = net.embed(xh[:n])
    f_train, _ = net.embed(xt[ti])
    m: dict = {"classifier_holdout_accuracy": net.holdout_accuracy, "samples": int(n)}
    m["fd"] = frechet_distance(f_hold, f_fake)
    m["fd_lo"], m["fd_hi"] = fd_interval(f_hold, f_fake, seed=seed)
    m["fd_real"] = frechet_distance(f_hold, f_train[:n])
    m.update(prdc(f_hold, f_fake, prdc_k))
    m.update({f"{k}_real": v for k, v in prdc(f_hold, f_train[:n], prdc_k).items()})
    if fake_y is not None:
        fid = label_fidelity(p_fake, fake_y[fi].numpy(), train.num_classes)
        m["label_fidelity"], m["label_fidelity_per_class"] = fid["label_fidelity"], fid["per_class"]
        m["label_fidelity_lo"], m["label_fidelity_hi"] = share_interval(fid["hits"], seed=seed)
        m["label_fidelity_real"] = net.holdout_accuracy
        if cas:
            m.update(classification_accuracy_score(fake_x, fake_y, xt, yt, xh, yh, train.num_classes, seed=seed,
                                                      seeds=cas_seeds, epochs=cas_epochs, cache_dir=cache_dir,
                                                      max_steps=cas_max_steps, min_steps=cas_min_steps))
    mem = memorization(f_train, f_hold, f_fake)
    m["near_copy_share"], m["near_copy_share_real"] = mem["near_copy_share"], 0.01
    m["nn_distance_fake_median"], m["nn_distance_real_median"] = (mem["nn_distance_fake_median"],
                                                                  mem["nn_distance_holdout_median"])
    return m


_PART_METRICS = ("fd", "precision", "recall", "coverage", "label_fidelity")


def compare_in_parts(net: FeatureNet, holdout_x: torch.Tensor,
                     sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]], num_classes: int,
                     prdc_k: int = 5) -> dict:
    """fd, precision, recall, coverage and label fidelity of each generated set as the mean over
    disjoint parts of the holdout's size, with the standard error of that mean. Each part is measured
    as `full_metrics` measures one generated set (as many generated rows as real ones), so the means
    keep the protocol's scale while the comparison rests on every row: with 4,000 rows per set, eight
    parts. Every set is cut into the same number of parts, row j going to part j mod parts."""
    f_hold, _ = net.embed(holdout_x)
    n = len(f_hold)
    parts = min(len(x) for x, _ in sets.values()) // n
    if parts < 2:
        raise ValueError(f"comparing in parts needs at least {2 * n} rows per set (twice the holdout's {n})")
    out: dict = {"parts": parts, "rows_per_part": n, "sets": {}}
    for name, (x, y) in sets.items():
        feats, probs = net.embed(x[: parts * n])
        values: dict[str, list[float]] = {m: [] for m in _PART_METRICS}
        for j in range(parts):
            f = feats[j::parts]
            values["fd"].append(frechet_distance(f_hold, f))
            for k, v in prdc(f_hold, f, prdc_k).items():
                if k in values:
                    values[k].append(v)
            if y is not None:
                values["label_fidelity"].append(
                    label_fidelity(probs[j::parts], y[: parts * n][j::parts].numpy(), num_classes)["label_fidelity"])
        out["sets"][name] = {m: {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / np.sqrt(len(v)))}
                             for m, v in values.items() if v}
    return out
