"""Background jobs for long work (training, rounds, heatmaps) that must outlive a page.

A job runs `target(job)` in a daemon thread. The registry is module-level, so it lives as
long as the Python process: Streamlit reruns, page switches and browser reloads all find
the same job again and read its progress. Jobs are keyed by (run folder, kind); at most
one job that *writes* to a run folder runs at a time, across every browser tab of this
server. (Across processes, the run's file lock from `smeme.store` guards the writes; the
targets take it.)

`start_process` runs the work in a child process instead (forkserver, torch preloaded):
the registry, progress and cancel work the same, relayed through a queue by the job's
thread. Heavy numeric work belongs there: in a thread it shares the GIL with the Streamlit
server and runs several times slower while the app is open.

Nothing here imports Streamlit: pages poll `get()` / `snapshot()`; tests drive it directly.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from . import access
from .eta import Pace

log = logging.getLogger("smeme.jobs")

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
HISTORY_MAX = 5000  # losses kept per job (older points are thinned, never the newest)


class JobBusy(RuntimeError):
    """Another job already works on the same run; the message says which."""


class JobCancelled(Exception):
    """A target may raise this to end as 'cancelled' (returning normally works too)."""


def _norm(folder) -> str:
    return os.path.realpath(os.fspath(folder))


_ids = itertools.count(1)


@dataclass
class Job:
    folder: str
    kind: str
    label: str = ""
    writes: bool = True
    owner: str | None = None  # the app session that started it (smeme.services.access)
    topic: str = ""  # what the job works on beyond its kind (e.g. 'digits'), for pages that list jobs
    id: int = field(default_factory=lambda: next(_ids))
    status: str = RUNNING
    fraction: float = 0.0
    message: str = "Starting..."
    losses: list = field(default_factory=list)  # [(step, loss)], the live loss curve
    events: list = field(default_factory=list)  # e.g. {'round': k, 'metrics': {...}}
    result: Any = None
    error: str | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)  # seconds; tests pass a simulated one
    started: float | None = None  # set from `clock` when the job is made
    finished: float | None = None
    updated: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    traceback: str | None = field(default=None, repr=False)
    pace: Pace = field(default_factory=Pace, repr=False)  # the time-left estimator (services.eta)

    def __post_init__(self):
        if self.started is None:
            self.started = self.clock()
        self.updated = self.started

    # -- called from the worker thread -------------------------------------------------
    def update(self, fraction: float | None = None, message: str | None = None,
               loss: float | None = None, step: int | None = None) -> None:
        with self._lock:
            now = self.clock()
            if fraction is not None:
                self.fraction = float(min(max(fraction, 0.0), 1.0))
                self.pace.add(now, self.fraction)
            if message is not None:
                self.message = str(message)
            if loss is not None:
                self.losses.append((len(self.losses) if step is None else int(step), float(loss)))
                if len(self.losses) > HISTORY_MAX:  # thin the older half, keep the recent
                    half = len(self.losses) // 2
                    self.losses = self.losses[:half:2] + self.losses[half:]
            self.updated = now

    def log(self, event: dict) -> None:
        with self._lock:
            self.events.append(dict(event))
            self.updated = self.clock()

    # -- read from anywhere -------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return (self.folder, self.kind)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def elapsed(self) -> float:
        return (self.finished or self.clock()) - self.started

    def snapshot(self) -> dict:
        """A consistent copy of the job's state, safe to render."""
        with self._lock:
            return {
                "id": self.id, "folder": self.folder, "kind": self.kind, "label": self.label,
                "status": self.status, "fraction": self.fraction, "message": self.message,
                "losses": list(self.losses), "events": list(self.events),
                "error": self.error, "elapsed": self.elapsed,
                "cancel_requested": self.cancel.is_set(),
                "eta": self.pace.time_left(self.clock()) if self.status == RUNNING else None,
            }

    def stop(self) -> None:
        """Ask the job to stop; the target checks `job.cancel` between steps."""
        self.cancel.set()
        with self._lock:
            if self.status == RUNNING:
                self.message = "Stopping after the current step..."

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; True if it did within `timeout`."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return self.status in FINISHED

    def _finish(self, status: str, result=None, error: str | None = None) -> None:
        with self._lock:
            self.status = status
            self.result = result
            self.error = error
            if status == DONE:
                self.fraction = 1.0
            self.finished = self.clock()
            self.updated = self.finished
            if status == CANCELLED:
                self.message = "Stopped."
            elif status == FAILED:
                self.message = error or "Failed."


# Kept on the `sys` module so that a reload of this module (Streamlit's file watcher drops
# changed modules from sys.modules) does not orphan running jobs.
import sys as _sys  # noqa: E402

if not hasattr(_sys, "_smeme_jobs"):
    _sys._smeme_jobs = ({}, threading.Lock())
