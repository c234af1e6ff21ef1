"""Test references shared by the solver tests and benches: a residual model (frozen analytic
base + trainable correction), SD's predictor interface over stand-in branches, and the exact
moments of a Gaussian DDPM chain, and the sampling spread of a paired log-odds shift."""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from smeme.models.base import NoisePredictor
from smeme.sampling import ddpm_coefficients, time_grid


class ResidualNoisePredictor(NoisePredictor):
    """eps(x, t) = base(x, t) + correction(x, t): a frozen base plus a trainable part.

    With a correction whose output starts at zero (MLPNoisePredictor's last layer is
    zero-initialised) the model starts exactly at the base; the closed-form tests use
    an analytic base so that pre-training error cannot hide solver error.
    """

    def __init__(self, base: NoisePredictor, correction: NoisePredictor):
        super().__init__()
        if tuple(base.sample_shape) != tuple(correction.sample_shape):
            raise ValueError(f"Base and correction shapes differ: {base.sample_shape} vs {correction.sample_shape}.")
        self.base = base
        self.correction = correction
        self.schedule = base.schedule
        self.sample_shape = tuple(base.sample_shape)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.base(x, t) + self.correction(x, t)


class SDInterfacePair(NoisePredictor):
    """Stable Diffusion's predictor interface (SDNoisePredictor's conditional forward, guided(x, t, w)
    and adapter_disabled()) over a conditional and an unconditional branch; a subclass's branches()
    gives the pair (cond, uncond) of noise predictors for the adapter's state (self.adapter_on)."""

    adapter_on = True

    def branches(self) -> tuple:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.branches()[0](x, t)

    def guided(self, x: Tensor, t: Tensor, w: float) -> Tensor:
        cond, uncond = self.branches()
        e_c, e_u = cond(x, t), uncond(x, t)
        return e_u + w * (e_c - e_u)

    @contextlib.contextmanager
    def adapter_disabled(self):
        self.adapter_on = False
        try:
            yield
        finally:
            self.adapter_on = True


def gaussian_sampler_moments(mean, cov, schedule, grid: Tensor | None = None, steps: int = 50):
    """Exact final mean and covariance of DDPM ancestral sampling of N(mean, cov) data.

    With the exact eps of Gaussian data, eps(x, t) = sqrt(1-ab) C_t^-1 (x - sqrt(ab) mu),
    C_t = ab S + (1-ab) I, every step is linear-Gaussian:
    x_j = A_i x_i + b_i + std_i z with A_i = c_x I - c_eps sqrt(1-ab_i) C_i^-1,
    so (m, P) -> (A m + b, A P A^T + std^2 I) from x_0 ~ N(0, I). Returns float64 (mu_M, S_M).
    """
    mu = torch.as_tensor(mean, dtype=torch.float64).flatten()
    S = torch.as_tensor(cov, dtype=torch.float64)
    d = mu.numel()
    eye = torch.eye(d, dtype=torch.float64)
    grid = time_grid(steps, dtype=torch.float64) if grid is None else grid.to(torch.float64)
    m, P = torch.zeros(d, dtype=torch.float64), eye.clone()
    for k in range(grid.numel() - 1):
        ab_i, ab_j = schedule.ab(grid[k]), schedule.ab(grid[k + 1])
        c_x, c_eps, std = ddpm_coefficients(ab_i, ab_j)
        C_inv = torch.linalg.inv(ab_i * S + (1 - ab_i) * eye)
        A = c_x * eye - c_eps * torch.sqrt(1 - ab_i) * C_inv  # d mean / d x
        b = c_eps * torch.sqrt(1 - ab_i) * C_inv @ (torch.sqrt(ab_i) * mu)
        m = A @ m + b
        P = A @ P @ A.T + std**2 * eye
    return m, P


def paired_logodds_sd(flags0, flags_k) -> float:
    """Sampling sd of logit(share_k) - logit(share_0) read on the same fixed noise: the delta method on
    the paired indicators, sd(I_k / (p_k (1 - p_k)) - I_0 / (p_0 (1 - p_0))) / sqrt(n)."""
    def scaled(flags):
        p = flags.mean()
        return flags / (p * (1 - p))
    return float((scaled(flags_k) - scaled(flags0)).std() / math.sqrt(len(flags0)))
