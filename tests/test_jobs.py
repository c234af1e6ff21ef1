"""The background job registry, without Streamlit."""
import os
import sys
import threading
import types
import time

import pytest

from smeme.services import jobs


def _slow(steps=50, dt=0.01, fail_at=None):
    """A thread target: `_child_steps` (below) with its settings bound."""
    return lambda job: _child_steps(job, steps, dt, fail_at)


def test_job_runs_in_background_and_reports_progress(tmp_path):
    job = jobs.start(tmp_path, "train", _slow(steps=30), label="Training")
    assert job.running
    snap = job.snapshot()
    assert snap["status"] == "running" and 0.0 <= snap["fraction"] <= 1.0
    assert job.wait(10)
    snap = job.snapshot()
    assert snap["status"] == "done" and snap["fraction"] == 1.0
    assert job.result == "ok"
    assert len(snap["losses"]) == 30 and snap["losses"][-1][1] == pytest.approx(1 / 30)
    # the registry still knows it (a page revisit finds the finished job)
    assert jobs.get(tmp_path, "train") is job
    jobs.forget(tmp_path, "train")
    assert jobs.get(tmp_path, "train") is None


def test_progress_moves_while_running(tmp_path):
    job = jobs.start(tmp_path, "train", _slow(steps=40, dt=0.02))
    seen = set()
    t0 = time.time()
    while job.running and time.time() - t0 < 5:
        seen.add(round(job.snapshot()["fraction"], 2))
        time.sleep(0.05)
    assert job.wait(5)
    assert len(seen) >= 3  # the fraction moved several times during the run


def test_second_writer_on_same_run_is_refused_with_a_clear_message(tmp_path):
    gate = threading.Event()
    job = jobs.start(tmp_path, "train", lambda j: gate.wait(5), label="Training")
    with pytest.raises(jobs.JobBusy, match="busy.*Training"):
        jobs.start(tmp_path, "explore", lambda j: None, label="Rounds")
    with pytest.raises(jobs.JobBusy):
        jobs.start(tmp_path / "." , "train", lambda j: None)  # same folder, other spelling
    # read-only work of another kind (a heatmap) may run beside it
    other = jobs.start(tmp_path, "heatmap", lambda j: 42, writes=False)
    assert other.wait(5) and other.result == 42
    # another run is independent
    free = jobs.start(tmp_path / "other", "train", lambda j: 1)
    assert free.wait(5)
    assert jobs.busy(tmp_path) is job
    gate.set()
    assert job.wait(5) and job.status == "done"
    assert jobs.busy(tmp_path) is None
    again = jobs.start(tmp_path, "explore", lambda j: "second")
    assert again.wait(5) and again.result == "second"


def _wait_for_progress(job, timeout=30.0):
    deadline = time.time() + timeout
    while job.fraction == 0 and job.running and time.time() < deadline:
        time.sleep(0.01)
    assert job.fraction > 0, job.snapshot()


def test_stop_cancels_between_steps(tmp_path):
    job = jobs.start(tmp_path, "explore", _slow(steps=1000, dt=0.01), owner="me")
    _wait_for_progress(job)  # stepping, however loaded the machine
    assert jobs.stop(tmp_path, "explore", who="me")
    assert job.wait(5)
    assert job.status == "cancelled" and job.result == "partial"
    assert 0 < job.fraction < 1
    assert not jobs.stop(tmp_path, "explore", who="me")  # nothing running any more


def test_failure_is_reported_as_a_sentence_not_raised(tmp_path):
    job = jobs.start(tmp_path, "train", _slow(steps=10, fail_at=3))
    assert job.wait(5)
    assert job.status == "failed"
    assert job.error == "The CSV has a NaN in row 3."
    assert job.snapshot()["message"] == "The CSV has a NaN in row 3."
    # unexpected exception types keep their class name
    job2 = jobs.start(tmp_path, "x", lambda j: {}["missing"])
    assert job2.wait(5) and job2.status == "failed" and job2.error.startswith("KeyError")


def test_cancelled_exception_and_events(tmp_path):
    def target(job):
        job.log({"round": 1, "metrics": {"entropy": 1.0}})
        raise jobs.JobCancelled()
    job = jobs.start(tmp_path, "explore", target)
    assert job.wait(5)
    assert job.status == "cancelled"
    assert job.snapshot()["events"] == [{"round": 1, "metrics": {"entropy": 1.0}}]


