"""How many rows of each class a dataset gets: `balanced`, `proportional` (the training data's class
shares) or explicit counts `0=500,3=2000` (by index or class name). The counts are exact."""
from __future__ import annotations

from ...errors import UserError


def label_counts(spec: str, rows: int | None, class_names: list[str], prior: list[float] | None) -> list[int]:
    """Rows per class for `--labels SPEC` and `--rows N` (N may be omitted with explicit counts)."""
    k = len(class_names)
    spec = (spec or "balanced").strip()
    if spec in ("balanced", "proportional"):
        if rows is None or rows <= 0:
            raise UserError(f"--rows {rows}: give a positive number of rows")
        if spec == "balanced":
            shares = [1.0 / k] * k
        else:
            if not prior or len(prior) != k:
                raise UserError("--labels proportional: the model does not record its training data's class shares")
            shares = [float(p) for p in prior]
        return _largest_remainder(rows, shares)
    counts = [0] * k
    for item in spec.split(","):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not raw.strip().lstrip("-").isdigit():
            raise UserError(f"--labels {spec!r}: expected balanced, proportional, or CLASS=COUNT pairs "
                            f"like 0=500,3=2000 (got {item!r})")
        if name in class_names:
            c = class_names.index(name)
        elif name.isdigit() and int(name) < k:
            c = int(name)
        else:
            raise UserError(f"--labels: the model has no class {name!r} (classes: {', '.join(class_names)})")
        n = int(raw)
        if n < 0:
            raise UserError(f"--labels: {name}={n}: counts cannot be negative")
        counts[c] += n
    total = sum(counts)
    if total <= 0:
        raise UserError(f"--labels {spec!r}: asks for no rows")
    if rows is not None and rows != total:
        raise UserError(f"--rows {rows} disagrees with --labels {spec!r}, which asks for {total} rows")
    return counts


def _largest_remainder(rows: int, shares: list[float]) -> list[int]:
    """Integer counts summing to `rows`, as close to rows x share as integers allow (ties to low classes)."""
    total = sum(shares)
    exact = [rows * s / total for s in shares]
    counts = [int(e) for e in exact]
    order = sorted(range(len(shares)), key=lambda c: (-(exact[c] - counts[c]), c))
    for c in order[: rows - sum(counts)]:
        counts[c] += 1
    return counts
