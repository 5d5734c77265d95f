"""One writer per name: a training run, a sweep, a workflow or a dataset folder is held by one live
process at a time.

The hold is an exclusive `flock` on a small file that also records the holder (pid, host, command,
start time). The kernel drops the lock when its process ends, however it ends, so a holder that died
(killed, crashed, the machine rebooted) never blocks a rerun, and resuming stays possible. Locks live
beside what they protect: `STORAGE/.locks/KIND-NAME.lock` for runs, sweeps and workflows when the
storage path is a folder (shared by every node of a cluster when the folder is), else in
`~/.cache/ganpipe/locks` keyed by the storage URI; `DIR/.ganpipe/writer.lock` for a dataset folder.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from ..errors import UserError

LOCK_DIR = ".locks"


class NameHeld(UserError):
    """The name is held by another live process."""


def is_local(storage: str) -> bool:
    """A storage path on this machine's file system (a shared mount counts), not an object store URI."""
    return "://" not in storage or storage.startswith("file://")


def lock_path(kind: str, name: str, storage: str) -> Path:
    """Where the lock of `kind` `name` lives for runs stored under `storage`."""
    if is_local(storage):
        return Path(storage.removeprefix("file://")).expanduser().resolve() / LOCK_DIR / f"{kind}-{name}.lock"
    key = hashlib.sha256(storage.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "ganpipe" / "locks" / key / f"{kind}-{name}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"({info.get('command', '')[:200]})")


def _open_locked(path: Path, what: str) -> int:
    """An open descriptor of `path` holding its exclusive lock. A lock file is removed when released,
    so a descriptor locked after its file was replaced is stale: try again on the new one."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was removed by a releasing holder between mkdir and open
        except OSError as e:
            raise UserError(f"{what}: cannot write there (lock file {path}: {e.strerror or e.__class__.__name__})") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NameHeld(f"{what} is in use by {_holder(path)}; wait for it to end, stop it, or choose "
                           f"another name (lock file {path})") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold_path(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file `path` for the duration of the block; `what` names the thing in the error.
    Folders made only for the lock are removed with it."""
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    fd = _open_locked(path, what)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a waiting process then opens a new file
        os.close(fd)
        for folder in made:  # deepest first; one that holds anything else stays
            with contextlib.suppress(OSError):
                folder.rmdir()


def hold(kind: str, name: str, storage: str, key: str) -> contextlib.AbstractContextManager:
    """Hold `kind` `name` (a run, sweep or workflow stored under `storage`); `key` is the config key
    that set the name, for the error."""
    return hold_path(lock_path(kind, name, storage), f"{key}={name!r}")


def hold_dataset(folder: str | Path, key: str = "--out") -> contextlib.AbstractContextManager:
    """Hold a dataset folder while it is written."""
    from . import contract

    return hold_path(Path(folder).expanduser().resolve() / contract.DATASET_STATE_DIR / contract.DATASET_WRITER_LOCK,
                     f"{key} {str(folder)!r}")
