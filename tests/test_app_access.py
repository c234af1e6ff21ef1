"""Who may do what in the app: viewer mode shows everything and writes nothing, a job is
stopped only by the session that started it, single-user mode is off unless switched on.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from apptest_helpers import TIMEOUT, app, captions, every_page_works, fig_text, held_job, metrics
from smeme.services import jobs, launch, settings


def test_viewer_mode_shows_runs_and_rounds_but_every_write_is_refused(cache, monkeypatch):
    from smeme.services import access, image_runs

    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = every_page_works(app(cache["toy"]))
    at.switch_page("app.py").run()
    assert metrics(at)["Data set"] == "toy" and "viewer mode" in captions(at)
    at.switch_page("pages/1_Model.py").run()
    assert "m_train" not in {b.key for b in at.button} and not at.get("file_uploader")
    assert metrics(at)["Data set"] == "toy" and "viewer mode" in captions(at)
    at.switch_page("pages/2_Explore.py").run()
    assert not {"x_one", "x_k_btn"} & {b.key for b in at.button}  # hidden, not greyed out (issue 24)
    assert "Stop" not in [b.label for b in at.button]
    assert "Metrics per round" in fig_text(at) and "viewer mode" in captions(at)
    at.switch_page("pages/3_Compare.py").run()
    at.selectbox(key="c_b_toy-default").set_value(1).run()  # stepping through rounds works
    assert any(md.value.startswith("**round 1**") for md in at.markdown)
    at.switch_page("pages/4_Images.py").run()
    assert "Pre-train" not in {b.label for b in at.button}
    # the services refuse too, not only the pages
    before = sorted(p.name for p in Path(cache["toy"]).iterdir())
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        launch.start_rounds(cache["toy"], 1, settings.explore_defaults())
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        launch.start_training(settings.runs_dir() / "new", "toy")
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        settings.save_upload("a.csv", b"x,y\n1,2\n")
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        image_runs.start_sd_rounds("sd", "anything", "a prompt.", 1)
    assert not settings.uploads_dir().exists() and not image_runs.sd_runs_dir().exists()
    assert not (settings.runs_dir() / "new").exists()
    assert sorted(p.name for p in Path(cache["toy"]).iterdir()) == before
    assert jobs.wait_all(TIMEOUT)  # the pages' own heatmap jobs
    with held_job(cache["toy"], "heatmap", writes=False) as job:  # read-only work runs
        with pytest.raises(access.ReadOnlyError, match="viewer mode"):
            jobs.stop(cache["toy"], "heatmap", who=None)
        assert not job.cancel.is_set()


def test_viewer_mode_on_an_empty_cache_offers_no_training(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = app().run()
    assert not at.exception
    assert "train_default" not in {b.key for b in at.button}
    assert "viewer mode" in captions(at)


def test_a_job_is_stopped_only_by_the_session_that_started_it(cache, monkeypatch):
    from smeme.services import access

    monkeypatch.setenv("SMEME_SINGLE_USER", "0")  # as when serving a class
    progress = (0.1, "Round 3: solver iteration 1/4")
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    mine = at.session_state["_smeme_owner"]
    with held_job(cache["toy"], "explore", progress, owner="another-visitor") as other:
        at.run()
        assert "x_job_stop" not in [b.key for b in at.button]  # hidden where it may not be used (issue 24)
        with pytest.raises(access.ReadOnlyError, match="started by another visitor"):
            jobs.stop(cache["toy"], "explore", who=mine)
        assert not other.cancel.is_set()
    with held_job(cache["toy"], "explore", progress, owner=mine) as own:
        at.run()
        assert not at.button(key="x_job_stop").disabled
        at.button(key="x_job_stop").click().run()
        assert own.cancel.is_set()


def test_single_user_mode_defaults():
    from smeme.services import access

    env = {k: os.environ.pop(k) for k in ("SMEME_SINGLE_USER", "SMEME_VIEWER") if k in os.environ}
    try:  # issue 21: off on every address unless switched on (a proxy on localhost is everyone)
        assert not access.single_user("localhost") and not access.single_user(None)
        assert not access.single_user("0.0.0.0")
        os.environ["SMEME_SINGLE_USER"] = "1"
        assert access.single_user("0.0.0.0")
        del os.environ["SMEME_SINGLE_USER"]
        os.environ["SMEME_VIEWER"] = "1"
        assert not access.single_user("localhost")
    finally:
        for k in ("SMEME_SINGLE_USER", "SMEME_VIEWER"):
            os.environ.pop(k, None)
        os.environ.update(env)
