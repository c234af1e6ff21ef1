"""What a solver call returns (SolverResult) and its convergence signal (solvers/iterates.py)."""
from __future__ import annotations

import torch

from helpers import ResidualNoisePredictor
from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
from smeme.schedule import VPSchedule
from smeme.solvers import AdjointMatchingConfig, SolverResult, adjoint_matching
from smeme.solvers.iterates import ControlProbe

SCH = VPSchedule()


def probe_with(reads):
    probe = ControlProbe(start=0)
    probe.reads = [torch.as_tensor(r, dtype=torch.float64) for r in reads]
    return probe


def test_control_change_is_the_drift_between_the_window_halves():
    # iterates scattered around a fixed control: the halves' means agree
    assert probe_with([[1.2, 1.8], [0.8, 2.2], [0.8, 2.2], [1.2, 1.8]]).change() < 1e-12
    # a control still growing 1, 2, 3, 4: halves' means 1.5 and 3.5, overall mean 2.5 -> 2 / 2.5
    assert abs(probe_with([[1.0], [2.0], [3.0], [4.0]]).change() - 0.8) < 1e-12
    assert probe_with([[1.0]]).change() is None  # one read: no signal
    assert probe_with([[0.0], [0.0]]).change() == 0.0  # no control at all: nothing moves


def test_a_solve_returns_its_result_and_leaves_the_config_alone():
    base = GaussianModel(torch.zeros(2), torch.eye(2) * 0.5, SCH)
    torch.manual_seed(0)
    ft = ResidualNoisePredictor(base, MLPNoisePredictor(MLPConfig(2, width=8, depth=1, time_dim=4), SCH).double())
    cfg = AdjointMatchingConfig(iterations=4, trajectories=16, steps=6, weight_ema=0.9, average_start=0.5)
    before = cfg.to_dict()
    seen = []
    result = adjoint_matching(ft, base, lambda x: torch.ones_like(x), cfg, on_iteration=lambda *a: seen.append(a))
    assert isinstance(result, SolverResult) and result.model is ft
    assert result.iterations == 4 == len(seen) and all(v > 0 for v in result.losses)
    assert set(result.timings) >= {"sampling", "reward", "adjoint", "regression"}
    assert result.converged in (True, False) and result.control_change >= 0  # 2 averaged iterates read
    assert result.round_metrics()["solver_converged"] == result.converged
    assert cfg.to_dict() == before and not hasattr(cfg, "health") and not hasattr(cfg, "timings")


def test_drift_within_the_iterate_noise_is_not_called_unconverged():
    noisy = probe_with([[1.0], [3.0], [1.2], [2.6]])  # halves 2.0 and 1.9: scatter ~1, drift 0.1
    change, noise = noisy.summary()
    assert abs(change - 0.1 / 1.95) < 1e-12 and 2 * noise > change
    steady_rise = probe_with([[1.0], [1.1], [2.0], [2.1]])  # drift 1.0 against a scatter of 0.07
    change, noise = steady_rise.summary()
    assert change > 0.5 and 2 * noise < change


def test_target_fit_is_the_targets_projection_on_the_control():
    """target_fit = sum w target.u / sum w |u|^2 over the stochastic steps, with its standard error over
    trajectories: a control u = x against targets c x (+ independent noise) reads c."""
    from types import SimpleNamespace

    from smeme.solvers.iterates import target_fit

    M, B = 5, 4000
    std = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.0], dtype=torch.float64)  # the last step is deterministic
    plan = SimpleNamespace(stochastic=torch.arange(4), grid=torch.linspace(1, 0, M + 1, dtype=torch.float64),
                           shape=(2,), factor=torch.ones(M, dtype=torch.float64), std=std,
                           weight=torch.ones(M, dtype=torch.float64),
                           view=lambda v: v.reshape(-1, 1, 1))
    g = torch.Generator().manual_seed(0)
    states = torch.randn(M + 1, B, 2, generator=g, dtype=torch.float64)
    identity = lambda x, t: -x  # noqa: E731  (u = -factor (eps_ft - eps_base) = x with eps_base 0)
    for c, noise in [(1.0, 0.0), (1.3, 0.0), (0.7, 0.5)]:
        target = c * states[:-1] + noise * torch.randn(M, B, 2, generator=g, dtype=torch.float64)
        adj = -target / std.clamp(min=1e-12).reshape(-1, 1, 1)  # target = -std a
        fit, se = target_fit(identity, states, torch.zeros(M, B, 2, dtype=torch.float64), adj, plan)
        assert abs(fit - c) <= max(1e-12, 3 * se) and (se > 1e-9) == (noise > 0), (c, noise, fit, se)
    assert target_fit(lambda x, t: torch.zeros_like(x), states, torch.zeros(M, B, 2, dtype=torch.float64),
                      adj, plan) is None  # no control: nothing to fit


def test_a_stopped_solve_pays_for_no_target_fit():
    """A solve cancelled mid-way is dropped by the round loop: it reports no fit; a finished one does."""
    import threading

    base = GaussianModel(torch.zeros(2), torch.eye(2) * 0.5, SCH)
    cfg = AdjointMatchingConfig(iterations=4, trajectories=16, steps=6, weight_ema=None)
    results = []
    for stop_after in (2, None):
        torch.manual_seed(0)
        ft = ResidualNoisePredictor(base, MLPNoisePredictor(MLPConfig(2, width=8, depth=1, time_dim=4), SCH).double())
        stop = threading.Event()
        on_it = (lambda i, n, loss: stop.set() if i == stop_after else None)
        results.append(adjoint_matching(ft, base, lambda x: torch.ones_like(x), cfg, on_iteration=on_it, cancel=stop))
    stopped, finished = results
    assert stopped.iterations == 2 and stopped.target_fit is None
    assert finished.iterations == 4 and finished.target_fit is not None and finished.target_fit_se >= 0
