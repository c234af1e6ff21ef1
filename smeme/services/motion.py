"""Figures that move in the browser, and the projector style every figure can take.

- `rounds_player`: every round of a run in ONE Plotly figure, a frame per round (heatmap,
  samples over the previous round's, category bars), with its own slider and Play button:
  the browser plays it, so no frame waits for the server and none is skipped.
- `field_figure`: a round's reward gradient and learned change of the score as arrows over
  a log-density heatmap; `paths_player`: sample paths from noise to data, a frame per time.
- `projector`: larger points, lines and fonts, the previous round drawn darker.
"""
from __future__ import annotations

import copy

import numpy as np
import plotly.figure_factory as ff
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .density_figures import PREVIOUS_COLOR, display_range
from .figure_style import CATEGORY_COLORS, HEAT_SCALE, PALETTE, overlay_traces

SPEEDS = {"slow": 1600, "normal": 900, "fast": 400}  # milliseconds a frame stays on screen
PROJECTOR_PREVIOUS = "rgba(60,60,60,0.6)"  # the previous round on a projector: dark enough to see
PROJECTOR_FONT = 18
ARROW_CAP = 1.6  # arrows longer than this many grid cells are drawn this long (the text says so)


def _controls(names: list[str], duration: int, prefix: str) -> dict:
    """A Play / Pause pair and a slider over the frames `names` (plotly.js runs both)."""
    step = lambda n: dict(method="animate", label=n, args=[[n], dict(mode="immediate", frame=dict(  # noqa: E731
        duration=duration, redraw=True), transition=dict(duration=0))])
    # Play always plays every frame from the first (a class watches the whole run again)
    play = dict(label="Play", method="animate", args=[list(names), dict(mode="immediate", frame=dict(
        duration=duration, redraw=True), transition=dict(duration=0))])
    pause = dict(label="Pause", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0,
                                                                                                  redraw=False))])
    return dict(
        updatemenus=[dict(type="buttons", direction="left", x=0.0, xanchor="left", y=-0.1, yanchor="top",
                          pad=dict(t=0, r=10), showactive=False, buttons=[play, pause])],
        sliders=[dict(active=len(names) - 1, x=0.14, len=0.86, y=-0.07, yanchor="top", pad=dict(t=0),
                      currentvalue=dict(prefix=prefix, visible=True), steps=[step(n) for n in names])])


def _point_colors(cats, n: int) -> list[str] | str:
    if cats is None:
        return PALETTE[1]
    order = sorted(set(np.asarray(cats).tolist()), key=str)
    pick = {c: CATEGORY_COLORS.get(str(c), PALETTE[i % len(PALETTE)]) for i, c in enumerate(order)}
    return [pick[c] for c in np.asarray(cats)[:n]]


def _frame_traces(f: dict, zrange, max_points: int, views: int) -> list:
    """The moving traces of one round, in a fixed order: heatmap, previous points, points,
    then (previous, current) bars per category view."""
    hm = f.get("hm")
    z = np.full((2, 2), np.nan) if hm is None else np.clip(np.asarray(hm["logp"], dtype=float), *zrange)
    heat = go.Heatmap(x=None if hm is None else hm["xs"], y=None if hm is None else hm["ys"], z=z,
                      zmin=zrange[0], zmax=zrange[1], colorscale=HEAT_SCALE, showscale=False,
                      hovertemplate="(%{x:.2f}, %{y:.2f}): log p = %{z:.2f}<extra></extra>")
    prev = np.zeros((0, 2)) if f.get("prev_points") is None else np.asarray(f["prev_points"])[:max_points, :2]
    pts = np.asarray(f["points"])[:max_points, :2]
    out = [heat,
           go.Scatter(x=prev[:, 0], y=prev[:, 1], mode="markers", name="previous round",
                      marker=dict(size=4, color=PREVIOUS_COLOR), showlegend=False),
           go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=f"round {f['k']}", showlegend=False,
                      marker=dict(size=4, opacity=0.75, color=_point_colors(f.get("colors"), max_points)))]
    for v in range(views):
        cats, now, before = f["bars"][v]
        out.append(go.Bar(x=cats, y=[before.get(c, 0.0) for c in cats], marker_color=PREVIOUS_COLOR,
                          name="share, previous round", showlegend=v == 0, legendgroup="before"))
        out.append(go.Bar(x=cats, y=[now.get(c, 0.0) for c in cats], marker_color=PALETTE[1],
                          name="share, this round", showlegend=v == 0, legendgroup="now"))
    return out


