"""Plotly figure builders for the app (pages call these; tests check them without a browser).

Inputs are plain arrays, dicts and DataFrames (what the other smeme.services modules hand the pages),
so each builder can be unit-tested. Only display geometry lives here (placing a triangle
from its sides, clipping a colour range); no model work. The log-density and step-through
figures live in smeme.services.density_figures, the shared look in smeme.services.figure_style;
both are re-exported here, so a page calls every builder as figures.<name>.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# re-exported: the pages name every figure through this module
from .density_figures import (PREVIOUS_COLOR, class_histogram, display_range, heatmap, heatmap_compare,  # noqa: F401
                              pair_scatter, round_frame)
from .figure_style import (CATEGORY_COLORS, DIFF_SCALE, DISPLAY_RANGE, HEAT_SCALE, OVERLAY_COLOR,  # noqa: F401
                           PALETTE, PLOTLY_CONFIG, base_layout, legend_room, overlay_traces, xy_columns)


# --------------------------------------------------------------------------------------
# training

def loss_curve(losses: Sequence[tuple[int, float]] | Sequence[float], title: str = "Training loss",
               smooth: int = 25, log_y: bool = True, max_points: int = 500) -> go.Figure:
    """Loss per step, raw (faint) and a running mean (solid); at most `max_points` of each
    drawn (evenly thinned after smoothing, the last point always kept)."""
    arr = list(losses)
    if arr and isinstance(arr[0], (tuple, list)):
        steps = np.array([s for s, _ in arr], dtype=float)
        vals = np.array([v for _, v in arr], dtype=float)
    else:
        vals = np.asarray(arr, dtype=float)
        steps = np.arange(1, len(vals) + 1, dtype=float)
    keep = np.unique(np.linspace(0, len(vals) - 1, max_points).round().astype(int)) if len(vals) > max_points \
        else slice(None)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps[keep], y=vals[keep], mode="lines", name="loss at each step",
                             line=dict(color=PALETTE[0], width=1), opacity=0.35))
    w = min(smooth, len(vals) // 4)
    if w >= 2:  # a mean over fewer steps would only redraw the raw curve
        smoothed = pd.Series(vals).rolling(w, min_periods=1).mean().to_numpy()
        fig.add_trace(go.Scatter(x=steps[keep], y=smoothed[keep], mode="lines",
                                 name=f"loss (moving mean of {w} steps)", line=dict(color=PALETTE[0], width=2)))
    fig.update_xaxes(title_text="step")
    if log_y and len(vals) and np.all(np.isfinite(vals)) and np.all(vals > 0):
        # plotly's own log ticks label the values between decades with a bare '2' and '5'
        tickvals = log_ticks(float(vals.min()), float(vals.max()))
        fig.update_yaxes(title_text="loss", type="log", tickvals=tickvals, ticktext=[f"{v:g}" for v in tickvals])
    else:
        fig.update_yaxes(title_text="loss", type="linear")
    return base_layout(fig, title, height=300)


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over [lo, hi], each labelled in full: one per decade when
    the range spans two decades or more, else 1-2-5 steps (so a short range still has labels)."""
    first, last = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    for steps in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
        if len(steps) == 1 and last - first < 2:
            continue
        vals = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
        inside = sorted({float(f"{v:.3g}") for v in vals if lo / 1.2 <= v <= hi * 1.2})
        if len(inside) >= 3:
            return inside
    # a range too narrow for 1..9 steps (a loss settled within a few percent): 4 values across it
    return sorted({float(f"{v:.3g}") for v in np.geomspace(lo, hi, 4)}) if hi > lo else [float(f"{lo:.3g}")]



def scatter_panels(panels: Sequence[tuple[str, np.ndarray]], overlay: Sequence[dict] | None = None,
                   labels: tuple[str, str] = ("x", "y"), colors: Sequence[np.ndarray | None] | None = None,
                   title: str | None = None, max_points: int = 500, height: int = 400,
                   ranges: tuple | None = None) -> go.Figure:
    """Side-by-side scatter plots with shared axes (e.g. data vs model samples).

    `panels`: [(title, (n, 2) points in the plotting plane)]; `colors`: optional per-point
    category labels per panel (coloured as groups). At most `max_points` per panel: each SVG
    marker costs ~0.2 ms to draw in a software-rendered browser, and a page switch should
    finish drawing within a second (bench/bench_app.py: the Model page took 0.83-0.93 s
    with 1,000 points a panel, 0.65-0.68 s with 400; WebGL markers were no faster).
    """
    n = max(len(panels), 1)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[t for t, _ in panels],
                        shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.04)
    shown_groups: set = set()
    for i, (name, pts) in enumerate(panels):
        xy = xy_columns(pts)[:max_points]
        cats = None if not colors or colors[i] is None else np.asarray(colors[i])[:max_points]
        if cats is None:
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name,
                                       marker=dict(size=3, color=PALETTE[i % len(PALETTE)], opacity=0.5),
                                       showlegend=False), row=1, col=i + 1)
        else:
            for j, c in enumerate(sorted(set(cats.tolist()), key=str)):
                m = cats == c
                fig.add_trace(go.Scatter(x=xy[m, 0], y=xy[m, 1], mode="markers", name=str(c),
                                           legendgroup=str(c), showlegend=str(c) not in shown_groups,
                                           marker=dict(size=3, opacity=0.55,
                                                       color=CATEGORY_COLORS.get(str(c), PALETTE[j % len(PALETTE)]))),
                              row=1, col=i + 1)
                shown_groups.add(str(c))
        for tr in overlay_traces(overlay):
            fig.add_trace(tr, row=1, col=i + 1)
    fig.update_xaxes(title_text=labels[0], matches="x")
    fig.update_yaxes(matches="y")
    if ranges:
        fig.update_xaxes(range=list(ranges[0]))
        fig.update_yaxes(range=list(ranges[1]))
    fig.update_yaxes(title_text=labels[1], col=1)
    return legend_room(base_layout(fig, title, height=height, subtitles=True))


