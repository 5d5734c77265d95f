"""`ganpipe evaluate`: every metric for a generator or a Parquet dataset, a printed table, and a
report (Markdown, per-class sample grid, metrics.json) logged to MLflow when a run is known."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gan_core.data import load_dataset
from gan_core.metrics import METRICS, full_metrics, quality_bar, sample_generator
from gan_core.metrics.classifier import MIN_STEPS
from gan_core.visual import grid_by_class

from ..config import Config, auto
from ..config.build import feature_net, load_data
from ..errors import UserError
from ..services import contract, tracking
from ..services.models import LoadedGenerator, resolve


@dataclass
class EvalResult:
    metrics: dict
    report: Path
    run_id: str | None
    protocol: str = ""


def table(metrics: dict) -> str:
    """The printed table: every metric of the metric table that was computed, with its real-data value."""
    lines = [f"{'metric':<24}{'value':>10}{'95% interval':>20}{'real data':>12}  better  meaning"]
    for m in METRICS.values():
        if m.name in metrics:
            ref = m.real_value(metrics)
            lo, hi = metrics.get(f"{m.name}_lo"), metrics.get(f"{m.name}_hi")
            band = f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
            real = "" if ref is None else f"{ref:.4f}"
            lines.append(f"{m.name:<24}{metrics[m.name]:>10.4f}{band:>20}{real:>12}  {m.better:<6}  {m.meaning}")
    lines.append(f"feature network accuracy on real holdout: {metrics['classifier_holdout_accuracy']:.4f} "
                 f"({metrics['samples']} samples per set)")
    if metrics.get("cas_from") == "generator":
        lines.append(f"CAS: the generator's, from its own evaluation (each classifier trained on "
                     f"{int(metrics['cas_samples']):,} images, its samples or real, for {int(metrics['cas_steps']):,} "
                     f"batches of 64): these rows are its plain samples")
    elif "cas_samples" in metrics:
        lines.append(f"CAS: each classifier trained on {int(metrics['cas_samples']):,} images, generated or real, "
                     f"for {int(metrics['cas_steps']):,} batches of 64 (eval.cas_max_samples and eval.cas_max_steps "
                     f"cap them)")
    bar = quality_bar(metrics)
    if bar:
        missed = [f"{name} {value:.4g} (bar {bound:.4g})" for name, (value, bound, met) in bar.items() if not met]
        lines.append(f"quality bar (docs/quality.md): {len(bar) - len(missed)} of {len(bar)} met"
                     + (f"; not met: {', '.join(missed)}" if missed else ""))
    return "\n".join(ln for ln in lines if ln)


def _report(out: Path, metrics: dict, subject: str, class_names: list[str]) -> Path:
    md = [f"# Evaluation of {subject}", "", f"{time.strftime('%Y-%m-%d %H:%M:%S')}", "",
          "![samples, one row per class](samples_per_class.png)", "", "```", table(metrics), "```", ""]
    if "label_fidelity_per_class" in metrics:
        cas = "cas_per_class" in metrics
        md += ["| class | label fidelity |" + (" CAS: trained on samples | trained on real | gap |" if cas else ""),
               "|---|---|" + ("---|---|---|" if cas else "")]
        for i, (n, v) in enumerate(zip(class_names, metrics["label_fidelity_per_class"])):
            row = f"| {n} | {v:.3f} |"
            if cas:
                s, r = metrics["cas_per_class"][i], metrics["cas_real_per_class"][i]
                row += f" {s:.3f} | {r:.3f} | {r - s:+.3f} |"
            md.append(row)
        if cas:
            md += ["", "CAS per class: the accuracy on the real holdout images of that class of classifiers "
                       "trained on the samples and on as many real training images; a large gap names a class "
                       "whose real variety the samples miss."]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def protocol(cfg: Config, n_samples: int) -> str:
    """The evaluation protocol as a string: numbers computed under the same protocol compare."""
    from gan_core.metrics.bootstrap import ROUNDS

    return (f"samples={n_samples};seed={cfg.seed};holdout={cfg.data.holdout_fraction};cas={int(cfg.eval.cas)};"
            f"cas_seeds={cfg.eval.cas_seeds};cas_epochs={cfg.eval.cas_epochs};cas_max_steps={cfg.eval.cas_max_steps};"
            f"classifier_epochs={cfg.eval.classifier_epochs};classifier_max_steps={cfg.eval.classifier_max_steps};"
            f"bootstrap={ROUNDS}")


def generator_config(cfg: Config, loaded: LoadedGenerator) -> Config:
    """The config a generator was trained with, under the tracking and evaluation settings in force."""
    return Config.model_validate({**loaded.config, "mlflow": cfg.mlflow.model_dump(), "eval": cfg.eval.model_dump()})


def generator_data(cfg: Config, loaded: LoadedGenerator, model: str):
    """(config, data) a generator was trained with, under the tracking and evaluation settings in force;
    refused when that data's fingerprint has changed since."""
    gcfg = generator_config(cfg, loaded)
    data = load_data(gcfg)
    if data.fingerprint != loaded.meta.data_fingerprint:
        raise UserError(f"--model {model}: data {gcfg.data.source!r} has changed since this generator was trained "
                        f"(fingerprint {data.fingerprint[:12]} vs {loaded.meta.data_fingerprint[:12]})")
    return gcfg, data


