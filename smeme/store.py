"""Runs on disk: one store for every kind of run.

A run is a folder:
    config.json            everything needed to rebuild the run (schema-versioned)
    round_<k>.safetensors  round k's weights (a point or digits run: the model, 0 = pre-trained;
                           a Stable Diffusion run: round k's LoRA adapter, round 0 = the pipeline)
    metrics.json           {"schema_version", "rounds": {"<k>": {...}}}: the manifest
    round_<k>.deferred.json  round k's deferred metrics, computed after its commit (smeme.deferred)
    cache/<key>.npy        cached arrays, keyed by what produced them
    .lock                  writers hold an exclusive flock on it

RunFolder is what every kind shares: opening (config.json checked), the committed rounds,
metrics, the writer lock, the round commit and cached arrays; the file-system primitives
(atomic writes, the lock, the manifest and its commit point) are smeme.fsio. A kind is
registered by name with its loader (register_run_kind): 'point' and 'digits' are this
module's Run (a data set, a standardiser, full weights per round), 'sd' is registered by
smeme.images (SDRun). open_run, run_kind and find_runs serve every kind alike.

A folder with config.json but no metrics.json is an unfinished pre-training, which a new
pre-training reuses. Loading checks the config, the weights file and its shapes, and raises
StoreError naming the file and the problem.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import fsio
from .data.base import Standardizer
from .safe_io import read_capped_bytes, read_json
from .run_files import (CONFIG_FILE, MAX_WEIGHTS_BYTES, TRAINING_ROWS_FILE, load_weights_into,  # noqa: F401
                        read_training_rows, save_weights, training_rows_bytes, weights_bytes)
from .fsio import (LOCK_FILE, METRICS_FILE, SCHEMA_VERSION, DiskFullError, RunLockedError,  # noqa: F401
                   StoreError, atomic_write, atomic_write_bytes, atomic_write_json, commit_round, disk_full_error,
                   folder_lock, jsonable, raise_disk_full, read_manifest, update_manifest, write_manifest)

# The fsio and run_files names above stay importable from here (smeme.store.atomic_write, ...).

CACHE_DIR = "cache"
REQUIRED_SECTIONS = ("dataset", "model", "schedule", "standardizer")


# -- the run ----------------------------------------------------------------------------


def read_config_file(folder: Path, error: type = StoreError) -> dict:
    """folder/config.json as a dict of this smeme's schema version; `error` names any problem."""
    path = Path(folder) / CONFIG_FILE
    if not os.path.lexists(path):
        raise error(f"{folder} is not an smeme run: it has no {CONFIG_FILE}.")
    cfg = read_json(path, error, f"{CONFIG_FILE} in {folder}")
    if not isinstance(cfg, dict):
        raise error(f"{CONFIG_FILE} in {folder} is damaged: it does not hold a JSON object.")
    version = cfg.get("schema_version")
    if version != SCHEMA_VERSION:
        raise error(f"{CONFIG_FILE} in {folder} has schema version {version!r}; "
                    f"this smeme reads version {SCHEMA_VERSION}.")
    return cfg


def _read_config(folder: Path) -> dict:
    """A point (or digits) run's config.json: its sections and the data set's domain present."""
    cfg = read_config_file(folder)
    missing = [s for s in REQUIRED_SECTIONS if not isinstance(cfg.get(s), dict)]
    if missing:
        raise StoreError(f"{CONFIG_FILE} in {folder} lacks the section(s) {missing}.")
    if not isinstance(cfg["dataset"].get("domain"), dict):
        raise StoreError(f"{CONFIG_FILE} in {folder} lacks the data set's domain (dataset.domain).")
    return cfg


def is_run(folder) -> bool:
    """A run exists once its pre-training committed round 0 (config.json and metrics.json)."""
    folder = Path(folder)
    return (folder / CONFIG_FILE).exists() and (folder / METRICS_FILE).exists()


_UNFINISHED_NAMES = {CONFIG_FILE, LOCK_FILE, "round_0.safetensors", CACHE_DIR, TRAINING_ROWS_FILE}


def is_unfinished_run(folder) -> bool:
    """What a failed pre-training leaves: an smeme config.json, no metrics.json and nothing
    foreign beside them. A new pre-training may reuse such a folder."""
    folder = Path(folder)
    if is_run(folder) or not (folder / CONFIG_FILE).is_file():
        return False
    try:
        _read_config(folder)
    except StoreError:  # someone else's config.json (e.g. a model folder): not ours to reuse
        return False
    return all(p.name in _UNFINISHED_NAMES or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in folder.iterdir())


