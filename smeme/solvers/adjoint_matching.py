"""Adjoint Matching (Domingo-Enrich et al. 2024; S-MEME paper Algorithm 2).

Fine-tunes a noise predictor towards p_base(x) exp(r(x)). One iteration:
1. sample_trajectories: m trajectories x_0 ~ N(0, I) -> x_M with the memoryless DDPM chain, no grad.
2. reward_at_end (likelihood-ratio term only): r(x_M), capped at its own quantile.
3. lean_adjoint (smeme.solvers.lean_adjoint): a_M = -grad r(x_M), then backwards with the FROZEN base's mean step
   a_i = (d mean_base(x_i) / d x_i)^T a_{i+1} = c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1}, down to the
   earliest adjoint this iteration's loss reads (lower only where step 4 drops a likelihood-ratio step).
4. likelihood_ratio_targets (smeme.solvers.likelihood_ratio): Girsanov path weights and the
   control-variate pull whose weighted mean is E*[zeta_i | x_i].
5. regression_step (several Adam steps on the same trajectories): per stochastic step i -> j,
   control='score': u_i = std_i (s_ft - s_base)(x_i) = -std_i / sqrt(1 - ab_i) (eps_ft - eps_base),
       loss sum_i |u_i + std_i a_i|^2, minimiser std_i grad V_i (the tilted marginal's score change),
       so the tuned network's SCORE is the tilted model's at every t;
   control='ddpm': u_i = (mean_ft - mean_base) / std_i, paired with a_j: the chain of the solver's own
       step count lands on p_M exp(r) while the score moves by kappa_i = std_i^2 / (c_eps sqrt(1 - ab_i))
       of it (kept for the digits rounds and the tests).
   On the earliest likelihood_ratio_share of the stochastic steps the likelihood-ratio loss
   w |u - pull / w|^2 is added; its target 'current' (J_i^T of the pull, one base VJP per selected
   step) has the minimiser std_i grad V_i = J_i^T E*[zeta_i | x_i] exactly, 'next' (the pull itself)
   E*[zeta_i | x_i], off by J_i^-T. The adjoint term is weighed by adjoint_weight_on_lr_steps there.
   Outliers (trajectory loss > outlier_factor x an EMA of its quantile) are dropped, scaled or kept.
   Weights below ess_floor are tempered (one beta for all the term's steps), or a step whose own
   weights' share is below ess_fallback leaves the term out and the adjoint term takes it in full:
   in 16-32 dimensions the weights' ESS is inherently small (at the exact control step i's weights
   are exp(V_i(x_i)), whose log varies ~ lam^2 d / 2 near the data end) and tempering under-tilts.
6. WeightAverage: an EMA of the weights over the iterates after a burn-in (weight_ema, average_start).
Convergence (ControlProbe): the tuned control read on fixed probe points over the averaged window
(the last half of the iterations when averaging is off); converged when the mean of the window's
second half differs from its first half's by at most convergence_tolerance of its size, or by no
more than twice that difference's noise (the iterates' scatter); and the returned control meets its
regression target on fresh trajectories (iterates.target_fit within convergence_tolerance of 1).

Contract: adjoint_matching(model_ft, model_base, reward_grad, config, ...) changes model_ft's
trainable parameters in place and returns a SolverResult (losses, timings, health, convergence).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..config import ConfigBase
from ..models.base import NoisePredictor
from ..optim import Adam
from ..sampling import FixedNoise, sample_ddpm, time_grid
from .base import (CancelFlag, IterationFn, RewardGrad, RewardValue, SolverDivergedError, SolverError,
                   SolverResult, check_finite_params, is_cancelled, model_dtype_device, optimiser_step,
                   trainable_parameters)
from .iterates import ControlProbe, WeightAverage, target_fit
from .lean_adjoint import LeanAdjoint, base_mean_vjp, lean_adjoint, step_coefficients
from .likelihood_ratio import cap_reward, likelihood_ratio_loss, likelihood_ratio_targets, weights_health

FIT_TRAJECTORIES = 256  # trajectories of the returned control's fixed-point test (returned_target_fit)


@dataclass
class AdjointMatchingConfig(ConfigBase):
    """Settings of one Adjoint Matching solve (one S-MEME round); step numbers refer to the module docstring.

    Args:
        iterations (`int`, defaults to 20): Solver iterations, each on fresh trajectories.
        trajectories (`int`, defaults to 256): Trajectories m sampled per iteration.
        steps (`int`, defaults to 50): DDPM steps M of each trajectory.
        grid_power (`float`, defaults to 1.5): The time grid t_i = (i / steps)^grid_power, as the sampler's default.
        adam_steps (`int`, defaults to 8): Adam steps per iteration on the same trajectories (step 5).
        lr (`float`, defaults to 2e-3): Adam's learning rate.
        batch_trajectories (`int`, *optional*): Trajectories per Adam step. None (default): all m.
        loss_steps (`int`, *optional*, defaults to 10): Time steps per Adam step (a fresh subsample). None: all.
        late_fraction (`float`, defaults to 0.5): Share of `loss_steps` always taken from the last (near-data) steps.
        clip_grad_norm (`float`, *optional*, defaults to 1.0): Maximum global gradient norm. None: no clipping.
        outlier_mode (`str`, defaults to `"drop"`):
            The outlier rule: `"drop"` an outlier trajectory (the official code's), `"scale"` its loss down to the
            threshold, or `"off"`.
        outlier_quantile (`float`, defaults to 0.99): Quantile of the trajectory losses the threshold tracks.
        outlier_factor (`float`, defaults to 3.0): An outlier's loss exceeds this x the EMA of that quantile.
        outlier_ema (`float`, defaults to 0.9): Decay of that EMA over Adam steps, in [0, 1).
        seed (`int`, defaults to 0): Seed of the trajectories' noise and of the step subsamples.
        adjoint_chunk (`int`, *optional*, defaults to 1024):
            Rows per vector-Jacobian product in the backward pass (memory and speed only). None: all rows at once.
        weight_ema (`float`, *optional*):
            EMA decay of the tuned weights over the iterations after `average_start`, returned at the end (step 6).
            None (default): the last iterate.
        average_start (`float`, defaults to 0.0): Share of the iterations before the average starts (burn-in).
        pairing (`str`, *optional*):
            The adjoint each step's control u_i is regressed onto: `"current"` -std_i a_i or `"next"` -std_i a_{i+1}.
            None (default): the pairing exact for `control` (`"current"` for `"score"`, `"next"` for `"ddpm"`).
        weight_power (`float`, defaults to 0.0): Per-step loss weight std_i^-weight_power (0: SOC weighting).
        likelihood_ratio_share (`float`, defaults to 0.0):
            Share of the stochastic steps, the earliest, that also carry the likelihood-ratio term (needs
            `reward_value`). 0: off.
        control (`str`, defaults to `"score"`):
            What the tuned network's output means: `"score"`, the base step plus std_i^2 (s_ft - s_base)(x_i), so its
            score is the tilted model's at any step count; `"ddpm"`, its own DDPM step, whose score carries kappa_i of
            the tilt (step 5).
        reward_cap_quantile (`float`, *optional*, defaults to 0.999):
            The likelihood-ratio term's r is capped at this quantile of each iteration's r, and a_M is zeroed where
            the cap binds, so both terms tilt towards exp(min(r, cap)). None: no cap.
        ess_floor (`float`, defaults to 0.1):
            The path weights are tempered (log w scaled by beta < 1) when their effective sample size at some step
            falls below ess_floor x m; in (0, 1).
        ess_fallback (`float`, *optional*):
            Instead of tempering: a likelihood-ratio step whose own weights' effective sample share is below this
            leaves the term out there, and the adjoint term takes that step in full (the backward pass then runs
            down to the earliest such step in that iteration). None (default): temper all the term's steps by one
            beta (`ess_floor`).
        adjoint_weight_on_lr_steps (`float`, defaults to 1.0):
            Weight of the Adjoint Matching term on the steps that carry the likelihood-ratio term (1: both terms in
            full; 0: the likelihood-ratio term alone there).
        likelihood_ratio_target (`str`, defaults to `"current"`):
            The likelihood-ratio term's target: `"current"` J_i^T E*[zeta_i | x_i] = std_i grad V_i (exact; one base
            VJP per selected step) or `"next"` E*[zeta_i | x_i] (off by J_i^-T).
        convergence_tolerance (`float`, defaults to 0.1):
            The solve counts as converged when the tuned control, read on fixed probe points, moved by at most this
            share of its size (or within twice its noise) between the first and second half of the averaged window,
            and the returned control's target fit (module docstring, "Convergence") is within this of 1.
    """
    config_error, config_label = SolverError, "Adjoint Matching"
    iterations: int = 20
    trajectories: int = 256
    steps: int = 50
    grid_power: float = 1.5
    adam_steps: int = 8
    lr: float = 2e-3
    batch_trajectories: int | None = None
    loss_steps: int | None = 10
    late_fraction: float = 0.5
    clip_grad_norm: float | None = 1.0
    outlier_mode: str = "drop"
    outlier_quantile: float = 0.99
    outlier_factor: float = 3.0
    outlier_ema: float = 0.9
    seed: int = 0
    adjoint_chunk: int | None = 1024
    weight_ema: float | None = None
    average_start: float = 0.0
    pairing: str | None = None
    weight_power: float = 0.0
    likelihood_ratio_share: float = 0.0
    control: str = "score"
    reward_cap_quantile: float | None = 0.999
    ess_floor: float = 0.1
    ess_fallback: float | None = None
    adjoint_weight_on_lr_steps: float = 1.0
    likelihood_ratio_target: str = "current"
    convergence_tolerance: float = 0.1

    def __post_init__(self):
        if self.iterations < 1:
            raise SolverError(f"Adjoint Matching needs at least 1 iteration, got {self.iterations}.")
        if self.trajectories < 2 or self.steps < 2 or self.adam_steps < 1:
            raise SolverError("Adjoint Matching needs trajectories >= 2, steps >= 2 and adam_steps >= 1.")
        if not self.lr > 0:
            raise SolverError(f"The learning rate must be positive, got {self.lr}.")
        if self.loss_steps is not None and self.loss_steps < 1:
            raise SolverError(f"loss_steps must be at least 1 (or None for all), got {self.loss_steps}.")
        if not 0 <= self.late_fraction <= 1:
            raise SolverError(f"late_fraction must lie in [0, 1], got {self.late_fraction}.")
        if not 0 < self.outlier_quantile <= 1 or not 0 <= self.outlier_ema < 1:
            raise SolverError("outlier_quantile must lie in (0, 1] and outlier_ema in [0, 1).")
        if self.adjoint_chunk is not None and self.adjoint_chunk < 1:
            raise SolverError(f"adjoint_chunk must be at least 1 (or None), got {self.adjoint_chunk}.")
        if self.weight_ema is not None and not 0 <= self.weight_ema < 1:
            raise SolverError(f"weight_ema must lie in [0, 1) (or None), got {self.weight_ema}.")
        if not 0 <= self.average_start < 1:
            raise SolverError(f"average_start must lie in [0, 1), got {self.average_start}.")
        if self.outlier_mode not in ("drop", "scale", "off"):
            raise SolverError(f"outlier_mode must be 'drop', 'scale' or 'off', got {self.outlier_mode!r}.")
        if not self.outlier_factor > 0:
            raise SolverError(f"outlier_factor must be positive, got {self.outlier_factor}.")
        if self.reward_cap_quantile is not None and not 0 < self.reward_cap_quantile <= 1:
            raise SolverError(f"reward_cap_quantile must lie in (0, 1] (or None), got {self.reward_cap_quantile}.")
        if not 0 < self.ess_floor < 1:
            raise SolverError(f"ess_floor must lie in (0, 1), got {self.ess_floor}.")
        if self.ess_fallback is not None and not (isinstance(self.ess_fallback, (int, float))
                                                  and 0 < self.ess_fallback < 1):
            raise SolverError(f"ess_fallback must lie in (0, 1) (or None), got {self.ess_fallback!r}.")
        if not 0 <= self.likelihood_ratio_share <= 1:
            raise SolverError(f"likelihood_ratio_share must lie in [0, 1], got {self.likelihood_ratio_share}.")
        if not (isinstance(self.adjoint_weight_on_lr_steps, (int, float))
                and math.isfinite(self.adjoint_weight_on_lr_steps) and self.adjoint_weight_on_lr_steps >= 0):
            raise SolverError("adjoint_weight_on_lr_steps must be a finite number >= 0, "
                              f"got {self.adjoint_weight_on_lr_steps!r}.")
        if self.likelihood_ratio_target not in ("next", "current"):
            raise SolverError(f"likelihood_ratio_target must be 'next' or 'current', got {self.likelihood_ratio_target!r}.")
        if self.control not in ("score", "ddpm"):
            raise SolverError(f"control must be 'score' or 'ddpm', got {self.control!r}.")
        if not 0 < self.convergence_tolerance < float("inf"):
            raise SolverError(f"convergence_tolerance must be a positive number, got {self.convergence_tolerance!r}.")
        if self.pairing not in (None, "next", "current"):
            raise SolverError(f"pairing must be 'next', 'current' or None, got {self.pairing!r}.")

    @property
    def adjoint_pairing(self) -> str:
        """'current' or 'next': the adjoint each step's control is regressed onto."""
        if self.pairing is not None:
            return self.pairing
        return "current" if self.control == "score" else "next"


