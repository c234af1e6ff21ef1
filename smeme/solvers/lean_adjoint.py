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
from ..models.linearize import linearize
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
        eps[rows], product = linearize(model, x[rows], t[rows])
        vjp[rows] = product(v[rows])
    return eps, vjp


class LeanAdjoint:
    """One iteration's backward pass a_i = c_x a_{i+1} - c_eps J_eps_base(x_i)^T a_{i+1}, in stages, so that
    how far down it runs can depend on what eps_base at the lower steps says (the likelihood-ratio weights):

    backward_to(k): the adjoints down to a_k, with eps_base on the way (one VJP per step);
    forward_rest(keep_from): eps_base at every step not evaluated yet, keeping the linearisations of the steps
        >= keep_from (memory: their activations) so that a later backward_to reaches them without evaluating any step twice;
    release(): drops the kept linearisations. Adjoints below the lowest a_k reached stay 0 (never read).
    """

    def __init__(self, model_base: NoisePredictor, states: Tensor, grid: Tensor, a_last: Tensor, c_x: Tensor,
                 c_eps: Tensor, chunk: int | None = None):
        self.model, self.states, self.grid, self.c_x, self.c_eps, self.chunk = (model_base, states, grid, c_x,
                                                                                c_eps, chunk)
        self.adj = torch.zeros_like(states)
        self.adj[-1] = a_last
        self.eps_base = torch.empty_like(states[:-1])
        self.lowest = self.evaluated = states.shape[0] - 1  # a_i known for i >= lowest, eps_base for i >= evaluated
        self._kept: dict[int, list] = {}  # step -> [(rows, their J_eps^T product)], linearisations kept

    def _t(self, i: int) -> Tensor:
        return self.grid[i].expand(self.states.shape[1])

    def backward_to(self, first: int) -> None:
        """a_i for every i >= first (from a_{lowest} down)."""
        for i in range(self.lowest - 1, first - 1, -1):
            a = self.adj[i + 1]
            if i in self._kept:
                vjp = torch.empty_like(a)
                for rows, product in self._kept.pop(i):
                    vjp[rows] = product(a[rows])
            else:
                self.eps_base[i], vjp = _eps_vjp(self.model, self.states[i], self._t(i), a, self.chunk)
            self.adj[i] = (self.c_x[i] * a - self.c_eps[i] * vjp).detach()  # a_i = (d mean_i / d x_i)^T a_{i+1}
        self.lowest = min(self.lowest, first)
        self.evaluated = min(self.evaluated, self.lowest)

    def forward_rest(self, keep_from: int) -> None:
        """eps_base at the steps below those evaluated; the linearisations of steps >= keep_from are kept."""
        for i in range(self.evaluated - 1, -1, -1):
            x, t = self.states[i], self._t(i)
            if i < keep_from:
                with torch.no_grad():
                    self.eps_base[i] = self.model(x, t)
                continue
            kept = []
            for rows in _row_chunks(len(x), self.chunk):
                self.eps_base[i][rows], product = linearize(self.model, x[rows], t[rows])
                kept.append((rows, product))
            self._kept[i] = kept
        self.evaluated = 0

    def release(self) -> None:
        """Drop the linearisations no backward_to used."""
        self._kept.clear()


def lean_adjoint(model_base: NoisePredictor, states: Tensor, grid: Tensor, a_last: Tensor,
                 c_x: Tensor, c_eps: Tensor, first: int = 0, chunk: int | None = None):
    """The whole backward pass down to a_first: (adjoints (M+1, m, ...), eps_base at every step (M, m, ...)).

    Below `first` no adjoint is read (its loss weight is 0): a_i is left 0 there and eps_base is
    evaluated without a graph.
    """
    backward = LeanAdjoint(model_base, states, grid, a_last, c_x, c_eps, chunk)
    backward.backward_to(first)
    backward.forward_rest(keep_from=first)
    return backward.adj, backward.eps_base


def base_mean_vjp(model_base: NoisePredictor, x: Tensor, t: Tensor, v: Tensor, c_x: Tensor, c_eps: Tensor,
                  chunk: int | None = None) -> Tensor:
    """J_i^T v for the base's mean step mean_i(x) = c_x x - c_eps eps_base(x, t_i), per step:
    x, v (K, B, ...), t, c_x, c_eps (K,); no graph kept."""
    K, B = x.shape[:2]
    _, vjp = _eps_vjp(model_base, x.reshape(K * B, *x.shape[2:]), t.repeat_interleave(B),
                      v.reshape(K * B, *v.shape[2:]), chunk)
    view = lambda c: c.reshape(K, 1, *([1] * (x.dim() - 2)))  # noqa: E731
    return (view(c_x) * v - view(c_eps) * vjp.reshape(v.shape)).detach()
