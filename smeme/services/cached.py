"""Cached results of a run: samples under fixed noise, training data, log-density heatmaps,
the perfect solver's rounds, category shares, the metrics timeline and built figures.

Caching has two levels: arrays are saved in the run folder keyed by what produced them
(round, resolution, n, seed) so that a restart or a revisit is instant, and a small
in-memory map avoids re-reading them on every Streamlit rerun.
"""
from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import jobs
from .results import flat_metrics, metric_number
from .runs import folder_stamp, run_dataset, run_folder
from .settings import HEATMAP_RES, SAMPLES_N, SAMPLES_SEED, setup

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
        if p.name.endswith(".deferred.json"):  # written after the round: not the round itself
            continue
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
        from ..pipeline import sample_run
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


def digits_row(run, k: int, n: int = 8, seed: int = SAMPLES_SEED) -> np.ndarray:
    """Round k's row of a digits grid under fixed noise: uint8 images (n, h, w); cached on disk."""
    def compute():
        from ..images.grid import grid_arrays
        setup()
        return grid_arrays(run, [k], n=n, seed=seed)[k]
    return _cached_array(run, f"digits_row_r{k}_n{n}_s{seed}", k, compute)


def data_sample(run, n: int = SAMPLES_N) -> np.ndarray | None:
    """Up to n rows of the training data, or None (see data_note): a csv run's own kept rows;
    a generated data set (toy, triangles, digits) rebuilt from its config's parameters. No
    file outside the run is ever read: a csv run that keeps no rows (made before runs kept
    them) has none to show."""
    if run_dataset(run) == "csv":
        key = (run_folder(run), "training_rows", folder_stamp(Path(run_folder(run))))
        hit = _mem_get(key)
        if hit is not None:
            return hit[:n]
        try:
            rows = run.training_rows()
        except Exception:  # noqa: BLE001 - a damaged rows file: data_note says so
            return None
        return None if rows is None else _mem_put(key, rows)[:n]

    def rebuild():
        from ..data import make_dataset
        cfg = run.config.get("dataset", {})
        params = dict(cfg.get("params", {}))
        params.pop("n", None)
        params.pop("path", None)  # only csv data sets name a file, and they are never rebuilt
        seed = params.pop("seed", 0)
        ds = make_dataset(run_dataset(run), seed=seed, **params)
        return ds.raw[:n]
    try:
        return _cached_array(run, f"data_n{n}", None, rebuild)
    except Exception:  # noqa: BLE001 - e.g. a data set of an extension not installed here
        return None


def data_note(run) -> str | None:
    """Why the data panel shows no training data, in one sentence (None when it does)."""
    if run_dataset(run) != "csv" or data_sample(run) is not None:
        return None
    if run.config.get("dataset", {}).get("training_rows") is None:
        return ("The training rows are not stored in this run (it was trained before runs kept their data), "
                "so only the model's samples are shown.")
    try:
        run.training_rows()
    except Exception as exc:  # noqa: BLE001
        return f"The training rows of this run cannot be shown: {str(exc).replace(str(run_folder(run)), 'the run')}"
    return None


def samples_csv(run, k: int, n: int = SAMPLES_N, seed: int = SAMPLES_SEED) -> bytes:
    cols = list(getattr(run.domain, "columns", [])) or None
    arr = samples(run, k, n, seed)
    arr = arr.reshape(len(arr), -1)
    if not cols or len(cols) != arr.shape[1]:
        cols = [f"x{i}" for i in range(arr.shape[1])]
    buf = io.StringIO()
    pd.DataFrame(arr, columns=cols).to_csv(buf, index=False)
    return buf.getvalue().encode()


def plane(run, raw: np.ndarray) -> np.ndarray:
    """Points in the plane the heatmaps use: toy (x, y); triangles (a/c, b/c) of sorted
    sides; other data: its first two columns."""
    raw = np.asarray(raw, dtype=float)
    if run_dataset(run) == "triangles" and raw.ndim == 2 and raw.shape[1] >= 3:
        from ..data.triangles import sort_sides
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
    from .. import density

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


