"""The Home page: the default model in one click, the runs listed and opened, a bundle
uploaded, the demo prepared in the background.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations


import pytest

from apptest_helpers import app, fig_text, metrics, picker, settle
from smeme.services import cached, jobs, runs, settings


def test_home_offers_one_click_default_training_on_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    at = app().run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Train the default toy model", "Prepare the demo"]
    assert any("No trained model" in i.value for i in at.info)
    assert len(at.latex) >= 3  # the objective, the first variation, mirror descent
    at.button(key="train_default").click().run()
    assert not at.exception
    job = jobs.get(tmp_path / "runs" / "toy-default", "train")
    assert job is not None and job.kind == "train"
    settle(at)
    assert any("Model ready: toy-default" in s.value for s in at.success)
    assert metrics(at)["Data set"] == "toy"
    assert "model samples, round 0" in fig_text(at)
    assert at.session_state["run"] == str((tmp_path / "runs" / "toy-default").resolve())


def test_home_lists_runs_and_opens_one(cache):
    at = app().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["run"]) == {"toy-default", "tri"}
    assert dict(zip(table["run"], table["rounds"])) == {"toy-default": 2, "tri": 1}
    assert metrics(at)["Data set"] == "toy"  # the default run opens by itself
    at.selectbox(key="home_pick").set_value(cache["tri"])
    at.button(key="home_open").click().run()
    assert at.session_state["run"] == cache["tri"]
    assert metrics(at)["Data set"] == "triangles"
    assert metrics(at)["Rounds"] == "1"
    assert "u = a/c" in fig_text(at)


def test_a_bundle_uploaded_in_the_app_opens_as_a_run(cache):
    from smeme.services import bundles
    data = bundles.bundle_bytes(cache["tri"])
    at = app(cache["toy"]).run()
    at.file_uploader(key="home_upload").set_value(("from a colleague.zip", data, "application/zip")).run()
    assert not at.exception
    folder = str((settings.runs_dir() / "from-a-colleague").resolve())
    assert at.session_state["run"] == folder
    assert picker(at) == folder
    assert metrics(at)["Data set"] == "triangles"
    assert runs.open_run(folder).metrics() == runs.open_run(cache["tri"]).metrics()
    # a damaged file: one sentence, nothing added, the current run stays
    at.file_uploader(key="home_upload").set_value(("broken.zip", data[: len(data) // 2], "application/zip")).run()
    assert not at.exception
    assert [e.value for e in at.error] and at.error[0].value.startswith("The bundle broken.zip is refused:")
    assert not (settings.runs_dir() / "broken").exists()
    assert at.session_state["run"] == folder
    assert {b.label for b in at.get("download_button")} >= {"Download from-a-colleague as a bundle (.zip)"}


@pytest.mark.slow
def test_home_prepares_the_demo_in_the_background(tmp_path, monkeypatch):
    from smeme.services import demo
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    at = app().run()
    at.button(key="home_demo_start").click().run()
    assert not at.exception
    assert demo.job() is not None and demo.job().running
    assert any(p.proto.text.startswith("Training the toy model") for p in at.get("progress"))
    settle(at)
    assert demo.job().status == "done", demo.job().error
    labels = [b.label for b in at.button]
    assert "Open toy-default (3 rounds)" in labels and "Open triangles-demo (3 rounds)" in labels
    for r in demo.status():
        run = runs.open_run(r["folder"])
        assert run.rounds() == [0, 1, 2, 3]
        assert all(cached.heatmap_cached(run, k) is not None for k in run.rounds())  # ready for the rounds view
    at.button(key="home_demo_open_triangles-demo").click().run()
    assert at.session_state["run"] == demo.status()[1]["folder"]
