"""Log-density figures (a heatmap, two rounds side by side with their difference) and the
figures of one round at a time (the step-through: its heatmap beside its samples over the
previous round's, two chosen columns, digit classes). Re-exported by smeme.services.figures."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figure_style import (CATEGORY_COLORS, DIFF_SCALE, DISPLAY_RANGE, HEAT_SCALE, PALETTE, base_layout, legend_room,
                           overlay_traces, xy_columns)


# --------------------------------------------------------------------------------------
# densities

def display_range(*arrays: np.ndarray, span: float = DISPLAY_RANGE) -> tuple[float, float]:
    """A shared colour range: from (max - span) to max over the finite values."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]) if arrays else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return (-1.0, 0.0)
    hi = float(vals.max())
    lo = max(float(vals.min()), hi - span)
    return (lo, hi if hi > lo else lo + 1.0)


def heatmap(hm: dict, overlay: Sequence[dict] | None = None, title: str | None = None,
            zrange: tuple[float, float] | None = None, height: int = 420) -> go.Figure:
    """One log-density heatmap; hm = {'xs', 'ys', 'logp' (len(ys), len(xs)), 'labels'}."""
    z = np.asarray(hm["logp"], dtype=float)
    lo, hi = zrange or display_range(z)
    fig = go.Figure(go.Heatmap(x=hm["xs"], y=hm["ys"], z=np.clip(z, lo, hi), zmin=lo, zmax=hi,
                               colorscale=HEAT_SCALE, colorbar=dict(title="log p"),
                               hovertemplate="(%{x:.2f}, %{y:.2f}): log p = %{z:.2f}<extra></extra>"))
    for tr in overlay_traces(overlay):
        fig.add_trace(tr)
    xl, yl = _labels(hm)
    fig.update_xaxes(title_text=xl, range=[float(np.min(hm["xs"])), float(np.max(hm["xs"]))])
    fig.update_yaxes(title_text=yl, range=[float(np.min(hm["ys"])), float(np.max(hm["ys"]))])
    return base_layout(fig, title, height=height)


def _labels(hm: dict) -> tuple[str, str]:
    lab = hm.get("labels") or ("x", "y")
    if isinstance(lab, dict):
        return lab.get("x", "x"), lab.get("y", "y")
    return str(lab[0]), str(lab[1])


def heatmap_compare(hm_a: dict, hm_b: dict, overlay: Sequence[dict] | None = None,
                    names: tuple[str, str] = ("round a", "round b"), height: int = 400) -> go.Figure:
    """log p under round a, under round b (one shared scale) and b - a (diverging, 0 = white)."""
    za = np.asarray(hm_a["logp"], dtype=float)
    zb = np.asarray(hm_b["logp"], dtype=float)
    if za.shape != zb.shape:
        raise ValueError(f"The two heatmaps differ in shape ({za.shape} vs {zb.shape}); compute them at one resolution.")
    lo, hi = display_range(za, zb)
    # the difference where either density is visible on the shared scale
    diff = np.clip(zb, lo, hi) - np.clip(za, lo, hi)
    finite = diff[np.isfinite(diff)]
    d = float(np.quantile(np.abs(finite), 0.99)) if len(finite) else 1.0
    d = d if d > 0 else 1.0
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"log p, {names[0]}", f"log p, {names[1]}",
                                        f"difference ({names[1]} − {names[0]})"])
    hover = "(%{x:.2f}, %{y:.2f}): %{z:.2f}<extra></extra>"
    for col, z in ((1, za), (2, zb)):
        fig.add_trace(go.Heatmap(x=hm_a["xs"], y=hm_a["ys"], z=np.clip(z, lo, hi), coloraxis="coloraxis",
                                 hovertemplate=hover, name=names[col - 1]), row=1, col=col)
    fig.add_trace(go.Heatmap(x=hm_a["xs"], y=hm_a["ys"], z=np.clip(diff, -d, d), coloraxis="coloraxis2",
                             hovertemplate=hover, name="difference"), row=1, col=3)
    for col in (1, 2, 3):
        for tr in overlay_traces(overlay):
            fig.add_trace(tr, row=1, col=col)
    xl, yl = _labels(hm_a)
    x_rng = [float(np.min(hm_a["xs"])), float(np.max(hm_a["xs"]))]
    y_rng = [float(np.min(hm_a["ys"])), float(np.max(hm_a["ys"]))]
    fig.update_xaxes(title_text=xl, range=x_rng)
    fig.update_yaxes(range=y_rng)
    fig.update_yaxes(title_text=yl, col=1)
    fig.update_layout(
        coloraxis=dict(colorscale=HEAT_SCALE, cmin=lo, cmax=hi,
                       colorbar=dict(title=dict(text="log p", side="right"), x=0.585, xanchor="left",
                                     len=0.9, thickness=12)),
        coloraxis2=dict(colorscale=DIFF_SCALE, cmin=-d, cmax=d, cmid=0.0,
                        colorbar=dict(title=dict(text="Δ log p", side="right"), x=1.0, xanchor="left",
                                      len=0.9, thickness=12)),
    )
    fig = base_layout(fig, None, height=height, subtitles=True)
    fig.update_layout(margin=dict(l=55, r=70, t=45, b=50), showlegend=False)
    # the shared log p bar sits between panel 2 and the difference panel
    domains = ([0.0, 0.265], [0.29, 0.555], [0.69, 0.955])
    fig.update_layout(xaxis=dict(domain=domains[0]), xaxis2=dict(domain=domains[1]),
                      xaxis3=dict(domain=domains[2]))
    for ann, dom in zip(fig.layout.annotations, domains):
        ann.x = (dom[0] + dom[1]) / 2
    return fig


