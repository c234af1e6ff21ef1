"""Step through a run's rounds: what the Rounds page draws for round k, on axes and a colour
scale fixed over every round, so that between two frames only the model's change moves.

Everything comes from the cached arrays (smeme.services.cached): after the first visit a
frame is a lookup, and the page's slider moves at once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import cached
from .figures import display_range
from .runs import color_categories, folder_stamp, has_plane, is_image_run, run_dataset, run_folder
from .settings import HEATMAP_RES

# (metrics key, title) of each data set's category view
CATEGORY_VIEWS = {"toy": [("region", "Where the samples land")],
                  "triangles": [("side_type", "Side type"), ("angle_type", "Angle type")]}
QUANTILE = 0.005  # the sample axes cover all but the wildest 0.5% on each side, of all rounds
MARGIN = 0.05


def _memo(run, name: str, parts: tuple, compute):
    key = (run_folder(run), name, folder_stamp(Path(run_folder(run))), *parts)
    hit = cached._mem_get(key)
    return hit if hit is not None else cached._mem_put(key, compute())


def missing_heatmaps(run, resolution: int = HEATMAP_RES) -> list[int]:
    """The rounds whose heatmap is not cached yet (none for runs without a 2-D plane)."""
    if is_image_run(run) or not has_plane(run):
        return []
    return [k for k in run.rounds() if cached.heatmap_cached(run, k, resolution) is None]


def heat_range(run, resolution: int = HEATMAP_RES) -> tuple[float, float] | None:
    """One colour range for the heatmaps of every round (of those computed so far)."""
    maps = [hm["logp"] for k in run.rounds() if (hm := cached.heatmap_cached(run, k, resolution)) is not None]
    return display_range(*maps) if maps else None


def _span(values: np.ndarray, extra=()) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    lo, hi = (np.quantile(values, [QUANTILE, 1 - QUANTILE]) if len(values) else (0.0, 1.0))
    lo, hi = min([float(lo), *extra]), max([float(hi), *extra])
    pad = MARGIN * (hi - lo if hi > lo else 1.0)
    return (lo - pad, hi + pad)


def plane_range(run) -> tuple:
    """Fixed axes for the plane over every round: the data set's own where it has them, else
    the heatmap grid's extent widened to hold (nearly) every round's samples."""
    fixed = cached.plane_ranges(run)
    if fixed:
        return fixed

    def compute():
        xy = np.concatenate([cached.plane(run, cached.samples(run, k)) for k in run.rounds()])
        grid = run.domain.plane_grid(2)
        xs, ys = np.asarray(grid[0], dtype=float), np.asarray(grid[1], dtype=float)
        return (_span(xy[:, 0], (xs.min(), xs.max())), _span(xy[:, 1], (ys.min(), ys.max())))
    return _memo(run, "step_plane_range", (), compute)


def frame(run, k: int, resolution: int = HEATMAP_RES) -> dict:
    """Round k's pieces for figures.round_frame: heatmap (None until computed), plane points,
    the previous round's, category colours, overlay and labels."""
    rounds = run.rounds()
    prev = rounds[rounds.index(k) - 1] if k in rounds and rounds.index(k) > 0 else None
    raw = cached.samples(run, k)
    return {"hm": cached.heatmap_cached(run, k, resolution), "points": cached.plane(run, raw),
            "prev_points": None if prev is None else cached.plane(run, cached.samples(run, prev)),
            "colors": (color_categories(run, [raw]) or [None])[0], "overlay": cached.overlay(run),
            "labels": cached.plane_labels(run)}


def category_views(run) -> list[tuple[str, str]]:
    return CATEGORY_VIEWS.get(run_dataset(run), [])


def category_frame(run, k: int, key: str):
    """Round k's and k-1's shares of category `key`, the categories in a fixed order and the
    largest share of any round (the fixed height of the bars' axis)."""
    rounds = run.rounds()
    every = _memo(run, "step_shares", (key,), lambda: cached.category_shares(run, rounds, key))
    shown = [r for r in rounds if r <= k][-2:]
    categories = sorted(set(every["category"]), key=cached._cat_key)
    top = float(np.nanmax(every[["share", "hi"]].to_numpy())) if len(every) else 1.0
    return every[every["round"].isin(shown)], categories, min(1.0, 1.1 * top)


def columns(run) -> list[str]:
    """The data's columns, for the CSV's chosen pair."""
    cols = list(getattr(run.domain, "columns", []) or [])
    dim = int(np.prod(getattr(run.domain, "sample_shape", (len(cols),)) or (len(cols),)))
    return cols if len(cols) == dim and cols else [f"x{i}" for i in range(dim)]


def pair_frame(run, k: int, i: int, j: int) -> dict:
    """Columns i and j of round k's and k-1's samples, with axes fixed over every round."""
    rounds = run.rounds()
    pick = lambda r: np.asarray(cached.samples(run, r), dtype=float).reshape(-1, len(columns(run)))[:, [i, j]]  # noqa: E731
    prev = rounds[rounds.index(k) - 1] if rounds.index(k) > 0 else None

    def compute():
        every = np.concatenate([pick(r) for r in rounds])
        return (_span(every[:, 0]), _span(every[:, 1]))
    names = columns(run)
    return {"points": pick(k), "prev_points": None if prev is None else pick(prev),
            "labels": (names[i], names[j]), "ranges": _memo(run, "step_pair_range", (i, j), compute)}


def digits_frame(run, k: int) -> dict:
    """Round k of a digits run: its grid row under the fixed noise (uint8, cached on disk)
    and its class shares beside round k-1's, on a fixed height."""
    rounds = run.rounds()
    metrics = run.metrics()
    prev = rounds[rounds.index(k) - 1] if rounds.index(k) > 0 else None
    shares = {r: {str(c): float(v) for c, v in _class_shares(metrics.get(r, {})).items()} for r in rounds}
    top = max([v for s in shares.values() for v in s.values()] or [1.0])
    return {"row": cached.digits_row(run, k), "shares": shares.get(k, {}),
            "prev_shares": None if prev is None else shares.get(prev), "y_max": min(1.0, 1.1 * top)}


def _class_shares(m: dict) -> dict:
    v = m.get("class_shares") or {}
    if isinstance(v, (list, tuple)):
        return {str(i): s for i, s in enumerate(v)}
    return v if isinstance(v, dict) else {}


def _shares_of(shares, k: int) -> dict:
    sub = shares[shares["round"] == k]
    return {str(c): float(s) for c, s in zip(sub["category"], sub["share"])}


def player_frames(run, pair: tuple[int, int] | None = None) -> tuple[list[dict], list[tuple[str, float]]]:
    """Every round's pieces for motion.rounds_player (a frame per round, in order), and each
    category view's (title, fixed height). With `pair` (a CSV's two chosen columns) the
    samples are those columns."""
    rounds, views = run.rounds(), category_views(run)
    frames, tops = [], [1.0] * len(views)
    for i, k in enumerate(rounds):
        f = {**frame(run, k), "k": k, "bars": []}
        if pair is not None:
            p = pair_frame(run, k, *pair)
            f.update(points=p["points"], prev_points=p["prev_points"], colors=None)
        for v, (cat, _) in enumerate(views):
            shares, order, tops[v] = category_frame(run, k, cat)
            f["bars"].append(([str(c) for c in order], _shares_of(shares, k),
                              _shares_of(shares, rounds[i - 1]) if i else {}))
        frames.append(f)
    return frames, [(title, top) for (_, title), top in zip(views, tops)]
