"""S-MEME outer loop (paper Algorithm 1): rounds of fine-tuning with the entropy reward.

pi_0 is the pre-trained model; round k = 1..K fine-tunes pi_{k-1} with the reward
r_k(x) = -lam_k log p_{k-1}(x), whose gradient needs no density:
    grad r_k(x) = -lam_k s_{k-1}(x)                       (reward='previous', the paper's)
or, using p_{k-1} ~ p_0^{prod_{i<k}(1 - lam_i)} (exact if every round reached its tilt),
    grad r_k(x) = -lam_k prod_{i<k}(1 - lam_i) s_0(x)      (reward='pretrained').
The exact round is the KL-regularised tilt p_k ~ p_{k-1} exp(r_k) = p_{k-1}^(1 - lam_k).
lam schedule: 'constant' lam_k = lam, or 'decreasing' lam_k = lam / k^lam_power with
0.5 < lam_power <= 1, so sum lam_k = inf and sum lam_k^2 < inf (Robbins-Monro, paper s.6).

The score is read from the network at t_r (0.05 by default), where it is accurate:
- reward_target 'data' (default) deconvolves it to the data end (density.deconvolved_score),
  giving the paper's reward -lam log p_{k-1}(x), exact wherever p_{k-1} is locally Gaussian;
- reward_target 'smoothed' uses s(x, t_r) as it is: the reward is -lam log p_{k-1}(x, t_r),
  whose exact round is p_{k-1} p_{k-1}(., t_r)^-lam, a different target (image rounds, whose
  deconvolution would need the score's Jacobian over every pixel, use it).
The likelihood-ratio term also needs the reward's values: the frozen previous model's PF-ODE
density at t_r, plus the deconvolution's local correction for 'data' (smeme.reward.RoundReward).

The tuned network models the round's tilt (the solver regresses in score units), so the next
round reads its reward from that network's score. Each round's metrics carry the solver's
result (SolverResult.round_metrics): the likelihood-ratio weights' health, convergence.

Contract: each finished round is checked (finite weights, on-support share not down by more
than max_validity_drop against the previous round) and saved at once with the metrics that define it
(smeme.metrics.sample_metrics; the PF-ODE ones follow the commit, smeme.deferred); a
rejected round raises ExploreError and leaves the previous round as the latest. One round
loop serves every kind of round: drive_rounds asks a RoundKind for round k's problem (frozen
base, tuned copy, reward, solver settings), solves it, and hands the result back to the kind
to check, measure and save. PointRounds is the kind of smeme.store's point and digits runs
(run_rounds); Stable Diffusion (smeme.images.sd_explore) and the in-memory public API
(smeme.api) add their own.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor

from .config import ConfigBase
from .models.base import NoisePredictor
from .reward import RoundReward
from .solvers import (AdjointMatchingConfig, SolverDivergedError, SolverError, SolverResult, StudentTeacherConfig,
                      adjoint_matching, student_teacher)

IterationCallback = Callable[[int, int, int, float], None]  # (round, iteration, total, loss)
RoundCallback = Callable[[int, dict], None]  # (round, metrics)
SOLVERS = ("adjoint", "student-teacher")
REWARD_TARGETS = ("data", "smoothed")


class ExploreError(ValueError):
    """Bad explore input, or a rejected round (one clear sentence)."""


@dataclass
class ExploreConfig(ConfigBase):
    """Settings of S-MEME rounds (point data and digits runs, and the public API's rounds).

    Args:
        lam (`float`, defaults to 0.1):
            lambda = 1/alpha, the mirror-descent step: round k's exact target is p_{k-1}^(1 - lam). In (0, 1); 1 only
            with `allow_lam_one`.
        lam_schedule (`str`, defaults to `"constant"`):
            `"constant"` (lam every round) or `"decreasing"` (lam / k^lam_power in round k).
        lam_power (`float`, defaults to 0.6): Exponent of the decreasing schedule, in (0.5, 1] (Robbins-Monro).
        solver (`str`, defaults to `"adjoint"`): `"adjoint"` (Adjoint Matching) or `"student-teacher"`.
        iterations (`int`, defaults to 15):
            Solver iterations per round, each on fresh trajectories: the round's budget.
        trajectories (`int`, defaults to 1024): Trajectories sampled per solver iteration.
        steps (`int`, defaults to 50): DDPM steps of each trajectory.
        adam_steps (`int`, defaults to 2): Adam steps per iteration on the same trajectories.
        lr (`float`, *optional*):
            The solver's learning rate. None (default): 2e-3 * sqrt(lam_k / 0.3), since Adam's iterate noise is ~lr
            while the control to learn grows with lam.
        likelihood_ratio_share (`float`, defaults to 0.8):
            Share of the stochastic steps, the earliest, that also regress onto the likelihood-ratio target (one
            PF-ODE solve of the reward's values per iteration); 0 turns the term off (Adjoint Matching alone).
            A round turns it off above likelihood_ratio_max_features.
        likelihood_ratio_max_features (`int`, *optional*, defaults to 3):
            The most features D of a model whose rounds run the likelihood-ratio term, which also needs
            exp(-lam_k^2 D / 2), its weights' effective sample share at a Gaussian round's exact control, to be at
            least ess_fallback (`likelihood_ratio_share_at`). None: any D.
        alone_iterations (`float`, defaults to 1.5): Factor on `iterations` (rounded up) where `budget_at` raises it.
        alone_adam_steps (`int`, defaults to 6): Adam steps per iteration (at least `adam_steps`) there.
        reward_ode_steps (`int`, defaults to 8):
            The most RK4 steps of the PF-ODE that gives the reward's values (at least 2).
        reward_values_tolerance (`float`, *optional*, defaults to 0.002):
            Total variation between the self-normalised weights exp(r) of the first solver iteration's samples read
            with reward_ode_steps and with half as many, below which the round reads its reward values with half as
            many (halving again while the total variation to the full-step weights stays below it, down to 2 steps).
            None: always reward_ode_steps.
        adjoint_weight_on_lr_steps (`float`, defaults to 0.0):
            Weight of the Adjoint Matching term on the steps the likelihood-ratio term covers; 0 leaves those steps to
            the likelihood-ratio term (the lean adjoint is heavy-tailed there) and skips their backward pass.
        likelihood_ratio_target (`str`, defaults to `"current"`):
            The likelihood-ratio term's target: `"current"` J_i^T E*[zeta_i | x_i] = std_i grad V_i (exact in closed
            form, one base VJP per selected step), or `"next"` E*[zeta_i | x_i] (off by J_i^-T; no VJP).
        ess_fallback (`float`, *optional*, defaults to 0.5):
            A likelihood-ratio step whose weights' effective sample size is below this share of the trajectories
            (in (0, 1)) leaves that term in that iteration and the Adjoint Matching term takes the step in full,
            instead of all the term's steps being tempered to a smaller tilt (in 16-64 dimensions the weights'
            share is small and tempering under-tilts). None: temper (the solver's `ess_floor`).
        outlier_mode (`str`, defaults to `"off"`):
            Adjoint Matching's outlier rule: `"off"`, `"drop"` (the official code's) or `"scale"`.
        weight_ema (`float`, *optional*, defaults to 0.9):
            EMA decay of the tuned weights over the iterations after `average_start`; the round keeps the average.
            None: the last iterate.
        average_start (`float`, defaults to 0.5):
            Share of the iterations before the weight average starts (a tail average, past the iterates whose control
            is still growing).
        t_r (`float`, defaults to 0.05):
            Diffusion time, in (0, 1), at which the previous round's score gives the reward; the solver's loss fits
            the tuned score well only from t ~ 0.03 up.
        reward_target (`str`, defaults to `"data"`):
            `"data"`: the paper's r = -lam log p_{k-1}(x), read at t_r and deconvolved (exact where p_{k-1} is locally
            Gaussian); `"smoothed"`: r = -lam log p_{k-1}(x, t_r), a different target, p_{k-1} p_{k-1}(., t_r)^-lam,
            which is the paper's only where every direction and mode is much wider than sqrt(1 - ab(t_r)) (0.17 at
            t_r = 0.05).
        reward (`str`, defaults to `"previous"`):
            `"previous"`: the gradient from round k-1's score (the paper's); `"pretrained"`: from round 0's, scaled by
            prod_{i<k}(1 - lam_i) (module docstring).
        score_clip (`float`, *optional*):
            Caps |s(x, t_r)| per sample at score_clip / sqrt(1 - ab(t_r)). None (default): off.
        seed (`int`, defaults to 0): Seed of the solver's noise; round k's solver gets seed * 10,007 + k.
        allow_lam_one (`bool`, defaults to False):
            Allows lam = 1 (Theorem 5.2's one-step case, which needs a compact support).
        max_validity_drop (`float`, defaults to 0.2):
            A round whose on-support share falls by more than this (a share, 0.2 = 20 points) below the previous
            round's is rejected.
        metrics_n (`int`, defaults to 4096): Samples drawn for each round's metrics.
        metrics_logp (`bool`, defaults to False):
            Computes the PF-ODE cross-entropy and surprise (~7x the other metrics' cost) before the round commits,
            into its record; False leaves them for after the commit (smeme.deferred: `smeme metrics`, the app's
            background job), so a round is visible at once.
        solver_options (`dict`, defaults to `{}`):
            Any other `AdjointMatchingConfig` or `StudentTeacherConfig` field by name; it overrides the settings
            above.
    """
    config_error, config_label = ExploreError, "explore"
    lam: float = 0.1
    lam_schedule: str = "constant"
    lam_power: float = 0.6
    solver: str = "adjoint"
    iterations: int = 15
    trajectories: int = 1024
    steps: int = 50
    adam_steps: int = 2
    lr: float | None = None
    likelihood_ratio_share: float = 0.8
    likelihood_ratio_max_features: int | None = 3
    alone_iterations: float = 1.5
    alone_adam_steps: int = 6
    reward_ode_steps: int = 8
    reward_values_tolerance: float | None = 0.002
    adjoint_weight_on_lr_steps: float = 0.0
    likelihood_ratio_target: str = "current"
    ess_fallback: float | None = 0.5
    outlier_mode: str = "off"
    weight_ema: float | None = 0.9
    average_start: float = 0.5
    t_r: float = 0.05
    reward_target: str = "data"
    reward: str = "previous"
    score_clip: float | None = None
    seed: int = 0
    allow_lam_one: bool = False
    max_validity_drop: float = 0.20
    metrics_n: int = 4096
    metrics_logp: bool = False
    solver_options: dict = field(default_factory=dict)

    def __post_init__(self):
        lam = self.lam
        if not isinstance(lam, (int, float)) or not math.isfinite(lam):
            raise ExploreError(f"lambda must be a number in (0, 1), got {lam!r}.")
        if lam == 1 and not self.allow_lam_one:
            raise ExploreError("lambda = 1 (Theorem 5.2's one-step case) needs a compact support; "
                               "allow it explicitly with allow_lam_one.")
        if not (0 < lam < 1 or lam == 1):
            raise ExploreError(f"lambda must lie in (0, 1), got {lam}.")
        if self.lam_schedule not in ("constant", "decreasing"):
            raise ExploreError(f"The lambda schedule must be 'constant' or 'decreasing', got {self.lam_schedule!r}.")
        if self.lam_schedule == "decreasing" and not 0.5 < self.lam_power <= 1:
            raise ExploreError(f"lam_power must lie in (0.5, 1] (Robbins-Monro), got {self.lam_power}.")
        if self.solver not in SOLVERS:
            raise ExploreError(f"The solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}.")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ExploreError(f"The budget must be at least 1 solver iteration per round, got {self.iterations}.")
        if self.trajectories < 2 or self.steps < 2 or self.adam_steps < 1 or (self.lr is not None and not self.lr > 0):
            raise ExploreError("Explore needs trajectories >= 2, steps >= 2, adam_steps >= 1 and lr > 0 (or None).")
        most = self.likelihood_ratio_max_features
        if most is not None and not (isinstance(most, int) and not isinstance(most, bool) and most >= 1):
            raise ExploreError(f"likelihood_ratio_max_features must be an integer >= 1 (or None), got {most!r}.")
        if not (self.alone_iterations >= 1 and isinstance(self.alone_adam_steps, int) and self.alone_adam_steps >= 1):
            raise ExploreError("alone_iterations must be >= 1 and alone_adam_steps an integer >= 1, got "
                               f"{self.alone_iterations!r} and {self.alone_adam_steps!r}.")
        if not 0 < self.t_r < 1:
            raise ExploreError(f"t_r must lie in (0, 1), got {self.t_r}.")
        if not isinstance(self.reward_ode_steps, int) or self.reward_ode_steps < 2:
            raise ExploreError(f"reward_ode_steps must be an integer >= 2, got {self.reward_ode_steps!r}.")
        tol = self.reward_values_tolerance
        if tol is not None and not (isinstance(tol, (int, float)) and 0 <= tol < 1):
            raise ExploreError(f"reward_values_tolerance must lie in [0, 1) (or None), got {tol!r}.")
        if self.score_clip is not None and not self.score_clip > 0:
            raise ExploreError(f"score_clip must be positive (or None), got {self.score_clip}.")
        if self.reward_target not in REWARD_TARGETS:
            raise ExploreError(f"The reward target must be 'data' (the paper's) or 'smoothed', got {self.reward_target!r}.")
        if self.reward not in ("previous", "pretrained"):
            raise ExploreError(f"The reward must be 'previous' or 'pretrained', got {self.reward!r}.")
        if not 0 <= self.max_validity_drop <= 1:
            raise ExploreError(f"max_validity_drop must lie in [0, 1], got {self.max_validity_drop}.")
        self.solver_config(1)  # the solver's own checks (weight_ema, solver_options, ...), now not mid-run

    def lam_at(self, k: int) -> float:
        """lambda of round k >= 1."""
        if self.lam_schedule == "constant":
            return float(self.lam)
        return float(self.lam) / k ** self.lam_power  # sum = inf, sum of squares < inf

    @property
    def target_t_r(self) -> float:
        """The smoothing of each round's exact target (smeme.tilt's t_r): 0 for the paper's (reward_target
        'data'), t_r for the smoothed reward's."""
        return 0.0 if self.reward_target == "data" else float(self.t_r)

    def lr_at(self, k: int) -> float:
        """The solver's learning rate in round k >= 1."""
        return float(self.lr) if self.lr is not None else 2e-3 * math.sqrt(self.lam_at(k) / 0.3)

    def likelihood_ratio_share_at(self, k: int, dim: int | None) -> float:
        """likelihood_ratio_share for round k of a `dim`-feature model (None: as set): 0 above
        likelihood_ratio_max_features, where the term's noisy gradient lands Gaussian rounds further from
        their target than the adjoint term alone (README, "Known limits"), or where its weights cannot reach
        ess_fallback: at the exact control their effective share is at most exp(-lam^2 dim / 2)."""
        share = self.likelihood_ratio_share
        if dim is None or not share:
            return share
        most = self.likelihood_ratio_max_features
        healthy = self.ess_fallback is None or math.exp(-self.lam_at(k) ** 2 * dim / 2) >= self.ess_fallback
        return share if healthy and (most is None or dim <= most) else 0.0

    def lr_off_by_dimension(self, k: int, dim: int | None) -> bool:
        """Whether likelihood_ratio_share_at turns the term off for round k of a `dim`-feature model
        though the settings ask for it (a share forced through solver_options runs it)."""
        return (self.solver == "adjoint" and bool(self.likelihood_ratio_share)
                and not self.likelihood_ratio_share_at(k, dim) and "likelihood_ratio_share" not in self.solver_options)

    def budget_at(self, k: int, dim: int | None) -> tuple[int, int]:
        """(iterations, adam_steps) of round k of a `dim`-feature model: raised by alone_iterations and
        alone_adam_steps where the term is off by dimension (lr_off_by_dimension). Adjoint Matching alone
        tilts the widest whitened directions in optimiser steps, not with a larger lr or more trajectories
        (README, "Known limits"; BENCHMARKS.md, "Solver fidelity in 16-64 dimensions")."""
        if not self.lr_off_by_dimension(k, dim):
            return self.iterations, self.adam_steps
        return math.ceil(self.iterations * self.alone_iterations), max(self.adam_steps, self.alone_adam_steps)

    def solver_config(self, round_index: int, dim: int | None = None):
        """The solver's settings for round `round_index` (its seed, lr and explore's solver fields) of a
        model of `dim` features (likelihood_ratio_share_at and budget_at; None: the share and budget as set)."""
        seed = self.seed * 10_007 + round_index
        iterations, adam_steps = self.budget_at(round_index, dim)
        common = dict(iterations=iterations, adam_steps=adam_steps, steps=self.steps, seed=seed)
        try:
            if self.solver != "adjoint":
                return StudentTeacherConfig.from_dict({**common, **self.solver_options})
            settings = {**common, "trajectories": self.trajectories, "lr": self.lr_at(round_index),
                        "outlier_mode": self.outlier_mode, "weight_ema": self.weight_ema,
                        "average_start": self.average_start,
                        "likelihood_ratio_share": self.likelihood_ratio_share_at(round_index, dim),
                        "adjoint_weight_on_lr_steps": self.adjoint_weight_on_lr_steps,
                        "likelihood_ratio_target": self.likelihood_ratio_target, "ess_fallback": self.ess_fallback}
            return AdjointMatchingConfig.from_dict({**settings, **self.solver_options})
        except (SolverError, TypeError) as exc:
            raise ExploreError(f"Bad solver setting: {exc}") from None


