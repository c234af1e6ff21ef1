"""Torch thread count: a fixed number, or 'auto' (a second thread while another core is idle).

On a 2-core machine small models run ~1.3-1.6x faster on two threads while the other core is
idle, and ~2x slower when another process keeps it busy (BENCHMARKS.md, "Threads"). 'auto'
starts on one thread and, at each `rebalance()` (every sampling step, so every solver iteration,
every training step and log-density ODE step; at most every AUTO_MIN_INTERVAL seconds), measures
from /proc/stat how much CPU other processes used on the cores this process may run on since
the last decision, and takes as many threads as cores they left idle (a core counts as idle
when they used less than AUTO_IDLE_SHARE of it), at least one and at most AUTO_MAX_THREADS
(2, what was measured). A wrong guess costs at most one interval. Float rounding depends on
the thread count, so 'auto' runs agree with each other to rounding, not bit for bit: pin a
number (SMEME_THREADS=1, `--threads 1`) for bit-identical reruns; the test suite pins 1.
"""
from __future__ import annotations

import math
import os
import time

import torch

DEFAULT_THREADS = "auto"
AUTO_IDLE_SHARE = 0.2  # other processes' CPU over the interval, in cores, below which a core counts as idle
AUTO_MAX_THREADS = 2  # measured to help on 2 cores (BENCHMARKS.md, "Threads"); more threads were not measured
AUTO_MIN_INTERVAL = 0.25  # seconds: decisions are no more frequent (/proc/stat counts in 10 ms ticks)


def parse_threads(text: str | int | None):
    """'auto' or a positive int from a flag or $SMEME_THREADS; None for an empty value.
    Raises ValueError naming the value otherwise."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text < 1:
            raise ValueError(f"The thread count must be at least 1, got {text}.")
        return text
    value = str(text).strip().lower()
    if not value:
        return None
    if value == "auto":
        return "auto"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f"The thread count must be 'auto' or a whole number of at least 1, got {text!r}.")


class AutoThreads:
    """One thread, or as many as the cores other processes leave idle, at most AUTO_MAX_THREADS (see the
    module doc); `cores` is what this process may use.

    `read_busy()` -> busy seconds summed over the allowed cores (all processes); `read_own()` ->
    this process's CPU seconds; `clock()` -> wall seconds. Injectable so the rule is testable.
    """

    def __init__(self, cores: int, read_busy=None, read_own=None, clock=time.monotonic):
        self.cores = max(int(cores), 1)
        self.read_busy = read_busy or _allowed_cores_busy_seconds
        self.read_own = read_own or (lambda: sum(os.times()[:2]))
        self.clock = clock
        self.threads = 1
        self._mark = None

    def decide(self) -> int:
        """The thread count for the next interval (1 until one interval has been measured)."""
        now = self.clock()
        if self._mark is not None and now - self._mark[0] < AUTO_MIN_INTERVAL:
            return self.threads
        busy, own = self.read_busy(), self.read_own()
        if busy is None:  # no /proc/stat: stay on one thread
            return self.threads
        if self._mark is not None:
            wall = now - self._mark[0]
            others = (busy - self._mark[1]) - (own - self._mark[2])  # CPU seconds of other processes
            free = self.cores - others / wall  # cores (fractional) other processes left to this one
            self.threads = max(1, min(self.cores, AUTO_MAX_THREADS, math.floor(free + AUTO_IDLE_SHARE)))
        self._mark = (now, busy, own)
        return self.threads


def _allowed_cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _core_budget() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota if one is set."""
    cores = len(_allowed_cores())
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _allowed_cores_busy_seconds() -> float | None:
    """Non-idle CPU seconds since boot over the cores this process may use, from /proc/stat."""
    allowed, tick = _allowed_cores(), os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open("/proc/stat") as fh:
            lines = [ln.split() for ln in fh if ln.startswith("cpu") and ln[3:4].isdigit()]
    except OSError:
        return None
    busy = 0
    for fields in lines:
        if int(fields[0][3:]) in allowed:
            values = [int(v) for v in fields[1:]]
            busy += sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (guest is in user)
    return busy / tick


_auto: AutoThreads | None = None


def configure(n: int | str | None = None) -> int | str:
    """Set torch's intra-op threads from `n`, else $SMEME_THREADS, else DEFAULT_THREADS ('auto');
    returns the setting. Raises ValueError for a bad value."""
    global _auto
    setting = parse_threads(n)
    if setting is None:
        try:
            setting = parse_threads(os.environ.get("SMEME_THREADS")) or DEFAULT_THREADS
        except ValueError as exc:
            raise ValueError(f"SMEME_THREADS: {exc}") from None
    if setting == "auto":
        _auto = AutoThreads(_core_budget())
        torch.set_num_threads(1)
    else:
        _auto = None
        torch.set_num_threads(setting)
    return setting


def rebalance() -> int:
    """Under 'auto', re-decide the thread count from the last interval's load; the count in use."""
    if _auto is not None:
        n = _auto.decide()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
    return torch.get_num_threads()