def choose_steps(stochastic: Tensor, k: int | None, late_fraction: float, g: torch.Generator) -> Tensor:
    """A subsample of k stochastic step indices: the last round(k * late_fraction) (near
    the data) always, the rest uniformly without replacement from the earlier ones."""
    n = stochastic.numel()
    if k is None or k >= n:
        return stochastic
    n_late = min(int(round(k * late_fraction)), k)
    late, early = stochastic[n - n_late:], stochastic[: n - n_late]
    pick = early[torch.randperm(early.numel(), generator=g)[: k - n_late]]
    return torch.cat([pick.sort().values, late])


@dataclass
class StepPlan:
    """Per-call constants: the time grid, the step coefficients and which steps carry which term."""
    grid: Tensor
    c_x: Tensor
    c_eps: Tensor
    std: Tensor
    factor: Tensor  # u_i = -factor_i (eps_ft - eps_base)
    weight: Tensor  # the adjoint term's weight per step
    full_weight: Tensor  # the adjoint term's weight per step where it takes a step alone (ess_fallback)
    stochastic: Tensor  # indices of the steps with std > 0
    lr_steps: Tensor  # indices of the steps with the likelihood-ratio term
    on_lr: Tensor  # bool per step: carries the likelihood-ratio term
    first_adjoint: int  # the earliest adjoint a loss reads when no step falls back
    fallback_first: int  # the earliest adjoint a loss can read when steps fall back (ess_fallback)
    pairing: str  # 'current' (a_i) or 'next' (a_{i+1})
    shape: tuple

    def view(self, v: Tensor) -> Tensor:
        """Per-step scalars (K,) broadcast against (K, B, *shape)."""
        return v.reshape(-1, 1, *([1] * len(self.shape)))


