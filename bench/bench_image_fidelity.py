"""Digits rounds in closed form at image size, per control, and the real digits rounds per control.

    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py [--controls ddpm,score]
        [--budgets 4x48,24x48] [--rounds 1] [--channels 32,64,64] [--samples 1000] [--steps 40,50,100]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --fixed-point [--trajectories 2048]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --sd [--trajectories 1024]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --digits-run /tmp/hH-dg/digits
        [--controls ddpm,score] [--seeds 0,1,2]

Closed form (the default): tests/test_image_fidelity.py's round (imported from there): an analytic
Gaussian image model N(0, S) of the digits' shape (1x8x8; the digits' top 10 principal components plus
0.01 in every pixel direction) through the digits' cosine schedule, plus a zero-start correction with
the digits UNet's form (--channels; the digits' own by default), tuned by the digits' solver config
(digits_explore_config, its `control` replaced) with explore's RoundReward, for each budget
('ITERATIONSxTRAJECTORIES'; lr and Adam steps per iteration are the digits'). Per eigen-direction of S,
signal (10) and noise (54) apart: the share of the exact tilt's log-variance gain of paired samples
through each step count in --steps (40: the solver's chain, 50: the digits metrics', 100: the app's
draws), and the share of the exact change of the eps slope at t_r (what the next round's reward reads).

--fixed-point: per control, the solver's regression target over the exact tilt's control on
trajectories of the exact tilt (tests/test_image_fidelity.fixed_point_ratios), per band of steps:
1 where the exact tilt is that control's fixed point.

--sd: the same fixed point for Stable Diffusion rounds (tests/test_sd_fidelity.py): a Gaussian latent
of the tiny pipeline's shape (4x8x8; 8 signal directions of variance 1-0.1 plus 0.01 in all 256) through
its scheduler's table, the SD round's guided problem and solver settings, per control, guidance w = 1
and 8, round 1 and round 2 (from round 1's exact tilt): per eigen-direction, the ratio pooled over the
steps with t <= 0.25 (slope: the variance's control; intercept: the mean's), and how many step x
direction comparisons miss 0.02 + 4.5 se.

--digits-run: one round of a ready digits run (a fresh copy per control and seed) through
run_digits_rounds with that control: rare-class share, confidence, readable share, Vendi score.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def span(v) -> list:
    v = np.asarray(v)
    return [round(float(v.min()), 3), round(float(np.median(v)), 3), round(float(v.max()), 3)]


def closed_form(control: str, budget: str, args, rec) -> None:
    import torch
    from test_image_fidelity import (RANK, digits_image_covariance, exact_sample_log_ratios, image_rounds,
                                     sample_log_ratios, score_shares, tilted_variances)

    from smeme.images.unet import UNetConfig

    iterations, trajectories = (int(v) for v in budget.split("x"))
    unet = UNetConfig(block_out_channels=tuple(int(c) for c in args.channels.split(",")))
    _, e, q = digits_image_covariance()
    base, tuned, results, config, cpu = image_rounds(control, args.seed, rounds=args.rounds, unet=unet,
                                                     iterations=iterations, trajectories=trajectories)
    ab_r = float(base.schedule.ab(torch.tensor(config.t_r, dtype=torch.float64)))
    noise, signal = slice(0, 64 - RANK), slice(64 - RANK, 64)
    for k, model in enumerate(tuned, 1):
        row = {"control": control, "budget": budget, "round": k, "channels": args.channels, "seed": args.seed,
               "solver_cpu_s": round(cpu, 1), "converged": results[k - 1].converged,
               "control_change": results[k - 1].control_change}
        for steps in (int(s) for s in args.steps.split(",")):
            log_r, se = sample_log_ratios(model, base, q, steps, args.samples)
            want = exact_sample_log_ratios(e, config, steps, k)
            share = log_r / want
            row[f"share{steps}_signal"], row[f"share{steps}_noise"] = span(share[signal]), span(share[noise])
            row[f"share{steps}_se_max"] = round(float((se / np.abs(want)).max()), 3)
        score, score_se = score_shares(model, base, e, q, tilted_variances(e, config.lam_at(1), ab_r, k), config.t_r)
        row["score_share_t_r_signal"], row["score_share_t_r_noise"] = span(score[signal]), span(score[noise])
        print(json.dumps(row), flush=True)
        s40 = row.get("share40_signal") or row[f"share{args.steps.split(',')[0]}_signal"]
        rec.row(f"closed form, {control} control, {budget}, round {k}: share of the exact gain, signal "
                f"directions (min/median/max)", f"{s40}; noise {row.get('share40_noise')}; 100 steps "
                f"{row.get('share100_signal')} / {row.get('share100_noise')}; converged {row['converged']}",
                "each direction 0.9-1.1", met=bool(max(abs(s40[0] - 1), abs(s40[2] - 1)) <= 0.1), **row)


def fixed_point(control: str, args, rec) -> None:
    from test_image_fidelity import RANK, fixed_point_ratios

    start = time.process_time()
    ratios, se, t = fixed_point_ratios(control, trajectories=args.trajectories)
    cpu = time.process_time() - start
    for lo, hi in ((0.1, 0.25), (0.02, 0.1), (0.0, 0.02)):
        rows = (t > lo) & (t <= hi)
        sig, noi = ratios[rows][:, 64 - RANK:], ratios[rows][:, :64 - RANK]
        row = {"control": control, "t": [lo, hi], "signal": span(sig), "noise": span(noi),
               "se_max": round(float(se[rows].max()), 3), "cpu_s": round(cpu, 1)}
        print(json.dumps(row), flush=True)
        worst = float(np.abs(ratios[rows] - 1).max())
        rec.row(f"fixed point, {control} control, steps with t in ({lo}, {hi}]: regression target over the exact "
                f"tilt's control, signal (min/median/max)", f"{row['signal']}; noise {row['noise']} "
                f"(se <= {row['se_max']})", "1 in every direction (within 0.02 + 4.5 se)",
                met=bool(np.all(np.abs(ratios[rows] - 1) <= 0.02 + 4.5 * se[rows])), worst=worst, **row)


def sd_fixed_point(control: str, args, rec) -> None:
    from fixed_point import LATE_T
    from test_sd_fidelity import RANK, W, fixed_point_report, sd_fixed_point

    for w in (1.0, W):
        for rounds in (1, 2):
            start = time.process_time()
            report = fixed_point_report(sd_fixed_point(control, w, rounds, trajectories=args.trajectories))
            cpu = time.process_time() - start
            (slope_miss, slope, slope_se), (icpt_miss, icpt, icpt_se) = report["slope"], report["intercept"]
            row = {"control": control, "w": w, "round": rounds, "late_t": LATE_T, "trajectories": args.trajectories,
                   "slope_signal": span(slope[-RANK:]), "slope_noise": span(slope[:-RANK]),
                   "slope_se_max": round(float(slope_se.max()), 4),
                   "intercept_signal": span(icpt[-RANK:]), "intercept_noise": span(icpt[:-RANK]),
                   "intercept_se_max": round(float(np.nanmax(icpt_se)), 4),
                   "misses": int((slope_miss > 0).sum() + (icpt_miss > 0).sum()),
                   "comparisons": int(slope_miss.size + np.isfinite(icpt_miss).sum()), "cpu_s": round(cpu, 1)}
            print(json.dumps(row), flush=True)
            within = (np.all(np.abs(slope - 1) <= 0.1) and np.all(np.abs(icpt[-RANK:] - 1) <= 0.1)
                      and row["misses"] == 0)
            rec.row(f"SD fixed point, {control} control, w = {w:g}, round {rounds}: regression target over the "
                    f"exact tilt's control pooled over t <= {LATE_T}, per direction: slope signal (min/median/max)",
                    f"{row['slope_signal']}; noise {row['slope_noise']}; mean's control, signal "
                    f"{row['intercept_signal']}; {row['misses']} of {row['comparisons']} step x direction "
                    f"comparisons miss", "every direction within 10%, no step beyond 0.02 + 4.5 se",
                    met=bool(within), **row)


def digits_rounds(control: str, seed: int, args, rec) -> None:
    from smeme.images.digits_rounds import run_digits_rounds
    from smeme.store import Run

    with tempfile.TemporaryDirectory(prefix="smeme-imgfid-") as tmp:
        dest = Path(tmp) / "digits"
        shutil.copytree(args.digits_run, dest)
        run = Run.open(dest)
        start = time.time()
        run_digits_rounds(run, 1, seed=seed, solver={"control": control})
        wall = time.time() - start
        before, after = run.metrics()[0], run.metrics()[1]
    keys = ("rare_share", "confidence", "valid_share", "diversity")
    row = {"control": control, "seed": seed, "wall_s": round(wall, 1),
           **{f"{k}_before": before.get(k) for k in keys}, **{k: after.get(k) for k in keys},
           "solver_converged": after.get("solver_converged")}
    print(json.dumps(row), flush=True)
    rec.row(f"digits round 1, {control} control, seed {seed}: rare share, confidence, readable share, Vendi",
            " / ".join(f"{after.get(k):.3f}" if isinstance(after.get(k), float) else str(after.get(k))
                       for k in keys) + f" (before {before.get('rare_share'):.3f})",
            "rare share up", met=after.get("rare_share", 0) > before.get("rare_share", 1), **row)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--controls", default="ddpm,score")
    ap.add_argument("--budgets", default="4x48,24x48", help="ITERATIONSxTRAJECTORIES, ','-joined")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--channels", default="32,64,64", help="the correction UNet's block_out_channels")
    ap.add_argument("--samples", type=int, default=1000, help="paired samples per step count")
    ap.add_argument("--steps", default="40,50,100", help="DDPM step counts the samples are drawn with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed-point", action="store_true",
                    help="the regression at the exact tilt per control (tests/test_image_fidelity.py) instead")
    ap.add_argument("--sd", action="store_true",
                    help="the fixed point of Stable Diffusion rounds (tests/test_sd_fidelity.py) instead")
    ap.add_argument("--trajectories", type=int, default=2048, help="--fixed-point, --sd: trajectories")
    ap.add_argument("--digits-run", default=None, help="a ready digits run: measure its rounds instead")
    ap.add_argument("--seeds", default="0,1,2", help="--digits-run: solver seeds")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    from record import Recording

    print(json.dumps({"load": [round(v, 2) for v in os.getloadavg()]}), flush=True)
    name, capability = (("digits_round_controls", "Digits round") if args.digits_run
                        else ("sd_fixed_point", "Image rounds in closed form") if args.sd
                        else ("image_fixed_point", "Image rounds in closed form") if args.fixed_point
                        else (f"image_fidelity_{args.channels.replace(',', '_')}", "Image rounds in closed form"))
    with Recording(name, capability=capability) as rec:
        for control in args.controls.split(","):
            if args.sd:
                sd_fixed_point(control, args, rec)
            elif args.fixed_point:
                fixed_point(control, args, rec)
            elif args.digits_run:
                for seed in (int(s) for s in args.seeds.split(",")):
                    digits_rounds(control, seed, args, rec)
            else:
                for budget in args.budgets.split(","):
                    closed_form(control, budget, args, rec)


if __name__ == "__main__":
    main()
