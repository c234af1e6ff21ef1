"""The Compare page: toy heatmaps, their difference and the displacement under the same
noise; triangles' types, validity and shapes.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations

import json

from apptest_helpers import app, fig_text, figs, metrics, settle
from smeme.services import jobs, runs


def test_compare_toy_heatmaps_difference_and_displacement(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/3_Compare.py").run()
    assert not at.exception
    assert at.selectbox(key="c_a_toy-default").value == 0
    latest = runs.open_run(cache["toy"]).latest_round
    assert at.selectbox(key="c_b_toy-default").value == latest
    at.select_slider(key="c_res").set_value(32).run()
    for _ in range(3):  # a heatmap job of the first resolution may still be running: then the next
        settle(at)
        if "difference" in fig_text(at):
            break
    text = fig_text(at)
    assert f"difference (round {latest} − round 0)" in text
    heat = [f for f in figs(at) if sum(t.get("type") == "heatmap" for t in f["data"]) == 3][0]
    assert heat["layout"]["coloraxis2"]["cmid"] == 0
    assert any(t.get("name") == "dense square" for t in heat["data"])  # support outline
    assert "Same initial noise" in text and "moved" in text
    assert "Entropy and surprise per round" in text
    m = metrics(at)
    assert {"Entropy (k-NN)", "Off support", "Sparse share"} <= set(m)
    assert any(md.value.startswith(f"**round {latest}**") for md in at.markdown)
    labels = {b.label for b in at.get("download_button")}
    assert "Metrics (JSON)" in labels and f"Samples of round {latest} (CSV)" in labels
    # another round: its heatmap is computed in the background, then drawn
    at.selectbox(key="c_b_toy-default").set_value(1).run()
    settle(at)
    assert "difference (round 1 − round 0)" in fig_text(at)
    # back to a round with cached results: drawn at once, no job started
    last_job = jobs.get(cache["toy"], "heatmap")
    at.selectbox(key="c_b_toy-default").set_value(latest).run()
    assert f"difference (round {latest} − round 0)" in fig_text(at)
    assert jobs.get(cache["toy"], "heatmap") is last_job


def test_compare_triangles_shows_types_validity_and_triangles(cache):
    at = app(cache["tri"]).run()
    at.switch_page("pages/3_Compare.py").run()
    settle(at)
    text = fig_text(at)
    for title in ("Side type", "Angle type", "Validity", "A few samples, same noise", "u = a/c",
                  "right (u^2 + v^2 = 1)", "isosceles (u = v)", "equilateral"):
        assert title in text, title
    bars = [f for f in figs(at) if "Side type" in json.dumps(f["layout"])][0]
    assert all(t["type"] == "bar" and "error_y" in t for t in bars["data"])
    assert len(bars["data"]) == len(runs.open_run(cache["tri"]).rounds())
