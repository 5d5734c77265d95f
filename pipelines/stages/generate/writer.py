"""Writing one shard of a synthetic dataset: rows [start, stop) of the dataset, generated, encoded
as PNG, checked by the verifier, and written to Parquet in the Hugging Face image layout.

Row i's z and label depend only on (seed, i) (gan_core.sampling), and the generator runs on
blocks of FORWARD_BLOCK rows aligned to the row ids, so the same request gives the same bytes
whatever the number of actors, the shard size or the order in which shards are written. A file is
written under a temporary name and renamed when complete; its sha256 is then recorded in
DIR/.ganpipe/sums/.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gan_core import (FORWARD_BLOCK, ModelSpec, aligned_blocks, build_models, labels_for_rows, render_rows,
                      rows_generator, uniform_rows)
from gan_core.models import for_inference
from gan_core.theory import drs_acceptance
from gan_core.data import IMAGE_TYPE, encode_pngs, features_metadata, from_uint8, to_uint8
from gan_core.metrics import SmallCNN

from ...services import contract
from ...services.checkpoints import sha256_file
from ...services.dataset_folder import DatasetRequest, filesystem, shard_name, sum_path, upload

ROW_GROUP = 1024  # rows per Parquet row group
TRIES_KEY = "ganpipe.tries"  # a file's key-value metadata: candidates tried per class for its rows
MAX_ROWS_PER_FILE = 16384  # the default file size, in rows
MIN_FILES = 8  # a dataset that allows it has at least this many files, so that its actors share the work


def rows_per_file(rows: int, configured: int | None) -> int:
    """Rows per file for a dataset of `rows` rows: `generate.rows_per_file` when set; otherwise
    MAX_ROWS_PER_FILE, or fewer (a multiple of FORWARD_BLOCK, at least one block) so that the dataset
    has MIN_FILES files where it is large enough to."""
    if configured is not None:
        return configured
    share = -(-rows // MIN_FILES)
    return min(MAX_ROWS_PER_FILE, max(FORWARD_BLOCK, -(-share // FORWARD_BLOCK) * FORWARD_BLOCK))


class FilterUnmet(Exception):
    """A quality filter accepted too few candidates for some row within the allowed tries."""


def schema(class_names: list[str], provenance: dict, verifier: bool = True) -> pa.Schema:
    """The files' schema: HF image layout plus provenance columns (the verifier's two when it runs);
    file metadata says what made it."""
    extra = {"id": {"dtype": "int64", "_type": "Value"}}
    fields = [("id", pa.int64()), ("image", IMAGE_TYPE), ("label", pa.int64())]
    if verifier:
        extra.update({"verifier_label": {"names": list(class_names), "_type": "ClassLabel"},
                      "verifier_confidence": {"dtype": "float32", "_type": "Value"}})
        fields += [("verifier_label", pa.int64()), ("verifier_confidence", pa.float32())]
    meta = features_metadata(class_names, extra)
    meta[b"ganpipe"] = json.dumps(provenance, sort_keys=True).encode()
    return pa.schema(fields, metadata=meta)


def verifier_module(model: torch.nn.Module, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The verifier (a trained SmallCNN) as generate runs it: a copy prepared by `for_inference`."""
    return for_inference(model).to(device)


