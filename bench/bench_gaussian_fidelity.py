"""One round on a trained MLP of d-dim Gaussian data: the exact gain reached per whitened direction.

    SMEME_THREADS=1 python bench/bench_gaussian_fidelity.py --d 8 [--seeds 5,6,7]
        [--eigenvalues 0.06,1,1,1.5,1.44] [--variants ";reward_target=smoothed"] [--folder /tmp/g8]
    SMEME_THREADS=1 python bench/bench_gaussian_fidelity.py --d 32 --manifold 0.1 --seeds 11,12 --pretrain-steps 0
    SMEME_THREADS=1 python bench/bench_gaussian_fidelity.py --d 16 --eigenvalues ... --rounds 3 --pretrain-steps 0

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

--manifold NOISE: data of rank 4 plus isotropic noise, the spectrum of test_fidelity_highd's
manifold_covariance (tangent variances 0.5:1:1.5:2 filling the trace, NOISE in the d - 4 normal
directions, standardised units). Judged apart in the tangent and the normal subspace (the model's
own top-4 and remaining eigen-directions: an exact round keeps C0's eigenbasis), each round's
whitened covariance restricted to the subspace and diagonalised there (subspace_shares). The
normal directions' bound: none grows beyond the paper's target, 1 / (1 - lam) (that target widens
every whitened direction alike; the smoothed one widens these less), and none shrinks below 1.

--rounds K: K rounds of run_rounds (each reads its reward from the previous tuned network, as
explore does), each judged against the exact recursion's cumulative round (test_fidelity's
exact_covs: round k tilts the exact round k - 1).

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
    """'key=value,...' -> settings (numbers where they parse, words as they are)."""
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
    ap.add_argument("--manifold", type=float, default=None,
                    help="rank 4 plus this variance in the d - 4 normal directions (standardised; module docstring)")
    ap.add_argument("--record", help="the record's name (default: record_name's, from the data and pre-training)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per seed, each judged against the exact recursion")
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
        if args.manifold is not None:
            csv = spread_gaussian_csv(root / "data.csv", manifold_spectrum(args.d, args.manifold), data_seed)
        elif args.eigenvalues:
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
    capability = "Solver fidelity in 16-64 dimensions" if args.manifold is not None or args.rounds > 1 \
        else "Gaussian fidelity"
    with Recording(args.record or record_name(args), capability=capability) as rec:
        for variant in args.variants.split(";"):
            rows = run_variant(src, cov0, variant, args)
            if args.manifold is not None:
                record_manifold_rows(rec, args, variant, rows)
            elif args.rounds > 1:
                record_rounds_rows(rec, args, variant, rows)
            elif not variant and rows:
                record_row(rec, args, rows)


def manifold_spectrum(d: int, noise: float) -> np.ndarray:
    """test_fidelity_highd.manifold_covariance's eigenvalues (mean 1): d - 4 normal, then 4 tangent."""
    from test_fidelity_highd import manifold_covariance

    return manifold_covariance(d, noise)[1]


