"""The round's reward at the data end (explore reward_target 'data', the paper's -lam log p_{k-1})
against closed forms: density.deconvolved_score on analytic Gaussians and mixtures, the
forward-mode and autograd Jacobians, and the explore wiring of both targets."""
from __future__ import annotations

import math

import pytest
import torch

from smeme.density import deconvolved_score, eps_jacobian
from smeme.explore import ExploreConfig, ExploreError, RoundReward
from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor, score
from smeme.models.analytic import GaussianMixtureModel
from smeme.schedule import VPSchedule

SCH = VPSchedule()
F64 = torch.float64


def narrow_gaussian(d=5, narrow=0.06, seed=0):
    """N(mu, S) whose standardised spectrum has one narrow direction (variance `narrow`)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    ev = torch.linspace(0.8, 1.6, d, dtype=F64)
    ev[0] = narrow
    return torch.randn(d, generator=g, dtype=F64) * 0.5, q @ torch.diag(ev) @ q.T


@pytest.mark.parametrize("t_r", [0.02, 0.05, 0.1])
def test_deconvolution_is_exact_for_a_gaussian(t_r):
    mu, S = narrow_gaussian()
    model = GaussianModel(mu, S, SCH)
    x = mu + torch.randn(500, 5, dtype=F64, generator=torch.Generator().manual_seed(1)) @ torch.linalg.cholesky(S).T
    s0, delta = deconvolved_score(model, x, t_r)
    exact = -torch.linalg.solve(S, (x - mu).T).T  # grad log N(x; mu, S)
    torch.testing.assert_close(s0, exact, rtol=1e-7, atol=1e-7)
    ab = float(SCH.ab(torch.tensor(t_r, dtype=F64)))
    value = model.log_prob(math.sqrt(ab) * x, t_r) + delta
    gap = value - model.log_prob(x, 0.0)  # log p_0 up to a constant
    assert float(gap.std()) < 1e-7
    smoothed = score(model, x, torch.full((500,), t_r, dtype=F64))  # what the smoothed reward reads
    assert float((smoothed - exact).norm() / exact.norm()) > 0.05 * t_r / 0.05  # the bias it removes


def test_deconvolution_weighs_a_narrow_mode_as_its_density_does():
    """Two separated modes of different widths: within each mode the score and the log-density
    differences between the modes (which the likelihood-ratio term moves mass by) are p_0's."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=F64)
    covs = torch.stack([torch.diag(torch.tensor([0.5, 0.3], dtype=F64)),
                        torch.diag(torch.tensor([0.05, 0.08], dtype=F64))])
    model = GaussianMixtureModel([0.9, 0.1], means, covs, SCH)
    g = torch.Generator().manual_seed(2)
    x = torch.cat([means[0] + 0.5 * torch.randn(200, 2, generator=g, dtype=F64) * covs[0].diagonal().sqrt(),
                   means[1] + 0.5 * torch.randn(200, 2, generator=g, dtype=F64) * covs[1].diagonal().sqrt()])
    s0, delta = deconvolved_score(model, x, 0.05)
    exact = model.score_exact(x, torch.zeros(len(x), dtype=F64))
    torch.testing.assert_close(s0, exact, rtol=1e-4, atol=1e-4)
    ab = float(SCH.ab(torch.tensor(0.05, dtype=F64)))
    value = model.log_prob(math.sqrt(ab) * x, 0.05) + delta
    gap = value - model.log_prob(x, 0.0)
    assert float(gap.max() - gap.min()) < 1e-3  # one constant for both modes
    smoothed_gap = model.log_prob(x, 0.05) - model.log_prob(x, 0.0)
    # the smoothed density is lower in the narrow mode: its reward over-weights that mode
    assert float(smoothed_gap[200:].mean() - smoothed_gap[:200].mean()) < -0.2


def test_forward_mode_and_autograd_jacobians_agree():
    torch.manual_seed(0)
    net = MLPNoisePredictor(MLPConfig(4, width=16, depth=2, time_dim=8, linear_skip=2), SCH).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(7, 4, dtype=F64)
    t = torch.tensor(0.05, dtype=F64)
    eps, jac = eps_jacobian(net, x, t)
    full = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v[None], t.reshape(1))[0], row) for row in x])
    torch.testing.assert_close(jac, full)
    torch.testing.assert_close(eps, net(x, t.expand(7)))


def test_round_reward_targets_and_config():
    mu, S = narrow_gaussian()
    model = GaussianModel(mu, S, SCH)
    x = mu + 0.3 * torch.randn(64, 5, dtype=F64)
    assert ExploreConfig().reward_target == "data" and ExploreConfig().target_t_r == 0.0  # the paper's
    assert ExploreConfig(reward_target="smoothed", t_r=0.04).target_t_r == 0.04
    paper = RoundReward(model, 0.3, ExploreConfig(lam=0.3, reward_target="data"))
    torch.testing.assert_close(paper.grad(x), 0.3 * torch.linalg.solve(S, (x - mu).T).T)  # -lam grad log p_0
    smoothed = RoundReward(model, 0.3, ExploreConfig(lam=0.3, reward_target="smoothed"))
    torch.testing.assert_close(smoothed.grad(x), -0.3 * score(model, x, torch.full((64,), 0.05, dtype=F64)))
    with pytest.raises(ExploreError, match="reward target"):
        ExploreConfig(reward_target="sharp")