_REGISTRY: dict[tuple[str, str], Job] = _sys._smeme_jobs[0]
_REG_LOCK = _sys._smeme_jobs[1]


def format_time_left(seconds: float | None) -> str:
    """'about 40 s left', 'about 3 min left'; '' when unknown."""
    if seconds is None:
        return ""
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    return f"about {round(seconds / 60):.0f} min left"


def progress_text(snap: dict) -> str:
    """A running job's progress line: its message, the time so far and an estimate of the rest."""
    left = format_time_left(snap.get("eta"))
    return f"{snap['message']}  ({snap['elapsed']:.0f} s" + (f", {left})" if left else ")")


def _describe(job: Job) -> str:
    return job.label or job.kind


def start(folder, kind: str, target: Callable[[Job], Any], *, label: str = "",
          writes: bool = True, owner: str | None = None, then: Callable[[Job], Any] | None = None,
          topic: str = "") -> Job:
    """Start `target(job)` in a background thread and register it under (folder, kind).

    Raises JobBusy if a job of the same kind runs on this folder, or if `writes` and any
    other writing job runs on it (two tabs training / exploring the same run); ReadOnlyError
    for a writing job in viewer mode. `owner` names the session that may stop it.
    `then(job)`, if given, runs in the same thread once the job has finished (any status),
    e.g. to queue follow-up work that must not compete with this job; its errors are ignored.
    """
    if writes:
        access.require_writer()
    key_folder = _norm(folder)
    with _REG_LOCK:
        for (f, k), other in _REGISTRY.items():
            if f != key_folder or not other.running:
                continue
            if k == kind or (writes and other.writes):
                raise JobBusy(
                    f"This run is busy: '{_describe(other)}' has been running for "
                    f"{other.elapsed:.0f} s (perhaps from another tab); wait for it or stop it first.")
        job = Job(folder=key_folder, kind=kind, label=label, writes=writes, owner=owner, topic=topic)
        _REGISTRY[job.key] = job

    def body():
        try:
            result = target(job)
        except JobCancelled:
            job._finish(CANCELLED)
        except _ChildFailed as exc:
            job.traceback = exc.traceback
            job._finish(FAILED, error=str(exc))
            log.error("%s on %s failed: %s\n%s", _describe(job), key_folder, exc, exc.traceback or "")
        except BaseException as exc:  # noqa: BLE001 - reported to the page, never raised there
            job.traceback = traceback.format_exc()
            job._finish(FAILED, error=_message(exc))
            log.error("%s on %s failed:\n%s", _describe(job), key_folder, job.traceback)
        else:
            job._finish(CANCELLED if job.cancel.is_set() else DONE, result=result)
        if then is not None:
            try:
                then(job)
            except Exception:  # noqa: BLE001 - follow-up work is a nicety; the job's outcome stands
                job.traceback = (job.traceback or "") + traceback.format_exc()

    t = threading.Thread(target=body, name=f"smeme-{kind}-{job.id}", daemon=True)
    job._thread = t
    t.start()
    return job


def _message(exc: BaseException) -> str:
    """The page's one-line error: smeme's own errors are already one clear sentence."""
    msg = str(exc).strip() or exc.__class__.__name__
    ours = type(exc).__module__.startswith("smeme")
    if not (ours or isinstance(exc, (ValueError, RuntimeError, OSError))) or not str(exc).strip():
        msg = f"{exc.__class__.__name__}: {msg}"
    return msg


# -- jobs in a child process --------------------------------------------------------------
# torch._dynamo too: torch.optim.Adam imports it on first construction, about a second of
# every training or round job otherwise.
PRELOAD = ("torch", "torch._dynamo", "smeme.pipeline", "smeme.explore", "smeme.density", "smeme.services.launch")
ENV_PREFIX = "SMEME_"  # settings the child must see as they are NOW (the forkserver may be older)


class _ChildFailed(RuntimeError):
    def __init__(self, message: str, tb: str | None):
        super().__init__(message)
        self.traceback = tb


class _ChildJob:
    """What `func(job, ...)` sees in the child: update/log/cancel like a Job, sent by queue."""

    def __init__(self, q, cancel):
        self._q = q
        self.cancel = cancel

    def update(self, fraction=None, message=None, loss=None, step=None) -> None:
        self._q.put(("update", {"fraction": fraction, "message": message, "loss": loss, "step": step}))

    def log(self, event: dict) -> None:
        self._q.put(("log", dict(event)))


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def warm_processes() -> None:
    """Start the forkserver (it imports torch and smeme once) ahead of the first job."""
    from multiprocessing import forkserver
    _context()
    forkserver.ensure_running()