def plan_steps(model_base: NoisePredictor, cfg: AdjointMatchingConfig, shape: tuple, dtype, device,
               has_reward_value: bool) -> StepPlan:
    """The grid t = (i/M)^power, the DDPM step coefficients and each loss term's steps (step 5)."""
    grid = time_grid(cfg.steps, power=cfg.grid_power, device=device, dtype=dtype)
    c_x, c_eps, std, factor = (v.to(dtype) for v in step_coefficients(model_base.schedule, grid, cfg.control))
    stochastic = torch.nonzero(std > 0).flatten().cpu()
    if stochastic.numel() == 0:
        raise SolverError("The time grid has no stochastic step: nothing for the control to act on.")
    weight = torch.where(std > 0, std.clamp(min=1e-12) ** -cfg.weight_power, torch.zeros_like(std))
    # likelihood-ratio term on the earliest stochastic steps (where the flow picks a mode)
    lr_steps = stochastic[: int(round(cfg.likelihood_ratio_share * stochastic.numel()))]
    if lr_steps.numel() and not has_reward_value:
        raise SolverError("likelihood_ratio_share > 0 needs the reward's values (reward_value).")
    on_lr = torch.zeros(cfg.steps, dtype=torch.bool, device=device)
    on_lr[lr_steps] = True
    full_weight = weight
    weight = torch.where(on_lr, weight * cfg.adjoint_weight_on_lr_steps, weight)
    pairing = cfg.adjoint_pairing
    first_adjoint = first_read(weight, pairing)
    fallback_first = first_read(full_weight, pairing) if cfg.ess_fallback is not None else first_adjoint
    return StepPlan(grid, c_x, c_eps, std, factor, weight, full_weight, stochastic, lr_steps, on_lr, first_adjoint,
                    min(fallback_first, first_adjoint), pairing, shape)


