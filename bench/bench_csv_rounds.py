"""CSV rounds against the number of columns: seconds, reward-value steps and shape per round.

    SMEME_THREADS=1 python bench/bench_csv_rounds.py [--dims 2,8,16,32,64] [--seed 5] [--folder /tmp/csvd]

For each d: a Gaussian CSV whose standardised covariance has a geometric spectrum spread 50x
(tests/test_fidelity.py's spread_gaussian_csv, data seed 20 + d), a CSV preset run pre-trained as
the CLI pre-trains it (the preset's steps), then one round at lambda 0.3 with explore's defaults (solver seed
--seed). Per round: wall and CPU seconds of run_rounds, the solver's seconds, whether the
likelihood-ratio term ran (lr_share), the reward values' ODE steps (RoundReward's choice), and the
share of the smoothed target's exact log-variance gain per whitened direction (min / median /
max; the truth is the trained model's own round-0 covariance, bench_gaussian_fidelity.py).
Where the round read its values with fewer than 8 steps, the same round with reward_values_tolerance
None (always 8) is timed too: what the fewer steps save. --correlated adds tests/test_fidelity.py's
correlated 8-column CSV (data seed 28), a smoother model than the spread one. --folder keeps the
pre-trained runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_gaussian_fidelity import shape_row  # noqa: E402  (bench/ is this script's folder)
from record import Recording  # noqa: E402

SPREAD = 50.0


def spectrum(d: int) -> list[float]:
    """A geometric spectrum over SPREAD with mean 1 (a standardised covariance's trace is d)."""
    e = np.geomspace(1.0, SPREAD, d)
    return (e * d / e.sum()).tolist()


def pretrained(root: Path, d: int, case: str) -> Path:
    from test_fidelity import correlated_gaussian_csv, spread_gaussian_csv

    from smeme.pipeline import pretrain_run

    folder = root / (f"d{d}" if case == "spread" else f"d{d}_{case}") / "preset"
    if not (folder / "run" / "metrics.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        csv = (spread_gaussian_csv(folder / "data.csv", spectrum(d), 20 + d) if case == "spread"
               else correlated_gaussian_csv(folder / "data.csv", d, seed=20 + d))
        pretrain_run(folder / "run", "csv", {"path": str(csv)})
    return folder / "run"


def one_round(src: Path, seed: int, **overrides) -> dict:
    from test_fidelity import LAM, exact_covs, model_cov

    from smeme.explore import ExploreConfig, run_rounds
    from smeme.store import Run

    work = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(src, work)
    run = Run.open(work)
    config = ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM, "seed": seed, "metrics_logp": False,
                              **overrides})
    wall, cpu = time.perf_counter(), time.process_time()
    run_rounds(run, 1, config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    m = run.metrics()[1]
    cov0 = model_cov(run, 0)
    shape = shape_row(model_cov(run, 1), exact_covs(run, cov0, 1, config.target_t_r)[1], cov0)
    shutil.rmtree(work.parent, ignore_errors=True)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "solver_s": m["solver_seconds"],
            "lr_share": m.get("lr_share"), "reward_ode_steps": m.get("reward_ode_steps"),
            "reward_steps_tv": m.get("reward_steps_tv"), **shape}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="2,8,16,32,64")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--correlated", action="store_true", help="add the correlated 8-column case")
    ap.add_argument("--folder", help="where the pre-trained runs are kept (default: a temporary folder)")
    args = ap.parse_args()
    from smeme.threads import configure

    configure()
    from smeme.explore import ExploreConfig

    full_steps = ExploreConfig().reward_ode_steps
    root = Path(args.folder or tempfile.mkdtemp(prefix="csv_rounds_"))
    with Recording("csv_rounds_by_d", capability="CSV rounds against d") as rec:
        cases = [(int(v), "spread") for v in args.dims.split(",")] + ([(8, "correlated")] if args.correlated else [])
        for d, case in cases:
            src = pretrained(root, d, case)
            row = one_round(src, args.seed)
            fewer = row["reward_ode_steps"] is not None and row["reward_ode_steps"] < full_steps
            full = one_round(src, args.seed, reward_values_tolerance=None) if fewer else None
            print(json.dumps({"d": d, "case": case, **row, "always_full_steps": full}), flush=True)
            lo, med, hi = row["share_min_med_max"]
            saving = (f"; with {full_steps} steps always {full['solver_s']:.1f} s" if full else "")
            term = (f"term on, reward values {row['reward_ode_steps']} ODE steps" if row["lr_share"]
                    else "term off (Adjoint Matching alone)")
            data = f"spectrum spread {SPREAD:g}x" if case == "spread" else "correlated columns"
            rec.row(f"one round at lam 0.3, d = {d} ({data}), explore defaults, seed {args.seed}",
                    f"solver {row['solver_s']:.1f} s, round {row['cpu_s']:.1f} CPU s; {term}{saving}; "
                    f"share per whitened direction {lo:.2f} / {med:.2f} / {hi:.2f}",
                    "time against d (issue 23); every direction within 0.9-1.1 (issue 20)",
                    met=bool(0.9 <= lo and hi <= 1.1), d=d, solver_s=row["solver_s"], cpu_s=row["cpu_s"],
                    share_min=lo, share_median=med, share_max=hi,
                    **({"solver_s_full_steps": full["solver_s"]} if full else {}))

if __name__ == "__main__":
    main()
