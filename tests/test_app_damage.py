"""Damaged runs in the app: a damaged metrics.json or round file is named, the earlier
rounds and the other runs keep working, and nothing damaged is overwritten.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from apptest_helpers import PAGES, app, every_page_works, fig_text, metrics, warnings_text
from smeme.services import launch, runs, settings


def test_a_damaged_metrics_json_is_listed_as_damaged_and_the_other_runs_work(cache):
    (Path(cache["tri"]) / "metrics.json").write_text('{"rounds": {"0": ')
    at = every_page_works(app())
    at.switch_page("app.py").run()
    table = at.dataframe[0].value
    status = dict(zip(table["run"], table["status"]))
    assert status["tri"].startswith("damaged: metrics.json in tri is damaged"), status
    assert metrics(at)["Data set"] == "toy"  # the default run opens as before
    # opening the damaged run says what is wrong and how to recover, on every page
    assert "tri (damaged)" in at.selectbox(key="home_pick").options
    at.selectbox(key="home_pick").set_value(cache["tri"])
    at.button(key="home_open").click().run()
    assert not at.exception
    note = warnings_text(at)
    assert "metrics.json is damaged, so its rounds cannot be listed" in note, note
    assert "2 weights file(s) are still on disk" in note and "pre-train it again" in note
    assert cache["root"].as_posix() not in note  # the server's paths stay on the server
    every_page_works(at)
    for page in PAGES[:3]:
        at.switch_page(page).run()
        assert "metrics.json is damaged" in warnings_text(at), page


@pytest.mark.parametrize("damage", ["garbage", "foreign"])
def test_a_damaged_round_file_leaves_the_earlier_rounds_working(cache, damage):
    target = Path(cache["toy"]) / "round_2.safetensors"
    if damage == "garbage":
        target.write_bytes(b"\x00not a safetensors file")
        why = "is damaged"
    else:  # another run's weights (the triangles model has other shapes)
        shutil.copy(Path(cache["tri"]) / "round_1.safetensors", target)
        why = "tensor"
    at = app(cache["toy"])
    every_page_works(at)
    at.switch_page("app.py").run()
    note = warnings_text(at)
    assert "Round(s) 2 of toy-default cannot be loaded" in note and why in note, note
    assert "rounds 0, 1 still load" in note
    assert metrics(at)["Rounds"] == "1"
    assert "model samples, round 1" in fig_text(at)
    table = at.dataframe[0].value
    assert dict(zip(table["run"], table["status"]))["toy-default"] == "damaged round(s) 2"
    # a new round never overwrites the damaged file: the job fails with one sentence
    before = target.read_bytes()
    job = launch.start_rounds(cache["toy"], 1, settings.explore_defaults(runs.open_run(cache["toy"])))
    assert job.wait(120) and job.status == "failed"
    assert "damaged" in job.error and "\n" not in job.error.strip(), job.error
    assert target.read_bytes() == before
