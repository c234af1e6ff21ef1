"""Noise schedules: alpha_bar(t) for t in [0, 1] (0 = data, 1 = noise).

Every sampler, density and solver only needs `ab(t)` and `beta(t) = -d log ab / dt`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class VPSchedule:
    """Continuous variance-preserving schedule of score_sde: beta(t) linear in t in [0, 1]
    (0 = data), ab(t) = exp(-int_0^t beta(s) ds).

    Args:
        beta_min (`float`, defaults to 0.1): beta(0), the noise rate at the data end.
        beta_max (`float`, defaults to 20.0): beta(1), the noise rate at the noise end (ab(1) ~ 4e-5).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def ab(self, t: Tensor) -> Tensor:
        # ab(t) = exp(-int_0^t beta(s) ds)
        return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t))

    def to_config(self) -> dict:
        return {"kind": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max}


class DiscreteSchedule:
    """A diffusers-style `alphas_cumprod` table of N entries, read at continuous t.

    Index i = t * (N - 1); log ab is interpolated linearly between entries so that
    `beta(t)` (the PF-ODE drift coefficient) is well defined and piecewise constant.
    t = 0 itself is the data (ab = 1), not the table's first entry (SD 1.5: 0.99915, noise of
    std 0.029): the sampler's last step then lands on the network's clean estimate with no
    noise added, as diffusers' DDPM step does at timestep 0 (alpha_prod_t_prev = 1). Networks
    are never evaluated at t = 0 (DDPM evaluates at the start of each step, densities and
    training at t >= t_min > 0).
    """

    def __init__(self, alphas_cumprod):
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if table.numel() < 2 or not torch.all((table > 0) & (table <= 1)):
            raise ValueError("alphas_cumprod must hold at least two values in (0, 1].")
        if not torch.all(table[1:] <= table[:-1]):
            raise ValueError("alphas_cumprod must be non-increasing.")
        self.alphas_cumprod = table
        self._log_ab = table.log()
        self.n = table.numel()

    @classmethod
    def from_scheduler(cls, scheduler) -> "DiscreteSchedule":
        """Build from any diffusers scheduler that exposes `alphas_cumprod`."""
        return cls(scheduler.alphas_cumprod)

    def _index(self, t: Tensor):
        pos = t.to(torch.float64).clamp(0, 1) * (self.n - 1)
        lo = pos.floor().long().clamp(max=self.n - 2)
        return lo, pos - lo

    def ab(self, t: Tensor) -> Tensor:
        lo, frac = self._index(t)
        log_ab = self._log_ab.to(t.device)
        out = (log_ab[lo] * (1 - frac) + log_ab[lo + 1] * frac).exp()
        return torch.where(t == 0, torch.ones_like(out), out).to(t.dtype)

    def beta(self, t: Tensor) -> Tensor:
        lo, _ = self._index(t)
        log_ab = self._log_ab.to(t.device)
        return (-(log_ab[lo + 1] - log_ab[lo]) * (self.n - 1)).to(t.dtype)

    def timestep(self, t: Tensor) -> Tensor:
        """The (fractional) table index that diffusers networks are conditioned on."""
        return t * (self.n - 1)

    def to_config(self) -> dict:
        return {"kind": "discrete", "alphas_cumprod": self.alphas_cumprod.tolist()}


Schedule = VPSchedule | DiscreteSchedule


def schedule_from_config(cfg: dict) -> Schedule:
    kind = cfg.get("kind")
    if kind == "vp":
        return VPSchedule(float(cfg["beta_min"]), float(cfg["beta_max"]))
    if kind == "discrete":
        return DiscreteSchedule(cfg["alphas_cumprod"])
    raise ValueError(f"Unknown schedule kind {kind!r} (expected 'vp' or 'discrete').")