def displacement(points_a: np.ndarray, points_b: np.ndarray, overlay: Sequence[dict] | None = None,
                 labels: tuple[str, str] = ("x", "y"), names: tuple[str, str] = ("round a", "round b"),
                 title: str | None = None, max_points: int = 400, height: int = 460,
                 ranges: tuple | None = None) -> go.Figure:
    """The same initial noise through two rounds: a line from each sample under a to its
    position under b, with both sets of end points."""
    a, b = xy_columns(points_a), xy_columns(points_b)
    m = min(len(a), len(b), max_points)
    a, b = a[:m], b[:m]
    seg_x = np.column_stack([a[:, 0], b[:, 0], np.full(m, np.nan)]).ravel()
    seg_y = np.column_stack([a[:, 1], b[:, 1], np.full(m, np.nan)]).ravel()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=seg_x, y=seg_y, mode="lines", name="moved", hoverinfo="skip",
                             line=dict(color="rgba(120,120,120,0.45)", width=1)))
    fig.add_trace(go.Scatter(x=a[:, 0], y=a[:, 1], mode="markers", name=names[0],
                               marker=dict(size=4, color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=b[:, 0], y=b[:, 1], mode="markers", name=names[1],
                               marker=dict(size=4, color=PALETTE[1])))
    for tr in overlay_traces(overlay):
        fig.add_trace(tr)
    fig.update_xaxes(title_text=labels[0])
    fig.update_yaxes(title_text=labels[1], scaleanchor="x", scaleratio=1)
    if ranges:
        fig.update_xaxes(range=list(ranges[0]))
        fig.update_yaxes(range=list(ranges[1]))
    return legend_room(base_layout(fig, title, height=height))


# --------------------------------------------------------------------------------------
# the paper's Figure 2d

def budget_lines(rows: Sequence[dict], height: int = 380) -> go.Figure:
    """Entropy per round for each K of a budget sweep, one line per K (the paper's Figure 2d):
    rows carry 'rounds' (K), 'iterations_per_round' and 'entropy_knn_per_round' (rounds 0..K)."""
    fig = go.Figure()
    for i, row in enumerate(sorted(rows, key=lambda r: r["rounds"])):
        ys = [np.nan if v is None else float(v) for v in row.get("entropy_knn_per_round") or []]
        fig.add_trace(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers",
                                 name=f"K = {row['rounds']} ({row['iterations_per_round']} iterations a round)",
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_xaxes(title_text="round", dtick=1)
    fig.update_yaxes(title_text="entropy (k-NN, nats)")
    return legend_room(base_layout(fig, "One budget of solver iterations over K rounds: entropy per round",
                                height=height))


# --------------------------------------------------------------------------------------
# metrics over rounds

SHARE_COLUMNS = ("on_support", "off_support", "validity", "sparse_share", "sparse_closed_form")


def is_share(column: str) -> bool:
    """Whether a timeline column is a share (0..1), drawn in percent."""
    base = column[len("exact_"):] if column.startswith("exact_") else column
    return base in SHARE_COLUMNS or base.endswith("_share")


def timeline(df: pd.DataFrame, panels: Sequence[tuple[str, Sequence[tuple[str, str]]]],
             title: str | None = None, height: int = 300, vertical: bool = False) -> go.Figure:
    """Small multiples of per-round metrics.

    `df`: one row per round, column 'round' plus metric columns (optional '<col>_lo'/'_hi'
    give error bars); `panels`: [(panel title, [(column, legend label), ...]), ...];
    columns missing from df are skipped. A label keeps one colour across panels; columns
    named 'exact_*' (what a perfect solver reaches) are drawn dashed and dark.
    """
    panels = [(t, [(c, l) for c, l in series if c in df.columns]) for t, series in panels]
    panels = [(t, s) for t, s in panels if s] or [("(no metrics yet)", [])]
    n = len(panels)
    fig = make_subplots(rows=n if vertical else 1, cols=1 if vertical else n, subplot_titles=[t for t, _ in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.18 if vertical else 0.0)
    pos = (lambda i: dict(row=i + 1, col=1)) if vertical else (lambda i: dict(row=1, col=i + 1))
    colors: dict[str, str] = {}  # one colour and one legend entry per label, across panels
    for i, (_, series) in enumerate(panels):
        for col, label in series:
            sub = df[["round", col] + [c for c in (f"{col}_lo", f"{col}_hi") if c in df.columns]].dropna(subset=[col])
            err = None
            if f"{col}_lo" in sub.columns and f"{col}_hi" in sub.columns:
                err = dict(type="data", symmetric=False, array=(sub[f"{col}_hi"] - sub[col]).to_numpy(),
                           arrayminus=(sub[col] - sub[f"{col}_lo"]).to_numpy(), thickness=1)
            first = label not in colors
            if first:
                colors[label] = OVERLAY_COLOR if col.startswith("exact_") else PALETTE[len(colors) % len(PALETTE)]
            fig.add_trace(go.Scatter(x=sub["round"], y=sub[col], mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=first, error_y=err,
                                     line=dict(color=colors[label], dash="dash" if col.startswith("exact_") else None)),
                          **pos(i))
        fig.update_xaxes(title_text=None if vertical and i < n - 1 else "round", dtick=1, **pos(i))
        if any(is_share(col) for col, _ in series):  # shares in percent, as on the tiles
            fig.update_yaxes(tickformat=".0%", **pos(i))
    fig = base_layout(fig, title, height=height, subtitles=True)
    # each panel is titled; a legend is needed only where a panel holds several series
    several = any(len(s) > 1 for _, s in panels)
    fig.update_layout(showlegend=several, legend=dict(orientation="h", yanchor="top", y=-0.25 if not vertical else -0.1,
                                                      x=0, xanchor="left"))
    if several:
        fig.update_layout(height=height + 30, margin=dict(b=85))
    return fig


def category_bars(shares: pd.DataFrame, title: str | None = None, height: int = 340,
                  y_max: float | None = None, categories: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars: x = category, one bar per round, 95% CI error bars.

    `shares`: columns round, category, share, and optionally lo, hi. `y_max` and
    `categories` fix the share axis and the bars' order (e.g. the same over every frame of
    a step-through, so that a bar that grows is a share that grew).
    """
    fig = go.Figure()
    for i, (rnd, sub) in enumerate(shares.groupby("round", sort=True)):
        err = None
        if {"lo", "hi"} <= set(sub.columns):
            err = dict(type="data", symmetric=False, array=(sub["hi"] - sub["share"]).to_numpy(),
                       arrayminus=(sub["share"] - sub["lo"]).to_numpy(), thickness=1.2)
        fig.add_trace(go.Bar(x=sub["category"].astype(str), y=sub["share"], name=f"round {rnd}", error_y=err,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share", rangemode="tozero", tickformat=".0%")  # percent, as on the tiles
    if y_max is not None:
        fig.update_yaxes(range=[0.0, float(y_max)])
    if categories is not None:
        fig.update_xaxes(categoryorder="array", categoryarray=list(categories))
    fig = base_layout(fig, title, height=height)
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    return fig


# --------------------------------------------------------------------------------------
# triangles

def triangle_vertices(sides: np.ndarray) -> np.ndarray | None:
    """Vertices (3, 2) of a triangle with sides a <= b <= c: c on the x axis, None if invalid."""
    a, b, c = np.sort(np.asarray(sides, dtype=float))[:3]
    if not (np.isfinite([a, b, c]).all() and a > 0 and a + b > c):
        return None
    x = (c * c + b * b - a * a) / (2 * c)
    y = np.sqrt(max(b * b - x * x, 0.0))
    return np.array([[0.0, 0.0], [c, 0.0], [x, y]])


def triangle_gallery(rows: dict[str, np.ndarray], per_row: int = 6, height: int | None = None,
                     title: str | None = None) -> go.Figure:
    """A few triangles per round, drawn to scale: rows = {label: (n, 3) sides}."""
    labels = list(rows)
    nrow = max(len(labels), 1)
    fig = make_subplots(rows=nrow, cols=per_row, horizontal_spacing=0.01, vertical_spacing=0.06,
                        row_titles=labels or None)
    for r, lab in enumerate(labels):
        for j, sides in enumerate(np.asarray(rows[lab], dtype=float)[:per_row]):
            v = triangle_vertices(sides)
            if v is None:
                fig.add_annotation(text="invalid", showarrow=False, row=r + 1, col=j + 1,
                                   x=0.5, y=0.3, font=dict(color=PALETTE[3]))
                continue
            fig.add_trace(go.Scatter(x=list(v[:, 0]) + [v[0, 0]], y=list(v[:, 1]) + [v[0, 1]], fill="toself",
                                     mode="lines", line=dict(color=PALETTE[r % len(PALETTE)], width=1.5),
                                     showlegend=False, hoverinfo="skip"), row=r + 1, col=j + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for r in range(nrow):
        for j in range(per_row):
            idx = r * per_row + j + 1
            fig.update_yaxes(scaleanchor=f"x{'' if idx == 1 else idx}", scaleratio=1, row=r + 1, col=j + 1)
    fig.update_layout(template="plotly_white", height=height or 110 * nrow + 40,
                      margin=dict(l=10, r=60, t=30 if title else 10, b=10),
                      title=dict(text=title) if title else None)
    return fig
