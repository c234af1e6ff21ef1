"""The Fields page (AppTest): for a chosen round and diffusion time, the reward's gradient and
the round's learned change as arrows on one fixed scale, and sample paths animated over t;
runs without a plane of their own columns, or without a round, get one sentence."""
from __future__ import annotations

import json

import numpy as np
import pytest

from apptest_helpers import arr, csv_run, fig_with, figs, opened, tiny_cache
from smeme.services import fields, runs

PAGE = "pages/7_Fields.py"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with tiny_cache(tmp_path_factory.mktemp("fieldscache")) as c:
        yield c


def arrows(at, name: str) -> np.ndarray:
    """The (x, y) vertices of a quiver trace (segments and heads, NaN-separated)."""
    fig = fig_with(at, "reward gradient of round")
    tr = [t for t in fig["data"] if t.get("name") == name][0]
    return np.column_stack([np.asarray(arr(tr["x"]), dtype=float), np.asarray(arr(tr["y"]), dtype=float)])


def test_fields_show_both_arrow_sets_and_paths_for_a_round_and_a_time(cache):
    at = opened(cache["toy"], PAGE)
    assert at.select_slider(key="f_round").value == 2
    fig = fig_with(at, "reward gradient of round 2")
    assert "learned change at t = 0.05" in json.dumps(fig["layout"])
    assert [t.get("name") for t in fig["data"] if t["type"] == "scatter"] == ["reward gradient", "learned change"]
    assert np.isfinite(arrows(at, "reward gradient")).any()
    # the paths player: a frame per time from noise (t = 1) to data (t = 0)
    paths = [f for f in figs(at) if f.get("frames")][0]
    names = [f["name"] for f in paths["frames"]]
    assert names[0] == "1.00" and names[-1] == "0.00" and len(names) == 30
    assert "From noise to data" in json.dumps(paths["layout"])
    assert len(at.markdown) and any("Why they fade at large t" in m.value for m in at.markdown)


def test_the_time_slider_moves_only_the_learned_change(cache):
    at = opened(cache["toy"], PAGE)
    reward, change = arrows(at, "reward gradient"), arrows(at, "learned change")
    at.select_slider(key="f_t").set_value(0.9).run()
    assert not at.exception
    assert "learned change at t = 0.9" in json.dumps(fig_with(at, "reward gradient")["layout"])
    assert np.array_equal(arrows(at, "reward gradient"), reward, equal_nan=True)
    assert not np.array_equal(arrows(at, "learned change"), change, equal_nan=True)
    # one arrow scale for every t: the change at t = 0.9 is what the service computes, scaled alike
    run = runs.open_run(cache["toy"])
    scales = fields.arrow_scales(run, (0, 1))
    want = fields.change_arrows(run, 2, 0.9, (0, 1))
    tip = np.column_stack([want["x"] + want["u"] * scales["change"], want["y"] + want["v"] * scales["change"]])
    capped = np.hypot(want["u"], want["v"]) * scales["change"] > 1.6 * scales["cell"]
    drawn = arrows(at, "learned change")
    segments = drawn[: 3 * len(tip)].reshape(-1, 3, 2)  # (tail, tip, gap) per arrow, then the heads
    assert np.allclose(segments[~capped, 1], tip[~capped], atol=1e-9)


def test_another_round_redraws_the_fields(cache):
    at = opened(cache["toy"], PAGE)
    at.select_slider(key="f_round").set_value(1).run()
    assert not at.exception
    assert "reward gradient of round 1" in json.dumps(fig_with(at, "reward gradient")["layout"])
    assert any("round 0's log-density" in c.value for c in at.caption)


def test_runs_without_fields_say_why(cache):
    at = opened(cache["tri"], PAGE)
    assert any("maps its columns to other features" in i.value for i in at.info)
    assert not figs(at)
    at = opened(csv_run(cache["root"]), PAGE)
    assert any("only its pre-trained round" in i.value for i in at.info)


def test_a_csv_of_three_columns_draws_a_chosen_pair(cache):
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.services import settings
    folder = csv_run(cache["root"], name="csv3-explored")
    run = runs.open_run(folder)
    run_rounds(run, 1, ExploreConfig(**settings.explore_defaults(run)))
    at = opened(folder, PAGE)
    assert any("held at their medians" in c.value for c in at.caption)
    at.selectbox(key="f_col_y").set_value(2).run()
    assert not at.exception
    fig = fig_with(at, "reward gradient of round 1")
    assert fig["layout"]["xaxis"]["title"]["text"] == "height" and fig["layout"]["yaxis"]["title"]["text"] == "age"
    # the arrows are the pair's components of the 3-D field, on a grid over that pair
    want = fields.reward_arrows(runs.open_run(folder), 1, (0, 2))
    assert np.allclose(np.unique(want["y"]), np.linspace(run.domain.low[2], run.domain.high[2], fields.GRID))
    at.selectbox(key="f_col_y").set_value(0).run()
    assert any("two different columns" in i.value for i in at.info)
