"""File-system primitives of run folders: atomic writes, the writer lock, a full disk named
as such, and the manifest (metrics.json) that commits rounds.

Every write goes to a temporary file in the same folder and is renamed into place
(os.replace), so a crash never leaves a half-written file. metrics.json is a run's manifest
and its one commit point: a round exists once metrics.json names it and its weights file is
there (commit_round writes the weights first, the manifest last). Writers hold an exclusive,
non-blocking flock on the folder's .lock. Used by every run kind (smeme.store).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from .safe_io import read_json

SCHEMA_VERSION = 1  # of metrics.json (and of a run's config.json, smeme.store)
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"


class StoreError(Exception):
    """A run folder or one of its files is missing, damaged, foreign or inconsistent."""


class RunLockedError(StoreError):
    """Another process is writing to the run."""


class DiskFullError(StoreError):
    """A write failed for lack of space (or quota); the file named was not changed."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path) -> DiskFullError:
    err = DiskFullError(f"Cannot save {path}: no space left on device; free some space and try again "
                        "(everything saved before is kept).")
    err.path = Path(path)
    return err


# -- atomic writes --------------------------------------------------------------------
def atomic_write(path: Path, write) -> None:
    """Call write(file_object) on a temp file next to `path`, then rename it into place.

    A full disk raises DiskFullError naming `path` (not the temp file); `path` is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; runs are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise disk_full_error(path) from None
        raise


def atomic_write_json(path: Path, obj) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False).encode()
    atomic_write(path, lambda f: f.write(data))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def jsonable(obj):
    """Metrics as strict JSON: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# -- locking ----------------------------------------------------------------------------
_held: dict[str, list] = {}  # realpath -> [fd, depth]; the lock is re-entrant per process
_held_guard = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Exclusive, non-blocking flock on folder/.lock; RunLockedError if someone holds it."""
    key = os.path.realpath(folder)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            try:
                fd = os.open(os.path.join(key, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                if exc.errno in _DISK_FULL:
                    raise disk_full_error(Path(folder) / LOCK_FILE) from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"The run in {folder} is busy: another smeme process (pid {holder}) is writing "
                    "to it; wait for it to finish and try again.") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


# -- the manifest (metrics.json) and the round commit -------------------------------------
def write_manifest(folder: Path, rounds: dict) -> None:
    """metrics.json: each committed round's metrics record."""
    atomic_write_json(Path(folder) / METRICS_FILE, {
        "schema_version": SCHEMA_VERSION, "rounds": {str(r): rounds[r] for r in sorted(rounds)}})


def read_manifest(folder: Path) -> dict[int, dict]:
    """{round: metrics record} from metrics.json ({} when absent); StoreError when damaged."""
    path = Path(folder) / METRICS_FILE
    if not os.path.lexists(path):
        return {}
    data = read_json(path, StoreError, f"{METRICS_FILE} in {folder}")
    try:
        rounds = {int(k): v for k, v in data["rounds"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise StoreError(f"{METRICS_FILE} in {folder} is damaged ({type(exc).__name__}: {exc}).") from None
    if any(k < 0 or not isinstance(v, dict) for k, v in rounds.items()):
        raise StoreError(f"{METRICS_FILE} in {folder} is damaged: each round needs a number of 0 or more and a "
                         "record (a JSON object).")
    return rounds


def update_manifest(folder: Path, k: int, metrics: dict) -> None:
    """Set round k's record in metrics.json (the caller holds the folder lock)."""
    data = read_manifest(folder)
    data[int(k)] = jsonable(metrics)
    write_manifest(folder, data)


def commit_round(folder: Path, k: int, weights_path: Path, data: bytes, metrics: dict | None) -> None:
    """Write round k's weights file, then name it in metrics.json (the commit point). Until
    the commit the file is an orphan no reader sees; if the commit fails it is removed.
    The caller holds the folder lock and has checked that round k is not committed."""
    atomic_write_bytes(weights_path, data)
    try:
        update_manifest(folder, k, metrics or {})
    except BaseException:
        with contextlib.suppress(OSError):
            Path(weights_path).unlink()
        raise


def raise_disk_full(exc: BaseException, path) -> None:
    """Re-raise a bare OSError from a full disk (mkdir, mkdtemp) as DiskFullError naming `path`."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        raise disk_full_error(getattr(exc, "filename", None) or path) from None
