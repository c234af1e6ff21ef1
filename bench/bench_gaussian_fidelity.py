"""One round on a trained MLP of correlated d-dim Gaussian data: share of the exact gain, per knob.

    SMEME_THREADS=1 python bench/bench_gaussian_fidelity.py --d 8 [--seeds 5,6,7]
        [--variants ";iterations=30;likelihood_ratio_share=0.0"] [--folder /tmp/gauss8] [--pretrain-steps 0]

The data, pre-training and the truth are tests/test_fidelity.py's (imported from there):
share = log det(Cov_1 / Cov_0) / log det(Cov_1^exact / Cov_0), covariances from 8,000 samples
of 400 DDPM steps, Cov_1^exact = (Cov_0^-1 - lam S_r^-1)^-1 with S_r = ab Cov_0 + (1 - ab) I.
Also prints the exact gain computed instead from the network's own score at t_r (a linear fit
s(x, t_r) ~ -P x + b over noised samples; Cov_1 = (Cov_0^-1 - lam P)^-1): the tilt of the reward
the round actually reads. Variants are ExploreConfig fields, ';'-separated, ','-joined within.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def own_reward_gain(run, cov0: np.ndarray, lam: float, t_r: float) -> float:
    from smeme.models.base import score
    from smeme.sampling import sample

    model = run.load_model(0).eval()
    x0 = sample(model, 8000, steps=400, seed=99).double()
    ab = float(run.schedule.ab(torch.tensor(t_r, dtype=torch.float64)))
    g = torch.Generator().manual_seed(1)
    xt = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        s = score(model, xt.to(torch.float32), torch.full((len(xt),), t_r)).double()
    design = torch.cat([xt, torch.ones(len(xt), 1, dtype=torch.float64)], 1)
    slope = torch.linalg.lstsq(design, s).solution[:-1].T.numpy()
    precision = -(slope + slope.T) / 2
    cov1 = np.linalg.inv(np.linalg.inv(cov0) - lam * precision)
    return float(np.linalg.slogdet(cov1)[1] - np.linalg.slogdet(cov0)[1])


def parse_variant(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        try:
            out[key] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:  # a word, e.g. likelihood_ratio_target=next
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--seeds", default="5,6,7")
    ap.add_argument("--variants", default="", help="';'-separated; '' is the defaults")
    ap.add_argument("--folder", help="where the pre-trained run is kept (default: a temporary folder)")
    ap.add_argument("--data-seed", type=int, default=None, help="the data's seed (default: the test's, 20 + d)")
    ap.add_argument("--independent", action="store_true", help="independent columns (the test's other data)")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="pre-training steps (default: the test's PRETRAIN_STEPS; 0: the CSV preset's, sized to the rows)")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    from test_fidelity import (LAM, PRETRAIN_STEPS, correlated_gaussian_csv, exact_covs, independent_gaussian_csv,
                               logdet_gain, model_cov)

    from smeme.explore import ExploreConfig, run_rounds
    from smeme.pipeline import pretrain_run
    from smeme.store import Run

    root = Path(args.folder or tempfile.mkdtemp(prefix=f"gauss{args.d}_"))
    if not (root / "run" / "metrics.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        make = independent_gaussian_csv if args.independent else correlated_gaussian_csv
        csv = make(root / "data.csv", args.d, seed=(40 if args.independent else 20) + args.d
                   if args.data_seed is None else args.data_seed)
        steps = PRETRAIN_STEPS if args.pretrain_steps is None else (args.pretrain_steps or None)
        pretrain_run(root / "run", "csv", {"path": str(csv)}, steps=steps)
    src = Run.open(root / "run")
    t_r = ExploreConfig().t_r
    cov0 = model_cov(src, 0)
    want = logdet_gain(exact_covs(src, cov0, 1, t_r)[1], cov0)
    own = own_reward_gain(src, cov0, LAM, t_r)
    print(json.dumps({"d": args.d, "exact_gain": want, "exact_gain_own_reward": own, "ratio": own / want}), flush=True)
    for variant in args.variants.split(";"):
        shares = []
        for seed in (int(s) for s in args.seeds.split(",")):
            work = Path(tempfile.mkdtemp()) / "run"
            shutil.copytree(src.folder, work)
            run = Run.open(work)
            start = time.perf_counter()
            run_rounds(run, 1, ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM, "seed": seed,
                                                "metrics_logp": False, **parse_variant(variant)}))
            seconds = time.perf_counter() - start
            shares.append(logdet_gain(model_cov(run, 1), cov0) / want)
            health = {k: v for k, v in run.metrics()[1].items() if k.startswith("lr_")}
            print(json.dumps({"variant": variant, "seed": seed, "share": round(shares[-1], 3),
                              "share_of_own_reward_tilt": round(shares[-1] * want / own, 3),
                              "round_s": round(seconds, 1), **health}), flush=True)
            shutil.rmtree(work.parent, ignore_errors=True)
        print(json.dumps({"variant": variant, "median_share": float(np.median(shares))}), flush=True)


if __name__ == "__main__":
    main()
