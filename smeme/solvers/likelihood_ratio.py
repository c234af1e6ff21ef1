"""The likelihood-ratio estimator of the optimal control (Adjoint Matching's optional term).

The optimal control of step i -> j is the mean base-noise increment under the tilted path law,
    u*_i(x) = E*[zeta_i | x_i = x],  zeta_i = (x_j - mean_base(x_i)) / std_i.
Sampled paths (control u_l = zeta_l - xi_l, xi_l the sampler's own noise) are reweighted to the
tilted law by Girsanov, self-normalised per step:
    log w_i = r(x_M) - sum_{l >= i} (u_l . xi_l + |u_l|^2 / 2),
and regressing w_i |u_i(x_i) - (u_sampled_i + (1 - 1/w_i) xi_i)|^2 has the minimiser
E*[zeta_i | x_i] for any normalisation (E[xi_i | x_i] = 0; the control variate keeps the noise
small while the reward's range is small). The loss below drops its constant |.|^2 / w_i.
Tempering (path_weights) scales the reward's part of log w only, so a tempered target is the
optimal control of the smaller tilt p_base exp(beta r), in the units the control is regressed in.

Contract: every function here is pure tensor algebra on one iteration's trajectories (no model
calls); AdjointMatchingConfig.likelihood_ratio_share turns the term on.
"""
from __future__ import annotations

import statistics

import torch
from torch import Tensor


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
    """The sampled controls and path log-weights, per step (the Girsanov weights above).

    zeta_i = (x_j - mean_base(x_i)) / std_i is the base-noise increment of the sampled step,
    xi_i = z_i the sampler's own noise, u_i = zeta_i - xi_i its control; the log-weight of
    step i is log w_i = r(x_M) - sum_{l >= i} (u_l . xi_l + |u_l|^2 / 2), up to a constant per step.
    Returns (u (M, m, ...), log w (M, m)); path_weights normalises them.
    """
    u, girsanov = sampled_controls(states, eps_base, z, c_x, c_eps, std)
    return u, reward.reshape(1, -1) - girsanov


def sampled_controls(states: Tensor, eps_base: Tensor, z: Tensor, c_x: Tensor, c_eps: Tensor,
                     std: Tensor) -> tuple[Tensor, Tensor]:
    """u_i = zeta_i - xi_i per step and the path's log dP_u/dP_base from step i on,
    sum_{l >= i} (u_l . xi_l + |u_l|^2 / 2): (u (M, m, ...), (M, m))."""
    M, m = eps_base.shape[:2]
    view = lambda v: v.reshape(-1, 1, *([1] * (states.dim() - 2)))  # noqa: E731
    stochastic = std > 0
    mean_base = view(c_x) * states[:-1] - view(c_eps) * eps_base
    zeta = (states[1:] - mean_base) / view(torch.where(stochastic, std, torch.ones_like(std)))
    u = torch.where(view(stochastic), zeta - z, torch.zeros_like(zeta))
    girsanov = (u * z + 0.5 * u * u).reshape(M, m, -1).sum(-1)  # log dP_u/dP_base of each step
    return u, girsanov.flip(0).cumsum(0).flip(0)  # sum over l >= i


def effective_sample_share(w: Tensor) -> Tensor:
    """Kish's effective sample size of each row of weights, as a share of the row's length."""
    return w.sum(-1).pow(2) / (w.shape[-1] * w.pow(2).sum(-1).clamp(min=torch.finfo(w.dtype).tiny))


def path_weights(log_w: Tensor, ess_floor: float, girsanov: Tensor | None = None,
                 grid: int = 32) -> tuple[Tensor, float, float]:
    """Self-normalised weights (mean 1 per step) from log-weights (M, m), tempered when needed.

    The log-weights are beta log_w - girsanov (girsanov: the paths' log dP_u/dP_base from each step
    on, None: 0), i.e. the weights of the path law p_base exp(beta r) when log_w holds r(x_M): tempering
    tilts by a fraction beta of the reward, so its target is the control of a smaller tilt, between
    the base (beta = 0, zero control) and the full one, never beyond. beta = 1 when the smallest
    effective sample share over the steps is >= ess_floor there; otherwise the largest beta that
    reaches the floor (a scan of `grid` values, then bisection), or, if none does, the beta of
    the largest share. Returns (w, effective sample share at beta = 1, beta)."""
    m = log_w.shape[1]

    def weights(beta: float) -> Tensor:
        scaled = beta * log_w if girsanov is None else beta * log_w - girsanov
        return torch.softmax(scaled, dim=1) * m

    def share(beta: float) -> float:
        return float(effective_sample_share(weights(beta)).min())

    ess = share(1.0)
    if ess >= ess_floor:
        return weights(1.0), ess, 1.0
    betas = [k / grid for k in range(grid)]  # 0 .. 1 - 1/grid; 1 failed above
    shares = [share(b) for b in betas]
    passing = [k for k, v in enumerate(shares) if v >= ess_floor]
    if not passing:
        best = betas[max(range(grid), key=shares.__getitem__)]
        return weights(best), ess, best
    lo, hi = betas[passing[-1]], (passing[-1] + 1) / grid
    for _ in range(20):  # the largest beta above the floor, between the last passing value and the next
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if share(mid) >= ess_floor else (lo, mid)
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


def likelihood_ratio_targets(states: Tensor, eps_base: Tensor, z: Tensor, reward: Tensor, c_x: Tensor,
                             c_eps: Tensor, std: Tensor, lr_steps: Tensor, ess_floor: float,
                             per_step: bool = False):
    """One iteration's regression data for the term on `lr_steps`: (pull (M, m, ...), w (M, m),
    ESS share before tempering, beta, kept (len(lr_steps),) bool). Rows off lr_steps keep w = 1
    and are never read.

    per_step False: every step's weights tempered by one beta (path_weights), all steps kept.
    per_step True: no tempering; a step is kept only where its own weights' effective sample
    share reaches ess_floor (the caller hands the others to the adjoint term), so every kept
    target is the full tilt's and no step's is a weaker one."""
    u, girsanov = sampled_controls(states, eps_base, z, c_x, c_eps, std)
    w = torch.ones_like(girsanov)
    log_w = reward.reshape(1, -1).expand(len(lr_steps), -1)
    if per_step:
        w[lr_steps] = torch.softmax(log_w - girsanov[lr_steps], dim=1) * w.shape[1]
        shares = effective_sample_share(w[lr_steps])
        return likelihood_ratio_pull(u, z, w), w, float(shares.min()), 1.0, (shares >= ess_floor).cpu()
    w[lr_steps], ess, beta = path_weights(log_w, ess_floor, girsanov=girsanov[lr_steps])
    return likelihood_ratio_pull(u, z, w), w, ess, beta, torch.ones(len(lr_steps), dtype=torch.bool)


def weights_health(history: dict) -> dict:
    """The likelihood-ratio weights' effective sample share (min, median over iterations) and tempering."""
    ess, beta = history.get("ess"), history.get("beta")
    if not ess:
        return {}
    return {"lr_ess_min": min(ess), "lr_ess_median": float(statistics.median(ess)),
            "lr_tempered_iterations": sum(b < 1 for b in beta), "lr_beta_min": min(beta),
            "lr_steps_kept_mean": float(statistics.fmean(history["kept"]))}


__all__ = ["cap_reward", "likelihood_ratio_terms", "sampled_controls", "effective_sample_share", "path_weights",
           "likelihood_ratio_pull", "likelihood_ratio_loss", "likelihood_ratio_targets", "weights_health"]
