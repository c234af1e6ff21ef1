"""Solver fidelity on trained models, continued: the one-round cases of test_fidelity.py (same
truths, bars and helpers; see its docstring) in 8 correlated dimensions and on independent
columns, and a narrow direction against the paper's target. A file of its own so that two test
workers share the slow cases (CI distributes the suite by file)."""
from __future__ import annotations

import pytest

from test_fidelity import (PRETRAIN_STEPS, SOLVER_SEEDS, _span, check_one_round, gaussian_runs,  # noqa: F401
                           run_gaussian_rounds, spread_gaussian_csv)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("d,independent", [(8, False), (2, True)])
def test_one_round_reaches_the_exact_gaussian_tilt(gaussian_runs, tmp_path, d, independent):  # noqa: F811
    check_one_round(gaussian_runs, tmp_path, d, independent)


@pytest.mark.xfail(strict=True, reason="issue 20: measured 0.81-1.05 per whitened direction (seed 5; held-out "
                                       "seeds 11 / 12: 0.82 / 0.78 at the narrowest); the solver under-fits the score "
                                       "change at small t (README 'Known limits', BENCHMARKS.md)")
def test_a_narrow_direction_reaches_the_papers_gain(tmp_path):
    """5 columns whose standardised covariance has one direction of variance 0.06: one round with
    explore's CSV defaults and the paper's reward (reward_target 'data') within 10% of the exact gain of
    p_0^(1 - lam) along every whitened direction. The smoothed reward's own exact round reaches
    0.72 of it there, so this case tells the two targets apart."""
    from smeme.pipeline import pretrain_run

    csv = spread_gaussian_csv(tmp_path / "data.csv", [0.06, 1, 1, 1.5, 1.44], seed=31)
    src = pretrain_run(tmp_path / "run", "csv", {"path": str(csv)}, steps=PRETRAIN_STEPS).folder
    rows = run_gaussian_rounds(src, tmp_path, 1, SOLVER_SEEDS[0], reward_target="data")
    assert abs(rows[0]["directions"] - 1).max() <= 0.10, _span(rows)
