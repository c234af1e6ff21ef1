"""The judge of the solver's sign and scale (DESIGN.md section 3).

Base: an analytic Gaussian (exact eps) plus a trainable MLP correction whose last layer
starts at zero, so the tuned model starts exactly at the base and only solver error is
measured. Targets are exact tilts of what the BASE SAMPLER produces (mu_M, S_M from the
linear-Gaussian chain), not of the data distribution.

Round 2 (the choice documented here): its base is round 1's tuned model M1 = analytic +
correction (frozen), so the adjoint runs through a network-corrected base, and the new
correction sits on top of it. Its reward is the mirror-descent reward of the ideal chain,
r2(x) = -lam log p_1(x, t_r), with p_1 = N(0, C1) the Gaussian of M1's MEASURED sampler
output (C1 from 20k samples) and C1_r = ab(t_r) C1 + (1 - ab(t_r)) I its marginal at t_r.
The target is then closed form: Cov2* = (C1^-1 - lam C1_r^-1)^-1.
Why not M1's own score at t_r as the reward: the tuned correction is only trained at the
solver's grid times, and with 50 steps the discrete control of step i reads as a score
correction kappa_i * grad V with kappa = (1-ab_j)/(1-ab_i) sqrt(ab_i/ab_j) (0.25-0.5 near
t_r = 0.01), so s_M1(x, t_r) describes a density far narrower than M1's samples (measured:
variance 1.05 against 1.49) and is not even linear beyond M1's samples. A target built
from it is ill-conditioned (precision margin 0.2 of 0.67) and judges that read-out, not
the solver. The explore tests measure its effect on multi-round S-MEME.
"""
from __future__ import annotations

import copy

import pytest
import torch

from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor, score
from smeme.sampling import FixedNoise, sample_ddpm, time_grid
from smeme.schedule import VPSchedule
from smeme.solvers import (AdjointMatchingConfig, ResidualNoisePredictor, adjoint_matching,
                           gaussian_sampler_moments)

SCH = VPSchedule()
F64 = torch.float64
N_EVAL = 20000


def with_correction(base, seed=0):
    torch.manual_seed(seed)
    corr = MLPNoisePredictor(MLPConfig(2, width=32, depth=2, time_dim=16), SCH).double()
    return ResidualNoisePredictor(base, corr)


def frozen(model):
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def samples(model, steps, seed=123, n=N_EVAL):
    return sample_ddpm(model, FixedNoise.from_seed(seed, n, (2,), steps, dtype=F64))


def entropy_reward(model, lam, t_r):
    # grad r(x) = -lam * s(x, t_r)  for r = -lam log p(x, t_r)
    return lambda x: -lam * score(model, x, torch.full((x.shape[0],), t_r, dtype=x.dtype))


def marginal_cov(S, t_r):
    ab = SCH.ab(torch.tensor(t_r, dtype=F64))
    return ab * S + (1 - ab) * torch.eye(S.shape[0], dtype=F64)


def tilt_cov(S_M, lam, S_r):
    # Cov* = (S_M^-1 - lam S_r^-1)^-1
    return torch.linalg.inv(torch.linalg.inv(S_M) - lam * torch.linalg.inv(S_r))


def gain(C, S_M):
    # entropy gain of N(0, C) over N(0, S_M): 0.5 log det(C S_M^-1)
    return float(0.5 * torch.logdet(C @ torch.linalg.inv(S_M)))


def test_sampler_moments_match_the_chain():
    S = torch.diag(torch.tensor([1.0, 0.01], dtype=F64))
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    m, P = gaussian_sampler_moments(mu, S, SCH, steps=50)
    x = samples(GaussianModel(mu, S, SCH), 50)
    assert torch.allclose(x.mean(0), m, atol=0.02)
    assert torch.allclose(torch.cov(x.T).diag() / P.diag(), torch.ones(2, dtype=F64), atol=0.04)
    assert 0.87 < float(P[0, 0]) < 0.90  # the chain shrinks S = 1 to ~0.885 at 50 steps
    # many steps: close to the data covariance
    _, P1000 = gaussian_sampler_moments(mu, S, SCH, grid=time_grid(1000, dtype=F64))
    assert 0.98 < float(P1000[0, 0]) <= 1.0


def pairing_shift_ratio(S_diag, steps, pairing):
    """Closed form of the mean shift a converged solver reaches for a linear reward, per
    dimension, relative to S_M w: pairing u_i with a_{i+1} gives exactly 1; with a_i the
    shift of step i is damped by that step's Jacobian A_i."""
    g = time_grid(steps, dtype=F64)
    ab = SCH.ab(g)
    out = []
    for s in S_diag:
        A, var = [], []
        for k in range(steps):
            r = ab[k] / ab[k + 1]
            c_x, c_eps = r.rsqrt(), r.rsqrt() * (1 - r) / (1 - ab[k]).sqrt()
            A.append(float(c_x - c_eps * (1 - ab[k]).sqrt() / (ab[k] * s + 1 - ab[k])))
            var.append(float((1 - ab[k + 1]) / (1 - ab[k]) * (1 - r)))
        phi = [1.0] * (steps + 1)  # Phi_{j -> M}
        for j in range(steps - 1, -1, -1):
            phi[j] = phi[j + 1] * A[j]
        right = sum(var[i] * phi[i + 1] ** 2 for i in range(steps))
        damp = A if pairing == "current" else [1.0] * steps
        out.append(sum(var[i] * phi[i + 1] ** 2 * damp[i] for i in range(steps)) / right)
    return out


