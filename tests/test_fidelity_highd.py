"""One round in 16 dimensions, as explore builds it, against the exact tilt in every direction.

The base is an analytic Gaussian N(0, S) (exact eps) plus a trainable correction whose output
starts at zero (the CSV preset's network shape, linear skip included), so only the solver's error is
measured (issue 20, "high dimension"). S has eigenvalues spread over 60x (the narrowest 0.065 after
standardisation) in a random basis. The solver is ExploreConfig(...).solver_config(1, dim=16) with
the CSV domain's defaults and lambda 1/3 (so, as in explore, no likelihood-ratio term: exp(-lam^2 16 / 2)
< ess_fallback), its reward explore's RoundReward (gradient and PF-ODE values of -lam log p(x, t_r),
the default smoothed target).

The truth: the tuned network models N(0, S*), S* = (S^-1 - lam S_r^-1)^-1 with S_r = ab(t_r) S +
(1 - ab(t_r)) I, diagonal in S's eigenbasis, and so is what the 50-step chain makes of it
(helpers.gaussian_sampler_moments). Per eigen-direction v: the measured variance ratio
v'C1 v / v'C0 v from the tuned and the base model's samples under the same noise (paired), and the
share of the exact log-variance gain, log ratio / log ratio*. Its standard error comes from the
samples themselves (delta method on the paired squares), and the bars are the issue's per-direction
bars widened by three of those standard errors.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from helpers import ResidualNoisePredictor, gaussian_sampler_moments

F64 = torch.float64
LAM = 1 / 3
N_EVAL = 20000


def spread_covariance(d: int, spread: float = 60.0, seed: int = 3) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(S, eigenvalues ascending with mean 1, eigenvectors as columns): a geometric spectrum over
    `spread` in a random basis."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    e = np.geomspace(1.0, spread, d)
    e = e * d / e.sum()
    S = q @ np.diag(e) @ q.T
    return torch.tensor((S + S.T) / 2, dtype=F64), e, q


def manifold_covariance(d: int, noise: float, seed: int = 3) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Rank 4 (tangent variances 0.5:1:1.5:2, tr S = d) plus `noise` in every direction: the d - 4
    normal directions come first, the 4 tangent ones last."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    tangent = np.array([0.5, 1.0, 1.5, 2.0])
    e = np.concatenate([np.full(d - 4, noise), tangent * (d - d * noise) / tangent.sum() + noise])
    S = q @ np.diag(e) @ q.T
    return torch.tensor((S + S.T) / 2, dtype=F64), e, q


def exact_ratios(e: np.ndarray, lam: float, ab_r: float, target: str, steps: int, schedule) -> np.ndarray:
    """Per eigen-direction, the exact tilt's variance over the base's, both through the N-step chain:
    'smoothed' (S^-1 - lam S_r^-1)^-1, 'data' (the paper's) S / (1 - lam)."""
    tilted = e / (1 - lam) if target == "data" else 1 / (1 / e - lam / (ab_r * e + 1 - ab_r))
    diag = lambda v: torch.diag(torch.tensor(v, dtype=F64))  # noqa: E731  (the chain keeps S's eigenbasis)
    zero = torch.zeros(len(e), dtype=F64)
    before = gaussian_sampler_moments(zero, diag(e), schedule, steps=steps)[1].diag().numpy()
    after = gaussian_sampler_moments(zero, diag(tilted), schedule, steps=steps)[1].diag().numpy()
    return after / before


def paired_log_ratios(x1: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of paired samples (same noise): log(var x1 / var x0) and its standard error
    (delta method: Var log R ~ Var(a^2 / E a^2 - b^2 / E b^2) / n on the centred columns)."""
    a, b = x1 - x1.mean(0), x0 - x0.mean(0)
    a2, b2 = a**2, b**2
    z = a2 / a2.mean(0) - b2 / b2.mean(0)
    return np.log(a2.mean(0) / b2.mean(0)), z.std(0) / math.sqrt(len(a))


def gaussian_round(S: torch.Tensor, q: np.ndarray, seed: int, **explore):
    """One round built as explore builds it on N(0, S) + a zero-initialised correction: per
    eigen-direction of S (q's columns), the measured log variance ratio and its standard error, the
    SolverResult, the ExploreConfig, the solver's config and the solver's CPU seconds."""
    from smeme.explore import ExploreConfig, RoundReward, _frozen
    from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
    from smeme.sampling import FixedNoise, sample_ddpm
    from smeme.schedule import VPSchedule
    from smeme.solvers import adjoint_matching

    d, sch = S.shape[0], VPSchedule()
    base = GaussianModel(torch.zeros(d, dtype=F64), S, sch)
    # the CSV domain's explore defaults (CsvDomain.explore_defaults) and lambda 1/3
    config = ExploreConfig(**{"iterations": 30, "trajectories": 1024, "lam": LAM, "seed": seed, **explore})
    torch.manual_seed(seed)
    correction = MLPNoisePredictor(MLPConfig(d, width=128, depth=3, time_dim=32, linear_skip=3), sch).double()
    ft = ResidualNoisePredictor(base, correction)
    reward = RoundReward(_frozen(base), config.lam_at(1), config)
    cfg = config.solver_config(1, dim=d)
    cpu = time.process_time()
    result = adjoint_matching(ft, base, reward.grad, cfg, reward_value=reward.value)
    cpu = time.process_time() - cpu
    noise = FixedNoise.from_seed(123, N_EVAL, (d,), cfg.steps, dtype=F64)
    with torch.no_grad():
        x1, x0 = sample_ddpm(ft, noise).numpy() @ q, sample_ddpm(base, noise).numpy() @ q
    log_r, se = paired_log_ratios(x1, x0)
    return log_r, se, result, config, cfg, cpu


def exact_log_ratios(e: np.ndarray, config, cfg) -> np.ndarray:
    from smeme.schedule import VPSchedule

    sch = VPSchedule()
    ab_r = float(sch.ab(torch.tensor(config.t_r, dtype=F64)))
    return np.log(exact_ratios(e, config.lam_at(1), ab_r, config.reward_target, cfg.steps, sch))


@pytest.mark.slow
def test_explores_16d_round_lands_a_spread_gaussian_in_every_direction():
    """Explore's round in 16 dimensions at lambda 1/3 runs Adjoint Matching alone (the likelihood-ratio
    weights' share could not reach ess_fallback 0.5). (With the term tempered, shipped before, this case
    reached 0.34-0.96 of the exact gain per direction, median 0.69; with it falling back step by step,
    median 0.96; BENCHMARKS.md.) Every direction must go the right way (its log-variance gain > 3
    standard errors), none may overshoot the exact gain by more than 10% (+3 SE), and the median
    direction must reach the exact gain within 10% (+3 SE)."""
    S, e, q = spread_covariance(16)
    log_r, se, result, config, cfg, _ = gaussian_round(S, q, seed=5)
    assert config.ess_fallback == 0.5 and cfg.likelihood_ratio_share == 0  # explore's defaults in 16-D
    want = exact_log_ratios(e, config, cfg)
    share, share_se = log_r / want, se / want
    report = (f"shares {np.round(share, 3).tolist()} (se {np.round(share_se, 3).max()}), "
              f"health {result.health}")
    assert np.all(log_r > 3 * se), report
    assert np.all(share <= 1.10 + 3 * share_se), report
    mid = np.argsort(share)[len(share) // 2]
    assert abs(share[mid] - 1) <= 0.10 + 3 * share_se[mid], report


def test_per_step_weights_keep_the_healthy_steps_untempered():
    """ess_fallback's weights (likelihood_ratio_targets per_step): no tempering, and a step is kept
    exactly where its own weights' Kish share reaches the floor. log w_i = r - sum_{l >= i} Girsanov_l:
    step 1's Girsanov term equals r (equal weights, share 1), step 0 adds one of 8 |N(0, 1)| (share well below 0.5)."""
    from smeme.solvers.likelihood_ratio import effective_sample_share, likelihood_ratio_targets

    g = torch.Generator().manual_seed(0)
    m, d = 512, 3
    reward = torch.randn(m, generator=g, dtype=F64).abs()
    extra = 8 * torch.randn(m, generator=g, dtype=F64).abs()
    # eps_base 0, c_x 1, std 1: zeta_i = x_{i+1} - x_i and u_i = zeta_i - z_i. With z = zeta except
    # z_i[:, 0] = 0, u_i = zeta_i[:, 0] e_1 and its Girsanov term u.z + |u|^2 / 2 = zeta_i[:, 0]^2 / 2.
    states = torch.zeros(3, m, d, dtype=F64)
    states[1, :, 0] = torch.sqrt(2 * extra)
    states[2, :, 0] = states[1, :, 0] + torch.sqrt(2 * reward)
    states[:, :, 1:] = torch.randn(3, m, d - 1, generator=g, dtype=F64)
    z = states[1:] - states[:-1]
    z[:, :, 0] = 0
    c_x, c_eps, std = torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    steps = torch.tensor([0, 1])
    pull, w, ess, beta, kept = likelihood_ratio_targets(states, torch.zeros_like(states[:-1]), z, reward, c_x,
                                                        c_eps, std, steps, ess_floor=0.5, per_step=True)
    shares = effective_sample_share(w[steps])
    assert beta == 1.0 and ess == float(shares.min())
    assert shares[0] < 0.5 < shares[1] and kept.tolist() == [False, True]
    assert torch.allclose(w[1], torch.ones(m, dtype=F64))  # r - Girsanov constant: equal weights
    assert torch.allclose(w[0], torch.softmax(-extra, 0) * m)  # untempered


@pytest.fixture(scope="module")
def trained_16d_run(tmp_path_factory):
    """A CSV MLP trained as the CLI trains it (the preset's steps) on 16 correlated columns whose
    standardised spectrum spreads 50x (data seed 61, never used for tuning): (run folder, work folder)."""
    from test_fidelity import spread_gaussian_csv

    from smeme.pipeline import pretrain_run

    tmp = tmp_path_factory.mktemp("trained16")
    eigenvalues = np.geomspace(1, 50, 16)
    csv = spread_gaussian_csv(tmp / "data.csv", eigenvalues / eigenvalues.mean(), seed=61)
    return pretrain_run(tmp / "run", "csv", {"path": str(csv)}).folder, tmp


@pytest.fixture(scope="module")
def trained_16d_rounds(trained_16d_run) -> list[dict]:
    """Three rounds as the CLI runs them (run_rounds: each reads its reward from the previous tuned
    network) on a trained CSV MLP of 16 correlated columns whose standardised spectrum spreads 50x (the
    CSV preset's pre-training, CSV defaults, lambda 0.3: Adjoint Matching alone at D = 16 with
    ExploreConfig.budget_at's larger budget); per round test_fidelity's shares against the exact
    cumulative round of the paper's target (the pre-trained model's own covariance, read with a fine
    sampler, tilted round after round). Round k's solver seed is seed * 10,007 + k, so round 1 is the
    one-round run's. Data seed 61 and solver seed 8 were never used for tuning. The support guard is off
    (max_validity_drop 1): in 16 dimensions the exact rounds themselves leave the data's nearest-neighbour
    support fast (on data seed 36 99% -> 93% -> 71% -> 39% in rounds 0-3), so explore rejects round 3
    whatever the solver does."""
    from test_fidelity import run_gaussian_rounds

    src, tmp = trained_16d_run
    return run_gaussian_rounds(src, tmp, 3, seed=8, max_validity_drop=1.0)


def _shares_report(rows: list[dict]) -> str:
    return "; ".join(f"round {k}: directions {r['directions'].min():.3f}-{r['directions'].max():.3f}, "
                     f"log-det {r['logdet']:.3f}" for k, r in enumerate(rows, 1))


@pytest.mark.slow
def test_a_trained_16d_round_keeps_every_whitened_direction(trained_16d_rounds):
    """Round 1 of trained_16d_rounds, judged per whitened direction. (Tuned on data seed 36, solver
    seeds 5-7: 0.91-0.94 of the exact gain in the narrowest direction, 1.04-1.05 in the widest, against
    0.81-0.83 / 1.06-1.07 with the budget as set; BENCHMARKS.md.) The issue's bar: every direction
    within 10%. The measured shares' own sampling error is small (bootstrap sd ~0.007: the rounds share
    their noise). The test's model is trained as the CLI trains it: after test_fidelity's 800 steps the
    network's score at t_r is not that of its own samples (up to 10-15% of the exact gain per direction;
    bench_gaussian_fidelity.py's 'reward_implied'), which no solver can undo."""
    row = trained_16d_rounds[0]
    shares = row["directions"]
    report = _shares_report(trained_16d_rounds[:1])
    print(report)
    assert 0.9 <= shares.min() and shares.max() <= 1.1, report
    assert 0.9 <= row["logdet"] <= 1.1, report


@pytest.mark.slow
def test_three_trained_16d_rounds_follow_the_exact_recursion(trained_16d_rounds):
    """Rounds 2 and 3 of trained_16d_rounds against the exact recursion (round k tilts the exact round
    k - 1, not the tuned one), so errors that compound over rounds count: the issue's bar over 3 rounds,
    every whitened direction and the log-det within 15% of the exact cumulative gain. (Measured on data
    seed 36, solver seeds 11 and 12: BENCHMARKS.md.)"""
    report = _shares_report(trained_16d_rounds)
    print(report)
    for row in trained_16d_rounds[1:]:
        assert 0.85 <= row["directions"].min() and row["directions"].max() <= 1.15, report
        assert 0.85 <= row["logdet"] <= 1.15, report


@pytest.mark.slow
def test_a_trained_16d_round_with_the_smoothed_reward_reaches_its_target(trained_16d_run, tmp_path):
    """The same trained model, one round with the smoothed reward (reward_target 'smoothed', the
    option), judged per whitened direction against the exact gain of its own target
    p_0 p_0(., t_r)^-lam, which gives the narrowest directions (standardised variance ~0.07) about 0.7
    of the paper's gain: the bar is every direction and the log-det within 10%. (Measured on data seed
    36 with solver seeds 5-7: 0.98-1.03; in 32 and 64 dimensions 0.97-1.04 and 0.98-1.06; BENCHMARKS.md.)"""
    from test_fidelity import run_gaussian_rounds

    src, _ = trained_16d_run
    rows = run_gaussian_rounds(src, tmp_path, 1, seed=8, max_validity_drop=1.0, reward_target="smoothed")
    report = _shares_report(rows)
    print(report)
    assert 0.9 <= rows[0]["directions"].min() and rows[0]["directions"].max() <= 1.1, report
    assert 0.9 <= rows[0]["logdet"] <= 1.1, report
