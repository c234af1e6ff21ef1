"""MLP noise predictor with a sinusoidal time embedding (tiny-diffusion style)."""
from __future__ import annotations

import math
from itertools import islice
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import ConfigBase
from ..schedule import Schedule
from .base import NoisePredictor


@dataclass
class MLPConfig(ConfigBase):
    """Shape of an MLP noise predictor.

    Args:
        dim (`int`): Features of a sample (the data's columns).
        width (`int`, defaults to 128): Hidden units per layer.
        depth (`int`, defaults to 3): Hidden layers.
        time_dim (`int`, defaults to 32): Size of the sinusoidal time embedding.
        time_scale (`float`, defaults to 100.0):
            t in [0, 1] is scaled to [0, time_scale] before the sinusoidal features; 1000 (the DDPM convention) makes
            trained nets oscillate in t, which costs the PF-ODE log-density accuracy.
        prior_skip (`float`, defaults to 0.0):
            eps = net(x, t) + prior_skip sqrt(1 - ab(t)) x: with 1 the untrained model is the exact eps of N(0, I)
            (standardised data's own Gaussian), so the net learns only the departure from it.
        linear_skip (`int`, defaults to 0):
            n > 0 adds sqrt(1 - ab) sum_{k=1..n} ab^k x L_k^T with trainable d x d matrices L_k starting at 0: a power
            series in ab of the change of a Gaussian's exact eps around N(0, I), so a round can change the data
            linearly along any direction, including those where the net's output is ~0 under `prior_skip`.
        gaussian_skip (`bool`, defaults to `False`):
            Adds sqrt(1 - ab) ((ab S + (1 - ab) I)^-1 - I) x with S = Q diag(e) Q^T trainable (Q a rotation, e > 0;
            S = I when built, where the term is 0; pre-training starts it at the data's covariance,
            init_gaussian_skip): with `prior_skip` 1 the skip is the exact eps of N(0, S) at every t, narrow
            directions (small e) included, which `linear_skip`'s series in ab reaches only slowly (for a direction
            of variance v its terms shrink like (1 - v)^k).
    """
    config_error, config_label = ValueError, "MLP model"
    dim: int
    width: int = 128
    depth: int = 3
    time_dim: int = 32
    time_scale: float = 100.0
    prior_skip: float = 0.0
    linear_skip: int = 0
    gaussian_skip: bool = False

    def __post_init__(self):
        for name, high in MLP_LIMITS.items():
            value = getattr(self, name)
            if not 1 <= value <= high:
                raise ValueError(f"The MLP model's {name} must lie between 1 and {high:,}, got {value:,}.")
        if not isinstance(self.gaussian_skip, bool):
            raise ValueError(f"The MLP model's gaussian_skip must be true or false, got {self.gaussian_skip!r}.")
        if self.parameter_count() > MAX_MLP_PARAMETERS:
            raise ValueError(f"The MLP model (width {self.width:,}, depth {self.depth}) would have "
                             f"{self.parameter_count():,} weights, more than the limit of {MAX_MLP_PARAMETERS:,}.")

    def parameter_count(self) -> int:
        """Weights of the net (biases included) and of the skips' matrices."""
        inp, total = self.dim + self.time_dim, 0
        for _ in range(self.depth):
            total += (inp + 1) * self.width
            inp = self.width
        skips = max(int(self.linear_skip), 0) * self.dim ** 2 + (self.dim ** 2 + self.dim if self.gaussian_skip else 0)
        return total + (inp + 1) * self.dim + skips


# Caps on a stored model's size (config.json may come from a bundle): far above the presets
# (width <= 128, depth <= 4), low enough that building one cannot exhaust memory.
MLP_LIMITS = {"dim": 4096, "width": 8192, "depth": 64, "time_dim": 4096}
MAX_MLP_PARAMETERS = 2 ** 26  # 256 MiB of float32 weights