def first_read(weight: Tensor, pairing: str) -> int:
    """The earliest adjoint a loss with per-step adjoint weights `weight` (M,) reads: a_i of the first
    step with weight > 0 for 'current', a_{i+1} for 'next' (M when none); the backward pass stops there."""
    with_adjoint = torch.nonzero(weight > 0).flatten()
    return int(with_adjoint[0]) + (pairing == "next") if with_adjoint.numel() else weight.numel()


def sample_trajectories(sampler: NoisePredictor, cfg: AdjointMatchingConfig, plan: StepPlan, it: int, dtype,
                        device) -> tuple[FixedNoise, Tensor]:
    """Step 1: x_0 ~ N(0, I) -> x_M by the DDPM chain, fresh noise per iteration from the seed."""
    noise = FixedNoise.from_seed(cfg.seed * 1_000_003 + it, cfg.trajectories, plan.shape, cfg.steps,
                                 dtype=dtype, device=device)
    with torch.no_grad():
        _, states = sample_ddpm(sampler, noise, grid=plan.grid, return_trajectory=True)
    return noise, states


def reward_at_end(reward_value: RewardValue, x_last: Tensor, cfg: AdjointMatchingConfig,
                  it: int) -> tuple[Tensor, Tensor | None]:
    """Step 2: r(x_M) for the path weights log w = r(x_M) - Girsanov, capped at its own quantile."""
    with torch.no_grad():
        reward = reward_value(x_last).to(x_last.dtype).reshape(-1)
    if reward.numel() != len(x_last) or not torch.isfinite(reward).all():
        raise SolverDivergedError(f"The reward value is NaN/inf or of the wrong shape at iteration {it + 1}.")
    return cap_reward(reward, cfg.reward_cap_quantile)


