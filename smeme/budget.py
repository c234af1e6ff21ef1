"""The paper's Figure 2d: one budget of solver iterations spent on K = 1, 2, 3, ... rounds.

For each K, a branch of the run (a new run folder holding a copy of the original's
config, round 0 and round 0's metrics) gets K S-MEME rounds of N // K solver iterations
each, through smeme.explore.run_rounds; the original run is only read. Branches live in
    <run>-budget/N<N>-lam<lam>-seed<seed>/K<K>
next to the run, so sweeps with other settings never collide. The paper's claim: with the
same budget, more rounds reach a higher entropy.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .explore import ExploreConfig, ExploreError, run_rounds
from .store import (CONFIG_FILE, METRICS_FILE, SCHEMA_VERSION, TRAINING_ROWS_FILE, Run, atomic_write_json,
                    check_target)

# (k_index, K, round, iteration, total): the k_index-th K of the sweep is in `round`, at `iteration` of `total`
ProgressCallback = Callable[[int, int, int, int, int], None]


def parse_rounds(text: str) -> list[int]:
    """'1,2,3,4' -> [1, 2, 3, 4]; ExploreError for anything else."""
    try:
        ks = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        ks = []
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise ExploreError(f"The rounds of a budget sweep must be distinct whole numbers >= 1 separated by "
                           f"commas, like 1,2,3,4; got {text!r}.")
    return ks


def branch_folder(run_folder, iterations: int, k: int, lam: float, seed: int) -> Path:
    run_folder = Path(run_folder)
    return run_folder.parent / f"{run_folder.name}-budget" / f"N{iterations}-lam{lam:g}-seed{seed}" / f"K{k}"


def branch_run(run: Run, folder: Path, force: bool = False) -> Run:
    """A new run in `folder` holding the run's config, round 0 and round 0's metrics."""
    check_target(folder, force=force)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        shutil.copyfile(run.folder / CONFIG_FILE, staged / CONFIG_FILE)
        shutil.copyfile(run.round_path(0), staged / "round_0.safetensors")
        if (run.folder / TRAINING_ROWS_FILE).is_file():  # a csv run's own rows travel with its config
            shutil.copyfile(run.folder / TRAINING_ROWS_FILE, staged / TRAINING_ROWS_FILE)
        round0 = run.metrics().get(0)
        if round0 is not None:
            atomic_write_json(staged / METRICS_FILE, {"schema_version": SCHEMA_VERSION, "rounds": {"0": round0}})
        if folder.exists():  # force: the old branch goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            with Run.open(folder).lock():
                os.rename(folder, old / "run")
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return Run.open(folder)


def _shares(metrics: dict) -> dict:
    """{category: {name: share}} of a round's metrics."""
    return {cat: {name: v["share"] for name, v in shares.items() if isinstance(v, dict) and "share" in v}
            for cat, shares in (metrics.get("shares") or {}).items() if isinstance(shares, dict)}


def summary(branch: Run, k: int, per_round: int, config: ExploreConfig, seconds: float) -> dict:
    """The JSON row of one K: the final round's numbers and entropy per round (0..K)."""
    metrics = branch.metrics()
    rounds = sorted(r for r in metrics if r <= k)
    final = metrics.get(k, {})
    row = {"rounds": k, "iterations_per_round": per_round, "iterations_total": k * per_round,
           "gradient_steps": k * per_round * config.adam_steps, "lam": config.lam, "seed": config.seed,
           "entropy_knn": final.get("entropy_knn"),
           "entropy_knn_per_round": [metrics[r].get("entropy_knn") for r in rounds],
           "on_support": final.get("on_support")}
    if "sparse_share" in final:  # the toy's headline: the share of the sparse square
        row["sparse_share"] = final["sparse_share"]
        row["sparse_share_per_round"] = [metrics[r].get("sparse_share") for r in rounds]
    if "sparse_share_closed_form" in final:  # what K exact rounds (a perfect solver) reach
        row["sparse_share_closed_form"] = final["sparse_share_closed_form"]
    row["shares"] = _shares(final)  # every data set's categories (triangles: side and angle types)
    row["run"] = os.fspath(branch.folder)
    row["seconds"] = round(seconds, 1)
    return row


def budget_sweep(run_folder, iterations: int, ks: list[int], config: ExploreConfig,
                 progress: ProgressCallback | None = None, on_result: Callable[[dict], None] | None = None,
                 cancel=None, force: bool = False) -> list[dict]:
    """For each K in `ks`: K rounds of iterations // K solver iterations on a fresh branch of
    the run's round 0; returns (and hands to on_result as each finishes) one row per K.

    Every setting but `iterations` comes from `config`. Every branch folder is checked
    before any work; a cancel (cancel.is_set()) stops between solver iterations and
    returns the finished K's.
    """
    import time

    run = Run.open(run_folder)
    if not isinstance(iterations, int) or iterations < 1:
        raise ExploreError(f"The budget must be at least 1 solver iteration, got {iterations}.")
    too_many = [k for k in ks if k > iterations]
    if too_many:
        raise ExploreError(f"A budget of {iterations} iteration(s) cannot be split into {too_many[0]} rounds "
                           "(each round needs at least one iteration); raise --iterations or use fewer rounds.")
    folders = {k: branch_folder(run.folder, iterations, k, config.lam, config.seed) for k in ks}
    for folder in folders.values():
        try:
            check_target(folder, force=force)
        except Exception as exc:
            raise ExploreError(f"{str(exc).rstrip('.')} (a branch of an earlier sweep with the same settings; "
                               "pass --force to run it again).") from None
    rows = []
    for index, k in enumerate(ks):
        if cancel is not None and cancel.is_set():
            break
        per_round = iterations // k
        # exactly per_round iterations: a high-dimensional round's larger budget (ExploreConfig.budget_at)
        # would break the sweep's equal total
        k_config = ExploreConfig(**{**config.to_dict(), "iterations": per_round, "alone_iterations": 1.0})
        branch = branch_run(run, folders[k], force=force)
        on_iteration = ((lambda r, i, total, loss, index=index, k=k: progress(index, k, r, i, total))
                        if progress else None)
        start = time.perf_counter()
        done = run_rounds(branch, k, k_config, on_iteration=on_iteration, cancel=cancel)
        if len(done) < k:  # cancelled mid-way: this K is unfinished
            break
        row = summary(branch, k, per_round, k_config, time.perf_counter() - start)
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows


def explore_config_for(run: Run, **settings) -> ExploreConfig:
    """The run's data set's explore defaults with `settings` (None values ignored) on top."""
    given = {k: v for k, v in settings.items() if v is not None}
    return ExploreConfig(**{**run.domain.explore_defaults(), **given})
