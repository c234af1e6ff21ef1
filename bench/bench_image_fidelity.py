"""Digits rounds in closed form at image size, per control, and the real digits rounds per control.

    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py [--controls ddpm,score]
        [--budgets 4x48,24x48] [--rounds 1] [--channels 32,64,64] [--samples 1000] [--steps 40,50,100]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --fixed-point [--trajectories 2048]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --sd [--trajectories 1024]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --digits-run /tmp/hH-dg/digits
        [--controls ddpm,score] [--seeds 0,1,2] [--rounds 1] [--t-r 0.02,0.05] [--lam 0.1]
        [--variants "lr=1e-4;adam_steps=2"] [--digits-label "the ready run"] [--name RECORD]
    SMEME_THREADS=1 nice -n 5 python bench/bench_image_fidelity.py --denoise-runs RUN,RUN [--t-r 0.02,0.05]

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

--digits-run: --rounds rounds of a ready digits run (a fresh copy per control, t_r, variant and seed)
through run_digits_rounds with that control: per round the readable (on-support) share, rare-class
share, confidence and Vendi score against round 0's. The on-support check is off so that a round
explore would reject (readable share down more than 20 points) is measured too, and marked. One
row per setting and round, over the seeds. The test suite's briefly trained model (tests/test_digits.py's
`pretrained`) is smeme.pipeline.pretrain_run(FOLDER, "digits", steps=300, seed=0,
train_params={"lr": 3e-3}); its round is --lam 0.2 --variants iterations=5.

--denoise-runs: each run's round-0 eps error on the digits at each reward time (denoising_error): what
the reward -lam log p(x, t_r) reads, divided by sqrt(1 - ab(t_r)) in score units.
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

from bench_gaussian_fidelity import parse_variant  # noqa: E402  (bench/ is this script's folder)


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


DIGITS_KEYS = ("valid_share", "rare_share", "confidence", "diversity")


def digits_rounds(control: str, seed: int, args, variant: str = "", t_r: float | None = None) -> list[dict]:
    """args.rounds rounds of a copy of the ready run: per round its readable (on-support) share, rare
    share, confidence and Vendi, with round 0's. The on-support check is off (max_validity_drop 1), so
    that a round explore would reject is measured too; `rejected` says whether it would have been."""
    from smeme.images.digits_rounds import DIGITS_LAM, DIGITS_T_R, run_digits_rounds
    from smeme.store import Run

    t_r = DIGITS_T_R if t_r is None else t_r
    lam = DIGITS_LAM if args.lam is None else args.lam
    solver = {"control": control, "max_validity_drop": 1.0, **parse_variant(variant)}
    with tempfile.TemporaryDirectory(prefix="smeme-imgfid-") as tmp:
        dest = Path(tmp) / "digits"
        shutil.copytree(args.digits_run, dest)
        run = Run.open(dest)
        start = time.time()
        run_digits_rounds(run, args.rounds, lam=lam, t_r=t_r, seed=seed, solver=solver)
        wall = time.time() - start
        metrics = run.metrics()
    out = []
    for k in range(1, args.rounds + 1):
        after, prev = metrics[k], metrics[k - 1]
        row = {"control": control, "t_r": t_r, "lam": lam, "variant": variant, "seed": seed, "round": k,
               "wall_s": round(wall / args.rounds, 1), **{f"{key}_before": metrics[0].get(key) for key in DIGITS_KEYS},
               **{key: after.get(key) for key in DIGITS_KEYS},
               "rejected": after["valid_share"] < prev["valid_share"] - 0.2,
               "solver_converged": after.get("solver_converged")}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def digits_setting_rows(rows: list[dict], label: str, rec) -> None:
    """One record row per setting and round over the solver seeds: each metric's round-0 value, then
    its value per seed and their mean. Met: no seed's round would be rejected and the mean rare share
    and Vendi are above round 0's."""
    settings: dict = {}
    for r in rows:
        settings.setdefault((r["control"], r["t_r"], r["lam"], r["variant"], r["round"]), []).append(r)
    for (control, t_r, lam, variant, k), group in settings.items():
        seeds = ",".join(str(r["seed"]) for r in group)
        mean = {key: float(np.mean([r[key] for r in group])) for key in DIGITS_KEYS}
        text = "; ".join(f"{group[0][key + '_before']:.3f} -> " + " / ".join(f"{r[key]:.3f}" for r in group)
                         + f" (mean {mean[key]:.3f})" for key in DIGITS_KEYS)
        rejected = sum(r["rejected"] for r in group)
        text += f"; {rejected} of {len(group)} rejected" if rejected else ""
        what = (f"{label}, {control} control, t_r {t_r:g}, lam {lam:g}" + (f", {variant}" if variant else "")
                + f": round {k}, solver seeds {seeds}: readable share; rare share; confidence; Vendi "
                "(round 0 -> per seed)")
        before = group[0]
        rec.row(what, text, "rare share and Vendi up (mean), no round rejected",
                met=not rejected and mean["rare_share"] > before["rare_share_before"]
                and mean["diversity"] > before["diversity_before"],
                control=control, t_r=t_r, lam=lam, variant=variant, round=k, seeds=[r["seed"] for r in group],
                **{f"{key}_before": before[f"{key}_before"] for key in DIGITS_KEYS},
                **{key: [r[key] for r in group] for key in DIGITS_KEYS},
                **{f"{key}_mean": round(mean[key], 4) for key in DIGITS_KEYS},
                rejected=[r["rejected"] for r in group], wall_s=[r["wall_s"] for r in group],
                solver_converged=[r["solver_converged"] for r in group])


