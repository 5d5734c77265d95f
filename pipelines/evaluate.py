"""`ganpipe evaluate`: every metric for a generator or a Parquet dataset, a printed table, and a
report (Markdown, per-class sample grid, metrics.json) logged to MLflow when a run is known."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from gan_core.data import load_dataset
from gan_core.metrics import full_metrics, load_or_train, sample_generator
from gan_core.visual import grid_by_class

from . import tracking
from .config import Config
from .errors import UserError
from .generators import resolve
from .train_loop import load_data

# name, meaning, better
ROWS = [
    ("fd", "Fréchet distance, generated vs real holdout (feature net)", "lower"),
    ("precision", "share of samples inside the real manifold", "higher"),
    ("recall", "share of real images inside the generated manifold", "higher"),
    ("density", "real neighbourhoods holding each sample, / k", "~1"),
    ("coverage", "share of real images with a sample nearby", "higher"),
    ("label_fidelity", "classifier agrees with the requested label", "higher"),
    ("cas", "accuracy on real holdout of a classifier trained on samples", "higher"),
    ("near_copy_share", "samples closer to a training image than 99% of real holdout", "lower"),
    ("nn_distance_fake_median", "median distance to the nearest training image", "~real"),
]
REFERENCE = {"fd": "fd_real", "precision": "precision_real", "recall": "recall_real", "density": "density_real",
             "coverage": "coverage_real", "label_fidelity": "label_fidelity_real", "cas": "cas_real",
             "near_copy_share": "near_copy_share_real", "nn_distance_fake_median": "nn_distance_real_median"}


@dataclass
class EvalResult:
    metrics: dict
    report: Path
    run_id: str | None


def table(metrics: dict) -> str:
    lines = [f"{'metric':<24}{'value':>10}{'real data':>12}  better  meaning"]
    for name, meaning, better in ROWS:
        if name in metrics:
            ref = metrics.get(REFERENCE[name])
            lines.append(f"{name:<24}{metrics[name]:>10.4f}{'' if ref is None else f'{ref:>12.4f}'}  "
                         f"{better:<6}  {meaning}")
    lines.append(f"{'cas_ratio':<24}{metrics['cas_ratio']:>10.4f}{'1.0000':>12}  higher  CAS / real-trained accuracy"
                 if "cas_ratio" in metrics else "")
    lines.append(f"feature network accuracy on real holdout: {metrics['classifier_holdout_accuracy']:.4f} "
                 f"({metrics['samples']} samples per set)")
    return "\n".join(ln for ln in lines if ln)


def _report(out: Path, metrics: dict, subject: str, class_names: list[str]) -> Path:
    md = [f"# Evaluation of {subject}", "", f"{time.strftime('%Y-%m-%d %H:%M:%S')}", "",
          "![samples, one row per class](samples_per_class.png)", "", "```", table(metrics), "```", ""]
    if "label_fidelity_per_class" in metrics:
        md += ["| class | label fidelity |", "|---|---|"]
        md += [f"| {n} | {v:.3f} |" for n, v in zip(class_names, metrics["label_fidelity_per_class"])]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def evaluate(cfg: Config, model: str | None, dataset: str | None, out_dir: str | None) -> EvalResult:
    from torchvision.utils import save_image

    if bool(model) == bool(dataset):
        raise UserError("give exactly one of --model URI or --dataset DIR")
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run_id = None
    if model:
        tracking.check_reachable(uri)
        loaded = resolve(model, uri)
        cfg = Config.model_validate({**loaded.config, "mlflow": cfg.mlflow.model_dump(), "eval": cfg.eval.model_dump()})
        data = load_data(cfg)
        if data.fingerprint != loaded.meta.get("data_fingerprint"):
            raise UserError(f"--model {model}: data {cfg.data.source!r} has changed since this generator was trained "
                            f"(fingerprint {data.fingerprint[:12]} vs {str(loaded.meta.get('data_fingerprint'))[:12]})")
        # CAS trains on as many generated samples as the real training split holds.
        n = max(cfg.eval.samples, len(data) - round(len(data) * cfg.data.holdout_fraction)) if cfg.eval.cas \
            else cfg.eval.samples
        fake_x, fake_y = sample_generator(loaded.generator, n, loaded.label_prior, cfg.seed)
        run_id, subject = loaded.run_id, f"generator {model} (iteration {loaded.iteration})"
    else:
        data = load_data(cfg)
        synth = load_dataset(f"parquet:{dataset}", data.image_shape[1], data.image_shape[0], "resize",
                             data.class_names, allow_empty_classes=True)
        fake_x, fake_y = synth.tensors()
        subject = f"dataset {dataset}"
    train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
    net, _ = load_or_train(train, holdout, cfg.eval.cache_dir, cfg.eval.classifier_epochs, cfg.seed)
    try:
        metrics = full_metrics(net, train, holdout, fake_x, fake_y, cfg.seed, cas=cfg.eval.cas)
    except ValueError as e:
        raise UserError(f"{model or dataset}: {e}") from None
    out = Path(out_dir or f"eval_reports/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    save_image(grid_by_class(fake_x, fake_y, train.num_classes), out / "samples_per_class.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = _report(out, metrics, subject, train.class_names)
    if run_id:
        c = tracking.client(uri)
        for f in ("report.md", "samples_per_class.png", "metrics.json"):
            tracking.with_retry(lambda: c.log_artifact(run_id, str(out / f), "evaluation"))
        scalars = {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        tracking.log_metrics(uri, run_id, scalars, step=loaded.iteration)
    return EvalResult(metrics, report, run_id)
