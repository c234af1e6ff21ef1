"""Rounds play in the browser (AppTest): one figure with a frame per round (heatmap, samples
over the previous round's, category bars) and its own slider and Play button; a speed
control; the sidebar's projector toggle restyles the figures of every page."""
from __future__ import annotations

import json

import numpy as np
import pytest

from apptest_helpers import SLOW_TIMEOUT, app, arr, csv_run, figs, opened, tiny_cache
from smeme.services import motion, runs
from smeme.services.figures import PREVIOUS_COLOR


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with tiny_cache(tmp_path_factory.mktemp("playcache")) as c:
        yield c


def player(at) -> dict:
    return [f for f in figs(at) if f.get("frames")][0]


def test_the_rounds_figure_has_a_frame_per_round_on_fixed_axes(cache):
    at = opened(cache["toy"], "pages/5_Rounds.py")
    fig = player(at)
    rounds = runs.open_run(cache["toy"]).rounds()
    assert [f["name"] for f in fig["frames"]] == [str(k) for k in rounds] == ["0", "1", "2"]
    assert [s["label"] for s in fig["layout"]["sliders"][0]["steps"]] == ["0", "1", "2"]
    assert [b["label"] for b in fig["layout"]["updatemenus"][0]["buttons"]] == ["Play", "Pause"]
    heat = [f["data"][0] for f in fig["frames"]]
    assert all(h["type"] == "heatmap" for h in heat)
    assert len({(h["zmin"], h["zmax"]) for h in heat}) == 1  # one colour scale for every round
    # frame k shows round k's points over round k-1's: the previous points are the last frame's
    pts = lambda f, i: (arr(f["data"][i]["x"]), arr(f["data"][i]["y"]))  # noqa: E731
    for before, now in zip(fig["frames"], fig["frames"][1:]):
        assert pts(now, 1) == pts(before, 2)
    assert pts(fig["frames"][0], 1) == ([], [])
    # the category bars move with the frames: round k's shares, round k-1's beside them
    bars = [d for d in fig["frames"][2]["data"] if d["type"] == "bar"]
    m = runs.open_run(cache["toy"]).metrics()
    shares = dict(zip(arr(bars[1]["x"]), arr(bars[1]["y"])))
    assert abs(shares["sparse"] - m[2]["sparse_share"]) < 1e-9
    assert "Where the samples land" in json.dumps(fig["layout"])
    assert fig["layout"]["xaxis"]["range"] and fig["layout"]["yaxis"]["range"]


def test_the_speed_control_sets_the_frame_duration(cache):
    at = opened(cache["toy"], "pages/5_Rounds.py")
    duration = lambda: player(at)["layout"]["updatemenus"][0]["buttons"][0]["args"][1]["frame"]["duration"]  # noqa: E731
    assert duration() == motion.SPEEDS["normal"]
    at.select_slider(key="r_speed").set_value("fast").run()
    assert not at.exception and duration() == motion.SPEEDS["fast"]
    at.select_slider(key="r_speed").set_value("slow").run()
    assert duration() == motion.SPEEDS["slow"] > motion.SPEEDS["fast"]


def test_triangles_play_both_category_views(cache):
    at = opened(cache["tri"], "pages/5_Rounds.py")
    fig = player(at)
    assert [f["name"] for f in fig["frames"]] == ["0", "1"]
    text = json.dumps(fig["layout"])
    assert "Side type" in text and "Angle type" in text
    assert sum(d["type"] == "bar" for d in fig["frames"][1]["data"]) == 4


def test_the_projector_toggle_restyles_every_page(cache):
    # the toggle lives in the sidebar (AppTest draws the sidebar with app.py, not with a page alone)
    at = opened(cache["toy"])
    assert not at.toggle(key="projector").value
    assert all(f["layout"].get("font", {}).get("size") != motion.PROJECTOR_FONT for f in figs(at))
    at.toggle(key="projector").set_value(True).run()
    assert not at.exception and figs(at)
    assert all(f["layout"]["font"]["size"] == motion.PROJECTOR_FONT for f in figs(at))
    # the pages read the toggle's session key: the Rounds player grows its points and darkens round k-1
    plain = player(opened(cache["toy"], "pages/5_Rounds.py"))
    at = app(cache["toy"], SLOW_TIMEOUT)
    at.session_state["projector"] = True
    for page in ("pages/5_Rounds.py", "pages/1_Model.py", "pages/7_Fields.py"):
        at.switch_page(page).run()
        assert not at.exception and figs(at)
        assert all(f["layout"]["font"]["size"] == motion.PROJECTOR_FONT for f in figs(at)), page
        if page.endswith("Rounds.py"):
            big = player(at)
            size = lambda f: f["frames"][1]["data"][2]["marker"]["size"]  # noqa: E731
            assert size(big) > size(plain)
            assert plain["frames"][1]["data"][1]["marker"]["color"] == PREVIOUS_COLOR
            assert big["frames"][1]["data"][1]["marker"]["color"] == motion.PROJECTOR_PREVIOUS  # darker


def test_a_csv_run_plays_a_chosen_pair_of_columns(cache):
    folder = csv_run(cache["root"])
    at = opened(folder, "pages/5_Rounds.py")
    assert any("only the pre-trained round" in i.value for i in at.info)
    at.selectbox(key="r_col_y").set_value(2).run()
    assert not at.exception
    fig = player(at)
    assert len(fig["frames"]) == 1
    assert fig["layout"]["xaxis2"]["title"]["text"] == "height"
    assert "first two columns" in json.dumps(fig["layout"]["annotations"])
    y = np.asarray(arr(fig["frames"][0]["data"][2]["y"]), dtype=float)
    from smeme.services import cached
    assert np.allclose(y, cached.samples(runs.open_run(folder), 0)[: len(y), 2])
