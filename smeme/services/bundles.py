"""Run bundles in the app: a run as zip bytes for a download, an uploaded zip as a new run.

smeme.bundle does the work and the checks; here only the places: bundles are written to
and read from temporary files under the cache (never a path the browser names), and an
uploaded file's name only suggests the new run's name, after it is made a plain one.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..bundle import BundleError, export_run, import_bundle
from . import access
from .runs import folder_stamp, new_run_folder
from .settings import cache_dir, runs_dir

MAX_UPLOAD_BYTES = 512 << 20  # the bundle's own limits apply after this (smeme.bundle)
_last: dict[str, tuple[tuple, bytes]] = {}  # folder -> (stamp, bytes): one bundle per run in memory


def _work_dir() -> Path:
    d = cache_dir() / "bundles"
    d.mkdir(parents=True, exist_ok=True)
    return d


def bundle_bytes(folder) -> bytes:
    """The run in `folder` as a bundle (zip bytes); rebuilt only when the run has changed."""
    folder = Path(folder).resolve()
    stamp = folder_stamp(folder)
    hit = _last.get(str(folder))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{folder.name}.", suffix=".zip", dir=_work_dir())
    os.close(fd)
    try:
        export_run(folder, tmp)
        data = Path(tmp).read_bytes()
    except BundleError as exc:  # e.g. a damaged round: export packs only what import accepts
        raise BundleError(str(exc).replace(str(folder), folder.name)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    _last.clear()  # bundles can be large: keep only the latest
    _last[str(folder)] = (stamp, data)
    return data


def bundle_file_name(folder) -> str:
    return f"{Path(folder).name}.zip"


def run_name_for(upload_name: str) -> str:
    """A plain, unused run name from an uploaded file's name ('my run (2).zip' -> 'my-run-2')."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(upload_name)).name.rsplit(".", 1)[0])
    stem = re.sub(r"^[^A-Za-z0-9]+", "", stem)[:80].rstrip("-.") or "imported"
    return new_run_folder("imported", stem).name


def import_upload(upload_name: str, data: bytes) -> Path:
    """Check the uploaded bundle and add it as a new run; returns its folder. BundleError (one
    sentence) when refused; then nothing is added. Refused in viewer mode (ReadOnlyError)."""
    access.require_writer()
    if len(data) > MAX_UPLOAD_BYTES:
        raise BundleError(f"The file is {len(data) >> 20} MiB, more than a bundle uploaded here may be "
                          f"({MAX_UPLOAD_BYTES >> 20} MiB).")
    name = run_name_for(upload_name)
    work = Path(tempfile.mkdtemp(prefix=".upload-", dir=_work_dir()))
    path = work / f"{name}.zip"  # refusals name the file as the user knows it
    try:
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise BundleError(f"The upload could not be stored in the cache ({exc.strerror or exc}).") from None
        return import_bundle(path, runs_dir(), name=name).resolve()
    finally:
        shutil.rmtree(work, ignore_errors=True)
