"""The paper's Figure 2d in the app: a budget sweep (smeme.budget) as one background job, and
its rows read back from the branches on disk (so a finished sweep shows after a restart).
"""
from __future__ import annotations

import re
from pathlib import Path

from . import access, jobs
from .settings import setup

KIND = "budget"


def sweep_iterations(iterations: int, ks: list[int]) -> int:
    """Solver iterations the whole sweep runs: each K spends its share N // K per round."""
    return sum(k * (int(iterations) // k) for k in ks)


_SWEEP_RE = re.compile(r"^N(\d+)-lam([0-9.eE+-]+)-seed(\d+)$")


def existing_sweeps(folder) -> list[dict]:
    """The sweeps run on this run, newest first: {'iterations' (N), 'lam', 'seed', 'ks' (the K's
    with a branch on disk)}, read from the branch folders (smeme.budget.branch_folder)."""
    from ..budget import branch_folder

    base = branch_folder(Path(folder), 1, 1, 0.1, 0).parent.parent
    found = []
    try:
        entries = list(base.iterdir()) if base.is_dir() else []
    except OSError:
        return []
    for entry in entries:
        match = _SWEEP_RE.match(entry.name)
        try:
            if match is None or not entry.is_dir():
                continue
            ks = sorted(int(k.name[1:]) for k in entry.iterdir() if re.fullmatch(r"K\d+", k.name))
            stamp = entry.stat().st_mtime
            lam = float(match.group(2))
        except (OSError, ValueError):
            continue  # an entry that cannot be read is skipped, never a broken page
        if ks:
            found.append({"iterations": int(match.group(1)), "lam": lam, "seed": int(match.group(3)),
                          "ks": ks, "stamp": stamp})
    return sorted(found, key=lambda s: s["stamp"], reverse=True)


def start_budget(folder, iterations: int, ks: list[int], settings: dict, force: bool = False,
                 owner: str | None = None) -> jobs.Job:
    """Run the sweep in a background process; each finished K is logged as an event
    {'budget_row': row}. Bad settings raise here, on the page (ExploreError, one sentence)."""
    from ..budget import branch_folder, explore_config_for
    from ..explore import ExploreError
    from ..store import Run

    access.require_writer()  # a sweep writes its branches beside the run
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ExploreError("Choose at least one number of rounds K.")
    if ks[-1] > int(iterations):
        raise ExploreError(f"A budget of {iterations} solver iteration(s) cannot be split into {ks[-1]} rounds; "
                           "raise the budget or choose fewer rounds.")
    config = explore_config_for(Run.open(folder), **settings)  # raises for bad settings
    done = [k for k in ks if branch_folder(Path(folder), int(iterations), k, config.lam, config.seed).exists()]
    if done and not force:
        raise ExploreError(f"This sweep has been run with these settings before (K = {', '.join(map(str, done))}); "
                           "tick 'Run it again' to replace it.")
    return jobs.start_process(folder, KIND, _budget_job, str(folder), int(iterations), ks, config.to_dict(),
                              bool(force), label=f"Budget sweep (K = {', '.join(map(str, ks))})", writes=False,
                              owner=owner)


def _budget_job(job, folder: str, iterations: int, ks: list[int], config: dict, force: bool):
    from ..budget import budget_sweep
    from ..explore import ExploreConfig
    setup()
    total = sweep_iterations(iterations, ks)
    before = {k: sweep_iterations(iterations, ks[:i]) for i, k in enumerate(ks)}

    def progress(index, k, rnd, it, per_round_total):
        done = before[k] + (rnd - 1) * (iterations // k) + it
        job.update(done / max(total, 1), f"K = {k} ({index + 1} of {len(ks)}): round {rnd} of {k}, "
                                         f"solver iteration {it}/{per_round_total}")

    rows = budget_sweep(folder, iterations, ks, ExploreConfig.from_dict(config), progress=progress,
                        on_result=lambda row: job.log({"budget_row": row}), cancel=job.cancel, force=force)
    if job.cancel.is_set():
        raise jobs.JobCancelled()
    return rows


def budget_rows(folder, iterations: int, ks: list[int], lam: float, seed: int) -> list[dict]:
    """The finished K's of the sweep with these settings, read from their branches: per K,
    {'rounds', 'iterations_per_round', 'entropy_knn_per_round' (rounds 0..K), 'entropy_knn'}."""
    from ..budget import branch_folder
    from ..store import Run
    rows = []
    for k in sorted({int(k) for k in ks}):
        branch = branch_folder(Path(folder), int(iterations), k, float(lam), int(seed))
        try:
            metrics = Run.open(branch).metrics()
        except Exception:  # noqa: BLE001 - not run yet, or being replaced
            continue
        if k not in metrics:
            continue  # stopped mid-way: this K is unfinished
        per_round = [metrics[r].get("entropy_knn") for r in range(k + 1) if r in metrics]
        rows.append({"rounds": k, "iterations_per_round": int(iterations) // k,
                     "entropy_knn_per_round": per_round, "entropy_knn": metrics[k].get("entropy_knn")})
    return rows
