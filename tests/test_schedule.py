"""Discrete (diffusers) schedules: the sampler's last step lands on the data (issue 14, item 7)."""
from __future__ import annotations

import torch

from smeme.models.analytic import GaussianMixtureModel
from smeme.sampling import ddpm_coefficients, sample, time_grid
from smeme.schedule import DiscreteSchedule


def sd15_schedule() -> DiscreteSchedule:
    """Stable Diffusion 1.5's table (scaled-linear betas 0.00085..0.012), built in code."""
    from diffusers import DDPMScheduler

    return DiscreteSchedule.from_scheduler(DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                                         beta_start=0.00085, beta_end=0.012))


def test_discrete_schedule_ends_at_the_data():
    schedule = sd15_schedule()
    assert float(schedule.alphas_cumprod[0]) < 0.9992  # the table's first entry is already noisy
    assert float(schedule.ab(torch.tensor([0.0]))) == 1.0
    # just above t = 0 the table itself is read (no jump inside the table)
    t = torch.tensor([1e-9], dtype=torch.float64)
    assert abs(float(schedule.ab(t)) - float(schedule.alphas_cumprod[0])) < 1e-9
    grid = time_grid(50, dtype=torch.float64)
    _, _, std = ddpm_coefficients(schedule.ab(grid[:-1]), schedule.ab(grid[1:]))
    assert float(std[-1]) == 0.0 and bool((std[:-1] > 0).all())


def test_ddpm_on_a_point_mass_lands_on_it():
    """Data at one point: an exact model's clean estimate is that point from any x_t, so the
    samples must sit on it. Ending at the table's first entry instead leaves N(sqrt(ab_0) mu,
    1 - ab_0), a spread of 0.029 for SD 1.5."""
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    model = GaussianMixtureModel([1.0], mu, torch.eye(2, dtype=torch.float64) * 1e-10, sd15_schedule())
    x = sample(model, 2000, steps=50, seed=3)
    assert (x - mu).abs().max() < 1e-3, float((x - mu).abs().max())
