"""Exact S-MEME rounds of a 2-D density on a grid: what a perfect solver would produce.

The toy's closed form p_k ~ p_pre^((1 - lam)^k) assumes a compact support
(p = 0 off it) and t_r -> 0. A trained model has p > 0 everywhere, so the
paper's target of round k (reward -lam_k log p_{k-1}(x), explore's reward_target 'data') is

    p_k(x) ∝ p_{k-1}(x)^(1 - lam_k)                                      (t_r = 0 here)

and with the smoothed reward (reward_target 'smoothed', read at t_r > 0) a different one,

    p_k(x) ∝ p_{k-1}(x) * p_{k-1}(x, t_r)^(-lam_k)                    (KL-regularised tilt)

where p(x, t_r) is p pushed through the VP forward process to t_r. Features are
standardised, z = (x - mean) / std, and z_t = sqrt(ab) z + sqrt(1 - ab) eps, so in the
data's units x_t = mean (1 - sqrt(ab)) + sqrt(ab) x + std sqrt(1 - ab) eps: a scaled
shift plus Gaussian smoothing, separable along the two axes. On a grid both steps are
exact up to quadrature and the grid's extent. Use it on a model's own PF-ODE
log-density (density.heatmap) to see how much of the closed form a perfect solver reaches
on that model, and how much mass it leaks off the support.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def _forward_kernel(grid: np.ndarray, mean: float, std: float, ab: float) -> np.ndarray:
    """K[i, j] ∝ density of x_t = grid[i] given x_0 = grid[j] along one axis (unnormalised)."""
    centre = mean * (1 - math.sqrt(ab)) + math.sqrt(ab) * grid[None, :]
    spread = std * math.sqrt(1 - ab)
    return np.exp(-0.5 * ((grid[:, None] - centre) / spread) ** 2)


def smooth_to(prob: np.ndarray, xs: np.ndarray, ys: np.ndarray, ab: float, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
    """p(., t) on the grid, up to a constant, from p (shape (len(ys), len(xs)), x fastest)."""
    kx = _forward_kernel(np.asarray(xs, dtype=np.float64), float(mean[0]), float(std[0]), ab)
    ky = _forward_kernel(np.asarray(ys, dtype=np.float64), float(mean[1]), float(std[1]), ab)
    return ky @ prob @ kx.T


# The reward's time t_r must add noise the grid's smoothing can represent: below ~1e-8 the
# noise scale sqrt(1 - ab(t_r)) rounds to zero in float64 (the kernel divides by it).
T_R_MIN = 1e-6


def check_t_r(t_rs: Sequence[float]) -> None:
    """Refuse a reward time other than 0 (the paper's target) or in [T_R_MIN, 1), naming the value."""
    for v in t_rs:
        if not (v == 0 or T_R_MIN <= v < 1):  # also nan
            raise ValueError(f"t_r (the reward's time) must be 0 (the paper's target) or lie in [{T_R_MIN:g}, 1) "
                             f"for the exact tilt, got {v:g}.")


def exact_rounds(logp: np.ndarray, xs: np.ndarray, ys: np.ndarray, lam_history: Sequence[float],
                 t_r: float | Sequence[float], ab_of_t, mean: Sequence[float] = (0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0)) -> list[np.ndarray]:
    """Normalised grid probabilities (cell masses) of rounds 0..K for lambdas lam_history.

    logp: log-density of round 0 on the grid, (len(ys), len(xs)), -inf allowed; t_r: the
    smoothed reward's time (0: the paper's target, p_{k-1}^(1 - lam)), one for all rounds or one per round; ab_of_t: t -> alpha_bar(t) of the
    model's schedule; mean, std: the model's standardiser.
    """
    logp = np.asarray(logp, dtype=np.float64)
    if logp.shape != (len(ys), len(xs)):
        raise ValueError(f"logp has shape {logp.shape}, the grid is {(len(ys), len(xs))}.")
    t_rs = [float(t_r)] * len(lam_history) if np.ndim(t_r) == 0 else [float(v) for v in t_r]
    if len(t_rs) != len(lam_history):
        raise ValueError(f"{len(t_rs)} values of t_r for {len(lam_history)} rounds.")
    check_t_r(t_rs)
    finite = np.isfinite(logp)
    if not finite.any():
        raise ValueError("logp has no finite value on the grid.")
    prob = np.where(finite, np.exp(logp - logp[finite].max()), 0.0)
    prob /= prob.sum()
    out = [prob]
    tiny = np.finfo(np.float64).tiny
    for lam, t in zip(lam_history, t_rs):
        if not 0 < lam <= 1:
            raise ValueError(f"lambda must lie in (0, 1], got {lam}.")
        smoothed = smooth_to(prob, xs, ys, float(ab_of_t(t)), mean, std) if t > 0 else prob
        log_w = np.log(np.maximum(prob, tiny)) - lam * np.log(np.maximum(smoothed, tiny))  # p * p_tr^-lam
        log_w[prob <= 0] = -np.inf
        prob = np.exp(log_w - log_w[np.isfinite(log_w)].max())
        prob /= prob.sum()
        out.append(prob)
    return out


def check_plane_is_features(domain, raw: np.ndarray | None = None) -> None:
    """The exact rounds need 2-D points whose features are the two columns themselves
    (checked on the grid points `raw` when given)."""
    columns = list(getattr(domain, "columns", []))
    if len(columns) != 2 or not hasattr(domain, "plane_grid"):
        raise ValueError(f"The exact tilt needs a run of 2-D points (toy, or a CSV of two columns); "
                         f"this '{domain.name}' run has the columns {columns}.")
    if raw is not None and not (np.allclose(domain.to_features(raw), raw) and np.allclose(domain.log_abs_det(raw), 0.0)):
        raise ValueError(f"The exact tilt needs the run's features to be its two columns; '{domain.name}' maps them.")


def summarise_rounds(run, xs: np.ndarray, ys: np.ndarray, logp: np.ndarray, lam_history: Sequence[float],
                     t_r, round_index: int = 0) -> list[dict]:
    """The exact rounds from round `round_index`'s log-density on a grid (data units), one
    dict per round: the mass on the data's support, the mass of each category label (e.g.
    the toy's 'region') and the differential entropy (nats, data units, the density taken
    constant over each grid cell), as a perfect solver would leave them."""
    gx, gy = np.meshgrid(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    raw = np.column_stack([gx.ravel(), gy.ravel()])
    domain = run.domain
    check_plane_is_features(domain, raw)
    ab_of_t = lambda t: float(run.schedule.ab(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    rounds = exact_rounds(logp, xs, ys, lam_history, t_r, ab_of_t, run.standardizer.mean, run.standardizer.std)
    on = np.asarray(domain.on_support(raw), dtype=bool)
    labels = domain.categories(raw) if hasattr(domain, "categories") else {}
    cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    out = []
    for k, prob in enumerate(rounds):
        w = prob.ravel()
        nz = w[w > 0]
        out.append({"round": round_index + k, "lam": None if k == 0 else float(lam_history[k - 1]),
                    "on_support": float(w[on].sum()),
                    "entropy": float(-(nz * np.log(nz / cell)).sum()),  # H = -sum w log(w / cell area)
                    "shares": {name: {str(lab): float(w[np.asarray(arr) == lab].sum()) for lab in sorted(set(arr))}
                               for name, arr in labels.items()}})
    return out


def run_exact_rounds(run, lam_history: Sequence[float], t_r, round_index: int = 0,
                     resolution: int = 200, margin: float = 0.25, progress=None) -> list[dict]:
    """summarise_rounds on a fresh grid (exact_round_grid)."""
    check_t_r([float(t_r)] * len(lam_history) if np.ndim(t_r) == 0 else [float(v) for v in t_r])
    xs, ys, logp = exact_round_grid(run, round_index, resolution, margin, progress)
    return summarise_rounds(run, xs, ys, logp, lam_history, t_r, round_index)


def exact_round_grid(run, round_index: int = 0, resolution: int = 200, margin: float = 0.25,
                     progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, log-density): the run's plane widened by `margin` of its span on each side,
    `resolution` points a side, with round `round_index`'s PF-ODE log-density (data units);
    summarise_rounds reads any number of lambda histories from one grid."""
    from .density import log_prob_raw

    domain = run.domain
    if resolution < 8:
        raise ValueError(f"The grid needs a resolution of at least 8, got {resolution}.")
    check_plane_is_features(domain)
    xs, ys = domain.plane_grid(8)[:2]
    pad_x, pad_y = margin * (xs[-1] - xs[0]), margin * (ys[-1] - ys[0])
    xs = np.linspace(xs[0] - pad_x, xs[-1] + pad_x, resolution)
    ys = np.linspace(ys[0] - pad_y, ys[-1] + pad_y, resolution)
    gx, gy = np.meshgrid(xs, ys)
    raw = np.column_stack([gx.ravel(), gy.ravel()])
    model = run.load_model(round_index).eval()
    logp = log_prob_raw(model, domain, run.standardizer, raw, progress=progress).reshape(gx.shape)
    return xs, ys, logp
