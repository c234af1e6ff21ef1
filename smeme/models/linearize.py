"""eps(x, t) and its vector-Jacobian products v -> J_eps(x)^T v for any noise predictor: the one
linearisation the lean adjoint and the density's autograd path share (by hand for plain MLPs)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import NoisePredictor
from .mlp import is_plain_mlp


def linearize(model: NoisePredictor, x: Tensor, t: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """eps(x, t) (no graph) and v -> J_eps(x)^T v, callable any number of times: by hand for a plain MLP
    (is_plain_mlp: MLPNoisePredictor.eps_and_vjp, no autograd), else by autograd on a kept graph."""
    if is_plain_mlp(model):
        return model.eps_and_vjp(x, t)
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(xr, t)

    def vjp(v: Tensor) -> Tensor:
        # grad of the scalar <out, v>: the same product as grad_outputs=v, without autograd's grad-shape check
        # (whose first use imports sympy, ~0.7 s a process); recorded even when the caller runs under no_grad;
        # the graph lives as long as this function
        with torch.enable_grad():
            (g,) = torch.autograd.grad((out * v).sum(), xr, retain_graph=True)
        return g

    return out.detach(), vjp
