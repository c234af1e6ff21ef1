"""The Images page's runs and work: digits runs under cache/runs, Stable Diffusion runs under
cache/sd_runs, and the background jobs that pre-train digits and run image rounds."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ..bundle import BundleError, import_bundle
from . import access, jobs
from .runs import open_run, safe_name
from .settings import cache_dir, models_dir, runs_dir, setup

DIGITS_TOPIC = "digits"  # the topic of the digits jobs (jobs.Job.topic), so any session finds them

# The ready digits model: a bundle that ships with the package (smeme/assets), its SHA-256
# and how it was made (steps, seconds, quality) in a manifest beside it.
READY_NAME = "digits-ready"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
READY_BUNDLE = ASSETS / "digits-ready.zip"
READY_MANIFEST = ASSETS / "digits-ready.json"


def digits_runs() -> list[Path]:
    """Digits run folders, newest first."""
    from ..store import find_runs

    def modified(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(find_runs(runs_dir(), "digits"), key=modified, reverse=True)


def ready_manifest() -> dict | None:
    """The ready digits model's manifest ({'sha256', 'train': {...}, 'round': {...}}), or None
    when this installation has no ready model."""
    try:
        manifest = json.loads(READY_MANIFEST.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return manifest if isinstance(manifest, dict) and READY_BUNDLE.is_file() else None


def ready_digits_folder() -> Path:
    return runs_dir() / READY_NAME


def import_ready_digits() -> Path:
    """Add the ready digits model as the run 'digits-ready' (kept if it is there already);
    returns its folder. BundleError (one sentence) when the shipped bundle is missing or does
    not match its checksum; ReadOnlyError in viewer mode."""
    access.require_writer()
    folder = ready_digits_folder()
    if (folder / "config.json").is_file():
        return folder
    manifest = ready_manifest()
    if manifest is None:
        raise BundleError(f"This installation has no ready digits model ({READY_BUNDLE.name} is missing); "
                          "pre-train one instead.")
    digest = hashlib.sha256(READY_BUNDLE.read_bytes()).hexdigest()
    if digest != manifest.get("sha256"):
        raise BundleError(f"The ready digits model {READY_BUNDLE.name} does not match its checksum "
                          "(a damaged copy); reinstall smeme or pre-train a model instead.")
    try:
        return import_bundle(READY_BUNDLE, runs_dir(), name=READY_NAME)
    except BundleError:
        if (folder / "config.json").is_file():  # another session imported it just now
            return folder
        raise


def seconds_per_training_step() -> float | None:
    """Measured seconds per digits training step (one core): the ready model's own training."""
    value = (ready_manifest() or {}).get("train", {}).get("cpu_seconds_per_step")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def measured_where(part: str = "train") -> str:
    """Where the ready model's timings of `part` ('train' or 'round') were taken: 'one core, machine load 17'."""
    manifest = ready_manifest() or {}
    load = (manifest.get(part) or {}).get("load_average_at_measurement", manifest.get("load_average_at_measurement"))
    return "one core" + (f", machine load {load:g}" if isinstance(load, (int, float)) else "")


def round_seconds(run=None) -> tuple[float, str] | None:
    """Measured seconds of one digits round and where they come from: the median of this
    run's rounds (solver time, saved with each round), else the ready model's measured round."""
    times = []
    if run is not None:
        times = sorted(float(m["solver_seconds"]) for k, m in run.metrics().items()
                       if k > 0 and isinstance(m.get("solver_seconds"), (int, float)))
    if times:
        return times[len(times) // 2], f"the median of this run's {len(times)} round(s)"
    measured = (ready_manifest() or {}).get("round", {}).get("cpu_seconds")
    if isinstance(measured, (int, float)) and measured > 0:
        return float(measured), f"measured on the ready model, {measured_where('round')}"
    return None


def running_digits_trainings() -> list[jobs.Job]:
    """Digits pre-trainings running now, whichever session started them, oldest first."""
    return [j for j in jobs.active() if j.kind == "train" and j.topic == DIGITS_TOPIC]


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

    return jobs.start(folder, "train", target, label="Pre-training digits", owner=owner, topic=DIGITS_TOPIC)


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

    return jobs.start(folder, "explore", target, label=f"S-MEME digits rounds ({int(more)})", owner=owner,
                      topic=DIGITS_TOPIC)


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


# -- what the Images page shows: grids, the SD run's rounds, the metrics' tables ------------

def sd_errors() -> tuple[type[Exception], ...]:
    """The errors SD work raises with one sentence for the page (a bad folder or model, a grid
    the run cannot draw); imported when asked, since they pull in torch."""
    from ..images.grid import GridError
    from ..images.sd import SDError
    from ..images.sd_explore import SDRunError

    return SDError, SDRunError, GridError


def image_grid(run, rounds: list[int], n: int, seed: int):
    """The grid image of a digits or SD run: one row per round, `n` columns of samples drawn
    from the same noise (noise `seed`) in every round."""
    from ..images.grid import make_grid

    return make_grid(run, rounds, n=n, seed=seed)


def open_sd_run(folder) -> tuple[object, list[int], dict]:
    """(the SD run in `folder`, its rounds, its metrics); raises SDRunError (one sentence)."""
    from ..images.sd_explore import SDRun

    run = SDRun.open(folder)
    return run, run.rounds(), run.metrics()


def class_shares_table(metrics: dict, rounds: list[int]) -> pd.DataFrame | None:
    """Per shown round, the share (%) of samples the digit classifier reads as each digit
    0-9 (columns 'round k', rows the digits); None when no shown round has them."""
    shares = {f"round {k}": metrics.get(k, {}).get("class_shares") for k in rounds}
    shares = {k: v for k, v in shares.items() if v}
    if not shares:
        return None
    return 100 * pd.DataFrame(shares, index=[str(d) for d in range(10)])


def missing_metric_weights() -> list[str]:
    """What SD metric weights are missing on this server, one sentence each (none: [])."""
    from ..images.sd_metrics import find_metric_weights

    return list(find_metric_weights().missing)


def metrics_not_computed(metrics: dict) -> list[str] | None:
    """The sentences a round saved about the metric weights it lacked (the first such round's)."""
    return next((m.get("missing_weights") for m in metrics.values() if m.get("missing_weights")), None)
