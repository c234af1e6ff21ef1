"""A digits round on an analytic Gaussian image model, as explore builds it, against the exact tilt.

The base is N(0, S) on 1x8x8 images (exact eps) through the digits' discrete cosine schedule
(make_schedule, as the digits preset uses it): S has the digits' own top principal components
(scikit-learn's digits in the model's [-1, 1] pixel units, variances 2.8 down to 0.58) plus NOISE in
every one of the 64 directions, the 54 others at NOISE alone. The tuned model is that base plus a
correction with the digits UNet's form (UNetNoisePredictor) whose output starts at zero: the UNet
minus a frozen copy of its own initial weights, so that, as in a pre-trained digits UNet, every
layer is live from the first Adam step (a zeroed output layer would leave a 16-step digits round
moving that layer alone). The solver is digits_explore_config(...).solver_config(1) (4 iterations
x 48 trajectories x 40 steps, lambda 0.1, t_r 0.02, the smoothed reward, explore's RoundReward);
rounds after the first start from the previous round's tuned network, as run_rounds does
(prepare_models).

The truth (issue 20, item 6): the tuned network should BE the tilted model N(0, S*),
S* = (S^-1 - lam S_r^-1)^-1, S_r = ab(t_r) S + (1 - ab(t_r)) I, diagonal in S's eigenbasis (and
compounded over rounds). Three judges per eigen-direction v of S (signal and noise apart):
- fixed point (the tests): on trajectories of the exact tilt's own chain, the solver's regression
  target (the adjoint its control is paired with) against the exact tilt's control, step by step
  (fixed_point_ratios, on tests/fixed_point.py, which Stable Diffusion's check shares): 1 where the
  tilt is the control's fixed point, whatever the budget.
- score share: at diffusion time t, on probes x ~ N(0, ab S + (1 - ab) I), the slope of v'eps(x, t)
  on v'x is sqrt(1 - ab) / (ab e + 1 - ab) for a Gaussian of variance e along v; the share is the
  tuned network's change of that slope over the exact tilt's change. At t_r it is what the next
  round's reward reads. Its standard error is the regression's, from the probes themselves.
- variance ratio: v'C1 v / v'C0 v of the tuned and the base model's samples under the same noise
  through the chain (test_fidelity_highd.paired_log_ratios), against the exact tilt's ratio
  through the same chain (test_fidelity_highd.exact_ratios).
The last two judge a trained round (bench/bench_image_fidelity.py, whose numbers are in BENCHMARKS.md):
at the digits' budget the UNet correction reaches a fraction of the tilt with either control.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import pytest
import torch

from fixed_point import LATE_T, EigenGaussian, control_fixed_point, misses
from helpers import ResidualNoisePredictor
from smeme.models.base import NoisePredictor
from test_fidelity_highd import exact_ratios, paired_log_ratios

F64 = torch.float64
RANK = 10  # signal directions: the digits' top principal components
NOISE = 0.01  # variance added in every direction ([-1, 1] pixel units; the digits' 40th PC has ~0.02)
SHAPE = (1, 8, 8)


def digits_image_covariance(rank: int = RANK, noise: float = NOISE) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(S, eigenvalues ascending, eigenvectors as columns): the digits' top `rank` principal
    components with their variances, plus `noise` in all 64 directions; noise directions first."""
    from smeme.images.pixels import load_all_digits, raw_to_images

    raw, _ = load_all_digits()
    x = raw_to_images(raw).reshape(len(raw), -1)
    var, vec = np.linalg.eigh(np.cov(x.T))  # ascending; a full orthonormal basis of the 64 pixels
    e = np.concatenate([np.zeros(64 - rank), var[-rank:]]) + noise
    S = vec @ np.diag(e) @ vec.T
    return torch.tensor((S + S.T) / 2, dtype=F64), e, vec


class ZeroStartUNet(NoisePredictor):
    """The digits UNet minus a frozen copy of its initial weights: output zero at the start, every
    layer trainable. The copy is held outside the module's parameters (no optimiser, no
    requires_grad_ from prepare_models) and travels with deepcopy."""

    def __init__(self, config, schedule, seed: int):
        super().__init__()
        from smeme.images.unet import UNetNoisePredictor

        torch.manual_seed(seed)
        self.net = UNetNoisePredictor(config, schedule)
        self.net.unet.conv_out.reset_parameters()  # the digits UNet zeroes it; a trained one is not zero
        start = copy.deepcopy(self.net).eval()
        for p in start.parameters():
            p.requires_grad_(False)
        self._start = (start,)
        self.schedule, self.sample_shape = schedule, self.net.sample_shape

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            start = self._start[0](x, t)
        return self.net(x, t) - start


