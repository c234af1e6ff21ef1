"""The app's places and defaults: where runs live, presets, the Explore page's settings,
the content pages, uploads and data-set checks.

Environment:
- SMEME_CACHE_DIR: where runs live (default: <repo>/cache); tests point it at a tmp dir.
- SMEME_APP_PRESET: 'tiny' makes the app's defaults tiny (tests, the browser test).
- SMEME_MODELS_DIR: where the Images page looks for Stable Diffusion pipeline folders
  (default: <cache>/models); the local Hugging Face cache is searched too.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from . import jobs

ROOT = Path(__file__).resolve().parents[2]
CONTENT_DIR = ROOT / "content"
DEFAULT_RUN = "toy-default"
SAMPLES_N = 2000
SAMPLES_SEED = 0
HEATMAP_RES = 64
DATASETS = ("toy", "triangles", "csv")


def cache_dir() -> Path:
    env = os.environ.get("SMEME_CACHE_DIR", "").strip()
    return Path(env).expanduser().resolve() if env else ROOT / "cache"


def runs_dir() -> Path:
    return cache_dir() / "runs"


def models_dir() -> Path:
    env = os.environ.get("SMEME_MODELS_DIR", "").strip()
    return Path(env).expanduser().resolve() if env else cache_dir() / "models"


def preset_name() -> str | None:
    return os.environ.get("SMEME_APP_PRESET", "").strip() or None


_setup_done = False


def setup() -> None:
    """Once per process: torch threads from SMEME_THREADS (default 'auto', smeme.threads)."""
    global _setup_done
    if not _setup_done:
        from ..threads import DEFAULT_THREADS, configure
        try:
            configure()
        except ValueError as exc:  # a bad SMEME_THREADS: say so in the log, run on the default
            logging.getLogger("smeme.settings").warning("%s Using %s.", exc, DEFAULT_THREADS)
            configure(DEFAULT_THREADS)
        _setup_done = True


_warm_started = False


def warm_imports() -> None:
    """Once per process, import the heavy modules (torch, training, metrics) in a background
    thread while the first page is drawn, so that the first click does not wait for them."""
    global _warm_started
    if _warm_started:
        return
    _warm_started = True

    def work():
        import importlib
        for name in ("smeme.threads", "smeme.pipeline", "smeme.train", "smeme.sampling", "smeme.metrics",
                     "smeme.density", "smeme.explore", "smeme.store"):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the real call reports any problem
                pass
        setup()
        try:
            jobs.warm_processes()  # the first job then forks a process with torch imported
        except Exception:  # noqa: BLE001 - start_process reports any real problem
            pass

    threading.Thread(target=work, name="smeme-warm-imports", daemon=True).start()


def training_defaults(dataset: str) -> dict:
    """Default steps / model size for a data set (the 'tiny' preset when SMEME_APP_PRESET says so).

    Returns {'steps', 'width', 'depth', 'seed'}.
    """
    from ..presets import get_preset

    preset = get_preset(preset_name() or dataset)
    return {"steps": int(preset.train.steps), "width": int(preset.model.get("width", 128)),
            "depth": int(preset.model.get("depth", 3)), "seed": 0}


# Seconds-long rounds for tests and the browser test (SMEME_APP_PRESET=tiny); not accurate.
TINY_EXPLORE = {"iterations": 3, "trajectories": 64, "steps": 20, "adam_steps": 2, "metrics_n": 1024,
                "max_validity_drop": 1.0}  # a tiny model is too rough for the collapse guard


def explore_defaults(run=None) -> dict:
    """Defaults for the Explore page: ExploreConfig's, with the data set's own overrides."""
    from ..explore import ExploreConfig

    d = dataclasses.asdict(ExploreConfig())
    if run is not None:
        d.update(run.domain.explore_defaults())
    if preset_name() == "tiny":
        d.update(TINY_EXPLORE)
    return d


SOLVERS = ("adjoint", "student-teacher")
SOLVER_NAMES = {"adjoint": "Adjoint Matching", "student-teacher": "Student-teacher (the blog's)"}
LAM_SCHEDULES = ("constant", "decreasing")
REWARD_TARGETS = ("data", "smoothed")
REWARD_TARGET_NAMES = {"data": "−λ log p (the paper's target)", "smoothed": "−λ log p(·, t_r) (smoothed: a different target)"}


def explore_config(defaults: dict, *, solver: str, lam: float, lam_schedule: str, iterations: int,
                   seed: int, reward_target: str | None = None):
    """The Explore page's one ExploreConfig: the page's widgets on top of the defaults,
    validated here once (raises ExploreError, one sentence naming the setting)."""
    from ..explore import ExploreConfig

    chosen = {**defaults, "solver": solver, "lam": float(lam), "lam_schedule": lam_schedule,
              "seed": int(seed), "iterations": int(iterations)}
    if reward_target is not None:
        chosen["reward_target"] = reward_target
    return ExploreConfig.from_dict(chosen)


def content_blocks(name: str) -> list[tuple[str, str]]:
    """content/<name>.md split into ('md', text) and ('latex', formula) blocks ($$...$$)."""
    text = (CONTENT_DIR / f"{name}.md").read_text(encoding="utf-8")
    out = []
    for i, part in enumerate(re.split(r"^\$\$\s*$", text, flags=re.M)):
        part = part.strip("\n")
        if part.strip():
            out.append(("latex" if i % 2 else "md", part.strip()))
    return out


def triangle_params(equilateral: float, isosceles: float, right: float, obtuse: float):
    """Triangle data set parameters from the page's sliders: (params, problem or None)."""
    scalene = 1.0 - equilateral - isosceles
    acute = 1.0 - right - obtuse
    if scalene < -1e-9:
        return {}, "The equilateral and isosceles shares add up to more than 1."
    if acute < -1e-9:
        return {}, "The right and obtuse shares add up to more than 1."
    if equilateral > acute + 1e-9:
        return {}, "Equilateral triangles are always acute: lower the equilateral share or raise the acute share."
    return {"side_shares": {"equilateral": equilateral, "isosceles": isosceles, "scalene": max(scalene, 0.0)},
            "angle_shares": {"acute": max(acute, 0.0), "right": right, "obtuse": obtuse}}, None