def protocol_samples(cfg: Config, data) -> int:
    """Generated samples of the protocol: `eval.samples`, and with CAS at least the training split's
    size up to `eval.cas_max_samples` (CAS trains on as many generated samples as real ones)."""
    n_train, _ = data.split_sizes(cfg.data.holdout_fraction)
    return max(cfg.eval.samples, min(n_train, cfg.eval.cas_max_samples)) if cfg.eval.cas else cfg.eval.samples


def evaluate_generator(cfg: Config, loaded: LoadedGenerator, model: str, out_dir: str | None,
                       uri: str, prepared=None) -> EvalResult:
    """Every metric of a loaded generator against the data it was trained on (refused when that data's
    fingerprint has changed), under the fixed protocol; logged to its MLflow run when it has one.
    `prepared`: the (config, data) of `generator_data`, when the caller has them already."""
    cfg, data = prepared or generator_data(cfg, loaded, model)
    n = protocol_samples(cfg, data)
    fake_x, fake_y = sample_generator(loaded.generator, n, loaded.label_prior, cfg.seed)
    subject = f"generator {model} (iteration {loaded.iteration})"
    return measure(cfg, data, fake_x, fake_y, subject, out_dir, model, uri, loaded.run_id, loaded.iteration,
                    protocol(cfg, n))


def recorded_evaluation(gcfg: Config, data, loaded: LoadedGenerator, uri: str) -> dict | None:
    """The protocol's metrics of a generator as its MLflow run recorded them, when it was evaluated
    under the protocol in force (`gcfg`'s, of `generator_data`) at the generator's iteration, with the
    key `protocol`; None when it was not (or its run is not in the store at `uri`). The run's logged
    metrics.json gives them whole (per-class lists too); its scalar metrics when that file is gone."""
    import tempfile

    from mlflow.exceptions import MlflowException

    proto = protocol(gcfg, protocol_samples(gcfg, data))
    run = tracking.find_run(uri, loaded.run_id) if loaded.run_id else None
    if run is None or run.data.tags.get(contract.EVAL_PROTOCOL) != f"{proto};iteration={loaded.iteration}":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            logged = json.loads(Path(tracking.client(uri).download_artifacts(
                loaded.run_id, f"{contract.EVALUATION_DIR}/metrics.json", tmp)).read_text())
        except (MlflowException, OSError, ValueError):  # removed or unreadable: the run's scalars hold the numbers
            logged = None
    if logged and logged.get("protocol") == proto:
        return logged
    prefix = contract.EVAL_PREFIX
    return {**{k[len(prefix):]: v for k, v in run.data.metrics.items() if k.startswith(prefix)}, "protocol": proto}


def evaluate_once(cfg: Config, loaded: LoadedGenerator, model: str, uri: str, out_dir: str | None) -> dict:
    """The protocol's metrics of a generator with an MLflow run: read back from the run when it was
    already evaluated under the same protocol at the same iteration, else computed (and logged).
    Returns the metrics with the key `protocol`."""
    gcfg, data = generator_data(cfg, loaded, model)
    found = recorded_evaluation(gcfg, data, loaded, uri)
    if found is not None:
        return found
    res = evaluate_generator(cfg, loaded, model, out_dir, uri, (gcfg, data))
    return {**res.metrics, "protocol": res.protocol}