def digits_round_config(control: str, seed: int, **explore):
    """The digits' ExploreConfig with `control` and ExploreConfig overrides (iterations, ...)."""
    from smeme.images.digits_rounds import digits_explore_config, digits_explore_defaults

    solver = {**digits_explore_defaults()["solver_options"], "control": control}
    return digits_explore_config(seed=seed, solver_options=solver, **explore)


def image_rounds(control: str, seed: int, rounds: int = 1, unet=None, **explore):
    """`rounds` digits rounds on the analytic image model as run_rounds drives them. Returns
    (base, [tuned model after each round], [SolverResult], config, cpu seconds of the solver)."""
    from smeme.explore import RoundReward, _frozen, prepare_models
    from smeme.images.unet import UNetConfig, make_schedule
    from smeme.solvers import adjoint_matching

    sch = make_schedule("cosine")
    _, e, q = digits_image_covariance()
    base = EigenGaussian(e, q, sch, SHAPE)
    config = digits_round_config(control, seed, **explore)
    prev = ResidualNoisePredictor(base, ZeroStartUNet(unet or UNetConfig(), sch, seed))
    tuned, results, cpu = [], [], time.process_time()
    for k in range(1, rounds + 1):
        model_ft, model_base, _ = prepare_models(prev)
        reward = RoundReward(_frozen(prev), config.lam_at(k), config)
        results.append(adjoint_matching(model_ft, model_base, reward.grad, config.solver_config(k),
                                        reward_value=reward.value))
        prev = model_ft
        tuned.append(_frozen(model_ft))
    return base, tuned, results, config, time.process_time() - cpu


def tilted_variances(e: np.ndarray, lam: float, ab_r: float, rounds: int) -> np.ndarray:
    """The smoothed target's exact variances per eigen-direction after `rounds` rounds."""
    for _ in range(rounds):
        e = 1 / (1 / e - lam / (ab_r * e + 1 - ab_r))
    return e