def _frozen(model: NoisePredictor) -> NoisePredictor:
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prepare_models(prev: NoisePredictor):
    """(model_ft, model_base, sampling_model) for one round: a trainable copy of the previous
    round, the frozen previous round, and the sampler (default: model_ft)."""
    model_ft = copy.deepcopy(prev).train()
    for p in model_ft.parameters():
        p.requires_grad_(True)
    return model_ft, _frozen(prev), None


def _lam_history(run, config: ExploreConfig, k: int) -> list[float]:
    """lambdas of rounds 1..k: saved ones from earlier rounds' metrics, then the schedule."""
    saved = run.metrics()
    return [float(saved.get(i, {}).get("lam", config.lam_at(i))) for i in range(1, k)] + [config.lam_at(k)]


def _likelihood_ratio_record(config: ExploreConfig, solver_cfg, k: int, dim: int) -> dict:
    """The round's likelihood-ratio share as the solver ran it, and whether explore turned it off
    by dimension (ExploreConfig.lr_off_by_dimension)."""
    share = getattr(solver_cfg, "likelihood_ratio_share", None)
    if share is None:
        return {}
    return {"lr_share": share, "lr_off_by_dimension": config.lr_off_by_dimension(k, dim)}


def _finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _valid_fn(run):
    def valid(x):
        z = x.detach().to(torch.float64).cpu().numpy().reshape(len(x), -1)
        raw = run.domain.from_features(run.standardizer.inverse(z))
        return torch.as_tensor(np.asarray(run.domain.on_support(raw), dtype=bool))
    return valid


