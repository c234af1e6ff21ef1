"""S-MEME outer loop (paper Algorithm 1): rounds of linear fine-tuning with the entropy reward.

pi_0 = the pre-trained model; for k = 1..K fine-tune pi_{k-1} with the reward
r_k(x) = -lam_k log p_{k-1}(x), whose gradient needs no density:
    grad r_k(x) = -lam_k s_{k-1}(x, t_r)                  (reward='previous', the paper's)
or, using p_{k-1} ~ p_0^{prod_{i<k}(1 - lam_i)} (exact if every round reached its tilt),
    grad r_k(x) = -lam_k prod_{i<k}(1 - lam_i) s_0(x, t_r)  (reward='pretrained').
lam schedule: 'constant' lam_k = lam, or 'decreasing' lam_k = lam / k^lam_power with
0.5 < lam_power <= 1, so sum lam_k = inf and sum lam_k^2 < inf (Robbins-Monro, paper s.6).
t_r = 0.05 by default: with lam = 0.3 the reward score at 0.001 diverged (DESIGN.md), and on
the toy 0.01 gave a noisy tilt (few trajectories see its sharp gradient); see ExploreConfig.
The solver's optional likelihood-ratio term (on by default) also needs the reward's values:
r_k(x) = -lam_k log p_{k-1}(x, t_r), from the frozen previous model's PF-ODE (smeme.density),
which is what lets a round move mass between separated modes (solvers/adjoint_matching.py).

The tuned network is a model of the round's tilt (the solver regresses in score units,
solvers/adjoint_matching.py step 3), so the next round reads its reward from that network's
score as users run it, and its samples, PF-ODE density and heatmaps all show the same model.
Each round's metrics carry the solver's result beside its solver seconds: its health (the
likelihood-ratio weights' effective sample size, how often they were tempered) and whether it
converged (solver_converged, solver_control_change; SolverResult.round_metrics).

Each finished round is checked (finite weights, on-support share not down by more than
max_validity_drop against the previous round) and saved at once with its metrics; a
rejected round raises ExploreError and leaves the previous round as the latest.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import ConfigBase
from .density import log_prob
from .models.base import NoisePredictor, score
from .solvers import (AdjointMatchingConfig, SolverDivergedError, SolverError, StudentTeacherConfig,
                      adjoint_matching, student_teacher)

IterationCallback = Callable[[int, int, int, float], None]  # (round, iteration, total, loss)
RoundCallback = Callable[[int, dict], None]  # (round, metrics)
SOLVERS = ("adjoint", "student-teacher")


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
    # (over-tilts a wide axis; solvers/adjoint_matching.py step 5).
    likelihood_ratio_target: str = "current"
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
    reward: str = "previous"  # 'previous' (paper) | 'pretrained' (see module docstring)
    score_clip: float | None = None  # cap |s(x, t_r)| per sample at score_clip / sqrt(1 - ab(t_r)) (None: off)
    seed: int = 0
    allow_lam_one: bool = False
    max_validity_drop: float = 0.20  # reject a round whose on-support share drops more than this
    metrics_n: int = 4096
    metrics_logp: bool = True  # PF-ODE cross-entropy and surprise (the slow metrics)
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
            return _checked_for_rounds(AdjointMatchingConfig.from_dict({**settings, **self.solver_options}))
        except (SolverError, TypeError) as exc:
            raise ExploreError(f"Bad solver setting: {exc}") from None


def _checked_for_rounds(cfg: AdjointMatchingConfig) -> AdjointMatchingConfig:
    """Refuse solver settings whose fixed point over-tilts a round (the likelihood-ratio target 'next'
    is off by J_i^-T: up to ~1.5x a narrow axis' shift in closed form)."""
    if cfg.likelihood_ratio_share > 0 and cfg.control == "score" and cfg.likelihood_ratio_target != "current":
        raise SolverError(f"likelihood_ratio_target {cfg.likelihood_ratio_target!r} over-tilts a round "
                          "(its fixed point is off by the base step's Jacobian); rounds use 'current'.")
    return cfg


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


def _finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _valid_fn(run):
    def valid(x):
        z = x.detach().to(torch.float64).cpu().numpy().reshape(len(x), -1)
        raw = run.domain.from_features(run.standardizer.inverse(z))
        return torch.as_tensor(np.asarray(run.domain.on_support(raw), dtype=bool))
    return valid


def _metrics(run, model, k, config, lam_history):
    from .metrics import round_metrics

    return round_metrics(run, model, k, n=config.metrics_n, logp=config.metrics_logp, lam_history=lam_history)


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
    prepare = prepare or prepare_models
    saved: list[int] = []
    with run.lock():
        start = run.latest_round
        prev = run.load_model(start)
        pre = _frozen(run.load_model(0)) if config.reward == "pretrained" else None
        prev_metrics = run.metrics().get(start)
        for k in range(start + 1, start + rounds + 1):
            if cancel is not None and cancel.is_set():
                break
            lam_history = _lam_history(run, config, k)
            lam = lam_history[-1]
            model_ft, model_base, sampling_model = prepare(prev)
            if config.reward == "pretrained":  # grad r_k = -lam_k prod_{i<k}(1 - lam_i) s_0(x, t_r)
                scale, reward_model = lam * float(np.prod([1 - v for v in lam_history[:-1]])), pre
            else:  # grad r_k = -lam_k s_{k-1}(x, t_r)
                scale, reward_model = lam, model_base

            def reward_grad(x, m=reward_model, c=scale):
                t = torch.full((x.shape[0],), config.t_r, dtype=x.dtype, device=x.device)
                s = score(m, x, t)
                if config.score_clip is not None:  # off the support |s| grows like distance / sigma^2
                    cap = config.score_clip / float(torch.sqrt(1 - m.schedule.ab(t[:1])))
                    norm = s.reshape(len(s), -1).norm(dim=1).clamp(min=1e-12)
                    s = s * (cap / norm).clamp(max=1.0).reshape(-1, *([1] * (s.dim() - 1)))
                return -c * s

            def reward_value(x, m=reward_model, c=scale):  # r_k(x) = -c log p(x, t_r), up to a constant
                return -c * log_prob(m, x, steps=config.reward_ode_steps, t_min=config.t_r)

            solver_cfg = config.solver_config(k)
            cb = (lambda i, n, loss, k=k: on_iteration(k, i, n, loss)) if on_iteration else None
            t0 = time.perf_counter()
            try:
                if config.solver == "adjoint":
                    result = adjoint_matching(model_ft, model_base, reward_grad, solver_cfg,
                                              sampling_model=sampling_model, on_iteration=cb, cancel=cancel,
                                              reward_value=reward_value)
                else:
                    result = student_teacher(model_ft, model_base, reward_grad, solver_cfg,
                                             on_iteration=cb, cancel=cancel, valid_fn=_valid_fn(run))
            except SolverDivergedError as exc:
                raise ExploreError(f"Round {k} was rejected: {str(exc).rstrip('.')}; "
                                   f"round {k - 1} stays the latest.") from None
            solve_s = time.perf_counter() - t0
            losses = result.losses
            if cancel is not None and cancel.is_set() and len(losses) < solver_cfg.iterations:
                break  # stopped mid-round: keep the finished rounds only
            if not _finite(model_ft) or not all(math.isfinite(v) for v in losses):
                raise ExploreError(f"Round {k} was rejected: its loss or weights became NaN/inf; "
                                   f"round {k - 1} stays the latest.")
            model_ft.eval()
            metrics = _metrics(run, model_ft, k, config, lam_history)
            if prev_metrics is None or prev_metrics.get("on_support") is None:
                prev_metrics = _metrics(run, prev, k - 1, dataclass_replace(config, metrics_logp=False),
                                        lam_history[:-1])
            new_on, old_on = metrics.get("on_support"), prev_metrics.get("on_support")
            if new_on is None or (old_on is not None and new_on < old_on - config.max_validity_drop):
                raise ExploreError(
                    f"Round {k} was rejected: its on-support share fell from {_pct(old_on)} to {_pct(new_on)} "
                    f"(more than {config.max_validity_drop * 100:.0f} points); round {k - 1} stays the latest.")
            metrics.update({"lam": lam, "lam_history": lam_history, "solver": config.solver,
                            "reward": config.reward, "t_r": config.t_r, "iterations": len(losses),
                            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                            "solver_seconds": round(solve_s, 3), "explore": config.to_dict(),
                            **result.round_metrics()})
            run.save_round(k, model_ft, metrics)
            saved.append(k)
            if on_round is not None:
                on_round(k, metrics)
            prev, prev_metrics = model_ft, metrics
    return saved


def dataclass_replace(config: ExploreConfig, **changes) -> ExploreConfig:
    return ExploreConfig(**{**config.to_dict(), **changes})


def _pct(v) -> str:
    return "unknown" if v is None else f"{100 * v:.1f}%"
