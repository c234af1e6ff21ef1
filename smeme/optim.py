"""torch.optim.Adam without the torch.compile hooks, so a command does not import torch._dynamo.

In torch 2.13 every optimizer imports torch._dynamo (about 1.3 s, the largest part of a
short command's fixed cost): Optimizer.add_param_group, zero_grad, state_dict and
load_state_dict carry @torch._disable_dynamo, which imports it on first call, and step's
_use_grad_for_differentiable wrapper imports it on every call to place graph breaks. No
constructor flag (foreach, fused, capturable, differentiable) avoids either. smeme never
compiles, so `Adam` below runs torch's own methods with those wrappers peeled off
(inspect.unwrap): the same code and numbers as torch.optim.Adam, step under no_grad as
_use_grad does for a non-differentiable optimizer.
"""
from __future__ import annotations

import inspect

import torch

_RAW_STEP = inspect.unwrap(torch.optim.Adam.step)


class Adam(torch.optim.Adam):
    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)
    load_state_dict = inspect.unwrap(torch.optim.Optimizer.load_state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        if self.defaults["differentiable"]:
            raise ValueError("smeme.optim.Adam does not support differentiable=True; use torch.optim.Adam.")
        return _RAW_STEP(self, closure)