def start_adjoint(model_base: NoisePredictor, reward_grad: RewardGrad, states: Tensor, plan: StepPlan,
                  capped: Tensor | None, cfg: AdjointMatchingConfig, it: int) -> LeanAdjoint:
    """Step 3 up to what every iteration reads: a_M = -grad r(x_M) (zero where the reward cap binds), the
    lean adjoint a_i = c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1} down to plan.first_adjoint, and
    eps_base at the steps below (their graphs kept from plan.fallback_first on, should a step fall back)."""
    with torch.no_grad():
        a_last = -reward_grad(states[-1]).to(states.dtype)
        if capped is not None:  # grad of min(r, cap): zero above the cap
            a_last[capped] = 0
    if a_last.shape != states[-1].shape or not torch.isfinite(a_last).all():
        raise SolverDivergedError(f"The reward gradient is NaN/inf or of the wrong shape at iteration {it + 1}.")
    backward = LeanAdjoint(model_base, states, plan.grid, a_last, plan.c_x, plan.c_eps, chunk=cfg.adjoint_chunk)
    backward.backward_to(plan.first_adjoint)
    backward.forward_rest(keep_from=plan.fallback_first)
    return backward


def finish_adjoint(backward: LeanAdjoint, first: int, it: int) -> Tensor:
    """Step 3's rest: the lean adjoint down to this iteration's earliest read adjoint a_first (below
    plan.first_adjoint only where steps fell back), then the kept graphs are dropped; returns the adjoints."""
    backward.backward_to(first)
    backward.release()
    if not torch.isfinite(backward.adj[first:]).all():
        raise SolverDivergedError(f"The adjoint became NaN/inf at iteration {it + 1}.")
    return backward.adj


