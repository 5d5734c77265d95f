"""The dataset card (README.md in the Hugging Face style, with a YAML header) and the dataset's own
evaluation against the real data its generator was trained on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from gan_core.data import from_uint8
from gan_core.metrics import METRICS

from ...config import Config
from ...services import contract
from ...services.dataset_folder import SHARD_GLOB, DatasetFolder, DatasetRequest
from ..evaluate import RowsCas, measure, protocol


def read_rows(out: Path, n: int, image_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `n` rows spread evenly over the dataset, decoded to images in [-1, 1] and labels."""
    import io

    from PIL import Image

    files = DatasetFolder(out).shards()
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    step = max(1, total // n)
    xs, ys, seen = [], [], 0
    for f in files:
        t = pq.read_table(f, columns=["image", "label"])
        rows = t.num_rows
        pick = [i for i in range(rows) if (seen + i) % step == 0]
        seen += rows
        images = t.column("image").to_pylist()
        labels = t.column("label").to_numpy()
        for i in pick:
            arr = np.asarray(Image.open(io.BytesIO(images[i]["bytes"])))
            arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
            xs.append(arr)
            ys.append(int(labels[i]))
    x = from_uint8(np.stack(xs[:n]))
    return x, torch.tensor(ys[:n], dtype=torch.int64)


def evaluate_dataset(cfg: Config, gcfg: Config, data, out: Path, rows: RowsCas) -> dict:
    """The dataset's evaluation (`ganpipe evaluate --dataset` on a sample of it) in DIR/evaluation/;
    its CAS as `rows` says (the generator's own, or trained on the rows)."""
    x, y = read_rows(out, cfg.generate.eval_samples, data.image_shape)
    gcfg = gcfg.model_copy(update={"eval": cfg.eval})
    res = measure(gcfg, data, x, y, f"dataset {out}", DatasetFolder(out).evaluation, str(out), "",
                  None, 0, protocol(gcfg, len(x)), rows)
    return res.metrics


def _unfiltered_rows(request: DatasetRequest, n: int, generator, verifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the request gives without its filter (each row's first candidate), `n` of them spread
    over the row ids as `read_rows` spreads its sample, drawn on FORWARD_BLOCK-row batches (the same
    images to float rounding); an unconditional model's rows labelled by the verifier as the shards
    label them (`verdicts`)."""
    from gan_core import FORWARD_BLOCK, labels_for_rows, render_rows, rows_generator
    from gan_core.data import to_uint8

    from .writer import verdicts, verifier_module

    ids = np.arange(0, request.rows, max(1, request.rows // n))[:n]
    g = rows_generator(generator)
    net = None if request.counts else verifier_module(verifier.model)
    xs, ys = [], []
    for lo in range(0, len(ids), FORWARD_BLOCK):
        block = ids[lo:lo + FORWARD_BLOCK]
        y = labels_for_rows(block, request.counts, request.seed) if request.counts else None
        x = from_uint8(to_uint8(render_rows(g, block, request.seed, y)))
        if y is None:
            y = verdicts(net, x)[0]
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def evaluate_filter(cfg: Config, gcfg: Config, data, out: Path, request: DatasetRequest, generator, verifier) -> tuple[dict,
                                                                                                          dict | None]:
    """With a quality filter on: (1) the evaluation of the rows without it, as the dataset is evaluated,
    in DIR/evaluation/without_filter/; (2) both sets compared in parts of the holdout's size
    (`compare_in_parts`, `generate.compare_samples` rows each; None when the dataset is too small),
    in DIR/evaluation/filter_comparison.json."""
    from gan_core.metrics import compare_in_parts

    n = min(max(cfg.generate.eval_samples, cfg.generate.compare_samples), request.rows)
    x_plain, y_plain = _unfiltered_rows(request, n, generator, verifier)
    gcfg = gcfg.model_copy(update={"eval": cfg.eval})
    k = min(cfg.generate.eval_samples, request.rows)
    step = max(1, len(x_plain) // k)
    plain = measure(gcfg, data, x_plain[::step][:k], y_plain[::step][:k], f"dataset {out} without its filter",
                    DatasetFolder(out).evaluation / "without_filter", str(out), "", None, 0,
                    protocol(gcfg, k), RowsCas()).metrics
    _, holdout = data.split(gcfg.data.holdout_fraction, gcfg.seed)
    x_kept, y_kept = read_rows(out, n, data.image_shape)
    try:
        parts = compare_in_parts(verifier, holdout.tensors()[0], {"with the filter": (x_kept, y_kept),
                                                                   "without": (x_plain, y_plain)}, data.num_classes)
    except ValueError:
        return plain, None
    (DatasetFolder(out).evaluation / "filter_comparison.json").write_text(json.dumps(parts, indent=2))
    return plain, parts


def write_card(out: Path, request: DatasetRequest, provenance: dict, counts: list[int], files: list[dict],
               metrics: dict, acceptance: list[float | None] | None = None, unfiltered: dict | None = None,
               comparison: dict | None = None, agreement: list[float | None] | None = None) -> None:
    """README.md of a dataset; `agreement`: per class, the share of its rows whose `verifier_label` is
    their `label`, over every row of the dataset."""
    names = request.class_names
    features = {"id": "int64", "image": "image", "label": {"class_label": {"names": dict(enumerate(names))}}}
    if request.verifier:
        features.update({"verifier_label": {"class_label": {"names": dict(enumerate(names))}},
                         "verifier_confidence": "float32"})
    header = ["---", "license: other", "task_categories:", "- image-classification", "tags:", "- synthetic",
              "- gan", "- ganpipe", "dataset_info:", "  features:"]
    for name, kind in features.items():
        if isinstance(kind, str):
            header += [f"  - name: {name}", f"    dtype: {kind}"]
        else:
            header += [f"  - name: {name}", "    dtype:", "      class_label:", "        names:"]
            header += [f"          '{i}': {json.dumps(n)}" for i, n in kind["class_label"]["names"].items()]
    header += ["  splits:", "  - name: train", f"    num_examples: {sum(counts)}", "configs:", "- config_name: default",
               "  data_files:", "  - split: train", f"    path: {contract.DATASET_DATA_DIR}/{SHARD_GLOB}", "---", ""]
    conditional = request.counts is not None
    model_line = provenance["model"] + (f" (version {provenance['model_version']})" if provenance["model_version"]
                                        else "")
    body = [f"# Synthetic dataset: {sum(counts)} images, {len(names)} classes", "",
            f"Made by ganpipe {provenance['ganpipe_version']} from the generator `{model_line}` "
            f"(MLflow run `{provenance['run_id']}`, iteration {provenance['iteration']}), seed {request.seed}. "
            "Row i's latent vector and label depend only on (seed, i): the same request gives the same images.", "",
            ("Each row's `label` is the class the generator was asked for; `verifier_label` and "
             "`verifier_confidence` are what an independent classifier, trained on the real data, sees."
             if conditional and request.verifier else
             "Each row's `label` is the class the generator was asked for (written without the verifier's "
             "columns: generate.verifier=false)." if conditional else
             "The generator is unconditional: each row's `label` is the verifier's prediction (a classifier "
             "trained on the real data), not a class the generator was asked for."), "",
            "![samples, one row per class](evaluation/samples_per_class.png)", ""]
    filters = []
    f_ = request.filter
    if f_ and f_.drs:
        d = f_.drs
        filters.append(f"discriminator rejection sampling (Azadi et al. 2019; max logit {d['max_logit']:.3f} over "
                       f"{d['burn_in']} burn-in candidates, gamma {d['gamma']:.3f})")
    if f_ and f_.min_confidence is not None:
        filters.append(f"the verifier agrees with the requested label with confidence >= {f_.min_confidence}")
    if filters:
        body += ["Quality filters: " + "; ".join(filters) + ". Acceptance is rows kept / candidates tried.", ""]
    body += ["## Rows per class", ""]
    if request.verifier:
        body += ["The verifier's agreement is over every row of the class (the `verifier_label` column).", ""]
    body += ["| class | rows | verifier agrees | acceptance |", "|---|---|---|---|"]
    for name, n, f, a in zip(names, counts, agreement or [None] * len(names), acceptance or [None] * len(names)):
        body.append(f"| {name} | {n} | {'' if f is None else f'{f:.3f}'} | {'' if a is None else f'{a:.3f}'} |")
    body += ["", f"## Evaluation ({metrics.get('samples', '?')} rows against the real holdout)", ""]
    if metrics.get("cas_from") == "generator":
        body += [f"CAS and its ratio are the generator's, from its own evaluation (classifiers trained on "
                 f"{int(metrics['cas_samples']):,} of its samples at the training data's class prior and on as many "
                 "real images): these rows are its plain samples. Every other number is measured on the rows.", ""]
    if unfiltered:
        body += ["| metric | dataset | without the filter | real data | better |", "|---|---|---|---|---|"]
    else:
        body += ["| metric | dataset | real data | better |", "|---|---|---|---|"]
    for m in METRICS.values():
        if m.name in metrics:
            ref = m.real_value(metrics)
            plain = [] if not unfiltered else [f"{unfiltered[m.name]:.4f}" if m.name in unfiltered else ""]
            body.append("| " + " | ".join([m.name, f"{metrics[m.name]:.4f}", *plain,
                                           "" if ref is None else f"{ref:.4f}", m.better]) + " |")
    if comparison:
        n, parts = comparison["rows_per_part"], comparison["parts"]
        sets = comparison["sets"]
        body += ["", f"## The filter, measured ({parts} x {n} rows with it and without it)", "",
                 f"Each set is cut into {parts} disjoint parts of {n} rows, the real holdout's size, and every "
                 "part is measured as the evaluation above measures one set; the table gives the mean over "
                 "the parts ± its standard error.", "",
                 "| metric | with the filter | without | difference | better |", "|---|---|---|---|---|"]
        for name, a in sets["with the filter"].items():
            b = sets["without"][name]
            se = (a["se"] ** 2 + b["se"] ** 2) ** 0.5
            body.append(f"| {name} | {a['mean']:.4f} ± {a['se']:.4f} | {b['mean']:.4f} ± {b['se']:.4f} | "
                        f"{a['mean'] - b['mean']:+.4f} ± {se:.4f} | {METRICS[name].better} |")
    body += ["", "## Files", "", "| file | rows | sha256 |", "|---|---|---|"]
    body += [f"| {f['file']} | {f['rows']} | `{f['sha256'][:16]}…` |" for f in files]
    body += ["", "Load it with `datasets.load_dataset(\"parquet\", data_dir=\"DIR/data\")`, pandas, polars or DuckDB; "
             "`manifest.json` lists every file with its sha256.", ""]
    DatasetFolder(out).card.write_text("\n".join(header + body))