@dataclass
class RoundProblem:
    """One round as the solver sees it: what a kind of round hands the round loop."""
    model_ft: torch.nn.Module  # the tuned copy: starts at pi_{k-1}; its trainable parameters move
    model_base: torch.nn.Module  # the frozen pi_{k-1} (the adjoint's VJPs and eps_base)
    reward_grad: Callable  # x -> grad r_k(x)
    solver_cfg: object  # AdjointMatchingConfig | StudentTeacherConfig of this round
    lam: float  # lambda_k
    lam_history: list = field(default_factory=list)  # lambdas of rounds 1..k
    sampling_model: torch.nn.Module | None = None  # draws the trajectories (None: model_ft)
    reward_value: Callable | None = None  # x -> r_k(x) up to a constant (the likelihood-ratio term)
    valid_fn: Callable | None = None  # x -> on-support mask (student-teacher's filter)
    release: Callable | None = None  # called once the solver returns (e.g. a distributed wrapper dropped)
    reward_record: Callable | None = None  # () -> what the round's metrics keep of its reward values


class RoundKind(Protocol):
    """What drive_rounds needs from a kind of round (point data and digits here: PointRounds;
    Stable Diffusion: smeme.images.sd_explore.SDRounds; in memory: smeme.api.MemoryRounds)."""
    solver: str  # 'adjoint' | 'student-teacher'

    def lock(self): ...  # context manager held over all the rounds (the run's writer lock)

    def begin(self) -> int: ...  # the latest saved round, which the first new round tunes

    def problem(self, k: int) -> RoundProblem: ...  # round k's frozen base, tuned copy and reward

    def finish(self, k: int, problem: RoundProblem, result: SolverResult, seconds: float) -> dict: ...
    # checks, measures and saves round k with the metrics that define it; returns them (raises when
    # it is rejected). Metrics its run kind defers (run.deferred_metrics, a smeme.metrics.DeferredMetrics)
    # are left out: smeme.deferred computes them after the commit.

    def reject(self, k: int, reason: str) -> Exception: ...  # the kind's error for a diverged round

    def abandon(self, k: int) -> None: ...  # round k stopped mid-way: drop its half-tuned state


