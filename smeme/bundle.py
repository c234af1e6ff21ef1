"""Run bundles: one zip file that carries a run to another machine or cache.

A bundle holds exactly what a run needs and nothing else:
    config.json, metrics.json (if any), round_<k>.safetensors, cache/<key>.npy
(no .lock, no temporary files). Binary members are stored, JSON members deflated, so a
genuine bundle never has a highly compressed large member.

Import treats the zip as hostile. Everything is checked before the run appears:
member names (no absolute paths, `..`, backslashes or unexpected files), member kinds
(regular files only: no links), count and sizes (declared and actually read), compression
ratio, duplicates; then the members are extracted into a temporary folder inside the runs
folder, where the config must load, every round's weights must match the config's model
(tensor names and shapes, read with safetensors) and every cached array must load without
pickle. Only then is the folder renamed into place, so a refused import writes nothing.
An existing run is replaced only with overwrite=True.

Stable Diffusion runs (the store's "sd" kind, smeme.images.sd_explore) reference a pipeline folder instead of holding
round 0; their bundle carries the LoRA adapters, metrics and cached grids, which open and
show without the pipeline (sampling more names the pipeline it needs).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .store import CACHE_DIR, CONFIG_FILE, METRICS_FILE, StoreError, atomic_write, folder_lock, open_run, run_kind

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 1 << 30  # 1 GiB: a round of the digits UNet is ~10 MB, an SD LoRA ~3 MB
MAX_TOTAL_BYTES = 2 << 30  # 2 GiB uncompressed in all
MAX_JSON_BYTES = 64 << 20  # config.json / metrics.json
MAX_RATIO = 100  # uncompressed / compressed, for members above RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20
_ROUND_RE = re.compile(r"^round_(\d{1,6})\.safetensors$")
_CACHE_RE = re.compile(r"^cache/[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}\.npy$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class BundleError(StoreError):
    """A bundle cannot be written or is refused on import (one sentence naming why)."""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < (1 << 30) else f"{n / (1 << 30):.0f} GiB"


# -- export -------------------------------------------------------------------------------
def _members_of(folder: Path) -> list[str]:
    """The names (relative to the run folder) a bundle of this run holds."""
    names = [CONFIG_FILE]
    if (folder / METRICS_FILE).is_file():
        names.append(METRICS_FILE)
    names += sorted((p.name for p in folder.iterdir() if _ROUND_RE.match(p.name) and p.is_file()),
                    key=lambda n: int(_ROUND_RE.match(n).group(1)))
    cache = folder / CACHE_DIR
    if cache.is_dir():
        for p in sorted(cache.iterdir()):
            name = f"{CACHE_DIR}/{p.name}"
            if _CACHE_RE.match(name) and p.is_file() and not p.is_symlink() and _loads_without_pickle(p):
                names.append(name)  # an unreadable cache entry is left out: caches are recomputed
    return names


def _loads_without_pickle(path: Path) -> bool:
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
        return True
    except (OSError, ValueError, EOFError):
        return False


def export_run(run_folder, out_zip) -> Path:
    """Write the run in `run_folder` as a bundle to `out_zip` (atomically); returns its path."""
    folder = Path(run_folder)
    open_run(folder)  # a clear error for a missing, foreign or damaged run
    out = Path(out_zip)
    if out.suffix.lower() != ".zip":
        raise BundleError(f"The bundle's file name must end in .zip, got {out.name}.")
    if not out.parent.is_dir():
        raise BundleError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    names = _members_of(folder)
    total = sum((folder / n).stat().st_size for n in names)
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"The run in {folder} holds {_mib(total)}, more than a bundle may ({_mib(MAX_TOTAL_BYTES)}).")

    def write(f):
        with zipfile.ZipFile(f, "w") as zf:
            for name in names:
                method = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
                zf.write(folder / name, name, compress_type=method)

    atomic_write(out, write)
    return out


# -- import: checks on the zip's directory -----------------------------------------------
def _check_name(name: str) -> str:
    """'' when `name` is an allowed member, else why it is refused."""
    if "\\" in name:
        return f"the member name {name!r} holds a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"the member name {name!r} is an absolute path"
    if ".." in name.split("/"):
        return f"the member name {name!r} climbs out of the run with '..'"
    if name in (CONFIG_FILE, METRICS_FILE) or _ROUND_RE.match(name) or _CACHE_RE.match(name):
        return ""
    return (f"it holds the unexpected file {name!r} (a bundle holds only config.json, metrics.json, "
            "round_<k>.safetensors and cache/<key>.npy)")


def _check_directory(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members to extract, or BundleError for the first reason to refuse the zip."""
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
            raise BundleError(f"the member {name!r} is {_mib(info.file_size)}, more than a member may "
                              f"({_mib(MAX_MEMBER_BYTES)})")
        if name.endswith(".json") and info.file_size > MAX_JSON_BYTES:
            raise BundleError(f"the member {name!r} is {_mib(info.file_size)}, more than a JSON file may "
                              f"({_mib(MAX_JSON_BYTES)})")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"its members add up to more than a bundle may hold ({_mib(MAX_TOTAL_BYTES)})")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(f"the member {name!r} is compressed more than {MAX_RATIO}:1 "
                              f"({info.file_size} bytes from {info.compress_size}), as zip bombs are")
        members.append(info)
    if CONFIG_FILE not in seen:
        raise BundleError("it has no config.json, so it is not an smeme run")
    return members


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one member to `target`, never reading more bytes than it declares."""
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


# -- import: checks on the extracted run --------------------------------------------------
def _check_feature_run(folder: Path) -> None:
    import torch
    from safetensors import SafetensorError, safe_open

    from .store import Run

    run = Run.open(folder)
    run.domain  # the data set's domain rebuilds from the config
    run.metrics()
    try:
        with torch.device("meta"):  # shapes only: a hostile config cannot make us allocate its model
            model = run.new_model()
    except (RuntimeError, NotImplementedError):  # a model that computes while it initialises (digits UNet)
        model = run.new_model()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k in run.rounds():  # names, shapes and finiteness against the config's model
        where = f"round_{k}.safetensors"
        try:
            with safe_open(run.round_path(k), framework="pt") as f:
                names = set(f.keys())
                if names != set(expected):
                    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
                    raise BundleError(f"{where} does not hold the config's model: {len(missing)} tensor(s) "
                                      f"missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
                for name in sorted(names):
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != expected[name]:
                        raise BundleError(f"{where}: the tensor {name!r} has shape {shape} but the config's "
                                          f"model needs {expected[name]}")
                    if not bool(torch.isfinite(f.get_tensor(name)).all()):
                        raise BundleError(f"{where}: the tensor {name!r} holds NaN or infinite values")
        except (SafetensorError, OSError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{where} is not a readable safetensors file ({exc})") from None


def _check_sd_run(folder: Path) -> None:
    """An SD run's adapters checked without its pipeline: LoRA pairs of the config's rank."""
    run = open_run(folder)
    run.metrics()
    rank = run.sd_config.lora_rank
    targets = tuple(run.sd_config.lora_targets)
    stray = sorted(set(_ROUND_RE.match(p.name).group(1) for p in folder.iterdir() if _ROUND_RE.match(p.name))
                   - {str(k) for k in run.rounds()})
    if stray:
        raise BundleError(f"round {stray[0]} of the Stable Diffusion run does not follow its earlier rounds")
    for k in run.rounds()[1:]:
        where = f"round_{k}.safetensors"
        state = run.read_adapter(k)
        if not state:
            raise BundleError(f"{where} holds no tensors")
        for name, tensor in state.items():
            module, _, kind = name.rpartition(".lora_")
            if kind not in ("A.weight", "B.weight") or not module.endswith(targets):
                raise BundleError(f"{where} holds the tensor {name!r}, which is not a LoRA weight of the "
                                  f"config's targets {list(targets)}")
            rank_dim = 0 if kind == "A.weight" else 1
            if tensor.dim() < 2 or tensor.shape[rank_dim] != rank:
                raise BundleError(f"{where}: the tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"not that of a rank-{rank} LoRA weight as the config says")
            partner = f"{module}.lora_{'B' if kind == 'A.weight' else 'A'}.weight"
            if partner not in state:
                raise BundleError(f"{where} holds {name!r} without its partner {partner!r}")
            if not bool(tensor.isfinite().all()):
                raise BundleError(f"{where}: the tensor {name!r} holds NaN or infinite values")


def _check_run(folder: Path) -> None:
    kind = run_kind(folder)
    for p in (folder / CACHE_DIR).glob("*") if (folder / CACHE_DIR).is_dir() else ():
        try:
            np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            raise BundleError(f"the cached array {CACHE_DIR}/{p.name} is not a plain .npy array "
                              "(arrays that need pickle are refused)") from None
    try:
        (_check_sd_run if kind == "sd" else _check_feature_run)(folder)
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile run trips, it is refused in one sentence
        # the run's own messages name the temporary folder; name the member instead
        text = " ".join(str(exc).replace(f" in {folder}", "").replace(str(folder), "the bundle").split())
        if not isinstance(exc, StoreError):  # every kind's errors are StoreErrors
            text = f"its run cannot be opened ({type(exc).__name__}: {text})"
        raise BundleError(text.rstrip(".")) from None


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
    if dest.exists() and not overwrite:
        raise BundleError(f"A run named {name!r} already exists in {runs_dir}; choose another name or "
                          "pass --force to replace it.")
    made_runs_dir = not runs_dir.exists()
    work = None
    try:
        try:
            zf = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"it is not a readable zip file ({exc})") from None
        with zf:
            members = _check_directory(zf)
            runs_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{name}.import-", dir=runs_dir))
            staged = work / "run"
            staged.mkdir()
            try:
                for info in members:
                    _extract(zf, info, staged / info.filename)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                    RuntimeError) as exc:
                raise BundleError(f"a member cannot be read ({type(exc).__name__}: {exc})") from None
        _check_run(staged)
        _move_into_place(staged, dest, work)
        return dest
    except BundleError as exc:
        reason = str(exc).rstrip(".")
        if reason[1:2].islower():  # 'The run ...' reads on after a colon as 'the run ...'
            reason = reason[0].lower() + reason[1:]
        raise BundleError(f"The bundle {zip_path.name} is refused: {reason}.") from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if made_runs_dir:
            with contextlib.suppress(OSError):
                runs_dir.rmdir()  # only when still empty (a refused import)


def _move_into_place(staged: Path, dest: Path, work: Path) -> None:
    """Rename the checked run to `dest`; an old run there is moved aside first, then removed."""
    if not dest.exists():
        try:
            os.rename(staged, dest)
        except OSError as exc:
            raise BundleError(f"The run could not be moved into {dest} ({exc}).") from None
        return
    if not dest.is_dir():
        raise BundleError(f"{dest} exists and is not a run folder; choose another name.")
    with folder_lock(dest):  # never replace a run that a process is writing to
        os.rename(dest, work / "old")
    os.rename(staged, dest)