# The skips' matrices are SKIP_SCALE x their raw parameters: Adam moves a weight by about lr a step,
# so at lr 2e-3 a round's steps move a raw weight by <= 0.06, while a 1.43x variance change needs
# |L_k| ~ 0.4 (linear skip) or a log-variance change of 0.36 (Gaussian skip). At 3 rather than 10,
# a trained 5-D round reached 0.68-0.71 of the narrowest direction's gain (0.98-0.99 at 10).
SKIP_SCALE = 10.0


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    # Transformer-style features sin/cos(t * 10000^(-k/half)) of a scaled time t
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class MLPNoisePredictor(NoisePredictor):
    def __init__(self, config: MLPConfig, schedule: Schedule):
        super().__init__()
        if (config.dim < 1 or config.width < 1 or config.depth < 1 or config.time_dim < 2
                or not 0 <= int(config.linear_skip) <= 8):
            raise ValueError(f"Invalid MLP configuration {config}.")
        self.config = config
        self.schedule = schedule
        self.sample_shape = (config.dim,)
        layers: list[nn.Module] = []
        inp = config.dim + config.time_dim
        for _ in range(config.depth):
            layers += [nn.Linear(inp, config.width), nn.SiLU()]
            inp = config.width
        out = nn.Linear(inp, config.dim)
        # Zero-initialised output: the untrained model predicts eps = 0 (score 0).
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)
        if config.linear_skip:
            self.skip_matrix = nn.Parameter(torch.zeros(int(config.linear_skip), config.dim, config.dim))
        if config.gaussian_skip:  # S = Q diag(e) Q^T, Q = B exp(skew part of R), e = exp(log_e); S = I at the start
            self.register_buffer("gauss_basis", torch.eye(config.dim))
            self.gauss_rotation = nn.Parameter(torch.zeros(config.dim, config.dim))
            self.gauss_log_var = nn.Parameter(torch.zeros(config.dim))

    def time_embedding(self, t: Tensor, dtype) -> Tensor:
        return sinusoidal_embedding((t * self.config.time_scale).to(dtype), self.config.time_dim)

    def skip(self, v: Tensor, t: Tensor, transpose: bool = False) -> Tensor | None:
        """The skip terms applied to v (..., d), linear in v: sqrt(1 - ab) (prior_skip v + sum_k ab^k v L_k^T
        + ((ab S + (1 - ab) I)^-1 - I) v); t of shape (B,) or (1,); None when all are off. Also the skip's
        Jacobian times v (its transpose times v with `transpose`)."""
        if not (self.config.prior_skip or self.config.linear_skip or self.config.gaussian_skip):
            return None
        ab = self.schedule.ab(t.reshape(-1)).to(v.dtype)[:, None]
        sigma = torch.sqrt(1 - ab)
        out = self.config.prior_skip * sigma * v
        if self.config.gaussian_skip:  # symmetric, so its transpose is itself
            rotation, variances = self.gaussian_skip_basis()
            gain = 1 / torch.addcmul(1 - ab, ab, variances.to(v.dtype)) - 1  # (B | 1, d): eigenvalues of M^-1 - I
            out = out + sigma * (((v @ rotation) * gain) @ rotation.T)
        if self.config.linear_skip:
            n, d = self.skip_matrix.shape[:2]
            powers = ab ** torch.arange(1, n + 1, dtype=v.dtype, device=v.device)  # (B | 1, n)
            mats = SKIP_SCALE * self.skip_matrix
            mats = mats.transpose(1, 2) if transpose else mats
            proj = (v @ mats.reshape(n * d, d).T).unflatten(-1, (n, d))
            out = out + sigma * (powers[..., None] * proj).sum(-2)
        return out

    def gaussian_skip_basis(self) -> tuple[Tensor, Tensor]:
        """(Q, e) of the Gaussian skip's S = Q diag(e) Q^T: Q = B exp(A - A^T) (B a fixed rotation, the
        data's eigenbasis after init_gaussian_skip), e = exp(log_e)."""
        raw = SKIP_SCALE * self.gauss_rotation
        return self.gauss_basis @ torch.linalg.matrix_exp(0.5 * (raw - raw.T)), torch.exp(SKIP_SCALE * self.gauss_log_var)

    @torch.no_grad()
    def init_gaussian_skip(self, covariance: Tensor) -> None:
        """Start the Gaussian skip at N(0, covariance): its eigenbasis becomes B, its eigenvalues e (at least
        1e-4). The skew part's gradient vanishes where e is isotropic (S = I), so a skip started at I must
        find correlated data's basis from noise first: in 64 dimensions 4,000 steps left a tangent direction
        of variance 5.8 at 0.12."""
        values, vectors = torch.linalg.eigh(covariance.double())
        self.gauss_basis.copy_(vectors)
        self.gauss_log_var.copy_(values.clamp(min=1e-4).log() / SKIP_SCALE)
        self.gauss_rotation.zero_()

    def first_layer(self, x: Tensor, t: Tensor) -> Tensor:
        """Layer 1's pre-activation x W_x^T + (b + emb(t) W_t^T), the time part evaluated once per distinct time:
        the rows of a sampler's step, or of each step a loss reads, share one t."""
        first, d = self.net[0], self.config.dim
        times, index = distinct_times(t.reshape(-1))
        bias = torch.addmm(first.bias, self.time_embedding(times, x.dtype), first.weight[:, d:].T)
        return torch.addmm(bias if index is None else bias[index], x, first.weight[:, :d].T)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.first_layer(x, t)
        for layer in islice(self.net, 1, None):  # (a slice of the Sequential would build a new one per call)
            out = layer(out)
        skip = self.skip(x, t)
        return out if skip is None else out + skip

    def eps_and_vjp(self, x: Tensor, t: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """eps(x, t) (no graph) and v -> J_eps(x)^T v by hand (reverse mode through the Linear / SiLU layers,
        the pre-activations kept from the forward pass); for a net of Linear and SiLU layers only."""
        with torch.no_grad():
            pres, h = [], self.first_layer(x, t)
            for layer in islice(self.net, 1, None):
                if isinstance(layer, nn.SiLU):
                    pres.append(h)
                h = layer(h)
            skip = self.skip(x, t)
        eps = h if skip is None else h + skip
        linears = [m for m in self.net if isinstance(m, nn.Linear)]

        @torch.no_grad()
        def vjp(v: Tensor) -> Tensor:
            g = v @ linears[-1].weight
            for pre, layer in zip(reversed(pres), reversed(linears[:-1])):
                g = torch.ops.aten.silu_backward(g, pre)
                g = g @ (layer.weight if layer is not linears[0] else layer.weight[:, :self.config.dim])
            back = self.skip(v, t, transpose=True)
            return g if back is None else g + back

        return eps, vjp


def is_plain_mlp(model) -> bool:
    """An MLPNoisePredictor of Linear and SiLU layers only: what eps_and_vjp and the density's forward-mode
    path differentiate by hand (anything else goes through autograd)."""
    return type(model) is MLPNoisePredictor and all(isinstance(m, (nn.Linear, nn.SiLU)) for m in model.net)


def distinct_times(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """(times, index) with t = times[index], runs of equal t collapsed; index None when one time serves every
    row (broadcast) or when the times barely repeat (training's random t: each row its own)."""
    if t.numel() <= 1 or t.stride(0) == 0 or bool((t == t[0]).all()):  # (stride 0: one time expanded)
        return t[:1], None
    times, index = torch.unique_consecutive(t, return_inverse=True)
    return (times, index) if 4 * times.numel() <= t.numel() else (t, None)