@dataclass
class IterationData:
    """One iteration's trajectories and regression targets (steps 1-4)."""
    states: Tensor  # (M+1, m, ...)
    eps_base: Tensor  # (M, m, ...)
    target_adj: Tensor | None = None  # the adjoint each step's control is paired with, (M, m, ...)
    lr_pull: Tensor | None = None  # the likelihood-ratio term's pull (M, m, ...)
    lr_w: Tensor | None = None  # its path weights (M, m)
    weight: Tensor | None = None  # this iteration's adjoint weight per step (None: plan.weight)
    on_lr: Tensor | None = None  # this iteration's steps with the likelihood-ratio term (None: plan.on_lr)


class OutlierRule:
    """Adjoint Matching's outlier rule: a trajectory whose loss exceeds outlier_factor x an EMA of
    the per-trajectory losses' outlier_quantile is dropped ('drop'), shrunk to it ('scale') or kept ('off')."""

    def __init__(self, cfg: AdjointMatchingConfig):
        self.cfg, self.ema_q = cfg, None

    def loss(self, per_traj: Tensor, K: int) -> Tensor:
        """The mean per (trajectory, step) of the adjoint term after the rule."""
        cfg, B = self.cfg, len(per_traj)
        if cfg.outlier_mode == "off":
            return per_traj.sum() / (B * K)
        q = float(torch.quantile(per_traj.detach().float(), cfg.outlier_quantile))
        self.ema_q = q if self.ema_q is None else cfg.outlier_ema * self.ema_q + (1 - cfg.outlier_ema) * q
        limit = cfg.outlier_factor * self.ema_q
        if cfg.outlier_mode == "drop":  # the official code: leave outlier trajectories out
            keep = per_traj.detach() <= limit
            if not keep.any():
                keep = torch.ones_like(keep)
            return per_traj[keep].sum() / (keep.sum() * K)
        scale = (limit / per_traj.detach().clamp(min=torch.finfo(per_traj.dtype).tiny)).clamp(max=1.0)
        return (per_traj * scale).sum() / (B * K)  # 'scale': an outlier keeps its direction


def regression_loss(model_ft: NoisePredictor, model_base: NoisePredictor, data: IterationData, plan: StepPlan,
                    sel: Tensor, rows: Tensor, outliers: OutlierRule, cfg: AdjointMatchingConfig, it: int) -> Tensor:
    """Step 5's loss on steps `sel` x trajectories `rows`: the adjoint term sum_i w_i |u_i + std_i a_i|^2
    (after the outlier rule) plus, on the likelihood-ratio steps, w |u|^2 - 2 u . pull."""
    x = data.states[sel][:, rows]  # (K, B, ...)
    K, B = x.shape[:2]
    t = plan.grid[sel].repeat_interleave(B)
    eps_ft = model_ft(x.reshape(K * B, *plan.shape), t).reshape(x.shape)
    u = -plan.view(plan.factor[sel]) * (eps_ft - data.eps_base[sel][:, rows])  # control of step i -> j
    residual = u + plan.view(plan.std[sel]) * data.target_adj[sel][:, rows]  # u_i + std_i a
    weight = plan.weight if data.weight is None else data.weight
    per_step = residual.pow(2).reshape(K, B, -1).sum(-1) * plan.view(weight[sel])[..., 0]  # (K, B)
    per_traj = per_step.sum(0)  # (B,)
    if not torch.isfinite(per_traj).all():
        raise SolverDivergedError(f"The Adjoint Matching loss became NaN/inf at iteration {it + 1}.")
    loss = outliers.loss(per_traj, K)
    picked = (plan.on_lr if data.on_lr is None else data.on_lr)[sel]  # the selected steps with the LR term
    if picked.any():  # (the outlier rule above is the adjoint's alone)
        i_lr = sel[picked]
        pull = data.lr_pull[i_lr][:, rows]
        if cfg.likelihood_ratio_target == "current":  # E[J^T pull | x] / E[w | x] = std_i grad V_i
            pull = base_mean_vjp(model_base, x[picked], plan.grid[i_lr], pull, plan.c_x[i_lr], plan.c_eps[i_lr],
                                 chunk=cfg.adjoint_chunk)
        lr_loss = likelihood_ratio_loss(u[picked], pull, data.lr_w[i_lr][:, rows])
        if not torch.isfinite(lr_loss).all():
            raise SolverDivergedError(f"The likelihood-ratio loss became NaN/inf at iteration {it + 1}.")
        loss = loss + lr_loss.sum() / (B * K)
    return loss


