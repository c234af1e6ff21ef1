"""High-level steps shared by the CLI and the app: pre-train a run, sample it, score points."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from .store import Run, StoreError, check_target, folder_lock


class Cancelled(Exception):
    """The user cancelled; nothing was saved."""


def _jsonable_params(params: dict) -> dict:
    return {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in params.items()}


def pretrain_run(folder, dataset: str, dataset_params: dict | None = None, n: int | None = None,
                 steps: int | None = None, seed: int = 0, model_params: dict | None = None,
                 progress=None, cancel=None, force: bool = False, preset: str | None = None,
                 train_params: dict | None = None) -> Run:
    """Build the data set, train a model on its standardised features, save it as round 0.

    The target folder is checked before any work (an existing run is replaced only with
    force=True, and only after the new run is completely written), and an existing folder's
    lock is taken before training, so a run another process is writing is refused at once.
    Round-0 metrics are computed after the round is saved; if they fail, the trained round is kept.
    A csv run keeps the rows it trained on (see pretrain_rows): its config names no file.
    """
    from .data import make_dataset

    params = dict(dataset_params or {})

    def build():
        ds = make_dataset(dataset, n=n, seed=seed, **dict(params))
        return ds, ({} if dataset == "csv" else params), (ds.raw if dataset == "csv" else None)

    return _pretrain_locked(folder, dataset, build, steps, seed, model_params, progress, cancel, force,
                            preset, train_params)


def pretrain_rows(folder, rows, columns, n: int | None = None, steps: int | None = None, seed: int = 0,
                  model_params: dict | None = None, progress=None, cancel=None, force: bool = False,
                  preset: str | None = None, train_params: dict | None = None) -> Run:
    """Pre-train a csv run on `rows` (n x len(columns) numbers in memory, e.g. read from a
    file or drawn by hand), checked as a CSV file's are (DataError). The run keeps the rows it
    trained on (smeme.store TRAINING_ROWS_FILE, sha256 in its config), so it is self-contained:
    it travels in a bundle and its data panel never reads a file outside the run."""
    from .data.csv import dataset_from_rows

    def build():
        ds = dataset_from_rows(rows, columns, n=n, seed=seed)
        return ds, {}, ds.raw

    return _pretrain_locked(folder, "csv", build, steps, seed, model_params, progress, cancel, force,
                            preset, train_params)


def _pretrain_locked(folder, dataset, build, steps, seed, model_params, progress, cancel, force, preset,
                     train_params) -> Run:
    check_target(folder, force=force)
    with folder_lock(folder) if Path(folder).is_dir() else contextlib.nullcontext():
        check_target(folder, force=force)  # again: it may have changed before the lock was ours
        return _pretrain_unlocked(folder, dataset, build, steps, seed, model_params, progress, cancel,
                                  force, preset, train_params)


def _pretrain_unlocked(folder, dataset, build, steps, seed, model_params, progress, cancel, force, preset,
                       train_params) -> Run:
    """Train on build()'s (data set, params to record, rows to keep or None) and save round 0."""
    from .presets import sized_preset
    from .train import pretrain

    ds, recorded_params, rows = build()
    chosen = sized_preset(preset or dataset, len(ds.raw))
    model_cfg = {**chosen.model, **(model_params or {})}
    overrides = {k: v for k, v in (train_params or {}).items() if v is not None}
    if steps is not None:
        overrides["steps"] = int(steps)
    tcfg = dataclasses.replace(chosen.train, seed=int(seed), **overrides)
    model, standardizer, history = pretrain(ds, tcfg, model_cfg, progress=progress, cancel=cancel)
    if history["cancelled"]:
        raise Cancelled(f"Pre-training was cancelled after {history['steps_done']} of {tcfg.steps} steps; nothing was saved.")
    config = {
        "dataset": {"name": dataset, "params": _jsonable_params(recorded_params), "n": int(len(ds.raw)),
                    "seed": int(seed), "columns": list(ds.domain.columns),
                    "domain": ds.domain.to_config(), "info": _jsonable_params(ds.info)},
        "model": history["model_config"],
        "train": tcfg.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    losses = history["loss"]
    train_info = {"seconds": round(history["seconds"], 3), "steps": history["steps_done"],
                  "final_loss": float(np.mean(losses[-50:])) if losses else None}
    run = Run.create(folder, config, model, standardizer, metrics={"train": train_info}, overwrite=force,
                     rows=rows)
    try:
        run.save_array("train_loss", np.asarray(losses, dtype=np.float32))
    except (OSError, StoreError) as exc:  # a cache beside the committed round; the round is kept
        print(f"warning: the training-loss curve was not saved ({exc}).", file=sys.stderr)
    compute_round_metrics(run, model, 0, extra={"train": train_info})
    return run


def compute_round_metrics(run: Run, model, k: int, extra: dict | None = None) -> dict | None:
    """round_metrics for round k, saved into metrics.json; a failure is reported, not raised.
    The PF-ODE metrics are deferred (smeme.deferred computes them on request)."""
    try:
        from .metrics import round_metrics
    except ImportError:
        return None
    try:
        metrics = {**round_metrics(run, model, k, logp=False), **(extra or {})}
    except Exception as exc:  # the round itself is saved; metrics can be recomputed
        print(f"warning: round {k} metrics failed ({type(exc).__name__}: {exc}); the round is saved.",
              file=sys.stderr)
        return None
    try:
        run.set_metrics(k, metrics)
    except (OSError, StoreError) as exc:
        print(f"warning: round {k} is saved but its metrics were not ({exc}).", file=sys.stderr)
        return None
    return metrics


def _check_round(run: Run, round_index):
    k = run.latest_round if round_index is None else int(round_index)
    if k not in run.rounds():
        raise ValueError(f"The run has no round {k}; saved rounds: {', '.join(map(str, run.rounds()))}.")
    return k


def sample_run(run: Run, round_index: int | None, n: int, seed: int = 0, steps: int = 100,
               progress=None) -> np.ndarray:
    """n DDPM samples of round k under the fixed noise of `seed`, in the data's own units."""
    import torch

    from .sampling import sample

    if n < 1:
        raise ValueError(f"The number of samples must be at least 1, got {n}.")
    model = run.load_model(_check_round(run, round_index))
    z = sample(model, int(n), steps=int(steps), seed=int(seed), progress=progress)
    feat = run.standardizer.inverse(z.detach().to(torch.float64).cpu().numpy())
    return run.domain.from_features(feat)


def logp_run(run: Run, round_index: int | None, raw) -> np.ndarray:
    """Model log-density of points given in the data's own units (PF-ODE, smeme.density)."""
    from .density import log_prob_raw

    raw = np.asarray(raw, dtype=np.float64)
    model = run.load_model(_check_round(run, round_index))
    return np.asarray(log_prob_raw(model, run.domain, run.standardizer, raw), dtype=np.float64)
