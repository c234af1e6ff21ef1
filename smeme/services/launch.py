"""Start the app's long work in background processes (smeme.services.jobs): pre-training,
S-MEME rounds, the rounds' deferred metrics and heatmaps. Bad settings raise at once, on the
page, not in the worker. A round's deferred metrics (smeme.deferred: the PF-ODE cross-entropy
and surprise) and heatmaps are read-only work queued once a training or rounds job ends, never
beside a round: a round never shares the CPU with them."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import access, jobs
from .cached import compute_heatmap, data_sample, heatmap_cached, samples
from .runs import has_plane, is_image_run, open_run
from .settings import HEATMAP_RES, preset_name, setup

if TYPE_CHECKING:
    from ..explore import ExploreConfig


def start_training(folder, dataset: str, dataset_params: dict | None = None, steps: int | None = None,
                   seed: int = 0, model_params: dict | None = None, label: str | None = None,
                   owner: str | None = None) -> jobs.Job:
    """Pre-train in a background process into `folder`; returns the Job (raises JobBusy, or
    ReadOnlyError in viewer mode). `owner`: the session that may stop it."""
    return jobs.start_process(folder, "train", _train_job, str(folder), dataset, dict(dataset_params or {}),
                              steps, seed, dict(model_params or {}), label=label or f"Training ({dataset})",
                              owner=owner, then=after_rounds)


def _train_job(job, folder: str, dataset: str, dataset_params: dict, steps, seed: int, model_params: dict):
    from ..pipeline import Cancelled, pretrain_run
    setup()
    folder = Path(folder)
    job.update(0.0, "Building the data set...")
    t0 = time.perf_counter()
    last = [0.0]

    def progress(step, total, loss):
        now = time.perf_counter()
        if now - last[0] >= 0.05 or step >= total:  # ~20 messages a second reach the page
            last[0] = now
            job.update(0.85 * step / max(total, 1), f"Training: step {step}/{total}", loss=loss, step=step)
        if step >= total:
            job.update(0.85, "Measuring the pre-trained model (round 0 metrics)...")

    try:
        pretrain_run(folder, dataset, dataset_params=dataset_params, steps=steps, seed=seed,
                     model_params=model_params, progress=progress, cancel=job.cancel, preset=preset_name())
    except Cancelled:
        raise jobs.JobCancelled() from None
    if job.cancel.is_set():
        raise jobs.JobCancelled()
    job.update(0.9, "Sampling the model for display...")
    run = open_run(folder)
    data_sample(run)
    samples(run, 0)
    job.update(1.0, f"Trained in {time.perf_counter() - t0:.0f} s.")
    return str(folder)


def start_rounds(folder, rounds: int, config: "ExploreConfig | dict", owner: str | None = None) -> jobs.Job:
    """Run `rounds` S-MEME rounds with `config` (an ExploreConfig) in a background process;
    each finished round is saved by explore.run_rounds and logged as a job event {'round',
    'metrics'}. The config crosses to the worker as its to_dict() and is rebuilt there once.
    A plain dict of settings (the CLI's, a script's) is made into an ExploreConfig here, so
    bad settings raise ExploreError on the page, not in the worker."""
    from ..explore import ExploreConfig
    if not isinstance(config, ExploreConfig):
        config = ExploreConfig.from_dict(dict(config))
    access.require_writer()  # before anything else is touched
    # read-only work never runs beside a round: stop it; the rounds job queues it again when it ends
    jobs.halt(folder, "heatmap")
    jobs.halt(folder, "metrics")
    return jobs.start_process(folder, "explore", _rounds_job, str(folder), int(rounds), config.to_dict(),
                              label=f"S-MEME rounds ({int(rounds)})", owner=owner, then=after_rounds)


def after_rounds(job: jobs.Job) -> None:
    """Once a training or rounds job has ended (any status: the rounds saved so far deserve
    theirs): the deferred metrics, then the heatmaps of its run's rounds, each in its own job."""
    try:
        start_deferred_metrics(job.folder, owner=job.owner)
    except Exception:  # noqa: BLE001 - e.g. a training stopped before round 0 was saved
        pass
    heatmaps_after(job)


RETRY_AFTER_S = 60.0  # a failed deferred-metrics job of the same rounds is not retried sooner


