"""Log-density accuracy of a model pre-trained on a 2-D Gaussian-mixture CSV (issue 14).

    SMEME_THREADS=1 python bench/bench_csv_density.py [--seed 0] [--rows 20000] [--points 2000]
        [--train key=value ...] [--model key=value ...] [--steps-ode 32] [--t-min 1e-3]

Writes `rows` draws of a 3-component 2-D mixture (weights 0.5 / 0.3 / 0.2, different
covariances, overlapping tails) to a CSV, pre-trains with the CSV defaults through
`smeme.pipeline.pretrain_run` (--train / --model override single settings), then compares
`logp_run` (the PF-ODE) on `points` fresh draws with the exact mixture log-density in raw
units: mean absolute error (nats), Spearman correlation, training seconds (wall; and the
CPU seconds of pretrain_run with its round-0 metrics, about what a quiet machine takes at
one thread). The same density code run on the exact mixture (an analytic
GaussianMixtureModel in the run's standardised space) separates the ODE solve's error
from the trained model's.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smeme.density import DEFAULT_STEPS, DEFAULT_T_MIN, log_prob_raw  # noqa: E402
from smeme.models import GaussianMixtureModel  # noqa: E402
from smeme.pipeline import logp_run, pretrain_run  # noqa: E402
from smeme.schedule import VPSchedule  # noqa: E402
from smeme.threads import configure  # noqa: E402

from record import Recording  # noqa: E402  (bench/ is this script's folder)

MAE_TARGET = 0.08  # nats, issue 14

WEIGHTS = [0.5, 0.3, 0.2]
MEANS = [[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]]
COVS = [[[1.0, 0.3], [0.3, 0.5]], [[0.6, 0.0], [0.0, 1.2]], [[0.8, -0.2], [-0.2, 0.4]]]


def mixture() -> GaussianMixtureModel:
    """The benchmark's mixture in raw (CSV) units."""
    return GaussianMixtureModel(WEIGHTS, MEANS, COVS, VPSchedule())


def standardised_mixture(run) -> GaussianMixtureModel:
    """The same mixture seen through the run's standardiser: z = (x - mean) / std."""
    mean, std = np.asarray(run.standardizer.mean), np.asarray(run.standardizer.std)
    means = (np.asarray(MEANS) - mean) / std
    covs = np.asarray(COVS) / np.outer(std, std)
    return GaussianMixtureModel(WEIGHTS, means, covs, VPSchedule())


def errors(est: np.ndarray, truth: np.ndarray) -> dict:
    return {"mae": float(np.abs(est - truth).mean()), "bias": float((est - truth).mean()),
            "p99": float(np.quantile(np.abs(est - truth), 0.99)),
            "spearman": float(spearmanr(est, truth).statistic)}


def parse_overrides(items) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = ast.literal_eval(value)
    return out


def measure(folder, seed: int = 0, rows: int = 20_000, points: int = 2_000, train_params=None,
            model_params=None, density_kw=None) -> dict:
    """Pre-train on a fresh mixture CSV in `folder` and score the PF-ODE log-density."""
    mix = mixture()
    g = torch.Generator().manual_seed(int(seed))
    data = mix.sample_data(rows, g).numpy()
    held = mix.sample_data(points, g)
    csv = Path(folder) / "mixture.csv"
    pd.DataFrame(data, columns=["x", "y"]).to_csv(csv, index=False)
    cpu = time.process_time()
    run = pretrain_run(Path(folder) / "run", "csv", {"path": csv}, train_params=train_params,
                       model_params=model_params)
    cpu = time.process_time() - cpu  # ~ quiet-machine seconds at one thread, whatever the load
    truth = mix.log_prob(held, 0.0).numpy()
    kw = density_kw or {}
    if kw:
        est = log_prob_raw(run.load_model(0), run.domain, run.standardizer, held.numpy(), **kw)
    else:
        est = logp_run(run, 0, held.numpy())
    ode = log_prob_raw(standardised_mixture(run), run.domain, run.standardizer, held.numpy(), **kw)
    return {"model": errors(est, truth), "ode_on_exact_mixture": errors(ode, truth),
            "train_seconds": run.metrics().get(0, {}).get("train", {}).get("seconds"),
            "pretrain_run_cpu_seconds": round(cpu, 1), "train": run.config["train"], "model_config": run.config["model"], "run": run}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0, help="data seed (the defaults were tuned on 0)")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--points", type=int, default=2_000)
    ap.add_argument("--train", nargs="*", help="TrainConfig overrides, key=value")
    ap.add_argument("--model", nargs="*", help="model config overrides, key=value")
    ap.add_argument("--steps-ode", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--t-min", type=float, default=DEFAULT_T_MIN)
    args = ap.parse_args()
    threads = configure()
    density_kw = {}
    if args.steps_ode != DEFAULT_STEPS or args.t_min != DEFAULT_T_MIN:
        density_kw = {"steps": args.steps_ode, "t_min": args.t_min}
    print(f"# {' '.join(sys.argv)}  (threads={threads}, nproc={os.cpu_count()}, "
          f"load={os.getloadavg()[0]:.2f})", flush=True)
    variant = bool(args.train or args.model or density_kw or args.rows != 20_000)
    # a variant is an experiment, not the shipped defaults: it writes no record
    name = "csv_density" if args.seed == 0 else f"csv_density_seed{args.seed}"
    with Recording(name, capability="CSV log-density") as rec, tempfile.TemporaryDirectory() as tmp:
        res = measure(tmp, args.seed, args.rows, args.points, parse_overrides(args.train),
                      parse_overrides(args.model), density_kw)
        res.pop("run")
        print(json.dumps(res, indent=1))
        print(f"load after: {os.getloadavg()[0]:.2f}")
        err = res["model"]
        if not variant:
            rec.row(f"PF-ODE log-density of the CSV preset on a 2-D 3-component Gaussian mixture ({args.rows:,} rows), "
                    f"{args.points:,} fresh draws, data seed {args.seed}",
                    f"MAE {err['mae']:.3f} nats, Spearman {err['spearman']:.3f}, p99 {err['p99']:.2f}; "
                    f"pre-training with its round-0 metrics {res['pretrain_run_cpu_seconds']} CPU s",
                    f"<= {MAE_TARGET} nats (issue 14)", met=err["mae"] <= MAE_TARGET, mae=err["mae"],
                    spearman=err["spearman"], p99=err["p99"], pretrain_cpu_s=res["pretrain_run_cpu_seconds"])


if __name__ == "__main__":
    main()
