"""What the reward values' ODE steps change in the likelihood-ratio term's target (issue 14, item 2).

    SMEME_THREADS=1 python bench/bench_reward_values.py --run DIR [--lam 0.1,0.3] [--n 4096]

Samples the run's round-0 model as the solver does (50 DDPM steps), reads r = -lam log p(x, t_r)
with the explore default's RK4 steps and with a 64-step reference, caps both at their 99.9th
percentile (as the solver does), and reports: the log-density error overall and on the 1%
lowest-density samples, the total variation between the two self-normalised weightings
exp(r) / mean, and the share of the weight that each puts on the toy's sparse square (the
tilt the term pulls towards) against the exact tilt's share of these samples.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--lam", default="0.1,0.3")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--reference-steps", type=int, default=64)
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    from smeme.density import log_prob
    from smeme.explore import ExploreConfig
    from smeme.sampling import sample, time_grid
    from smeme.solvers.adjoint_matching import AdjointMatchingConfig, cap_reward
    from smeme.store import Run

    run = Run.open(args.run)
    model = run.load_model(0).eval()
    defaults, quantile = ExploreConfig(), AdjointMatchingConfig().reward_cap_quantile
    x = sample(model, args.n, steps=defaults.steps, seed=11, grid=time_grid(defaults.steps))
    logp = {s: log_prob(model, x, steps=s, t_min=defaults.t_r).double()
            for s in (defaults.reward_ode_steps, 2 * defaults.reward_ode_steps, args.reference_steps)}
    ref = logp[args.reference_steps]
    low = ref <= torch.quantile(ref, 0.01)
    raw = run.standardizer.inverse(x.double().numpy())
    region = run.domain.categories(raw).get("region") if hasattr(run.domain, "categories") else None
    sparse = None if region is None else torch.as_tensor(np.asarray(region) == "sparse")
    for steps, values in logp.items():
        if steps == args.reference_steps:
            continue
        err = values - ref
        row = {"ode_steps": steps, "logp_error_sd": float(err.std()), "low_1pct_mean": float(err[low].mean()),
               "low_1pct_max_abs": float(err[low].abs().max())}
        for lam in (float(v) for v in args.lam.split(",")):
            def weights(lp):
                return torch.softmax(cap_reward(-lam * lp, quantile)[0], 0) * len(lp)
            w, w_ref = weights(values), weights(ref)
            row[f"lam{lam:g}_weights_tv"] = float((w - w_ref).abs().mean() / 2)
            if sparse is not None:
                row[f"lam{lam:g}_sparse_weight"] = float((w * sparse).mean())
                row[f"lam{lam:g}_sparse_weight_reference"] = float((w_ref * sparse).mean())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