def test_loss_history_is_bounded(tmp_path):
    def target(job):
        for i in range(jobs.HISTORY_MAX + 500):
            job.update(loss=float(i), step=i)
    job = jobs.start(tmp_path, "train", target)
    assert job.wait(10)
    losses = job.snapshot()["losses"]
    assert len(losses) <= jobs.HISTORY_MAX
    assert losses[-1] == (jobs.HISTORY_MAX + 499, float(jobs.HISTORY_MAX + 499))
    steps = [s for s, _ in losses]
    assert steps == sorted(steps)


def test_wait_all_and_active(tmp_path):
    gate = threading.Event()
    a = jobs.start(tmp_path / "a", "train", lambda job: gate.wait(10))
    b = jobs.start(tmp_path / "b", "train", lambda job: gate.wait(10))
    assert {a.id, b.id} <= {j.id for j in jobs.active()}  # both held at the gate
    assert jobs.active(tmp_path / "a") == [a]
    assert not jobs.wait_all(0.05)  # still running
    gate.set()
    assert jobs.wait_all(10)
    assert a.status == b.status == "done"
    assert jobs.active(tmp_path / "a") == []


# -- jobs in a child process (module-level targets: the child imports them by name) ---------
def _child_steps(job, steps, dt, fail_at=None):
    for i in range(steps):
        if job.cancel.is_set():
            return "partial"
        if fail_at is not None and i == fail_at:
            raise ValueError("The CSV has a NaN in row 3.")
        time.sleep(dt)
        job.update(fraction=(i + 1) / steps, message=f"step {i + 1}/{steps}", loss=1.0 / (i + 1), step=i)
    job.log({"round": 1, "pid": os.getpid(), "env": os.environ.get("SMEME_JOBS_TEST")})
    return "ok"


def _child_exits(job):
    os._exit(3)  # a worker killed mid-job (e.g. out of memory)


def test_process_job_relays_progress_events_result_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEME_JOBS_TEST", "seen")  # set after the forkserver may have started
    # under Streamlit, __main__ is the page script: the child must not run it again
    page = tmp_path / "page.py"
    page.write_text("raise SystemExit('the page script ran in the worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    job = jobs.start_process(tmp_path, "train", _child_steps, 20, 0.01, label="Training")
    assert job.wait(60), job.snapshot()
    snap = job.snapshot()
    assert snap["status"] == "done" and job.result == "ok" and snap["fraction"] == 1.0
    assert [s for s, _ in snap["losses"]] == list(range(20))
    event = snap["events"][0]
    assert event["pid"] != os.getpid() and event["env"] == "seen"


def test_process_job_stop_failure_and_a_dead_worker(tmp_path):
    job = jobs.start_process(tmp_path, "explore", _child_steps, 5000, 0.01)
    deadline = time.time() + 60
    while job.fraction == 0 and time.time() < deadline:  # the child has started stepping
        time.sleep(0.05)
    job.stop()
    assert job.wait(30) and job.status == "cancelled" and 0 < job.fraction < 1
    bad = jobs.start_process(tmp_path, "train", _child_steps, 10, 0.0, 3)
    assert bad.wait(60) and bad.status == "failed" and bad.error == "The CSV has a NaN in row 3."
    assert "ValueError" in bad.traceback
    dead = jobs.start_process(tmp_path, "heatmap", _child_exits, writes=False)
    assert dead.wait(60) and dead.status == "failed"
    assert "ended without a result (exit code 3)" in dead.error


def test_time_left_texts():  # the estimate itself: tests/test_eta.py
    assert jobs.format_time_left(90.0) == "about 2 min left"
    assert jobs.format_time_left(42.0) == "about 40 s left"
    assert jobs.progress_text({"message": "Training", "elapsed": 30.0, "eta": 90.0}) == \
        "Training  (30 s, about 2 min left)"
    assert jobs.progress_text({"message": "Training", "elapsed": 1.0, "eta": None}) == "Training  (1 s)"


def test_then_runs_after_the_job_and_wait_all_waits_for_what_it_queues(tmp_path):
    order = []

    def follow_up(job):
        order.append(("then", job.status))
        jobs.start(tmp_path, "after", lambda j: (time.sleep(0.2), order.append("after")), writes=False)

    job = jobs.start(tmp_path, "first", lambda j: order.append("first"), then=follow_up)
    assert jobs.wait_all(10)
    assert order == ["first", ("then", jobs.DONE), "after"]
    assert jobs.get(tmp_path, "after").status == jobs.DONE
    assert job.snapshot()["eta"] is None