def rounds_player(frames: list[dict], zrange=None, ranges=None, labels=("x", "y"), overlay=None,
                  bar_titles: list[tuple[str, float]] = (), speed: str = "normal", max_points: int = 500,
                  height: int = 440, heat_note: str = "log-density: being computed in the background") -> go.Figure:
    """One figure with a frame per round; frames = [{'k', 'hm', 'points', 'prev_points',
    'colors', 'bars': [(categories, shares now, shares before)] per view}], in round order.
    `zrange`, `ranges` and each bar view's (title, y_max) are fixed over every frame."""
    views = len(bar_titles)
    maps = [f["hm"]["logp"] for f in frames if f.get("hm") is not None]
    zrange = zrange or (display_range(*maps) if maps else (-1.0, 0.0))
    rows = 2 if views else 1
    specs = [[{}, {}]] + ([[{}, {}] if views > 1 else [{"colspan": 2}, None]] if views else [])
    titles = ["log-density", "samples (the previous round's behind)"] + [t for t, _ in bar_titles]
    fig = make_subplots(rows=rows, cols=2, specs=specs, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.16, row_heights=[0.62, 0.38] if views else None)
    pos = [(1, 1), (1, 2), (1, 2)] + [(2, 1 + v) for v in range(views) for _ in range(2)]
    last = frames[-1]
    for tr, (r, c) in zip(_frame_traces(last, zrange, max_points, views), pos):
        fig.add_trace(tr, row=r, col=c)
    moving = list(range(len(fig.data)))
    for col in (1, 2):
        for tr in overlay_traces(overlay):
            fig.add_trace(tr, row=1, col=col)
    if last.get("colors") is not None:  # a legend of the categories' colours (static)
        for i, c in enumerate(sorted(set(np.asarray(last["colors"]).tolist()), key=str)):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=str(c),
                                     marker=dict(size=8, color=CATEGORY_COLORS.get(str(c), PALETTE[i % len(PALETTE)]))),
                          row=1, col=2)
    if not maps:
        fig.add_annotation(text=heat_note, showarrow=False, xref="x domain", yref="y domain", x=0.5, y=0.5,
                           font=dict(color="#666"))
    fig.frames = [go.Frame(name=str(f["k"]), traces=moving, data=_frame_traces(f, zrange, max_points, views))
                  for f in frames]
    fig.update_xaxes(title_text=labels[0], row=1)
    fig.update_yaxes(title_text=labels[1], row=1, col=1)
    if maps:
        fig.update_xaxes(matches="x", row=1, col=2)
        fig.update_yaxes(matches="y", row=1, col=2)
    if ranges:
        fig.update_xaxes(range=list(ranges[0]), row=1)
        fig.update_yaxes(range=list(ranges[1]), row=1)
    for v, (_, y_max) in enumerate(bar_titles):
        fig.update_yaxes(title_text="share" if v == 0 else None, range=[0.0, float(y_max)], row=2, col=1 + v)
    fig.update_layout(barmode="group", template="plotly_white", height=height + (300 if views else 0),
                      margin=dict(l=60, r=20, t=40, b=120), showlegend=True,
                      legend=dict(orientation="h", y=1.06, x=1, xanchor="right", yanchor="bottom"),
                      **_controls([str(f["k"]) for f in frames], SPEEDS.get(speed, SPEEDS["normal"]), "Round "))
    return fig


def _quiver(a: dict, scale: float, cell: float, color: str, name: str) -> list:
    u, v = np.asarray(a["u"], dtype=float) * scale, np.asarray(a["v"], dtype=float) * scale
    length = np.hypot(u, v)
    shrink = np.where(length > ARROW_CAP * cell, ARROW_CAP * cell / np.maximum(length, 1e-300), 1.0)
    q = ff.create_quiver(np.asarray(a["x"]), np.asarray(a["y"]), u * shrink, v * shrink, scale=1.0,
                         arrow_scale=0.3, name=name, line=dict(color=color, width=1.6))
    return list(q.data)


