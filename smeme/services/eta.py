"""Time left for a background job, from its measured pace: one estimator for every job kind
(training, rounds, heatmaps, the demo, budget sweeps, image jobs), fed by `Job.update`.

The naive estimate, elapsed * (1 - f) / f, counts the start-up (starting a worker process,
building the data set: often most of the first half-minute) as if it were the job's pace. Here:

- the clock starts at the first progress (f > 0), so start-up is not counted as pace;
- nothing is said during a short warm-up (WARMUP_FRACTION of the job and WARMUP_S seconds of
  progress): the first steps of a solver or an optimiser are slower or faster than the rest;
- the pace is the progress over a moving window, the most recent WINDOW_SHARE of the time
  since progress began (at least MIN_WINDOW_S): a job whose steps slow down (a round's later
  iterations, a demo's longer stages) is forecast at its current pace, not its average;
- between updates the estimate counts down; a pause in the updates longer than PAUSE_S
  (a job slower than it said, or stuck) counts as time without progress, so the estimate
  stops falling while nothing happens; shorter pauses (metrics between rounds, sampling
  for display) are part of the job's rhythm and are not; and from one reading to the next
  the estimate may grow by at most MAX_GROWTH, so one slow stretch does not throw it from
  10 s to 3 min.

Everything takes the time as an argument, so tests drive it with a simulated clock.
"""
from __future__ import annotations

import bisect
import threading

WARMUP_FRACTION = 0.02  # progress (share of the job) before the first estimate
WARMUP_S = 2.0  # seconds of progress before the first estimate
WINDOW_SHARE = 0.5  # the window: this share of the time since progress began...
MIN_WINDOW_S = 5.0  # ...but at least this many seconds
PAUSE_S = 10.0  # a pause in the updates longer than this counts as time without progress
MAX_GROWTH = 1.4  # an estimate is at most this many times the previous reading's
MAX_POINTS = 2000  # progress points kept (older ones thinned)


class Pace:
    """Progress points (time, fraction) of one job and the time left they imply."""

    def __init__(self):
        self._times: list[float] = []
        self._fractions: list[float] = []
        self._last_reading: float | None = None
        self._lock = threading.Lock()

    def add(self, now: float, fraction: float) -> None:
        """Record that the job had done `fraction` (0..1) at time `now` (seconds)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._lock:
            if fraction <= 0.0 and not self._times:
                return  # start-up: the clock starts with the first progress
            if self._times and now < self._times[-1]:
                return  # a clock that went back: ignore the point
            if self._times and fraction < self._fractions[-1]:  # progress restarted: start again
                self._times, self._fractions, self._last_reading = [], [], None
            self._times.append(float(now))
            self._fractions.append(fraction)
            if len(self._times) > MAX_POINTS:  # thin the older half
                half = len(self._times) // 2
                self._times = self._times[:half:2] + self._times[half:]
                self._fractions = self._fractions[:half:2] + self._fractions[half:]

    def _fraction_at(self, t: float) -> float:
        """The progress at time t, linear between the recorded points."""
        i = bisect.bisect_right(self._times, t)
        if i == 0:
            return self._fractions[0]
        if i == len(self._times):
            return self._fractions[-1]
        t0, t1 = self._times[i - 1], self._times[i]
        f0, f1 = self._fractions[i - 1], self._fractions[i]
        return f0 + (f1 - f0) * (t - t0) / (t1 - t0) if t1 > t0 else f1

    def _raw_left(self, now: float) -> float | None:
        if not self._times:
            return None
        first, last, done = self._times[0], self._times[-1], self._fractions[-1]
        now = max(now, last)
        if done >= 1.0:
            return 0.0
        if done < WARMUP_FRACTION or now - first < WARMUP_S:
            return None
        paused = now - last > PAUSE_S
        end = now if paused else last  # the pace is measured up to here
        window = max(MIN_WINDOW_S, WINDOW_SHARE * (end - first))
        start = max(first, end - window)
        rate = (done - self._fraction_at(start)) / (end - start) if end > start else 0.0
        if rate <= 0.0 and end > first:
            rate = (done - self._fractions[0]) / (end - first)  # no progress in the window: all of it
        if rate <= 0.0:
            return None
        left = (1.0 - done) / rate
        return left if paused else max(left - (now - last), 0.0)

    def time_left(self, now: float) -> float | None:
        """Seconds left at time `now`; None while too little is known (start-up, warm-up)."""
        with self._lock:
            left = self._raw_left(now)
            if left is not None and self._last_reading is not None:
                left = min(left, MAX_GROWTH * self._last_reading)
            if left is not None:
                self._last_reading = left
            return left
