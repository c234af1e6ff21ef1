"""A round's reward r_k(x) = -c log p_{k-1}(x): its gradient from the frozen model's score at t_r
and its values from the model's PF-ODE (smeme.density.log_prob), at the data end (reward_target
'data', the paper's, deconvolved: density.deconvolved_score) or smoothed to t_r ('smoothed').
Settings: RewardSettings's fields, which smeme.explore.ExploreConfig carries too (point, CSV and digits
rounds pass their ExploreConfig; Stable Diffusion rounds a RewardSettings).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .density import deconvolved_score, log_prob
from .models.base import NoisePredictor, score
from .solvers.likelihood_ratio import cap_reward


@dataclass(frozen=True)
class RewardSettings:
    """How a round reads its reward r_k = -c log p_{k-1} (the fields of ExploreConfig that RoundReward reads).

    Args:
        t_r (`float`): Diffusion time of the score (and, 'smoothed', of the density) the reward reads.
        reward_target (`str`, defaults to `"data"`):
            'data': deconvolved to the data end (the paper's); 'smoothed': the model's own score and density at t_r.
        score_clip (`float`, *optional*): Caps |s(x, t_r)| per sample at score_clip / sqrt(1 - ab(t_r)); None: off.
        reward_ode_steps (`int`, defaults to 8): RK4 steps of the values' PF-ODE solve (at most).
        reward_values_tolerance (`float`, *optional*, defaults to 0.002):
            Total variation between the full-step and the fewer-step weights below which the values use fewer
            steps; None: always reward_ode_steps.
    """
    t_r: float
    reward_target: str = "data"
    score_clip: float | None = None
    reward_ode_steps: int = 8
    reward_values_tolerance: float | None = 0.002


class RoundReward:
    """r_k(x) = -c log p(x) of a frozen model and its gradient, at the data end (reward_target
    'data', the paper's) or smoothed to t_r ('smoothed'). The solver asks for the values and the
    gradient at the same final states: the deconvolution behind both is computed once per batch.

    The values need only be as accurate as the weights exp(r) they feed: on the first batch
    they are read with reward_ode_steps and with fewer (halving), and the round keeps the fewest
    steps whose self-normalised weights (capped at `cap_quantile`, as the solver caps them) stay
    within reward_values_tolerance of the full-step ones in total variation. RK4's error falls
    like steps^-4, so the full-step weights stand for the exact ones in that comparison."""

    def __init__(self, model: NoisePredictor, scale: float, config,
                 cap_quantile: float | None = None):
        self.model, self.scale, self.config, self.cap_quantile = model, scale, config, cap_quantile
        self._cached: tuple[Tensor, tuple[Tensor, Tensor]] | None = None
        self.ode_steps: int | None = None  # chosen on the first batch
        self.steps_tv: float | None = None  # the chosen steps' weights against the full-step ones

    def _deconvolved(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._cached is None or self._cached[0].shape != x.shape or not torch.equal(self._cached[0], x):
            self._cached = (x.detach().clone(), deconvolved_score(self.model, x, self.config.t_r))
        return self._cached[1]

    def grad(self, x: Tensor) -> Tensor:
        cfg, m = self.config, self.model
        t = torch.full((x.shape[0],), cfg.t_r, dtype=x.dtype, device=x.device)
        s = self._deconvolved(x)[0] if cfg.reward_target == "data" else score(m, x, t)
        if cfg.score_clip is not None:  # off the support |s| grows like distance / sigma^2
            cap = cfg.score_clip / float(torch.sqrt(1 - m.schedule.ab(t[:1])))
            norm = s.reshape(len(s), -1).norm(dim=1).clamp(min=1e-12)
            s = s * (cap / norm).clamp(max=1.0).reshape(-1, *([1] * (s.dim() - 1)))
        return -self.scale * s

    def value(self, x: Tensor) -> Tensor:  # r(x) up to a constant
        if self.ode_steps is None:
            return self._choose_steps(x)
        return self._value(x, self.ode_steps)

    def _value(self, x: Tensor, steps: int) -> Tensor:
        cfg = self.config
        if cfg.reward_target == "smoothed":
            return -self.scale * log_prob(self.model, x, steps=steps, t_min=cfg.t_r)
        ab = float(self.model.schedule.ab(torch.tensor(cfg.t_r, dtype=torch.float64)))
        smoothed = log_prob(self.model, math.sqrt(ab) * x, steps=steps, t_min=cfg.t_r)
        return -self.scale * (smoothed + self._deconvolved(x)[1].to(smoothed.dtype))

    def weights_tv(self, a: Tensor, b: Tensor) -> float:
        """Total variation between the self-normalised weights exp(a) and exp(b), each capped as the
        solver caps the reward."""
        wa, wb = (torch.softmax(cap_reward(r.double(), self.cap_quantile)[0], 0) for r in (a, b))
        return float((wa - wb).abs().sum() / 2)

    def _choose_steps(self, x: Tensor) -> Tensor:
        full_steps, tol = self.config.reward_ode_steps, self.config.reward_values_tolerance
        full = self._value(x, full_steps)
        self.ode_steps, self.steps_tv = full_steps, 0.0
        while tol is not None and self.ode_steps // 2 >= 2:
            tv = self.weights_tv(full, self._value(x, self.ode_steps // 2))
            if not tv < tol:
                break
            self.ode_steps, self.steps_tv = self.ode_steps // 2, tv
        return full

    def record(self) -> dict:
        """What the round's metrics keep of its reward values (empty when none were read)."""
        if self.ode_steps is None:
            return {}
        return {"reward_ode_steps": self.ode_steps, "reward_steps_tv": round(self.steps_tv, 6)}
