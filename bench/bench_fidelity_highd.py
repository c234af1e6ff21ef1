"""One S-MEME round in 16-64 dimensions on an analytic Gaussian base, against the exact tilt per direction.

    SMEME_THREADS=1 nice -n 10 python bench/bench_fidelity_highd.py --case spread --d 16 [--seeds 5]
        [--variants ";likelihood_ratio_share=0"] [--iterations 30] [--reward-target smoothed]

The solver is built as explore builds it (ExploreConfig with the CSV domain's defaults, lambda 1/3,
solver_config(1), explore's RoundReward for the reward's gradient and values) on an analytic Gaussian
base N(0, S) plus a trainable correction whose output starts at zero (the CSV preset's network shape,
linear skip included), so that pre-training error cannot hide solver error (issue 20, "high
dimension and low rank"). Cases, in standardised units:
  spread:   S = Q diag(e) Q^T, e geometric over a 60x range with mean 1, Q a random rotation;
  manifold: rank 4 (tangent variances 0.5:1:1.5:2, scaled so that tr S = d) plus isotropic noise
            of variance --noise in every direction (the d - 4 normal directions).
The truth: the tuned network models N(0, S*) with S* = (S^-1 - lam S_r^-1)^-1, S_r = ab(t_r) S +
(1 - ab(t_r)) I for the smoothed reward, S / (1 - lam) for reward_target 'data'; both are diagonal in
S's eigenbasis, and so is what the 50-step chain makes of them (tests/helpers.gaussian_sampler_moments).
Measured per eigen-direction v of S: the variance ratio v'C1 v / v'C0 v of the tuned and the base
model's samples with the SAME noise (paired, so the sampling noise largely cancels), against the exact
ratio of the chain's covariances. Printed: ratio min / median / max (measured and exact), the share of
the exact log-variance gain per direction (min / median / max; tangent and normal separately for the
manifold), the likelihood-ratio weights' ESS and tempering, CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

F64 = torch.float64
LAM = 1 / 3


def parse_variant(text: str) -> dict:
    """'a=1,opt.b=0.5' -> ExploreConfig fields, the 'opt.' ones into solver_options."""
    out: dict = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        try:
            value = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            value = {"None": None, "True": True, "False": False}.get(value, value)
        if key.startswith("opt."):
            out.setdefault("solver_options", {})[key[4:]] = value
        else:
            out[key] = value
    return out


def base_covariance(case: str, d: int, noise: float, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(S, eigenvalues ascending, eigenvectors as columns) of the case's standardised covariance."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    if case == "spread":
        e = np.geomspace(1.0, 60.0, d)
        e = e * d / e.sum()
    else:
        tangent = np.array([0.5, 1.0, 1.5, 2.0])
        tangent = tangent * (d - d * noise) / tangent.sum()
        e = np.concatenate([np.full(d - 4, noise), tangent + noise])
    S = q @ np.diag(e) @ q.T
    return torch.tensor((S + S.T) / 2, dtype=F64), e, q


def exact_ratios(e: np.ndarray, lam: float, ab_r: float, target: str, steps: int, schedule) -> np.ndarray:
    """Per eigen-direction, the exact tilt's variance over the base's, both seen through the N-step chain."""
    from helpers import gaussian_sampler_moments

    tilted = e / (1 - lam) if target == "data" else 1 / (1 / e - lam / (ab_r * e + 1 - ab_r))
    diag = lambda v: torch.diag(torch.tensor(v, dtype=F64))  # noqa: E731  (the chain keeps an eigenbasis)
    zero = torch.zeros(len(e), dtype=F64)
    before = gaussian_sampler_moments(zero, diag(e), schedule, steps=steps)[1].diag().numpy()
    after = gaussian_sampler_moments(zero, diag(tilted), schedule, steps=steps)[1].diag().numpy()
    return after / before


def span(v) -> list:
    v = np.asarray(v)
    return [round(float(v.min()), 3), round(float(np.median(v)), 3), round(float(v.max()), 3)]


def one_round(args, variant: str, seed: int, S, e, q) -> dict:
    from helpers import ResidualNoisePredictor

    from smeme.explore import ExploreConfig, RoundReward, _frozen
    from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
    from smeme.sampling import FixedNoise, sample_ddpm
    from smeme.schedule import VPSchedule
    from smeme.solvers import adjoint_matching

    d, sch = len(e), VPSchedule()
    base = GaussianModel(torch.zeros(d, dtype=F64), S, sch)
    config = ExploreConfig(**{"iterations": 30, "trajectories": 1024, "lam": LAM, "seed": seed,
                              "reward_target": args.reward_target, **parse_variant(variant)})
    if args.iterations:
        config.iterations = args.iterations
    torch.manual_seed(seed)
    correction = MLPNoisePredictor(MLPConfig(d, width=128, depth=3, time_dim=32, linear_skip=3), sch).double()
    ft = ResidualNoisePredictor(base, correction)
    reward = RoundReward(_frozen(base), LAM, config)
    cfg = config.solver_config(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = adjoint_matching(ft, base, reward.grad, cfg, reward_value=reward.value)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    noise = FixedNoise.from_seed(123, args.eval_n, (d,), cfg.steps, dtype=F64)
    with torch.no_grad():
        x1, x0 = sample_ddpm(ft, noise).numpy() @ q, sample_ddpm(base, noise).numpy() @ q  # S's eigenbasis
    got = x1.var(0) / x0.var(0)
    ab_r = float(sch.ab(torch.tensor(config.t_r, dtype=F64)))
    want = exact_ratios(e, LAM, ab_r, config.reward_target, cfg.steps, sch)
    share = np.log(got) / np.log(want)
    row = {"case": args.case, "d": d, "variant": variant, "divergence": args.divergence, "seed": seed, "cpu_s": round(cpu, 1),
           "wall_s": round(wall, 1), "ratio": span(got), "exact": span(want), "share": span(share),
           "converged": result.converged, **{k: round(v, 4) if isinstance(v, float) else v
                                             for k, v in result.health.items()}}
    if args.case == "manifold":
        row.update({"share_tangent": span(share[-4:]), "ratio_tangent": span(got[-4:]),
                    "exact_tangent": span(want[-4:]), "ratio_normal": span(got[:-4]),
                    "exact_normal": span(want[:-4])})
    else:  # narrowest and widest quarter of the directions
        n4 = max(len(e) // 4, 1)
        row.update({"share_narrow": span(share[:n4]), "share_wide": span(share[-n4:])})
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=("spread", "manifold"), default="spread")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.01, help="manifold: the normal directions' variance")
    ap.add_argument("--seeds", default="5")
    ap.add_argument("--variants", default="", help="';'-separated ExploreConfig fields; '' is the defaults")
    ap.add_argument("--iterations", type=int, default=0, help="0: the CSV domain's 30")
    ap.add_argument("--reward-target", default="smoothed", choices=("smoothed", "data"))
    ap.add_argument("--eval-n", type=int, default=20000)
    ap.add_argument("--data-seed", type=int, default=3)
    ap.add_argument("--divergence", default="auto",
                    help="the reward values' PF-ODE divergence: 'auto' (explore's: exact up to 16 columns, one "
                         "Hutchinson probe above), 'exact', or a number of Hutchinson probes")
    args = ap.parse_args()
    if args.divergence != "auto":  # the reward values only (explore reads log_prob through its own name)
        import functools

        import smeme.explore
        from smeme.density import log_prob

        kw = {"exact": True} if args.divergence == "exact" else {"exact": False, "probes": int(args.divergence)}
        smeme.explore.log_prob = functools.partial(log_prob, **kw)

    from smeme.threads import configure

    configure()
    S, e, q = base_covariance(args.case, args.d, args.noise, args.data_seed)
    print(json.dumps({"case": args.case, "d": args.d, "eigenvalues": span(e),
                      "load": [round(v, 2) for v in __import__("os").getloadavg()]}), flush=True)
    for variant in args.variants.split(";"):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(one_round(args, variant, seed, S, e, q)), flush=True)


if __name__ == "__main__":
    main()