def field_figure(hm: dict, reward: dict, change: dict, scales: dict, t: float, k: int,
                 labels=("x", "y"), zrange=None, height: int = 470) -> go.Figure:
    """Two panels over round k-1's log-density: the reward's gradient (left) and the learned
    change of the score at time t (right), each on its fixed scale over every round."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05, subplot_titles=[
        f"reward gradient of round {k}: −λ s_{reward.get('source', k - 1)}(x, t_r)", f"learned change at t = {t:g}: s_{k}(x, t) − s_{k - 1}(x, t)"])
    z = np.asarray(hm["logp"], dtype=float)
    lo, hi = zrange or display_range(z)
    for col in (1, 2):
        fig.add_trace(go.Heatmap(x=hm["xs"], y=hm["ys"], z=np.clip(z, lo, hi), zmin=lo, zmax=hi,
                                 colorscale="Greys", reversescale=True, showscale=False, opacity=0.55,
                                 hovertemplate="(%{x:.2f}, %{y:.2f}): log p = %{z:.2f}<extra></extra>"),
                      row=1, col=col)
    for tr in _quiver(reward, scales["reward"], scales["cell"], PALETTE[3], "reward gradient"):
        fig.add_trace(tr, row=1, col=1)
    for tr in _quiver(change, scales["change"], scales["cell"], PALETTE[0], "learned change"):
        fig.add_trace(tr, row=1, col=2)
    xr = [float(np.min(hm["xs"])), float(np.max(hm["xs"]))]
    yr = [float(np.min(hm["ys"])), float(np.max(hm["ys"]))]
    fig.update_xaxes(title_text=labels[0], range=xr)
    fig.update_yaxes(range=yr)
    fig.update_yaxes(title_text=labels[1], col=1)
    fig.update_layout(template="plotly_white", height=height, showlegend=False, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def paths_player(hm: dict, paths: dict, k: int, labels=("x", "y"), frames: int = 30, speed: str = "normal",
                 zrange=None, height: int = 520) -> go.Figure:
    """Sample paths from noise (t = 1) to data (t = 0) under one fixed noise, through round k
    (orange) and round k-1 (grey), a frame per time; the trail behind each sample is its path."""
    t, now, before = paths["t"], paths["now"], paths["before"]
    idx = np.unique(np.linspace(0, len(t) - 1, min(frames, len(t))).round().astype(int))
    z = np.asarray(hm["logp"], dtype=float)
    lo, hi = zrange or display_range(z)

    def moving(i):
        trail = np.concatenate([np.vstack([now[: i + 1, j], [[np.nan, np.nan]]]) for j in range(now.shape[1])])
        return [go.Scatter(x=trail[:, 0], y=trail[:, 1], mode="lines", line=dict(color=PALETTE[1], width=1.2),
                           name=f"paths, round {k}", hoverinfo="skip"),
                go.Scatter(x=before[i, :, 0], y=before[i, :, 1], mode="markers", name=f"round {k - 1}",
                           marker=dict(size=8, color=PREVIOUS_COLOR)),
                go.Scatter(x=now[i, :, 0], y=now[i, :, 1], mode="markers", name=f"round {k}",
                           marker=dict(size=8, color=PALETTE[1], line=dict(color="white", width=1)))]
    fig = go.Figure([go.Heatmap(x=hm["xs"], y=hm["ys"], z=np.clip(z, lo, hi), zmin=lo, zmax=hi,
                                colorscale=HEAT_SCALE, showscale=False, hoverinfo="skip")] + moving(int(idx[-1])))
    names = [f"{t[i]:.2f}" for i in idx]
    fig.frames = [go.Frame(name=n, traces=[1, 2, 3], data=moving(int(i))) for n, i in zip(names, idx)]
    span = lambda a, b: [float(min(np.min(a), np.nanmin(b))), float(max(np.max(a), np.nanmax(b)))]  # noqa: E731
    fig.update_xaxes(title_text=labels[0], range=span(hm["xs"], np.concatenate([now[..., 0], before[..., 0]])))
    fig.update_yaxes(title_text=labels[1], range=span(hm["ys"], np.concatenate([now[..., 1], before[..., 1]])))
    fig.update_layout(template="plotly_white", height=height, margin=dict(l=60, r=20, t=50, b=120),
                      title=dict(text=f"From noise to data: {now.shape[1]} samples, one fixed noise"),
                      legend=dict(orientation="h", y=1.0, x=1, xanchor="right", yanchor="bottom"),
                      **_controls(names, SPEEDS.get(speed, SPEEDS["normal"]), "t = "))
    return fig


def projector(fig: go.Figure) -> go.Figure:
    """A copy of `fig` for a projector: fonts PROJECTOR_FONT, markers and lines about twice
    as large, the previous round (PREVIOUS_COLOR) drawn dark; frames too."""
    out = go.Figure(copy.deepcopy(fig.to_dict()))
    for trace in list(out.data) + [t for fr in (out.frames or []) for t in fr.data]:
        marker = getattr(trace, "marker", None)
        if marker is not None:
            size = getattr(marker, "size", None)
            if isinstance(size, (int, float)):
                marker.size = size * 1.8
            if getattr(marker, "color", None) == PREVIOUS_COLOR:
                marker.color = PROJECTOR_PREVIOUS
        line = getattr(trace, "line", None)
        if line is not None and isinstance(getattr(line, "width", None), (int, float)):
            line.width = line.width * 1.6
    out.update_layout(font=dict(size=PROJECTOR_FONT))
    return out
