"""The rounds' deferred metrics in the app (AppTest, conftest.py's `cache`): queued after the
rounds, never beside them; a page shows "computing…" while they are computed and the values
once ready."""
from __future__ import annotations

from pathlib import Path

from apptest_helpers import TIMEOUT, app, held_job, metrics, settle
from smeme import deferred
from smeme.services import jobs, launch, runs, settings
from smeme.ui import COMPUTING


def drop_deferred(folder) -> None:
    for p in Path(folder).glob("round_*.deferred.json"):
        p.unlink()


def test_the_rounds_jobs_queued_the_deferred_metrics_of_every_round(cache):
    for folder in (cache["toy"], cache["tri"]):
        run = runs.open_run(folder)
        assert deferred.pending(run) == [], folder
        assert all("surprise_pre" in run.all_metrics()[k] for k in run.rounds())


def test_explore_shows_computing_then_the_values(cache):
    folder = cache["tri"]
    drop_deferred(folder)
    with held_job(folder, "metrics", (0.5, "PF-ODE metrics of round 1 (1 of 1): ODE step 5/10"),
                  writes=False, label="PF-ODE metrics"):
        at = app(folder).run()
        at.switch_page("pages/2_Explore.py").run()
        assert not at.exception
        assert metrics(at)["Surprise"] == COMPUTING  # the round shows; its PF-ODE metric is on its way
        assert "Entropy (k-NN)" in metrics(at) and metrics(at)["Entropy (k-NN)"] != COMPUTING
        assert any("PF-ODE metrics of round 1" in p.proto.text for p in at.get("progress"))
    at.run()  # the held job has ended: the page starts the real one
    assert jobs.get(folder, "metrics").kind == "metrics"
    settle(at)
    run = runs.open_run(folder)
    assert deferred.pending(run) == []
    latest = run.all_metrics()[run.latest_round]
    assert metrics(at)["Surprise"] == f"{latest['surprise_pre']:.3f}"


def test_compare_starts_them_and_shows_the_values(cache):
    folder = cache["toy"]
    drop_deferred(folder)
    at = app(folder).run()
    at.switch_page("pages/3_Compare.py").run()
    assert not at.exception
    settle(at)
    run = runs.open_run(folder)
    assert deferred.pending(run) == []
    b = run.all_metrics()[run.rounds()[-1]]
    assert metrics(at)["Surprise"] == f"{b['surprise_pre']:.3f}"


def test_new_rounds_stop_the_deferred_metrics_and_queue_them_after(cache):
    folder = cache["tri"]
    drop_deferred(folder)
    with held_job(folder, "metrics", writes=False) as held:
        job = launch.start_rounds(folder, 1, dict(settings.explore_defaults(runs.open_run(folder))))
        assert held.cancel.is_set()  # a round does not share the CPU with them
        assert launch.start_deferred_metrics(folder) is None or not job.running  # not beside the rounds
    assert job.wait(TIMEOUT * 2) and job.status == "done", job.error
    assert jobs.wait_all(TIMEOUT * 2)
    again = jobs.get(folder, "metrics")
    assert again is not held and again.status == "done" and again.started >= job.finished
    assert deferred.pending(runs.open_run(folder)) == []


def test_a_failed_deferred_job_is_not_started_again_at_once(cache, monkeypatch):
    folder = cache["toy"]
    drop_deferred(folder)
    blocker = Path(folder) / "round_0.deferred.json"
    blocker.mkdir()  # the file cannot be written (as on a full disk); reading it fails too
    job = launch.start_deferred_metrics(folder)
    assert job.wait(TIMEOUT * 2) and job.status == jobs.FAILED
    assert launch.start_deferred_metrics(folder) is job  # a page visit shows the failure, it does not retry
    blocker.rmdir()
    assert launch.start_deferred_metrics(folder) is job  # not before RETRY_AFTER_S
    monkeypatch.setattr(launch, "RETRY_AFTER_S", 0.0)
    fresh = launch.start_deferred_metrics(folder)
    assert fresh is not job and fresh.wait(TIMEOUT * 2) and fresh.status == jobs.DONE, fresh.error
    assert deferred.pending(runs.open_run(folder)) == []
