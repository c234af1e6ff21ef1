"""MLP noise predictor with a sinusoidal time embedding (tiny-diffusion style)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..schedule import Schedule
from .base import NoisePredictor


@dataclass
class MLPConfig:
    dim: int
    width: int = 128
    depth: int = 3
    time_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    # Transformer-style features sin/cos(t * 10000^(-k/half)), t already scaled to ~[0, 1000]
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class MLPNoisePredictor(NoisePredictor):
    def __init__(self, config: MLPConfig, schedule: Schedule):
        super().__init__()
        if config.dim < 1 or config.width < 1 or config.depth < 1 or config.time_dim < 2:
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

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(self.schedule.timestep(t).to(x.dtype), self.config.time_dim)
        return self.net(torch.cat([x, emb], dim=1))
