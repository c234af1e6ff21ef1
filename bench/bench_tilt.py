"""How far Adjoint Matching gets towards the exact S-MEME tilt, and what the exact tilt is.

    SMEME_THREADS=1 python bench/bench_tilt.py [--run TOY_RUN] [--part toy|modes|both]

1. toy: the exact rounds (smeme.tilt.run_exact_rounds, as `python -m smeme tilt`) of the
   pre-trained toy model's OWN PF-ODE density, reward at the ExploreConfig t_r, against
   the compact-support closed form: the sparse share among on-support mass, and
   the mass a perfect solver puts off the support.
2. modes: two Gaussians (weights 0.9 / 0.1, variance 0.1, means at +-sep) as an exact
   analytic base plus a trainable MLP correction that starts at zero, one round at
   lambda = 0.3. The share of mass in the light mode after one round, from the solver
   (AdjointMatchingConfig defaults; the ExploreConfig defaults, with the likelihood-ratio
   term and without it), against the exact tilt on a grid. Reported as the log-odds shift
   of the light mode's share, and the fraction of the exact shift the solver reached.
"""
from __future__ import annotations

import sys

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test references (helpers.py)

from smeme.threads import configure

LAMS = (0.1, 0.3)
ROUNDS = 4


def ab_of(schedule):
    return lambda t: float(schedule.ab(torch.tensor(t, dtype=torch.float64)))


def toy_part(run_folder: Path | None, resolution: int) -> None:
    from smeme.explore import ExploreConfig
    from smeme.store import Run
    from smeme.tilt import run_exact_rounds

    if run_folder is None:
        from smeme.pipeline import pretrain_run

        run_folder = Path(tempfile.mkdtemp(prefix="bench_tilt_")) / "toy"
        pretrain_run(run_folder, "toy")
    run = Run.open(run_folder)
    t_r = ExploreConfig().target_t_r  # the default rounds' target (0: the paper's)
    for lam in LAMS:
        t0 = time.perf_counter()
        rows = run_exact_rounds(run, [lam] * ROUNDS, t_r, 0, resolution=resolution)
        seconds = time.perf_counter() - t0
        sparse = [r["shares"]["region"].get("sparse", 0.0) / r["on_support"] for r in rows]
        for k, r in enumerate(rows):
            g = (1 - lam) ** k
            compact = sparse[0] ** g / (sparse[0] ** g + (1 - sparse[0]) ** g)
            print(json.dumps({"part": "toy", "lam": lam, "round": k, "t_r": t_r, "grid": resolution,
                              "seconds": round(seconds, 1),
                              "sparse_share_of_on_support": round(sparse[k], 4),
                              "compact_closed_form": round(float(compact), 4),
                              "off_support": round(1 - r["on_support"], 4)}), flush=True)


def modes_part(seps, lam: float) -> None:
    from smeme.explore import ExploreConfig
    from smeme.models import GaussianMixtureModel, MLPConfig, MLPNoisePredictor, score
    from smeme.sampling import FixedNoise, sample_ddpm
    from smeme.schedule import VPSchedule
    from helpers import ResidualNoisePredictor
    from smeme.solvers import AdjointMatchingConfig, adjoint_matching
    from smeme.tilt import exact_rounds

    sch = VPSchedule()
    t_r = ExploreConfig().t_r
    explore = ExploreConfig()
    settings = {
        "solver defaults": AdjointMatchingConfig(),
        "explore defaults": explore.solver_config(1),
        "explore defaults, adjoint only": dataclasses.replace(explore.solver_config(1), likelihood_ratio_share=0.0),
    }
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731

    def light_share(model, n=20000, seed=5):
        x = sample_ddpm(model, FixedNoise.from_seed(seed, n, (2,), 50))
        return float((x[:, 0] > 0).double().mean())

    for sep in seps:
        base = GaussianMixtureModel([0.9, 0.1], [[-sep, 0.0], [sep, 0.0]], torch.eye(2) * 0.1, sch)
        xs, ys = np.linspace(-sep - 2.5, sep + 2.5, 301), np.linspace(-2.0, 2.0, 161)
        gx, gy = np.meshgrid(xs, ys)
        pts = torch.as_tensor(np.column_stack([gx.ravel(), gy.ravel()]))
        logp = base.log_prob(pts, 0.0).numpy().reshape(gx.shape)
        p0, p1 = exact_rounds(logp, xs, ys, [lam], t_r, ab_of(sch))
        right = gx > 0
        exact_shift = logit(p1[right].sum()) - logit(p0[right].sum())
        overlap = math.exp(-0.5 * sep**2 / 0.1)  # density at the midpoint / at a mode centre
        w0 = light_share(base)
        for name, cfg in settings.items():
            torch.manual_seed(0)
            ft = ResidualNoisePredictor(base, MLPNoisePredictor(MLPConfig(2, width=96, depth=4, time_dim=32), sch))
            t0 = time.perf_counter()
            adjoint_matching(ft, base, lambda x: -lam * score(base, x, torch.full((x.shape[0],), t_r)), cfg,
                             reward_value=lambda x: -lam * base.log_prob(x.double(), t_r).float())
            w1 = light_share(ft)
            shift = logit(w1) - logit(w0)
            print(json.dumps({"part": "modes", "sep": sep, "midpoint_density_ratio": float(f"{overlap:.2g}"),
                              "lam": lam, "solver": name, "light_share": [round(w0, 4), round(w1, 4)],
                              "log_odds_shift": round(shift, 3), "exact_shift": round(exact_shift, 3),
                              "reached": round(shift / exact_shift, 2),
                              "solver_s": round(time.perf_counter() - t0, 1)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a pre-trained toy run (default: pre-train one)")
    ap.add_argument("--part", choices=["toy", "modes", "both"], default="both")
    ap.add_argument("--resolution", type=int, default=200, help="grid points per axis in the toy part")
    ap.add_argument("--seps", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.5])
    args = ap.parse_args()
    configure()
    if args.part in ("toy", "both"):
        toy_part(Path(args.run) if args.run else None, args.resolution)
    if args.part in ("modes", "both"):
        modes_part(args.seps, 0.3)


if __name__ == "__main__":
    main()
