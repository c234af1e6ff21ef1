"""What the Streamlit pages call: runs on disk, background jobs, cached results.

Pages stay thin: they draw widgets and the figures of `smeme.figures`; everything they
need (listing runs, starting training / rounds / heatmaps in the background, reading
cached samples and heatmaps, tables of metrics) comes from here. This module only
orchestrates and caches; the work itself is in `smeme.pipeline`, `smeme.explore`,
`smeme.density` and `smeme.metrics`.

Caching has two levels: arrays are saved in the run folder keyed by what produced them
(round, resolution, n, seed) so that a restart or a revisit is instant, and a small
in-memory map avoids re-reading them on every Streamlit rerun.

Environment:
- SMEME_CACHE_DIR: where runs live (default: <repo>/cache); tests point it at a tmp dir.
- SMEME_APP_PRESET: 'tiny' makes the app's defaults tiny (tests, the browser test).

The bottom section holds the few Streamlit helpers shared by pages (progress panel,
content rendering, sidebar); Streamlit is imported there lazily so the rest is testable
without it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import jobs

ROOT = Path(__file__).resolve().parent.parent
CONTENT_DIR = ROOT / "content"
DEFAULT_RUN = "toy-default"
SAMPLES_N = 2000
SAMPLES_SEED = 0
HEATMAP_RES = 64
DATASETS = ("toy", "triangles", "csv")


# ======================================================================================
# places and settings

def cache_dir() -> Path:
    env = os.environ.get("SMEME_CACHE_DIR", "").strip()
    return Path(env).expanduser().resolve() if env else ROOT / "cache"


def runs_dir() -> Path:
    return cache_dir() / "runs"


def preset_name() -> str | None:
    return os.environ.get("SMEME_APP_PRESET", "").strip() or None


_setup_done = False


def setup() -> None:
    """Once per process: torch threads from SMEME_THREADS (default 1)."""
    global _setup_done
    if not _setup_done:
        from .threads import configure
        configure()
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
    from .presets import get_preset

    preset = get_preset(preset_name() or dataset)
    return {"steps": int(preset.train.steps), "width": int(preset.model.get("width", 128)),
            "depth": int(preset.model.get("depth", 3)), "seed": 0}


# Seconds-long rounds for tests and the browser test (SMEME_APP_PRESET=tiny); not accurate.
TINY_EXPLORE = {"iterations": 3, "trajectories": 64, "steps": 20, "adam_steps": 2, "metrics_n": 1024,
                "max_validity_drop": 1.0}  # a tiny model is too rough for the collapse guard


def explore_defaults(run=None) -> dict:
    """Defaults for the Explore page: ExploreConfig's, with the data set's own overrides."""
    from .explore import ExploreConfig

    d = dataclasses.asdict(ExploreConfig())
    if run is not None:
        d.update(run.domain.explore_defaults())
    if preset_name() == "tiny":
        d.update(TINY_EXPLORE)
    return d


SOLVERS = ("adjoint", "student-teacher")
SOLVER_NAMES = {"adjoint": "Adjoint Matching", "student-teacher": "Student-teacher (the blog's)"}
LAM_SCHEDULES = ("constant", "decreasing")


def explore_settings(defaults: dict, *, solver: str, lam: float, lam_schedule: str, iterations: int,
                     seed: int) -> dict:
    """ExploreConfig keyword arguments from the page's widgets (on top of the defaults)."""
    return {**defaults, "solver": solver, "lam": float(lam), "lam_schedule": lam_schedule,
            "seed": int(seed), "iterations": int(iterations)}


def content_blocks(name: str) -> list[tuple[str, str]]:
    """content/<name>.md split into ('md', text) and ('latex', formula) blocks ($$...$$)."""
    text = (CONTENT_DIR / f"{name}.md").read_text(encoding="utf-8")
    out = []
    for i, part in enumerate(re.split(r"^\$\$\s*$", text, flags=re.M)):
        part = part.strip("\n")
        if part.strip():
            out.append(("latex" if i % 2 else "md", part.strip()))
    return out


# ======================================================================================
# runs on disk

