"""Runs on disk for the app: listing, opening (memoised until the folder changes), naming
new ones, and what a page needs to know about a run."""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..store import METRICS_FILE, Run, StoreError, load_weights_into
from . import jobs
from .results import flat_metrics
from .settings import DEFAULT_RUN, runs_dir

_run_cache: dict[str, tuple[tuple, Any]] = {}
_run_lock = threading.Lock()


def folder_stamp(folder: Path) -> tuple:
    """Changes whenever a round or the metrics are (re)written (or a round file is replaced)."""
    items = []
    for name in ("config.json", "metrics.json"):
        try:
            st = (folder / name).stat()
            items.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            items.append((name, None))
    rounds = []
    for p in sorted(folder.glob("round_*")):
        try:
            st = p.stat()
            rounds.append((p.name, st.st_mtime_ns, st.st_size))
        except OSError:
            rounds.append((p.name, None))
    items.append(tuple(rounds))
    return tuple(items)


class CheckedRun(Run):
    """A run as the app shows it: a committed round whose weights file does not load (damaged,
    foreign, wrong shapes) is left out of rounds() and named in `damaged` {round: reason}, so
    the pages work with the rounds that do load. Such a round is never overwritten."""

    def __init__(self, run: Run, damaged: dict[int, str]):
        super().__init__(run.folder, run.config)
        self.damaged = dict(damaged)

    def rounds(self) -> list[int]:
        return [k for k in super().rounds() if k not in self.damaged]

    def save_round(self, k: int, model, metrics: dict | None = None) -> None:
        if int(k) in self.damaged:
            raise StoreError(f"Round {int(k)} of the run in {self.folder} is on disk but damaged "
                             f"({self.damaged[int(k)]}); move {self.round_path(k).name} away to compute it again.")
        super().save_round(k, model, metrics)


def damaged_rounds(run: Run) -> dict[int, str]:
    """{round: reason} for each committed round whose weights do not load into the run's model."""
    out = {}
    model = None
    for k in Run.rounds(run):
        try:
            model = model or run.new_model()
            load_weights_into(run.round_path(k), model)
        except StoreError as exc:
            out[k] = str(exc)
    return out


def open_run(folder):
    """Run.open with each round's weights checked (a CheckedRun), memoised until the folder's
    config, metrics or rounds change. Raises StoreError when no round loads."""
    folder = Path(folder).resolve()
    key = str(folder)
    stamp = folder_stamp(folder)
    with _run_lock:
        hit = _run_cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    plain = Run.open(folder)
    run = CheckedRun(plain, damaged_rounds(plain))
    if not run.rounds():
        first = run.damaged[min(run.damaged)]
        raise StoreError(f"No round of the run {folder.name} loads: {first}")
    with _run_lock:
        _run_cache[key] = (stamp, run)
    return run


def _short(text: str, folder) -> str:
    """A message with the server's path to the run replaced by the run's name."""
    folder = Path(folder)
    return text.replace(str(folder.resolve()), folder.name).replace(str(folder), folder.name)


def damage_note(run) -> str | None:
    """What the app says about a run with damaged rounds: which, why, and what still loads."""
    damaged = getattr(run, "damaged", None)
    if not damaged:
        return None
    names = ", ".join(str(k) for k in sorted(damaged))
    first = _short(damaged[min(damaged)].rstrip("."), run.folder)
    good = run.rounds()
    return (f"Round(s) {names} of {Path(run.folder).name} cannot be loaded ({first}); rounds "
            f"{', '.join(str(k) for k in good)} still load and are shown. New rounds cannot follow a "
            f"damaged one: restore its file (e.g. from a bundle) or move it away.")