def drive_rounds(kind: RoundKind, rounds: int, on_iteration: IterationCallback | None = None,
                 on_round: RoundCallback | None = None, cancel=None) -> list[int]:
    """The one round loop (paper Algorithm 1): `rounds` rounds after kind.begin(), each solved,
    then finished (checked, measured, saved) by its kind; returns the round numbers saved.
    Stops cleanly between solver iterations when cancel.is_set() (the unfinished round is dropped)."""
    saved: list[int] = []
    with kind.lock():
        start = kind.begin()
        for k in range(start + 1, start + rounds + 1):
            if cancel is not None and cancel.is_set():
                break
            problem = kind.problem(k)
            cb = (lambda i, n, loss, k=k: on_iteration(k, i, n, loss)) if on_iteration else None
            t0 = time.perf_counter()
            try:
                result = solve_round(kind.solver, problem, cb, cancel)
            except SolverDivergedError as exc:
                kind.abandon(k)
                raise kind.reject(k, str(exc).rstrip(".")) from None
            finally:
                if problem.release is not None:
                    problem.release()
            solve_s = time.perf_counter() - t0
            if cancel is not None and cancel.is_set() and len(result.losses) < problem.solver_cfg.iterations:
                kind.abandon(k)
                break  # stopped mid-round: keep the finished rounds only
            metrics = kind.finish(k, problem, result, solve_s)
            saved.append(k)
            if on_round is not None:
                on_round(k, metrics)
    return saved


