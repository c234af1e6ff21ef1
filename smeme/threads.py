"""Torch thread count: a setting, defaulting to one thread.

On a 2-core machine small models run several times slower with torch's default of two
threads whenever the other core is busy (BENCHMARKS.md).
"""
from __future__ import annotations

import os

import torch

DEFAULT_THREADS = 1


def configure(n: int | None = None) -> int:
    """Set torch's intra-op threads from `n`, else $SMEME_THREADS, else the default."""
    if n is None:
        env = os.environ.get("SMEME_THREADS", "").strip()
        n = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_THREADS
    if n < 1:
        raise ValueError(f"The thread count must be at least 1, got {n}.")
    torch.set_num_threads(n)
    return n
