"""What Adjoint Matching does with its iterates: the weight average it returns and the
convergence signal it reports (module adjoint_matching, step 6 and "Convergence")."""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import NoisePredictor


class WeightAverage:
    """Step 6: an EMA of the trainable weights over the iterates from `start` on (decay min(ema, n/(n+1)),
    a uniform mean while n < 1/(1 - ema)), so the average starts at the first averaged iterate, not at
    the starting weights, whose zero control would bias the tilt low."""

    def __init__(self, params: list[Tensor], ema: float | None, start: int):
        self.params, self.ema, self.start = params, ema, start
        self.average: list[Tensor] | None = None
        self.count = 0

    def update(self, it: int) -> None:
        """Fold iterate `it` (0-based) into the average when averaging is on and the burn-in is over."""
        if self.ema is None or it < self.start:
            return
        decay = min(self.ema, self.count / (self.count + 1))
        with torch.no_grad():
            if self.average is None:
                self.average = [p.detach().clone() for p in self.params]
            else:
                for e, p in zip(self.average, self.params):
                    e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        self.count += 1

    def apply(self) -> None:
        """Copy the average into the weights (nothing when no iterate was averaged)."""
        if self.average is not None:
            with torch.no_grad():
                for e, p in zip(self.average, self.params):
                    p.copy_(e)


class ControlProbe:
    """The convergence signal: the tuned control u = -factor (eps_ft - eps_base), read on fixed probe
    points (the first iteration's states at a few stochastic steps) after each iterate of the window;
    control_change = |mean of the window's second half - mean of its first half| / |mean of the window|,
    beside the noise of that difference from the iterates' own scatter (a drift within twice its
    noise is not told apart from iterate noise, which the weight average removes)."""

    def __init__(self, start: int, rows: int = 64, steps: int = 4):
        self.start, self.rows, self.steps = start, rows, steps
        self.points = None
        self.reads: list[Tensor] = []

    def update(self, model_ft: NoisePredictor, data, plan, it: int) -> None:  # adjoint_matching's IterationData, StepPlan
        """Read the control after iterate `it` (0-based) if it lies in the window."""
        if self.points is None:
            pick = plan.stochastic[torch.linspace(0, plan.stochastic.numel() - 1, self.steps).round().long()]
            pick = pick.unique().to(data.states.device)
            x = data.states[pick][:, : self.rows]
            self.points = (x, plan.grid[pick], data.eps_base[pick][:, : self.rows], plan.factor[pick])
        if it < self.start:
            return
        x, t, eps_base, factor = self.points
        K, B = x.shape[:2]
        with torch.no_grad():
            eps_ft = model_ft(x.reshape(K * B, *plan.shape), t.repeat_interleave(B)).reshape(x.shape)
        self.reads.append((-plan.view(factor) * (eps_ft - eps_base)).double().flatten().cpu())

    def change(self) -> float | None:
        """The window's relative control change (None with fewer than 2 reads)."""
        summary = self.summary()
        return None if summary is None else summary[0]

    def summary(self) -> tuple[float, float] | None:
        """(relative change, its noise): |m2 - m1| / |m| and the standard error of m2 - m1 from the
        iterates' own scatter in each half, over |m| (None with fewer than 2 reads)."""
        n = len(self.reads)
        if n < 2:
            return None
        reads = torch.stack(self.reads)
        halves = (reads[: n // 2], reads[n // 2:])
        size = float(reads.mean(0).norm())
        if size == 0:
            return 0.0, 0.0
        drift = float((halves[1].mean(0) - halves[0].mean(0)).norm())
        var = sum(h.var(0, unbiased=True).sum() / len(h) if len(h) > 1 else 0.0 for h in halves)
        return drift / size, float(var) ** 0.5 / size


def target_fit(model_ft: NoisePredictor, states: Tensor, eps_base: Tensor, target_adj: Tensor,
               plan) -> tuple[float, float] | None:
    """The fixed-point test of a tuned control (adjoint_matching's StepPlan `plan`): at the solver's fixed
    point each adjoint-term step's regression target -std_i a has the control as its mean given the state,
    so along the control itself
        fit = sum_b sum_i w_i (-std_i a_i) . u_i / sum_b sum_i w_i |u_i|^2 = 1;
    > 1: the control falls short of its target (the round under-tilts); < 1: it goes beyond it, or it is
    mostly noise the target does not share. Steps weigh as in the adjoint term (plan.weight: 0 where the
    likelihood-ratio term regresses alone), and directions and steps by the control's size, so a
    shortfall where the control is small weighs little. Returns (fit, its standard error over the
    trajectories, delta method), or None for a zero control. states, eps_base, target_adj: fresh
    trajectories of the tuned model, the base's eps on them and the adjoint each step is paired with."""
    steps = plan.stochastic.to(states.device)
    x = states[steps]
    K, B = x.shape[:2]
    with torch.no_grad():
        eps_ft = model_ft(x.reshape(K * B, *plan.shape), plan.grid[steps].repeat_interleave(B)).reshape(x.shape)
    u = -plan.view(plan.factor[steps]) * (eps_ft - eps_base[steps])
    target = -plan.view(plan.std[steps]) * target_adj[steps]
    w = plan.weight[steps].reshape(K, 1).double()
    fit = ((target * u).reshape(K, B, -1).sum(-1).double() * w).sum(0)
    size = (u.pow(2).reshape(K, B, -1).sum(-1).double() * w).sum(0)
    mean_size = float(size.mean())
    if not mean_size > 0 or B < 2:
        return None
    ratio = float(fit.mean()) / mean_size
    return ratio, float((fit - ratio * size).std()) / (B ** 0.5 * mean_size)