def record_name(args: argparse.Namespace) -> str:
    """gaussian_fidelity_d8 for the test's data; suffixes name any other data or pre-training."""
    name = f"gaussian_fidelity_d{args.d}" + ("_independent" if args.independent else "")
    name += "_spread" if args.eigenvalues else ""
    name += "" if args.manifold is None else f"_rank4_noise{args.manifold:g}"
    name += "" if args.rounds == 1 else f"_rounds{args.rounds}"
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
    """args.rounds rounds per seed of ExploreConfig defaults plus `variant`: one row per seed and round."""
    from test_fidelity import LAM, exact_covs, model_cov

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
        run_rounds(run, args.rounds, config)
        seconds = time.perf_counter() - start
        paper, smoothed = exact_covs(run, cov0, args.rounds, 0.0), exact_covs(run, cov0, args.rounds, config.t_r)
        key = (config.lam_at(1), config.t_r, config.reward_target, config.reward, config.score_clip)
        if key not in implied:  # the same for every seed
            implied[key] = reward_implied_cov(src, cov0, config)
        for k in range(1, args.rounds + 1):
            ck = model_cov(run, k)
            health = {h: (round(v, 4) if isinstance(v, float) else v)
                      for h, v in run.metrics()[k].items() if h.startswith("lr_") or h == "solver_seconds"}
            row = {"variant": variant, "seed": seed, "round": k, "round_s": round(seconds / args.rounds, 1),
                   "lam": LAM, "paper_target": shape_row(ck, paper[k], cov0)}
            if config.target_t_r > 0:
                row["smoothed_target"] = shape_row(ck, smoothed[k], cov0)
            if k == 1:  # the reward's own exact round: round 1's reward only
                row["reward_implied"] = shape_row(ck, implied[key], cov0)
            if args.manifold is not None:
                row["manifold"] = {
                    "smoothed": subspace_shares(ck, smoothed[k], cov0),
                    "paper": subspace_shares(ck, paper[k], cov0),
                    **({"reward_implied": subspace_shares(ck, implied[key], cov0)} if k == 1 else {})}
            print(json.dumps({**row, **health}), flush=True)
            out.append(row)
        shutil.rmtree(work.parent, ignore_errors=True)
    return out


def subspace_shares(c: np.ndarray, c_exact: np.ndarray, c0: np.ndarray, rank: int = 4) -> dict:
    """The round judged apart in the tangent (C0's top `rank` eigen-directions) and the normal
    subspace: in C0's symmetric whitened frame (where both are spanned by C0's eigenvectors), the
    measured covariance restricted to the subspace is diagonalised there, and along each of its
    eigenvectors v the measured ratio, the exact one (v' W C* W v) and the share of the exact
    log-variance gain, ascending by measured ratio."""
    vals, vecs = np.linalg.eigh(c0)
    w = vecs @ np.diag(vals ** -0.5) @ vecs.T
    m, m_exact = w @ c @ w, w @ c_exact @ w
    out = {}
    for name, basis in (("tangent", vecs[:, -rank:]), ("normal", vecs[:, :-rank])):
        ratio, sub = np.linalg.eigh(basis.T @ m @ basis)
        v = basis @ sub
        exact = np.einsum("ij,ik,kj->j", v, m_exact, v)
        out[name] = {"ratio": [round(float(r), 3) for r in ratio] if name == "tangent" else _span(ratio),
                     "exact": [round(float(r), 3) for r in exact] if name == "tangent" else _span(exact),
                     "share": [round(float(r), 3) for r in np.log(ratio) / np.log(exact)] if name == "tangent"
                     else _span(np.log(ratio) / np.log(exact))}
    return out


def _span(v) -> list:
    return [round(float(np.min(v)), 3), round(float(np.median(v)), 3), round(float(np.max(v)), 3)]


def _pretraining(args: argparse.Namespace) -> str:
    if args.pretrain_steps == 0:
        return "the preset's pre-training"
    from test_fidelity import PRETRAIN_STEPS

    return f"{args.pretrain_steps or PRETRAIN_STEPS} pre-training steps"