UPLOAD_FILE_MB = 200  # as .streamlit/config.toml's server.maxUploadSize
UPLOAD_KEEP_HOURS = 24  # an upload no run uses is removed this long after its last upload


class UploadError(ValueError):
    """An upload is refused (too large, the uploads folder is full); the message says why."""


def uploads_dir() -> Path:
    return cache_dir() / "uploads"


def uploads_quota_mb() -> float:
    """The uploads folder's size limit in MB: SMEME_UPLOADS_MB, default 512."""
    try:
        return float(os.environ.get("SMEME_UPLOADS_MB", "") or 512)
    except ValueError:
        return 512.0


def uploads_in_use() -> set[str]:
    """The uploads a run's config still names (dataset.params.path of CSV runs made before
    runs kept their training rows; newer runs name no file). Only the names are compared:
    no file a config names is opened. A config that cannot be read names none."""
    from ..safe_io import read_json
    used = set()
    base = runs_dir()
    up = str(uploads_dir())
    for cfg in base.glob("*/config.json") if base.is_dir() else ():
        try:
            path = read_json(cfg, ValueError)["dataset"]["params"]["path"]
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if isinstance(path, str) and os.path.dirname(os.path.normpath(path)) == up:
            used.add(os.path.normpath(path))
    return used


def clean_uploads(now: float | None = None) -> list[Path]:
    """Remove the uploads no run uses that were last uploaded over UPLOAD_KEEP_HOURS ago."""
    import time
    up = uploads_dir()
    if not up.is_dir():
        return []
    now = time.time() if now is None else now
    used = uploads_in_use()
    removed = []
    for p in up.glob("*.csv"):
        try:
            old = now - p.stat().st_mtime > UPLOAD_KEEP_HOURS * 3600
            if old and os.path.normpath(p) not in used:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded CSV under cache/uploads, named by its content (sha256), and return its
    path. Refused in viewer mode (ReadOnlyError), over UPLOAD_FILE_MB, or when the uploads
    folder would exceed its quota (UploadError); old uploads no run uses are removed first."""
    import hashlib
    from . import access
    from ..store import atomic_write_bytes
    access.require_writer()
    if len(data) > UPLOAD_FILE_MB * 2 ** 20:
        raise UploadError(f"The file is {len(data) / 2 ** 20:.0f} MB; uploads may be at most {UPLOAD_FILE_MB} MB.")
    up = uploads_dir()
    up.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem)[:40].strip("-.") or "upload"
    path = up / f"{stem}-{digest}.csv"
    if path.exists():
        os.utime(path)  # uploaded again: kept another UPLOAD_KEEP_HOURS
        return path
    clean_uploads()
    held = sum(p.stat().st_size for p in up.glob("*.csv") if p.is_file())
    quota = uploads_quota_mb()
    if held + len(data) > quota * 2 ** 20:
        raise UploadError(f"The uploads folder is full ({held / 2 ** 20:.0f} MB of {quota:.0f} MB, "
                          "SMEME_UPLOADS_MB); uploads no run uses are removed after "
                          f"{UPLOAD_KEEP_HOURS} hours, or free space in {up.name}/.")
    atomic_write_bytes(path, data)  # a unique temp name per writer, renamed into place
    return path


def check_dataset(dataset: str, params: dict):
    """Build the data set once (raises DataError with one sentence for bad input)."""
    from ..data import make_dataset
    p = dict(params)
    return make_dataset(dataset, seed=int(p.pop("seed", 0)), **p)


_checked: "OrderedDict[str, str | None]" = OrderedDict()
_checked_lock = threading.Lock()
_CHECKED_MAX = 32


def check_dataset_once(dataset: str, params: dict) -> str | None:
    """The DataError sentence for these settings, or None when the data set builds; memoised,
    so that a CSV upload (its path names its content's hash) is parsed once, not on every rerun."""
    import json
    from ..data import DataError
    key = json.dumps([dataset, params], sort_keys=True, default=str)
    with _checked_lock:
        if key in _checked:
            _checked.move_to_end(key)
            return _checked[key]
    try:
        check_dataset(dataset, params)
        problem = None
    except DataError as exc:
        problem = str(exc)
    with _checked_lock:
        _checked[key] = problem
        while len(_checked) > _CHECKED_MAX:
            _checked.popitem(last=False)
    return problem
