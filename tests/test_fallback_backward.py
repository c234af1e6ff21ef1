"""How far the lean adjoint runs when likelihood-ratio steps fall back (AdjointMatchingConfig.ess_fallback).

A step whose weights' effective sample share is below ess_fallback hands its loss to the adjoint term,
which then reads that step's adjoint. The backward pass must reach it in exactly the iterations where
a step falls back, never lower, and evaluate every step of the frozen base once per iteration. A
counting wrapper around an analytic Gaussian base records each base evaluation and each
vector-Jacobian product per step; the steps that fall back are set by hand through the weights'
`kept`, so the expected extent is known without the solver. The result must equal the previous
always-extend path's (the backward pass over every step that could fall back).
"""
from __future__ import annotations

import importlib

import pytest
import torch

from helpers import ResidualNoisePredictor
from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
from smeme.models.base import NoisePredictor
from smeme.sampling import time_grid
from smeme.schedule import VPSchedule
from smeme.solvers import AdjointMatchingConfig, adjoint_matching

am = importlib.import_module("smeme.solvers.adjoint_matching")  # (smeme.solvers.adjoint_matching is also the function)
SCH = VPSchedule()
F64 = torch.float64
STEPS = 12
W = torch.tensor([1.0, -2.0], dtype=F64)  # linear reward r(x) = x . W


class _Tap(torch.autograd.Function):
    """Identity whose backward records that step i's output took part in a VJP."""

    @staticmethod
    def forward(ctx, out, step, log):
        ctx.step, ctx.log = step, log
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        ctx.log.append(("vjp", ctx.step, len(grad)))
        return grad, None, None


class CountingBase(NoisePredictor):
    """The frozen base with a log of ('eval', step, rows) per evaluation and ('vjp', step, rows) per backward
    through it; end_iteration marks where an iteration ends."""

    def __init__(self, base: NoisePredictor, grid: torch.Tensor):
        super().__init__()
        self.base, self.grid, self.log = base, grid, []
        self.schedule, self.sample_shape = base.schedule, tuple(base.sample_shape)

    def forward(self, x, t):
        step = int(torch.argmin((self.grid - t[0]).abs()))
        self.log.append(("eval", step, len(x)))
        out = self.base(x, t)
        return _Tap.apply(out, step, self.log) if out.requires_grad else out

    def end_iteration(self, *_):
        self.log.append(("end", None, 0))

    def per_iteration(self) -> list[tuple[dict, dict]]:
        """Per iteration: (rows evaluated per step, rows through a VJP per step)."""
        out, evals, vjps = [], {}, {}
        for kind, step, rows in self.log:
            if kind == "end":
                out.append((evals, vjps))
                evals, vjps = {}, {}
                continue
            counts = evals if kind == "eval" else vjps
            counts[step] = counts.get(step, 0) + rows
        return out


def _models(seed: int = 0):
    base = GaussianModel(torch.zeros(2), torch.diag(torch.tensor([1.0, 0.04])), SCH).double()
    torch.manual_seed(seed)
    ft = ResidualNoisePredictor(base, MLPNoisePredictor(MLPConfig(2, width=16, depth=2, time_dim=8), SCH).double())
    return base, ft


def _config(control: str, **extra) -> AdjointMatchingConfig:
    return AdjointMatchingConfig(iterations=3, trajectories=64, steps=STEPS, adam_steps=2, loss_steps=None,
                                 likelihood_ratio_share=0.8, adjoint_weight_on_lr_steps=0.0,
                                 likelihood_ratio_target="next", control=control, adjoint_chunk=24, **extra)


def _dropping(monkeypatch, patterns: list[list[int]]) -> list:
    """The weights' `kept` set by hand: in iteration k the likelihood-ratio steps at the positions
    patterns[k] fall back (the weights themselves are the real ones)."""
    real, calls = am.likelihood_ratio_targets, []

    def fake(*args, **kwargs):
        pull, w, ess, beta, kept = real(*args, **kwargs)
        kept = torch.ones_like(kept)
        kept[patterns[len(calls)]] = False
        calls.append(kept.clone())
        return pull, w, ess, beta, kept

    monkeypatch.setattr(am, "likelihood_ratio_targets", fake)
    return calls


