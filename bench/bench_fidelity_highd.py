"""One S-MEME round in 16-64 dimensions on an analytic Gaussian base, against the exact tilt per direction.

    SMEME_THREADS=1 nice -n 10 python bench/bench_fidelity_highd.py --case spread --d 16 [--seeds 5]
        [--variants ";likelihood_ratio_share=0;opt.ess_fallback=0.5"] [--iterations 30]
        [--reward-target smoothed] [--divergence auto|exact|N]

The round, the cases and the truth are tests/test_fidelity_highd.py's (imported from there): the
solver built as explore builds it (ExploreConfig with the CSV domain's defaults, lambda 1/3,
solver_config(1), explore's RoundReward) on an analytic Gaussian base N(0, S) plus a zero-initialised
correction, so pre-training error cannot hide solver error (issue 20). Cases, standardised units:
  spread:   S's eigenvalues geometric over a 60x range with mean 1, in a random basis;
  manifold: rank 4 (tangent variances 0.5:1:1.5:2, tr S = d) plus --noise in every direction.
Per eigen-direction of S: the variance ratio of the tuned over the base model's paired samples against
the exact tilt's through the same 50-step chain. Printed: ratio min / median / max (measured, exact),
the share of the exact log-variance gain (min / median / max; tangent and normal apart for the
manifold), the likelihood-ratio weights' ESS and tempering, the solver's CPU seconds.
Variants: ExploreConfig fields, ';'-separated, ','-joined; 'opt.NAME=V' goes into solver_options.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


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


def span(v) -> list:
    v = np.asarray(v)
    return [round(float(v.min()), 3), round(float(np.median(v)), 3), round(float(v.max()), 3)]


def one_round(args, variant: str, seed: int, S, e, q) -> dict:
    from test_fidelity_highd import exact_log_ratios, gaussian_round

    explore = {"reward_target": args.reward_target, **parse_variant(variant)}
    if args.iterations:
        explore["iterations"] = args.iterations
    log_r, _, result, config, cfg, cpu = gaussian_round(S, q, seed, **explore)
    want = exact_log_ratios(e, config, cfg)
    got, exact, share = np.exp(log_r), np.exp(want), log_r / want
    row = {"case": args.case, "d": len(e), "variant": variant, "divergence": args.divergence, "seed": seed,
           "cpu_s": round(cpu, 1), "ratio": span(got), "exact": span(exact), "share": span(share),
           "converged": result.converged,
           **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.health.items()}}
    if args.case == "manifold":
        row.update({"share_tangent": span(share[-4:]), "ratio_tangent": span(got[-4:]),
                    "exact_tangent": span(exact[-4:]), "ratio_normal": span(got[:-4]),
                    "exact_normal": span(exact[:-4])})
    else:  # the narrowest and the widest quarter of the directions
        n4 = max(len(e) // 4, 1)
        row.update({"share_narrow": span(share[:n4]), "share_wide": span(share[-n4:])})
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=("spread", "manifold"), default="spread")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.01, help="manifold: the normal directions' variance")
    ap.add_argument("--seeds", default="5")
    ap.add_argument("--variants", default="", help="';'-separated; '' is the defaults")
    ap.add_argument("--iterations", type=int, default=0, help="0: the CSV domain's 30")
    ap.add_argument("--reward-target", default="smoothed", choices=("smoothed", "data"))
    ap.add_argument("--data-seed", type=int, default=3)
    ap.add_argument("--divergence", default="auto",
                    help="the reward values' PF-ODE divergence: 'auto' (explore's: exact up to 16 columns, one "
                         "Hutchinson probe above), 'exact', or a number of Hutchinson probes")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    if args.divergence != "auto":  # the reward values only (smeme.reward reads log_prob through its own name)
        import smeme.reward
        from smeme.density import log_prob

        kw = {"exact": True} if args.divergence == "exact" else {"exact": False, "probes": int(args.divergence)}
        smeme.reward.log_prob = functools.partial(log_prob, **kw)
    from test_fidelity_highd import manifold_covariance, spread_covariance

    if args.case == "spread":
        S, e, q = spread_covariance(args.d, seed=args.data_seed)
    else:
        S, e, q = manifold_covariance(args.d, args.noise, seed=args.data_seed)
    print(json.dumps({"case": args.case, "d": args.d, "eigenvalues": span(e),
                      "load": [round(v, 2) for v in os.getloadavg()]}), flush=True)
    for variant in args.variants.split(";"):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(one_round(args, variant, seed, S, e, q)), flush=True)


if __name__ == "__main__":
    main()
