"""What the web UI shows, read through the same stage and service APIs as the CLI: registered
generators and their versions (the MLflow contract's version tags), per-class grids drawn with
gan_core's one row sampler, the verifier of `generate`, datasets written by `generate` (manifest,
card, rows), and batches started as `ganpipe generate` processes or cluster jobs."""
from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError
from ..services import contract, tracking
from ..services.dataset_folder import DatasetFolder, file_complete, shard_index

PER_CLASS = 8  # images per class in a grid
MAX_TRY = 64  # images one Try-it request draws


class NotFound(UserError):
    """Something the request names does not exist (HTTP 404)."""


class Forbidden(UserError):
    """A path outside the configured folders (HTTP 403)."""


@dataclass
class Version:
    name: str
    version: str
    aliases: list[str]
    metric: str | None
    value: float | None
    interval: list[float] | None  # the value's 95% bootstrap interval
    protocol: str | None
    run_id: str | None
    iteration: str | None
    datasets: list[str]

    @property
    def uri(self) -> str:
        return contract.model_uri(self.name, self.version)


def versions(uri: str) -> list[Version]:
    """Every version of every registered model, newest first within a model."""
    c = tracking.client(uri)
    out = []
    for rm in c.search_registered_models():
        if "'" in rm.name or "\\" in rm.name:  # not a name ganpipe writes; it cannot reach a filter safely
            continue
        by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        for mv in sorted(c.search_model_versions(f"name = '{rm.name}'"), key=lambda m: -int(m.version)):
            t = mv.tags or {}
            value = t.get(contract.V_METRIC_VALUE)
            out.append(Version(rm.name, str(mv.version), sorted(by_version.get(str(mv.version), [])),
                               t.get(contract.V_METRIC_NAME), float(value) if value else None,
                               json.loads(t.get(contract.V_METRIC_INTERVAL) or "null"), t.get(contract.V_EVAL_PROTOCOL), mv.run_id, t.get(contract.V_ITERATION),
                               json.loads(t.get(contract.V_DATASETS, "[]"))))
    return out


@lru_cache(maxsize=1024)
def experiment_of(uri: str, run_id: str) -> str:
    return tracking.client(uri).get_run(run_id).info.experiment_id


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the experiment `name`, None when it does not exist (nothing is created)."""
    exp = tracking.client(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp else None


def generate_run_of(uri: str, location: str) -> str | None:
    """The newest `generate` run that wrote the dataset at `location` (its `out` param)."""
    if "'" in location or "\\" in location:  # cannot reach a filter safely
        return None
    c = tracking.client(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()],
                         f"params.out = '{location}' and {contract.filter_eq(contract.STAGE, 'generate')}",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def find_version(uri: str, name: str, version: str) -> Version:
    for v in versions(uri):
        if v.name == name and v.version == str(version):
            return v
    raise NotFound(f"model {name!r} has no version {version!r}")


@lru_cache(maxsize=8)
def _loaded(model_uri: str, tracking_uri: str):
    from ..services.models import resolve

    return resolve(model_uri, tracking_uri)


@lru_cache(maxsize=4)
def _verifier(model_uri: str, tracking_uri: str, cfg_json: str):
    from ..stages.generate import _verifier as generate_verifier
    from ..stages.generate.writer import verifier_module

    cfg = Config.model_validate(json.loads(cfg_json))
    net, _, _ = generate_verifier(cfg, _loaded(model_uri, tracking_uri), model_uri)
    return verifier_module(net.model)


def class_names(model_uri: str, tracking_uri: str) -> list[str]:
    return list(_loaded(model_uri, tracking_uri).meta.class_names)


def draw(model_uri: str, tracking_uri: str, labels: list[int] | None, n: int, seed: int):
    """`n` images (uint8, N x C x H x W) for rows 0..n-1 of `seed`, with the given label per row:
    the rows `generate` would write for these labels and seed."""
    import torch

    from gan_core import render_rows, rows_generator
    from gan_core.data import to_uint8

    g = rows_generator(_loaded(model_uri, tracking_uri).generator)
    ids = torch.arange(n, dtype=torch.int64)
    y = torch.tensor(labels, dtype=torch.int64) if labels is not None and g.num_classes else None
    with torch.no_grad():
        return to_uint8(render_rows(g, ids, seed, y))


def png(pixels: np.ndarray) -> bytes:
    from gan_core.data import encode_png

    return encode_png(pixels)


def grid_png(model_uri: str, tracking_uri: str, seed: int) -> bytes:
    """One row per class of PER_CLASS images; the same z and labels for every version."""
    from gan_core.data import from_uint8
    from gan_core.visual import make_grid

    k = len(class_names(model_uri, tracking_uri))
    g = _loaded(model_uri, tracking_uri).generator
    labels = [c for c in range(k) for _ in range(PER_CLASS)] if g.num_classes else None
    pixels = draw(model_uri, tracking_uri, labels, k * PER_CLASS if labels else 8 * PER_CLASS, seed)
    grid = make_grid(from_uint8(pixels), nrow=PER_CLASS)
    return png((grid * 255).round().byte().numpy())


def try_images(cfg: Config, model_uri: str, tracking_uri: str, classes: list[int], count: int,
               seed: int) -> list[dict]:
    """`count` images per class with the verifier's label and confidence under each."""
    from gan_core.data import from_uint8

    from ..stages.generate.writer import verdicts

    names = class_names(model_uri, tracking_uri)
    labels = [c for c in classes for _ in range(count)]
    pixels = draw(model_uri, tracking_uri, labels, len(labels), seed)
    pred, conf = verdicts(_verifier(model_uri, tracking_uri, cfg.model_dump_json()), from_uint8(pixels))
    out = []
    for i, (lab, seen, c) in enumerate(zip(labels, pred.tolist(), conf.tolist())):
        out.append({"src": data_url(png(pixels[i])), "asked": names[lab], "seen": names[seen],
                    "confidence": float(c), "agrees": seen == lab})
    return out