@torch.no_grad()
def verdicts(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(label, confidence) the verifier `net` (from `verifier_module`) gives images `x` in [-1, 1]
    (`from_uint8` of the stored pixels, on the net's device): the values generate writes in
    `verifier_label` and `verifier_confidence`."""
    conf, pred = torch.softmax(net(x.contiguous(memory_format=torch.channels_last)), 1).max(1)
    return pred.cpu(), conf.cpu()


@torch.no_grad()
def drs_keep_probability(d: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, drs: dict) -> np.ndarray:
    """The probability that DRS keeps each image `x` (labels `y`): D's logit calibrated on real data as
    `_drs_bound` fitted it, then `gan_core.theory.drs_acceptance` at the request's bound and gamma."""
    logits = d(x, y).reshape(-1).double().cpu().numpy()
    return drs_acceptance(drs["scale"] * logits + drs["shift"], drs["max_logit"], drs["gamma"])


class ShardWriter:
    """Holds one generator replica and the verifier; writes whole shards. Used as a Ray Data actor
    (`__call__` takes a batch of shard descriptions) and directly in tests."""

    def __init__(self, generator: dict | None, verifier: dict | None, request: dict, data_dir: str, provenance: dict,
                 weights: str | None = None, upload: str | None = None):
        """`weights`: a file holding {"generator", "verifier"} (written by the driver into the dataset
        folder, which every actor sees), read instead of passing the weights through the object store.
        `upload`: the dataset's object-store URI; each shard is then written to a temporary local
        folder and uploaded, data first and its sha256 last (remote.py)."""
        self.upload = upload
        torch.set_num_threads(1)  # one CPU per actor; also keeps reductions in one fixed order
        # A GPU actor (generate.gpus_per_actor) computes on its GPU: its bytes differ from a CPU
        # actor's, so the device is part of the request (and its key).
        request = DatasetRequest.from_dict(request)  # a dict across Ray
        self.device = torch.device(request.device)
        if weights is not None:
            both = torch.load(weights, map_location="cpu", weights_only=True)
            generator, verifier = both["generator"], both["verifier"]
        self.G, self.D = build_models(ModelSpec.from_dict(generator["spec"]))
        self.G.load_state_dict(generator["state"])
        self.G = rows_generator(self.G.to(self.device))
        self.drs = request.filter.drs if request.filter else None
        if self.drs:
            self.D.load_state_dict(generator["d_state"])
            self.D.eval().to(self.device)
        self.net = None
        if request.verifier:
            net = SmallCNN(verifier["channels"], verifier["num_classes"])
            net.load_state_dict(verifier["state"])
            self.net = verifier_module(net, self.device)
        if upload:
            import tempfile

            data_dir = str(Path(tempfile.mkdtemp(prefix="ganpipe-shards-")) / contract.DATASET_DATA_DIR)
            Path(data_dir).mkdir()
        self.request, self.data_dir = request, Path(data_dir)
        self.schema = schema(request.class_names, provenance, request.verifier)
        k = len(request.class_names)
        self.tries, self.accepted = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)

    @torch.no_grad()
    def candidates(self, cand: np.ndarray, y: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor,
                                                                             np.ndarray]:
        """(pixels, verifier label, verifier confidence, kept) of the candidates with these ids; without
        the verifier, the requested labels and a confidence of 1."""
        r = self.request
        pixels = to_uint8(render_rows(self.G, cand, r.seed, y))
        x = from_uint8(pixels).to(self.device) if self.net is not None or self.drs else None
        pred, conf = verdicts(self.net, x) if self.net is not None else (y, torch.ones(len(cand)))
        keep = np.ones(len(cand), dtype=bool)
        if r.filter and r.filter.min_confidence is not None:
            keep &= (conf.numpy() >= r.filter.min_confidence) & (y is None or (pred == y).numpy())
        if self.drs:
            p = drs_keep_probability(self.D, x, None if y is None else y.to(self.device), self.drs)
            keep &= uniform_rows(cand, r.seed, stream=1).numpy() < p
        return pixels, pred, conf, keep

    @torch.no_grad()
    def rows(self, start: int, stop: int) -> pa.Table:
        """Rows [start, stop) as a table; computed block by block on FORWARD_BLOCK-aligned ids. With a
        filter, attempt t of row i is candidate i + t x rows, tried for the whole block alike, so that a
        row's content still depends only on (seed, i)."""
        r = self.request
        tables = []
        for block, want in aligned_blocks(start, stop, r.rows):
            y = labels_for_rows(block, r.counts, r.seed) if r.counts else None
            pixels = np.zeros((len(block), *self.G.image_shape), dtype=np.uint8)
            pred = torch.zeros(len(block), dtype=torch.int64)
            conf = torch.zeros(len(block))
            done = np.zeros(len(block), dtype=bool)
            for attempt in range(r.max_tries):
                px, p, c, keep = self.candidates(block + attempt * r.rows, y)
                new = keep & ~done
                pixels[new], pred[torch.from_numpy(new)], conf[torch.from_numpy(new)] = px[new], p[new], c[new]
                self.tries += np.bincount(_labels(y, p)[~done], minlength=len(self.tries))
                done |= new
                if done.all():
                    break
            if not done[want].all():
                rate = float(self.accepted.sum() + done.sum()) / max(1, float(self.tries.sum()))
                raise FilterUnmet(f"the filter accepted {rate:.1%} of the candidates; {int((~done[want]).sum())} "
                                  f"rows found none in {r.max_tries} tries (generate.max_tries)")
            self.accepted += np.bincount(_labels(y, pred)[want], minlength=len(self.accepted))
            block, pixels, pred, conf = block[want], pixels[want], pred[torch.from_numpy(want)], \
                conf[torch.from_numpy(want)]
            labels = y[torch.from_numpy(want)].numpy() if y is not None else pred.numpy()
            images = pa.StructArray.from_arrays(
                [pa.array(encode_pngs(pixels), pa.binary()), pa.array([f"{i:09d}.png" for i in block], pa.string())],
                fields=list(IMAGE_TYPE))
            columns = {"id": pa.array(block, pa.int64()), "image": images, "label": pa.array(labels, pa.int64())}
            if self.net is not None:
                columns.update({"verifier_label": pa.array(pred.numpy(), pa.int64()),
                                "verifier_confidence": pa.array(conf.numpy(), pa.float32())})
            tables.append(pa.table(columns, schema=self.schema))
        return pa.concat_tables(tables)

    def write(self, index: int, count: int, start: int, stop: int) -> dict:
        """Write shard `index` of `count` (rows [start, stop)); returns its manifest entry."""
        final = self.data_dir / shard_name(index, count)
        tmp = final.with_name(f".{final.name}.tmp")
        writer = pq.ParquetWriter(tmp, self.schema)
        counts = np.zeros(len(self.request.class_names), dtype=np.int64)
        self.tries[:], self.accepted[:] = 0, 0
        try:
            for lo in range(start, stop, ROW_GROUP):
                table = self.rows(lo, min(lo + ROW_GROUP, stop))
                counts += np.bincount(table.column("label").to_numpy(), minlength=len(counts))
                writer.write_table(table, row_group_size=ROW_GROUP)
            # The tries travel with the file, so a rerun that finds it complete still knows them.
            writer.add_key_value_metadata({TRIES_KEY: json.dumps(self.tries.tolist())})
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.close()
        digest = sha256_file(tmp)
        os.replace(tmp, final)
        side = sum_path(final)
        side.parent.mkdir(parents=True, exist_ok=True)
        side.write_text(digest + "\n")
        if self.upload:
            fs, root = filesystem(self.upload)
            local_root = self.data_dir.parent
            for path in (final, side):  # the checksum last: a shard counts as written once it is there
                upload(fs, path, f"{root}/{path.relative_to(local_root).as_posix()}")
                path.unlink()
        return {"file": final.name, "rows": stop - start, "sha256": digest, "counts": counts.tolist()}

    def __call__(self, batch: dict) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        out = [self.outcome(int(i), int(n), int(a), int(b), node)
               for i, n, a, b in zip(batch["index"], batch["count"], batch["start"], batch["stop"])]
        return {key: [o[key] for o in out] for key in out[0]} if out else {}

    def outcome(self, index: int, count: int, start: int, stop: int, node: str) -> dict:
        """`write`'s manifest entry as a row of the pipeline's output (its class counts as JSON, the node
        it was written on), or the row of its error: reported as data, so that the pipeline ends and its
        actors are released."""
        try:
            done = self.write(index, count, start, stop)
            return {"file": done["file"], "rows": done["rows"], "sha256": done["sha256"],
                    "counts": json.dumps(done["counts"]), "error": "", "unmet": "", "node_id": node}
        except Exception as e:
            return {"file": shard_name(index, count), "rows": 0, "sha256": "", "counts": "[]",
                    "error": f"{e.__class__.__name__}: {e}", "unmet": str(e) if isinstance(e, FilterUnmet) else "",
                    "node_id": node}


def file_tries(path: Path) -> list[int]:
    """Candidates tried per class for the rows of a complete data file (from its metadata)."""
    meta = pq.read_metadata(path).metadata or {}
    return [int(t) for t in json.loads(meta.get(TRIES_KEY.encode(), b"[]"))]


def _labels(y: torch.Tensor | None, pred: torch.Tensor) -> np.ndarray:
    """The class a row is counted under: the requested label, or the verifier's for an unconditional model."""
    return (y if y is not None else pred).numpy()