def solve_round(solver: str, problem: RoundProblem, cb, cancel) -> SolverResult:
    """Round k's solver run on `problem`: its result (losses, timings, health, convergence)."""
    model_ft, model_base, reward_grad, solver_cfg = (problem.model_ft, problem.model_base, problem.reward_grad,
                                                     problem.solver_cfg)
    sampling_model, reward_value = problem.sampling_model, problem.reward_value
    if solver == "adjoint":
        return adjoint_matching(model_ft, model_base, reward_grad, solver_cfg, sampling_model=sampling_model,
                                on_iteration=cb, cancel=cancel, reward_value=reward_value)
    return student_teacher(model_ft, model_base, reward_grad, solver_cfg, on_iteration=cb, cancel=cancel,
                           valid_fn=problem.valid_fn)


class PointRounds:
    """Rounds of a smeme.store run (point data, digits): full-model copies tuned with the score
    reward of the previous (or pre-trained) round; each round checked and saved with its metrics."""

    def __init__(self, run, config: ExploreConfig, prepare: Callable | None = None):
        self.run, self.config, self.prepare = run, config, prepare or prepare_models
        self.solver = config.solver
        self.prev = self.prev_metrics = self.pre = None

    def lock(self):
        return self.run.lock()

    def begin(self) -> int:
        run, config = self.run, self.config
        start = run.latest_round
        self.prev = run.load_model(start)
        self.pre = _frozen(run.load_model(0)) if config.reward == "pretrained" else None
        self.prev_metrics = run.metrics().get(start)
        return start

    def problem(self, k: int) -> RoundProblem:
        run, config, pre = self.run, self.config, self.pre
        lam_history = _lam_history(run, config, k)
        lam = lam_history[-1]
        model_ft, model_base, sampling_model = self.prepare(self.prev)
        if config.reward == "pretrained":  # grad r_k = -lam_k prod_{i<k}(1 - lam_i) s_0(x, t_r)
            scale, reward_model = lam * float(np.prod([1 - v for v in lam_history[:-1]])), pre
        else:  # grad r_k = -lam_k s_{k-1}(x, t_r)
            scale, reward_model = lam, model_base

        solver_cfg = config.solver_config(k, dim=math.prod(self.prev.sample_shape))
        reward = RoundReward(reward_model, scale, config, getattr(solver_cfg, "reward_cap_quantile", None))
        return RoundProblem(model_ft, model_base, reward.grad, solver_cfg, lam, lam_history,
                            sampling_model=sampling_model, reward_value=reward.value, valid_fn=self.valid_fn(),
                            reward_record=reward.record)

    def valid_fn(self):
        return _valid_fn(self.run)

    def measure(self, model, k: int, lam_history: list, logp: bool | None = None) -> dict:
        """Round k's metrics (smeme.metrics.round_metrics on the run's domain)."""
        from .metrics import round_metrics

        config = self.config
        return round_metrics(self.run, model, k, n=config.metrics_n,
                             logp=config.metrics_logp if logp is None else logp, lam_history=lam_history)

    def check_support(self, k: int, metrics: dict, lam_history: list) -> None:
        """Reject round k when its on-support share fell more than max_validity_drop."""
        config = self.config
        if self.prev_metrics is None or self.prev_metrics.get("on_support") is None:
            self.prev_metrics = self.measure(self.prev, k - 1, lam_history[:-1], logp=False)
        new_on, old_on = metrics.get("on_support"), self.prev_metrics.get("on_support")
        if new_on is None or (old_on is not None and new_on < old_on - config.max_validity_drop):
            raise ExploreError(
                f"Round {k} was rejected: its on-support share fell from {_pct(old_on)} to {_pct(new_on)} "
                f"(more than {config.max_validity_drop * 100:.0f} points); round {k - 1} stays the latest.")

    def finish(self, k: int, problem: RoundProblem, result: SolverResult, solve_s: float) -> dict:
        config, model_ft, losses = self.config, problem.model_ft, result.losses
        lam_history = problem.lam_history
        if not _finite(model_ft) or not all(math.isfinite(v) for v in losses):
            raise self.reject(k, "its loss or weights became NaN/inf")
        model_ft.eval()
        metrics = self.measure(model_ft, k, lam_history)
        self.check_support(k, metrics, lam_history)
        metrics.update({"lam": problem.lam, "lam_history": lam_history, "solver": config.solver,
                        "reward": config.reward, "t_r": config.t_r, "reward_target": config.reward_target,
                        "iterations": len(losses),
                        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                        "solver_seconds": round(solve_s, 3), "explore": config.to_dict(),
                        **_likelihood_ratio_record(config, problem.solver_cfg, k, math.prod(model_ft.sample_shape)),
                        **result.round_metrics(),
                        **(problem.reward_record() if problem.reward_record else {})})
        self.run.save_round(k, model_ft, metrics)
        self.prev, self.prev_metrics = model_ft, metrics
        return metrics

    def reject(self, k: int, reason: str) -> Exception:
        return ExploreError(f"Round {k} was rejected: {reason}; round {k - 1} stays the latest.")

    def abandon(self, k: int) -> None:
        """Nothing to drop: the tuned copy of an unfinished round is never saved."""


