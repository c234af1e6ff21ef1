"""Log-densities from the probability-flow ODE (paper eq. 38) and entropy estimates.

PF-ODE:   dx/dt = v(x, t) = -1/2 beta(t) (x + s(x, t)),
instantaneous change of variables:
    log p_0(x_0) = log N(x_1; 0, I) + int_{t_min}^1 div v(x_t, t) dt,
with s = -eps / sqrt(1 - ab), so  div v = -1/2 beta (D - tr(d eps/dx) / sqrt(1 - ab)).

Numerics (accuracy against closed forms: bench/bench_density.py and BENCHMARKS.md):
- RK4 on the augmented state (x, logdet) on the grid t = t_min + (1 - t_min) u^1.5, u
  uniform (the sampler's power), which converges in fewer steps than uniform t at sharp
  edges; DEFAULT_STEPS steps.
- Exact divergence for D <= 16: MLP noise predictors take a hand-written forward-mode path
  (all D tangents pushed through the layers in one matmul, no autograd), other models use
  D vector-Jacobian products. Above 16, Hutchinson's estimator with Rademacher probes drawn
  once per solve (the same probes at every step).
- t_min: the solve returns log p_{t_min}, the data density blurred by noise of standard
  deviation sqrt(1 - ab(t_min)) (~0.01 standardised units at the default 1e-3); the bias is
  largest at sharp support edges.
- The prior N(0, I) at t = 1 ignores the O(sqrt(ab(1))) shift of the data mean.

deconvolved_score reads the data-end score and log-density correction from the score at a
small time t_r (Tweedie's formula; exact where p_0 is locally Gaussian).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .models.base import NoisePredictor
from .models.linearize import linearize
from .models.mlp import MLPNoisePredictor, is_plain_mlp
from .threads import rebalance

DEFAULT_STEPS = 32
DEFAULT_T_MIN = 1e-3
GRID_POWER = 1.5
EXACT_MAX_DIM = 16
DEFAULT_BATCH = 4096

ProgressFn = Callable[[int, int], None]  # (work units done, total)


def ode_time_grid(steps: int, t_min: float = DEFAULT_T_MIN, power: float = GRID_POWER) -> Tensor:
    """Ascending grid t_min = t_0 < ... < t_steps = 1, t = t_min + (1 - t_min) u^power (dense near t_min)."""
    if steps < 1:
        raise ValueError(f"The number of ODE steps must be at least 1, got {steps}.")
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie strictly between 0 and 1, got {t_min}.")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return t_min + (1.0 - t_min) * u**power


# -- J_eps times probe vectors ----------------------------------------------------------------

def _mlp_eps_jvp(model: MLPNoisePredictor, x: Tensor, t: Tensor, probes: Tensor):
    """eps(x, t) and the Jacobian-vector products J_eps v for each probe v, by hand.

    Forward-mode differentiation of Linear/SiLU layers: a tangent goes through a Linear as
    tan @ W^T and through SiLU as tan * silu'(pre). All P probes ride in one matmul.
    `t` is one time for the whole batch: the time features enter layer 1 as a bias (MLPNoisePredictor.first_layer).
    probes: (P, B or 1, d). Returns eps (B, d) and J v (P, B, d).
    """
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    pre = model.first_layer(x, t.reshape(1))
    tan = probes @ linears[0].weight[:, :x.shape[1]].T  # (P, B|1, width): d pre / dx applied to the probes
    for layer in linears[1:]:
        sig = torch.sigmoid(pre)
        hidden = pre * sig
        slope = torch.addcmul(sig, hidden, 1 - sig)  # silu'(pre) = s + pre s (1 - s), once for all P tangents
        pre = torch.addmm(layer.bias, hidden, layer.weight.T)
        tan = (tan * slope) @ layer.weight.T
    skip = model.skip(x, t)  # linear in x: its Jacobian times a probe is the skip of the probe
    if skip is not None:
        pre, tan = pre + skip, tan + model.skip(probes, t)
    return pre, tan


def _autograd_eps_vjp(model: NoisePredictor, x: Tensor, t: Tensor, probes: Tensor):
    """eps(x, t) and v^T J_eps for each probe v (one vector-Jacobian product per probe); any model."""
    eps, vjp = linearize(model, x, t.expand(x.shape[0]))
    return eps, torch.stack([vjp(p.expand_as(eps)) for p in probes])


def _skip_trace(model: MLPNoisePredictor, t: Tensor, dtype) -> Tensor | None:
    """tr of the MLP's skips' Jacobian, sqrt(1 - ab) (prior_skip D + sum_k ab^k tr(10 L_k)
    + sum_i (1 / (ab e_i + 1 - ab) - 1)), in closed form (None when the model has no skip)."""
    cfg = model.config
    if not (cfg.prior_skip or cfg.linear_skip or cfg.gaussian_skip):
        return None
    ab = model.schedule.ab(t.reshape(1)).to(dtype)
    out = cfg.prior_skip * cfg.dim * torch.ones_like(ab)
    if cfg.gaussian_skip:
        variances = model.gaussian_skip_basis()[1].to(dtype)
        out = out + (1 / torch.addcmul(1 - ab, ab, variances) - 1).sum(-1)
    if cfg.linear_skip:
        from .models.mlp import SKIP_SCALE

        traces = torch.diagonal(model.skip_matrix, dim1=-2, dim2=-1).sum(-1).to(dtype)  # (n,)
        powers = ab[:, None] ** torch.arange(1, len(traces) + 1, dtype=dtype, device=ab.device)
        out = out + SKIP_SCALE * (powers * traces).sum(-1)
    return (torch.sqrt(1 - ab) * out)[0]


def eps_and_trace(model: NoisePredictor, x: Tensor, t: Tensor, probes: Tensor, exact: bool):
    """eps and tr(d eps / dx): exact with basis probes (sum of v^T J v), else Hutchinson (mean).

    Hutchinson on a plain MLP with a linear skip estimates only the network's part: the skip's
    trace is known in closed form (a control variate; on trained CSV models the skip carries the
    data's Gaussian part, whose v^T J v spread would otherwise add to the estimate's)."""
    if is_plain_mlp(model):
        if not exact and _skip_trace(model, t, x.dtype) is not None:
            eps, jv = _mlp_eps_jvp(model, x, t, probes)
            jv_skip = model.skip(probes, t)
            quad = (probes * (jv - jv_skip)).flatten(2).sum(-1)
            return eps, quad.mean(0) + _skip_trace(model, t, x.dtype)
        eps, jv = _mlp_eps_jvp(model, x, t, probes)
    else:
        eps, jv = _autograd_eps_vjp(model, x, t, probes)
    quad = (probes * jv).flatten(2).sum(-1)  # v^T J v, (P, B)
    return eps, (quad.sum(0) if exact else quad.mean(0))


def velocity_and_divergence(model: NoisePredictor, x: Tensor, t: Tensor, probes: Tensor, exact: bool):
    """PF-ODE velocity v and div v at one time t (a 0-dim tensor) for the whole batch."""
    ab = model.schedule.ab(t.reshape(1)).to(x.dtype)
    beta = model.schedule.beta(t.reshape(1)).to(x.dtype)
    sigma = torch.sqrt(1 - ab)
    eps, tr = eps_and_trace(model, x, t, probes, exact)
    dim = x[0].numel()
    v = -0.5 * beta * (x - eps / sigma)  # v = -1/2 beta (x + s), s = -eps / sigma
    div = -0.5 * beta * (dim - tr / sigma)  # div v = -1/2 beta (D - tr J_eps / sigma)
    return v, div


# -- the solve ------------------------------------------------------------------------------

def _basis(shape: tuple[int, ...], dtype, device) -> Tensor:
    dim = math.prod(shape)
    return torch.eye(dim, dtype=dtype, device=device).reshape(dim, 1, *shape)


def _rademacher(probes: int, n: int, shape, seed: int, dtype, device) -> Tensor:
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randint(0, 2, (probes, n, *shape), generator=g).to(dtype=dtype, device=device)
    return 2 * r - 1


def _solve(model, x: Tensor, grid: Tensor, probes: Tensor, exact: bool, tick) -> Tensor:
    """RK4 on (x, logdet) from grid[0] = t_min to grid[-1] = 1; returns log p_{t_min}(x)."""
    grid = grid.to(x.dtype)
    logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    f = lambda y, t: velocity_and_divergence(model, y, t, probes, exact)  # noqa: E731
    for k in range(grid.numel() - 1):
        rebalance()
        t0, t1 = grid[k], grid[k + 1]
        h = t1 - t0
        k1, l1 = f(x, t0)
        k2, l2 = f(x + 0.5 * h * k1, t0 + 0.5 * h)
        k3, l3 = f(x + 0.5 * h * k2, t0 + 0.5 * h)
        k4, l4 = f(x + h * k3, t1)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        logdet = logdet + h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)
        tick()
    dim = x[0].numel()
    prior = -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)  # log N(x_1; 0, I)
    return prior + logdet  # eq. 38


def _model_dtype(model, fallback: torch.dtype) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return fallback


def log_prob(model: NoisePredictor, x, steps: int = DEFAULT_STEPS, t_min: float = DEFAULT_T_MIN,
             exact: bool | None = None, probes: int = 1, seed: int = 0,
             batch_size: int | None = None, progress: ProgressFn | None = None) -> Tensor:
    """log p(x) of the model in its own (standardised) space, shape (N,), by the PF-ODE.

    x: (N, *model.sample_shape). exact: None = exact divergence when D <= 16, else
    Hutchinson with `probes` Rademacher probes (seeded by `seed`, fixed for the solve).
    Points are solved in chunks of `batch_size` (default 4096); the result does not
    depend on the chunking. progress(done, total) is called after every ODE step.
    """
    x = torch.as_tensor(x)
    fallback = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(_model_dtype(model, fallback))
    shape = tuple(x.shape[1:])
    if tuple(model.sample_shape) != shape:
        raise ValueError(f"Points have shape {shape}, but the model expects {tuple(model.sample_shape)}.")
    dim = math.prod(shape)
    exact = dim <= EXACT_MAX_DIM if exact is None else bool(exact)
    if not exact and probes < 1:
        raise ValueError(f"Hutchinson's estimator needs at least one probe, got {probes}.")
    grid = ode_time_grid(steps, t_min)
    n = x.shape[0]
    batch = batch_size or DEFAULT_BATCH
    all_probes = None if exact else _rademacher(probes, n, shape, seed, x.dtype, x.device)
    basis = _basis(shape, x.dtype, x.device) if exact else None
    chunks = range(0, n, batch)
    done, total = [0], steps * len(chunks)

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    out = []
    with torch.no_grad():
        for start in chunks:
            xb = x[start:start + batch]
            pb = basis if exact else all_probes[:, start:start + batch]
            out.append(_solve(model, xb, grid, pb, exact, tick))
    return torch.cat(out) if out else torch.zeros(0, dtype=x.dtype)


# -- the data's own units -------------------------------------------------------------------

def log_prob_raw(model: NoisePredictor, domain, standardizer, raw, **kw) -> np.ndarray:
    """log-density in the data's own units (float64, shape (N,)).

    log p_raw(r) = log p_z(z) + log|dz/dfeat| + log|dfeat/dr|, z = standardizer(features(r)),
    with log|dz/dfeat| = -sum log std and log|dfeat/dr| = domain.log_abs_det(r).
    Rows with a non-finite raw value get NaN (no point at all). Rows whose features or
    Jacobian are undefined (e.g. a triangle with a + b + c = 0) get -inf: they lie outside
    the set the feature map covers, where the model has no mass. **kw go to `log_prob`.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[None]
    out = np.full(len(raw), np.nan)
    finite = np.all(np.isfinite(raw.reshape(len(raw), -1)), axis=1)
    if not finite.any():
        return out
    r = raw[finite]
    with np.errstate(all="ignore"):
        feat = np.asarray(domain.to_features(r), dtype=np.float64)
        jac = np.asarray(domain.log_abs_det(r), dtype=np.float64)
    ok = np.all(np.isfinite(feat.reshape(len(r), -1)), axis=1) & np.isfinite(jac)
    res = np.full(len(r), -np.inf)
    if ok.any():
        z = standardizer.forward(feat[ok])
        logp_z = log_prob(model, torch.as_tensor(z), **kw).double().cpu().numpy()
        res[ok] = logp_z + standardizer.log_det(feat.shape[1:]) + jac[ok]
    out[finite] = res
    return out


