"""Adjoint Matching (Domingo-Enrich et al. 2024; S-MEME paper Algorithm 2), DESIGN.md s.2.

One iteration:
1. m trajectories x_0 (pure noise) -> x_M with the memoryless DDPM sampler, no grad.
2. Lean adjoint of the COST -r, backward with the FROZEN base's mean step:
   a_M = -grad r(x_M);  a_i = (d mean_base(x_i) / d x_i)^T a_{i+1}
       = c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1}.
3. Regression of the control onto the adjoint, per stochastic step i -> j (= i + 1):
   control='score' (default): u_i = std_i (s_ft - s_base)(x_i) = -std_i / sqrt(1 - ab_i) (eps_ft - eps_base),
       loss = sum_i |u_i + std_i a_i|^2, so the tuned network's SCORE moves by E[-a_i | x_i] = grad V_i,
       the score change of the tilted marginal: the network is a model of p_base exp(r), sampled by its
       own DDPM chain (as users sample it) and read by the PF-ODE and the next round's reward alike.
       For a Gaussian base the fixed point is exact at any step count (a DDPM step's mean is the exact
       posterior mean): tests/test_solver_closed_form.py.
   control='ddpm' (the earlier form): u_i = (mean_ft - mean_base) / std_i = -c_eps/std (eps_ft - eps_base),
       loss = sum_i |u_i + std_i a_j|^2 (pairing 'next'): the 50-step chain itself lands on
       p_M exp(r), but the network's score moves by only kappa_i = std_i^2 / (c_eps sqrt(1 - ab_i)) of
       that (0.66 at t ~ 0.05 with 50 steps), so other samplers, the PF-ODE density and the next
       round's reward see 60-80% of the tilt (DESIGN.md s.2). Kept for comparison and the tests.
   Deterministic steps (std = 0) are left out.
4. Several Adam steps on the same trajectories, each with its own subsample of steps,
   gradient-norm clipping, and trajectories whose loss is an outlier (above
   `outlier_factor` x an EMA of the `outlier_quantile` of per-trajectory losses) dropped
   (outlier_mode 'drop', the official code's rule), shrunk to the limit ('scale') or kept
   ('off'). On the two-square toy the useful signal IS in the outliers (trajectories
   through the region where the flow decides between the squares): 'drop' moved no mass
   there, so smeme.explore uses 'off'.
5. Optional weight averaging (weight_ema, after a burn-in of average_start x iterations):
   with the heavy-tailed toy targets each iterate's tilt swings by +-50% around the right
   one, while the average of the iterates lands on it (smeme.explore turns it on).

6. Optional likelihood-ratio term (likelihood_ratio_share > 0; needs reward VALUES, not
   only gradients). The lean adjoint is a pathwise derivative (the reward's gradient at
   x_M, carried back through the base flow), so the tilt reaches a region only through
   trajectories that end near it: mass moves between separated modes only as far as the
   base puts density between them (exact two-Gaussian base, one round: 0.86 of the exact
   log-odds shift with the modes overlapping, 0.04 with them 1.5 apart; bench/bench_tilt.py).
   The optimal control is also the mean base-noise increment under the tilted path law,
   u*_i(x) = E*[zeta_i | x_i = x], with zeta_i = (x_j - mean_base(x_i)) / std_i. Weighting
   the sampled paths by w_i = exp(r(x_M) - sum_{l >= i} (u_l . xi_l + |u_l|^2 / 2))
   (Girsanov from the sampling control u_l = zeta_l - xi_l to the base, self-normalised)
   and regressing
       w_i |u_i(x_i) - (u_sampled_i + (1 - 1/w_i) xi_i)|^2
   has the minimiser E*[zeta_i | x_i] for any normalisation (E[xi_i | x_i] = 0), with noise
   (1 - 1/w_i) xi_i that stays small while the reward's range is small. The loss drops its
   constant |xi_i|^2 / w_i (same gradient; no overflow when a weight is tiny). It uses the
   reward's values, so mass moves between modes without paths through the gap. The term is
   added to the Adjoint Matching loss on the earliest `likelihood_ratio_share` of the
   stochastic steps (where the flow decides between modes). With control 'score' the term
   regresses the same score-unit u_i; E*[zeta_i | x_i] = std_i E*[grad V_j | x_i] is the tilt one
   step later than the adjoint's grad V_i = J_i^T E*[grad V_j | x_i] (J_i: the base mean step's
   Jacobian at x_i, known given x_i). likelihood_ratio_target 'current' regresses onto J_i^T of
   the pull (one VJP of the base per selected step), whose minimiser is std_i grad V_i exactly;
   'next' onto the pull itself, which over-tilts where J_i > 1 (a unit-variance axis: sqrt(ab_j /
   ab_i), up to 1.35 on the first step of a 50-step grid). With the adjoint term in full on the
   same steps 'current' measured worse (0.86 against 0.96 of a narrow axis' shift); alone there
   it lands a linear reward's tilt within 6% per axis. The weights are tempered so that
   their effective sample size stays >= ess_floor x m (path_weights); each iteration's share
   goes to cfg.health. Same base, sep 1.5: see BENCHMARKS.md.
   On those steps the two terms are two estimators of (nearly) the same control, and the lean
   adjoint's is the heavy-tailed one (it grows ~60x backwards on the few toy trajectories that
   cross the region where the flow picks a square), so `adjoint_weight_on_lr_steps` < 1 weighs
   it down there (smeme.explore uses 0: the adjoint term then covers only the latest steps, and
   the backward pass stops at the earliest step it reads).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import ConfigBase
from ..models.base import NoisePredictor, expand_like
from ..optim import Adam
from ..sampling import FixedNoise, ddpm_coefficients, sample_ddpm, time_grid
from .base import (CancelFlag, IterationFn, RewardGrad, RewardValue, SolverDivergedError, SolverError,
                   check_finite_params, is_cancelled, model_dtype_device, trainable_parameters)


@dataclass
class AdjointMatchingConfig(ConfigBase):
    config_error, config_label = SolverError, "Adjoint Matching"
    internal_fields = ("timings", "health")  # filled by a run, not settings
    iterations: int = 20  # solver iterations (fresh trajectories each)
    trajectories: int = 256  # m
    steps: int = 50  # DDPM steps of each trajectory
    grid_power: float = 1.5  # time grid t = (i/steps)^power, as the sampler's default
    adam_steps: int = 8  # Adam steps per iteration on the same trajectories
    lr: float = 2e-3
    batch_trajectories: int | None = None  # trajectories per Adam step (None: all m)
    loss_steps: int | None = 10  # time steps per Adam step in the loss (None: all)
    late_fraction: float = 0.5  # share of loss_steps always taken from the last (near-data) steps
    clip_grad_norm: float | None = 1.0  # max global gradient norm (None: off)
    outlier_mode: str = "drop"  # 'drop' | 'scale' (shrink an outlier's loss to the threshold) | 'off'
    outlier_quantile: float = 0.99
    outlier_factor: float = 3.0  # outlier: trajectory loss > factor * EMA(quantile)
    outlier_ema: float = 0.9
    seed: int = 0
    adjoint_chunk: int | None = 1024  # rows per VJP in the backward pass (None: all at once); speed and memory only
    weight_ema: float | None = None  # EMA decay of the tuned weights over iterations, returned at the end (None: off)
    average_start: float = 0.0  # share of the iterations before the weight average starts (burn-in)
    # u_i regressed onto -std_i a_{i+1} ('next') or -std_i a_i ('current'); None: the pairing that is
    # exact for the control ('current' for 'score', 'next' for 'ddpm'; module docstring, step 3)
    pairing: str | None = None
    weight_power: float = 0.0  # per-step loss weight std_i^-power (0: SOC weighting; 2: score units)
    likelihood_ratio_share: float = 0.0  # earliest share of stochastic steps with the likelihood-ratio term (0: off)
    # 'score': the tuned step is the base step plus std_i^2 (s_ft - s_base)(x_i), so the tuned
    # network's score carries the whole tilt (kappa = 1) and reads as a model at any step count;
    # 'ddpm': the tuned network's own DDPM step, whose score carries only kappa_i of the tilt
    control: str = "score"
    # LR term: r capped at this quantile of each iteration's r, and the adjoint's a_M zeroed where the
    # cap binds, so both terms tilt towards the same exp(min(r, cap)) (None: off)
    reward_cap_quantile: float | None = 0.999
    # LR term: the path weights are tempered (w ~ exp(beta log w), beta < 1) whenever their effective
    # sample size at some step falls below ess_floor x m (healthy rounds: 0.85-0.95 of m)
    ess_floor: float = 0.1
    # weight of the Adjoint Matching term on the steps that carry the likelihood-ratio term (1: both in full)
    adjoint_weight_on_lr_steps: float = 1.0
    # the LR term's target: 'next' E*[zeta_i | x_i] = std_i E*[grad V_j | x_i] (the tilt one step later),
    # 'current' J_i^T of it = std_i grad V_i (the adjoint's; one VJP of the base per selected step)
    likelihood_ratio_target: str = "next"
    timings: dict = field(default_factory=dict, repr=False, compare=False)  # filled: seconds per phase
    # filled: the LR weights' effective sample size (share of m) per iteration, and the tempering used
    health: dict = field(default_factory=dict, repr=False, compare=False)

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
        if self.pairing not in (None, "next", "current"):
            raise SolverError(f"pairing must be 'next', 'current' or None, got {self.pairing!r}.")

    @property
    def adjoint_pairing(self) -> str:
        """'current' or 'next': the adjoint each step's control is regressed onto."""
        if self.pairing is not None:
            return self.pairing
        return "current" if self.control == "score" else "next"


