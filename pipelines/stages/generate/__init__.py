"""`ganpipe generate`: a generator (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID, a checkpoint)
in; a labeled synthetic dataset folder out:

    DIR/data/train-XXXXX-of-YYYYY.parquet   Hugging Face image layout + id, verifier label, confidence
    DIR/README.md                            the dataset card (what made it, counts, grid, evaluation)
    DIR/evaluation/                          the dataset's own evaluation (report, grid, metrics.json)
    DIR/manifest.json                        every file with its rows and sha256, written last

Shards are written on Ray Data by an actor pool of generator replicas; each file is complete or
absent, so a rerun of the same request writes only what is missing and ends with the same manifest.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ...config import Config
from ...errors import UserError
from ...services import contract, names, tracking
from ...services.models import LoadedGenerator, resolve
from .labels import label_counts
from ...services.dataset_folder import DatasetFolder, DatasetRequest, Filter, file_complete, sum_path
from .writer import ShardWriter, file_tries, rows_per_file

if TYPE_CHECKING:
    from ..evaluate import RowsCas


@dataclass
class GenerateResult:
    out: Path | str  # the dataset's folder, or its object-store URI
    rows: int
    counts: list[int]
    files: list[dict]
    written: int  # files written by this call (the rest were already complete)
    node_ids: list[str]
    metrics: dict
    run_id: str | None
    by: str = ""  # who wrote this call's files: "in this process" or "by N actors"

    def written_now(self) -> str:
        """How many files this call wrote, and where."""
        return f"{self.written} written now" + (f" {self.by}" if self.written and self.by else "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ganpipe")
    except PackageNotFoundError:
        return "0+unknown"


def _prepare_out(folder: DatasetFolder, request: dict, overwrite: bool) -> None:
    """Create the folder (checking it is writable); refuse one that holds another request."""
    out = folder.root
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        folder.data.mkdir(parents=True, exist_ok=True)
        folder.state.mkdir(exist_ok=True)
        probe = folder.state / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror or e.__class__.__name__})") from None
    old = folder.request()
    if old is not None:
        if old.get("key") != request.key and not overwrite:
            raise UserError(f"--out {out} holds another dataset (made by {old.get('model')!r}, seed "
                            f"{old.get('seed')}, {old.get('rows')} rows); choose another folder or pass --overwrite")
        if old.get("key") != request.key:
            for item in (folder.data, folder.evaluation):
                shutil.rmtree(item, ignore_errors=True)
            for item in (folder.manifest, folder.card):
                item.unlink(missing_ok=True)
            folder.data.mkdir()
    elif folder.finished() and not overwrite:
        raise UserError(f"--out {out} holds a dataset ganpipe did not start here; choose another folder "
                        f"or pass --overwrite")
    folder.manifest.unlink(missing_ok=True)  # complete again only when written last
    folder.request_file.write_text(json.dumps(request.to_dict(), indent=2, sort_keys=True))


def check_rows(total: int) -> None:
    """Refuse, before anything is written, a dataset too small for its own evaluation to finish."""
    from gan_core.metrics.suite import MIN_SAMPLES

    if total < MIN_SAMPLES:
        raise UserError(f"--rows {total}: a dataset needs at least {MIN_SAMPLES} rows (its evaluation measures them)")


ROW_OVERHEAD = 64  # bytes a row takes in Parquet besides its PNG: id, labels, confidence, path, page headers
FILE_MEMORY = 2048  # bytes the driver holds per file of a dataset (its description, its manifest entry)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""


def _available_memory() -> int:
    """Bytes of memory available to new work (Linux's MemAvailable; else the free pages)."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_room(g, counts: list[int] | None, total: int, seed: int, out_dir: Path, per_file: int) -> None:
    """Refuse at once a request the machine cannot hold: the disk its rows take at the bytes a row
    measured on the dataset's first rows (less what its folder already holds), and the memory of
    what the driver keeps per file. Nothing else is sized by the row count."""
    import shutil

    import numpy as np
    import torch

    from gan_core import FORWARD_BLOCK, labels_for_rows, render_rows, rows_generator
    from gan_core.data import encode_pngs, to_uint8

    ids = np.arange(min(total, FORWARD_BLOCK))
    with torch.no_grad():
        y = labels_for_rows(ids, counts, seed) if counts else None
        pixels = to_uint8(render_rows(rows_generator(g), ids, seed, y))
    per_row = float(np.mean([len(b) for b in encode_pngs(pixels)])) + ROW_OVERHEAD
    data_dir = DatasetFolder(out_dir).data
    held = sum(p.stat().st_size for p in data_dir.glob("*.parquet")) if data_dir.is_dir() else 0
    need = total * per_row - held
    where = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise UserError(f"--rows {total:,}: the dataset needs about {_size(need)} ({per_row:,.0f} bytes a row, "
                        f"measured on its first {len(ids)} rows) and {where} has {_size(free)} free")
    memory = -(-total // per_file) * FILE_MEMORY
    available = _available_memory()
    if memory > available // 2:
        raise UserError(f"--rows {total:,}: its {-(-total // per_file):,} files need about {_size(memory)} of memory "
                        f"to track, more than half of the {_size(available)} available; set a larger "
                        f"generate.rows_per_file or write it in parts")


def _request(cfg: Config, loaded: LoadedGenerator, model: str, counts: list[int] | None, rows: int,
             seed: int, filter_: Filter | None) -> DatasetRequest:
    """What is being written."""
    return DatasetRequest(model, loaded.run_id, loaded.iteration, loaded.meta.data_fingerprint, seed, rows, counts,
                          list(loaded.meta.class_names), rows_per_file(rows, cfg.generate.rows_per_file), filter_,
                          "cuda" if cfg.generate.gpus_per_actor else "cpu", cfg.generate.verifier)


def _verifier(cfg: Config, loaded: LoadedGenerator, model: str):
    """The feature network of the generator's training data (cached by fingerprint), and that data."""
    from ...config.build import feature_net
    from ..evaluate import generator_data

    gcfg, data = generator_data(cfg, loaded, model)
    train, holdout = data.split(gcfg.data.holdout_fraction, gcfg.seed)
    net = feature_net(cfg, train, holdout, gcfg.seed)
    return net, gcfg, data


def generate(cfg: Config, model: str, rows: int | None, out: str, labels: str = "balanced", seed: int = 0,
             overwrite: bool = False, verbose: bool = False, rejection: str | None = None,
             min_confidence: float | None = None, tags: dict | None = None) -> GenerateResult:
    """Write (or finish writing) the dataset of `rows` rows from `model` into `out`; see the module doc."""
    from ...config import with_absolute_paths

    cfg = with_absolute_paths(cfg)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    loaded = resolve(model, uri)
    g = loaded.generator
    class_names = list(loaded.meta.class_names)
    if g.num_classes:
        prior = list(loaded.meta.label_prior) or None
        counts = label_counts(labels, rows, class_names, prior)
        total = sum(counts)
    else:
        if labels not in (None, "", "balanced"):
            raise UserError(f"--labels {labels!r}: the model is unconditional; it cannot be asked for labels "
                            f"(rows are labelled by the verifier)")
        if rows is None or rows <= 0:
            raise UserError(f"--rows {rows}: give a positive number of rows")
        counts, total = None, rows
    check_rows(total)
    if not cfg.generate.verifier and not g.num_classes:
        raise UserError("generate.verifier=false: the model is unconditional, and its rows are labelled by the "
                        "verifier")
    if not cfg.generate.verifier and min_confidence is not None:
        raise UserError(f"--min-confidence {min_confidence} filters on the verifier's confidence, and "
                        f"generate.verifier=false turns the verifier off")
    if rejection not in (None, "", "drs"):
        raise UserError(f"--rejection {rejection!r}: the one rejection method is drs")
    if rejection == "drs" and loaded.d_state is None:
        raise UserError(f"--rejection drs needs the run's discriminator, and {model} has none (a checkpoint "
                        f"or a registered version whose training run kept its checkpoint has it)")
    if min_confidence is not None and not 0 < min_confidence <= 1:
        raise UserError(f"--min-confidence {min_confidence}: give a probability in (0, 1]")
    folder = DatasetFolder.at(out)  # a bucket: written through a local mirror, the files uploaded by the actors
    check_room(g, counts, total, seed, folder.root, rows_per_file(total, cfg.generate.rows_per_file))
    net, gcfg, data = _verifier(cfg, loaded, model)
    filter_ = None
    if rejection or min_confidence is not None:
        filter_ = Filter(min_confidence, cfg.generate.max_tries,
                         _drs_bound(cfg, loaded, counts, seed, gcfg, data) if rejection == "drs" else None)
    request = _request(cfg, loaded, model, counts, total, seed, filter_)
    with names.hold_dataset(folder.root):  # one writer per dataset folder
        return _write(cfg, folder, request, overwrite, loaded, g, net, gcfg, data, uri, total, model, seed,
                      verbose, tags)


def rows_cas(loaded: LoadedGenerator, gcfg: Config, data, uri: str, request: DatasetRequest) -> RowsCas:
    """Where the dataset's CAS comes from: rows without a filter are the generator's plain samples, so
    the generator's own protocol evaluation (recorded on its run at its iteration) gives it; else (a
    filter, or a generator never evaluated under the protocol in force) it is trained on the rows."""
    from ..evaluate import RowsCas, recorded_evaluation

    return RowsCas(None if request.filter else recorded_evaluation(gcfg, data, loaded, uri))


def _write(cfg, folder: DatasetFolder, request, overwrite, loaded, g, net, gcfg, data, uri, total, model, seed,
           verbose, tags):
    folder.pull_state()
    old = folder.request()
    _prepare_out(folder, request, overwrite)
    folder.restart_remote(replaced=old is not None and old.get("key") != request.key)

    per_file = request.rows_per_file
    n_files = -(-total // per_file)
    shards = [{"index": i, "count": n_files, "start": i * per_file, "stop": min(total, (i + 1) * per_file)}
              for i in range(n_files)]
    folder.pull_shards([folder.shard(s["index"], n_files).name for s in shards])
    missing = [s for s in shards if not file_complete(folder.shard(s["index"], n_files))]
    provenance = {"model": model, "run_id": loaded.run_id, "iteration": loaded.iteration, "seed": seed,
                  "ganpipe_version": _version(), "request_key": request.key,
                  "model_version": _model_version(model, uri), "config": gcfg.model_dump(mode="json")}
    generator = {"spec": loaded.meta.to_dict()["spec"], "state": {k: v.clone() for k, v in g.state_dict().items()},
                 "d_state": loaded.d_state if request.filter and request.filter.drs else None}
    verifier = {"state": net.model.state_dict(), "channels": data.image_shape[0], "num_classes": data.num_classes}
    run_id = _open_run(cfg, uri, request, provenance, folder.location, tags)  # its duration is the job's
    try:
        written, nodes, by = _write_shards(cfg, missing, generator, verifier, request, folder, provenance, verbose)
        folder.pull_shards([folder.shard(s["index"], n_files).name for s in missing])
        files = _collect(folder, shards, n_files, request.verifier)
        res = _finish(cfg, folder, request, files, written, nodes, gcfg, data, uri, provenance, run_id,
                      rows_cas(loaded, gcfg, data, uri, request), g, net)
        return replace(res, by=by)
    except BaseException as e:
        tracking.client(uri).set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def discriminator(loaded: LoadedGenerator):
    """The run's D that a generator's checkpoint kept, in eval mode (DRS's density-ratio estimate)."""
    from gan_core import build_models

    _, d = build_models(loaded.meta.spec)
    d.load_state_dict(loaded.d_state)
    return d.eval()


def _drs_bound(cfg: Config, loaded: LoadedGenerator, counts: list[int] | None, seed: int, gcfg: Config,
               data) -> dict:
    """D's logit calibrated on the real held-out images against a burn-in sample of candidates (its
    own stream), the largest calibrated logit of that sample, and the gamma that keeps
    `generate.drs_keep` of it at acceptance >= 1/2."""
    import numpy as np
    import torch

    from gan_core import labels_for_rows, render_rows, rows_generator
    from gan_core.data import from_uint8, to_uint8
    from gan_core.theory import drs_gamma, logit_calibration

    d = discriminator(loaded)
    n = cfg.generate.drs_burn_in
    ids = np.arange(n)
    burn_counts = None
    if counts:
        k = len(counts)
        burn_counts = [n // k + (1 if c < n % k else 0) for c in range(k)]
    _, holdout = data.split(gcfg.data.holdout_fraction, gcfg.seed)
    with torch.no_grad():
        y = labels_for_rows(ids, burn_counts, seed + 1) if burn_counts else None
        x = from_uint8(to_uint8(render_rows(rows_generator(loaded.generator), ids, seed + 1, y)))
        fake = d(x, y).reshape(-1).double().numpy()
        real_x, real_y = holdout.tensors()
        real = d(real_x, real_y if y is not None else None).reshape(-1).double().numpy()
    scale, shift = logit_calibration(real, fake)
    scale = max(scale, 0.0)  # a D that ranks generated images above real ones is not followed
    logits = scale * fake + shift
    top = float(logits.max())
    return {"max_logit": top, "gamma": drs_gamma(logits, top, cfg.generate.drs_keep), "burn_in": n,
            "scale": scale, "shift": shift}


def _model_version(model: str, uri: str) -> str | None:
    ref = contract.model_ref(model)
    if ref is None:
        return None
    name, version, alias = ref
    return str(tracking.client(uri).get_model_version_by_alias(name, alias).version) if alias else version


# A job of up to this many rows on the local machine is written in the command's own process: a pool
# of actors (a local Ray, each actor importing torch and loading the models) costs seconds before its
# first row, which one process on one thread spends writing rows (BENCHMARKS.md, "Batch stage": a
# 10,000-row job in its own process against a pool of actors, and the cost of a row).
IN_PROCESS_ROWS = 50_000


def in_process(cfg: Config, folder: DatasetFolder, rows: int) -> bool:
    """Whether the missing shards (`rows` rows) are written in this process instead of on Ray Data: a
    local Ray (or none yet), a local folder, CPU replicas of the default pool (`generate.actors` unset)
    and at most IN_PROCESS_ROWS rows. The bytes are the same either way: every row is computed on one
    thread from its own seed."""
    from ...services.runtime import requested_address

    return (rows <= IN_PROCESS_ROWS and not requested_address(cfg.ray.address) and not folder.remote
            and not cfg.generate.actors and not cfg.generate.gpus_per_actor)


def _write_here(missing: list[dict], generator: dict, verifier: dict, request, folder: DatasetFolder,
                provenance: dict) -> tuple[int, list[str], str]:
    """The missing shards written one after the other by one ShardWriter in this process, on one
    intra-op thread as an actor's (the process's count restored after)."""
    import torch
    from tqdm import tqdm

    threads = torch.get_num_threads()
    done = []
    bar = tqdm(total=sum(sh["stop"] - sh["start"] for sh in missing), unit="row", dynamic_ncols=True, disable=None,
               desc="generate")
    try:
        writer, node = ShardWriter(generator, verifier, request.to_dict(), str(folder.data), provenance), local_node()
        for sh in missing:
            done.append(writer.outcome(sh["index"], sh["count"], sh["start"], sh["stop"], node))
            bar.update(done[-1]["rows"])
            if done[-1]["error"]:
                break
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return (*_outcomes(done, folder), "in this process")


def local_node() -> str:
    """This machine's Ray node id when Ray runs here, else its host name: where in-process rows were written."""
    import platform

    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else platform.node()


SHARDS_IN_FLIGHT = 2  # shards an actor of the pool holds at once: the one it writes and the next


def _write_shards(cfg: Config, missing: list[dict], generator: dict, verifier: dict, request: dict,
                  folder: DatasetFolder, provenance: dict, verbose: bool) -> tuple[int, list[str], str]:
    """The missing shards, written on Ray Data by a pool of generator actors (uploaded by them to the
    bucket when the dataset lives in object storage)."""
    if not missing:
        return 0, [], ""
    if in_process(cfg, folder, sum(sh["stop"] - sh["start"] for sh in missing)):
        return _write_here(missing, generator, verifier, request, folder, provenance)
    import logging
    import warnings

    import ray
    import ray.data

    from ...services.runtime import init_ray

    init_ray(cfg.ray.address, verbose, cfg.ray.connect_timeout_s)
    import torch

    weights = folder.weights
    if folder.remote:  # the actors need not see the driver's folder: the weights go through Ray's object store
        kwargs = {"generator": generator, "verifier": verifier, "weights": None, "upload": folder.remote}
    else:
        torch.save({"generator": generator, "verifier": verifier}, weights)
        kwargs = {"generator": None, "verifier": None, "weights": str(weights)}
    ctx = ray.data.DataContext.get_current()
    if not verbose:
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # errors reach the user as one line below
    # Every actor is up before the first shard is handed out, so shards spread over the whole pool
    # (and its nodes) instead of queueing on the first actor ready. Each actor holds its next shard
    # while it writes one (SHARDS_IN_FLIGHT), so it never waits for Ray Data to see one done and hand
    # out the next (BENCHMARKS.md, "The pool's actors"). Shards go to the least busy actor: locality
    # would send the first two to the driver's node (where the shard list lives) before another node
    # got one.
    ctx.wait_for_min_actors_s = 600
    with warnings.catch_warnings():  # a deprecated setter, the only way to turn it off
        warnings.simplefilter("ignore")
        ctx.execution_options.actor_locality_enabled = False
    have = ray.cluster_resources()
    fits = int(have.get("CPU", 1) // cfg.generate.cpus_per_actor)
    if cfg.generate.gpus_per_actor:
        if have.get("GPU", 0) < cfg.generate.gpus_per_actor:
            raise UserError(f"generate.gpus_per_actor={cfg.generate.gpus_per_actor}: the Ray cluster has "
                            f"{have.get('GPU', 0):g} GPUs")
        fits = min(fits, int(have["GPU"] // cfg.generate.gpus_per_actor))
    actors = max(1, min(cfg.generate.actors or fits, len(missing)))
    if actors > fits:  # else the pool waits for actors that never start
        per = f"{cfg.generate.cpus_per_actor:g} CPU" + (f" and {cfg.generate.gpus_per_actor:g} GPU"
                                                         if cfg.generate.gpus_per_actor else "")
        raise UserError(f"generate.actors={cfg.generate.actors}: the Ray cluster ({have.get('CPU', 0):g} CPUs, "
                        f"{have.get('GPU', 0):g} GPUs) holds {fits} actor(s) of {per}; lower generate.actors "
                        f"or generate.cpus_per_actor, or add nodes")
    with warnings.catch_warnings():  # max_restarts has no named parameter; it must go as a remote arg
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ray.data.from_items(missing).map_batches(
            ShardWriter, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=SHARDS_IN_FLIGHT),
            num_cpus=cfg.generate.cpus_per_actor, max_restarts=0,  # a lost actor's shard is rewritten by a rerun
            **({"num_gpus": cfg.generate.gpus_per_actor} if cfg.generate.gpus_per_actor else {}),
            fn_constructor_kwargs={"request": request.to_dict(), "data_dir": str(folder.data), "provenance": provenance, **kwargs})
    from tqdm import tqdm

    done = []
    bar = tqdm(total=sum(s["stop"] - s["start"] for s in missing), unit="row", dynamic_ncols=True,
               disable=None, desc="generate")  # shown on a terminal; updated as each file completes
    try:
        for row in ds.iter_rows():
            done.append(row)
            bar.update(row["rows"])
    finally:
        bar.close()
        weights.unlink(missing_ok=True)  # a shared dataset must not carry the model
    return (*_outcomes(done, folder), f"by {actors} actor{'s' if actors > 1 else ''}")


def _outcomes(done: list[dict], folder: DatasetFolder) -> tuple[int, list[str]]:
    """(shards written, nodes they were written on) of the writers' outcome rows; a filter that found
    too few rows, or a shard that failed, as one error."""
    failed = [d for d in done if d["error"]]
    for d in failed:
        if d["unmet"]:  # the quality filter's own message (writer.FilterUnmet), not a failure
            raise UserError(f"--out {folder.location}: {d['unmet']}; loosen the filter")
    if failed:
        raise RuntimeError(f"writing {failed[0]['file']} failed: {failed[0]['error']}")
    return len(done), sorted({d["node_id"] for d in done})


def _collect(folder: DatasetFolder, shards: list[dict], n_files: int, verified: bool) -> list[dict]:
    """Manifest entries of every shard, read back from the files (rows, sha256, class counts), with the
    candidates each file's rows took and its rows per class whose verifier label agrees (`tries`,
    `agree`, None when `verified` is false: taken out of the entry by `_finish`)."""
    import numpy as np
    import pyarrow.parquet as pq

    files = []
    for s in shards:
        path = folder.shard(s["index"], n_files)
        if not file_complete(path):
            raise UserError(f"{path}: missing or damaged after writing; rerun the same command to finish it")
        t = pq.read_table(path, columns=["label", "verifier_label"] if verified else ["label"])
        labels = t.column("label").to_numpy()
        agree = np.bincount(labels[labels == t.column("verifier_label").to_numpy()]).tolist() if verified else None
        files.append({"file": f"{contract.DATASET_DATA_DIR}/{path.name}", "rows": int(len(labels)),
                      "sha256": sum_path(path).read_text().strip(),
                      "label_counts": np.bincount(labels).tolist(), "tries": file_tries(path), "agree": agree})
    return files


def _finish(cfg: Config, folder: DatasetFolder, request: dict, files: list[dict], written: int, nodes: list[str],
            gcfg: Config, data, uri: str, provenance: dict, run_id: str, cas: RowsCas, generator=None,
            verifier=None) -> GenerateResult:
    import numpy as np

    from .card import evaluate_dataset, evaluate_filter, write_card

    out = folder.root
    k = len(request.class_names)
    counts = np.zeros(k, dtype=np.int64)
    for f in files:
        counts[: len(f["label_counts"])] += f["label_counts"]
    if request.counts is not None and counts.tolist() != request.counts:
        raise UserError(f"{out}: class counts {counts.tolist()} differ from the request {request.counts}")
    metrics = evaluate_dataset(cfg, gcfg, data, out, cas)
    tried, agree = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
    for f in files:
        for into, part in ((tried, f.pop("tries")), (agree, f.pop("agree") or [])):
            into[: len(part)] += np.asarray(part, dtype=np.int64)
    agreement = [float(a / c) if c else None for a, c in zip(agree, counts)] if request.verifier else None
    filtered = request.filter is not None
    acceptance = [float(c / t) if t else None for c, t in zip(counts, tried)] if filtered and tried.sum() else None
    unfiltered, comparison = evaluate_filter(cfg, gcfg, data, out, request, generator, verifier) if filtered \
        else (None, None)
    write_card(out, request, provenance, counts.tolist(), files, metrics, acceptance, unfiltered, comparison,
               agreement)
    folder.push([folder.card, folder.evaluation])  # everything but the manifest, which comes last
    _track(uri, run_id, request, provenance, counts.tolist(), metrics, nodes, folder.location, out, unfiltered)
    manifest = {"rows": int(counts.sum()), "counts": counts.tolist(), "class_names": request.class_names,
                "acceptance": acceptance,
                "files": files, "request": {k2: v for k2, v in request.to_dict().items() if k2 != "class_names"},
                "model": {"uri": provenance["model"], "version": provenance["model_version"],
                          "run_id": provenance["run_id"], "iteration": provenance["iteration"]}}
    tmp = folder.manifest.with_name(f".{folder.manifest.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder.manifest)
    folder.push([folder.manifest])
    return GenerateResult(folder.remote or out, int(counts.sum()), counts.tolist(), files, written, nodes, metrics,
                          run_id)


def _open_run(cfg: Config, uri: str, request: dict, provenance: dict, location: str,
              extra_tags: dict | None = None) -> str:
    """The job's MLflow run (stage `generate`), opened before its work, with the request as params."""
    from mlflow.entities import Param

    c = tracking.client(uri)
    exp_id = tracking.experiment_id(uri, cfg.mlflow.experiment)
    tags = {contract.STAGE: "generate", contract.RUN_DISPLAY_NAME: f"generate-{location.rstrip('/').split('/')[-1]}",
            **(extra_tags or {})}
    if provenance["run_id"]:
        tags[contract.SOURCE_RUN] = provenance["run_id"]
    run_id = c.create_run(exp_id, tags=tags).info.run_id
    params = {"model": provenance["model"], "model_version": provenance["model_version"], "seed": request.seed,
              "rows": request.rows, "counts": json.dumps(request.counts), "out": location,
              "rows_per_file": request.rows_per_file}
    c.log_batch(run_id, params=[Param(k, contract.param_value(v)) for k, v in params.items()])
    return run_id


def _track(uri: str, run_id: str, request: dict, provenance: dict, counts: list[int], metrics: dict,
           nodes: list[str], location: str, out: Path, unfiltered: dict | None = None) -> None:
    """The job's results on its run (the dataset as an output, the card, the metrics; with a filter on,
    the evaluation without it too), then its end; the model version (when there is one) lists the
    datasets made from it."""
    c = tracking.client(uri)
    c.set_tag(run_id, contract.NODES, json.dumps(nodes))
    tracking.log_dataset_input(uri, run_id, location.rstrip("/").split("/")[-1], request.key, location, "output",
                               {"rows": request.rows, "counts": counts})
    scalars = {f"{contract.EVAL_PREFIX}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    scalars.update({f"{contract.UNFILTERED_EVAL_PREFIX}{k}": v for k, v in (unfiltered or {}).items()
                    if isinstance(v, (int, float))})
    tracking.log_metrics(uri, run_id, {"rows": request.rows, **scalars}, step=0)
    c.log_artifact(run_id, str(DatasetFolder(out).card), contract.DATASET_ARTIFACTS)
    c.set_terminated(run_id, "FINISHED")
    version = provenance["model_version"]
    if version and contract.model_ref(provenance["model"]):
        name = contract.model_ref(provenance["model"])[0]
        mv = c.get_model_version(name, version)
        made = json.loads(mv.tags.get(contract.V_DATASETS, "[]"))
        if location not in made:
            c.set_model_version_tag(name, version, contract.V_DATASETS, json.dumps(made + [location]))