def denoising_error(folder: str, args, rec) -> None:
    """Round 0's denoising error of a digits run on all 1,797 digits, per reward time: the mean
    squared eps error per pixel (4 noise draws, seed 0) and that error in score units (its root over
    sqrt(1 - ab(t)), the reward gradient's error per unit lambda). The optimum's error is not zero (the
    data's own posterior spread), so two runs' difference bounds the worse one's excess from below."""
    import torch

    from smeme.images.pixels import load_all_digits, raw_to_images
    from smeme.store import Run

    raw, _ = load_all_digits()
    x0 = torch.tensor(raw_to_images(raw), dtype=torch.float32).reshape(-1, 1, 8, 8)
    model = Run.open(folder).load_model(0).eval()
    for t in (float(v) for v in (args.t_r or "0.02,0.05,0.1,0.2").split(",")):
        g = torch.Generator().manual_seed(0)
        ab = model.schedule.ab(torch.tensor(t))
        errs = []
        for _ in range(4):
            eps = torch.randn(x0.shape, generator=g)
            with torch.no_grad():
                pred = model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, torch.full((len(x0),), t))
            errs.append(float(((pred - eps) ** 2).mean()))
        mse, root = float(np.mean(errs)), float((1 - ab).sqrt())
        row = {"run": Path(folder).name, "t": t, "eps_mse": round(mse, 4), "sqrt_1_minus_ab": round(root, 4),
               "score_rms": round(mse ** 0.5 / root, 3)}
        print(json.dumps(row), flush=True)
        rec.row(f"denoising error of {Path(folder).name}'s round 0 at t = {t:g}: eps mean squared error per pixel; "
                f"in score units", f"{mse:.3f}; {mse ** 0.5 / root:.2f} (sqrt(1 - ab) = {root:.3f})", **row)


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
    ap.add_argument("--digits-label", default="the digits run", help="--digits-run: what the run is, for the rows")
    ap.add_argument("--t-r", default=None, help="--digits-run: ','-joined reward times (default DIGITS_T_R); "
                    "--denoise-runs: the times (default 0.02,0.05,0.1,0.2)")
    ap.add_argument("--lam", type=float, default=None, help="--digits-run: lambda (default DIGITS_LAM)")
    ap.add_argument("--variants", default="",
                    help="--digits-run: ';'-separated solver overrides 'key=value,...' ('' is the defaults)")
    ap.add_argument("--denoise-runs", default=None,
                    help="','-joined digits runs: their round 0's denoising error per --t-r instead")
    ap.add_argument("--name", default=None, help="the record's name (bench/results/NAME.json)")
    args = ap.parse_args()

    from smeme.threads import configure

    configure()
    from record import Recording

    print(json.dumps({"load": [round(v, 2) for v in os.getloadavg()]}), flush=True)
    name, capability = (("digits_round_controls", "Digits round") if args.digits_run or args.denoise_runs
                        else ("sd_fixed_point", "Image rounds in closed form") if args.sd
                        else ("image_fixed_point", "Image rounds in closed form") if args.fixed_point
                        else (f"image_fidelity_{args.channels.replace(',', '_')}", "Image rounds in closed form"))
    with Recording(args.name or name, capability=capability) as rec:
        for folder in (args.denoise_runs.split(",") if args.denoise_runs else []):
            denoising_error(folder, args, rec)
        for control in ([] if args.denoise_runs else args.controls.split(",")):
            if args.sd:
                sd_fixed_point(control, args, rec)
            elif args.fixed_point:
                fixed_point(control, args, rec)
            elif args.digits_run:
                for t_r in ([None] if args.t_r is None else [float(v) for v in args.t_r.split(",")]):
                    for variant in args.variants.split(";"):
                        digits_setting_rows([r for seed in (int(s) for s in args.seeds.split(","))
                                             for r in digits_rounds(control, seed, args, variant, t_r)],
                                            args.digits_label, rec)
            else:
                for budget in args.budgets.split(","):
                    closed_form(control, budget, args, rec)


if __name__ == "__main__":
    main()