def step_coefficients(schedule, grid: Tensor, control: str = "ddpm"):
    """Per step i -> i+1: c_x, c_eps, std and the control factor f_i, u_i = -f_i (eps_ft - eps_base).

    'ddpm':  f_i = c_eps / std = sqrt(ab_j (1 - ab_i/ab_j) / (ab_i (1 - ab_j))), the tuned network's
             own DDPM step; its score then moves by kappa_i = std_i^2 / (c_eps_i sqrt(1 - ab_i)) of u / std.
    'score': f_i = std / sqrt(1 - ab_i), i.e. u_i = std_i (s_ft - s_base)(x_i): the score moves by u / std.
    (0 where std = 0.)"""
    ab = schedule.ab(grid)
    c_x, c_eps, std = ddpm_coefficients(ab[:-1], ab[1:])
    tiny = torch.finfo(std.dtype).tiny
    per_unit = c_eps / std.clamp(min=tiny) if control == "ddpm" else std / torch.sqrt(1 - ab[:-1])
    factor = torch.where(std > 0, per_unit, torch.zeros_like(std))
    return c_x, c_eps, std, factor


def _row_chunks(n: int, chunk: int | None):
    if chunk is None or chunk >= n:
        return [slice(0, n)]
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


def _eps_vjp(model: NoisePredictor, x: Tensor, t: Tensor, v: Tensor, chunk: int | None) -> tuple[Tensor, Tensor]:
    """eps(x, t) and J_eps(x)^T v over rows (B, ...), `chunk` rows at a time; no graph kept."""
    eps, vjp = torch.empty_like(x), torch.empty_like(v)
    for rows in _row_chunks(len(x), chunk):  # toy MLP, 2,048 rows: blocks of 1,024 took 0.21 s a pass, of 256 0.30 s
        xr = x[rows].detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(xr, t[rows])
            (vjp[rows],) = torch.autograd.grad(out, xr, grad_outputs=v[rows])
        eps[rows] = out.detach()
    return eps, vjp