def _child_main(func, args, q, cancel, env: dict) -> None:
    for k in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env]:
        del os.environ[k]
    os.environ.update(env)
    job = _ChildJob(q, cancel)
    try:
        result = func(job, *args)
    except JobCancelled:
        q.put(("cancelled",))
    except BaseException as exc:  # noqa: BLE001 - relayed to the parent's job
        q.put(("failed", _message(exc), traceback.format_exc()))
    else:
        q.put(("cancelled",) if cancel.is_set() else ("done", result))


_START_LOCK = threading.Lock()


def _start_without_main(proc) -> None:
    """proc.start(), but the child does not re-run `__main__`: under Streamlit, `__main__` is
    the page script being run (a child re-ran pages/4_Images.py in bare mode and failed),
    and `func` is imported by its module name anyway."""
    from multiprocessing import spawn
    with _START_LOCK:
        original = spawn.get_preparation_data

        def without_main(name):
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            proc.start()
        finally:
            spawn.get_preparation_data = original


def _relay(job: Job, func, args) -> Any:
    """The parent side: start the child, copy its progress into `job`, forward a stop."""
    ctx = _context()
    q, cancel = ctx.Queue(), ctx.Event()
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    proc = ctx.Process(target=_child_main, args=(func, tuple(args), q, cancel, env),
                       name=f"smeme-{job.kind}-{job.id}", daemon=True)
    _start_without_main(proc)
    outcome = None
    while outcome is None:
        if job.cancel.is_set() and not cancel.is_set():
            cancel.set()
        try:
            msg = q.get(timeout=0.1)
        except queue.Empty:
            if proc.is_alive():
                continue
            try:  # the child may have exited right after its last message
                msg = q.get(timeout=1.0)
            except queue.Empty:
                break
        if msg[0] == "update":
            job.update(**msg[1])
        elif msg[0] == "log":
            job.log(msg[1])
        else:
            outcome = msg
    proc.join(timeout=10)
    if outcome is None:
        raise _ChildFailed(f"The worker process of '{_describe(job)}' ended without a result "
                           f"(exit code {proc.exitcode}); finished rounds are kept on disk.", None)
    if outcome[0] == "cancelled":
        raise JobCancelled()
    if outcome[0] == "failed":
        raise _ChildFailed(outcome[1], outcome[2])
    return outcome[1]


def start_process(folder, kind: str, func: Callable[..., Any], *args, label: str = "",
                  writes: bool = True, owner: str | None = None, then: Callable[[Job], Any] | None = None,
                  topic: str = "") -> Job:
    """Like `start`, but `func(job, *args)` runs in a child process. `func` must be a
    module-level function and `args` picklable; `job.update/log/cancel` work as in a thread."""
    return start(folder, kind, lambda job: _relay(job, func, args), label=label, writes=writes, owner=owner,
                 then=then, topic=topic)


def get(folder, kind: str) -> Job | None:
    with _REG_LOCK:
        return _REGISTRY.get((_norm(folder), kind))


def active(folder=None) -> list[Job]:
    """Running jobs (of one folder, or all), oldest first."""
    f = None if folder is None else _norm(folder)
    with _REG_LOCK:
        jobs = [j for j in _REGISTRY.values() if j.running and (f is None or j.folder == f)]
    return sorted(jobs, key=lambda j: j.started)


def busy(folder) -> Job | None:
    """The running writing job on this folder, if any."""
    for j in active(folder):
        if j.writes:
            return j
    return None


def stop(folder, kind: str, who: str | None = None, server_address: str | None = None) -> bool:
    """Ask the running job of (folder, kind) to stop, for session `who`: refused (ReadOnlyError)
    in viewer mode and, unless single-user, for a job another session started."""
    job = get(folder, kind)
    if job is None or not job.running:
        return False
    access.require_may_stop(job, who, server_address)
    job.stop()
    return True


def halt(folder, kind: str) -> bool:
    """The services' own stop, with no session's rights: work that must not run beside new
    work (a run's read-only heatmaps when its rounds start) is stopped by the work itself."""
    job = get(folder, kind)
    if job is None or not job.running:
        return False
    job.stop()
    return True


def forget(folder, kind: str) -> None:
    """Drop a finished job from the registry (a running one stays)."""
    with _REG_LOCK:
        job = _REGISTRY.get((_norm(folder), kind))
        if job is not None and not job.running:
            del _REGISTRY[job.key]


def _pending() -> list[Job]:
    """Jobs still running, or finished but still in their `then` (which may queue more)."""
    with _REG_LOCK:
        return [j for j in _REGISTRY.values() if j.running or (j._thread is not None and j._thread.is_alive())]


def wait_all(timeout: float = 60.0) -> bool:
    """Wait for every running job, and for the jobs they queue when they end (`then`; a
    job's wait covers its `then`). True if all finished within `timeout`."""
    deadline = time.time() + timeout
    while True:
        pending = _pending()
        if not pending:
            return True
        for job in pending:
            job.wait(max(deadline - time.time(), 0.0))
        if time.time() >= deadline:
            return not _pending()