def score_shares(model, base, e: np.ndarray, q: np.ndarray, e_exact: np.ndarray, t: float,
                 n: int = 4096, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Per eigen-direction: the tuned model's share of the exact change of the eps slope at time t,
    and its standard error (the through-origin regression's, from the probes' residuals)."""
    sch = base.schedule
    ab = float(sch.ab(torch.tensor(t, dtype=F64)))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(e), generator=g, dtype=F64)
    coords = z * torch.tensor(np.sqrt(ab * e + 1 - ab))  # probes in S's eigenbasis
    x = (coords @ torch.tensor(q).T).to(torch.float32).reshape(n, *SHAPE)
    tt = torch.full((n,), t, dtype=torch.float32)
    with torch.no_grad():
        y = (model(x, tt).reshape(n, -1).to(F64) @ torch.tensor(q)).numpy()
    c = coords.numpy()
    slope = (y * c).sum(0) / (c * c).sum(0)
    resid = y - slope * c
    se = np.sqrt((resid**2).sum(0) / (n - 1) / (c * c).sum(0))
    root = math.sqrt(1 - ab)
    want_base, want = root / (ab * e + 1 - ab), root / (ab * e_exact + 1 - ab)
    change = want - want_base
    return (slope - want_base) / change, se / np.abs(change)


def sample_log_ratios(model, base, q: np.ndarray, steps: int, n: int, seed: int = 123):
    """Per eigen-direction: log(var tuned / var base) of paired samples through `steps` DDPM steps, and its SE."""
    from smeme.sampling import FixedNoise, sample_ddpm

    noise = FixedNoise.from_seed(seed, n, SHAPE, steps)
    with torch.no_grad():
        x1 = sample_ddpm(model, noise).reshape(n, -1).to(F64).numpy() @ q
        x0 = sample_ddpm(base, noise).reshape(n, -1).to(F64).numpy() @ q
    return paired_log_ratios(x1, x0)


def exact_sample_log_ratios(e: np.ndarray, config, steps: int, rounds: int = 1) -> np.ndarray:
    """log of the exact tilt's variance over the base's per eigen-direction, both through `steps` steps."""
    from smeme.images.unet import make_schedule

    sch = make_schedule("cosine")
    ab_r = float(sch.ab(torch.tensor(config.t_r, dtype=F64)))
    # chain(tilt^k e) / chain(e) telescopes into the rounds' one-round ratios
    return sum(np.log(exact_ratios(tilted_variances(e, config.lam_at(1), ab_r, k), config.lam_at(1), ab_r,
                                   config.reward_target, steps, sch)) for k in range(rounds))


def fixed_point_ratios(control: str, trajectories: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits solver's regression at the exact tilted image model (fixed_point.control_fixed_point
    with the digits' schedule, solver config and RoundReward), per stochastic step i and eigen-direction
    v: the slope of the regression target E[-std_i a | x_i] (the adjoint the control is paired with) on
    v'x_i over the slope of the exact tilt's control u_i, on trajectories of the exact tilt's own chain
    (the tuned model's, at the fixed point). 1 where the exact tilt is the control's fixed point.
    Returns (ratios (steps, 64), their standard errors, the steps' times)."""
    from smeme.explore import RoundReward
    from smeme.images.unet import make_schedule

    sch = make_schedule("cosine")
    _, e, q = digits_image_covariance()
    config = digits_round_config(control, seed, trajectories=trajectories)
    ab_r = float(sch.ab(torch.tensor(config.t_r, dtype=F64)))
    tilted = EigenGaussian(tilted_variances(e, config.lam_at(1), ab_r, 1), q, sch, SHAPE)
    base = EigenGaussian(e, q, sch, SHAPE)
    reward = RoundReward(base, config.lam_at(1), config)
    out = control_fixed_point(tilted, base, reward.grad, config.solver_config(1), SHAPE, q)
    return out["slope"], out["slope_se"], out["t"]


def fixed_point_misses(control: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fixed_point.misses at the late steps (t <= LATE_T: > 0 where |ratio - 1| exceeds 0.02 plus 4.5
    standard errors), with the ratios and SEs."""
    ratios, se, t = fixed_point_ratios(control, trajectories=1024)
    late = t <= LATE_T
    return misses(ratios[late], se[late]), ratios[late], se[late]


@pytest.mark.slow
def test_the_score_control_has_the_exact_tilt_as_its_fixed_point_at_image_size():
    """At the exact tilted image model (the smoothed target, through the digits' schedule and 40-step
    grid, the digits' solver config), the score-unit control's regression target equals its control
    in every direction at every late step: the tilt is the round's fixed point, whatever the budget.
    Bar: 0.02 plus 4.5 standard errors of the regression slope (a family-wise 1% over the ~1,600
    step x direction comparisons)."""
    off, ratios, se = fixed_point_misses("score")
    worst = np.unravel_index(np.argmax(off), off.shape)
    assert off.max() <= 0, f"ratio {ratios[worst]:.3f} (se {se[worst]:.3f}) at late step {worst[0]}, direction {worst[1]}"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="digits rounds ship control='ddpm' (DIGITS_CONTROL): its fixed point's score "
                   "carries kappa_i = 0.3-0.85 of the tilt; the score-unit control left test_digits' model's "
                   "support at t_r 0.02 (2 of 3 seeds rejected) and at t_r 0.05-0.1 was less readable and less "
                   "diverse than 'ddpm' over 3 rounds of the ready model (README, 'Known limits'; issue 20, item 6)")
def test_the_shipped_image_control_has_the_exact_tilt_as_its_fixed_point():
    """The same check for the control digits rounds ship (DIGITS_CONTROL)."""
    from smeme.images.digits_rounds import DIGITS_CONTROL

    off, ratios, se = fixed_point_misses(DIGITS_CONTROL)
    worst = np.unravel_index(np.argmax(off), off.shape)
    assert off.max() <= 0, f"ratio {ratios[worst]:.3f} (se {se[worst]:.3f}) at late step {worst[0]}, direction {worst[1]}"


def test_the_zero_start_unet_starts_at_zero_and_trains_every_layer():
    """The correction of the closed-form image rounds outputs zero at the start, and one loss gradient
    reaches every one of its trainable tensors (unlike the digits UNet's zeroed output layer, which
    blocks every gradient but its own at the first step)."""
    from smeme.images.unet import UNetConfig, make_schedule

    sch = make_schedule("cosine")
    net = ZeroStartUNet(UNetConfig(block_out_channels=(8, 16, 16)), sch, seed=0)
    x, t = torch.randn(4, *SHAPE), torch.full((4,), 0.3)
    out = net(x, t)
    assert torch.equal(out, torch.zeros_like(out))
    (out - 1.0).pow(2).sum().backward()
    params = [p for p in net.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), \
        [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not any(p.requires_grad for p in net._start[0].parameters())
