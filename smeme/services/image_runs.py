"""The Images page's runs and work: digits runs under cache/runs, Stable Diffusion runs under
cache/sd_runs, and the background jobs that pre-train digits and run image rounds."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import access, jobs
from .runs import open_run, safe_name
from .settings import cache_dir, models_dir, runs_dir, setup


def digits_runs() -> list[Path]:
    """Digits run folders, newest first."""
    from ..store import find_runs

    def modified(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(find_runs(runs_dir(), "digits"), key=modified, reverse=True)


def sd_runs_dir() -> Path:
    return cache_dir() / "sd_runs"


def sd_run_folder(name: str) -> Path:
    """The folder of the SD run named `name` in the app: always directly under cache/sd_runs."""
    return sd_runs_dir() / safe_name(name, "sd-run")


def sd_models() -> list[tuple[str, str]]:
    """(label, source) of each Stable Diffusion pipeline the app may use: the folders under
    the models directory (SMEME_MODELS_DIR, default cache/models) and the models in the local
    Hugging Face cache. Nothing typed in a browser names a model folder."""
    from ..images.sd import local_pipelines

    return local_pipelines(models_dir())


def sd_runs() -> list[Path]:
    from ..store import find_runs

    return find_runs(sd_runs_dir(), "sd")


def metrics_table(metrics: dict, rounds: list[int], keys: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per round, one column per (metric key, label)."""
    rows = []
    for k in rounds:
        m = metrics.get(k, {})
        rows.append({"round": k, **{label: m.get(key) for key, label in keys}})
    return pd.DataFrame(rows).set_index("round")


def start_digits_training(folder, steps: int, rare_fraction: float, seed: int, owner: str | None = None) -> jobs.Job:
    """Pre-train a digits UNet into `folder` in a background job (raises JobBusy);
    rare_fraction >= 1 keeps every image (the balanced set)."""
    def target(job, folder=folder, steps=int(steps), frac=float(rare_fraction), seed=int(seed)):
        from ..pipeline import pretrain_run
        setup()
        job.update(0.0, "Building the data set and the classifier...")

        def progress(step, total, loss):
            job.update(0.9 * step / max(total, 1), f"Training: step {step}/{total}", loss=loss, step=step)

        params = {} if frac >= 1 else {"rare_fraction": frac}
        if frac >= 1:
            params["balanced"] = True
        pretrain_run(folder, "digits", dataset_params=params, steps=steps, seed=seed, progress=progress,
                     cancel=job.cancel)
        job.update(1.0, "Done: round 0 saved with its metrics.")
        return str(folder)

    return jobs.start(folder, "train", target, label="Pre-training digits", owner=owner)


def start_digits_rounds(folder, more: int, lam: float, owner: str | None = None) -> jobs.Job:
    """`more` S-MEME rounds on a digits run in a background job (raises JobBusy)."""
    def target(job, folder=folder, more=int(more), lam=float(lam)):
        from ..images.digits_rounds import run_digits_rounds
        setup()
        r = open_run(folder)
        first = r.latest_round

        def on_iteration(k, i, total, loss):
            job.update(((k - first - 1) + i / max(total, 1)) / more,
                       f"Round {k}: solver iteration {i}/{total}", loss=loss)

        def on_round(k, m):
            job.log({"round": int(k), "metrics": m})

        return run_digits_rounds(r, more, lam=lam, on_iteration=on_iteration, on_round=on_round,
                                 cancel=job.cancel)

    return jobs.start(folder, "explore", target, label=f"S-MEME digits rounds ({int(more)})", owner=owner)


def start_sd_rounds(name: str, source: str, prompt: str, more: int, owner: str | None = None) -> jobs.Job:
    """Create (or reopen) the SD run called `name` (under cache/sd_runs) on `source`, one of
    sd_models(), and run `more` rounds in a background job. Raises SDError / SDRunError for a
    source that is not offered or a bad folder, JobBusy if the run is busy."""
    from ..images.sd import SDConfig, SDError
    from ..images.sd_explore import SDRun

    access.require_writer()  # before the run folder is written
    if str(source) not in {src for _, src in sd_models()}:
        raise SDError("Choose a Stable Diffusion model from the list (the models folder or the local "
                      "Hugging Face cache).")
    folder = sd_run_folder(name)
    run = SDRun.create(folder, SDConfig(source=str(source), prompt=prompt))

    def target(job, run=run, more=int(more)):
        from ..images.sd_explore import run_sd_rounds
        setup()

        def on_iteration(k, i, total, loss):
            job.update(i / max(total, 1), f"Round {k}: iteration {i}/{total}", loss=loss)

        with run.lock():
            return run_sd_rounds(run, more, on_iteration=on_iteration,
                                 on_round=lambda k, m: job.log({"round": k, "metrics": m}),
                                 cancel=job.cancel)

    return jobs.start(folder, "explore", target, label=f"S-MEME SD rounds ({int(more)})", owner=owner)