def check_target(folder, force: bool = False) -> None:
    """Refuse a folder that would lose data: an existing run (unless force) or a non-run folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder} exists and is not a folder.")
    if is_run(folder):
        if not force:
            raise StoreError(f"{folder} already holds a run; choose another folder or pass --force to replace it.")
    elif folder.is_dir() and not is_unfinished_run(folder) and any(p.name != LOCK_FILE for p in folder.iterdir()):
        raise StoreError(f"{folder} is not empty and is not an smeme run; choose an empty or new folder.")


class RunFolder:
    """What every kind of run shares (the module docstring): the committed rounds, their
    metrics, the writer lock, the round commit and cached arrays. A kind adds its config's
    meaning, its models and `error`, the StoreError its messages raise."""

    error: type = StoreError

    def __init__(self, folder: Path, config: dict):
        self.folder = Path(folder)
        self.config = config

    @classmethod
    def read_folder(cls, folder) -> tuple[Path, dict]:
        """(folder, its config.json) of an existing run folder; cls.error names any problem."""
        folder = Path(folder)
        if not folder.exists():
            raise cls.error(f"The run folder {folder} does not exist.")
        if not folder.is_dir():
            raise cls.error(f"{folder} is not a folder.")
        return folder, read_config_file(folder, cls.error)

    # -- rounds -------------------------------------------------------------------------
    def round_path(self, k: int) -> Path:
        return self.folder / f"round_{int(k)}.safetensors"

    def rounds(self) -> list[int]:
        """The committed rounds: named in metrics.json, with their weights file present."""
        return sorted(k for k in self.metrics() if self.round_path(k).is_file())

    @property
    def latest_round(self) -> int:
        rounds = self.rounds()
        if not rounds:
            raise self.error(f"The run in {self.folder} has no saved rounds.")
        return rounds[-1]

    def commit(self, k: int, data: bytes, metrics: dict | None = None) -> None:
        """Save round k's weights file `data`, then its metrics record (the commit, fsio.commit_round).

        Refuses to overwrite a committed round. An orphan weights file (a save that failed
        before its commit) is overwritten; if the commit fails, the new weights file is removed.
        """
        k = int(k)
        with self.lock():
            if k in self.rounds():
                raise self.error(f"Round {k} of the run in {self.folder} is already saved; it is never overwritten.")
            self.check_next_round(k)
            commit_round(self.folder, k, self.round_path(k), data, metrics)

    def check_next_round(self, k: int) -> None:
        """Raise self.error when round k may not be saved next (any uncommitted round may)."""

    # -- metrics ------------------------------------------------------------------------
    def metrics(self) -> dict[int, dict]:
        try:
            return read_manifest(self.folder)
        except StoreError as exc:
            if isinstance(exc, self.error):
                raise
            raise self.error(str(exc)) from None

    def set_metrics(self, k: int, metrics: dict) -> None:
        with self.lock():
            self.metrics()  # a damaged manifest raises the kind's error, as on reading
            update_manifest(self.folder, k, metrics)

    deferred_metrics = None  # a kind's smeme.metrics.DeferredMetrics: what its rounds compute after the commit

    def all_metrics(self) -> dict[int, dict]:
        """metrics() with each round's deferred metrics folded in where computed (smeme.deferred)."""
        from .deferred import merged

        return merged(self)

    # -- cached arrays ------------------------------------------------------------------
    def cache_path(self, key: str) -> Path:
        """Where the array keyed by `key` (what produced it) lives; long keys are hashed."""
        safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(key)).strip("._") or "array"
        if len(safe) > 100 or safe != str(key):
            safe = f"{safe[:60]}-{hashlib.sha256(str(key).encode()).hexdigest()[:16]}"
        return self.folder / CACHE_DIR / f"{safe}.npy"

    def save_array(self, key: str, arr) -> Path:
        path = self.cache_path(key)
        path.parent.mkdir(exist_ok=True)
        arr = np.asarray(arr)
        fsio.atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
        return path

    def load_array(self, key: str):
        """The cached array, or None when absent or unreadable (caches are recomputed)."""
        path = self.cache_path(key)
        try:
            blob = read_capped_bytes(path, MAX_WEIGHTS_BYTES, StoreError, path.name, follow_links=False)
            return np.load(io.BytesIO(blob), allow_pickle=False)
        except (StoreError, OSError, ValueError, EOFError):  # absent, a link, a FIFO, damaged
            return None

    # -- locking --------------------------------------------------------------------------
    def lock(self):
        """Context manager: exclusive writer lock on the run (RunLockedError if held elsewhere)."""
        return folder_lock(self.folder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, rounds={self.rounds()})"