def iteration_data(sampler, model_base, reward_grad, reward_value, plan: StepPlan, cfg: AdjointMatchingConfig,
                   it: int, dtype, device, timings: dict, health: dict) -> IterationData:
    """Steps 1-4 of one iteration: trajectories, reward values, lean adjoint and path weights. The
    weights need eps_base at every step; the backward pass then runs only as far down as this
    iteration's loss reads (below plan.first_adjoint only where a step falls back)."""
    t0 = time.perf_counter()
    noise, states = sample_trajectories(sampler, cfg, plan, it, dtype, device)
    t1 = time.perf_counter()
    reward, capped = reward_at_end(reward_value, states[-1], cfg, it) if plan.lr_steps.numel() else (None, None)
    t_reward = time.perf_counter()
    backward = start_adjoint(model_base, reward_grad, states, plan, capped, cfg, it)
    data = IterationData(states, backward.eps_base)
    if plan.lr_steps.numel():
        weights_phase(data, noise.z, reward, plan, cfg, health)
    adj = finish_adjoint(backward, first_read(plan.weight if data.weight is None else data.weight, plan.pairing), it)
    data.target_adj = adj[1:] if plan.pairing == "next" else adj[:-1]
    timings["sampling"] += t1 - t0
    timings["reward"] += t_reward - t1
    timings["adjoint"] += time.perf_counter() - t_reward
    return data


def weights_phase(data: IterationData, z: Tensor, reward: Tensor, plan: StepPlan, cfg: AdjointMatchingConfig,
                  health: dict) -> None:
    """Step 4: the likelihood-ratio pull and path weights into `data`; the steps that fall back
    (ess_fallback) leave the term and take the adjoint term in full."""
    with torch.no_grad():
        data.lr_pull, data.lr_w, ess, beta, kept = likelihood_ratio_targets(
            data.states, data.eps_base, z, reward, plan.c_x, plan.c_eps, plan.std, plan.lr_steps,
            cfg.ess_floor if cfg.ess_fallback is None else cfg.ess_fallback, per_step=cfg.ess_fallback is not None)
    if not kept.all():  # the adjoint term takes the dropped steps in full
        dropped = plan.lr_steps[~kept].to(plan.on_lr.device)
        data.on_lr, data.weight = plan.on_lr.clone(), plan.weight.clone()
        data.on_lr[dropped] = False
        data.weight[dropped] = plan.full_weight[dropped]
    health.setdefault("ess", []).append(ess)
    health.setdefault("beta", []).append(beta)
    health.setdefault("kept", []).append(float(kept.double().mean()))


def regression_phase(model_ft, model_base, opt, params, data: IterationData, plan: StepPlan, outliers: OutlierRule,
                     cfg: AdjointMatchingConfig, g: torch.Generator, it: int) -> float:
    """Step 5: adam_steps optimiser steps on this iteration's trajectories, each on its own subsample
    of steps (and trajectories); returns the first step's loss."""
    first_loss = None
    m, device = cfg.trajectories, data.states.device
    for _ in range(cfg.adam_steps):
        sel = choose_steps(plan.stochastic, cfg.loss_steps, cfg.late_fraction, g).to(device)
        if cfg.batch_trajectories is not None and cfg.batch_trajectories < m:
            rows = torch.randperm(m, generator=g)[: cfg.batch_trajectories].to(device)
        else:
            rows = torch.arange(m, device=device)
        loss = regression_loss(model_ft, model_base, data, plan, sel, rows, outliers, cfg, it)
        optimiser_step(opt, loss, params, cfg.clip_grad_norm, f"at iteration {it + 1}")
        if first_loss is None:
            first_loss = float(loss.detach())
    check_finite_params(params, f"at iteration {it + 1}")
    return first_loss


