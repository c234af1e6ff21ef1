"""Each round of a run against its exact tilt, by importance weights (any dimension, no grid).

    SMEME_THREADS=1 python bench/bench_round_reference.py --run <run with rounds> [--n 8192]

Round k's target is p_{k-1}(x) exp(r_k(x)) with r_k = -lam_k log p_{k-1}(x) (the round's recorded
reward_target: the paper's, deconvolved from t_r, or the smoothed -lam_k log p_{k-1}(x, t_r)), read
from the tuned round k-1 as the solver reads it (smeme.reward.RoundReward). On samples x_i of round
k-1 the self-normalised weights w_i ~ exp(r_k(x_i)) turn any average into the exact round k's (r_k
by a fine PF-ODE solve from t_r, `--ode-steps`). Per round this prints the exact and the measured (round k's
own samples, same seed) mean reward and validity (triangles; on-support share otherwise),
the share of the exact reward gain reached, (E_k r - E_{k-1} r) / (E_w r - E_{k-1} r), and the
weights' effective sample size as a share of n (how far to trust the reference). Both sides
use the same DDPM sampler (`--steps`). The cumulative exact validity after round k is
the measured round-0 validity plus the exact per-round changes.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from smeme.threads import configure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run folder with tuned rounds")
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=100, help="DDPM steps of the samples (the metrics' 100)")
    p.add_argument("--ode-steps", type=int, default=32, help="PF-ODE steps of the reference reward values")
    args = p.parse_args()
    configure()
    from smeme.explore import ExploreConfig
    from smeme.reward import RewardSettings, RoundReward
    from smeme.sampling import sample
    from smeme.store import Run

    run = Run.open(args.run)
    explore = ExploreConfig.from_dict((run.config or {}).get("explore", {}))
    rounds, recorded = run.rounds(), run.metrics()
    lams = [float(recorded.get(k, {}).get("lam", explore.lam)) for k in rounds[1:]]  # each round's own record
    t_rs = [float(recorded.get(k, {}).get("t_r", explore.t_r)) for k in rounds[1:]]
    load0 = os.getloadavg()[0]

    def samples_of(k):
        with torch.no_grad():
            return sample(run.load_model(k), args.n, steps=args.steps, seed=args.seed)

    def valid_of(z):
        raw = run.domain.from_features(run.standardizer.inverse(z.detach().double().numpy()))
        cats = [v for v in run.domain.categories(raw).values() if "invalid" in set(v)]
        if cats:  # the metrics' validity
            return np.asarray(cats[0] != "invalid")
        return np.asarray(run.domain.on_support(raw), dtype=bool)

    rows, z_prev = [], samples_of(0)
    v_prev = valid_of(z_prev)
    cumulative = float(v_prev.mean())
    rows.append({"round": 0, "validity": round(cumulative, 4)})
    for k in rounds[1:]:
        prev = run.load_model(k - 1)
        z_k = samples_of(k)

        settings = RewardSettings(t_r=t_rs[k - 1], reward_ode_steps=args.ode_steps, reward_values_tolerance=None,
                                  reward_target=recorded.get(k, {}).get("reward_target", "smoothed"))

        def reward(z, lam=lams[k - 1], settings=settings):  # the round's own reward, fresh per batch
            return RoundReward(prev, lam, settings).value(z).detach().double().numpy()

        r_prev, r_k = reward(z_prev), reward(z_k)
        w = np.exp(r_prev - r_prev.max())
        w /= w.sum()
        exact_r, exact_v = float(w @ r_prev), float(w @ v_prev)
        v_k = valid_of(z_k)
        cumulative += exact_v - float(v_prev.mean())
        rows.append({"round": k, "lam": lams[k - 1],
                     "share_of_exact_reward_gain": round((r_k.mean() - r_prev.mean()) / (exact_r - r_prev.mean()), 3),
                     "reward_gain": round(float(r_k.mean() - r_prev.mean()), 4),
                     "exact_reward_gain": round(exact_r - float(r_prev.mean()), 4),
                     "validity": round(float(v_k.mean()), 4), "exact_validity_from_previous": round(exact_v, 4),
                     "exact_validity_cumulative": round(cumulative, 4),
                     "ess_share": round(float(1 / (w @ w) / len(w)), 3)})
        z_prev, v_prev = z_k, v_k
    print(json.dumps({"run": str(args.run), "n": args.n, "steps": args.steps, "t_r": t_rs,
                      "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "rounds": rows},
                     indent=1))


if __name__ == "__main__":
    main()