def open_problem(folder, exc: BaseException) -> str:
    """Why a run does not open and what can still be done, in a sentence or two."""
    name = Path(folder).name
    text = _short(str(exc).strip() or type(exc).__name__, folder)
    if f"{METRICS_FILE} in" in text and "damaged" in text:
        weights = sorted(p.name for p in Path(folder).glob("round_*.safetensors"))
        return (f"The run {name} cannot be opened: its {METRICS_FILE} is damaged, so its rounds cannot be "
                f"listed ({len(weights)} weights file(s) are still on disk). Restore {METRICS_FILE} from a copy "
                "(e.g. a bundle of this run), or remove the run folder and pre-train it again.")
    return f"The run {name} cannot be opened: {text}"


def run_dataset(run) -> str:
    return str(run.config["dataset"]["name"])


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:  # a dangling link, or a temp folder removed since the listing
        return None


def entries_newest_first(base: Path) -> list[Path]:
    """The entries of `base`, newest first. An entry that cannot be stat-ed sorts last rather
    than failing the listing (callers check each entry as they use it); [] if `base` itself
    cannot be listed."""
    try:
        entries = list(Path(base).iterdir())
    except OSError:
        return []
    stamped = [(_mtime(p), p) for p in entries]
    stamped.sort(key=lambda e: (e[0] is not None, e[0] or 0.0, e[1].name), reverse=True)
    return [p for _, p in stamped]


def list_runs() -> list[dict]:
    """Runs under cache/runs: name, folder, data set, rounds, latest metrics, busy job; a run that
    does not open has 'damaged' set to the reason (and 'latest' None), and every other run works."""
    base = runs_dir()
    out = []
    if not base.is_dir():
        return out
    for folder in entries_newest_first(base):
        try:
            row = _run_row(folder)
        except Exception as exc:  # noqa: BLE001 - e.g. the folder vanished mid-listing: one damaged entry
            if not folder.is_dir():
                continue  # gone (or a dangling link): nothing to list
            reason = _short(str(exc).strip() or type(exc).__name__, folder)
            row = {**_blank_row(folder), "damaged": reason, "status": f"damaged: {reason}"}
        if row is not None:
            out.append(row)
    return out


def _blank_row(folder: Path) -> dict:
    return {"name": folder.name, "folder": os.path.abspath(folder), "dataset": "?", "rounds": 0,
            "latest": None, "entropy": None, "off_support": None, "status": "", "damaged": None}


def _run_row(folder: Path) -> dict | None:
    """list_runs' row for one entry of cache/runs, or None for an entry that is not a run."""
    if not folder.is_dir():
        return None
    row = {**_blank_row(folder), "folder": str(folder.resolve())}
    job = jobs.busy(folder)
    if job is not None:
        row["status"] = f"{job.label or job.kind}: {job.fraction:.0%}"
    if not (folder / "config.json").exists():
        return row if job is not None else None  # not a run (yet) unless a job is making it
    try:
        run = open_run(folder)
        rounds = list(run.rounds())
        row["dataset"] = run_dataset(run)
        m = flat_metrics(run.metrics().get(rounds[-1], {}))
    except Exception as exc:  # noqa: BLE001 - a damaged run is listed with its problem
        if job is None:
            row["damaged"] = _short(str(exc).strip() or type(exc).__name__, folder)
            row["status"] = f"damaged: {row['damaged']}"
        return row
    row["rounds"] = max(len(rounds) - 1, 0)
    row["latest"] = rounds[-1]
    row["entropy"] = m.get("entropy")
    row["off_support"] = m.get("off_support")
    if run.damaged:
        row["status"] = f"damaged round(s) {', '.join(str(k) for k in sorted(run.damaged))}"
    return row


