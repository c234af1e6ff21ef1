"""Samplers: DDPM ancestral (eta = 1, memoryless) and the probability-flow ODE.

Fixed noise: `FixedNoise.from_seed` draws the initial noise and the whole per-step
noise sequence from the seed alone, so any model plugged in sees the same noise and
rounds can be compared sample by sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .models.base import NoisePredictor, expand_like, score
from .threads import rebalance

ProgressFn = Callable[[int, int], None]  # (step done, total steps)


def time_grid(steps: int, power: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    """Descending grid t_0 = 1 > ... > t_steps = 0 with t = (i / steps)^power.

    The power > 1 packs steps near the data end, where the score changes fastest.
    """
    if steps < 1:
        raise ValueError(f"The number of sampling steps must be at least 1, got {steps}.")
    i = torch.arange(steps, -1, -1, device=device, dtype=torch.float64)
    return ((i / steps) ** power).to(dtype)


@dataclass
class FixedNoise:
    """Initial noise x_init (n, *shape) and per-step noise z (steps, n, *shape)."""

    x_init: Tensor
    z: Tensor

    @classmethod
    def from_seed(cls, seed: int, n: int, shape: tuple[int, ...], steps: int,
                  dtype=torch.float32, device=None) -> "FixedNoise":
        g = torch.Generator().manual_seed(int(seed))
        x_init = torch.randn((n, *shape), generator=g, dtype=torch.float64)
        z = torch.randn((steps, n, *shape), generator=g, dtype=torch.float64)
        return cls(x_init.to(device=device, dtype=dtype), z.to(device=device, dtype=dtype))

    @property
    def steps(self) -> int:
        return self.z.shape[0]

    def subset(self, idx) -> "FixedNoise":
        return FixedNoise(self.x_init[idx], self.z[:, idx])


def ddpm_coefficients(ab_i: Tensor, ab_j: Tensor):
    """Coefficients of the ancestral step from ab_i (noisier) to ab_j (cleaner).

    mean = c_x * x - c_eps * eps,  std^2 = (1 - ab_j)/(1 - ab_i) * (1 - ab_i/ab_j)
    with c_x = sqrt(ab_j/ab_i), c_eps = c_x (1 - ab_i/ab_j) / sqrt(1 - ab_i).
    """
    ratio = ab_i / ab_j
    c_x = torch.sqrt(1 / ratio)
    c_eps = c_x * (1 - ratio) / torch.sqrt(1 - ab_i)
    std = torch.sqrt(((1 - ab_j) / (1 - ab_i) * (1 - ratio)).clamp(min=0))
    return c_x, c_eps, std


@torch.no_grad()
def sample_ddpm(model: NoisePredictor, noise: FixedNoise, grid: Tensor | None = None,
                return_trajectory: bool = False, progress: ProgressFn | None = None):
    """Ancestral sampling from pure noise; returns x_0 or (x_0, states (steps+1, n, ...))."""
    steps = noise.steps
    x = noise.x_init
    grid = time_grid(steps, device=x.device, dtype=x.dtype) if grid is None else grid
    if grid.numel() != steps + 1:
        raise ValueError(f"The time grid has {grid.numel()} points; {steps + 1} expected.")
    n = x.shape[0]
    ab = model.schedule.ab(grid)
    c_x, c_eps, std = ddpm_coefficients(ab[:-1], ab[1:])  # every step's, once
    states = [x] if return_trajectory else None
    for k in range(steps):
        rebalance()
        x = c_x[k] * x - c_eps[k] * model(x, grid[k].expand(n)) + std[k] * noise.z[k]
        if states is not None:
            states.append(x)
        if progress is not None:
            progress(k + 1, steps)
    return (x, torch.stack(states)) if return_trajectory else x


def sample(model: NoisePredictor, n: int, steps: int = 100, seed: int = 0, **kw) -> Tensor:
    """DDPM samples under the fixed noise of `seed`."""
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else None
    noise = FixedNoise.from_seed(seed, n, tuple(model.sample_shape), steps, dtype=dtype, device=device)
    return sample_ddpm(model, noise, **kw)


def pf_ode_velocity(model: NoisePredictor, x: Tensor, t: Tensor) -> Tensor:
    # dx/dt = -1/2 beta(t) (x + s(x, t))   (probability-flow ODE of the VP SDE)
    beta = expand_like(model.schedule.beta(t), x)
    return -0.5 * beta * (x + score(model, x, t))


@torch.no_grad()
def sample_ode(model: NoisePredictor, x_init: Tensor, steps: int = 100, t_min: float = 1e-3,
               progress: ProgressFn | None = None, return_trajectory: bool = False):
    """Deterministic samples: RK4 on the PF-ODE from t = 1 to t_min (uniform in t); with
    `return_trajectory`, (x, states (steps+1, n, ...)) at torch.linspace(1, t_min, steps + 1)."""
    if steps < 1:
        raise ValueError(f"The number of ODE steps must be at least 1, got {steps}.")
    x = x_init
    n = x.shape[0]
    ts = torch.linspace(1.0, t_min, steps + 1, dtype=x.dtype, device=x.device)
    states = [x] if return_trajectory else None
    for k in range(steps):
        t0, t1 = ts[k], ts[k + 1]
        h = t1 - t0
        f = lambda y, t: pf_ode_velocity(model, y, t.expand(n))  # noqa: E731
        k1 = f(x, t0)
        k2 = f(x + 0.5 * h * k1, t0 + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, t0 + 0.5 * h)
        k4 = f(x + h * k3, t1)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if states is not None:
            states.append(x)
        if progress is not None:
            progress(k + 1, steps)
    return (x, torch.stack(states)) if states is not None else x