_run_cache: dict[str, tuple[tuple, Any]] = {}
_run_lock = threading.Lock()


def _stamp(folder: Path) -> tuple:
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
    from .store import Run
    folder = Path(folder).resolve()
    key = str(folder)
    stamp = _stamp(folder)
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


# ======================================================================================
# metrics as tables

# Names the pages use -> keys of smeme.metrics.round_metrics (flattened with dots); a
# data set without a validity label (toy, csv) shows its on-support share as validity.
_METRIC_KEYS = {
    "entropy": ["entropy_knn"],
    "cross_entropy": ["cross_entropy_pfode"],
    "surprise": ["surprise_pre"],
    "on_support": ["on_support"],
    "validity": ["validity", "on_support"],
    "sparse_share": ["shares.region.sparse.share"],
    "sparse_closed_form": ["sparse_share_closed_form"],
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _num(v):
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v):
        return v  # (value, lo, hi)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def flat_metrics(m: dict) -> dict:
    """One round's metrics as {name: float} with the page's names (+ '<name>_lo/_hi')."""
    flat = _flatten(m or {})
    out = {}
    for name, keys in _METRIC_KEYS.items():
        for k in keys:
            if k in flat and _num(flat[k]) is not None:
                v = _num(flat[k])
                if isinstance(v, (list, tuple)):
                    out[name], out[f"{name}_lo"], out[f"{name}_hi"] = map(float, v)
                else:
                    out[name] = v
                base = k[: -len(".share")] if k.endswith(".share") else k
                lo = flat.get(f"{k}_lo", flat.get(f"{base}.lo"))
                hi = flat.get(f"{k}_hi", flat.get(f"{base}.hi"))
                ci = flat.get(f"{k}_ci")
                if isinstance(ci, (list, tuple)) and len(ci) == 2:
                    lo, hi = ci
                if _num(lo) is not None and _num(hi) is not None:
                    out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
                break
    if "on_support" in out and "off_support" not in out:
        out["off_support"] = 1.0 - out["on_support"]
    for k, v in flat.items():  # everything else numeric, under its own name
        if k not in out and isinstance(_num(v), float):
            out[k] = _num(v)
    return out


def timeline(run) -> pd.DataFrame:
    """One row per finished round: 'round' plus the flattened metrics, and what a perfect
    solver would have reached where it can be computed (perfect_solver)."""
    metrics = sorted(run.metrics().items(), key=lambda kv: int(kv[0]))
    rows = [{"round": int(k), **flat_metrics(m)} for k, m in metrics]
    for row, exact in zip(rows, perfect_solver(run, dict(metrics)) or []):
        row.update(exact)
    return pd.DataFrame(rows) if rows else pd.DataFrame({"round": []})


def perfect_solver(run, metrics: dict) -> list[dict] | None:
    """Per round 0..K, the exact S-MEME rounds (smeme.tilt) of round 0's cached heatmap with
    each round's own lambda and t_r: {'exact_off_support', 'exact_sparse_share' (toy),
    'exact_entropy' (round 0's k-NN entropy plus the exact rounds' entropy gain)}.

    None where it cannot be had without new work or does not apply: no cached round-0
    heatmap yet, a run that is not 2-D points, or a round tuned with another reward."""
    from .tilt import check_plane_is_features, summarise_rounds

    rounds = sorted(int(k) for k in metrics)
    if not rounds or rounds != list(range(len(rounds))) or len(rounds) < 2:
        return None
    later = [metrics[k] for k in rounds[1:]]
    if any(m.get("reward") != "previous" or _num(m.get("lam")) is None or _num(m.get("t_r")) is None
           for m in later):
        return None
    try:
        check_plane_is_features(run.domain)
    except ValueError:
        return None
    hm = heatmap_cached(run, 0)
    if hm is None:
        return None
    key = (run_folder(run), "perfect_solver", _stamp(Path(run_folder(run))))
    hit = _mem_get(key)
    if hit is not None:
        return hit
    try:
        summary = summarise_rounds(run, hm["xs"], hm["ys"], hm["logp"], [float(m["lam"]) for m in later],
                                   [float(m["t_r"]) for m in later])
    except ValueError:
        return None
    h0 = _num(metrics[0].get("entropy_knn"))
    out = []
    for r in summary:
        row = {"exact_off_support": 1.0 - r["on_support"]}
        if h0 is not None:  # the grid entropy has its own offset; its gains are what compare
            row["exact_entropy"] = h0 + r["entropy"] - summary[0]["entropy"]
        if "sparse" in r["shares"].get("region", {}):
            row["exact_sparse_share"] = r["shares"]["region"]["sparse"]
        out.append(row)
    return _mem_put(key, out)


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


