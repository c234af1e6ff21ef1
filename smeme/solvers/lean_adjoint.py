"""The memoryless DDPM chain's per-step coefficients and Adjoint Matching's backward pass.

A step i -> i+1 of the chain is x_{i+1} = c_x x_i - c_eps eps(x_i, t_i) + std z. The lean
adjoint runs the frozen base's mean step backwards, a_i = (d mean_base(x_i) / d x_i)^T a_{i+1}
= c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1}, from a_M = -grad r(x_M) (paper Algorithm 2);
every product with a Jacobian is a vector-Jacobian product, chunked over rows, no graph kept.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import NoisePredictor
from ..sampling import ddpm_coefficients


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
    for rows in _row_chunks(len(x), chunk):
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
