"""The reward values' ODE steps (smeme.reward.RoundReward): only as accurate as the weights need.

Truths: analytic Gaussian and Gaussian-mixture bases, whose log p(x, t_r) is exact. The rule reads
the first batch with reward_ode_steps and halves while the self-normalised weights exp(r) stay within
reward_values_tolerance (total variation) of the full-step ones; judged here against the exact weights.
"""
from __future__ import annotations

import math

import pytest
import torch

from smeme.explore import ExploreConfig, ExploreError
from smeme.models import GaussianMixtureModel, GaussianModel
from smeme.reward import RoundReward
from smeme.schedule import VPSchedule

LAM, CAP = 0.3, 0.999


def spread_gaussian(d: int, seed: int) -> GaussianModel:
    """N(0, S) whose eigenvalues spread 50x (0.07..3.7) along random directions."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    ev = torch.logspace(math.log10(0.07), math.log10(3.7), d, dtype=torch.float64)
    return GaussianModel(torch.zeros(d), q @ torch.diag(ev) @ q.T, VPSchedule())


def narrow_mixture() -> GaussianMixtureModel:
    """Two modes; the light one (10%) narrow along its first axis (variance 0.01)."""
    return GaussianMixtureModel([0.9, 0.1], [[-1.0, 0.0], [1.5, 0.5]],
                                [[[0.3, 0.0], [0.0, 0.3]], [[0.01, 0.0], [0.0, 0.2]]], VPSchedule())


def exact_tv(reward: RoundReward, model, x, steps: int) -> float:
    """The weights read with `steps` against the exact ones (-lam log p(x, t_r) in closed form)."""
    return reward.weights_tv(reward._value(x, steps), -LAM * model.log_prob(x, reward.config.t_r))


@pytest.mark.parametrize("model", [spread_gaussian(8, 3), spread_gaussian(5, 4), narrow_mixture()],
                         ids=["gaussian-8d", "gaussian-5d", "narrow-mixture"])
def test_the_chosen_steps_keep_the_weights_within_the_tolerance_of_the_exact_ones(model):
    config = ExploreConfig(lam=LAM)
    x = model.sample_data(1024, torch.Generator().manual_seed(1))
    reward = RoundReward(model, LAM, config, CAP)
    first = reward.value(x)
    steps, full = reward.ode_steps, config.reward_ode_steps
    # the first batch's values are the full-step ones; later batches use the chosen steps
    assert torch.equal(first, reward._value(x, full))
    assert torch.equal(reward.value(x), reward._value(x, steps))
    tol, full_error = config.reward_values_tolerance, exact_tv(reward, model, x, full)
    assert exact_tv(reward, model, x, steps) < tol + full_error
    if steps // 2 >= 2:  # a refused halving was needed: its weights are off by more than the tolerance
        assert exact_tv(reward, model, x, steps // 2) > tol - full_error
    assert reward.record() == {"reward_ode_steps": steps, "reward_steps_tv": round(reward.steps_tv, 6)}


def test_smooth_data_halves_and_a_narrow_mode_keeps_the_full_steps():
    """What the rule buys: a Gaussian in 8 dimensions reads its values with at most half the steps; the
    mixture's narrow light mode needs all 8 (its 4-step weights are 0.0027 off the exact ones)."""
    config = ExploreConfig(lam=LAM)
    for model, fewer in [(spread_gaussian(8, 3), True), (narrow_mixture(), False)]:
        reward = RoundReward(model, LAM, config, CAP)
        reward.value(model.sample_data(1024, torch.Generator().manual_seed(1)))
        assert (reward.ode_steps < config.reward_ode_steps) is fewer, reward.record()


def test_no_tolerance_always_reads_the_full_steps():
    model = spread_gaussian(8, 3)
    reward = RoundReward(model, LAM, ExploreConfig(lam=LAM, reward_values_tolerance=None), CAP)
    assert reward.record() == {}  # nothing read yet
    reward.value(model.sample_data(256, torch.Generator().manual_seed(2)))
    assert reward.record() == {"reward_ode_steps": 8, "reward_steps_tv": 0.0}


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "0.01"])
def test_a_bad_tolerance_is_one_sentence(bad):
    with pytest.raises(ExploreError, match="reward_values_tolerance must lie in"):
        ExploreConfig(reward_values_tolerance=bad)
