"""A dataset written to object storage (`--out s3://BUCKET/PREFIX`).

The driver keeps a local mirror of the dataset (`~/.cache/ganpipe/datasets/KEY/`, KEY from the URI),
where the request, the card, the evaluation and the manifest are made exactly as for a folder. Each
generator actor, on whatever node, writes its shard to a temporary local file and uploads it, then
its sha256: an object store shows an object only once its upload is complete, and a shard counts as
written only when its checksum object exists and matches, so a killed job never leaves a half-written
file looking complete. The driver downloads the shards (checking each sha256) to count and evaluate
them, and uploads the request first and the manifest last. Credentials and the endpoint come from the
usual `AWS_*` variables (pyarrow's S3 file system), on every node.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...errors import UserError
from ...services import contract


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


def mirror(uri: str) -> Path:
    """The driver's local mirror of the dataset at `uri`."""
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "ganpipe" / "datasets" / key


def _exists(fs, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.File


def upload(fs, local: Path, path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def download(fs, path: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.replace(local)


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def pull_state(uri: str, local: Path) -> None:
    """The remote request and manifest (when there are) into the mirror, so that the folder rules
    (another request's dataset, a dataset ganpipe did not start) apply to the bucket's content."""
    fs, root = filesystem(uri)
    for item in (f"{contract.DATASET_STATE_DIR}/request.json", contract.DATASET_MANIFEST):
        target = local / item
        if _exists(fs, f"{root}/{item}"):
            download(fs, f"{root}/{item}", target)
        else:
            target.unlink(missing_ok=True)


def clear(uri: str) -> None:
    """Remove the remote dataset's files (an --overwrite of another request)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        fs.delete_dir_contents(root)


def drop_manifest(uri: str) -> None:
    fs, root = filesystem(uri)
    if _exists(fs, f"{root}/{contract.DATASET_MANIFEST}"):
        fs.delete_file(f"{root}/{contract.DATASET_MANIFEST}")


def push(uri: str, local: Path, items: list[Path]) -> None:
    """Upload files (or whole folders) of the mirror to the same places under `uri`."""
    fs, root = filesystem(uri)
    for item in items:
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item] if item.is_file() else []
        for f in files:
            upload(fs, f, f"{root}/{rel(f, local)}")


def pull_shards(uri: str, local: Path, names_: list[str]) -> None:
    """Download the shards whose checksum object exists into the mirror (with their checksums); the
    caller checks each against its sha256."""
    from .writer import sha256_file, sum_path

    fs, root = filesystem(uri)
    for name in names_:
        path = local / contract.DATASET_DATA_DIR / name
        side = sum_path(path)
        remote_side = f"{root}/{rel(side, local)}"
        if not _exists(fs, remote_side) or not _exists(fs, f"{root}/{rel(path, local)}"):
            path.unlink(missing_ok=True)  # the bucket is the truth: a mirrored copy it lacks is written again
            side.unlink(missing_ok=True)
            continue
        download(fs, remote_side, side)
        if path.is_file() and sha256_file(path) == side.read_text().strip():
            continue  # already mirrored
        download(fs, f"{root}/{rel(path, local)}", path)