# --------------------------------------------------------------------------------------
# one round at a time (the step-through)

PREVIOUS_COLOR = "rgba(130,130,130,0.28)"


def _round_points(fig: go.Figure, pts, prev, cats, k: int, max_points: int, **pos) -> None:
    """Round k's points over the previous round's, drawn faint behind them."""
    if prev is not None:
        p = xy_columns(prev)[:max_points]
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=f"round {k - 1}",
                                 marker=dict(size=4, color=PREVIOUS_COLOR), legendgroup="previous"), **pos)
    xy = xy_columns(pts)[:max_points]
    if cats is None:
        fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=f"round {k}",
                                 marker=dict(size=4, color=PALETTE[1], opacity=0.7)), **pos)
        return
    cats = np.asarray(cats)[:max_points]
    for j, c in enumerate(sorted(set(cats.tolist()), key=str)):
        m = cats == c
        fig.add_trace(go.Scatter(x=xy[m, 0], y=xy[m, 1], mode="markers", name=f"round {k}: {c}",
                                 marker=dict(size=4, opacity=0.75,
                                             color=CATEGORY_COLORS.get(str(c), PALETTE[j % len(PALETTE)]))), **pos)


def round_frame(k: int, hm: dict | None, points, prev_points=None, overlay: Sequence[dict] | None = None,
                labels: tuple[str, str] = ("x", "y"), colors=None, zrange: tuple[float, float] | None = None,
                ranges: tuple | None = None, max_points: int = 500, height: int = 440) -> go.Figure:
    """Round k: its log-density heatmap (left; a note while it is computed) and its samples
    under the fixed noise, round k-1's faint behind them (right). `zrange` and `ranges` are
    fixed by the caller over all rounds, so that frames differ only where the model did."""
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"log-density, round {k}",
                                        f"samples, round {k}" + (f" over round {k - 1}'s" if prev_points is not None
                                                                 else "")])
    if hm is not None:
        z = np.asarray(hm["logp"], dtype=float)
        lo, hi = zrange or display_range(z)
        fig.add_trace(go.Heatmap(x=hm["xs"], y=hm["ys"], z=np.clip(z, lo, hi), zmin=lo, zmax=hi,
                                 colorscale=HEAT_SCALE, showlegend=False,
                                 colorbar=dict(title=dict(text="log p", side="right"), x=-0.12, xanchor="right",
                                               thickness=12, len=0.9),
                                 hovertemplate="(%{x:.2f}, %{y:.2f}): log p = %{z:.2f}<extra></extra>"), row=1, col=1)
    else:
        fig.add_annotation(text="log-density: being computed in the background", showarrow=False,
                           xref="x domain", yref="y domain", x=0.5, y=0.5, font=dict(color="#666"))
    _round_points(fig, points, prev_points, colors, k, max_points, row=1, col=2)
    for col in (1, 2):
        for tr in overlay_traces(overlay):
            fig.add_trace(tr, row=1, col=col)
    fig.update_xaxes(title_text=labels[0], matches="x")
    fig.update_yaxes(matches="y")
    fig.update_yaxes(title_text=labels[1], col=1)
    if ranges:
        fig.update_xaxes(range=list(ranges[0]))
        fig.update_yaxes(range=list(ranges[1]))
    fig = base_layout(fig, None, height=height, subtitles=True)
    fig.update_layout(margin=dict(l=110, r=20, t=45, b=95), height=height + 40)
    return fig


def pair_scatter(k: int, points, prev_points=None, labels: tuple[str, str] = ("x", "y"),
                 ranges: tuple | None = None, max_points: int = 500, height: int = 380) -> go.Figure:
    """Two chosen columns of round k's samples over round k-1's (a CSV's category view)."""
    fig = go.Figure()
    _round_points(fig, points, prev_points, None, k, max_points)
    fig.update_xaxes(title_text=labels[0])
    fig.update_yaxes(title_text=labels[1])
    if ranges:
        fig.update_xaxes(range=list(ranges[0]))
        fig.update_yaxes(range=list(ranges[1]))
    return legend_room(base_layout(fig, f"{labels[0]} against {labels[1]}, round {k}", height=height))


def class_histogram(shares: dict, k: int, previous: dict | None = None, y_max: float | None = None,
                    height: int = 320) -> go.Figure:
    """Predicted digit classes of round k (bars) beside round k-1's (faint): shares = {'0': 0.1, ...}."""
    classes = [str(d) for d in range(10)]
    fig = go.Figure()
    if previous:
        fig.add_trace(go.Bar(x=classes, y=[float(previous.get(c, 0.0)) for c in classes], name=f"round {k - 1}",
                             marker_color=PREVIOUS_COLOR))
    fig.add_trace(go.Bar(x=classes, y=[float(shares.get(c, 0.0)) for c in classes], name=f"round {k}",
                         marker_color=PALETTE[1]))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="predicted digit", type="category")
    fig.update_yaxes(title_text="share", range=[0.0, float(y_max)] if y_max else None, rangemode="tozero")
    return legend_room(base_layout(fig, f"Digit classes, round {k}", height=height))
