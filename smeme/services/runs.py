"""Runs on disk for the app: listing, opening (memoised until the folder changes), naming
new ones, and what a page needs to know about a run."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import jobs
from .results import flat_metrics
from .settings import DEFAULT_RUN, runs_dir

_run_cache: dict[str, tuple[tuple, Any]] = {}
_run_lock = threading.Lock()


def folder_stamp(folder: Path) -> tuple:
    """Changes whenever a round or the metrics are (re)written."""
    items = []
    for name in ("config.json", "metrics.json"):
        try:
            st = (folder / name).stat()
            items.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            items.append((name, None))
    items.append(tuple(sorted(p.name for p in folder.glob("round_*"))))
    return tuple(items)


def open_run(folder):
    """Run.open, memoised until the folder's config, metrics or rounds change."""
    from ..store import Run
    folder = Path(folder).resolve()
    key = str(folder)
    stamp = folder_stamp(folder)
    with _run_lock:
        hit = _run_cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    run = Run.open(folder)
    with _run_lock:
        _run_cache[key] = (stamp, run)
    return run


def run_dataset(run) -> str:
    return str(run.config["dataset"]["name"])


def list_runs() -> list[dict]:
    """Runs under cache/runs: name, folder, data set, rounds, latest metrics, busy job."""
    base = runs_dir()
    out = []
    if not base.is_dir():
        return out
    for folder in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if not folder.is_dir():
            continue
        row = {"name": folder.name, "folder": str(folder.resolve()), "dataset": "?", "rounds": 0,
               "latest": None, "entropy": None, "off_support": None, "status": ""}
        job = jobs.busy(folder)
        if job is not None:
            row["status"] = f"{job.label or job.kind}: {job.fraction:.0%}"
        if not (folder / "config.json").exists():
            if job is None:
                continue  # not a run (yet)
            out.append(row)
            continue
        try:
            run = open_run(folder)
            rounds = list(run.rounds())
        except Exception as exc:  # noqa: BLE001 - a damaged run is listed with its problem
            row["status"] = row["status"] or f"unreadable: {exc}"
            out.append(row)
            continue
        row["dataset"] = run_dataset(run)
        row["rounds"] = max(len(rounds) - 1, 0)
        if rounds:
            row["latest"] = rounds[-1]
            m = flat_metrics(run.metrics().get(rounds[-1], {}))
            row["entropy"] = m.get("entropy")
            row["off_support"] = m.get("off_support")
        out.append(row)
    return out


def new_run_folder(dataset: str, name: str | None = None) -> Path:
    base = runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}").strip("-.")
    stem = stem or dataset
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
                                        ("exact_entropy", "perfect solver")]),
              ("Off-support fraction", [("off_support", "off support"), ("exact_off_support", "perfect solver")]),
              ("Surprise under round 0", [("surprise", "mean −log p_pre")])]
    if ds == "toy":
        panels.append(("Sparse-square share", [("sparse_share", "measured"), ("sparse_closed_form", "closed form"),
                                               ("exact_sparse_share", "perfect solver")]))
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
