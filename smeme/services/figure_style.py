"""The figures' shared look: palette, colour scales, Plotly's chart config and the layout,
legend and overlay helpers every builder in smeme.services.figures and
smeme.services.density_figures uses."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]
OVERLAY_COLOR = "#111111"
HEAT_SCALE = "Viridis"
DIFF_SCALE = "RdBu_r"  # red = more likely under round b, blue = less; white at 0
DISPLAY_RANGE = 12.0  # nats of log-density shown below the maximum (lower is clipped)

# SVG scatter (not WebGL): at these sizes (<= 1,000 points a panel) WebGL was no faster in
# software-rendered Chromium (bench_app.py, 2026-11-26), and SVG works without WebGL.
# Config for st.plotly_chart: keep the modebar, and make its PNG button export at 2x.
PLOTLY_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "smeme"},
}


CATEGORY_COLORS = {
    "dense": "#4C78A8", "sparse": "#54A24B", "off": "#E45756",
    "acute": "#4C78A8", "right": "#F58518", "obtuse": "#54A24B",
    "scalene": "#4C78A8", "isosceles": "#F58518", "equilateral": "#B279A2", "invalid": "#E45756",
}


def base_layout(fig: go.Figure, title: str | None = None, height: int = 380, subtitles: bool = False) -> go.Figure:
    """Common look: title top-left, legend under the plot (never over titles)."""
    top = (45 if title else 20) + (25 if subtitles else 0)
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left", y=1.0, yanchor="top", yref="container", pad=dict(t=8)) if title else None,
        height=height, margin=dict(l=55, r=20, t=top, b=50),
        template="plotly_white",
        legend=dict(orientation="h", yanchor="top", y=-0.16, x=0, xanchor="left"),
    )
    return fig


def legend_room(fig: go.Figure) -> go.Figure:
    """Grow the bottom margin (and height) when a legend is shown under the plot."""
    shown = [t for t in fig.data if t.showlegend is not False and t.name]
    if shown and fig.layout.showlegend is not False:
        fig.update_layout(margin=dict(b=95), height=(fig.layout.height or 380) + 40)
    return fig


def overlay_traces(overlay: Sequence[dict] | None, showlegend: bool = False) -> list[go.Scatter]:
    """Scatter traces of overlay items ({'x', 'y', optional 'name', 'mode', 'color', 'dash', 'symbol'}),
    dashed in turn so that overlapping items stay distinguishable."""
    traces = []
    dashes = ["solid", "dash", "dot", "dot", "dashdot"]
    for i, item in enumerate(overlay or []):
        mode = item.get("mode", "lines")
        item = {"dash": dashes[i % len(dashes)], **item}
        traces.append(go.Scatter(
            x=list(item["x"]), y=list(item["y"]), mode=mode, name=item.get("name", "overlay"),
            line=dict(color=item.get("color", OVERLAY_COLOR), width=1.5, dash=item.get("dash", "solid")),
            marker=dict(color=item.get("color", OVERLAY_COLOR), size=9, symbol=item.get("symbol", "star")),
            hoverinfo="name", showlegend=showlegend, legendgroup="overlay",
        ))
    return traces


def xy_columns(points) -> np.ndarray:
    """The first two columns of `points` as floats, (n, 2) (the plotting plane)."""
    p = np.asarray(points, dtype=float)
    return p.reshape(len(p), -1)[:, :2] if len(p) else np.zeros((0, 2))
