"""S-MEME outer loop (paper Algorithm 1): rounds of linear fine-tuning with the entropy reward.

pi_0 = the pre-trained model; for k = 1..K fine-tune pi_{k-1} with the reward
r_k(x) = -lam_k log p_{k-1}(x), whose gradient needs no density:
    grad r_k(x) = -lam_k s_{k-1}(x)                       (reward='previous', the paper's)
or, using p_{k-1} ~ p_0^{prod_{i<k}(1 - lam_i)} (exact if every round reached its tilt),
    grad r_k(x) = -lam_k prod_{i<k}(1 - lam_i) s_0(x)      (reward='pretrained').
lam schedule: 'constant' lam_k = lam, or 'decreasing' lam_k = lam / k^lam_power with
0.5 < lam_power <= 1, so sum lam_k = inf and sum lam_k^2 < inf (Robbins-Monro, paper s.6).
With reward_target 'data', the score at the data end, s(x) = grad log p(x), is read from the
network at t_r = 0.05 and deconvolved (density.deconvolved_score): the network is trained and
tuned where it is accurate (t_r 0.001 diverged at lam 0.3; the solver's loss fits a tuned
score only from t ~ 0.03 up), and the deconvolution removes the smoothing, exactly where
p_{k-1} is locally Gaussian. reward_target 'smoothed' (the default) reads s(x, t_r) as it is:
the reward -lam log p_{k-1}(x, t_r), whose target p_{k-1} p_{k-1, t_r}^-lam is a different one.
The solver's optional likelihood-ratio term (on by default) also needs the reward's values:
r_k(x) = -lam_k log p_{k-1}(x) from the frozen previous model's PF-ODE at t_r (smeme.density),
plus the deconvolution's local correction for 'data', which is what lets a round move mass
between separated modes (solvers/adjoint_matching.py).

The tuned network is a model of the round's tilt (the solver regresses in score units,
solvers/adjoint_matching.py step 3), so the next round reads its reward from that network's
score as users run it, and its samples, PF-ODE density and heatmaps all show the same model.
Each round's metrics carry the solver's result beside its solver seconds: its health (the
likelihood-ratio weights' effective sample size, how often they were tempered) and whether it
converged (solver_converged, solver_control_change; SolverResult.round_metrics).

Each finished round is checked (finite weights, on-support share not down by more than
max_validity_drop against the previous round) and saved at once with the metrics that define
it (smeme.metrics.sample_metrics); the PF-ODE ones are computed after the commit unless
metrics_logp asks for them first (smeme.deferred). A rejected round raises ExploreError and
leaves the previous round as the latest.

One round loop serves every kind of round: drive_rounds asks a RoundKind for round k's
problem (frozen base, tuned copy, reward, solver settings), solves it, and hands the result
back to the kind to check, measure and save. PointRounds is the kind of smeme.store's point
and digits runs (run_rounds); Stable Diffusion and the in-memory public API add their own.
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
from .density import deconvolved_score, log_prob
from .models.base import NoisePredictor, score
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
    config_error, config_label = ExploreError, "explore"
    lam: float = 0.1  # lambda = 1/alpha of the mirror-descent step
    lam_schedule: str = "constant"  # 'constant' | 'decreasing' (lam / k^lam_power)
    lam_power: float = 0.6
    solver: str = "adjoint"  # 'adjoint' | 'student-teacher'
    iterations: int = 15  # solver iterations per round (the budget)
    # Toy (two squares): with the lean adjoint alone, the mass moved between the squares is
    # carried by < 1% of the trajectories (those crossing the region where the base flow
    # decides between the squares; their lean adjoint grows ~60x backwards), and lam = 0.3
    # reached about half of the exact shift. Dropping outlier trajectories (the official
    # code's rule) moved no mass at all; with 'scale' the likelihood-ratio term below moved
    # half as much (its signal and the adjoint's heavy tail add up). The term carries the
    # signal on every trajectory. With it (lr 2e-3), 1,024 trajectories x 25 iterations left
    # round 1's sparse share (lam 0.1) at 0.091-0.113 over seeds 0-2 (exact tilt 0.098);
    # 2,048 x 15 gave 0.097-0.098 for seeds 0-3, in about the same time. With the adjoint term
    # off on the likelihood-ratio steps (adjoint_weight_on_lr_steps below) 1,024 trajectories
    # reach 0.94-1.06 (lam 0.1) and 0.87-1.03 (lam 0.3) of the exact log-odds shift (seeds 5-9)
    # in half the time of 2,048 (BENCHMARKS.md, issue 14).
    trajectories: int = 1024
    steps: int = 50
    adam_steps: int = 2
    # None: 2e-3 * sqrt(lam_k / 0.3). Adam moves the weights by ~lr a step whatever the
    # gradient's size, so the iterate noise is ~lr while the control to learn grows with lam.
    # Toy, 4 seeds x 2 pre-trained models, 3 rounds: lr 2e-3 met every bar at lam 0.3 (8/8) but
    # swung the sparse share +-20% at lam 0.1 (5/8); 1e-3 met 7/8 at lam 0.1 and under-tilted at
    # lam 0.3 (6/8, every round short).
    lr: float | None = None
    # Earliest share of the solver's stochastic steps that also regress onto the
    # likelihood-ratio target (needs r's values: a PF-ODE solve of reward_ode_steps RK4
    # steps per iteration, ~0.07 s for 1,024 toy samples). 0: Adjoint Matching alone.
    likelihood_ratio_share: float = 0.8
    # 8: with 6 steps, round 1 at lam 0.3 overshot in 2 of 3 seeds (sparse share 0.191-0.204 against
    # an exact 0.147; 8 steps: 0.131-0.147), though r at the squares' centres moved by only 0.02
    reward_ode_steps: int = 8
    # Weight of the Adjoint Matching term on the steps the likelihood-ratio term covers. Both
    # regress the same control, but there the lean adjoint is heavy-tailed (trajectories through
    # the toy's decision region carry it ~60x backwards) and swung one round's tilt by +-50%
    # between solver seeds (toy, lam 0.1, seeds 5-9: 0.49-1.46 of the exact log-odds shift); with
    # the likelihood-ratio term alone there 0.92-1.05. 0 also spares the backward pass over them.
    adjoint_weight_on_lr_steps: float = 0.0
    # The likelihood-ratio term's target: 'current' J_i^T E*[zeta_i | x_i] = std_i grad V_i, whose fixed
    # point is the exact tilt (one base VJP per selected step); 'next' E*[zeta_i | x_i] is off by J_i^-T
    # (over-tilts a linear reward's shift by 3-5% at explore's settings). 'next' is the default:
    # with 'current' trained Gaussian rounds land lower (d = 2: 0.86-0.89 of the exact gain, 0.93 with
    # 'next'), a gap not yet explained (README, "Known limits").
    likelihood_ratio_target: str = "next"
    outlier_mode: str = "off"  # Adjoint Matching's outlier rule ('off' | 'drop' (official code) | 'scale'); see above
    # Toy, lam 0.1: each iterate's sparse share swung over 0.08-0.14 (closed form 0.102); the
    # EMA of the weights after a 20% burn-in landed on 0.101-0.108 (seeds 0-3). None: off.
    weight_ema: float | None = 0.9
    # Share of the iterations before the average starts: a tail average. With a 20% burn-in the
    # average took in iterates whose control was still growing from zero and a trained Gaussian
    # CSV round reached 0.85-0.89 of its exact gain (d = 2 and 3); the later half holds iterates
    # that have converged, so the average removes their noise without that lag.
    average_start: float = 0.5
    # t_r = 0.05 (not 0.01): a smoother reward (noise scale ~4x wider) gives a less noisy tilt;
    # toy, lam 0.1: within 8% of the closed form per round; 0.07 and 0.1 under-tilted (0.07, lam 0.3: -24 to -37%).
    # The next round reads the tuned score at t_r, and the solver's loss (weight std_i^2 per step)
    # fits that score only from t ~ 0.03 up: at 0.01 a Gaussian round read 1.5x the exact change.
    t_r: float = 0.05  # time at which the previous round's score gives the reward gradient
    # 'data': the paper's reward -lam log p_{k-1}(x) at the data end, read from the score at t_r
    # and deconvolved (density.deconvolved_score: exact where p_{k-1} is locally Gaussian; a 5-D
    # Gaussian's direction of variance 0.06 gets its whole gain, where the smoothed reward's exact
    # tilt reaches 0.6 of it). 'smoothed': -lam log p_{k-1}(x, t_r), a different target,
    # p_{k-1} p_{k-1, t_r}^-lam, that equals the paper's only where every direction and mode is
    # much wider than sqrt(1 - ab(t_r)) (0.17 at 0.05); gentler at sharp support edges. The
    # default stays 'smoothed' until trained rounds reach the paper's target within the fidelity
    # tests' bars with 'data' (README, "Known limits").
    reward_target: str = "smoothed"
    reward: str = "previous"  # 'previous' (paper) | 'pretrained' (see module docstring)
    score_clip: float | None = None  # cap |s(x, t_r)| per sample at score_clip / sqrt(1 - ab(t_r)) (None: off)
    seed: int = 0
    allow_lam_one: bool = False
    max_validity_drop: float = 0.20  # reject a round whose on-support share drops more than this
    metrics_n: int = 4096  # samples each round's metrics are measured on
    # The PF-ODE cross-entropy and surprise (~7x the cost of the other metrics): True computes them
    # before each round commits, into its record; False (default) leaves them for after the commit
    # (smeme.deferred: `smeme metrics`, the app's background job), so a round is visible at once.
    metrics_logp: bool = False
    solver_options: dict = field(default_factory=dict)  # any other AdjointMatching/StudentTeacher setting

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
        if not 0 < self.t_r < 1:
            raise ExploreError(f"t_r must lie in (0, 1), got {self.t_r}.")
        if not isinstance(self.reward_ode_steps, int) or self.reward_ode_steps < 2:
            raise ExploreError(f"reward_ode_steps must be an integer >= 2, got {self.reward_ode_steps!r}.")
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

    def lr_at(self, k: int) -> float:
        """The solver's learning rate in round k >= 1."""
        return float(self.lr) if self.lr is not None else 2e-3 * math.sqrt(self.lam_at(k) / 0.3)

    def solver_config(self, round_index: int):
        """The solver's settings for round `round_index` (its seed, lr and explore's solver fields)."""
        seed = self.seed * 10_007 + round_index
        common = dict(iterations=self.iterations, steps=self.steps, adam_steps=self.adam_steps, seed=seed)
        try:
            if self.solver != "adjoint":
                return StudentTeacherConfig.from_dict({**common, **self.solver_options})
            settings = {**common, "trajectories": self.trajectories, "lr": self.lr_at(round_index),
                        "outlier_mode": self.outlier_mode, "weight_ema": self.weight_ema,
                        "average_start": self.average_start, "likelihood_ratio_share": self.likelihood_ratio_share,
                        "adjoint_weight_on_lr_steps": self.adjoint_weight_on_lr_steps,
                        "likelihood_ratio_target": self.likelihood_ratio_target}
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