def data_url(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def parse_classes(text: str, names: list[str]) -> list[int]:
    """'0,3,7' (class indices or names) or empty for every class; one clear error otherwise."""
    text = (text or "").strip()
    if not text:
        return list(range(len(names)))
    out = []
    for item in text.split(","):
        item = item.strip()
        if item in names:
            out.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            out.append(int(item))
        else:
            raise UserError(f"classes: {item!r} is not one of the model's classes {names}")
    return out


# Datasets -------------------------------------------------------------------------------------


@dataclass
class Dataset:
    root: int  # index of the configured folder it was found in
    rel: str  # its path inside that folder
    path: Path
    manifest: dict

    @property
    def key(self) -> str:
        return f"{self.root}/{self.rel}"


def _is_dataset(folder: Path) -> bool:
    return DatasetFolder(folder).finished()


def datasets(roots: list[Path]) -> list[Dataset]:
    """Every complete dataset (one with its manifest) in the configured folders, two levels deep."""
    out = []
    for i, root in enumerate(roots):
        candidates = [root, *sorted(p for p in root.glob("*") if p.is_dir()),
                      *sorted(p for p in root.glob("*/*") if p.is_dir())]
        for folder in candidates:
            if _is_dataset(folder):
                rel = str(folder.relative_to(root)) if folder != root else "."
                out.append(Dataset(i, rel, folder, json.loads(DatasetFolder(folder).manifest.read_text())))
    return out


def confined(roots: list[Path], root: int, rel: str) -> Path:
    """The folder `rel` inside configured folder number `root`; anything outside is refused."""
    if not 0 <= root < len(roots):
        raise NotFound(f"no configured data folder number {root}")
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise Forbidden(f"{rel!r}: paths must stay inside the configured data folders")
    base = roots[root].resolve()
    path = (base / rel).resolve()
    if path != base and base not in path.parents:
        raise Forbidden(f"{rel!r}: paths must stay inside the configured data folders")
    return path


def find_dataset(roots: list[Path], root: int, rel: str) -> Dataset:
    path = confined(roots, root, rel)
    if not _is_dataset(path):
        raise NotFound(f"{rel!r} is not a dataset written by ganpipe generate (no {contract.DATASET_MANIFEST})")
    return Dataset(root, rel, path, json.loads(DatasetFolder(path).manifest.read_text()))


def rows(ds: Dataset, label: int | None, order: str, page: int, per_page: int = 48) -> tuple[list[dict], int]:
    """One page of rows (image, label, verifier's label and confidence), optionally of one class,
    sorted by the verifier's confidence ('asc': the least convincing first); a dataset written
    without the verifier (generate.verifier=false): by row id, `seen` and `confidence` None."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = DatasetFolder(ds.path).shards()
    verified = ds.manifest.get("request", {}).get("verifier", True)  # generate.verifier, as requested
    columns = ["id", "label", "verifier_label", "verifier_confidence"] if verified else ["id", "label"]
    meta = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
    file_of = np.concatenate([np.full(pq.ParquetFile(f).metadata.num_rows, i) for i, f in enumerate(files)])
    index = np.arange(meta.num_rows)
    if label is not None:
        index = index[pc.equal(meta.column("label"), label).to_numpy(zero_copy_only=False)]
    if verified:
        conf = meta.column("verifier_confidence").to_numpy()[index]
        index = index[np.argsort(conf if order == "asc" else -conf, kind="stable")]
    total = len(index)
    pick = index[page * per_page:(page + 1) * per_page]
    names = ds.manifest.get("class_names") or [str(i) for i in range(len(ds.manifest.get("counts", [])))]
    starts = np.concatenate([[0], np.cumsum([pq.ParquetFile(f).metadata.num_rows for f in files])])
    images = {f: pq.read_table(files[f], columns=["image"]).column("image")  # each file read once
              for f in sorted({int(file_of[j]) for j in pick})}
    out = []
    for j in pick:
        f = int(file_of[j])
        image = images[f][int(j - starts[f])].as_py()
        lab = int(meta.column("label")[int(j)].as_py())
        seen = int(meta.column("verifier_label")[int(j)].as_py()) if verified else None
        out.append({"id": int(meta.column("id")[int(j)].as_py()), "src": data_url(image["bytes"]),
                    "label": names[lab] if lab < len(names) else lab,
                    "seen": None if seen is None else names[seen] if seen < len(names) else seen,
                    "confidence": float(meta.column("verifier_confidence")[int(j)].as_py()) if verified else None,
                    "agrees": lab == seen})
    return out, total


def card_html(ds: Dataset, file_url: str) -> str:
    """The dataset card (README.md) as HTML: its YAML header dropped; headings, paragraphs, tables,
    images (served from the dataset folder) and inline code."""
    card = DatasetFolder(ds.path).card
    text = card.read_text() if card.is_file() else ""
    if text.startswith("---"):
        text = text.split("\n---", 1)[-1].split("\n", 1)[-1]

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f'<img alt="{m[1]}" src="{file_url}/{m[2]}">', s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body) +
                       "</table>")
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    return "\n".join(out)


# Batches --------------------------------------------------------------------------------------

BATCHES_DIR = ".ganpipe-ui"  # in the first data folder: one record (ID.json) and one log (ID.log) a batch
PHASES = ("starting", "writing", "evaluating", "writing the card", "done")


@dataclass
class Batch:
    id: str
    model: str
    rows: int | None
    labels: str
    seed: int
    rejection: str | None
    min_confidence: float | None
    out: Path
    key: str  # the dataset's key once done (root/rel)
    log: Path
    started: float
    pid: int | None = None
    job_id: str | None = None
    address: str | None = None
    error: str | None = None
    ended: float | None = None
    cancelled: bool = False
    proc: subprocess.Popen | None = None  # when this process started it

    RECORDED = ("id", "model", "rows", "labels", "seed", "rejection", "min_confidence", "out", "key", "log",
                "started", "pid", "job_id", "address", "error", "ended", "cancelled")

    def record(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in ((k, getattr(self, k)) for k in self.RECORDED)}

    @classmethod
    def from_record(cls, r: dict) -> "Batch":
        return cls(**{**r, "out": Path(r["out"]), "log": Path(r["log"])})

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:  # a batch started by an earlier `ganpipe ui`: its process, if that pid still runs generate
            return str(self.out) in Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    def status(self) -> str:
        """running, finished, failed or cancelled."""
        if self.job_id is not None:
            from .. import jobs

            state = jobs.status(self.address, self.job_id)
            return {"SUCCEEDED": "finished", "FAILED": "failed", "STOPPED": "cancelled"}.get(state, "running")
        if self._alive():
            return "running"
        if self.cancelled:
            return "cancelled"
        if DatasetFolder(self.out).finished() and (self.proc is None or self.proc.returncode == 0):
            return "finished"
        if self.error is None:
            lines = self.log_tail(5)
            self.error = lines[-1] if lines else "the batch ended without writing its dataset"
        return "failed"

    def phase(self) -> tuple[str, int, int]:
        """(phase, complete files, files in all), read from the dataset folder as generate writes it."""
        folder = DatasetFolder(self.out)
        if folder.finished():
            return "done", 0, 0
        if not folder.request_file.is_file():
            return "starting", 0, 0
        files = folder.shards()
        total = shard_index(files[0].name)[1] if files else 0
        done = sum(file_complete(f) for f in files)
        if not total or done < total:
            return "writing", done, total
        return ("writing the card" if folder.card.is_file() else "evaluating"), done, total

    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started

    def log_tail(self, n: int = 30) -> list[str]:
        if not self.log.is_file():
            return []
        text = self.log.read_text(errors="replace").replace("\r", "\n")
        return [ln for ln in text.splitlines() if ln.strip()][-n:]


class Batches:
    """Batches started from the page: `ganpipe generate` in a child process (its record and log in
    DATA/.ganpipe-ui/, so that a restarted UI still shows them), or a job on the Ray cluster at
    `address` through the jobs module."""

    def __init__(self, cfg: Config, tracking_uri: str, address: str | None, folder: Path):
        self.cfg, self.uri, self.address, self.folder = cfg, tracking_uri, address, folder / BATCHES_DIR
        self.items: dict[str, Batch] = {}
        self.lock = threading.Lock()

    def _save(self, b: Batch) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{b.id}.json.tmp"
        tmp.write_text(json.dumps(b.record(), indent=2))
        tmp.replace(self.folder / f"{b.id}.json")

    def start(self, model: str, rows: int | None, labels: str, seed: int, rejection: str | None,
              min_confidence: float | None, out: Path, key: str) -> Batch:
        bid = uuid.uuid4().hex[:12]
        batch = Batch(bid, model, rows, labels, seed, rejection, min_confidence, out, key, self.folder / f"{bid}.log",
                      time.time())
        args = ["generate", "--model", model, "--out", str(out), "--labels", labels, "--seed", str(seed),
                "--set", f"mlflow.tracking_uri={self.uri}", "--set", f"eval.cache_dir={self.cfg.eval.cache_dir}"]
        if rows is not None:
            args += ["--rows", str(rows)]
        if rejection:
            args += ["--rejection", rejection]
        if min_confidence is not None:
            args += ["--min-confidence", str(min_confidence)]
        if self.address:  # the workflow's generate stage as a job on the cluster
            from .. import jobs

            if rejection or min_confidence is not None:
                raise UserError("filters: a batch on the cluster runs the workflow's generate stage, which takes "
                                "no quality filter; start it without one or run ganpipe generate on the cluster")
            cfg = self.cfg.model_copy(update={
                "mlflow": self.cfg.mlflow.model_copy(update={"tracking_uri": self.uri}),
                "workflow": self.cfg.workflow.model_copy(update={
                    "stages": ["generate"], "model": model, "rows": rows or self.cfg.workflow.rows, "labels": labels,
                    "out": str(out), "name": f"ui-{batch.id}"}),
                "seed": seed})
            batch.address = self.address
            batch.job_id, _ = jobs.submit(cfg, self.address, wait=False, say=lambda *_: None)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(batch.log, "w") as log:
                batch.proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            batch.pid = batch.proc.pid
        with self.lock:
            self.items[batch.id] = batch
            self._save(batch)
        return batch

    def get(self, batch_id: str) -> Batch:
        with self.lock:
            if batch_id not in self.items:
                path = self.folder / f"{batch_id}.json"
                if not re.fullmatch(r"[0-9a-f]{12}", batch_id) or not path.is_file():
                    raise NotFound(f"no batch {batch_id!r} was started from this page")
                self.items[batch_id] = Batch.from_record(json.loads(path.read_text()))
            b = self.items[batch_id]
        self.settle(b)
        return b

    def settle(self, b: Batch) -> None:
        """Record the end of a batch that has ended (its time, and why it failed)."""
        if b.ended is None and b.status() != "running":
            b.ended = time.time()
            with self.lock:
                self._save(b)

    def all(self) -> list[Batch]:
        """Every batch started from this page, newest first (also those an earlier `ganpipe ui` started)."""
        found = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        out = []
        for path in found:
            try:
                out.append(self.get(path.stem))
            except (NotFound, ValueError, TypeError, KeyError):
                continue  # a record this version cannot read
        return sorted(out, key=lambda b: -b.started)

    def cancel(self, batch_id: str) -> Batch:
        """Stop a running batch: SIGINT to its process group (the generate command ends as on Ctrl-C),
        SIGKILL if it has not ended 20 s later; a cluster job is stopped through the jobs module."""
        import os
        import signal

        b = self.get(batch_id)
        if b.status() != "running":
            raise UserError(f"batch {b.id} is {b.status()}; only a running batch can be cancelled")
        b.cancelled = True
        if b.job_id is not None:
            from .. import jobs

            jobs.stop(b.address, b.job_id)
        elif b.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(b.pid, signal.SIGINT)
            deadline = time.time() + 20
            while b._alive() and time.time() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                if b._alive():
                    os.killpg(b.pid, signal.SIGKILL)
            if b.proc is not None:
                b.proc.wait(10)
        b.ended = time.time()
        with self.lock:
            self._save(b)
        return b

    def stop_all(self) -> None:
        import os
        import signal

        for b in self.items.values():
            if b.proc is not None and b.proc.poll() is None:
                os.killpg(b.proc.pid, signal.SIGINT)


def generate_runs(uri: str, limit: int = 50) -> list[dict]:
    """The tracking store's `generate` runs, newest first: where each wrote, its status and rows."""
    c = tracking.client(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], contract.filter_eq(contract.STAGE, "generate"),
                         order_by=["attributes.start_time DESC"], max_results=limit)
    return [{"run_id": r.info.run_id, "status": r.info.status, "out": r.data.params.get("out", ""),
             "rows": r.data.params.get("rows", ""), "model": r.data.params.get("model", ""),
             "started": r.info.start_time} for r in runs]
