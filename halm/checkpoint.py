"""Checkpoint folders written as a whole: every trainer of halm saves through here.

A checkpoint is several files (weights, optimizer, RNG, step…) that must belong to the same step. They
are written into `NAME.tmp/`, made durable, and swapped in by renames (`NAME/` -> `NAME.old/`,
`NAME.tmp/` -> `NAME/`), so a kill at any moment leaves one complete checkpoint: `NAME/`, or
`NAME.old/` when the kill fell between the two renames.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from halm.errors import UserError


def write_checkpoint_dir(final: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` fills a fresh folder; it then replaces `final` in one rename."""
    final = Path(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for f in tmp.iterdir():  # make the bytes durable before the rename makes them visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def complete_checkpoint_dir(final: Path, required: tuple[str, ...]) -> Path | None:
    """The last complete checkpoint folder written by write_checkpoint_dir (holding every `required` file), or None."""
    final = Path(final)
    for d in (final, final.with_name(final.name + ".old")):
        if all((d / name).exists() for name in required):
            return d
    return None


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename: a kill leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of a `metrics.jsonl` logged after `step`: on resume, those steps are trained (and logged) again."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the half-written last line of a killed run
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(state: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """safetensors save_file with the usual file permissions (it creates files 0600 whatever the umask)."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata)
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


class FolderInUse(UserError):
    """Another live process holds the folder (a run or a dataset being written)."""


class FolderLock:
    """An OS lock on FOLDER/.lock for as long as a job writes the folder (released when the process dies).

    A second job on the same folder gets FolderInUse naming the holder (pid, host, command, start time).
    A folder this lock created and that holds nothing else when released is removed again.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> FolderLock:
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / ".lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace")
                os.close(fd)
                try:
                    h = json.loads(holder)
                    who = f"process {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
                except (json.JSONDecodeError, KeyError, TypeError):
                    who = "another process"
                raise FolderInUse(f"{self.folder} is in use by {who}; wait for it to finish or stop it") from None
            try:  # a releasing holder may have removed the file between our open and our lock: then retry
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
            self.folder.mkdir(parents=True, exist_ok=True)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        if self.created and [p.name for p in self.folder.iterdir()] == [".lock"]:
            shutil.rmtree(self.folder, ignore_errors=True)  # still holding the lock: nobody can be using it
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class DamagedFile(UserError):
    """A file halm wrote that can no longer be read as written (truncated, edited, or not halm's)."""


def read_json_file(path: str | os.PathLike, what: str, fix: str) -> dict:
    """A JSON object from `path`, or DamagedFile naming the file, what it should be and what to do."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFile(f"{path}: damaged {what} (not valid JSON: {e}); {fix}") from None
    if not isinstance(d, dict):
        raise DamagedFile(f"{path}: damaged {what} (expected a JSON object); {fix}")
    return d


def load_weights(path: str | os.PathLike, fix: str, device: str = "cpu") -> dict:
    """safetensors load_file, or DamagedFile naming the file (a truncated or foreign file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise DamagedFile(f"{path}: damaged weights file ({e}); {fix}") from None


def load_state(path: str | os.PathLike, fix: str, device="cpu") -> dict:
    """torch.load(weights_only=True) of a trainer state, or DamagedFile. Never unpickles code."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise DamagedFile(f"{path}: holds objects other than tensors, numbers and strings; halm does not "
                          f"unpickle code. {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise DamagedFile(f"{path}: damaged trainer state ({str(e).splitlines()[0][:200]}); {fix}") from None
