"""The solver exactly as explore ships it, against closed forms, per axis.

Every solve here is built by ExploreConfig(...).solver_config(k) (explore's defaults unless a
test names the one setting it varies) on an analytic Gaussian base (exact eps) plus a trainable
correction whose output starts at zero, so the tuned model starts exactly at the base and only
the solver's error is measured. The truth is the exact tilt seen through the same DDPM chain
(helpers.gaussian_sampler_moments): r = w.x tilts N(mu, S) to N(mu + S w, S), a shift of S w.
A shift is judged per axis as the share of the exact shift reached, with paired samples (the
same noise through the tuned and the base chain) so that sampling noise cancels from it.
"""
from __future__ import annotations

import pytest
import torch

from helpers import ResidualNoisePredictor, gaussian_sampler_moments
from smeme.explore import ExploreConfig
from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
from smeme.sampling import FixedNoise, sample_ddpm
from smeme.schedule import VPSchedule
from smeme.solvers import adjoint_matching

SCH = VPSchedule()
F64 = torch.float64
N_EVAL = 20000
LIN_S = torch.diag(torch.tensor([1.0, 0.04], dtype=F64))
LIN_W = torch.tensor([1.0, -2.0], dtype=F64)


# the csv preset's network size with the linear skip, zero at the start: an additive correction on an
# analytic base (the preset's Gaussian skip models a whole eps, not the difference of two Gaussians')
CORRECTION = dict(width=128, depth=3, time_dim=32, linear_skip=3)
SMALL = dict(width=32, depth=2, time_dim=16)  # for claims that hold whatever the network's size


def with_correction(base, seed=0, shape=None):
    torch.manual_seed(seed)
    return ResidualNoisePredictor(base, MLPNoisePredictor(MLPConfig(2, **(shape or CORRECTION)), SCH).double())


def paired_samples(models, steps, seed=123):
    noise = FixedNoise.from_seed(seed, N_EVAL, (2,), steps, dtype=F64)
    with torch.no_grad():
        return [sample_ddpm(m, noise) for m in models]


def linear_round(config: ExploreConfig, w: torch.Tensor, shape=None, seed=0, cov=LIN_S):
    """One shipped solve of r = w.x on N(0, cov): (share of the exact mean shift per axis, result)."""
    base = GaussianModel(torch.zeros(2), cov, SCH)
    ft = with_correction(base, seed, shape)
    cfg = config.solver_config(1)
    result = adjoint_matching(ft, base, lambda x: w.expand_as(x), cfg, reward_value=lambda x: x @ w)
    m0, _ = gaussian_sampler_moments(torch.zeros(2), cov, SCH, steps=cfg.steps)
    m1, _ = gaussian_sampler_moments(cov @ w, cov, SCH, steps=cfg.steps)
    tuned, before = paired_samples((ft, base), cfg.steps)
    return (tuned.mean(0) - before.mean(0)) / (m1 - m0), result


@pytest.mark.slow
@pytest.mark.parametrize("target", [
    "current",
    pytest.param("next", marks=pytest.mark.xfail(strict=True, reason=(
        "the option 'next' is off by J_i^-T: 1.052 / 1.026 here (2026-12-06); explore's default is 'current'"))),
])
def test_shipped_solver_lands_a_linear_reward_per_axis(target):
    """A reward of a default round's size (lam = 0.1 times LIN_W; an entropy round's gradient is
    lam S_r^-1 x, ~0.1-0.15 at one standard deviation here) and explore's defaults, with each
    likelihood-ratio target ('current' the default). Measured 2026-12-06: 'current' 0.990 / 0.973, 'next' 1.052 / 1.026."""
    config = ExploreConfig(likelihood_ratio_target=target)
    share, result = linear_round(config, config.lam * LIN_W)
    assert torch.all((share - 1).abs() < 0.05), f"mean shift / exact per axis: {share.tolist()}"
    assert result.converged is not None


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["tempered", "fallback"])
def test_collapsing_weights_tilt_less_never_more(weights):
    """Weights that collapse in almost every iteration must not drive the round above its target:
    tempered to ess_floor 0.99 (issue 20: 68x and 1.4e10x the exact shift before tempering shrank
    towards the base), or handed to the adjoint term at every step below ess_fallback 0.99; the round
    must land in [0, 1.1] of the exact shift. A reward ten times a default round's (ESS ~0.3
    untempered). Measured 2026-12-06 (tempered): 0.273 / 0.798."""
    if weights == "tempered":
        config = ExploreConfig(ess_fallback=None, solver_options={"ess_floor": 0.99})
    else:
        config = ExploreConfig(ess_fallback=0.99)
    share, result = linear_round(config, LIN_W, shape=SMALL)
    if weights == "tempered":
        assert result.health["lr_tempered_iterations"] > 0
    else:
        assert result.health["lr_steps_kept_mean"] < 0.5 and result.health["lr_tempered_iterations"] == 0
    assert torch.all((share >= 0) & (share <= 1.1)), f"mean shift / exact per axis: {share.tolist()}"


@pytest.mark.slow
def test_the_target_fit_tells_a_short_solve_from_a_finished_one():
    """The returned control's fixed-point test (solvers/iterates.target_fit): along the control, its regression
    target over the control is 1 at the fixed point and above 1 while the control falls short of it. Judged
    against the exact shift on an isotropic base: the shipped budget lands the linear reward within 10% per
    axis, its fit within 0.1 of 1 and 'converged'; a solve cut to 4 iterations reaches half the shift and reads
    significantly above 1 (by far less than the shortfall: 1.02 on 2026-12-07, README "Known limits")."""
    config, cov = ExploreConfig(likelihood_ratio_share=0.0), 0.5 * torch.eye(2, dtype=F64)  # the adjoint term alone
    share, result = linear_round(config, config.lam * LIN_W, cov=cov)
    fit = result.target_fit
    assert torch.all((share - 1).abs() < 0.1) and abs(fit - 1) <= 0.1 and result.converged, (share.tolist(), fit)
    short = ExploreConfig(likelihood_ratio_share=0.0, iterations=4, weight_ema=None)
    share, result = linear_round(short, short.lam * LIN_W, cov=cov)
    fit, se = result.target_fit, result.target_fit_se
    assert torch.all(share < 0.9) and fit - 1 > 4 * se, (share.tolist(), fit, se)