def _new_run_config(config: dict, model, standardizer: Standardizer, rows) -> tuple[dict, bytes | None]:
    """A new run's config.json (the schedule, standardizer and kept rows' record filled in) and
    the .npy bytes of its training rows (None when it keeps none)."""
    cfg = dict(config)
    cfg["schema_version"] = SCHEMA_VERSION
    cfg["schedule"] = model.schedule.to_config()
    cfg["standardizer"] = standardizer.to_config()
    for s in ("dataset", "model"):
        if not isinstance(cfg.get(s), dict):
            raise ValueError(f"A run's config needs a '{s}' section (a dict).")
    if not isinstance(cfg["dataset"].get("domain"), dict):
        raise ValueError("A run's config needs dataset.domain (the domain's to_config()).")
    if rows is None:
        return cfg, None
    rows_blob, record = training_rows_bytes(rows)
    cfg["dataset"] = {**cfg["dataset"], "training_rows": record}
    return cfg, rows_blob


class Run(RunFolder):
    """A point or digits run: a data set's domain, a standardiser and full weights per round."""

    def __init__(self, folder: Path, config: dict):
        super().__init__(folder, config)
        self.standardizer = Standardizer.from_config(config["standardizer"])
        self._domain = None

    # -- create / open ----------------------------------------------------------------
    @classmethod
    def create(cls, folder, config: dict, model, standardizer: Standardizer,
               metrics: dict | None = None, overwrite: bool = False, rows=None) -> "Run":
        """Write config.json, the training rows (when given), round_0.safetensors and (the
        commit point) metrics.json.

        `config` holds 'dataset' (with 'domain'), 'model' and optionally 'train';
        the schedule and standardizer are filled in here. `rows` (n x columns) are kept in
        the run as TRAINING_ROWS_FILE, their sha256 and shape in dataset.training_rows. An existing run is replaced
        only with overwrite=True, and then only once the new one is completely written.
        On failure a folder this call created is removed; an empty or unfinished one is
        left as it was found (reusable).
        """
        folder = Path(folder)
        check_target(folder, force=overwrite)
        cfg, rows_blob = _new_run_config(config, model, standardizer, rows)
        replace = is_run(folder)
        created = not folder.exists()
        target, temp = folder, None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            if replace:  # the new run is written beside the old one, then swapped in
                target = temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
            target.mkdir(exist_ok=True)
            with folder_lock(target):
                shutil.rmtree(target / CACHE_DIR, ignore_errors=True)  # an unfinished run's leftovers
                atomic_write_json(target / CONFIG_FILE, cfg)
                if rows_blob is not None:
                    atomic_write_bytes(target / TRAINING_ROWS_FILE, rows_blob)
                else:  # an unfinished run's leftover
                    (target / TRAINING_ROWS_FILE).unlink(missing_ok=True)
                save_weights(target / "round_0.safetensors", model, {"round": 0})
                write_manifest(target, {0: jsonable(metrics or {})})  # the run exists from here on
        except BaseException as exc:
            if temp is not None or created:
                shutil.rmtree(target, ignore_errors=True)
            elif not replace:  # the folder was there (empty or unfinished): leave it reusable, without a half run
                for name in (CONFIG_FILE, TRAINING_ROWS_FILE, "round_0.safetensors"):
                    with contextlib.suppress(OSError):
                        (target / name).unlink()
            if temp is not None and isinstance(exc, DiskFullError) and exc.path.parent == temp:
                raise disk_full_error(folder / exc.path.name) from None  # the file, not its temp folder
            raise_disk_full(exc, target)
            raise
        if replace:  # swap the finished new run in, then drop the old one
            try:
                with folder_lock(folder):
                    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
                    os.rename(folder, old / "run")
            except BaseException as exc:
                shutil.rmtree(target, ignore_errors=True)
                raise_disk_full(exc, folder.parent)
                raise
            os.rename(target, folder)
            shutil.rmtree(old, ignore_errors=True)
        return cls(folder, cfg)

    @classmethod
    def open(cls, folder) -> "Run":
        folder, _ = cls.read_folder(folder)
        cfg = _read_config(folder)
        try:
            run = cls(folder, cfg)
            run.schedule
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{CONFIG_FILE} in {folder} is inconsistent: {exc}.") from None
        if not (folder / METRICS_FILE).exists():
            raise StoreError(f"The run in {folder} was never finished: it has no {METRICS_FILE} "
                             "(its pre-training stopped before saving round 0); pre-train it again.")
        if not run.rounds():
            raise StoreError(f"The run in {folder} has no saved rounds (round_0.safetensors is missing).")
        return run

    # -- what the config describes ------------------------------------------------------
    @property
    def deferred_metrics(self):
        from .metrics import deferred_metrics_of

        return deferred_metrics_of(self)

    @property
    def domain(self):
        if self._domain is None:
            from .data import domain_from_config

            try:
                self._domain = domain_from_config(self.config["dataset"]["domain"])
            except Exception as exc:
                raise StoreError(f"{CONFIG_FILE} in {self.folder}: cannot rebuild the data set's domain ({exc}).") from None
        return self._domain

    @property
    def schedule(self):
        from .schedule import schedule_from_config

        return schedule_from_config(self.config["schedule"])

    @property
    def model_config(self) -> dict:
        return dict(self.config["model"])

    def new_model(self):
        from .models.registry import build_model

        try:
            return build_model(self.model_config, self.schedule)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{CONFIG_FILE} in {self.folder}: cannot build its model ({exc}).") from None

    def load_model(self, k: int | None = None):
        k = self.latest_round if k is None else int(k)
        if k not in self.rounds():
            raise StoreError(f"The run in {self.folder} has no round {k} (saved rounds: {self.rounds()}).")
        model = self.new_model()
        load_weights_into(self.round_path(k), model)
        return model.eval()

    def save_round(self, k: int, model, metrics: dict | None = None) -> None:
        """Save round k: its weights, then its metrics record in metrics.json (the commit).

        Refuses to overwrite a committed round. An orphan weights file (a save that failed
        before its commit) is overwritten; if the commit fails, the new weights file is removed.
        """
        self.commit(k, weights_bytes(model, {"round": int(k)}), metrics)

    # -- the training rows -----------------------------------------------------------------
    def training_rows(self) -> np.ndarray | None:
        """The rows the run was trained on, kept in the run (CSV runs): checked against the
        sha256 and shape its config records. None for a run that keeps none (generated data
        sets rebuild theirs from the config; CSV runs made before rows were kept in the run
        have none: their data file is never read). StoreError when the file is damaged."""
        record = self.config.get("dataset", {}).get("training_rows")
        if record is None:
            return None
        return read_training_rows(self.folder, record)


