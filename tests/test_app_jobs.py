"""Jobs as two browser sessions see them (issue 24, and issue 21's "who may stop a job"):
two AppTest instances over one cache share the server's job registry, as two tabs do.

A digits pre-training is started from session A's Images page (the real button and
services.image_runs.start_digits_training), with the training itself replaced by a stand-in
that reports steps at a steady pace until the test releases it, so nothing heavy runs.
"""
from __future__ import annotations

import threading
import time

import pytest

from apptest_helpers import app
from smeme.services import access, image_runs, jobs

IMAGES = "pages/4_Images.py"


def progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def stop_keys(at) -> list[str]:
    return [b.key for b in at.button if b.label == "Stop"]


@pytest.fixture
def cache(empty_cache):
    return empty_cache


@pytest.fixture
def paced_training(monkeypatch):
    """pretrain_run replaced by 400 of 600 steps at a steady pace (a step every 10 ms) that then wait
    for `release` (or a stop); the steps report as the real training does."""
    release = threading.Event()

    def fake_pretrain(folder, dataset, progress=None, cancel=None, steps=600, **kw):
        assert dataset == "digits"
        for step in range(1, 401):
            if cancel is not None and cancel.is_set():
                return None
            progress(step, steps, 0.1)
            time.sleep(0.01)
        while not (release.is_set() or (cancel is not None and cancel.is_set())):
            release.wait(0.02)
        return None

    import smeme.pipeline
    monkeypatch.setattr(smeme.pipeline, "pretrain_run", fake_pretrain)
    yield release
    release.set()


def start_in(at) -> jobs.Job:
    """Session `at` starts a digits pre-training on the Images page; returns its job."""
    at.switch_page(IMAGES).run()
    at.button(key="img_pretrain").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    running = image_runs.running_digits_trainings()
    assert len(running) == 1
    return running[0]


def test_a_pretraining_started_in_one_tab_shows_with_its_progress_in_another(cache, paced_training):
    a, b = app().run(), app().run()
    job = start_in(a)
    deadline = time.monotonic() + 30
    while job.snapshot()["eta"] is None and time.monotonic() < deadline:  # past the estimator's warm-up
        time.sleep(0.05)
    b.switch_page(IMAGES).run()
    assert not b.exception
    texts = progress_texts(b)
    assert texts and texts[0].startswith("Training: step"), texts  # B sees A's training and its progress
    assert "left" in texts[0]  # and the estimate of the time left (services.eta)
    assert [i.value for i in b.info] == ["No digits model yet: one is being pre-trained (above)."]
    paced_training.set()
    assert job.wait(30) and job.status == jobs.DONE


def test_only_the_session_that_started_a_job_may_stop_it(cache, paced_training):
    a, b = app().run(), app().run()
    job = start_in(a)
    b.switch_page(IMAGES).run()
    assert stop_keys(b) == []  # hidden, not greyed out
    assert any("Started in another session" in c.value for c in b.caption)
    with pytest.raises(access.ReadOnlyError, match="started by another visitor"):
        jobs.stop(job.folder, "train", who=b.session_state["_smeme_owner"])
    assert not job.cancel.is_set()
    a.run()
    assert stop_keys(a) == ["img_train_0_stop"]
    a.button(key="img_train_0_stop").click().run()
    assert job.wait(30) and job.status == jobs.CANCELLED


def test_the_single_user_switch_lets_any_session_stop_any_job(cache, paced_training, monkeypatch):
    a, b = app().run(), app().run()
    job = start_in(a)
    monkeypatch.setenv("SMEME_SINGLE_USER", "1")
    b.switch_page(IMAGES).run()
    assert stop_keys(b) == ["img_train_0_stop"]
    b.button(key="img_train_0_stop").click().run()
    assert job.wait(30) and job.status == jobs.CANCELLED


def test_viewers_never_stop_a_job_even_in_single_user_mode(cache, paced_training, monkeypatch):
    a = app().run()
    job = start_in(a)
    monkeypatch.setenv("SMEME_VIEWER", "1")
    monkeypatch.setenv("SMEME_SINGLE_USER", "1")
    for at in (a, app().run()):  # the session that started it, and another
        at.switch_page(IMAGES).run()
        assert not at.exception
        assert progress_texts(at)  # viewers still see the progress
        assert stop_keys(at) == []
        with pytest.raises(access.ReadOnlyError, match="viewer mode"):
            jobs.stop(job.folder, "train", who=at.session_state["_smeme_owner"])
    assert not job.cancel.is_set()
    monkeypatch.delenv("SMEME_VIEWER")
    assert jobs.stop(job.folder, "train", who=a.session_state["_smeme_owner"])
    assert job.wait(30) and job.status == jobs.CANCELLED


def test_single_user_is_off_unless_switched_on(monkeypatch):
    for k in ("SMEME_VIEWER", "SMEME_SINGLE_USER"):
        monkeypatch.delenv(k, raising=False)
    owned = jobs.Job(folder="/x", kind="train", owner="me")
    for address in ("localhost", "127.0.0.1", "0.0.0.0", None):  # a proxy on localhost is everyone
        assert not access.single_user(address)
        assert access.may_stop(owned, "me", address) and not access.may_stop(owned, "you", address)
    assert not access.may_stop(jobs.Job(folder="/x", kind="train"), None)  # nobody owns a job with no owner
    monkeypatch.setenv("SMEME_SINGLE_USER", "1")
    assert access.single_user() and access.may_stop(owned, "you")
    monkeypatch.setenv("SMEME_VIEWER", "1")
    assert not access.single_user() and not access.may_stop(owned, "me")


def test_the_demo_and_budget_jobs_belong_to_the_session_that_starts_them(cache, monkeypatch):
    from smeme.services import demo

    monkeypatch.setattr(demo, "_stages", lambda owner: [])  # nothing to train: only the demo's own job
    monkeypatch.setattr(demo, "import_ready_digits", lambda: None)
    at = app().run()
    at.button(key="home_demo_start").click().run()
    job = demo.job()
    assert job is not None and job.owner == at.session_state["_smeme_owner"]
    assert job.wait(30) and job.status == jobs.DONE