def category_shares(run, rounds, key: str) -> pd.DataFrame:
    """Shares of category `key` ('side_type', 'angle_type', 'region') per round with 95% CIs,
    from the saved metrics when present, else counted on the cached samples (Wilson CI)."""
    rows = []
    all_metrics = run.metrics()
    for k in rounds:
        saved = _saved_shares(all_metrics.get(k, {}), key)
        if saved:
            rows += [{"round": k, **r} for r in saved]
            continue
        cats = run.domain.categories(samples(run, k)).get(key)
        if cats is None:
            continue
        cats = np.asarray(cats)
        n = len(cats)
        for c in sorted(set(cats.tolist()), key=_cat_key):
            x = int((cats == c).sum())
            lo, hi = _wilson(x, n)
            rows.append({"round": k, "category": str(c), "share": x / n, "lo": lo, "hi": hi})
    df = pd.DataFrame(rows, columns=["round", "category", "share", "lo", "hi"])
    if len(df):
        df = df.sort_values(["round", "category"], key=lambda col: col.map(_cat_key) if col.name == "category"
                            else col, kind="stable").reset_index(drop=True)
    return df


def _cat_key(c) -> tuple:
    c = str(c)
    return (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c)


def _saved_shares(m: dict, key: str) -> list[dict]:
    for container in (m.get("shares", {}), m.get("categories", {}), m):
        v = container.get(key) if isinstance(container, dict) else None
        if isinstance(v, dict) and v:
            rows = []
            for c, s in v.items():
                if isinstance(s, dict) and "share" in s:
                    ci = s.get("ci") or (s.get("lo"), s.get("hi"))
                    rows.append({"category": str(c), "share": float(s["share"]),
                                 "lo": float(ci[0]) if ci and ci[0] is not None else np.nan,
                                 "hi": float(ci[1]) if ci and ci[1] is not None else np.nan})
                elif isinstance(s, (list, tuple)) and len(s) == 3:
                    rows.append({"category": str(c), "share": float(s[0]), "lo": float(s[1]), "hi": float(s[2])})
                elif isinstance(s, (int, float)):
                    rows.append({"category": str(c), "share": float(s), "lo": np.nan, "hi": np.nan})
            if rows:
                return rows
    return []


def _wilson(x: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = x / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(centre - half, 0.0), min(centre + half, 1.0))


