"""One round on a trained MLP of d-dim Gaussian data: the exact gain reached per whitened direction.

    SMEME_THREADS=1 python bench/bench_gaussian_fidelity.py --d 8 [--seeds 5,6,7]
        [--eigenvalues 0.06,1,1,1.5,1.44] [--variants ";reward_target=smoothed"] [--folder /tmp/g8]

The data, pre-training and the truth are tests/test_fidelity.py's (imported from there):
correlated Gaussian columns (default), or with --eigenvalues columns whose standardised
covariance has exactly that spectrum (spread_gaussian_csv). Covariances from 8,000 samples of
400 DDPM steps; Cov_1^exact = Cov_0 / (1 - lam) for the paper's target (reward_target 'data'),
(Cov_0^-1 - lam S_r^-1)^-1 with S_r = ab(t_r) Cov_0 + (1 - ab) I for the smoothed one. Printed
per round: the whitened variance ratios (eigenvalues of C0^-1/2 C1 C0^-1/2) min / median / max
against the exact ones, the share of the exact log-variance gain per direction (min / median /
max) and of the log-determinant, the likelihood-ratio weights' health and the round's seconds,
and the same shares against the reward's own exact round (below). Variants are ExploreConfig
fields, ';'-separated, ','-joined within.

'reward_implied' judges the same round against the exact round of the reward the solver is given:
a trained MLP is not a consistent diffusion model, so its score at t_r need not be that of its own
samples' covariance diffused to t_r. The round's reward gradient (explore's RoundReward) on the
round-0 samples, fitted linearly, g(x) ~ H x + b, tilts a Gaussian N(., C0) to (C0^-1 - H)^-1,
which is the formula's truth exactly when the score is consistent (H = lam S_r^-1). Its gap to the
formula's truth is the model's share of the error, the rest is the solver's.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from record import Recording  # noqa: E402  (bench/ is this script's folder)

SHARE_TARGET = 0.9  # tests/test_fidelity.py: the median over seeds of the log-det share


def parse_variant(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        try:
            out[key] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:  # a word, e.g. reward_target=smoothed
            out[key] = value
    return out


def shape_row(c1: np.ndarray, c_exact: np.ndarray, c0: np.ndarray) -> dict:
    from test_fidelity import direction_shares, logdet_gain, whitened_ratios

    got, want, shares = whitened_ratios(c1, c0), whitened_ratios(c_exact, c0), direction_shares(c1, c_exact, c0)
    r = lambda v: [round(float(np.min(v)), 3), round(float(np.median(v)), 3), round(float(np.max(v)), 3)]  # noqa: E731
    return {"whitened_min_med_max": r(got), "exact_min_med_max": r(want), "share_min_med_max": r(shares),
            "logdet_share": round(logdet_gain(c1, c0) / logdet_gain(c_exact, c0), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--seeds", default="5,6,7")
    ap.add_argument("--variants", default="", help="';'-separated; '' is the defaults")
    ap.add_argument("--folder", help="where the pre-trained run is kept (default: a temporary folder)")
    ap.add_argument("--data-seed", type=int, default=None, help="the data's seed (default: the test's, 20 + d)")
    ap.add_argument("--eigenvalues", help="comma-separated spectrum of the standardised covariance (length d)")
    ap.add_argument("--independent", action="store_true", help="independent columns (the test's other data)")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="pre-training steps (default: the test's PRETRAIN_STEPS; 0: the CSV preset's, sized to the rows)")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    from test_fidelity import (PRETRAIN_STEPS, correlated_gaussian_csv, independent_gaussian_csv, model_cov,
                               spread_gaussian_csv)

    from smeme.pipeline import pretrain_run
    from smeme.store import Run

    root = Path(args.folder or tempfile.mkdtemp(prefix=f"gauss{args.d}_"))
    data_seed = (40 if args.independent else 20) + args.d if args.data_seed is None else args.data_seed
    if not (root / "run" / "metrics.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        if args.eigenvalues:
            eig = [float(v) for v in args.eigenvalues.split(",")]
            if len(eig) != args.d:
                raise SystemExit(f"--eigenvalues has {len(eig)} values for d = {args.d}.")
            csv = spread_gaussian_csv(root / "data.csv", eig, data_seed)
        else:
            make = independent_gaussian_csv if args.independent else correlated_gaussian_csv
            csv = make(root / "data.csv", args.d, seed=data_seed)
        steps = PRETRAIN_STEPS if args.pretrain_steps is None else (args.pretrain_steps or None)
        pretrain_run(root / "run", "csv", {"path": str(csv)}, steps=steps)
    src = Run.open(root / "run")
    cov0 = model_cov(src, 0)
    print(json.dumps({"d": args.d, "cov0_eigenvalues": np.round(np.linalg.eigvalsh(cov0), 3).tolist()}), flush=True)
    with Recording(record_name(args), capability="Gaussian fidelity") as rec:
        defaults = []  # the defaults' rows ('' variant), for the record
        for variant in args.variants.split(";"):
            defaults += run_variant(src, cov0, variant, args)
        if defaults:
            record_row(rec, args, defaults)


def record_name(args: argparse.Namespace) -> str:
    """gaussian_fidelity_d8 for the test's data; suffixes name any other data or pre-training."""
    name = f"gaussian_fidelity_d{args.d}" + ("_independent" if args.independent else "")
    name += "_spread" if args.eigenvalues else ""
    name += "" if args.data_seed is None else f"_data{args.data_seed}"
    return name + ("" if args.pretrain_steps is None else f"_steps{args.pretrain_steps}")


