"""The table of metrics: name, direction, meaning and the key of the real-data reference.

Everything that ranks or prints a metric reads it here: the config (which metrics a sweep may
optimize), the evaluation table, checkpoint ranking and the registry's champion rule.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str | None  # "min", "max", or None when neither end is better (shown as `better`)
    meaning: str
    reference: str | None  # key of the real-data value computed beside it
    better: str  # how the printed table says which way is good
    during_training: bool = False  # computed by the training probe (and so usable by a sweep)
    reference_value: float | None = None  # a fixed real-data value, where it is one by definition
    bar: float | None = None  # the quality bar: this multiple of the real-data value, on the better side

    def real_value(self, metrics: dict) -> float | None:
        """The real-data value beside this metric in a set of computed metrics."""
        return metrics.get(self.reference) if self.reference else self.reference_value


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fd", "min", "Fréchet distance, generated vs real holdout (feature net)", "fd_real", "lower", True,
           bar=1.5),
    Metric("precision", "max", "share of samples inside the real manifold", "precision_real", "higher", bar=0.95),
    Metric("recall", "max", "share of real images inside the generated manifold", "recall_real", "higher", bar=0.9),
    Metric("density", None, "real neighbourhoods holding each sample, / k", "density_real", "~1"),
    Metric("coverage", "max", "share of real images with a sample nearby", "coverage_real", "higher", bar=0.95),
    Metric("label_fidelity", "max", "classifier agrees with the requested label", "label_fidelity_real", "higher",
           True, bar=1.0),
    Metric("cas", "max", "accuracy on real holdout of a classifier trained on samples", "cas_real", "higher"),
    Metric("cas_ratio", "max", "CAS / real-trained accuracy", None, "higher", reference_value=1.0, bar=0.95),
    Metric("near_copy_share", "min", "samples closer to a training image than 99% of real holdout",
           "near_copy_share_real", "lower"),
    Metric("nn_distance_fake_median", None, "median distance to the nearest training image",
           "nn_distance_real_median", "~real"),
)}

TRAINING_METRICS: dict[str, str] = {m.name: m.direction for m in METRICS.values() if m.during_training}


def _direction(name: str) -> str:
    direction = METRICS[name].direction
    if direction is None:
        raise ValueError(f"metric {name!r} has no better direction")
    return direction


def is_better(name: str, new: float, old: float) -> bool:
    """Whether `new` is strictly better than `old` for metric `name`."""
    return new < old if _direction(name) == "min" else new > old


def within(name: str, new: float, best: float, tolerance: float) -> bool:
    """Whether `new` is as good as `best` for metric `name` once `best` is relaxed by `tolerance`, a
    fraction of its size (fd 0.40 with tolerance 0.05: anything up to 0.42); tolerance 0 asks for
    `best` itself or better."""
    slack = tolerance * abs(best)
    return new <= best + slack if _direction(name) == "min" else new >= best - slack


def quality_bar(metrics: dict) -> dict[str, tuple[float, float, bool]]:
    """The quality bar of a set of computed metrics: for each metric with a `bar` that was computed
    with its real-data value, (value, bound, met). The bound is `bar` times the real value: fd at most
    1.5x the real data's own floor; precision and coverage at least 0.95x the real data's, recall 0.9x;
    label fidelity at least the real data's; the CAS ratio at least 0.95."""
    out = {}
    for m in METRICS.values():
        ref = m.real_value(metrics)
        if m.bar is None or m.name not in metrics or ref is None:
            continue
        bound = m.bar * ref
        out[m.name] = (metrics[m.name], bound, within(m.name, metrics[m.name], bound, 0.0))
    return out
