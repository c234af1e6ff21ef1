"""The closed-form fixed-point check of an image round's control (digits and Stable Diffusion).

A round's solver regresses its control u_i onto a target built from the lean adjoint (Adjoint
Matching, step 5). Where the base is an analytic Gaussian, the exact tilted model is a Gaussian too,
and the round is right when that tilt is the regression's fixed point: on trajectories of the exact
tilt's own chain, E[target | x_i] equals the exact tilt's control u_i = -f_i (eps_tilt - eps_base) at
every step and in every direction. This judges the control (its units and pairing), not the budget.

Both Gaussians share S's eigenbasis, so per eigen-direction v (the whitened directions of the tilt)
the control is affine in v'x_i alone: u_v = a c + b, c = v'x_i. The check regresses the target's v
component on (c, 1) and reports slope / a (the variance's control) and, where the mean moves,
intercept / b (the mean's), each with its standard error from the regression's residuals.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from smeme.models.base import NoisePredictor

F64 = torch.float64


class EigenGaussian(NoisePredictor):
    """The exact eps of N(mean, Q diag(e) Q^T) on images of `shape` (float64): at time t
    eps(x) = sqrt(1 - ab) Q diag(1 / (ab e + 1 - ab)) Q^T (x - sqrt(ab) mean), one matrix product
    whatever the dimension (no Cholesky per call)."""

    def __init__(self, e, q, schedule, shape: tuple, mean=None):
        super().__init__()
        self.register_buffer("e", torch.as_tensor(np.asarray(e), dtype=F64))
        self.register_buffer("q", torch.as_tensor(np.asarray(q), dtype=F64))
        d = self.q.shape[0]
        self.register_buffer("mean", torch.zeros(d, dtype=F64) if mean is None
                             else torch.as_tensor(np.asarray(mean), dtype=F64).reshape(d))
        self.schedule, self.sample_shape = schedule, tuple(shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = len(x)
        ab = self.schedule.ab(t.to(F64))
        flat = x.reshape(n, -1).to(F64) - ab.sqrt()[:, None] * self.mean
        coords = flat @ self.q
        coords = coords * (1 - ab).sqrt()[:, None] / (ab[:, None] * self.e + 1 - ab[:, None])
        return (coords @ self.q.T).reshape(x.shape).to(x.dtype)


def tilt(e: np.ndarray, mean: np.ndarray, lam: float, ab_r: float) -> tuple[np.ndarray, np.ndarray]:
    """One round's exact smoothed tilt per eigen-direction, in the eigenbasis: the density
    N(m, e) N(sqrt(ab_r) m, ab_r e + 1 - ab_r)^-lam normalised is N(m*, e*) with
    1 / e* = 1 / e - lam / (ab_r e + 1 - ab_r) and m* = e* (1 / e - lam sqrt(ab_r) / (ab_r e + 1 - ab_r)) m."""
    smoothed = ab_r * e + 1 - ab_r
    e_star = 1 / (1 / e - lam / smoothed)
    return e_star, e_star * (1 / e - lam * math.sqrt(ab_r) / smoothed) * mean


def _affine_fit(y: torch.Tensor, c: torch.Tensor):
    """Per column: OLS of y on (c, 1): slope, intercept and their standard errors."""
    n = len(c)
    cm, ym = c.mean(0), y.mean(0)
    dc = c - cm
    sxx = (dc * dc).sum(0)
    slope = (dc * (y - ym)).sum(0) / sxx
    intercept = ym - slope * cm
    resid = y - intercept - slope * c
    s2 = (resid**2).sum(0) / (n - 2)
    return slope, intercept, torch.sqrt(s2 / sxx), torch.sqrt(s2 * (1 / n + cm**2 / sxx))


def control_fixed_point(tilted, base, reward_grad, cfg, shape: tuple, q) -> dict:
    """The regression of `cfg`'s solver at the exact tilt, per stochastic step and eigen-direction.

    tilted: the exact tilted model, which draws the trajectories and whose eps gives the exact
    control (the tuned model at the fixed point); base: the frozen base (eps_base and the adjoint's
    VJPs); reward_grad: the round's reward gradient; q: the eigenbasis (columns). Returns a dict of
    arrays (steps, directions): 'slope' and 'slope_se' (the regression slope over the exact
    control's), 'intercept', 'intercept_se' (over the exact intercept; NaN where the exact control
    has none) and 't' (the steps' times)."""
    from smeme.solvers.adjoint_matching import iteration_data, plan_steps

    plan = plan_steps(base, cfg, tuple(shape), F64, None, has_reward_value=False)
    data = iteration_data(tilted, base, reward_grad, None, plan, cfg, 0, F64, None,
                          {"sampling": 0.0, "reward": 0.0, "adjoint": 0.0}, {})
    qt = torch.as_tensor(np.asarray(q), dtype=F64)
    steps = plan.stochastic.tolist()
    out = {k: np.zeros((len(steps), qt.shape[1])) for k in ("slope", "slope_se", "intercept", "intercept_se")}
    for row, i in enumerate(steps):
        x = data.states[i]
        n = len(x)
        with torch.no_grad():
            u = -plan.factor[i] * (tilted(x, plan.grid[i].expand(n)) - data.eps_base[i])
        coords = x.reshape(n, -1) @ qt
        a, b, _, _ = _affine_fit(u.reshape(n, -1) @ qt, coords)  # exact: u is affine in each coordinate
        target = (-plan.std[i] * data.target_adj[i]).reshape(n, -1) @ qt
        slope, intercept, slope_se, intercept_se = _affine_fit(target, coords)
        # the exact intercept is zero where the mean stays (up to float64 rounding of the exact fit)
        moves = b.abs() > 1e-9 * a.abs() * coords.std(0)
        nan = torch.full_like(b, float("nan"))
        out["slope"][row], out["slope_se"][row] = (slope / a).numpy(), (slope_se / a.abs()).numpy()
        out["intercept"][row] = torch.where(moves, intercept / b, nan).numpy()
        out["intercept_se"][row] = torch.where(moves, intercept_se / b.abs(), nan).numpy()
    out["t"] = plan.grid[steps].numpy()
    return out


def misses(ratio: np.ndarray, se: np.ndarray, slack: float = 0.02, sigmas: float = 4.5) -> np.ndarray:
    """|ratio - 1| beyond `slack` plus `sigmas` standard errors (> 0: a miss); NaN entries pass."""
    return np.nan_to_num(np.abs(ratio - 1) - slack - sigmas * se, nan=-np.inf)



# The steps judged: t <= LATE_T, where half of each Adam step's loss steps are drawn (late_fraction) and t_r
# lies; above it the tilt's control is small against the target's noise and the regression says little.
LATE_T = 0.25


def pooled(ratio: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per direction (column): the inverse-variance mean of the rows' ratios and its standard error
    (NaN rows left out; NaN where a column has none)."""
    w = np.where(np.isnan(ratio), 0.0, 1 / np.where(np.isnan(se), np.inf, se) ** 2)
    total = w.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * np.nan_to_num(ratio)).sum(0) / total, 1 / np.sqrt(total)