def metrics_json(run) -> str:
    return json.dumps({str(k): v for k, v in sorted(run.metrics().items())}, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ======================================================================================
# cached arrays: samples, training data, heatmaps

_mem: "OrderedDict[tuple, Any]" = OrderedDict()
_mem_lock = threading.Lock()
_MEM_MAX = 64


def _mem_get(key):
    with _mem_lock:
        if key in _mem:
            _mem.move_to_end(key)
            return _mem[key]
    return None


def _mem_put(key, value):
    with _mem_lock:
        _mem[key] = value
        _mem.move_to_end(key)
        while len(_mem) > _MEM_MAX:
            _mem.popitem(last=False)
    return value


def _round_stamp(run, k: int):
    for p in Path(run_folder(run)).glob(f"round_{k}.*"):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            pass
    return None


def _cached_array(run, key: str, k: int | None, compute):
    folder = run_folder(run)
    mkey = (folder, key, None if k is None else _round_stamp(run, k))
    hit = _mem_get(mkey)
    if hit is not None:
        return hit
    arr = None
    try:
        arr = run.load_array(key)
    except Exception:  # noqa: BLE001 - missing or stale: recompute
        arr = None
    if arr is None:
        arr = np.asarray(compute())
        try:
            run.save_array(key, arr)
        except Exception:  # noqa: BLE001 - a read-only cache still shows the result
            pass
    return _mem_put(mkey, arr)


def samples(run, k: int, n: int = SAMPLES_N, seed: int = SAMPLES_SEED) -> np.ndarray:
    """Round k's samples under fixed noise (seed), raw units; cached on disk."""
    def compute():
        from .pipeline import sample_run
        setup()
        return sample_run(run, k, n, seed)
    return _cached_array(run, f"samples_r{k}_n{n}_s{seed}", k, compute)


def samples_cached(run, k: int, n: int = SAMPLES_N, seed: int = SAMPLES_SEED) -> np.ndarray | None:
    """The samples if already computed (memory or disk), else None; never computes."""
    key = f"samples_r{k}_n{n}_s{seed}"
    folder = run_folder(run)
    hit = _mem_get((folder, key, _round_stamp(run, k)))
    if hit is not None:
        return hit
    try:
        arr = run.load_array(key)
    except Exception:  # noqa: BLE001
        return None
    return None if arr is None else _mem_put((folder, key, _round_stamp(run, k)), arr)


def data_sample(run, n: int = SAMPLES_N) -> np.ndarray | None:
    """Up to n rows of the training data (saved at training time; rebuilt for CLI runs)."""
    def rebuild():
        from .data import make_dataset
        cfg = run.config.get("dataset", {})
        name = cfg.get("name") if isinstance(cfg, dict) else cfg
        params = dict(cfg.get("params", {})) if isinstance(cfg, dict) else {}
        params.pop("n", None)
        seed = params.pop("seed", 0)
        ds = make_dataset(name, seed=seed, **params)
        return ds.raw[:n]
    try:
        return _cached_array(run, f"data_n{n}", None, rebuild)
    except Exception:  # noqa: BLE001 - data no longer available (e.g. a moved CSV)
        return None


def plane(run, raw: np.ndarray) -> np.ndarray:
    """Points in the plane the heatmaps use: toy (x, y); triangles (a/c, b/c) of sorted
    sides; other data: its first two columns."""
    raw = np.asarray(raw, dtype=float)
    if run_dataset(run) == "triangles" and raw.ndim == 2 and raw.shape[1] >= 3:
        from .data.triangles import sort_sides
        s = sort_sides(raw)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([s[:, 0] / s[:, 2], s[:, 1] / s[:, 2]])
    return raw.reshape(len(raw), -1)[:, :2]


def plane_ranges(run):
    """Fixed axis ranges for scatter plots where the plane has natural bounds (triangles:
    the (u, v) unit square; a few wild samples should not squash the picture)."""
    if run_dataset(run) == "triangles":
        return ((-0.02, 1.05), (-0.02, 1.05))
    return None


CATEGORY_ORDER = ["dense", "sparse", "equilateral", "isosceles", "scalene", "acute", "right", "obtuse",
                  "off", "invalid"]


def plane_labels(run) -> tuple[str, str]:
    _, _, _, x_label, y_label = run.domain.plane_grid(2)
    return str(x_label), str(y_label)


def overlay(run) -> list[dict]:
    dom = run.domain
    return dom.overlay() if hasattr(dom, "overlay") else []


def heatmap_key(k: int, resolution: int) -> str:
    return f"heatmap_r{k}_res{resolution}"


def heatmap_cached(run, k: int, resolution: int = HEATMAP_RES) -> dict | None:
    """The log-density heatmap of round k if computed already (memory or disk), else None."""
    folder = run_folder(run)
    mkey = (folder, heatmap_key(k, resolution), _round_stamp(run, k))
    hit = _mem_get(mkey)
    if hit is not None:
        return hit
    arr = run.load_array(heatmap_key(k, resolution))
    if arr is None:
        return None
    return _mem_put(mkey, _heatmap_dict(run, arr, resolution))


def _heatmap_dict(run, logp: np.ndarray, resolution: int) -> dict:
    xs, ys, _, xl, yl = run.domain.plane_grid(resolution)
    return {"xs": np.asarray(xs), "ys": np.asarray(ys), "logp": np.asarray(logp).reshape(len(ys), len(xs)),
            "labels": (xl, yl)}


def compute_heatmap(run, k: int, resolution: int = HEATMAP_RES, cancel=None, progress=None) -> dict:
    """Compute (or read) round k's heatmap and cache it on disk.

    progress(done, total) follows the PF-ODE steps; a set `cancel` aborts (JobCancelled)."""
    hit = heatmap_cached(run, k, resolution)
    if hit is not None:
        return hit
    from . import density

    def tick(done, total):
        if cancel is not None and cancel.is_set():
            raise jobs.JobCancelled()
        if progress is not None:
            progress(done, total)

    setup()
    model = run.load_model(k)
    hm = density.heatmap(model, run.domain, run.standardizer, resolution, density_kw={"progress": tick})
    logp = np.asarray(hm["logp"], dtype=np.float64)
    try:
        run.save_array(heatmap_key(k, resolution), logp)
    except Exception:  # noqa: BLE001
        pass
    folder = run_folder(run)
    out = {"xs": np.asarray(hm["xs"]), "ys": np.asarray(hm["ys"]),
           "logp": logp.reshape(len(hm["ys"]), len(hm["xs"])),
           "labels": (hm.get("x_label", "x"), hm.get("y_label", "y"))}
    return _mem_put((folder, heatmap_key(k, resolution), _round_stamp(run, k)), out)


# ======================================================================================
# background jobs

def busy_message(folder) -> str | None:
    job = jobs.busy(folder)
    if job is None:
        return None
    return (f"This run is busy: '{job.label or job.kind}' is running ({job.fraction:.0%}, "
            f"{job.elapsed:.0f} s), perhaps in another tab. Wait for it or stop it.")


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded CSV under cache/uploads (content-addressed) and return its path."""
    import hashlib
    up = cache_dir() / "uploads"
    up.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem)[:40] or "upload"
    path = up / f"{stem}-{digest}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def check_dataset(dataset: str, params: dict):
    """Build the data set once (raises DataError with one sentence for bad input)."""
    from .data import make_dataset
    p = dict(params)
    return make_dataset(dataset, seed=int(p.pop("seed", 0)), **p)


def start_training(folder, dataset: str, dataset_params: dict | None = None, steps: int | None = None,
                   seed: int = 0, model_params: dict | None = None, label: str | None = None) -> jobs.Job:
    """Pre-train in a background process into `folder`; returns the Job (raises JobBusy)."""
    return jobs.start_process(folder, "train", _train_job, str(folder), dataset, dict(dataset_params or {}),
                              steps, seed, dict(model_params or {}), label=label or f"Training ({dataset})")


def _train_job(job, folder: str, dataset: str, dataset_params: dict, steps, seed: int, model_params: dict):
    from .pipeline import Cancelled, pretrain_run
    setup()
    folder = Path(folder)
    job.update(0.0, "Building the data set...")
    t0 = time.perf_counter()
    last = [0.0]

    def progress(step, total, loss):
        now = time.perf_counter()
        if now - last[0] >= 0.05 or step >= total:  # ~20 messages a second reach the page
            last[0] = now
            job.update(0.85 * step / max(total, 1), f"Training: step {step}/{total}", loss=loss, step=step)
        if step >= total:
            job.update(0.85, "Measuring the pre-trained model (round 0 metrics)...")

    try:
        pretrain_run(folder, dataset, dataset_params=dataset_params, steps=steps, seed=seed,
                     model_params=model_params, progress=progress, cancel=job.cancel, preset=preset_name())
    except Cancelled:
        raise jobs.JobCancelled() from None
    if job.cancel.is_set():
        raise jobs.JobCancelled()
    job.update(0.9, "Sampling the model for display...")
    run = open_run(folder)
    data_sample(run)
    samples(run, 0)
    job.update(1.0, f"Trained in {time.perf_counter() - t0:.0f} s.")
    return str(folder)


def start_rounds(folder, rounds: int, settings: dict) -> jobs.Job:
    """Run `rounds` S-MEME rounds in a background process; each finished round is saved by
    explore.run_rounds and logged as a job event {'round', 'metrics'}."""
    from .explore import ExploreConfig
    ExploreConfig(**settings)  # bad settings raise here, on the page, not in the worker
    return jobs.start_process(folder, "explore", _rounds_job, str(folder), int(rounds), dict(settings),
                              label=f"S-MEME rounds ({int(rounds)})")


def _rounds_job(job, folder: str, rounds: int, settings: dict):
    from .explore import ExploreConfig, run_rounds
    setup()
    run = open_run(folder)
    start = run.latest_round
    job.update(0.0, f"Round {start + 1}: starting...")

    def on_iteration(rnd, it, total, loss):
        done = rnd - start - 1
        job.update((done + it / max(total, 1)) / rounds,
                   f"Round {rnd} of {start + rounds}: solver iteration {it}/{total}", loss=loss)

    def on_round(rnd, metrics):
        job.log({"round": int(rnd), "metrics": metrics})
        job.update((rnd - start) / rounds, f"Round {rnd} saved; sampling it for display...")
        try:
            samples(open_run(folder), int(rnd))
        except Exception:  # noqa: BLE001 - display samples can be drawn later
            pass

    # the run's file lock for the whole job: a CLI `explore` on the same run is refused
    # at once instead of interleaving rounds (RunLockedError names the holder)
    with run.lock():
        done = run_rounds(run, rounds, ExploreConfig(**settings), on_iteration=on_iteration,
                          on_round=on_round, cancel=job.cancel)
    return list(done or [])


def start_heatmaps(folder, rounds, resolution: int = HEATMAP_RES) -> jobs.Job | None:
    """Compute the missing heatmaps of `rounds` in a background process (read-only job).

    Returns None when all are cached already. One heatmap job per run at a time."""
    run = open_run(folder)
    todo = [k for k in dict.fromkeys(int(r) for r in rounds) if heatmap_cached(run, k, resolution) is None]
    if not todo:
        return None
    existing = jobs.get(folder, "heatmap")
    if existing is not None and existing.running:
        return existing
    return jobs.start_process(folder, "heatmap", _heatmap_job, str(folder), todo, int(resolution),
                              label="Log-density heatmaps", writes=False)


def _heatmap_job(job, folder: str, todo: list[int], resolution: int):
    setup()
    r = open_run(folder)
    for i, k in enumerate(todo):
        if job.cancel.is_set():
            raise jobs.JobCancelled()
        msg = f"Log-density of round {k} on a {resolution}x{resolution} grid ({i + 1}/{len(todo)})"
        job.update(i / len(todo), msg + "...")

        def progress(done, total, i=i, msg=msg):
            job.update((i + done / max(total, 1)) / len(todo), f"{msg}: ODE step {done}/{total}")

        compute_heatmap(r, k, resolution, cancel=job.cancel, progress=progress)
    return todo


def samples_csv(run, k: int, n: int = SAMPLES_N, seed: int = SAMPLES_SEED) -> bytes:
    cols = list(getattr(run.domain, "columns", [])) or None
    arr = samples(run, k, n, seed)
    arr = arr.reshape(len(arr), -1)
    if not cols or len(cols) != arr.shape[1]:
        cols = [f"x{i}" for i in range(arr.shape[1])]
    buf = io.StringIO()
    pd.DataFrame(arr, columns=cols).to_csv(buf, index=False)
    return buf.getvalue().encode()


# ======================================================================================
# Streamlit helpers shared by pages (imported lazily)

def render_content(name: str) -> None:
    import streamlit as st
    for kind, text in content_blocks(name):
        if kind == "latex":
            st.latex(text)
        else:
            st.markdown(text)


_figs: "OrderedDict[tuple, Any]" = OrderedDict()
_FIGS_MAX = 48


def figure(run, parts: tuple, build):
    """Memoised figure: `build()` runs once per (run state, parts); a rerun or a page
    revisit reuses the Plotly figure (building subplots is the slow part of a rerun)."""
    folder = run_folder(run)
    key = (folder, _stamp(Path(folder)), *parts)
    with _mem_lock:
        if key in _figs:
            _figs.move_to_end(key)
            return _figs[key]
    fig = build()
    with _mem_lock:
        _figs[key] = fig
        while len(_figs) > _FIGS_MAX:
            _figs.popitem(last=False)
    return fig


def plot(fig, key: str | None = None) -> None:
    import streamlit as st
    from .figures import PLOTLY_CONFIG
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG, theme=None)


def pick_default_run() -> str | None:
    """The run to open when a session has none: the default toy run, else the newest."""
    ready = [r for r in list_runs() if r["latest"] is not None]
    if not ready:
        return None
    default = str(default_run_folder().resolve())
    return next((r["folder"] for r in ready if r["folder"] == default), ready[0]["folder"])


def select_run(folder) -> None:
    """Make `folder` this session's run (and remember it in the URL, so a reload keeps it)."""
    import streamlit as st
    st.session_state["run"] = str(Path(folder).resolve())
    try:
        st.query_params["run"] = Path(folder).name
    except Exception:  # noqa: BLE001 - query params are a nicety
        pass


def training_folder() -> str | None:
    """The folder of a training job this session should watch: the one it started, else a
    training still running for the run named in the URL (a reload), else the newest one."""
    import streamlit as st
    folder = st.session_state.get("training")
    if folder:
        return folder
    running = [j for j in jobs.active() if j.kind == "train"]
    if not running:
        return None
    name = st.query_params.get("run")
    pick = next((j.folder for j in running if name and Path(j.folder).name == name), running[-1].folder)
    st.session_state["training"] = pick  # keep showing it (and how it ended) in this session
    return pick


def current_run():
    """The run chosen in this session (st.session_state['run']), else the one named in the
    URL (?run=name, survives a reload), else the default / newest run; None if there is none."""
    import streamlit as st
    folder = st.session_state.get("run")
    if not folder:
        name = st.query_params.get("run")
        if name and (runs_dir() / Path(name).name).is_dir():
            folder = str((runs_dir() / Path(name).name).resolve())
        else:
            folder = pick_default_run()
        if not folder:
            return None
        st.session_state["run"] = folder
    try:
        return open_run(folder)
    except Exception as exc:  # noqa: BLE001 - e.g. still training, or damaged: say so
        if jobs.busy(folder) is None:
            st.warning(f"Cannot open the run {Path(folder).name}: {exc}")
        return None


LOSS_REDRAW_S = 3.0


def job_panel(folder, kind: str, *, show_loss: bool = True, key: str | None = None,
              poll: float = 0.8, extra=None) -> str | None:
    """Show a job's progress, live; returns its status (None if no job).

    While the job runs, a fragment reruns every `poll` seconds (progress moves at least
    once a second) and, when the job ends, reruns the whole page once so that the result
    appears. The loss curve is rebuilt at most every LOSS_REDRAW_S seconds (an unchanged
    figure is not redrawn by the browser): redrawing it at every poll cost the browser and
    the server more than a core, and training ran 4x slower beside it (bench_app.py). A finished job's outcome (error / stopped) is shown statically. `extra()`, if
    given, is drawn inside the live fragment after the progress (e.g. the metrics of the
    rounds finished so far), so it refreshes while the job runs."""
    import streamlit as st
    job = jobs.get(folder, kind)
    if job is None:
        return None
    key = key or f"job_{kind}"
    seen = st.session_state.setdefault("_jobs_seen", set())

    if not job.running:
        seen.add(job.id)
        snap = job.snapshot()
        if snap["status"] == jobs.FAILED:
            st.error(snap["error"])
        elif snap["status"] == jobs.CANCELLED:
            st.warning(f"{job.label or kind}: stopped after {snap['elapsed']:.0f} s.")
        return snap["status"]

    @st.fragment(run_every=poll)
    def _live():
        snap = job.snapshot()
        if snap["status"] != jobs.RUNNING:
            if job.id not in seen:
                seen.add(job.id)
                st.rerun(scope="app")
            return
        cols = st.columns([5, 1], vertical_alignment="center")
        cols[0].progress(snap["fraction"], text=f"{snap['message']}  ({snap['elapsed']:.0f} s)")
        cols[1].button("Stop", key=f"{key}_stop", on_click=job.stop, disabled=snap["cancel_requested"],
                       width="stretch")
        if show_loss and snap["losses"]:
            from .figures import loss_curve
            drawn = st.session_state.setdefault("_job_loss_figures", {})
            hit = drawn.get(key)
            if hit is None or hit[0] != job.id or time.time() - hit[1] >= LOSS_REDRAW_S:
                hit = drawn[key] = (job.id, time.time(),
                                    loss_curve(snap["losses"], title=f"{job.label or kind}: loss"))
            plot(hit[2], key=f"{key}_loss")
        if extra is not None:
            extra()

    _live()
    return jobs.RUNNING


def sidebar() -> None:
    """Run picker and running jobs, on every page."""
    import streamlit as st
    runs = list_runs()
    if not st.session_state.get("run"):
        current_run()  # resolves the session's run: URL (?run=), else default / newest
    folders = [r["folder"] for r in runs if r["latest"] is not None]
    names = {r["folder"]: f"{r['name']} ({r['dataset']})" for r in runs}
    cur = st.session_state.get("run")
    with st.sidebar:
        if folders:
            idx = folders.index(cur) if cur in folders else None
            choice = st.selectbox("Run", folders, index=idx, format_func=lambda f: names.get(f, Path(f).name),
                                  placeholder="Choose a run", key=f"_sidebar_run_{cur}")
            if choice and choice != cur:
                select_run(choice)
                st.rerun()
        else:
            st.caption("No runs yet: train one on the Home or Model page.")
        running = jobs.active()
        for j in running:
            st.caption(f":material/hourglass_top: {Path(j.folder).name}: {j.label or j.kind} (running)")


def metric_row(tl: pd.DataFrame) -> None:
    """The latest round's headline metrics, with the change from the round before."""
    import streamlit as st
    last = tl.iloc[-1]
    prev = tl.iloc[-2] if len(tl) >= 2 else None
    items = [("entropy", "Entropy (k-NN)", "{:.3f}"), ("off_support", "Off support", "{:.1%}"),
             ("surprise", "Surprise", "{:.3f}"), ("validity", "Validity", "{:.1%}"),
             ("sparse_share", "Sparse share", "{:.1%}")]
    items = [it for it in items if it[0] in tl.columns and pd.notna(last.get(it[0]))]
    if not items:
        return
    k = int(last["round"])
    st.markdown(f"**Round {k}**" + (f" (change from round {int(prev['round'])})" if prev is not None else ""))
    cols = st.columns(len(items))
    for col, (name, label, fmt) in zip(cols, items):
        delta = None
        if prev is not None and pd.notna(prev.get(name)):
            d = float(last[name] - prev[name])
            delta = fmt.format(d) if "%" not in fmt else f"{d * 100:+.1f} pts"
        col.metric(label, fmt.format(float(last[name])), delta=delta,
                   delta_color="inverse" if name == "off_support" else "normal")


def compare_metrics(ra: dict, rb: dict, names: tuple[str, str]) -> None:
    """Headline metrics of round b, with the change from round a."""
    import streamlit as st
    items = [("entropy", "Entropy (k-NN)", "{:.3f}"), ("off_support", "Off support", "{:.1%}"),
             ("surprise", "Surprise", "{:.3f}"), ("validity", "Validity", "{:.1%}"),
             ("sparse_share", "Sparse share", "{:.1%}")]
    items = [it for it in items if rb.get(it[0]) is not None and pd.notna(rb.get(it[0]))]
    if not items:
        return
    st.markdown(f"**{names[1]}** (change from {names[0]})")
    cols = st.columns(len(items))
    for col, (name, label, fmt) in zip(cols, items):
        delta = None
        if ra.get(name) is not None and pd.notna(ra.get(name)):
            d = float(rb[name] - ra[name])
            delta = fmt.format(d) if "%" not in fmt else f"{d * 100:+.1f} pts"
        col.metric(label, fmt.format(float(rb[name])), delta=delta,
                   delta_color="inverse" if name == "off_support" else "normal")