def evaluate(cfg: Config, model: str | None, dataset: str | None, out_dir: str | None) -> EvalResult:
    """`ganpipe evaluate`: a generator URI (checkpoint, run, registered version) or a Parquet dataset
    folder in; metrics (with real-data references), report.md, samples_per_class.png and
    metrics.json in `out_dir` out."""
    if bool(model) == bool(dataset):
        raise UserError("give exactly one of --model URI or --dataset DIR")
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    if model:
        tracking.check_reachable(uri)
        loaded = resolve(model, uri)
        if loaded.run_id and not tracking.has_run(uri, loaded.run_id):
            print(f"evaluate: warning: {model}: its training run {loaded.run_id} is not in the tracking store "
                  f"{uri}; the evaluation is written to the report folder only", file=sys.stderr)
            loaded.meta = dataclasses.replace(loaded.meta, run_id=None)
        return evaluate_generator(cfg, loaded, model, out_dir, uri)
    cfg, _ = auto.sized(cfg)  # the real data at the size a run of this config trains at
    data = load_data(cfg)
    synth = load_dataset(f"parquet:{dataset}", data.image_shape[1], data.image_shape[0], "resize",
                         data.class_names, allow_empty_classes=True)
    fake_x, fake_y = synth.tensors()
    return measure(cfg, data, fake_x, fake_y, f"dataset {dataset}", out_dir, dataset, uri, None, 0,
                    protocol(cfg, len(fake_x)), RowsCas())


@dataclass(frozen=True)
class RowsCas:
    """How a dataset's evaluation gets its CAS. `given`: the metrics of its generator's own protocol
    evaluation (the rows are that generator's plain samples), whose CAS is taken as it is (with
    `cas_from: generator`); else CAS is trained on the rows, each classifier `eval.cas_epochs` over them
    with no floor of steps, so that a small dataset's evaluation costs in proportion to its rows."""
    given: dict | None = None

    def protocol(self) -> str:
        """What the protocol string adds for a dataset's rows."""
        return ";cas_from=generator" if self.given is not None else ";cas_min_steps=0"

    def cas(self) -> dict:
        """The given evaluation's CAS: every key of `classification_accuracy_score`'s (all `cas*`)."""
        return {k: v for k, v in self.given.items() if k.startswith("cas")} | {"cas_from": "generator"}


def protocol_metrics(cfg: Config, data, fake_x, fake_y, rows: RowsCas | None = None) -> dict:
    """Every metric of generated (fake_x, fake_y) against `data` split as `cfg` splits it, with the
    feature network of that split (trained once and cached); `rows`: the (x, y) are a dataset's rows,
    whose CAS comes as `RowsCas` says."""
    train, holdout = data.split(cfg.data.holdout_fraction, cfg.seed)
    net = feature_net(cfg, train, holdout)
    given = rows is not None and rows.given is not None
    m = full_metrics(net, train, holdout, fake_x, fake_y, cfg.seed, cas=cfg.eval.cas and not given,
                     cas_seeds=cfg.eval.cas_seeds, cas_epochs=cfg.eval.cas_epochs, cache_dir=cfg.eval.cache_dir,
                     cas_max_steps=cfg.eval.cas_max_steps, cas_min_steps=0 if rows is not None else MIN_STEPS)
    return {**m, **(rows.cas() if given and cfg.eval.cas else {})}


def measure(cfg: Config, data, fake_x, fake_y, subject: str, out_dir: str | Path | None, what: str, uri: str,
             run_id: str | None, step: int, proto: str, rows: RowsCas | None = None) -> EvalResult:
    """Every metric of generated (fake_x, fake_y) against `data` under the protocol `proto`; the report
    in `out_dir`, and on the MLflow run `run_id` when given. `rows`: they are a dataset's rows (see
    `RowsCas`; the protocol says where their CAS came from)."""
    from gan_core.visual import save_png

    proto = proto + rows.protocol() if rows is not None else proto
    train = data.split(cfg.data.holdout_fraction, cfg.seed)[0]
    try:
        metrics = protocol_metrics(cfg, data, fake_x, fake_y, rows)
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None
    out = Path(out_dir or f"eval_reports/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    save_png(grid_by_class(fake_x, fake_y, train.num_classes), out / "samples_per_class.png")
    (out / "metrics.json").write_text(json.dumps({**metrics, "protocol": proto}, indent=2))
    report = _report(out, metrics, subject, train.class_names)
    if run_id:
        c = tracking.client(uri)
        for f in ("report.md", "samples_per_class.png", "metrics.json"):
            c.log_artifact(run_id, str(out / f), contract.EVALUATION_DIR)
        scalars = {f"{contract.EVAL_PREFIX}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        tracking.log_metrics(uri, run_id, scalars, step=step)
        c.set_tag(run_id, contract.EVAL_PROTOCOL, f"{proto};iteration={step}")
    return EvalResult(metrics, report, run_id, proto)
