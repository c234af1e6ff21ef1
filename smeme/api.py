"""S-MEME rounds on a researcher's own noise predictor, without run folders.

    import smeme
    tuned = smeme.explore_rounds(model, lam=0.1, rounds=3)   # [TunedRound(round, model, metrics), ...]

`model` is a smeme NoisePredictor (forward(x, t) = eps, `.schedule`, `.sample_shape`), any
torch.nn.Module with `eps(x, t)` (pass `schedule` and `sample_shape` unless it has them),
or the path of a local diffusers UNet2DModel folder (smeme.images.unet.load_unet_folder; its
scheduler's alphas_cumprod is the schedule). t is continuous in [0, 1] (0 = data) with the
schedule's ab(t); a DiscreteSchedule maps it onto a diffusers timestep table.

The rounds are smeme.explore's round loop (drive_rounds) with the point kind's reward and
checks, kept in memory: round k tunes a copy of round k-1 with the reward
r_k = -lam_k log p_{k-1}(x, t_r) (ExploreConfig), and nothing is written to disk. The
caller's `metrics(model, k) -> dict` measures each round (default: none beyond the solver's);
it and the results get the caller's own module.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .explore import ExploreConfig, ExploreError, PointRounds, drive_rounds
from .models.base import NoisePredictor


@dataclass
class TunedRound:
    """One finished round: its number, the tuned model (eval mode; the caller's own module
    class when it came with eps(x, t)) and its metrics record."""
    round: int
    model: NoisePredictor
    metrics: dict


class EpsModule(NoisePredictor):
    """A module with eps(x, t) (and a schedule) as a NoisePredictor: forward is its eps."""

    def __init__(self, module: torch.nn.Module, schedule, sample_shape):
        super().__init__()
        self.module, self.schedule, self.sample_shape = module, schedule, tuple(int(d) for d in sample_shape)

    def forward(self, x, t):
        return self.module.eps(x, t)


def own_model(model):
    """The caller's module behind an EpsModule (anything else as it is)."""
    return model.module if isinstance(model, EpsModule) else model


def noise_predictor(model, schedule=None, sample_shape=None) -> NoisePredictor:
    """`model` as the NoisePredictor the solvers drive (see the module docstring)."""
    if isinstance(model, (str, os.PathLike)):
        from .models.registry import build_model

        model = build_model({"kind": "unet2d_folder", "folder": os.fspath(model)}, schedule)
    if not isinstance(model, torch.nn.Module):
        raise ExploreError(f"The model must be a torch.nn.Module or a diffusers UNet folder, got {type(model).__name__}.")
    schedule = schedule if schedule is not None else getattr(model, "schedule", None)
    shape = sample_shape if sample_shape is not None else getattr(model, "sample_shape", None)
    if schedule is None or not hasattr(schedule, "ab"):
        raise ExploreError("The model needs a noise schedule with ab(t) (pass schedule=..., e.g. smeme.schedule.VPSchedule()).")
    if shape is None:
        raise ExploreError("The model needs the shape of one sample (pass sample_shape=..., e.g. (2,)).")
    if isinstance(model, NoisePredictor) and not hasattr(model, "eps"):
        model.schedule, model.sample_shape = schedule, tuple(shape)
        return model
    if not callable(getattr(model, "eps", None)):
        raise ExploreError("The model must be a smeme NoisePredictor or have an eps(x, t) method.")
    return EpsModule(model, schedule, shape)


class _MemoryRun:
    """The rounds of one explore_rounds call, in memory (what PointRounds reads of a run)."""

    def __init__(self, model: NoisePredictor):
        self.models, self.records = {0: copy.deepcopy(model).eval()}, {0: {}}

    def rounds(self) -> list[int]:
        return sorted(self.models)

    @property
    def latest_round(self) -> int:
        return max(self.models)

    def load_model(self, k: int):
        return copy.deepcopy(self.models[k]).eval()

    def metrics(self) -> dict:
        return dict(self.records)

    def save_round(self, k: int, model, metrics: dict) -> None:
        self.models[k], self.records[k] = copy.deepcopy(model).eval(), dict(metrics)

    def lock(self):
        return contextlib.nullcontext()


class MemoryRounds(PointRounds):
    """The point kind of round on a _MemoryRun: no data domain, so the caller measures."""

    def __init__(self, run: _MemoryRun, config: ExploreConfig, metrics: Callable | None = None):
        super().__init__(run, config)
        self.user_metrics = metrics

    def valid_fn(self):
        return None  # no support to filter on

    def measure(self, model, k: int, lam_history: list, logp: bool | None = None) -> dict:
        return dict(self.user_metrics(own_model(model), k)) if self.user_metrics is not None else {}

    def check_support(self, k: int, metrics: dict, lam_history: list) -> None:
        """No data domain: no on-support share to guard."""


def explore_rounds(model, schedule=None, *, lam: float = 0.1, rounds: int = 3, config: ExploreConfig | None = None,
                   sample_shape=None, metrics: Callable | None = None, on_iteration=None, on_round=None,
                   cancel=None) -> list[TunedRound]:
    """`rounds` S-MEME rounds from `model` (pi_0, never changed); returns each tuned round.

    config: every ExploreConfig setting (its lam wins over `lam`); metrics(model, k) -> dict
    measures round k; on_iteration(k, i, total, loss) and on_round(k, metrics) report progress.
    Raises ExploreError for bad input or a rejected (diverged) round.
    """
    config = config or ExploreConfig(lam=lam)
    if not isinstance(rounds, int) or rounds < 1:
        raise ExploreError(f"The number of rounds must be at least 1, got {rounds}.")
    run = _MemoryRun(noise_predictor(model, schedule, sample_shape))
    done = drive_rounds(MemoryRounds(run, config, metrics), rounds, on_iteration, on_round, cancel)
    return [TunedRound(k, own_model(run.models[k]), run.records[k]) for k in done]
