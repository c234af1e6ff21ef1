"""Shared by the toy round benchmarks: their common options and the exact round's log-odds shift."""
from __future__ import annotations

import argparse
import math


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def toy_round_parser(seeds: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a pre-trained toy run (only read)")
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--seeds", default=seeds, help="solver seeds, separated by commas")
    return ap


def exact_logodds_shift(run, lam: float, t_r: float) -> float:
    """The sparse square's log-odds shift of one exact round of the run's own PF-ODE density
    (smeme.tilt on a 200^2 grid): the truth the toy tests use."""
    from smeme.tilt import run_exact_rounds

    exact = run_exact_rounds(run, [lam], t_r, 0, resolution=200)
    return logit(exact[1]["shares"]["region"]["sparse"]) - logit(exact[0]["shares"]["region"]["sparse"])


def round0_sparse_share(run, n: int) -> float:
    """Round 0's sparse share on the same fixed noise (n samples, the metrics' seed) a round is
    measured on: pre-training's own reading uses 4,096 samples, and the toy's logit moves 0.013
    between 4,096 and 16,384, 6% of a lam-0.1 round's shift."""
    from smeme.metrics import round_metrics

    return round_metrics(run, run.load_model(0).eval(), 0, n=n, logp=False)["sparse_share"]