def start_deferred_metrics(folder, owner: str | None = None) -> jobs.Job | None:
    """Compute the deferred metrics of the run's rounds that lack them (smeme.deferred) in a
    background process: a read-only job of kind 'metrics', whose progress names the round and
    the ODE step. Returns the running job, or None when nothing is pending or rounds are
    running on the run (their job queues this one when it ends). A job that failed on the same
    rounds (e.g. a full disk) less than RETRY_AFTER_S ago is returned, not started again on
    every page visit."""
    from ..deferred import pending

    todo = pending(open_run(folder))
    if not todo:
        return None
    rounds_job = jobs.get(folder, "explore")
    if rounds_job is not None and rounds_job.running:
        return None
    topic = ",".join(map(str, todo))
    existing = jobs.get(folder, "metrics")
    if existing is not None and (existing.running or (
            existing.status == jobs.FAILED and existing.topic == topic
            and existing.clock() - existing.finished < RETRY_AFTER_S)):
        return existing
    return jobs.start_process(folder, "metrics", _deferred_job, str(folder), label="PF-ODE metrics",
                              writes=False, owner=owner, topic=topic)


def _deferred_job(job, folder: str) -> list[int]:
    from ..deferred import measure, pending
    setup()
    run = open_run(folder)
    todo = pending(run)
    job.update(0.0, f"PF-ODE metrics of round(s) {', '.join(map(str, todo))}...")

    def progress(index, count, k, done, total):
        if job.cancel.is_set():
            raise jobs.JobCancelled()
        job.update((index + done / max(total, 1)) / count,
                   f"PF-ODE metrics of round {k} ({index + 1} of {count}): ODE step {done}/{total}")

    measure(run, todo, progress=progress, cancel=job.cancel,
            on_round=lambda k, values: job.log({"round": int(k), "deferred": values}))
    return todo


def heatmaps_after(job: jobs.Job) -> jobs.Job | None:
    """Queue the heatmaps of every finished round of the job's run once the job has ended
    (also after a stop or a failure: the rounds saved so far deserve theirs), so that the
    rounds view, Compare and the perfect-solver line are ready without a visit to the Model
    page. Runs after the job, never beside it: a round never shares the CPU with them."""
    try:
        run = open_run(job.folder)
    except Exception:  # noqa: BLE001 - e.g. a training stopped before round 0 was saved
        return None
    if is_image_run(run) or not has_plane(run):
        return None
    return start_heatmaps(job.folder, run.rounds(), owner=job.owner)


def _rounds_job(job, folder: str, rounds: int, config_dict: dict):
    from ..explore import ExploreConfig, run_rounds
    config = ExploreConfig.from_dict(config_dict)  # the one rebuild, in the worker
    setup()
    run = open_run(folder)
    start = run.latest_round
    job.update(0.0, f"Round {start + 1}: starting...")

    def on_iteration(rnd, it, total, loss):
        done = rnd - start - 1
        job.update((done + it / max(total, 1)) / rounds,
                   f"Round {rnd} of {start + rounds}: solver iteration {it}/{total}", loss=loss)

    def on_round(rnd, metrics):
        job.log({"round": int(rnd), "metrics": metrics})
        job.update((rnd - start) / rounds, f"Round {rnd} saved; sampling it for display...")
        try:
            samples(open_run(folder), int(rnd))
        except Exception:  # noqa: BLE001 - display samples can be drawn later
            pass

    # the run's file lock for the whole job: a CLI `explore` on the same run is refused
    # at once instead of interleaving rounds (RunLockedError names the holder)
    with run.lock():
        done = run_rounds(run, rounds, config, on_iteration=on_iteration,
                          on_round=on_round, cancel=job.cancel)
    return list(done or [])


def start_heatmaps(folder, rounds, resolution: int = HEATMAP_RES, owner: str | None = None) -> jobs.Job | None:
    """Compute the missing heatmaps of `rounds` in a background process (read-only job).

    Returns None when all are cached already. One heatmap job per run at a time."""
    run = open_run(folder)
    todo = [k for k in dict.fromkeys(int(r) for r in rounds) if heatmap_cached(run, k, resolution) is None]
    if not todo:
        return None
    existing = jobs.get(folder, "heatmap")
    if existing is not None and existing.running:
        return existing
    rounds_job = jobs.get(folder, "explore")
    if rounds_job is not None and rounds_job.running:
        return None  # never beside a round: its job queues the heatmaps when it ends
    return jobs.start_process(folder, "heatmap", _heatmap_job, str(folder), todo, int(resolution),
                              label="Log-density heatmaps", writes=False, owner=owner)


def _heatmap_job(job, folder: str, todo: list[int], resolution: int):
    setup()
    r = open_run(folder)
    for i, k in enumerate(todo):
        if job.cancel.is_set():
            raise jobs.JobCancelled()
        msg = f"Log-density of round {k} on a {resolution}x{resolution} grid ({i + 1}/{len(todo)})"
        job.update(i / len(todo), msg + "...")

        def progress(done, total, i=i, msg=msg):
            job.update((i + done / max(total, 1)) / len(todo), f"{msg}: ODE step {done}/{total}")

        compute_heatmap(r, k, resolution, cancel=job.cancel, progress=progress)
    return todo