@pytest.mark.parametrize("skip", ["linear_skip", "gaussian_skip"])
def test_hutchinson_reads_the_skip_exactly(skip):
    """Above 16 columns the reward values use Hutchinson's trace; the MLP's skips (which carry a
    Gaussian's structure on trained CSV models) enter in closed form: with the network part
    silent the estimate is exact from one probe, and with it on the estimate stays unbiased."""
    from smeme.density import _rademacher, eps_and_trace

    torch.manual_seed(1)
    d = 20
    net = MLPNoisePredictor(MLPConfig(d, width=16, depth=2, time_dim=8, prior_skip=1.0,
                                      **({"linear_skip": 3} if skip == "linear_skip" else {"gaussian_skip": True})),
                            SCH).double()
    with torch.no_grad():
        for p in ([net.skip_matrix] if skip == "linear_skip" else [net.gauss_rotation, net.gauss_log_var]):
            p.normal_(std=0.05)
    net.requires_grad_(False)
    x, t = torch.randn(6, d, dtype=F64), torch.tensor(0.3, dtype=F64)
    basis = torch.eye(d, dtype=F64).reshape(d, 1, d)
    _, exact = eps_and_trace(net, x, t, basis, exact=True)
    _, one = eps_and_trace(net, x, t, _rademacher(1, 6, (d,), 0, F64, "cpu"), exact=False)
    torch.testing.assert_close(one, exact)  # the last layer starts at zero: all of J is the skip
    for p in net.net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    _, exact = eps_and_trace(net, x, t, basis, exact=True)
    _, many = eps_and_trace(net, x, t, _rademacher(4000, 6, (d,), 1, F64, "cpu"), exact=False)
    assert float((many - exact).abs().max()) < 0.05 * float(exact.abs().mean()) + 0.05


def _implied_precision(model, dim: int, t_r: float) -> torch.Tensor:
    """A with s_0(x) = -A (x - mu) + b read off deconvolved_score (linear for a Gaussian base)."""
    x = torch.randn(4 * dim, dim, dtype=F64, generator=torch.Generator().manual_seed(5))
    s0, _ = deconvolved_score(model, x, t_r)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=F64)], 1)
    slope = torch.linalg.lstsq(design, s0).solution[:-1].T
    return -(slope + slope.T) / 2


def test_digits_shaped_gaussian_rounds_reach_the_papers_tilt():
    """A Gaussian of the digits' size (64 pixels, rank-6 covariance plus noise of variance 0.05)
    through the digits' cosine table: the perfect-solver round of the deconvolved reward,
    Cov_1 = (S^-1 - lam A)^-1 with A the reward's implied precision, against the paper's
    S / (1 - lam), per whitened direction, one and two rounds (round 2 reads round 1's exact
    model). The smoothed reward at the same t_r reaches ~0.86 of the noise directions' gain.
    (This checks the reward treatment in closed form; the solver's share is not in it.)"""
    from smeme.images.unet import make_schedule

    sch = make_schedule("cosine")
    g = torch.Generator().manual_seed(3)
    dim, lam, t_r = 64, 0.1, 0.05
    u = torch.linalg.qr(torch.randn(dim, 6, generator=g, dtype=F64))[0]
    cov = u @ torch.diag(torch.linspace(2.0, 6.0, 6, dtype=F64)) @ u.T + 0.05 * torch.eye(dim, dtype=F64)
    covs = [cov]
    for _ in range(2):
        model = GaussianModel(torch.zeros(dim, dtype=F64), covs[-1], sch)
        a = _implied_precision(model, dim, t_r)
        covs.append(torch.linalg.inv(torch.linalg.inv(covs[-1]) - lam * a))
    w = torch.linalg.inv(torch.linalg.cholesky(cov))
    for k in (1, 2):
        ratios = torch.linalg.eigvalsh(w @ covs[k] @ w.T)
        shares = ratios.log() / (-k * math.log(1 - lam))
        assert float((shares - 1).abs().max()) < 0.02, (k, float(shares.min()), float(shares.max()))
    ab = sch.ab(torch.tensor(t_r, dtype=F64))
    smoothed = torch.linalg.inv(torch.linalg.inv(cov) - lam * torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(dim, dtype=F64)))
    low = torch.linalg.eigvalsh(w @ smoothed @ w.T).log().min() / -math.log(1 - lam)
    assert float(low) < 0.9  # the noise directions: the smoothed reward's target is a different one
