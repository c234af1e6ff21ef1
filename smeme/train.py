"""Pre-training by denoising score matching (eps-prediction), on standardised features.

Loss (DSM, Ho et al. eq. 14): E_{x0, t, z} | eps(sqrt(ab) x0 + sqrt(1 - ab) z, t) - z |^2.
Time sampling mixes uniform t with a share of small t (t = u^power): uniform t alone
blurred the sharp edges between support regions.
All randomness comes from one torch.Generator seeded by `seed`: same seed, same weights.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .config import ConfigBase
from .data.base import Dataset, Standardizer
from .optim import Adam
from .models.base import NoisePredictor, expand_like
from .schedule import Schedule, VPSchedule
from .threads import rebalance

ProgressFn = Callable[[int, int, float], None]  # (step done, total steps, loss)


@dataclass
class TrainConfig(ConfigBase):
    """Settings of denoising score-matching pre-training (module docstring's loss).

    Args:
        steps (`int`, defaults to 2000): Optimiser steps.
        batch_size (`int`, defaults to 512): Rows per step.
        lr (`float`, defaults to 3e-3): Adam's peak learning rate.
        warmup (`int`, defaults to 50): Steps of linear warm-up to `lr`, followed by cosine decay to lr x lr_final.
        lr_final (`float`, defaults to 0.02): The learning rate at the end, as a share of `lr`.
        ema (`float`, defaults to 0.0): EMA decay of the weights, in [0, 1); the EMA weights are returned. 0: off.
        seed (`int`, defaults to 0): Seed of all the training's randomness (same seed, same weights).
        small_t_fraction (`float`, defaults to 0.3):
            Share of each batch whose times are t = u^small_t_power (more small t).
        small_t_power (`float`, defaults to 2.0): That power.
        t_min (`float`, defaults to 1e-4): Smallest training time (ab(t) < 1 keeps the target defined).
        grad_clip (`float`, defaults to 1.0): Maximum global gradient norm. 0: no clipping.
    """
    config_error, config_label = ValueError, "training"
    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    warmup: int = 50
    lr_final: float = 0.02
    ema: float = 0.0
    seed: int = 0
    small_t_fraction: float = 0.3
    small_t_power: float = 2.0
    t_min: float = 1e-4
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"Training needs steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}.")
        if not self.lr > 0:
            raise ValueError(f"The learning rate must be positive, got {self.lr}.")
        if not 0 <= self.small_t_fraction <= 1:
            raise ValueError(f"small_t_fraction must lie in [0, 1], got {self.small_t_fraction}.")
        if not 0 <= self.ema < 1:
            raise ValueError(f"The EMA decay must lie in [0, 1), got {self.ema}.")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to cfg.lr_final."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def sample_times(n: int, cfg: TrainConfig, generator: torch.Generator) -> Tensor:
    """Uniform t on [t_min, 1], with a share of small t = u^power (kept in [t_min, 1])."""
    u = torch.rand(n, generator=generator)
    n_small = int(round(cfg.small_t_fraction * n))
    t = u.clone()
    t[:n_small] = u[:n_small] ** cfg.small_t_power
    return cfg.t_min + (1 - cfg.t_min) * t


def dsm_loss(model: NoisePredictor, x0: Tensor, t: Tensor, z: Tensor) -> Tensor:
    # x_t = sqrt(ab) x0 + sqrt(1 - ab) z;  loss = mean |eps(x_t, t) - z|^2
    ab = expand_like(model.schedule.ab(t), x0)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * z
    return ((model(xt, t) - z) ** 2).mean()


def _model_cfg(model_config) -> dict:
    if isinstance(model_config, dict):
        return dict(model_config)
    if hasattr(model_config, "to_dict"):  # an MLPConfig
        return {"kind": "mlp", **model_config.to_dict()}
    raise ValueError(f"Unsupported model configuration {model_config!r}.")


def train_model(model: NoisePredictor, data: Tensor, cfg: TrainConfig,
                progress: ProgressFn | None = None, cancel=None) -> dict:
    """DSM training of `model` in place on standardised data (n, *sample_shape)."""
    if data.shape[0] < 1:
        raise ValueError("Cannot train on an empty data set.")
    g = torch.Generator().manual_seed(int(cfg.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = Adam(params, lr=cfg.lr, foreach=True)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    losses: list[float] = []
    start = time.perf_counter()
    cancelled = False
    n = data.shape[0]
    model.train()
    for step in range(cfg.steps):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        rebalance()
        opt.param_groups[0]["lr"] = cfg.lr * lr_factor(step, cfg)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        x0 = data[idx]
        t = sample_times(cfg.batch_size, cfg, g).to(data.dtype)
        z = torch.randn(x0.shape, generator=g, dtype=data.dtype)
        loss = dsm_loss(model, x0, t, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            # EMA with a warm-up: decay_k = min(ema, (1 + k) / (10 + k))
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 1 - decay)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"Training diverged at step {step + 1} (loss {value}); lower the learning rate.")
        losses.append(value)
        if progress is not None:
            progress(step + 1, cfg.steps, value)
    if ema is not None and losses:
        model.load_state_dict(ema.state_dict())
    model.eval()
    return {"loss": losses, "steps_done": len(losses), "cancelled": cancelled,
            "seconds": time.perf_counter() - start}


def pretrain(dataset: Dataset, train_config: TrainConfig, model_config, run_folder=None,
             progress: ProgressFn | None = None, cancel=None, schedule: Schedule | None = None):
    """Standardise the data set's features and train a fresh model on them.

    Returns (model, standardizer, history). `run_folder` is accepted for the contract;
    saving is the caller's job (see smeme.pipeline.pretrain_run).
    """
    from .models.mlp import MLPNoisePredictor
    from .models.registry import build_model

    feat = np.asarray(dataset.features(), dtype=np.float64)
    if feat.ndim < 2 or feat.shape[0] < 2:
        raise ValueError(f"Training needs at least two rows of features, got shape {feat.shape}.")
    if not np.all(np.isfinite(feat)):
        raise ValueError("The data set's features contain NaN or infinite values.")
    standardizer = dataset.domain.fit_standardizer(feat)
    data = torch.as_tensor(standardizer.forward(feat), dtype=torch.float32)
    cfg = _model_cfg(model_config)
    if cfg.get("kind", "mlp") == "mlp":
        cfg.setdefault("dim", int(np.prod(feat.shape[1:])))
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG untouched
        torch.manual_seed(int(train_config.seed))
        model = build_model(cfg, schedule or VPSchedule())
    if isinstance(model, MLPNoisePredictor) and model.config.gaussian_skip:  # start at the data's Gaussian
        model.init_gaussian_skip(torch.cov(data.T.double()).reshape(data.shape[1], data.shape[1]))
    history = train_model(model, data, train_config, progress=progress, cancel=cancel)
    history["model_config"] = cfg
    return model, standardizer, history
