"""What both fine-tuning solvers share: errors, parameter handling, the optimiser step and
the result a solver returns.

Callback shapes: `on_iteration(iteration, total_iterations, loss)`; `cancel` is any
object with `.is_set()` (e.g. `threading.Event`), checked between iterations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor, nn

IterationFn = Callable[[int, int, float], None]  # (iteration done, total, loss)
RewardGrad = Callable[[Tensor], Tensor]  # x (B, *shape) -> grad r(x), same shape
RewardValue = Callable[[Tensor], Tensor]  # x (B, *shape) -> r(x) up to a constant, shape (B,)


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class SolverError(RuntimeError):
    """A solver could not run (bad configuration or models)."""


class SolverDivergedError(SolverError):
    """The loss, the adjoint or the weights became NaN/inf."""


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a solver may change: those with requires_grad (e.g. only LoRA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SolverError("The model to fine-tune has no trainable parameters (requires_grad is off everywhere).")
    return params


def model_dtype_device(model: nn.Module, fallback: Tensor | None = None):
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), fallback)
    if p is None:
        return torch.float32, None
    return p.dtype, p.device


def is_cancelled(cancel: CancelFlag | None) -> bool:
    return cancel is not None and cancel.is_set()


def check_finite_params(params: list[Tensor], where: str) -> None:
    for p in params:
        if not torch.isfinite(p).all():
            raise SolverDivergedError(f"The fine-tuned weights became NaN/inf {where}.")


def optimiser_step(opt: torch.optim.Optimizer, loss: Tensor, params: list[Tensor], clip_grad_norm: float | None,
                   where: str) -> None:
    """One gradient step on `loss`: backward, global-norm clipping (None: off), NaN check, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if not math.isfinite(float(norm)):
            raise SolverDivergedError(f"The gradient became NaN/inf {where}.")
    opt.step()


@dataclass
class SolverResult:
    """What a solver call returns; the tuned model itself changed in place (`model`).

    losses: one loss per finished iteration; timings: seconds per phase; health: how the
    solve went (for Adjoint Matching with the likelihood-ratio term, its weights' effective
    sample size and tempering); converged / control_change / control_noise / target_fit: the
    convergence signal (None where the solver does not measure it; solvers/iterates.py)."""
    model: nn.Module
    losses: list[float]
    timings: dict = field(default_factory=dict)
    health: dict = field(default_factory=dict)
    converged: bool | None = None
    control_change: float | None = None  # share of the control's size it moved over the averaged window
    control_noise: float | None = None  # the noise of that share (iterate scatter)
    target_fit: float | None = None  # the returned control's fixed-point test (iterates.target_fit): 1 at it
    target_fit_se: float | None = None  # its standard error

    @property
    def iterations(self) -> int:
        """Iterations finished (fewer than configured when cancelled)."""
        return len(self.losses)

    def round_metrics(self) -> dict:
        """The solver's part of a round's metrics: its health and the convergence signal."""
        out = dict(self.health)
        if self.converged is not None:
            out.update({"solver_converged": bool(self.converged), "solver_control_change": self.control_change,
                        "solver_control_noise": self.control_noise})
        if self.target_fit is not None:
            out.update({"solver_target_fit": self.target_fit, "solver_target_fit_se": self.target_fit_se})
        return out


__all__ = [
    "IterationFn", "RewardGrad", "CancelFlag", "SolverError", "SolverDivergedError", "SolverResult",
    "trainable_parameters", "model_dtype_device", "is_cancelled", "check_finite_params", "optimiser_step",
]