LIN_S = [1.0, 0.04]
LIN_STEPS = 30


def run_linear(pairing):
    S = torch.diag(torch.tensor(LIN_S, dtype=F64))
    base = GaussianModel(torch.zeros(2), S, SCH)
    ft = with_correction(base)
    w = torch.tensor([1.0, -2.0], dtype=F64)
    cfg = AdjointMatchingConfig(iterations=30, trajectories=256, steps=LIN_STEPS, lr=3e-3,
                                loss_steps=None, pairing=pairing)
    losses = adjoint_matching(ft, base, lambda x: w.expand_as(x), cfg)
    assert losses[-1] < losses[0]
    _, S_M = gaussian_sampler_moments(torch.zeros(2), S, SCH, steps=LIN_STEPS)
    shift = samples(ft, LIN_STEPS).mean(0) - samples(base, LIN_STEPS).mean(0)
    return shift / (S_M @ w)


def test_linear_reward_moves_mean_by_S_M_w():
    ratio = run_linear("next")
    assert torch.all((ratio - 1).abs() < 0.10), f"shift / (S_M w) = {ratio.tolist()}"


def test_wrong_pairing_is_caught_by_the_linear_test():
    # the closed form says pairing with a_i damps the small-variance direction to ~0.76
    predicted = pairing_shift_ratio(LIN_S, LIN_STEPS, "current")
    assert predicted[1] < 0.8 and pairing_shift_ratio(LIN_S, LIN_STEPS, "next") == [1.0, 1.0]
    ratio = run_linear("current")
    assert float(ratio[1]) < 0.87, f"wrong pairing not detected: {ratio.tolist()}"
    assert abs(float(ratio[1]) - predicted[1]) < 0.08


ENT_S = torch.diag(torch.tensor([1.0, 0.25], dtype=F64))
LAM, T_R, ENT_STEPS = 0.5, 0.01, 50


def ent_config(seed, iterations=40):
    return AdjointMatchingConfig(iterations=iterations, trajectories=256, steps=ENT_STEPS, lr=3e-3,
                                 loss_steps=None, seed=seed)


@pytest.fixture(scope="module")
def round1():
    base = GaussianModel(torch.zeros(2), ENT_S, SCH)
    ft = with_correction(base)
    adjoint_matching(ft, base, entropy_reward(base, LAM, T_R), ent_config(0))
    return base, ft


def test_entropy_reward_one_round(round1):
    base, ft = round1
    _, S_M = gaussian_sampler_moments(torch.zeros(2), ENT_S, SCH, steps=ENT_STEPS)
    target = tilt_cov(S_M, LAM, marginal_cov(ENT_S, T_R))
    assert 1.55 < float(target[0, 0] / ENT_S[0, 0]) < 1.65  # ~1.8 S_M ~ 1.6 S at 50 steps, not 2 S
    C = torch.cov(samples(ft, ENT_STEPS).T)
    ratio = C.diag() / target.diag()
    assert torch.all((ratio - 1).abs() < 0.10), f"Cov / Cov* = {ratio.tolist()}"
    assert abs(float(C[0, 1])) < 0.05
    g, g_star = gain(C, S_M), gain(target, S_M)
    assert abs(g / g_star - 1) < 0.10, f"entropy gain {g:.3f} vs closed form {g_star:.3f}"


def test_entropy_reward_second_round(round1):
    _, m1 = round1
    m1 = frozen(m1)
    C1 = torch.cov(samples(m1, ENT_STEPS).T)  # what round 1's sampler produces
    C1_r = marginal_cov(C1, T_R)
    P = torch.linalg.inv(C1_r)
    target = tilt_cov(C1, LAM, C1_r)
    ft = with_correction(m1, seed=1)
    adjoint_matching(ft, m1, lambda x: LAM * x @ P, ent_config(1, iterations=60))  # grad r2 = lam C1_r^-1 x
    C2 = torch.cov(samples(ft, ENT_STEPS, seed=7).T)
    ratio = C2.diag() / target.diag()
    assert torch.all((ratio - 1).abs() < 0.10), f"Cov2 / Cov2* = {ratio.tolist()}"
    g, g_star = gain(C2, C1), gain(target, C1)
    assert abs(g / g_star - 1) < 0.10, f"round-2 entropy gain {g:.3f} vs closed form {g_star:.3f}"
    # two rounds together: close to the chain's closed form from the analytic start
    _, S_M = gaussian_sampler_moments(torch.zeros(2), ENT_S, SCH, steps=ENT_STEPS)
    total = gain(C2, S_M)
    assert total > 1.6 * gain(C1, S_M)


def test_student_teacher_raises_entropy_on_a_gaussian():
    from smeme.solvers import StudentTeacherConfig, student_teacher

    base = GaussianModel(torch.zeros(2), ENT_S, SCH)
    ft = with_correction(base)
    cfg = StudentTeacherConfig(iterations=15, samples=2048, batch_size=512, lr=3e-3)
    losses = student_teacher(ft, base, entropy_reward(base, LAM, T_R), cfg)
    assert losses[-1] < losses[0]
    _, S_M = gaussian_sampler_moments(torch.zeros(2), ENT_S, SCH, steps=ENT_STEPS)
    g = gain(torch.cov(samples(ft, ENT_STEPS).T), S_M)
    assert g > 0.05, f"student-teacher entropy gain {g:.3f}"
