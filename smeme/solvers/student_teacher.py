"""The blog's simplified solver ("student-teacher"), kept to compare with Adjoint Matching.

On forward-noised samples x_t = sqrt(ab) x_0 + sqrt(1 - ab) z of the previous round's
valid samples x_0 (drawn once per call from the teacher = model_base), minimise
    lam_prox |s_student - s_teacher|^2 - beta <s_student - s_teacher, g(x_t)> 1[t <= t_near]
with g = grad r (for S-MEME, -lam s_prev(x, t_r); the blog used -s_teacher(x_t, t)).
Per point the minimiser is s_student = s_teacher + beta g / (2 lam_prox) near the data
and s_teacher elsewhere, so beta = 2 lam_prox (the default) sets the near-data score to
s_teacher + grad r. It only reshapes the score near the data end: it spreads mass
locally but moves little mass between separated regions.

We multiply each point's loss by (1 - ab(t)) (same minimiser) so that it reads in eps
units: lam_prox |d_eps|^2 + beta sqrt(1 - ab) <d_eps, g> 1[t <= t_near], d_eps = eps_s - eps_t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..config import ConfigBase
from ..models.base import NoisePredictor, expand_like
from ..optim import Adam
from ..sampling import FixedNoise, sample_ddpm, time_grid
from .base import (CancelFlag, IterationFn, RewardGrad, SolverDivergedError, SolverError, SolverResult,
                   check_finite_params, is_cancelled, model_dtype_device, optimiser_step, trainable_parameters)

ValidFn = Callable[[Tensor], Tensor]  # x (B, *shape) in model space -> bool (B,)


@dataclass
class StudentTeacherConfig(ConfigBase):
    """Settings of one student-teacher solve (module docstring's loss).

    Args:
        iterations (`int`, defaults to 20): Solver iterations.
        samples (`int`, defaults to 4096):
            Previous-round samples x_0 drawn once per call, then filtered by `valid_fn`.
        steps (`int`, defaults to 50): DDPM steps used to draw them.
        adam_steps (`int`, defaults to 8): Adam steps per iteration.
        batch_size (`int`, defaults to 1024): Forward-noised points per Adam step.
        lr (`float`, defaults to 1e-3): Adam's learning rate.
        lam_prox (`float`, defaults to 0.5): Weight of the proximity term |s_student - s_teacher|^2.
        beta (`float`, defaults to 1.0):
            Weight of the direction term; beta = 2 lam_prox moves the near-data score by grad r.
        t_near (`float`, defaults to 0.05): The direction term acts for t <= t_near.
        near_fraction (`float`, defaults to 0.5): Share of each batch drawn with t <= t_near.
        t_min (`float`, defaults to 1e-3): Smallest diffusion time drawn, in (0, t_near).
        clip_grad_norm (`float`, *optional*, defaults to 1.0): Maximum global gradient norm. None: no clipping.
        seed (`int`, defaults to 0): Seed of the sample pool and the batches.
    """
    config_error, config_label = SolverError, "student-teacher"
    iterations: int = 20
    samples: int = 4096
    steps: int = 50
    adam_steps: int = 8
    batch_size: int = 1024
    lr: float = 1e-3
    lam_prox: float = 0.5
    beta: float = 1.0
    t_near: float = 0.05
    near_fraction: float = 0.5
    t_min: float = 1e-3
    clip_grad_norm: float | None = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.iterations < 1 or self.adam_steps < 1 or self.batch_size < 1 or self.samples < 2:
            raise SolverError("Student-teacher needs iterations, adam_steps, batch_size >= 1 and samples >= 2.")
        if not (self.lr > 0 and self.lam_prox > 0 and self.beta >= 0):
            raise SolverError("Student-teacher needs lr > 0, lam_prox > 0 and beta >= 0.")
        if not 0 < self.t_min < self.t_near <= 1 or not 0 <= self.near_fraction <= 1:
            raise SolverError("Student-teacher needs 0 < t_min < t_near <= 1 and near_fraction in [0, 1].")


def student_teacher(model_ft: NoisePredictor, model_base: NoisePredictor, reward_grad: RewardGrad,
                    config: StudentTeacherConfig | None = None, sampling_model: NoisePredictor | None = None,
                    on_iteration: IterationFn | None = None, cancel: CancelFlag | None = None,
                    valid_fn: ValidFn | None = None) -> SolverResult:
    """Fine-tune `model_ft` (student) against the frozen `model_base` (teacher); returns a
    SolverResult with the mean loss per iteration (no convergence signal). `sampling_model` (default model_base) draws the x_0 pool;
    `valid_fn` keeps only valid (on-support) samples."""
    cfg = config or StudentTeacherConfig()
    params = trainable_parameters(model_ft)
    dtype, device = model_dtype_device(model_ft)
    shape = tuple(model_ft.sample_shape)
    sched = model_base.schedule
    g = torch.Generator().manual_seed(int(cfg.seed))
    noise = FixedNoise.from_seed(cfg.seed * 1_000_003 + 17, cfg.samples, shape, cfg.steps, dtype=dtype, device=device)
    with torch.no_grad():
        pool = sample_ddpm(sampling_model or model_base, noise, grid=time_grid(cfg.steps, device=device, dtype=dtype))
    keep = torch.isfinite(pool.reshape(len(pool), -1)).all(1)
    if valid_fn is not None:
        keep &= torch.as_tensor(valid_fn(pool), dtype=torch.bool, device=keep.device)
    pool = pool[keep]
    if len(pool) < 2:
        raise SolverError("Student-teacher found fewer than 2 valid samples of the previous round to learn from.")
    opt = Adam(params, lr=cfg.lr)
    losses: list[float] = []
    for it in range(cfg.iterations):
        if is_cancelled(cancel):
            break
        total = 0.0
        for _ in range(cfg.adam_steps):
            idx = torch.randint(len(pool), (cfg.batch_size,), generator=g).to(pool.device)
            x0 = pool[idx]
            u = torch.rand(cfg.batch_size, generator=g, dtype=torch.float64)
            near = torch.rand(cfg.batch_size, generator=g) < cfg.near_fraction
            t = torch.where(near, cfg.t_min + u * (cfg.t_near - cfg.t_min), cfg.t_min + u * (1 - cfg.t_min))
            t = t.to(device=device, dtype=dtype)
            ab = expand_like(sched.ab(t), x0)
            z = torch.randn(x0.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * z  # forward-noised previous-round samples
            with torch.no_grad():
                eps_t = model_base(xt, t)
                direction = reward_grad(xt).to(dtype) * expand_like((t <= cfg.t_near).to(dtype), xt)
            if not torch.isfinite(direction).all():
                raise SolverDivergedError(f"The reward gradient is NaN/inf at iteration {it + 1}.")
            d_eps = model_ft(xt, t) - eps_t
            # (1 - ab) [lam_prox |d_s|^2 - beta <d_s, g> 1[t <= t_near]],  d_s = -d_eps / sqrt(1 - ab)
            per = (cfg.lam_prox * d_eps.pow(2) + cfg.beta * (1 - ab).sqrt() * d_eps * direction)
            loss = per.reshape(len(per), -1).sum(1).mean()
            if not torch.isfinite(loss):
                raise SolverDivergedError(f"The student-teacher loss became NaN/inf at iteration {it + 1}.")
            optimiser_step(opt, loss, params, cfg.clip_grad_norm, f"at iteration {it + 1}")
            total += float(loss.detach())
        check_finite_params(params, f"at iteration {it + 1}")
        losses.append(total / cfg.adam_steps)
        if on_iteration is not None:
            on_iteration(it + 1, cfg.iterations, losses[-1])
    return SolverResult(model=model_ft, losses=losses)