def lean_adjoint(model_base: NoisePredictor, states: Tensor, grid: Tensor, a_last: Tensor,
                 c_x: Tensor, c_eps: Tensor, first: int = 0, chunk: int | None = None):
    """Backward pass a_i = c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1} (no graph kept), down to a_first.

    Returns adjoints (M+1, m, ...) and eps_base at every step (M, m, ...). Below `first` no
    adjoint is read (its loss weight is 0): a_i is left 0 there and eps_base is evaluated
    without a graph.
    """
    M, n = states.shape[0] - 1, states.shape[1]
    adj = torch.zeros_like(states)
    eps_base = torch.empty_like(states[:-1])
    adj[M] = a = a_last
    for i in range(M - 1, -1, -1):
        t_i = grid[i].expand(n)
        if i < first:
            with torch.no_grad():
                eps_base[i] = model_base(states[i], t_i)
            continue
        eps_base[i], vjp = _eps_vjp(model_base, states[i], t_i, a, chunk)
        a = (c_x[i] * a - c_eps[i] * vjp).detach()  # a_i = (d mean_i / d x_i)^T a_{i+1}
        adj[i] = a
    return adj, eps_base


def base_mean_vjp(model_base: NoisePredictor, x: Tensor, t: Tensor, v: Tensor, c_x: Tensor, c_eps: Tensor,
                  chunk: int | None = None) -> Tensor:
    """J_i^T v for the base's mean step mean_i(x) = c_x x - c_eps eps_base(x, t_i), per step:
    x, v (K, B, ...), t, c_x, c_eps (K,); no graph kept."""
    K, B = x.shape[:2]
    _, vjp = _eps_vjp(model_base, x.reshape(K * B, *x.shape[2:]), t.repeat_interleave(B),
                      v.reshape(K * B, *v.shape[2:]), chunk)
    view = lambda c: c.reshape(K, 1, *([1] * (x.dim() - 2)))  # noqa: E731
    return (view(c_x) * v - view(c_eps) * vjp.reshape(v.shape)).detach()


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


