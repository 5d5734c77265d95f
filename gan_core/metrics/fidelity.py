"""Label fidelity of a conditional generator: does the classifier see the requested label?"""
from __future__ import annotations

import numpy as np


def label_fidelity(probs: np.ndarray, requested: np.ndarray, num_classes: int) -> dict[str, object]:
    """Share of samples whose predicted label equals the requested one, overall and per class."""
    pred = probs.argmax(1)
    hit = pred == requested
    per_class = [float(hit[requested == c].mean()) if (requested == c).any() else float("nan")
                 for c in range(num_classes)]
    return {"label_fidelity": float(hit.mean()), "per_class": per_class, "hits": hit}