def record_row(rec: Recording, args: argparse.Namespace, rows: list[dict]) -> None:
    key = "smoothed_target" if "smoothed_target" in rows[0] else "paper_target"
    shares = [r[key]["logdet_share"] for r in rows]
    lowest = min(r[key]["share_min_med_max"][0] for r in rows)
    highest = max(r[key]["share_min_med_max"][2] for r in rows)
    median = float(np.median(shares))
    implied = [r["reward_implied"]["share_min_med_max"] for r in rows]
    rec.row(f"one round at lam {rows[0]['lam']:.3g}, explore defaults, d = {args.d}"
            + (", independent columns" if args.independent else "") + (f", spectrum {args.eigenvalues}" if args.eigenvalues else "")
            + f": share of the exact log-det gain ({key.replace('_', ' ')})",
            " / ".join(f"{v:.3f}" for v in shares)
            + f" (seeds {args.seeds}); lowest direction {lowest:.2f}, highest {highest:.2f}; "
            + ", ".join(f"{r['round_s']} s" for r in rows) + " a round; against the reward's own exact round "
            + " / ".join(f"{lo:.2f}-{hi:.2f}" for lo, _, hi in implied),
            f">= {SHARE_TARGET} median (tests/test_fidelity.py)", met=median >= SHARE_TARGET,
            median_logdet_share=median, lowest_direction_share=lowest, highest_direction_share=highest,
            reward_implied_lowest=min(v[0] for v in implied), reward_implied_highest=max(v[2] for v in implied))


def run_variant(src, cov0, variant: str, args: argparse.Namespace) -> list[dict]:
    """One round per seed of ExploreConfig defaults plus `variant`; the rows when it is the defaults."""
    from test_fidelity import LAM, exact_covs, model_cov, target_t_r

    from smeme.explore import ExploreConfig, run_rounds
    from smeme.store import Run

    out, implied = [], {}
    for seed in (int(s) for s in args.seeds.split(",")):
        work = Path(tempfile.mkdtemp()) / "run"
        shutil.copytree(src.folder, work)
        run = Run.open(work)
        config = ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM, "seed": seed,
                                  "metrics_logp": False, **parse_variant(variant)})
        start = time.perf_counter()
        run_rounds(run, 1, config)
        seconds = time.perf_counter() - start
        c1 = model_cov(run, 1)
        health = {k: (round(v, 4) if isinstance(v, float) else v)
                  for k, v in run.metrics()[1].items() if k.startswith("lr_")}
        row = {"variant": variant, "seed": seed, "round_s": round(seconds, 1),
               "paper_target": shape_row(c1, exact_covs(run, cov0, 1, 0.0)[1], cov0)}
        if target_t_r(config) > 0:
            row["smoothed_target"] = shape_row(c1, exact_covs(run, cov0, 1, config.t_r)[1], cov0)
        key = (config.lam_at(1), config.t_r, config.reward_target, config.reward, config.score_clip)
        if key not in implied:  # the same for every seed
            implied[key] = reward_implied_cov(src, cov0, config)
        row["reward_implied"] = shape_row(c1, implied[key], cov0)
        print(json.dumps({**row, **health}), flush=True)
        shutil.rmtree(work.parent, ignore_errors=True)
        if not variant:
            out.append({**row, "lam": LAM})
    return out


def reward_implied_cov(src, cov0: np.ndarray, config) -> np.ndarray:
    """The exact round-1 covariance under the reward the solver is given (module docstring): the
    reward gradient on round 0's samples (model_cov's) fitted linearly, H the fit's symmetric slope."""
    import torch
    from test_fidelity import EVAL_STEPS, N_EVAL

    from smeme.explore import RoundReward, _frozen
    from smeme.sampling import sample

    model = src.load_model(0)
    x = sample(model, N_EVAL, steps=EVAL_STEPS, seed=99)  # model_cov's samples
    reward = RoundReward(_frozen(model), config.lam_at(1), config)
    g = torch.cat([reward.grad(chunk).detach() for chunk in x.split(2048)]).double().numpy()
    xs = np.hstack([x.double().numpy(), np.ones((len(x), 1))])
    slope = np.linalg.lstsq(xs, g, rcond=None)[0][:-1].T
    return np.linalg.inv(np.linalg.inv(cov0) - (slope + slope.T) / 2)


if __name__ == "__main__":
    main()
