"""Why a round with the likelihood-ratio term under-tilts trained and analytic Gaussians (README, "Known limits").

    SMEME_THREADS=1 python bench/bench_lr_term_noise.py --d 2 --folder /tmp/g2 consistency
    SMEME_THREADS=1 python bench/bench_lr_term_noise.py --d 2 --folder /tmp/g2 iterates \
        [--base analytic] [--seed 5] [--every 5] [--variant likelihood_ratio_target=current,iterations=60]

The folder holds (or gets) a pre-trained CSV run on tests/test_fidelity.py's correlated Gaussian
data (data seed 20 + d, its PRETRAIN_STEPS).

consistency: are the reward's VALUES (what the term's weights exp(r) use; the PF-ODE at 2-32 RK4
steps) and its GRADIENT (the score at t_r, what the adjoint term uses) the same reward? On 4,096
samples of the 50-step chain, r's values are fitted by a quadratic and grad r by a linear map; each
curvature H tilts N(., C0) to (C0^-1 - H)^-1, printed as the share of the smoothed target's exact
log-variance gain per whitened direction (tests/test_fidelity.direction_shares; 1 when consistent
with the model's own covariance).

gradient: the first Adam step's loss gradient (all stochastic steps, the tuned model at the base) on
--batches independent batches of trajectories, term on and off: per parameter, the batches' mean
squared over the mean square (signal share; Adam's step in a parameter is ~lr x its square root),
median over the parameters, and the noise's RMS over the signal's.

iterates: one round of explore's problem (ExploreConfig with the CSV defaults, lam 0.3, plus
--variant), the RAW iterate's shares every --every iterations and the returned (averaged) model's,
read from 4,000 samples of 100 DDPM steps against the smoothed target's exact round of the base's
own 100-step covariance. --base analytic replaces the trained network by the exact Gaussian of its
samples' mean and covariance plus a zero-initialised correction (tests/helpers.ResidualNoisePredictor),
so that the reward's values and gradient are consistent and only the solver is measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_gaussian_fidelity import parse_variant  # noqa: E402  (bench/ is this script's folder)

N_CHECK, CHECK_STEPS = 4000, 100  # the iterates' read-out: cheap, same noise every time


def trained_run(d: int, folder: Path):
    from test_fidelity import PRETRAIN_STEPS, correlated_gaussian_csv

    from smeme.pipeline import pretrain_run
    from smeme.store import Run

    if not (folder / "run" / "metrics.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        csv = correlated_gaussian_csv(folder / "data.csv", d, seed=20 + d)
        pretrain_run(folder / "run", "csv", {"path": str(csv)}, steps=PRETRAIN_STEPS)
    return Run.open(folder / "run")


def smoothed_exact(c0: np.ndarray, lam: float, ab: float) -> np.ndarray:
    return np.linalg.inv(np.linalg.inv(c0) - lam * np.linalg.inv(ab * c0 + (1 - ab) * np.eye(len(c0))))


def shares_text(c: np.ndarray, c_exact: np.ndarray, c0: np.ndarray) -> str:
    from test_fidelity import direction_shares, logdet_gain

    s = direction_shares(c, c_exact, c0)
    return f"directions {np.round(s, 3).tolist()} log-det {logdet_gain(c, c0) / logdet_gain(c_exact, c0):.3f}"


def consistency(run, d: int) -> None:
    import torch
    from test_fidelity import LAM, model_cov

    from smeme.explore import ExploreConfig, _frozen
    from smeme.reward import RoundReward
    from smeme.sampling import sample

    model = _frozen(run.load_model(0))
    config = ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM})
    cov0 = model_cov(run, 0)
    ab = float(run.schedule.ab(torch.tensor(config.t_r, dtype=torch.float64)))
    c_exact = smoothed_exact(cov0, LAM, ab)
    x = sample(model, 4096, steps=50, seed=7)
    reward = RoundReward(model, LAM, config)
    xs = x.double().numpy()
    ones = np.ones((len(xs), 1))
    g = reward.grad(x).detach().double().numpy()
    slope = np.linalg.lstsq(np.hstack([xs, ones]), g, rcond=None)[0][:-1].T
    tilt = lambda h: np.linalg.inv(np.linalg.inv(cov0) - h)  # noqa: E731
    print(f"gradient (score at t_r): {shares_text(tilt((slope + slope.T) / 2), c_exact, cov0)}", flush=True)
    iu = np.triu_indices(d)
    quad = np.column_stack([xs[:, i] * xs[:, j] * (0.5 if i == j else 1.0) for i, j in zip(*iu)] + [xs, ones])
    for steps in (2, 4, 8, 32):
        v = reward._value(x, steps).double().numpy()
        coef, *_ = np.linalg.lstsq(quad, v, rcond=None)
        h = np.zeros((d, d))
        h[iu] = coef[: len(iu[0])]
        h = h + h.T - np.diag(np.diag(h))
        resid = float(np.std(v - quad @ coef) / np.std(v))
        print(f"values, {steps} RK4 steps (quadratic fit's residual {resid:.4f} of r's spread): "
              f"{shares_text(tilt(h), c_exact, cov0)}", flush=True)


def iterates(run, args) -> None:
    import torch
    from helpers import ResidualNoisePredictor
    from test_fidelity import LAM

    from smeme.explore import ExploreConfig, _frozen, prepare_models
    from smeme.models import GaussianModel, MLPConfig, MLPNoisePredictor
    from smeme.reward import RoundReward
    from smeme.sampling import sample
    from smeme.solvers import adjoint_matching

    prev = run.load_model(0)
    if args.base == "analytic":
        x0 = sample(prev, 8000, steps=400, seed=99).double()
        torch.manual_seed(0)
        correction = MLPNoisePredictor(MLPConfig(args.d, width=128, depth=3, time_dim=32, linear_skip=3),
                                       run.schedule).double()
        prev = ResidualNoisePredictor(GaussianModel(x0.mean(0), torch.cov(x0.T), run.schedule), correction)
    config = ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM, "seed": args.seed,
                              **parse_variant(args.variant)})
    model_ft, model_base, _ = prepare_models(prev)
    model_base = _frozen(prev)
    cfg = config.solver_config(1, dim=args.d)
    reward = RoundReward(model_base, LAM, config, cfg.reward_cap_quantile)

    def cov_of(model) -> np.ndarray:
        with torch.no_grad():
            return np.cov(sample(model, N_CHECK, steps=CHECK_STEPS, seed=99).double().numpy().T)

    c0 = cov_of(model_base)
    c_exact = smoothed_exact(c0, LAM, float(run.schedule.ab(torch.tensor(config.t_r, dtype=torch.float64))))

    def each(it, total, loss):
        if it % args.every == 0:
            print(f"  raw iterate {it}: {shares_text(cov_of(model_ft), c_exact, c0)}", flush=True)

    start = time.perf_counter()
    result = adjoint_matching(model_ft, model_base, reward.grad, cfg, on_iteration=each, reward_value=reward.value)
    print(f"{args.base} d = {args.d}, seed {args.seed}, {args.variant or 'defaults'}: "
          f"{time.perf_counter() - start:.1f} s with the read-outs; weights {result.health}; "
          f"target fit {result.target_fit}", flush=True)
    print(f"returned (averaged): {shares_text(cov_of(model_ft), c_exact, c0)}", flush=True)


def gradient(run, args) -> None:
    import torch
    from test_fidelity import LAM

    import smeme.solvers  # noqa: F401  (the module below, not the function of the same name)
    from smeme.explore import ExploreConfig, _frozen, prepare_models
    from smeme.reward import RoundReward

    am = sys.modules["smeme.solvers.adjoint_matching"]
    prev = run.load_model(0)
    for variant in ("", "likelihood_ratio_share=0", *filter(None, [args.variant])):
        config = ExploreConfig(**{**run.domain.explore_defaults(), "lam": LAM, **parse_variant(variant)})
        grads = []
        for batch in range(args.batches):
            model_ft, model_base, _ = prepare_models(prev)
            cfg = am.replace(config.solver_config(1, dim=args.d), seed=1000 + batch, loss_steps=None)
            reward = RoundReward(_frozen(prev), LAM, config, cfg.reward_cap_quantile)
            params = [p for p in model_ft.parameters() if p.requires_grad]
            dtype = params[0].dtype
            plan = am.plan_steps(model_base, cfg, tuple(model_ft.sample_shape), dtype, params[0].device, True)
            timings = dict.fromkeys(("sampling", "reward", "adjoint"), 0.0)
            data = am.iteration_data(model_ft, model_base, reward.grad, reward.value, plan, cfg, 0, dtype,
                                     params[0].device, timings, {})
            rows = torch.arange(cfg.trajectories)
            loss = am.regression_loss(model_ft, model_base, data, plan, plan.stochastic, rows, am.OutlierRule(cfg),
                                      cfg, 0)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).double())
        g = torch.stack(grads)
        mean, var = g.mean(0), g.var(0)
        share = (mean.pow(2) / (mean.pow(2) + var).clamp(min=1e-300)).median()
        print(f"{variant or 'defaults'}: signal share per parameter (median) {float(share):.3f}; "
              f"noise RMS / signal {float(var.sum().sqrt() / mean.norm()):.2f} ({args.batches} batches)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("consistency", "iterates", "gradient"))
    ap.add_argument("--d", type=int, default=2)
    ap.add_argument("--folder", required=True, help="where the pre-trained run is (or is made)")
    ap.add_argument("--base", choices=("trained", "analytic"), default="trained")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--variant", default="", help="ExploreConfig fields, ','-joined")
    args = ap.parse_args()
    from smeme.threads import configure

    configure()
    run = trained_run(args.d, Path(args.folder))
    {"consistency": lambda: consistency(run, args.d), "iterates": lambda: iterates(run, args),
     "gradient": lambda: gradient(run, args)}[args.what]()


if __name__ == "__main__":
    main()
