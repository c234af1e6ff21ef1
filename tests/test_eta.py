"""Time left (smeme.services.eta), through a Job as every job kind uses it, on jobs of known
pace under a simulated clock: the truth is the known finish time, not the estimator's output.

Readings as a page takes them (every 0.8 s); a job updates its progress every 0.1 s while
it works and not at all during its pauses. Claims (issue 24): from 20% of the job's time on,
each estimate is within 25% of the true time left (or 5 s, the display's own step, near the
end), and no estimate is more than 1.5x the reading before it.
"""
from __future__ import annotations

import math

import pytest

from smeme.services import eta, jobs

READ_EVERY = 0.8
UPDATE_EVERY = 0.1


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def readings(progress, total: float) -> list[tuple[float, float | None]]:
    """(time, estimate) of each reading over a job whose progress at time t is progress(t)
    and which ends at `total` seconds."""
    clock = Clock()
    job = jobs.Job(folder="/nowhere", kind="train", clock=clock)
    out, last, next_read = [], None, 0.0
    steps = int(round(total / UPDATE_EVERY))
    for i in range(steps):
        clock.now = i * UPDATE_EVERY
        f = progress(clock.now)
        if f != last:  # a job sends nothing while it pauses
            job.update(f, "working")
            last = f
        if clock.now >= next_read - 1e-9:
            out.append((clock.now, job.snapshot()["eta"]))
            next_read += READ_EVERY
    return out


def check(progress, total: float, accurate: bool = True, first_by: float | None = None) -> None:
    rows = readings(progress, total)
    said = [(t, e) for t, e in rows if e is not None]
    first_by = 0.2 * total if first_by is None else first_by
    assert said and said[0][0] <= first_by, f"an estimate by {first_by:.0f} s"
    for (t0, e0), (t1, e1) in zip(said, said[1:]):
        assert e1 <= 1.5 * e0 + 1e-9, f"the estimate grew from {e0:.1f} s to {e1:.1f} s at {t1:.1f} s"
    if accurate:
        for t, e in said:
            if t >= 0.2 * total:
                truth = total - t
                assert abs(e - truth) <= max(0.25 * truth, 5.0), f"at {t:.1f} s: {e:.1f} s left, truly {truth:.1f} s"


def test_a_steady_job_is_forecast_from_its_pace():
    check(lambda t: t / 100.0, 100.0)


def test_toy_training_with_its_start_up_and_closing_work():
    """The case that said 'about 7 min left' at 31 s and ended at 97 s: 25 s of start-up with
    no progress (worker process, data set), 60 s of steps (0 -> 85%), then 5 s of round-0
    metrics (85%) and 7 s of display samples (90%)."""
    def progress(t):
        if t < 25:
            return 0.0
        if t < 85:
            return 0.85 * (t - 25) / 60
        return 0.85 if t < 90 else 0.9

    check(progress, 97.0, first_by=25 + eta.WARMUP_S + 1)  # start-up + warm-up, then a reading
    at_31 = [e for t, e in readings(progress, 97.0) if abs(t - 31.2) < 0.01][0]
    assert at_31 == pytest.approx(97.0 - 31.2, rel=0.25)  # the old estimate: 488 s


def test_a_round_whose_iterations_slow_down():
    """Each solver iteration takes longer than the one before, the last 1.5x the first."""
    a, total = 0.5, 60.0

    def progress(t):  # time(f) = total * (f + a f^2 / 2) / (1 + a / 2), inverted
        c = t * (1 + a / 2) / total
        return min((-1 + math.sqrt(1 + 2 * a * c)) / a, 1.0)

    check(progress, total)


def test_rounds_with_pauses_for_their_metrics_never_jump():
    """Three rounds of 18 s of iterations, each followed by 4 s of metrics with no update."""
    def progress(t):
        k, r = divmod(t, 22.0)
        return min((k + min(r, 18.0) / 18.0) / 3, 1.0)

    check(progress, 66.0, accurate=False)
    late = [(t, e) for t, e in readings(progress, 66.0) if e is not None and t >= 0.2 * 66]
    assert all(abs(e - (66 - t)) <= 0.35 * (66 - t) + 5 for t, e in late)


@pytest.mark.parametrize("slowdown", [3.0, 10.0])
def test_a_job_that_suddenly_slows_down_is_followed_without_jumps(slowdown):
    """Half the job at one pace, the rest `slowdown` times slower: no forecast from the past
    can know that, but the estimate climbs to the new pace without leaping."""
    first = 20.0
    total = first * (1 + slowdown)
    rows = readings(lambda t: t / (2 * first) if t < first else 0.5 + (t - first) / (2 * first * slowdown), total)
    said = [(t, e) for t, e in rows if e is not None]
    assert all(e1 <= 1.5 * e0 for (_, e0), (_, e1) in zip(said, said[1:]))
    t, e = said[-10]  # and it has caught up with the new pace by the end
    assert abs(e - (total - t)) <= max(0.25 * (total - t), 5.0)


def test_a_stuck_job_stops_counting_down():
    """Progress stops for good at 40%: after the pause limit the estimate no longer falls to zero."""
    rows = readings(lambda t: min(t / 50.0, 0.4), 80.0)
    late = [e for t, e in rows if t > 20 + eta.PAUSE_S + 5]
    assert late and min(late) > 10.0


def test_nothing_is_said_before_progress_or_during_the_warm_up():
    clock = Clock()
    job = jobs.Job(folder="/nowhere", kind="explore", clock=clock)
    for t in range(30):  # start-up: no progress
        clock.now = float(t)
        job.update(0.0, "starting")
        assert job.snapshot()["eta"] is None
    clock.now = 30.5
    job.update(0.05)
    assert job.snapshot()["eta"] is None  # progress has only just begun (warm-up)
    clock.now = 33.0
    job.update(0.1)
    assert job.snapshot()["eta"] == pytest.approx(0.9 / (0.05 / 2.5), rel=0.3)
