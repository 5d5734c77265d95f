"""A dataset folder, every path of it in one place: where `ganpipe generate` writes, the card, the UI
and the workflow read.

    DIR/data/train-00000-of-0000N.parquet   the rows (Hugging Face image layout)
    DIR/README.md                           the dataset card
    DIR/evaluation/                         the dataset's own evaluation
    DIR/manifest.json                       every file with its rows and sha256, written last
    DIR/.ganpipe/request.json               what was asked (a rerun finishes the same request)
    DIR/.ganpipe/weights.pt                 the generator and verifier the actors load
    DIR/.ganpipe/sums/FILE.sha256           a data file counts as written when its checksum matches

A dataset in object storage (`--out s3://BUCKET/PREFIX`) is written through a local mirror
(`~/.cache/ganpipe/datasets/KEY/`, KEY from the URI) where the request, the card, the evaluation and
the manifest are made exactly as for a folder. Each generator actor, on whatever node, writes its
file to a temporary local file and uploads it, then its sha256: an object store shows an object only
once its upload is complete, and a file counts as written only when its checksum object exists and
matches, so a killed job never leaves a half-written file looking complete. The driver downloads the
files (checking each sha256) to count and evaluate them, and uploads the request first and the
manifest last. Credentials and the endpoint come from the usual `AWS_*` variables (pyarrow's S3 file
system), on every node. For a local folder, the methods that keep the bucket in step do nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import contract, names
from .checkpoints import SUM_SUFFIX, sha256_file

REQUEST = "request.json"
WEIGHTS = "weights.pt"
SUMS = "sums"
SHARD_GLOB = "train-*.parquet"
SHARD = re.compile(r"^train-(\d{5})-of-(\d{5})\.parquet$")


def shard_name(index: int, count: int) -> str:
    return f"train-{index:05d}-of-{count:05d}.parquet"


def shard_index(name: str) -> tuple[int, int] | None:
    """(index, count) of a data file's name; None for a name that is not one."""
    m = SHARD.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def sum_path(path: Path) -> Path:
    """Where a data file's sha256 is kept: DIR/.ganpipe/sums/, out of the readers' way."""
    return path.parent.parent / contract.DATASET_STATE_DIR / SUMS / (path.name + SUM_SUFFIX)


def file_complete(path: Path) -> bool:
    """A data file counts as written when its checksum is recorded and matches."""
    side = sum_path(path)
    return path.is_file() and side.is_file() and sha256_file(path) == side.read_text().strip()