class RoundReward:
    """r_k(x) = -c log p(x) of a frozen model and its gradient, at the data end (reward_target
    'data', the paper's) or smoothed to t_r ('smoothed'). The solver asks for the values and the
    gradient at the same final states: the deconvolution behind both is computed once per batch."""

    def __init__(self, model: NoisePredictor, scale: float, config: ExploreConfig):
        self.model, self.scale, self.config = model, scale, config
        self._cached: tuple[Tensor, tuple[Tensor, Tensor]] | None = None

    def _deconvolved(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._cached is None or self._cached[0].shape != x.shape or not torch.equal(self._cached[0], x):
            self._cached = (x.detach().clone(), deconvolved_score(self.model, x, self.config.t_r))
        return self._cached[1]

    def grad(self, x: Tensor) -> Tensor:
        cfg, m = self.config, self.model
        t = torch.full((x.shape[0],), cfg.t_r, dtype=x.dtype, device=x.device)
        s = self._deconvolved(x)[0] if cfg.reward_target == "data" else score(m, x, t)
        if cfg.score_clip is not None:  # off the support |s| grows like distance / sigma^2
            cap = cfg.score_clip / float(torch.sqrt(1 - m.schedule.ab(t[:1])))
            norm = s.reshape(len(s), -1).norm(dim=1).clamp(min=1e-12)
            s = s * (cap / norm).clamp(max=1.0).reshape(-1, *([1] * (s.dim() - 1)))
        return -self.scale * s

    def value(self, x: Tensor) -> Tensor:  # r(x) up to a constant
        cfg = self.config
        if cfg.reward_target == "smoothed":
            return -self.scale * log_prob(self.model, x, steps=cfg.reward_ode_steps, t_min=cfg.t_r)
        ab = float(self.model.schedule.ab(torch.tensor(cfg.t_r, dtype=torch.float64)))
        smoothed = log_prob(self.model, math.sqrt(ab) * x, steps=cfg.reward_ode_steps, t_min=cfg.t_r)
        return -self.scale * (smoothed + self._deconvolved(x)[1].to(smoothed.dtype))


def _lam_history(run, config: ExploreConfig, k: int) -> list[float]:
    """lambdas of rounds 1..k: saved ones from earlier rounds' metrics, then the schedule."""
    saved = run.metrics()
    return [float(saved.get(i, {}).get("lam", config.lam_at(i))) for i in range(1, k)] + [config.lam_at(k)]


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

        reward = RoundReward(reward_model, scale, config)
        solver_cfg = config.solver_config(k)
        return RoundProblem(model_ft, model_base, reward.grad, solver_cfg, lam, lam_history,
                            sampling_model=sampling_model, reward_value=reward.value, valid_fn=self.valid_fn())

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
                        **result.round_metrics()})
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
