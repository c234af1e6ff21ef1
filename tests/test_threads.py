"""Thread settings: 'auto' takes every allowed core only while other processes leave them idle."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from smeme import threads
from smeme.threads import AUTO_IDLE_SHARE, AUTO_MIN_INTERVAL, AutoThreads, parse_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeMachine:
    """Wall clock, all processes' busy seconds and our own CPU seconds, advanced by hand."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0.0, 0.0

    def run(self, seconds: float, ours: float, others: float):
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def auto(self, cores=2) -> AutoThreads:
        return AutoThreads(cores, read_busy=lambda: self.busy, read_own=lambda: self.own, clock=lambda: self.now)


def test_parse_threads_takes_auto_and_positive_whole_numbers_only():
    assert parse_threads("auto") == "auto" and parse_threads(" AUTO ") == "auto"
    assert parse_threads("3") == 3 and parse_threads(2) == 2 and parse_threads("") is None and parse_threads(None) is None
    for bad in ("0", "-1", "1.5", "two", 0):
        with pytest.raises(ValueError, match="thread count"):
            parse_threads(bad)


def test_auto_uses_every_core_only_after_an_idle_interval():
    m = FakeMachine()
    auto = m.auto()
    assert auto.decide() == 1  # nothing measured yet
    m.run(1.0, ours=1.0, others=0.0)
    assert auto.decide() == 2  # the other core was idle
    m.run(1.0, ours=1.6, others=0.9)  # another process took most of a core
    assert auto.decide() == 1
    m.run(1.0, ours=1.0, others=1.0)
    assert auto.decide() == 1
    m.run(1.0, ours=1.0, others=AUTO_IDLE_SHARE * 1.5)  # a light but real load
    assert auto.decide() == 1
    m.run(1.0, ours=1.0, others=AUTO_IDLE_SHARE * 0.5)  # background noise
    assert auto.decide() == 2


def test_auto_counts_the_cores_others_leave_idle_up_to_its_cap():
    m = FakeMachine()
    auto = m.auto(cores=4)
    auto.decide()
    m.run(1.0, ours=1.0, others=1.0)  # two of four cores idle: capped at AUTO_MAX_THREADS
    assert auto.decide() == threads.AUTO_MAX_THREADS == 2
    m.run(1.0, ours=2.0, others=2.5)  # 1.5 cores left: one thread
    assert auto.decide() == 1


def test_auto_keeps_its_decision_within_the_minimum_interval_and_on_one_core():
    m = FakeMachine()
    auto = m.auto()
    auto.decide()
    m.run(AUTO_MIN_INTERVAL / 2, ours=1.0, others=0.0)
    assert auto.decide() == 1  # too short to judge: unchanged
    m.run(AUTO_MIN_INTERVAL, ours=1.0, others=0.0)
    assert auto.decide() == 2
    single = m.auto(cores=1)
    single.decide()
    m.run(1.0, ours=1.0, others=0.0)
    assert single.decide() == 1


def test_auto_stays_on_one_thread_without_proc_stat():
    auto = AutoThreads(2, read_busy=lambda: None, read_own=lambda: 0.0)
    assert auto.decide() == 1 and auto.decide() == 1


def test_configure_and_rebalance_set_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.configure(1) == 1 and threads.rebalance() == 1
        monkeypatch.setenv("SMEME_THREADS", "auto")
        assert threads.configure() == "auto" and torch.get_num_threads() == 1
        m = FakeMachine()
        monkeypatch.setattr(threads, "_auto", m.auto())
        threads.rebalance()
        m.run(1.0, ours=1.0, others=0.0)
        assert threads.rebalance() == 2 and torch.get_num_threads() == 2
        m.run(1.0, ours=2.0, others=1.0)
        assert threads.rebalance() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SMEME_THREADS", "lots")
        with pytest.raises(ValueError, match="SMEME_THREADS"):
            threads.configure()
    finally:
        threads.configure(before)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs /proc/stat and two cores")
def test_auto_sees_a_process_spinning_on_the_other_core():
    """The real /proc/stat reader: a spinning child is 'another process' and keeps us on one thread."""
    auto = AutoThreads(len(os.sched_getaffinity(0)))
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)
        auto.decide()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # our own work meanwhile
            sum(range(10_000))
        assert auto.decide() == 1
    finally:
        spinner.kill()
        spinner.wait()


def test_cli_takes_threads_auto_and_names_a_bad_value():
    env = {**os.environ, "PYTHONPATH": ROOT}
    missing = ["report", "--run", os.path.join(ROOT, "no-such-run")]  # reaches the command, which names the run
    ok = subprocess.run([sys.executable, "-m", "smeme", "--threads", "auto", *missing], env=env,
                        capture_output=True, text=True, timeout=120)
    assert "no-such-run" in ok.stderr and "thread" not in ok.stderr.lower(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "smeme", "--threads", "0", *missing], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "at least 1" in bad.stderr
    env["SMEME_THREADS"] = "lots"
    bad_env = subprocess.run([sys.executable, "-m", "smeme", *missing], env=env, capture_output=True, text=True,
                             timeout=120)
    assert bad_env.returncode != 0 and "SMEME_THREADS" in bad_env.stderr and "Traceback" not in bad_env.stderr


def test_the_app_logs_a_bad_smeme_threads_and_runs_on_the_default(monkeypatch, caplog):
    from smeme.services import settings

    before = torch.get_num_threads()
    monkeypatch.setenv("SMEME_THREADS", "lots")
    monkeypatch.setattr(settings, "_setup_done", False)
    try:
        with caplog.at_level("WARNING", logger="smeme.settings"):
            settings.setup()
        assert "SMEME_THREADS" in caplog.text and threads._auto is not None
    finally:
        threads.configure(before)
