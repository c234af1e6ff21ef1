"""A ready demo: the toy and triangles models trained and explored for 3 rounds, in the
background, and the ready digits model imported (smeme/assets), so that a teacher opens the
app to finished runs and a digits model to explore live.

One job (kind 'demo', on the runs folder) runs the stages one after another through the
app's own jobs (training, rounds, the heatmaps those queue), so each run's page shows its
own progress and refuses a second writer as usual; the demo job only waits, adds up the
progress and forwards a stop. Stages already done (a run trained, rounds run) are skipped,
so preparing again after a stop continues where it ended.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..bundle import BundleError
from . import access, jobs
from .image_runs import import_ready_digits
from .launch import start_rounds, start_training
from .runs import open_run
from .settings import explore_defaults, runs_dir, training_defaults

KIND = "demo"
ROUNDS = 3
RUNS = (("toy-default", "toy"), ("triangles-demo", "triangles"))
POLL_S = 0.3


def demo_folder() -> Path:
    return runs_dir()


def _rounds_done(folder: Path) -> int | None:
    """Finished S-MEME rounds of the run in `folder`; None if it is not trained."""
    try:
        return len(open_run(folder).rounds()) - 1
    except Exception:  # noqa: BLE001 - not there (yet), or damaged: train it
        return None


def status() -> list[dict]:
    """Per demo run: {'name', 'dataset', 'folder', 'rounds' (None = not trained), 'ready'}."""
    out = []
    for name, dataset in RUNS:
        folder = runs_dir() / name
        done = _rounds_done(folder)
        out.append({"name": name, "dataset": dataset, "folder": str(folder.resolve()), "rounds": done,
                    "ready": done is not None and done >= ROUNDS})
    return out


def ready() -> bool:
    return all(r["ready"] for r in status())


def _train(name: str, dataset: str, owner: str | None):
    folder = runs_dir() / name
    if _rounds_done(folder) is not None:
        return None
    d = training_defaults(dataset)
    return start_training(folder, dataset, steps=d["steps"], seed=0,
                          model_params={"width": d["width"], "depth": d["depth"]},
                          label=f"Demo: training the {dataset} model", owner=owner)


def _explore(name: str, owner: str | None):
    folder = runs_dir() / name
    done = _rounds_done(folder) or 0
    if done >= ROUNDS:
        return None
    return start_rounds(folder, ROUNDS - done, explore_defaults(open_run(folder)), owner=owner)


def _stages(owner: str | None) -> list[tuple[str, str, Callable[[], jobs.Job | None]]]:
    """(label, run name, start) per stage; the stages' jobs belong to the demo's session."""
    stages = []
    for name, dataset in RUNS:
        stages.append((f"Training the {dataset} model", name, lambda n=name, d=dataset: _train(n, d, owner)))
        stages.append((f"{ROUNDS} S-MEME rounds on {name}", name, lambda n=name: _explore(n, owner)))
    return stages


def _wait(job: jobs.Job, sub: jobs.Job, share: tuple[float, float], label: str) -> None:
    """Follow `sub` until it ends, as the slice `share` of the demo's progress."""
    lo, hi = share
    while not sub.wait(POLL_S):
        if job.cancel.is_set():
            sub.stop()
        job.update(lo + (hi - lo) * sub.fraction, f"{label}: {sub.message}")
    if sub.status == jobs.FAILED:
        raise RuntimeError(f"{label} failed: {sub.error}")
    if sub.status == jobs.CANCELLED or job.cancel.is_set():
        raise jobs.JobCancelled()


def _import_digits(job: jobs.Job) -> None:
    """The ready digits model (shipped with the package), so a class explores digits rounds
    live on the Images page; an installation without it skips this (said in the progress)."""
    job.update(message="Importing the ready digits model...")
    try:
        import_ready_digits()
    except BundleError as exc:
        job.log({"skipped": str(exc)})


def _prepare(job: jobs.Job):
    stages = _stages(job.owner)
    slices = len(stages) + 1  # the last slice: the heatmaps the last rounds queued
    for i, (label, name, start) in enumerate(stages):
        share = (i / slices, (i + 1) / slices)
        if job.cancel.is_set():
            raise jobs.JobCancelled()
        job.update(share[0], f"{label}...")
        # what the run's earlier jobs queued (heatmaps) finishes first: never two at a time
        for other in jobs.active(runs_dir() / name):
            _wait(job, other, (share[0], share[0]), f"{label}: waiting for {other.label or other.kind}")
        sub = start()
        if sub is not None:
            _wait(job, sub, share, label)
    for name, _ in RUNS:  # the heatmaps the last rounds queued
        for other in jobs.active(runs_dir() / name):
            _wait(job, other, (len(stages) / slices, 1.0), f"Log-density heatmaps of {name}")
    _import_digits(job)
    job.update(1.0, "The demo is ready.")
    return [r["folder"] for r in status()]


def start_demo(owner: str | None = None) -> jobs.Job:
    """Prepare the demo in the background (JobBusy if it is being prepared already); `owner`:
    the session that may stop it (and the jobs it starts)."""
    access.require_writer()
    return jobs.start(demo_folder(), KIND, _prepare, label="Preparing the demo", writes=False, owner=owner)


def job() -> jobs.Job | None:
    return jobs.get(demo_folder(), KIND)