@pytest.mark.parametrize("control", ["score", "ddpm"])
def test_backward_pass_runs_down_only_to_the_steps_that_fall_back(monkeypatch, control):
    """With the likelihood-ratio term on the earliest 80% of the steps and no adjoint weight there,
    the backward pass stops at the first step after them, unless a step falls back: then it runs down
    to that step's adjoint (a_i for 'current' pairing, a_{i+1} for 'next'), no lower. Every step of
    the base is evaluated once per iteration, and each VJP runs once."""
    base, ft = _models()
    grid = time_grid(STEPS, power=1.5, dtype=F64)
    counting = CountingBase(base, grid)
    cfg = _config(control, ess_fallback=0.5)
    plan = am.plan_steps(base, cfg, (2,), F64, "cpu", True)
    lr_steps = plan.lr_steps.tolist()
    assert lr_steps == list(range(len(lr_steps))) and len(lr_steps) >= 6  # the earliest steps, as set up
    next_pairing = control == "ddpm"
    patterns = [[], [3, 5], list(range(len(lr_steps)))]  # none, two (the earliest: position 3), all
    _dropping(monkeypatch, patterns)
    adjoint_matching(ft, counting, lambda x: W.expand_as(x), cfg, reward_value=lambda x: x @ W,
                     on_iteration=counting.end_iteration)
    no_fallback = lr_steps[-1] + 1 + next_pairing
    expected_first = [no_fallback, lr_steps[3] + next_pairing, lr_steps[0] + next_pairing]
    iterations = counting.per_iteration()
    assert len(iterations) == 3
    m = cfg.trajectories
    for (evals, vjps), first in zip(iterations, expected_first):
        assert evals == dict.fromkeys(range(STEPS), m), evals  # every step once, all rows
        assert vjps == dict.fromkeys(range(first, STEPS), m), (first, vjps)  # down to the step read, no lower


def test_without_fallback_the_backward_pass_stops_where_the_loss_stops(monkeypatch):
    """ess_fallback set but no step falling back costs no VJP below the adjoint term's own steps
    (the same extent as ess_fallback None)."""
    base, ft = _models()
    grid = time_grid(STEPS, power=1.5, dtype=F64)
    extents = []
    for fallback in (None, 0.5):
        counting = CountingBase(base, grid)
        cfg = _config("score", ess_fallback=fallback)
        if fallback is not None:
            _dropping(monkeypatch, [[]] * cfg.iterations)
        adjoint_matching(ft, counting, lambda x: W.expand_as(x), cfg, reward_value=lambda x: x @ W,
                         on_iteration=counting.end_iteration)
        extents.append([min(vjps) for _, vjps in counting.per_iteration()])
    plan = am.plan_steps(base, _config("score"), (2,), F64, "cpu", True)
    assert extents[0] == extents[1] == [plan.first_adjoint] * 3


def _always_extend(real_plan_steps):
    """The previous path: the backward pass runs over every step that could fall back, every iteration."""
    def plan_steps(*args, **kwargs):
        plan = real_plan_steps(*args, **kwargs)
        plan.first_adjoint = plan.fallback_first
        return plan
    return plan_steps


@pytest.mark.parametrize("by_hand", [True, False])
def test_fallback_result_equals_the_always_extend_path(monkeypatch, by_hand):
    """The tuned weights and losses equal those of the backward pass over every step, with steps
    falling back: two by hand in one iteration, or by the real weights of a steeper reward r = 1.3 x . W,
    whose weights' shares sit just below the floor at most steps (0.43-0.45) and above it at a few."""
    scale = 1.0 if by_hand else 1.3
    grad, value = (lambda x: scale * W.expand_as(x)), (lambda x: scale * (x @ W))
    results = []
    for extend in (False, True):
        base, ft = _models(seed=1)
        cfg = _config("score", ess_fallback=0.5)
        with monkeypatch.context() as patch:
            if by_hand:
                _dropping(patch, [[], [3, 5], []])
            if extend:
                patch.setattr(am, "plan_steps", _always_extend(am.plan_steps))
            result = adjoint_matching(ft, base, grad, cfg, reward_value=value)
        results.append((result, [p.detach().clone() for p in ft.correction.parameters()]))
    (new, new_params), (old, old_params) = results
    assert 0 < new.health["lr_steps_kept_mean"] < 1  # steps did fall back
    assert new.losses == pytest.approx(old.losses, rel=1e-12, abs=1e-14)
    for a, b in zip(new_params, old_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