def cap_reward(reward: Tensor, quantile: float | None) -> tuple[Tensor, Tensor | None]:
    """r capped at its own `quantile` and where the cap binds (unchanged and None when off).

    A sampler outlier far off the manifold (PF-ODE density ~0) would otherwise take all the
    likelihood-ratio weight and pull the control after it; the cap sits where this
    iteration's tail starts."""
    if quantile is None:
        return reward, None
    cap = float(torch.quantile(reward.double(), quantile))
    return reward.clamp(max=cap), reward > cap


def likelihood_ratio_terms(states: Tensor, eps_base: Tensor, z: Tensor, reward: Tensor, c_x: Tensor,
                           c_eps: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """The sampled controls and path weights of the likelihood-ratio term, per step.

    zeta_i = (x_j - mean_base(x_i)) / std_i is the base-noise increment of the sampled step,
    xi_i = z_i the sampler's own noise, u_i = zeta_i - xi_i its control; the log-weight of
    step i is log w_i = r(x_M) - sum_{l >= i} (u_l . xi_l + |u_l|^2 / 2), up to a constant per step.
    Returns (u (M, m, ...), log w (M, m)); path_weights normalises them.
    """
    M, m = eps_base.shape[:2]
    view = lambda v: v.reshape(-1, 1, *([1] * (states.dim() - 2)))  # noqa: E731
    stochastic = std > 0
    mean_base = view(c_x) * states[:-1] - view(c_eps) * eps_base
    zeta = (states[1:] - mean_base) / view(torch.where(stochastic, std, torch.ones_like(std)))
    u = torch.where(view(stochastic), zeta - z, torch.zeros_like(zeta))
    girsanov = (u * z + 0.5 * u * u).reshape(M, m, -1).sum(-1)  # log dP_u/dP_base of each step
    future = girsanov.flip(0).cumsum(0).flip(0)  # sum over l >= i
    return u, reward.reshape(1, m) - future


def effective_sample_share(w: Tensor) -> Tensor:
    """Kish's effective sample size of each row of weights, as a share of the row's length."""
    return w.sum(-1).pow(2) / (w.shape[-1] * w.pow(2).sum(-1).clamp(min=torch.finfo(w.dtype).tiny))


def path_weights(log_w: Tensor, ess_floor: float) -> tuple[Tensor, float, float]:
    """Self-normalised weights (mean 1 per step) from log-weights (M, m), tempered when needed.

    If the smallest effective sample share over the steps is below ess_floor, the log-weights
    are scaled by the largest beta in (0, 1) (bisection) that lifts it to the floor: a biased
    but bounded step towards the base instead of a control pulled by a handful of paths.
    Returns (w, effective sample share before tempering, beta)."""
    m = log_w.shape[1]

    def weights(beta: float) -> Tensor:
        return torch.softmax(beta * log_w, dim=1) * m

    w = weights(1.0)
    ess = float(effective_sample_share(w).min())
    if ess >= ess_floor:
        return w, ess, 1.0
    lo, hi = 0.0, 1.0
    for _ in range(30):  # ESS share falls as beta grows; keep the largest beta above the floor
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(effective_sample_share(weights(mid)).min()) >= ess_floor else (lo, mid)
    return weights(lo), ess, lo


def likelihood_ratio_pull(u_sampled: Tensor, xi: Tensor, w: Tensor) -> Tensor:
    """g = w zeta - xi (zeta = u_sampled + xi): the finite part of w (u_sampled + (1 - 1/w) xi), the
    control-variate target times its weight (E[g | x] / E[w | x] = E*[zeta | x], as E[xi | x] = 0)."""
    return w.reshape(*w.shape, *([1] * (xi.dim() - w.dim()))) * (u_sampled + xi) - xi


def likelihood_ratio_loss(u_model: Tensor, pull: Tensor, w: Tensor) -> Tensor:
    """Per (step, trajectory): w |u|^2 - 2 u . pull, the gradient of w |u - pull / w|^2 without its
    constant |pull|^2 / w (unbounded as w -> 0). Minimiser: E[pull | x] / E[w | x], which for the
    pull of likelihood_ratio_pull is E*[zeta | x] = std_i E*[grad V_j(x_j) | x_i] (Stein's lemma)."""
    u = u_model.reshape(*w.shape, -1)
    return w * u.pow(2).sum(-1) - 2 * (u * pull.reshape(*w.shape, -1)).sum(-1)


def adjoint_matching(model_ft: NoisePredictor, model_base: NoisePredictor, reward_grad: RewardGrad,
                     config: AdjointMatchingConfig | None = None, sampling_model: NoisePredictor | None = None,
                     on_iteration: IterationFn | None = None, cancel: CancelFlag | None = None,
                     reward_value: RewardValue | None = None) -> list[float]:
    """Fine-tune `model_ft` in place towards p_base(x) exp(r(x)); returns the loss per iteration
    (the first Adam step's loss on that iteration's fresh trajectories).

    Only parameters with requires_grad change. `sampling_model` (default model_ft) draws the
    trajectories; `model_base` is frozen and gives the adjoint VJPs and eps_base.
    `reward_value(x) -> r(x)` (shape (B,), any additive constant) is needed when
    likelihood_ratio_share > 0.
    Raises SolverDivergedError when the adjoint, the loss or the weights become NaN/inf.
    Stops between iterations when `cancel.is_set()`.
    """
    cfg = config or AdjointMatchingConfig()
    params = trainable_parameters(model_ft)
    sampler = sampling_model if sampling_model is not None else model_ft
    dtype, device = model_dtype_device(model_ft)
    shape = tuple(model_ft.sample_shape)
    if tuple(model_base.sample_shape) != shape:
        raise SolverError(f"The base model's sample shape {model_base.sample_shape} differs from {shape}.")
    grid = time_grid(cfg.steps, power=cfg.grid_power, device=device, dtype=dtype)
    c_x, c_eps, std, factor = (v.to(dtype) for v in step_coefficients(model_base.schedule, grid, cfg.control))
    pairing = cfg.adjoint_pairing
    stochastic = torch.nonzero(std > 0).flatten().cpu()
    weight = torch.where(std > 0, std.clamp(min=1e-12) ** -cfg.weight_power, torch.zeros_like(std))
    if stochastic.numel() == 0:
        raise SolverError("The time grid has no stochastic step: nothing for the control to act on.")
    # likelihood-ratio term on the earliest stochastic steps (where the flow picks a mode)
    lr_steps = stochastic[: int(round(cfg.likelihood_ratio_share * stochastic.numel()))]
    if lr_steps.numel() and reward_value is None:
        raise SolverError("likelihood_ratio_share > 0 needs the reward's values (reward_value).")
    on_lr = torch.zeros(cfg.steps, dtype=torch.bool, device=device)
    on_lr[lr_steps] = True
    weight = torch.where(on_lr, weight * cfg.adjoint_weight_on_lr_steps, weight)
    # the backward pass stops at the earliest adjoint a loss reads (a_i for 'current', a_{i+1} for 'next')
    with_adjoint = torch.nonzero(weight > 0).flatten()
    first_adjoint = (int(with_adjoint[0]) + (pairing == "next")) if with_adjoint.numel() else cfg.steps
    ess_history: list[float] = []
    beta_history: list[float] = []
    opt = Adam(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(int(cfg.seed))
    losses: list[float] = []
    ema_q: float | None = None
    timings = cfg.timings
    for key in ("sampling", "reward", "adjoint", "regression"):
        timings.setdefault(key, 0.0)
    m = cfg.trajectories
    ema_params: list[Tensor] | None = None
    averaged = 0  # iterates in the weight average so far
    average_from = int(cfg.average_start * cfg.iterations)
    view = lambda v: v.reshape(-1, 1, *([1] * len(shape)))  # noqa: E731  (per-step scalars vs (K, B, ...))
    for it in range(cfg.iterations):
        if is_cancelled(cancel):
            break
        # 1. trajectories (no grad), fresh noise per iteration from the seed
        t0 = time.perf_counter()
        noise = FixedNoise.from_seed(cfg.seed * 1_000_003 + it, m, shape, cfg.steps, dtype=dtype, device=device)
        with torch.no_grad():
            _, states = sample_ddpm(sampler, noise, grid=grid, return_trajectory=True)
        # 2. lean adjoint from a_M = -grad r(x_M)
        t1 = time.perf_counter()
        if lr_steps.numel():
            with torch.no_grad():
                reward = reward_value(states[-1]).to(dtype).reshape(-1)
            if reward.numel() != m or not torch.isfinite(reward).all():
                raise SolverDivergedError(f"The reward value is NaN/inf or of the wrong shape at iteration {it + 1}.")
            reward, capped = cap_reward(reward, cfg.reward_cap_quantile)
        t_reward = time.perf_counter()
        with torch.no_grad():
            a_last = -reward_grad(states[-1]).to(dtype)
            if lr_steps.numel() and capped is not None:  # grad of min(r, cap): zero above the cap
                a_last[capped] = 0
        if a_last.shape != states[-1].shape or not torch.isfinite(a_last).all():
            raise SolverDivergedError(f"The reward gradient is NaN/inf or of the wrong shape at iteration {it + 1}.")
        adj, eps_base = lean_adjoint(model_base, states, grid, a_last, c_x, c_eps, first_adjoint,
                                     chunk=cfg.adjoint_chunk)
        if not torch.isfinite(adj[first_adjoint:]).all():
            raise SolverDivergedError(f"The adjoint became NaN/inf at iteration {it + 1}.")
        if lr_steps.numel():
            with torch.no_grad():
                lr_u, log_w = likelihood_ratio_terms(states, eps_base, noise.z, reward, c_x, c_eps, std)
                lr_w = torch.ones_like(log_w)  # (rows off the LR steps are never read)
                lr_w[lr_steps], ess, beta = path_weights(log_w[lr_steps], cfg.ess_floor)
                lr_pull = likelihood_ratio_pull(lr_u, noise.z, lr_w)
                ess_history.append(ess)
                beta_history.append(beta)
        # 3-4. regression of u_i onto -std_i a_j, several Adam steps
        t2 = time.perf_counter()
        target_adj = adj[1:] if pairing == "next" else adj[:-1]  # a_j (j = i + 1) or a_i
        first_loss = None
        for _ in range(cfg.adam_steps):
            sel = choose_steps(stochastic, cfg.loss_steps, cfg.late_fraction, g).to(device)
            if cfg.batch_trajectories is not None and cfg.batch_trajectories < m:
                rows = torch.randperm(m, generator=g)[: cfg.batch_trajectories].to(device)
            else:
                rows = torch.arange(m, device=device)
            x = states[sel][:, rows]  # (K, B, ...)
            K, B = x.shape[:2]
            t = grid[sel].repeat_interleave(B)
            eps_ft = model_ft(x.reshape(K * B, *shape), t).reshape(x.shape)
            u = -view(factor[sel]) * (eps_ft - eps_base[sel][:, rows])  # control of step i -> j (regression units)
            residual = u + view(std[sel]) * target_adj[sel][:, rows]  # u_i + std_i a_j
            per_step = residual.pow(2).reshape(K, B, -1).sum(-1) * view(weight[sel])[..., 0]  # (K, B)
            per_traj = per_step.sum(0)  # (B,)
            if not torch.isfinite(per_traj).all():
                raise SolverDivergedError(f"The Adjoint Matching loss became NaN/inf at iteration {it + 1}.")
            if cfg.outlier_mode == "off":
                loss = per_traj.sum() / (B * K)
            else:
                q = float(torch.quantile(per_traj.detach().float(), cfg.outlier_quantile))
                ema_q = q if ema_q is None else cfg.outlier_ema * ema_q + (1 - cfg.outlier_ema) * q
                limit = cfg.outlier_factor * ema_q
                if cfg.outlier_mode == "drop":  # the official code: leave outlier trajectories out
                    keep = per_traj.detach() <= limit
                    if not keep.any():
                        keep = torch.ones_like(keep)
                    loss = per_traj[keep].sum() / (keep.sum() * K)
                else:  # 'scale': an outlier keeps its direction, its loss is shrunk to the limit
                    scale = (limit / per_traj.detach().clamp(min=torch.finfo(per_traj.dtype).tiny)).clamp(max=1.0)
                    loss = (per_traj * scale).sum() / (B * K)
            picked = on_lr[sel]  # the selected steps that carry the likelihood-ratio term
            if picked.any():  # (the outlier rule above is the adjoint's alone)
                i_lr = sel[picked]
                pull = lr_pull[i_lr][:, rows]
                if cfg.likelihood_ratio_target == "current":  # E[J^T pull | x] / E[w | x] = std_i grad V_i
                    pull = base_mean_vjp(model_base, x[picked], grid[i_lr], pull, c_x[i_lr], c_eps[i_lr],
                                         chunk=cfg.adjoint_chunk)
                lr_loss = likelihood_ratio_loss(u[picked], pull, lr_w[i_lr][:, rows])
                if not torch.isfinite(lr_loss).all():
                    raise SolverDivergedError(f"The likelihood-ratio loss became NaN/inf at iteration {it + 1}.")
                loss = loss + lr_loss.sum() / (B * K)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                if not math.isfinite(float(norm)):
                    raise SolverDivergedError(f"The gradient became NaN/inf at iteration {it + 1}.")
            opt.step()
            if first_loss is None:
                first_loss = float(loss.detach())
        check_finite_params(params, f"at iteration {it + 1}")
        if cfg.weight_ema is not None and it >= average_from:
            # average out the iterate noise of heavy-tailed targets; decay min(ema, n/(n+1)) starts
            # the average at the first averaged iterate (a uniform mean while n < 1/(1-ema)), not
            # at the starting weights, whose zero control would bias the tilt low
            decay = min(cfg.weight_ema, averaged / (averaged + 1))
            with torch.no_grad():
                if ema_params is None:
                    ema_params = [p.detach().clone() for p in params]
                else:
                    for e, p in zip(ema_params, params):
                        e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            averaged += 1
        t3 = time.perf_counter()
        timings["sampling"] += t1 - t0
        timings["reward"] += t_reward - t1
        timings["adjoint"] += t2 - t_reward
        timings["regression"] += t3 - t2
        losses.append(first_loss)
        if on_iteration is not None:
            on_iteration(it + 1, cfg.iterations, first_loss)
    if ess_history:
        cfg.health.update({"lr_ess_min": min(ess_history), "lr_ess_median": float(statistics.median(ess_history)),
                           "lr_tempered_iterations": sum(b < 1 for b in beta_history),
                           "lr_beta_min": min(beta_history)})
    if ema_params is not None and losses:
        with torch.no_grad():
            for e, p in zip(ema_params, params):
                p.copy_(e)
    return losses
