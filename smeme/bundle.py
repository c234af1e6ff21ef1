"""Run bundles: one zip file that carries a run to another machine or cache.

A bundle holds exactly what a run needs and nothing else:
    config.json, metrics.json (if any), round_<k>.safetensors, round_<k>.deferred.json (a round's
    deferred metrics, smeme.deferred), training_rows.npy (a csv run's rows, checksummed in
    config.json), cache/<key>.npy
(no .lock, no temporary files, no cached training-data sample). Binary members are stored,
JSON members deflated, so a genuine bundle is hardly compressed at all.

Import treats the zip as hostile. Everything is checked before the run appears:
member names (no absolute paths, `..`, backslashes or unexpected files), member kinds
(regular files only: no links), count and sizes, duplicates, and from the central directory,
before a byte is written: at most MAX_TOTAL_BYTES uncompressed in all, at most MAX_TOTAL_RATIO
times the zip file's own size in all (above RATIO_FLOOR), each large member at most MAX_RATIO,
and room on the disk. While extracting, the bytes actually written are counted against each
member's declared size and the total (declared sizes can lie). Then, in a temporary folder
inside the runs folder, the run's contents are checked (smeme.bundle_contents): config.json
must follow its run kind's strict schema (smeme.run_schema: no unknown field at any level, no
file named), every round file must be named in metrics.json
and match the config's model (tensor names, shapes, finite values, read with safetensors),
every deferred-metrics file must be one smeme writes for a committed round and its weights
(smeme.deferred.check_files), kept training rows must match their checksum, and every cached
array must load without pickle.
Only then is the folder renamed into place, so a refused import writes nothing. An existing run
is replaced only with overwrite=True.

Export packs a run only through import's own checks (it imports the zip it wrote into a
temporary folder first) and never follows a symbolic link: a linked config.json or round
file is refused. A csv run made before runs kept their rows is packed without the file path
its config named.

Stable Diffusion runs (the store's "sd" kind, smeme.images.sd_explore) reference a pipeline folder instead of holding
round 0; their bundle carries the LoRA adapters, metrics and cached grids, which open and
show without the pipeline (sampling more names the pipeline it needs).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .bundle_contents import ROUND_FILE_RE, BundleError, check_run
from .deferred import FILE_RE as _DEFERRED_RE
from .deferred import packable as _packable_deferred
from .safe_io import MAX_JSON_BYTES, read_json, size_text
from .store import CACHE_DIR, CONFIG_FILE, METRICS_FILE, TRAINING_ROWS_FILE, folder_lock, open_run

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 1 << 30  # 1 GiB: a round of the digits UNet is ~10 MB, an SD LoRA ~3 MB
MAX_TOTAL_BYTES = 2 << 30  # 2 GiB uncompressed in all
MAX_RATIO = 100  # uncompressed / compressed, for a member above RATIO_FLOOR bytes
MAX_TOTAL_RATIO = 20  # all members uncompressed / the zip file's size, once above RATIO_FLOOR
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20
_CACHE_RE = re.compile(r"^cache/[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}\.npy$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# -- export -------------------------------------------------------------------------------
def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _members_of(folder: Path) -> list[str]:
    """The names (relative to the run folder) a bundle of this run holds: what import accepts.
    A cached array that is a link, needs pickle or does not load is left out (caches are
    recomputed), and so is the cached training-data sample (data_n*: rebuilt from the config,
    or read from the run's own rows)."""
    names = [CONFIG_FILE]
    for name in (METRICS_FILE, TRAINING_ROWS_FILE):
        if os.path.lexists(folder / name):
            names.append(name)
    names += sorted((p.name for p in folder.iterdir() if ROUND_FILE_RE.match(p.name) and os.path.lexists(p)),
                    key=lambda n: int(ROUND_FILE_RE.match(n).group(1)))
    names += _packable_deferred(open_run(folder))  # a damaged or stale one is left out (computed again)
    cache = folder / CACHE_DIR
    if cache.is_dir() and not _is_link(cache):
        for p in sorted(cache.iterdir()):
            name = f"{CACHE_DIR}/{p.name}"
            if (_CACHE_RE.match(name) and not p.name.startswith("data_n") and not _is_link(p) and p.is_file()
                    and _loads_without_pickle(p)):
                names.append(name)
    return names


def _loads_without_pickle(path: Path) -> bool:
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
        return True
    except (OSError, ValueError, EOFError):
        return False


def _packed_config(folder: Path) -> bytes | None:
    """config.json as the bundle carries it: None for the file as it is; new bytes for a csv
    run made before runs kept their rows, without the file path its config named (never read),
    and for a Stable Diffusion run made on a pipeline folder, which the bundle names by the
    folder's name only (run_schema.pipeline_name)."""
    from .run_schema import pipeline_name

    cfg = read_json(folder / CONFIG_FILE, BundleError, f"{CONFIG_FILE} in {folder}")
    if not isinstance(cfg, dict):
        return None
    model = cfg.get("model")
    if cfg.get("kind") == "sd" and isinstance(model, dict) and isinstance(model.get("source"), str):
        name = pipeline_name(model["source"])
        if name == model["source"]:
            return None
        model["source"] = name
        return json.dumps(cfg, indent=2, sort_keys=True).encode()
    ds = cfg.get("dataset")
    if not (isinstance(ds, dict) and ds.get("name") == "csv"):
        return None
    legacy = [(ds, "params"), (ds.get("info"), "params"), (ds, "domain")]
    holders = [h.get(key) for h, key in legacy if isinstance(h, dict)]
    if not any(isinstance(h, dict) and "path" in h for h in holders):
        return None
    for h in holders:
        if isinstance(h, dict):
            h.pop("path", None)
    return json.dumps(cfg, indent=2, sort_keys=True).encode()


def _copy_member(zf: zipfile.ZipFile, path: Path, name: str) -> None:
    """Stream the regular file `path` into the zip as `name`, never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise BundleError(f"{name} cannot be packed ({why})") from None
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{name} is not a regular file")
        member = zipfile.ZipInfo(name, date_time=time.localtime(info.st_mtime)[:6])
        member.external_attr = (stat.S_IFREG | 0o644) << 16
        member.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
        with zf.open(member, "w", force_zip64=info.st_size > (1 << 30)) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def export_run(run_folder, out_zip) -> Path:
    """Write the run in `run_folder` as a bundle to `out_zip` (atomically); returns its path.
    What it packs passes import's checks first (else BundleError naming why); a file already
    at `out_zip` is kept when the export is refused."""
    folder = Path(run_folder)
    out = Path(out_zip)
    if out.suffix.lower() != ".zip":
        raise BundleError(f"The bundle's file name must end in .zip, got {out.name}.")
    if not out.parent.is_dir():
        raise BundleError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    if _is_link(folder / CONFIG_FILE):
        raise BundleError(f"The run in {folder} cannot be exported: its {CONFIG_FILE} is a symbolic link, "
                          "and a bundle never follows one.")
    open_run(folder)  # a clear error for a missing, foreign or damaged run
    try:
        _pack_checked(folder, out)
    except BundleError as exc:
        reason = getattr(exc, "reason", None) or " ".join(str(exc).replace(f" in {folder}", "").split()).rstrip(".")
        raise BundleError(f"The run in {folder} cannot be exported: {reason}.") from None
    return out


def _pack_checked(folder: Path, out: Path) -> None:
    """Pack the run into a temporary file beside `out`, import it into a temporary folder
    (import's checks), then rename it to `out`."""
    from .store import disk_full_error

    names = _members_of(folder)
    linked = next((n for n in names if _is_link(folder / n)), None)
    if linked:
        raise BundleError(f"{linked} is a symbolic link, and a bundle never follows one")
    total = sum((folder / n).stat().st_size for n in names)
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"it holds {size_text(total)}, more than a bundle may ({size_text(MAX_TOTAL_BYTES)})")
    config_bytes = _packed_config(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as zf:
            for name in names:
                if name == CONFIG_FILE and config_bytes is not None:
                    zf.writestr(name, config_bytes, compress_type=zipfile.ZIP_DEFLATED)
                else:
                    _copy_member(zf, folder / name, name)
        _check_packed(Path(tmp), out.parent)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(out) from None
        raise BundleError(f"{out} cannot be written ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _check_packed(zip_path: Path, where: Path) -> None:
    """Import the packed zip into a temporary folder beside the output: export packs only
    what import accepts."""
    check_dir = Path(tempfile.mkdtemp(prefix=f".{zip_path.name}.check-", dir=where))
    try:
        import_bundle(zip_path, check_dir, name="run")
    finally:
        shutil.rmtree(check_dir, ignore_errors=True)


# -- import: checks on the zip's directory -----------------------------------------------
def _check_name(name: str) -> str:
    """'' when `name` is an allowed member, else why it is refused."""
    if "\\" in name:
        return f"the member name {name!r} holds a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"the member name {name!r} is an absolute path"
    if ".." in name.split("/"):
        return f"the member name {name!r} climbs out of the run with '..'"
    if (name in (CONFIG_FILE, METRICS_FILE, TRAINING_ROWS_FILE) or ROUND_FILE_RE.match(name) or _CACHE_RE.match(name)
            or _DEFERRED_RE.match(name)):
        return ""
    return (f"it holds the unexpected file {name!r} (a bundle holds only config.json, metrics.json, "
            f"round_<k>.safetensors, round_<k>.deferred.json, {TRAINING_ROWS_FILE} and cache/<key>.npy)")


def _check_directory(zf: zipfile.ZipFile, zip_bytes: int) -> list[zipfile.ZipInfo]:
    """The members to extract, or BundleError for the first reason to refuse the zip
    (`zip_bytes`: the zip file's own size, which, unlike its directory, cannot lie)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"it has {len(infos)} members, more than a bundle may ({MAX_MEMBERS})")
    seen: set[str] = set()
    members, total = [], 0
    for info in infos:
        name = info.filename
        if name in seen:
            raise BundleError(f"the member {name!r} appears twice")
        seen.add(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BundleError(f"the member {name!r} is a symbolic link")
        if name == f"{CACHE_DIR}/" and (not stat.S_IFMT(mode) or stat.S_ISDIR(mode)):
            continue  # the cache folder's own entry, written by some zip tools
        if info.flag_bits & 0x1:
            raise BundleError(f"the member {name!r} is encrypted")
        if info.is_dir() or (stat.S_IFMT(mode) and not stat.S_ISREG(mode)):
            raise BundleError(f"the member {name!r} is not a regular file")
        why = _check_name(name)
        if why:
            raise BundleError(why)
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError(f"the member {name!r} is {size_text(info.file_size)}, more than a member may "
                              f"({size_text(MAX_MEMBER_BYTES)})")
        if name.endswith(".json") and info.file_size > MAX_JSON_BYTES:
            raise BundleError(f"the member {name!r} is {size_text(info.file_size)}, more than a JSON file may "
                              f"({size_text(MAX_JSON_BYTES)})")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"its members add up to more than a bundle may hold ({size_text(MAX_TOTAL_BYTES)})")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(f"the member {name!r} is compressed more than {MAX_RATIO}:1 "
                              f"({info.file_size} bytes from {info.compress_size}), as zip bombs are")
        members.append(info)
    if CONFIG_FILE not in seen:
        raise BundleError("it has no config.json, so it is not an smeme run")
    if total > RATIO_FLOOR and total > MAX_TOTAL_RATIO * zip_bytes:
        raise BundleError(f"its members add up to {size_text(total)} from a zip of {size_text(zip_bytes)}, compressed more "
                          f"than {MAX_TOTAL_RATIO}:1 in all, as zip bombs are")
    return members


def _extract_all(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], staged: Path) -> None:
    """Extract the checked members into `staged`, counting the bytes actually written: no
    member past its declared size, the whole past MAX_TOTAL_BYTES never."""
    declared = sum(info.file_size for info in members)
    free = shutil.disk_usage(staged).free
    if declared > free:
        raise BundleError(f"its {size_text(declared)} do not fit in the {size_text(free)} free on the disk of the runs folder")
    written = 0
    for info in members:
        written += _extract(zf, info, staged / info.filename)
        if written > min(declared, MAX_TOTAL_BYTES):
            raise BundleError(f"its members hold more bytes than they declare ({written} written)")


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> int:
    """Copy one member to `target`, never reading more bytes than it declares; the bytes written."""
    if "/" in info.filename:
        target.parent.mkdir(exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(min(_CHUNK, info.file_size - written + 1)):
            written += len(chunk)
            if written > info.file_size:
                raise BundleError(f"the member {info.filename!r} holds more bytes than it declares")
            dst.write(chunk)
    if written != info.file_size:
        raise BundleError(f"the member {info.filename!r} holds fewer bytes than it declares")
    return written


# -- import: checks on the extracted run --------------------------------------------------
# -- import ---------------------------------------------------------------------------------
def import_bundle(zip_path, runs_dir, name: str | None = None, overwrite: bool = False) -> Path:
    """Check the bundle `zip_path` and add it as the run `name` (default: the zip's stem) in
    `runs_dir`; returns the new run's folder. BundleError (one sentence) when refused; then
    nothing is written."""
    zip_path, runs_dir = Path(zip_path), Path(runs_dir)
    name = zip_path.stem if name is None else str(name)
    if not _NAME_RE.match(name):
        raise BundleError(f"The run name {name!r} is not a plain folder name (letters, digits, '_', '-', '.'; "
                          "up to 100 characters, not starting with a dot); choose another with --name.")
    if not zip_path.is_file():
        raise BundleError(f"The bundle {zip_path} does not exist or is not a file.")
    if runs_dir.exists() and not runs_dir.is_dir():
        raise BundleError(f"The runs folder {runs_dir} is not a folder.")
    dest = runs_dir / name
    if os.path.lexists(dest) and not overwrite:
        raise BundleError(f"A run named {name!r} already exists in {runs_dir}; choose another name or "
                          "pass --force to replace it.")
    made_runs_dir = not runs_dir.exists()
    work = None
    try:
        source = _open_regular(zip_path)
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            source.close()
            raise BundleError(f"it is not a readable zip file ({exc})") from None
        with source, zf:
            members = _check_directory(zf, os.fstat(source.fileno()).st_size)
            runs_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{name}.import-", dir=runs_dir))
            staged = work / "run"
            staged.mkdir()
            try:
                _extract_all(zf, members, staged)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                    RuntimeError, ValueError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
                if isinstance(exc, BundleError):
                    raise
                raise BundleError(f"a member cannot be read ({type(exc).__name__}: {exc})") from None
        check_run(staged)
        _move_into_place(staged, dest, work)
        return dest
    except BundleError as exc:
        reason = str(exc).rstrip(".")
        if reason[1:2].islower():  # 'The run ...' reads on after a colon as 'the run ...'
            reason = reason[0].lower() + reason[1:]
        refused = BundleError(f"The bundle {zip_path.name} is refused: {reason}.")
        refused.reason = reason
        raise refused from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if made_runs_dir:
            with contextlib.suppress(OSError):
                runs_dir.rmdir()  # only when still empty (a refused import)


def _open_regular(path: Path):
    """The bundle file opened for reading, refused unless it is a regular file (no FIFO, device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BundleError(f"it cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError("it is not a regular file")
    return os.fdopen(fd, "rb")


def _move_into_place(staged: Path, dest: Path, work: Path) -> None:
    """Rename the checked run to `dest`; an old run there is moved aside first, then removed."""
    if not dest.exists():
        try:
            os.rename(staged, dest)
        except OSError as exc:
            raise BundleError(f"The run could not be moved into {dest} ({exc}).") from None
        return
    if not dest.is_dir() or _is_link(dest):
        raise BundleError(f"{dest} exists and is not a run folder; choose another name.")
    with folder_lock(dest):  # never replace a run that a process is writing to
        os.rename(dest, work / "old")
    try:
        os.rename(staged, dest)
    except OSError as exc:
        os.rename(work / "old", dest)  # the old run stays as it was
        raise BundleError(f"The run could not be moved into {dest} ({exc.strerror or exc}).") from None
