"""The one model interface: a noise predictor eps(x, t) plus its schedule."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..schedule import Schedule


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector (B,) so it broadcasts against x (B, ...)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


class NoisePredictor(nn.Module):
    """eps(x, t) with continuous t in [0, 1] of shape (B,), and its `schedule`.

    `sample_shape` is the shape of one sample (e.g. (2,) or (1, 8, 8)).
    """

    schedule: Schedule
    sample_shape: tuple[int, ...]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def score(model: NoisePredictor, x: Tensor, t: Tensor) -> Tensor:
    # s(x, t) = -eps(x, t) / sqrt(1 - ab(t))
    ab = expand_like(model.schedule.ab(t), x)
    return -model(x, t) / torch.sqrt(1 - ab)


def as_time(t, n: int, like: Tensor) -> Tensor:
    """A scalar or (B,) time as a (B,) tensor on like's device and dtype."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(n) if t.dim() == 0 else t