def filesystem(uri: str):
    """(pyarrow file system, path inside it) of a dataset URI; one clear error for a bucket that cannot
    be reached."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri.rstrip("/"))
        info = fs.get_file_info(path.split("/")[0])
    except (OSError, ValueError) as e:
        raise UserError(f"--out {uri}: cannot reach it ({str(e).splitlines()[0]})") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"--out {uri}: the bucket {path.split('/')[0]!r} does not exist")
    return fs, path


def upload(fs, local: Path, path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _download(fs, path: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.replace(local)


def _exists(fs, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.File


@dataclass(frozen=True)
class Filter:
    """A quality filter on the rows: the verifier's agreement and confidence, discriminator rejection
    sampling (its bound and gamma), and the candidates tried per row before the filter counts as unmet."""
    min_confidence: float | None
    max_tries: int
    drs: dict | None


@dataclass(frozen=True)
class DatasetRequest:
    """What a dataset folder is being written for (DIR/.ganpipe/request.json); its `key` (a hash of the
    rest) tells a rerun of the same request from another one."""
    model: str
    run_id: str | None
    iteration: int
    data_fingerprint: str
    seed: int
    rows: int
    counts: list[int] | None  # rows per class; None: an unconditional model's rows, labelled by the verifier
    class_names: list[str]
    rows_per_file: int
    filter: Filter | None = None
    device: str = "cpu"  # where the actors compute: their bytes differ between a CPU and a GPU
    verifier: bool = True  # the verifier's columns written (generate.verifier)

    def what(self) -> dict:
        out = {k: getattr(self, k) for k in ("model", "run_id", "iteration", "data_fingerprint", "seed", "rows",
                                             "counts", "class_names", "rows_per_file")}
        if self.filter:
            out.update(dataclasses.asdict(self.filter))
        if self.device != "cpu":
            out["device"] = self.device
        if not self.verifier:
            out["verifier"] = False
        return out

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.what(), sort_keys=True).encode()).hexdigest()

    @property
    def max_tries(self) -> int:
        return self.filter.max_tries if self.filter else 1

    def to_dict(self) -> dict:
        return {**self.what(), "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetRequest":
        has_filter = "max_tries" in d
        return cls(d["model"], d.get("run_id"), int(d["iteration"]), d["data_fingerprint"], int(d["seed"]),
                   int(d["rows"]), d.get("counts"), list(d["class_names"]), int(d["rows_per_file"]),
                   Filter(d.get("min_confidence"), int(d["max_tries"]), d.get("drs")) if has_filter else None,
                   d.get("device", "cpu"), bool(d.get("verifier", True)))


@dataclass(frozen=True)
class DatasetFolder:
    root: Path  # the folder itself, or the local mirror of `remote`
    remote: str | None = None  # the bucket URI the folder mirrors

    @classmethod
    def at(cls, out: str | Path) -> "DatasetFolder":
        """The dataset folder `--out` names: a local path, or a bucket URI (checked reachable now)."""
        if names.is_local(str(out)):
            return cls(Path(out).expanduser().resolve())
        uri = str(out).rstrip("/")
        filesystem(uri)  # a bucket that is missing or unreachable: one clear error, now
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        return cls(Path.home() / ".cache" / "ganpipe" / "datasets" / key, uri)

    @property
    def location(self) -> str:
        return self.remote or str(self.root)

    @property
    def data(self) -> Path:
        return self.root / contract.DATASET_DATA_DIR

    @property
    def state(self) -> Path:
        return self.root / contract.DATASET_STATE_DIR

    @property
    def request_file(self) -> Path:
        return self.state / REQUEST

    @property
    def weights(self) -> Path:
        return self.state / WEIGHTS

    @property
    def manifest(self) -> Path:
        return self.root / contract.DATASET_MANIFEST

    @property
    def card(self) -> Path:
        return self.root / contract.DATASET_CARD

    @property
    def evaluation(self) -> Path:
        return self.root / contract.DATASET_EVALUATION_DIR

    def shard(self, index: int, count: int) -> Path:
        return self.data / shard_name(index, count)

    def shards(self) -> list[Path]:
        """The data files present, in order."""
        return sorted(self.data.glob(SHARD_GLOB))

    def request(self) -> dict | None:
        """The request this folder holds, if any (as written: an older request's fields may differ)."""
        return json.loads(self.request_file.read_text()) if self.request_file.is_file() else None

    def finished(self) -> bool:
        return self.manifest.is_file()

    # Keeping a bucket in step with its mirror (nothing to do for a local folder).

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def pull_state(self) -> None:
        """The bucket's request and manifest (when there are) into the mirror, so that the folder rules
        (another request's dataset, a dataset ganpipe did not start) apply to the bucket's content."""
        if not self.remote:
            return
        fs, root = filesystem(self.remote)
        for target in (self.request_file, self.manifest):
            if _exists(fs, f"{root}/{self._rel(target)}"):
                _download(fs, f"{root}/{self._rel(target)}", target)
            else:
                target.unlink(missing_ok=True)

    def restart_remote(self, replaced: bool) -> None:
        """The bucket before a (re)start: another request's files removed when `replaced`, the manifest
        dropped (complete again only when written last), this request uploaded first."""
        if not self.remote:
            return
        import pyarrow.fs as pafs

        fs, root = filesystem(self.remote)
        if replaced and fs.get_file_info(root).type == pafs.FileType.Directory:
            fs.delete_dir_contents(root)
        if _exists(fs, f"{root}/{contract.DATASET_MANIFEST}"):
            fs.delete_file(f"{root}/{contract.DATASET_MANIFEST}")
        self.push([self.request_file])

    def push(self, items: list[Path]) -> None:
        """Upload files (or whole folders) of the mirror to the same places in the bucket."""
        if not self.remote:
            return
        fs, root = filesystem(self.remote)
        for item in items:
            files = (sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else
                     [item] if item.is_file() else [])
            for f in files:
                upload(fs, f, f"{root}/{self._rel(f)}")

    def pull_shards(self, names_: list[str]) -> None:
        """Download the data files whose checksum object exists into the mirror (with their checksums);
        the caller checks each against its sha256."""
        if not self.remote:
            return
        fs, root = filesystem(self.remote)
        for name in names_:
            path = self.data / name
            side = sum_path(path)
            remote_side = f"{root}/{self._rel(side)}"
            if not _exists(fs, remote_side) or not _exists(fs, f"{root}/{self._rel(path)}"):
                path.unlink(missing_ok=True)  # the bucket is the truth: a mirrored copy it lacks is written again
                side.unlink(missing_ok=True)
                continue
            _download(fs, remote_side, side)
            if path.is_file() and sha256_file(path) == side.read_text().strip():
                continue  # already mirrored
            _download(fs, f"{root}/{self._rel(path)}", path)
