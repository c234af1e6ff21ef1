"""Draw your data, in the app (AppTest): a gallery shape with a rare part, previewed and
trained as a CSV run through the same pre-training as an upload; an empty canvas cannot
be trained. Tiny models (SMEME_APP_PRESET=tiny) in a temporary cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from apptest_helpers import TIMEOUT, app
from smeme.services import jobs, runs, settings



@pytest.fixture
def empty_cache(empty_cache, monkeypatch):
    """conftest's empty cache, with the app's tiny preset."""
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    return empty_cache


def model_page():
    at = app().run()
    at.switch_page("pages/1_Model.py").run()
    assert not at.exception, at.exception
    return at


def preview(at) -> dict:
    specs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    return [s for s in specs if "Your data" in json.dumps(s["layout"])][0]


def test_a_gallery_shape_with_a_rare_part_trains_as_a_csv_run(empty_cache):
    at = model_page()
    at.selectbox(key="d_shape").set_value("two moons").run()
    at.number_input(key="d_n").set_value(1000).run()
    at.slider(key="d_rare_two moons").set_value(0.1).run()
    assert not at.exception
    fig = preview(at)
    counts = {t["name"]: len(t["x"]["bdata"]) if isinstance(t["x"], dict) else len(t["x"]) for t in fig["data"]}
    assert set(counts) == {"lower moon", "upper moon"}  # one colour per part
    assert "1,000 points" in json.dumps(fig["layout"])
    at.number_input(key="d_steps").set_value(20)
    at.text_input(key="d_name").set_value("moons class")
    at.button(key="d_train").click().run()
    assert not at.exception and not at.error
    folder = (settings.runs_dir() / "moons-class").resolve()
    assert at.session_state["run"] == str(folder)
    job = jobs.get(folder, "train")
    assert job is not None and job.wait(TIMEOUT) and job.status == jobs.DONE, job.error
    run = runs.open_run(folder)
    assert runs.run_dataset(run) == "csv" and run.domain.columns == ["x", "y"]
    # the rows trained on are the previewed points: 10% of them in the lower moon
    data = run.training_rows()  # a self-contained run: the rows live in the run, no path in its config
    assert data.shape == (1000, 2) and "path" not in json.dumps(run.config)
    lower = data[:, 1] < 0.25 - 0.5 * np.abs(data[:, 0] - 0.5)  # under the upper moon's centre line
    assert 0.05 < lower.mean() < 0.2
    assert jobs.wait_all(TIMEOUT)
    at.run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Data set"] == "csv"


def test_an_empty_canvas_cannot_be_trained(empty_cache):
    at = model_page()
    at.radio(key="d_source").set_value("My drawing").run()
    assert not at.exception
    assert at.button(key="d_train").disabled
    assert any("at least 100 are needed" in i.value for i in at.info)


def test_the_draw_section_is_hidden_from_viewers(empty_cache, monkeypatch):
    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = model_page()
    assert not [b for b in at.button if b.key == "d_train"]