def returned_target_fit(model_ft, sampler, model_base, reward_grad, plan: StepPlan, cfg: AdjointMatchingConfig,
                        dtype, device) -> tuple[float, float] | None:
    """The returned control's fixed-point test (iterates.target_fit) on up to FIT_TRAJECTORIES fresh
    trajectories of the tuned model and their lean adjoints down to the adjoint term's first step."""
    check = replace(cfg, trajectories=min(cfg.trajectories, FIT_TRAJECTORIES))
    _, states = sample_trajectories(sampler, check, plan, cfg.iterations, dtype, device)
    with torch.no_grad():
        a_last = -reward_grad(states[-1]).to(states.dtype)
    adj, eps_base = lean_adjoint(model_base, states, plan.grid, a_last, plan.c_x, plan.c_eps,
                                 plan.first_adjoint, cfg.adjoint_chunk)
    return target_fit(model_ft, states, eps_base, adj[1:] if plan.pairing == "next" else adj[:-1], plan)


def adjoint_matching(model_ft: NoisePredictor, model_base: NoisePredictor, reward_grad: RewardGrad,
                     config: AdjointMatchingConfig | None = None, sampling_model: NoisePredictor | None = None,
                     on_iteration: IterationFn | None = None, cancel: CancelFlag | None = None,
                     reward_value: RewardValue | None = None) -> SolverResult:
    """Fine-tune `model_ft` in place towards p_base(x) exp(r(x)); returns a SolverResult whose losses
    are each iteration's first Adam step's loss on that iteration's fresh trajectories.

    Only parameters with requires_grad change. `sampling_model` (default model_ft) draws the
    trajectories; `model_base` is frozen and gives the adjoint VJPs and eps_base.
    `reward_value(x) -> r(x)` (shape (B,), any additive constant) is needed when
    likelihood_ratio_share > 0. Raises SolverDivergedError when the adjoint, the loss or the
    weights become NaN/inf. Stops between iterations when `cancel.is_set()`.
    """
    cfg = config or AdjointMatchingConfig()
    params = trainable_parameters(model_ft)
    sampler = sampling_model if sampling_model is not None else model_ft
    dtype, device = model_dtype_device(model_ft)
    shape = tuple(model_ft.sample_shape)
    if tuple(model_base.sample_shape) != shape:
        raise SolverError(f"The base model's sample shape {model_base.sample_shape} differs from {shape}.")
    plan = plan_steps(model_base, cfg, shape, dtype, device, reward_value is not None)
    opt, outliers = Adam(params, lr=cfg.lr), OutlierRule(cfg)
    g = torch.Generator().manual_seed(int(cfg.seed))
    average_from = int(cfg.average_start * cfg.iterations)
    average = WeightAverage(params, cfg.weight_ema, average_from)
    probe = ControlProbe(average_from if cfg.weight_ema is not None else cfg.iterations // 2)
    timings = dict.fromkeys(("sampling", "reward", "adjoint", "regression", "convergence"), 0.0)
    history: dict = {}
    losses: list[float] = []
    for it in range(cfg.iterations):
        if is_cancelled(cancel):
            break
        data = iteration_data(sampler, model_base, reward_grad, reward_value, plan, cfg, it, dtype, device,
                              timings, history)
        t0 = time.perf_counter()
        losses.append(regression_phase(model_ft, model_base, opt, params, data, plan, outliers, cfg, g, it))
        average.update(it)
        t1 = time.perf_counter()
        probe.update(model_ft, data, plan, it)
        timings["regression"] += t1 - t0
        timings["convergence"] += time.perf_counter() - t1
        if on_iteration is not None:
            on_iteration(it + 1, cfg.iterations, losses[-1])
    if losses:
        average.apply()
    t0, summary = time.perf_counter(), probe.summary()
    stopped = len(losses) < cfg.iterations  # cancelled mid-way: the round is dropped, so no fit to pay for
    fit = None if stopped else returned_target_fit(model_ft, sampler, model_base, reward_grad, plan, cfg, dtype, device)
    timings["convergence"] += time.perf_counter() - t0
    change, noise = summary if summary is not None else (None, None)
    converged = None if summary is None else change <= max(cfg.convergence_tolerance, 2 * noise)
    if converged and fit is not None:  # and the returned control meets its own target (within noise)
        converged = abs(fit[0] - 1) <= max(cfg.convergence_tolerance, 2 * fit[1])
    return SolverResult(model=model_ft, losses=losses, timings=timings, health=weights_health(history),
                        converged=converged, control_change=change, control_noise=noise,
                        target_fit=None if fit is None else fit[0], target_fit_se=None if fit is None else fit[1])