def run_rounds(run, rounds: int, config: ExploreConfig | None = None,
               on_iteration: IterationCallback | None = None, on_round: RoundCallback | None = None,
               cancel=None, prepare: Callable | None = None) -> list[int]:
    """Run `rounds` S-MEME rounds after run.latest_round; returns the round numbers saved.

    Stops cleanly between solver iterations when cancel.is_set() (the unfinished round is
    dropped). Raises ExploreError for bad input or a rejected round (earlier rounds stay).
    `prepare(prev) -> (model_ft, model_base, sampling_model)` overrides prepare_models
    (e.g. a LoRA adapter on an image model).
    """
    config = config or ExploreConfig()
    if not isinstance(rounds, int) or rounds < 1:
        raise ExploreError(f"The number of rounds must be at least 1, got {rounds}.")
    try:
        done_rounds = run.rounds()
    except Exception as exc:  # noqa: BLE001 - a store error names the problem
        raise ExploreError(f"Cannot read the run: {exc}") from None
    if 0 not in done_rounds:
        raise ExploreError("The run has no pre-trained round 0; pre-train it first.")
    return drive_rounds(PointRounds(run, config, prepare), rounds, on_iteration, on_round, cancel)


def _pct(v) -> str:
    return "unknown" if v is None else f"{100 * v:.1f}%"
