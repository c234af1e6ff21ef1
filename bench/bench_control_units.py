"""What each form of the Adjoint Matching regression converges to, exactly, on a Gaussian base.

    python bench/bench_control_units.py

No training: for a 1-D Gaussian model N(0, s) every DDPM step is linear, so the regression's
fixed point is a linear control per step and can be iterated in closed form. Two rewards:
- entropy r = -lam log p(x, t_r) (quadratic): the share of the exact tilted model's variance
  gain, (Var_1 / Var_0 - 1) / (Var*_1 / Var*_0 - 1), seen through an N-step DDPM sampler;
- linear r = w x: the share of the exact tilted model's mean shift, N-step sampler.
Both the truth and the tuned network are sampled by the same N-step chain (N = 50, 100, 400),
so the share is the fidelity a user sees. Forms (solvers/adjoint_matching.py step 3):
- ddpm/next: the control of the network's DDPM step, paired with a_{i+1} (the earlier default);
- ddpm/current: the same, paired with a_i (the official code's pairing);
- score/next and score/current: the score-unit control u_i = std_i (s_ft - s_base), trajectories
  from the network's own DDPM chain (the default is score/current).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test references (helpers.py)

from smeme.sampling import ddpm_coefficients, time_grid
from smeme.schedule import VPSchedule
from helpers import gaussian_sampler_moments

SCH = VPSchedule()
F64 = torch.float64


def chain(s: float, steps: int):
    """Per step: (t_i, A_i = d mean / dx, var_i, score coefficient of the mean)."""
    g = time_grid(steps, dtype=F64)
    ab = SCH.ab(g)
    out = []
    for i in range(steps):
        c_x, c_eps, std = ddpm_coefficients(ab[i], ab[i + 1])
        A = float(c_x - c_eps * torch.sqrt(1 - ab[i]) / (ab[i] * s + 1 - ab[i]))
        out.append((float(g[i]), A, float(std ** 2), float(c_eps * torch.sqrt(1 - ab[i]))))
    return out


def score_change(s: float, steps: int, q: float, lin: float, control: str, pairing: str, iters: int = 300):
    """The tuned network's score change per step at the regression's fixed point, as
    (t_i, slope, offset): delta_s_i(x) = slope x + offset, for r = q x^2 / 2 + lin x."""
    c = chain(s, steps)
    M = steps
    G, H = np.zeros(M), np.zeros(M)  # u_i / std_i = G_i x + H_i
    for _ in range(iters):
        # the chain the trajectories come from: x_j = B_i x_i + h_i + noise
        B = np.array([A + (cs if control == "score" else var) * g for (_, A, var, cs), g in zip(c, G)])
        h = np.array([(cs if control == "score" else var) * k for (_, _, var, cs), k in zip(c, H)])
        phi, psi, off = np.ones(M + 1), np.ones(M + 1), np.zeros(M + 1)  # base Jacobians, E[x_M | x_i]
        for j in range(M - 1, -1, -1):
            phi[j] = phi[j + 1] * c[j][1]
            psi[j] = psi[j + 1] * B[j]
            off[j] = off[j + 1] + psi[j + 1] * h[j]
        idx = np.arange(M) + (1 if pairing == "next" else 0)
        # -E[a_i | x_i] = phi_i (q E[x_M | x_i] + lin)
        newG = phi[idx] * q * psi[idx] * (B if pairing == "next" else 1)
        newH = phi[idx] * (q * (off[idx] + (psi[idx] * h if pairing == "next" else 0)) + lin)
        G, H = 0.5 * G + 0.5 * newG, 0.5 * H + 0.5 * newH
    kappa = np.array([var / cs if cs > 0 else 0.0 for (_, _, var, cs) in c])
    scale = np.ones(M) if control == "score" else kappa
    return np.array([t for t, *_ in c]), scale * G, scale * H


def sample_moments(s: float, steps: int, change) -> tuple[float, float]:
    """Mean and variance of the N-step DDPM chain of the tuned network (from x_0 ~ N(0, 1))."""
    ts, slope, offset = change
    m, v = 0.0, 1.0
    for t, A, var, cs in chain(s, steps):
        a = A + cs * np.interp(t, ts[::-1], slope[::-1])
        m, v = a * m + cs * np.interp(t, ts[::-1], offset[::-1]), a * a * v + var
    return m, v


def main() -> None:
    lam, t_r, train_steps = 1 / 3, 0.05, 50
    forms = [("ddpm", "next"), ("ddpm", "current"), ("score", "next"), ("score", "current")]
    print(f"entropy reward, lam {lam:.3f}, t_r {t_r}, solver {train_steps} steps: share of the exact variance gain")
    for s in (1.0, 0.3, 0.04):
        ab = float(SCH.ab(torch.tensor(t_r, dtype=F64)))
        q = lam / (ab * s + 1 - ab)
        tilted = 1 / (1 / s - q)
        changes = {f: score_change(s, train_steps, q, 0.0, *f) for f in forms}
        for n in (50, 100, 400):
            v0 = float(gaussian_sampler_moments(torch.zeros(1), torch.tensor([[s]]), SCH, steps=n)[1])
            v1 = float(gaussian_sampler_moments(torch.zeros(1), torch.tensor([[tilted]]), SCH, steps=n)[1])
            row = [f"{c}/{p} {(sample_moments(s, n, changes[(c, p)])[1] / v0 - 1) / (v1 / v0 - 1):.3f}"
                   for c, p in forms]
            print(f"  S={s:<5} sampler {n:>3} steps: " + "  ".join(row))
    print(f"linear reward w = 1, solver 30 steps: share of the exact mean shift")
    for s in (1.0, 0.04):
        changes = {f: score_change(s, 30, 0.0, 1.0, *f) for f in forms}
        for n in (30, 100, 1000):
            m0 = float(gaussian_sampler_moments(torch.zeros(1), torch.tensor([[s]]), SCH, steps=n)[0])
            m1 = float(gaussian_sampler_moments(torch.tensor([s]), torch.tensor([[s]]), SCH, steps=n)[0])
            row = [f"{c}/{p} {sample_moments(s, n, changes[(c, p)])[0] / (m1 - m0):.3f}" for c, p in forms]
            print(f"  S={s:<5} sampler {n:>4} steps: " + "  ".join(row))


if __name__ == "__main__":
    main()
