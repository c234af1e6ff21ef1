"""Plotly figure builders: right traces, shapes, scales (no browser)."""
import numpy as np
import pandas as pd
import pytest

from smeme.services import figures


def _hm(shift=0.0, n=20):
    xs = np.linspace(-1, 1, n)
    ys = np.linspace(-0.5, 0.5, n // 2)
    gx, gy = np.meshgrid(xs, ys)
    return {"xs": xs, "ys": ys, "logp": -(gx - shift) ** 2 - gy**2, "labels": ("x", "y")}


OVERLAY = [{"name": "square", "x": [0, 1, 1, 0, 0], "y": [0, 0, 1, 1, 0], "mode": "lines"},
           {"name": "equilateral", "x": [1], "y": [1], "mode": "markers"}]


def test_loss_curve_raw_and_smoothed():
    fig = figures.loss_curve([(i, 1.0 / (i + 1)) for i in range(100)])
    assert [t.name for t in fig.data] == ["loss at each step", "loss (moving mean of 25 steps)"]
    assert len(fig.data[0].x) == 100
    assert fig.layout.yaxis.type == "log"
    assert len(figures.loss_curve([]).data) == 1  # empty history still draws
    assert len(figures.loss_curve([0.5, 0.4, 0.3]).data) == 1  # no "mean of 1"


def test_loss_curve_log_ticks_are_labelled_in_full():
    # 1 .. 0.01 spans two decades: one tick per decade, no bare '2' / '5' between them
    fig = figures.loss_curve([(i, 1.0 / (i + 1)) for i in range(100)])
    assert list(fig.layout.yaxis.tickvals) == [0.01, 0.1, 1.0]
    assert list(fig.layout.yaxis.ticktext) == ["0.01", "0.1", "1"]
    # within one decade: at least three ticks, written out (1-2-5 steps, else 1..9, else across the range)
    assert figures.log_ticks(0.15, 3.0) == [0.2, 0.5, 1.0, 2.0]
    assert figures.log_ticks(0.15, 0.6) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert figures.log_ticks(0.31, 0.39) == [0.31, 0.335, 0.361, 0.39]


def test_scatter_panels_share_axes_and_overlay():
    rng = np.random.default_rng(0)
    fig = figures.scatter_panels([("data", rng.normal(size=(50, 2))), ("model", rng.normal(size=(40, 2)))],
                                 overlay=OVERLAY, labels=("x", "y"))
    assert [a.text for a in fig.layout.annotations] == ["data", "model"]
    pts = [t for t in fig.data if t.mode == "markers" and t.name in ("data", "model")]
    assert sorted(len(t.x) for t in pts) == [40, 50]
    assert sum(t.name == "square" for t in fig.data) == 2  # overlay on both panels
    cats = figures.scatter_panels([("m", rng.normal(size=(6, 2)))], colors=[np.array(list("aabbbc"))])
    assert sorted(t.name for t in cats.data) == ["a", "b", "c"]


def test_heatmap_compare_diverging_centred_scale():
    a, b = _hm(0.0), _hm(0.3)
    fig = figures.heatmap_compare(a, b, overlay=OVERLAY, names=("round 0", "round 2"))
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 3
    assert heat[0].coloraxis == heat[1].coloraxis == "coloraxis" and heat[2].coloraxis == "coloraxis2"
    ca2 = fig.layout.coloraxis2
    assert ca2.cmid == 0 and ca2.cmin == -ca2.cmax
    assert "RdBu" in str(ca2.colorscale) or ca2.colorscale[0][1] != ca2.colorscale[-1][1]
    diff = np.asarray(heat[2].z)
    np.testing.assert_allclose(diff, np.clip(np.asarray(heat[1].z) - np.asarray(heat[0].z), ca2.cmin, ca2.cmax))
    assert "difference (round 2 − round 0)" in [x.text for x in fig.layout.annotations]
    assert sum(t.name == "square" for t in fig.data) == 3
    with pytest.raises(ValueError, match="shape"):
        figures.heatmap_compare(_hm(n=20), _hm(n=10))


def test_heatmap_clips_very_low_logp_for_display():
    hm = _hm()
    hm["logp"][0, 0] = -1e6
    fig = figures.heatmap(hm, overlay=OVERLAY, title="pre-trained")
    z = np.asarray(fig.data[0].z)
    assert z.min() >= fig.data[0].zmin and fig.data[0].zmax - fig.data[0].zmin <= figures.DISPLAY_RANGE + 1e-9
    assert fig.layout.xaxis.title.text == "x"


def test_displacement_segments_pair_samples():
    a = np.array([[0, 0], [1, 1.0]])
    b = np.array([[0, 1], [2, 1.0]])
    fig = figures.displacement(a, b, names=("round 0", "round 1"))
    seg = fig.data[0]
    assert list(seg.x[:2]) == [0, 0] and list(seg.y[:2]) == [0, 1] and np.isnan(seg.x[2])
    assert [t.name for t in fig.data[1:3]] == ["round 0", "round 1"]


def test_timeline_skips_missing_columns_and_draws_error_bars():
    df = pd.DataFrame({"round": [0, 1, 2], "entropy": [1.0, 1.1, 1.2], "off_support": [0.01, 0.02, 0.02],
                       "sparse_share": [0.1, 0.12, 0.14], "sparse_share_lo": [0.09, 0.11, 0.13],
                       "sparse_share_hi": [0.11, 0.13, 0.15]})
    fig = figures.timeline(df, [("Entropy", [("entropy", "k-NN")]), ("Off support", [("off_support", "off")]),
                                ("Missing", [("nope", "x")]), ("Sparse", [("sparse_share", "sparse")])])
    assert [a.text for a in fig.layout.annotations] == ["Entropy", "Off support", "Sparse"]
    assert list(fig.data[0].y) == [1.0, 1.1, 1.2]
    np.testing.assert_allclose(fig.data[2].error_y.array, [0.01, 0.01, 0.01])


def test_category_bars_grouped_with_ci():
    shares = pd.DataFrame({"round": [0, 0, 1, 1], "category": ["iso", "scalene"] * 2,
                           "share": [0.2, 0.8, 0.3, 0.7], "lo": [0.15, 0.75, 0.25, 0.65],
                           "hi": [0.25, 0.85, 0.35, 0.75]})
    fig = figures.category_bars(shares)
    assert fig.layout.barmode == "group" and [t.name for t in fig.data] == ["round 0", "round 1"]
    np.testing.assert_allclose(fig.data[1].error_y.arrayminus, [0.05, 0.05])


def test_triangle_geometry_and_gallery():
    v = figures.triangle_vertices([3, 4, 5])
    sides = sorted(np.linalg.norm(v[i] - v[(i + 1) % 3]) for i in range(3))
    np.testing.assert_allclose(sides, [3, 4, 5])
    assert figures.triangle_vertices([1, 1, 3]) is None
    fig = figures.triangle_gallery({"round 0": np.array([[3, 4, 5], [1, 1, 1]]), "round 1": np.array([[1, 1, 3]])})
    assert len(fig.data) == 2  # two valid triangles drawn
    assert any(a.text == "invalid" for a in fig.layout.annotations)


def test_loss_curve_thins_long_histories_but_keeps_the_ends_and_the_mean():
    losses = [(i, 1.0 / (i + 1)) for i in range(3000)]
    fig = figures.loss_curve(losses, smooth=10, max_points=200)
    raw, mean = fig.data
    assert len(raw.x) == 200 and raw.x[0] == 0 and raw.x[-1] == 2999
    assert raw.y[-1] == pytest.approx(1 / 3000)
    # the running mean is taken before thinning: the last point averages the last 10 losses
    assert mean.y[-1] == pytest.approx(np.mean([1.0 / (i + 1) for i in range(2990, 3000)]))


def test_class_histogram_and_budget_lines():
    fig = figures.class_histogram({"0": 0.5, "7": 0.5}, 2, previous={"0": 1.0}, y_max=1.0)
    assert [t.name for t in fig.data] == ["round 1", "round 2"]
    assert list(fig.data[1].y) == [0.5, 0, 0, 0, 0, 0, 0, 0.5, 0, 0] and list(fig.layout.yaxis.range) == [0, 1]
    rows = [{"rounds": 2, "iterations_per_round": 5, "entropy_knn_per_round": [1.0, 1.2, None]},
            {"rounds": 1, "iterations_per_round": 10, "entropy_knn_per_round": [1.0, 1.1]}]
    fig = figures.budget_lines(rows)
    assert [t.name for t in fig.data] == ["K = 1 (10 iterations a round)", "K = 2 (5 iterations a round)"]
    assert list(fig.data[1].x) == [0, 1, 2] and np.isnan(fig.data[1].y[2])  # a missing entropy is a gap