def safe_name(name: str | None, fallback: str) -> str:
    """A name typed in the app as one folder name: letters, digits, '_', '.', '-' only, no
    leading dot (so never '..', a path or a hidden file), at most 80 characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name or ""))[:80].strip("-.")
    return stem or fallback


def new_run_folder(dataset: str, name: str | None = None) -> Path:
    """A new folder under cache/runs for `name` (made safe; '-2', '-3'... if it exists)."""
    base = runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stem = safe_name(name or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}", dataset)
    folder, i = base / stem, 2
    while folder.exists():
        folder, i = base / f"{stem}-{i}", i + 1
    return folder


def default_run_folder() -> Path:
    return runs_dir() / DEFAULT_RUN


def pick_default_run() -> str | None:
    """The run to open when a session has none: the default toy run, else the newest."""
    ready = [r for r in list_runs() if r["latest"] is not None]
    if not ready:
        return None
    default = str(default_run_folder().resolve())
    return next((r["folder"] for r in ready if r["folder"] == default), ready[0]["folder"])


def run_folder(run) -> str:
    return str(Path(run.folder).resolve())


def run_info(run) -> dict:
    """Data set, model size, training steps and the raw config, for display."""
    cfg = run.config
    model = cfg["model"]
    size = (f"MLP {model['width']}x{model['depth']}" if model["kind"] == "mlp"
            else f"{model['kind']} {model.get('block_out_channels', '')}")
    return {"dataset": run_dataset(run), "model": size, "steps": cfg["train"]["steps"], "config": cfg}


def is_image_run(run) -> bool:
    """Image runs (digits) live on the Images page; the 2-D pages do not draw them."""
    shape = getattr(run.domain, "sample_shape", None)
    return run_dataset(run) == "digits" or (shape is not None and len(tuple(shape)) > 1)


def has_plane(run) -> bool:
    return hasattr(run.domain, "plane_grid")


def training_history(run) -> list:
    """The training loss per step, if the app saved it (runs trained from the CLI may not)."""
    try:
        arr = run.load_array("train_loss")
    except Exception:  # noqa: BLE001
        return []
    if arr is None:
        return []
    arr = np.asarray(arr, dtype=float)
    if arr.ndim == 2 and arr.shape[1] == 2:
        return [(int(s), float(v)) for s, v in arr]
    return [(i + 1, float(v)) for i, v in enumerate(arr.ravel())]


def busy_message(folder) -> str | None:
    job = jobs.busy(folder)
    if job is None:
        return None
    return (f"This run is busy: '{job.label or job.kind}' is running ({job.fraction:.0%}, "
            f"{job.elapsed:.0f} s), perhaps in another tab. Wait for it or stop it.")


def timeline_panels(run) -> list:
    """Which metrics the timeline shows for this run's data set."""
    ds = run_dataset(run)
    panels = [("Entropy (k-NN, nats)", [("entropy", "k-NN entropy"), ("cross_entropy", "PF-ODE cross-entropy"),
                                        ("exact_entropy", "perfect solver"),
                                        ("exact_smoothed_entropy", "perfect solver, smoothed reward")]),
              ("Off-support fraction", [("off_support", "off support"), ("exact_off_support", "perfect solver"),
                                        ("exact_smoothed_off_support", "perfect solver, smoothed reward")]),
              ("Surprise under round 0", [("surprise", "mean −log p_pre")])]
    if ds == "toy":
        panels.append(("Sparse-square share", [("sparse_share", "measured"), ("sparse_closed_form", "closed form"),
                                               ("exact_sparse_share", "perfect solver"),
                                               ("exact_smoothed_sparse_share", "perfect solver, smoothed reward")]))
    elif ds == "triangles":
        panels[1] = ("Validity", [("validity", "valid"), ("on_support", "on support")])
    return panels


def color_categories(run, raws: list) -> list | None:
    """Per-point category labels to colour scatter plots by (toy: region; triangles: angle
    type), or None where the data set has none."""
    key = {"toy": "region", "triangles": "angle_type"}.get(run_dataset(run))
    if key is None:
        return None
    out = []
    for raw in raws:
        try:
            out.append(np.asarray(run.domain.categories(raw)[key]))
        except Exception:  # noqa: BLE001
            out.append(None)
    return out