def perfect_solver(run, metrics: dict) -> list[dict] | None:
    """Per round 0..K, the exact S-MEME rounds (smeme.tilt) of round 0's cached heatmap with
    each round's own lambda, to the paper's target p_{k-1}^(1 - lam): {'exact_off_support',
    'exact_sparse_share' (toy), 'exact_entropy' (round 0's k-NN entropy plus the exact rounds'
    entropy gain)}; where a round used the smoothed reward (reward_target 'smoothed', its t_r),
    also the same keys prefixed 'exact_smoothed_' for that different target.

    None where it cannot be had without new work or does not apply: no cached round-0
    heatmap yet, a run that is not 2-D points, or a round tuned with another reward."""
    from ..tilt import check_plane_is_features, summarise_rounds

    rounds = sorted(int(k) for k in metrics)
    if not rounds or rounds != list(range(len(rounds))) or len(rounds) < 2:
        return None
    later = [metrics[k] for k in rounds[1:]]
    if any(m.get("reward") != "previous" or metric_number(m.get("lam")) is None or metric_number(m.get("t_r")) is None
           for m in later):
        return None
    try:
        check_plane_is_features(run.domain)
    except ValueError:
        return None
    hm = heatmap_cached(run, 0)
    if hm is None:
        return None
    key = (run_folder(run), "perfect_solver", folder_stamp(Path(run_folder(run))))
    hit = _mem_get(key)
    if hit is not None:
        return hit
    lams = [float(m["lam"]) for m in later]
    smoothed = [m.get("reward_target", "smoothed") == "smoothed" for m in later]  # rounds before the option: smoothed
    try:  # the paper's target (t_r = 0), and the smoothed one beside it when a round used it
        summary = summarise_rounds(run, hm["xs"], hm["ys"], hm["logp"], lams, [0.0] * len(lams))
        summary_smoothed = (summarise_rounds(run, hm["xs"], hm["ys"], hm["logp"], lams, [float(m["t_r"]) for m in later])
                            if any(smoothed) else None)
    except ValueError:
        return None
    h0 = metric_number(metrics[0].get("entropy_knn"))
    out = []
    for k, r in enumerate(summary):
        row = _exact_row(r, summary[0], h0, "exact_")
        if summary_smoothed is not None:
            row.update(_exact_row(summary_smoothed[k], summary_smoothed[0], h0, "exact_smoothed_"))
        out.append(row)
    return _mem_put(key, out)


def _exact_row(r: dict, first: dict, h0, prefix: str) -> dict:
    row = {prefix + "off_support": 1.0 - r["on_support"]}
    if h0 is not None:  # the grid entropy has its own offset; its gains are what compare
        row[prefix + "entropy"] = h0 + r["entropy"] - first["entropy"]
    if "sparse" in r["shares"].get("region", {}):
        row[prefix + "sparse_share"] = r["shares"]["region"]["sparse"]
    return row


def timeline(run) -> pd.DataFrame:
    """One row per finished round: 'round' plus the flattened metrics (with the deferred ones
    computed so far; 'deferred_pending' is True where they are still to come), and what a
    perfect solver would have reached where it can be computed (perfect_solver)."""
    from ..deferred import pending

    metrics = sorted(run.all_metrics().items(), key=lambda kv: int(kv[0]))
    waiting = set(pending(run))
    rows = [{"round": int(k), **flat_metrics(m), "deferred_pending": int(k) in waiting} for k, m in metrics]
    for row, exact in zip(rows, perfect_solver(run, dict(metrics)) or []):
        row.update(exact)
    return pd.DataFrame(rows) if rows else pd.DataFrame({"round": []})


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


_figs: "OrderedDict[tuple, Any]" = OrderedDict()
_FIGS_MAX = 48


def figure(run, parts: tuple, build):
    """Memoised figure: `build()` runs once per (run state, parts); a rerun or a page
    revisit reuses the Plotly figure (building subplots is the slow part of a rerun)."""
    folder = run_folder(run)
    key = (folder, folder_stamp(Path(folder)), *parts)
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