def _lo_hi(values) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def record_manifold_rows(rec: Recording, args: argparse.Namespace, variant: str, rows: list[dict]) -> None:
    """One row per variant: the tangent directions' shares (smoothed target, the issue's bar 0.9-1.1),
    against the paper's target and the reward's own round, and the normal directions' ratios against
    the bound [1, 1 / (1 - lam)]."""
    lam = rows[0]["lam"]
    bound = 1 / (1 - lam)
    seeds = "/".join(str(r["seed"]) for r in rows)
    tangent = [r["manifold"]["smoothed"]["tangent"]["share"] for r in rows]
    paper = [r["manifold"]["paper"]["tangent"]["share"] for r in rows]
    implied = [r["manifold"]["reward_implied"]["tangent"]["share"] for r in rows]
    normal = [r["manifold"]["smoothed"]["normal"] for r in rows]
    n_lo, n_hi = min(n["ratio"][0] for n in normal), max(n["ratio"][2] for n in normal)
    t_lo, t_hi = min(min(t) for t in tangent), max(max(t) for t in tangent)
    eig = manifold_spectrum(args.d, args.manifold)
    what = (f"D = {args.d}, rank 4 (tangent variances {eig[-4]:.1f}-{eig[-1]:.1f}) plus {args.manifold:g} in the "
            f"{args.d - 4} normal directions, trained ({_pretraining(args)}), one round at lam {lam:g}, "
            + (f"variant {variant}" if variant else "explore defaults (Adjoint Matching alone, the larger budget)")
            + f" (seeds {seeds})")
    result = ("tangent shares of the smoothed target's gain " + " / ".join(_lo_hi(t) for t in tangent)
              + " (paper's target " + " / ".join(_lo_hi(t) for t in paper)
              + "; the reward's own round " + " / ".join(_lo_hi(t) for t in implied)
              + f"); normal ratios {n_lo:.3f}-{n_hi:.3f} (smoothed exact "
              + _lo_hi([n["exact"][0] for n in normal] + [n["exact"][2] for n in normal])
              + f", paper's {bound:.3f}; shares " + " / ".join(_lo_hi(n["share"]) for n in normal) + "); "
              + ", ".join(f"{r['round_s']} s" for r in rows) + " a round")
    met = 0.9 <= t_lo and t_hi <= 1.1 and 1 <= n_lo and n_hi <= bound
    rec.row(what, result, f"tangent within 0.9-1.1, normal ratios within [1, {bound:.3f}] (issue 20)", met=met,
            tangent_lowest=t_lo, tangent_highest=t_hi, normal_ratio_lowest=n_lo, normal_ratio_highest=n_hi,
            paper_tangent_lowest=min(min(t) for t in paper), paper_tangent_highest=max(max(t) for t in paper),
            implied_tangent_lowest=min(min(t) for t in implied), implied_tangent_highest=max(max(t) for t in implied))


def record_rounds_rows(rec: Recording, args: argparse.Namespace, variant: str, rows: list[dict]) -> None:
    """One row per round: every whitened direction's share of the exact cumulative gain (smoothed
    target, the issue's bar 0.85-1.15 over 3 rounds) and the log-det share, per seed."""
    for k in range(1, args.rounds + 1):
        at_k = [r for r in rows if r["round"] == k]
        key = "smoothed_target" if "smoothed_target" in at_k[0] else "paper_target"
        spans = [r[key]["share_min_med_max"] for r in at_k]
        lo, hi = min(s[0] for s in spans), max(s[2] for s in spans)
        spectrum = "50x-spread spectrum" if args.eigenvalues else "correlated columns"
        rec.row(f"D = {args.d}, {spectrum}, trained ({_pretraining(args)}), rounds run by run_rounds at lam {at_k[0]['lam']:g}, "
                + (f"variant {variant}" if variant else "explore defaults")
                + f": round {k} against the exact {k}-round recursion ({key.replace('_', ' ')}), seeds "
                + "/".join(str(r["seed"]) for r in at_k),
                "per direction " + " / ".join(f"{s[0]:.2f}-{s[2]:.2f}" for s in spans) + ", log-det "
                + " / ".join(f"{r[key]['logdet_share']:.3f}" for r in at_k) + " (paper's target per direction "
                + " / ".join(_lo_hi([r['paper_target']['share_min_med_max'][0], r['paper_target']['share_min_med_max'][2]])
                             for r in at_k) + f"); {at_k[0]['round_s']} s a round",
                "every direction within 0.85-1.15 over 3 rounds (issue 20)" if k == args.rounds else "-",
                met=(0.85 <= lo and hi <= 1.15) if k == args.rounds else None,
                lowest_direction_share=lo, highest_direction_share=hi)


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