# -- kinds of run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunKind:
    """A kind of run folder: `matches(config)` tells its config.json apart, `open(folder)` loads it."""
    name: str
    matches: Callable[[dict], bool]
    open: Callable[[Path], RunFolder]


RUN_KINDS: dict[str, RunKind] = {}


def register_run_kind(name: str, matches: Callable[[dict], bool], open_run: Callable[[Path], RunFolder]) -> None:
    """Add a kind; kinds registered later are asked first (they refine the core's 'point')."""
    RUN_KINDS[name] = RunKind(name, matches, open_run)


def run_kind(folder) -> str | None:
    """The kind of the run in `folder` from its config.json; None when it holds no readable one."""
    try:
        cfg = read_json(Path(folder) / CONFIG_FILE, StoreError)
    except (StoreError, OSError, ValueError, RecursionError):
        return None
    if not isinstance(cfg, dict):
        return None
    return next((k.name for k in reversed(RUN_KINDS.values()) if k.matches(cfg)), None)


def open_run(folder) -> RunFolder:
    """The run in `folder`, opened by its kind's loader (a StoreError names any problem)."""
    kind = run_kind(folder)
    return RUN_KINDS[kind].open(folder) if kind else Run.open(folder)  # Run.open names what is wrong


def find_runs(base, kind: str | None = None) -> list[Path]:
    """The run folders directly under `base` (of `kind` only, when given), by name."""
    base = Path(base)
    if not base.is_dir():
        return []
    found = [(p, run_kind(p)) for p in sorted(base.iterdir()) if p.is_dir()]
    return [p for p, k in found if k is not None and (kind is None or k == kind)]


def _dataset_name(cfg: dict):
    dataset = cfg.get("dataset")
    return dataset.get("name") if isinstance(dataset, dict) else None


register_run_kind("point", lambda cfg: "kind" not in cfg and isinstance(cfg.get("dataset"), dict), Run.open)
register_run_kind("digits", lambda cfg: "kind" not in cfg and _dataset_name(cfg) == "digits", Run.open)