def heatmap(model: NoisePredictor, domain, standardizer, resolution: int = 64, density_kw: dict | None = None,
            **plane_kw) -> dict:
    """log-density over the domain's display plane: dict(xs, ys, logp (ny, nx), x_label, y_label).

    The plane comes from `domain.plane_grid(resolution, **plane_kw)` (x varies fastest);
    logp is in the data's own units (`log_prob_raw`); `density_kw` go to `log_prob`.
    """
    if not hasattr(domain, "plane_grid"):
        raise ValueError(f"The '{getattr(domain, 'name', 'unknown')}' data set has no 2-D plane to draw.")
    xs, ys, raw, x_label, y_label = domain.plane_grid(resolution, **plane_kw)
    logp = log_prob_raw(model, domain, standardizer, raw, **(density_kw or {}))
    return {"xs": np.asarray(xs), "ys": np.asarray(ys), "logp": logp.reshape(len(ys), len(xs)),
            "x_label": x_label, "y_label": y_label}


# -- entropy --------------------------------------------------------------------------------

def knn_entropy(x, k: int = 5) -> float:
    """Kozachenko-Leonenko k-NN estimate of the differential entropy (nats).

    H = psi(N) - psi(k) + log V_d + d/N sum_i log r_i,  V_d = pi^(d/2) / Gamma(d/2 + 1),
    r_i = distance from x_i to its k-th nearest other sample. Exact duplicates would give
    r = 0 (log 0): they are counted once (the estimate is for the distinct points).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    x = x[np.all(np.isfinite(x), axis=1)]
    x = np.unique(x, axis=0)
    n, d = x.shape if x.ndim == 2 else (0, 0)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if n <= k:
        raise ValueError(f"The k-NN entropy needs more than k = {k} distinct finite points, got {n}.")
    from scipy.spatial import cKDTree  # here: commands that never measure entropy skip scipy's import
    from scipy.special import digamma, gammaln

    dist, _ = cKDTree(x).query(x, k=k + 1)  # column 0 is the point itself
    r = dist[:, k]
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1)  # unit-ball volume
    return float(digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(r)))


def mc_cross_entropy(logp) -> float:
    """-mean log p over samples: a CROSS-entropy of the sampler against the density model.

    It equals the entropy only when the samples follow that same density; otherwise it is
    larger (by the KL divergence). Non-finite values are ignored.
    """
    logp = np.asarray(torch.as_tensor(logp).double().cpu().numpy() if isinstance(logp, Tensor) else logp, dtype=np.float64)
    logp = logp[np.isfinite(logp)]
    if logp.size == 0:
        raise ValueError("No finite log-density to average.")
    return float(-logp.mean())


# -- the data-end density from the score at a small noise level ------------------------------

# Smallest eigenvalue kept in M: the sharpening is capped at 1 / floor = 4x, so directions
# narrower than ~0.01 standardised variance at t_r 0.05 read a capped score; a larger cap lets a
# network's Jacobian on data of low rank (digits' 64 pixels) push rounds off the support.
DECONVOLUTION_FLOOR = 0.25


def eps_jacobian(model: NoisePredictor, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """eps(x, t) (B, D) and its Jacobian d eps / dx (B, D, D) at one time t (0-dim), x (B, ...)
    flattened to D: forward mode for plain MLPs (all D tangents in one pass), else D VJPs."""
    shape = tuple(x.shape[1:])
    basis = _basis(shape, x.dtype, x.device)
    with torch.no_grad():
        if is_plain_mlp(model):
            eps, jv = _mlp_eps_jvp(model, x, t, basis)  # jv[p] = J e_p, column p
            jac = jv.flatten(2).permute(1, 2, 0)
        else:
            eps, rows = _autograd_eps_vjp(model, x, t, basis)  # rows[p] = e_p^T J, row p
            jac = rows.flatten(2).permute(1, 0, 2)
    return eps.flatten(1), jac


def deconvolved_score(model: NoisePredictor, x: Tensor, t_r: float, floor: float = DECONVOLUTION_FLOOR):
    """The score of the model's data-end density p_0 at x, read from its noised marginal at t_r,
    and the local correction of the log-density: (s_0 (B, ...), delta (B,)) with
        log p_0(x) ~ log p_{t_r}(sqrt(ab) x) + delta(x) + const.

    Tweedie: the posterior mean E[x_0 | y] = (y + sigma^2 s_t(y)) / sqrt(ab) has the Jacobian
    ab Cov[x_0 | y] / (sigma^2 sqrt(ab)) = M / sqrt(ab), M = I + sigma^2 grad s_t = I - sigma J_eps
    (sigma^2 = 1 - ab). Where p_0 is locally Gaussian, N(mu, S), this inverts the smoothing
    exactly: with y = sqrt(ab) x,
        s_0(x) = sqrt(ab) M(y)^-1 s_t(y),
        log p_0(x) = log p_t(y) - sigma^2 / (2 sqrt(ab)) s_0(x) . s_t(y) - 1/2 log det M(y) + const,
    since S^-1 = ab C^-1 + sigma^2 S^-1 C^-1 and M = ab S C^-1 (C = ab S + sigma^2 I). For a
    mixture of separated modes it holds within each mode, the log det term weighing narrow modes.
    M is symmetrised and its eigenvalues clamped to [floor, 1]: a true posterior covariance
    never exceeds the noise (M <= 1), and the floor caps the sharpening at 1 / floor where a
    network's Jacobian is off (far from the data, or data thinner than sigma).
    """
    shape = tuple(x.shape[1:])
    ab = float(model.schedule.ab(torch.tensor(float(t_r), dtype=torch.float64)))
    sigma = math.sqrt(1.0 - ab)
    y = math.sqrt(ab) * x
    eps, jac = eps_jacobian(model, y, torch.tensor(float(t_r), dtype=x.dtype, device=x.device))
    eps, jac = eps.double(), jac.double()
    s_t = -eps / sigma
    eye = torch.eye(jac.shape[-1], dtype=torch.float64, device=jac.device)
    m_sym = eye - 0.5 * sigma * (jac + jac.transpose(1, 2))
    lam, vec = torch.linalg.eigh(m_sym)
    lam = lam.clamp(min=floor, max=1.0)
    coef = (vec.transpose(1, 2) @ s_t[..., None])[..., 0] / lam
    s_0 = math.sqrt(ab) * (vec @ coef[..., None])[..., 0]
    delta = -sigma**2 / (2 * math.sqrt(ab)) * (s_0 * s_t).sum(1) - 0.5 * lam.log().sum(1)
    return s_0.to(x.dtype).reshape(len(x), *shape), delta.to(x.dtype)
