"""S-MEME rounds on the digits UNet: the digits' own Algorithm 1 defaults.

The digits UNet is an ordinary NoisePredictor, so smeme.explore.run_rounds drives it; what
digits need is their own defaults (the toy's 256 trajectories x 25 iterations at lr 2e-3
would take ~10 minutes a round and overshoot: lr 3e-4 at lambda 0.3 collapsed round 2).
Measured (bench/bench_images.py, 2-core CPU under load ~5): ~40-60 s a round, and with
lambda = 0.1 over 3 rounds rare share 0.15 -> 0.19 -> 0.24 -> 0.32, Vendi diversity
4.8 -> 5.1 -> 5.4 -> 5.9, confidence 0.98 -> 0.97 -> 0.96 -> 0.93.
"""
from __future__ import annotations


def digits_solver_config(**overrides):
    """Adjoint Matching defaults for one digits round in <= 60 s on the 2-core CPU."""
    from ..solvers.adjoint_matching import AdjointMatchingConfig

    base = dict(DIGITS_ROUND)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return AdjointMatchingConfig(**base)


# Image rounds keep the earlier control (the 40-step chain's own tilt; the network's score carries
# kappa_i of it) and the smoothed reward -lam log p(x, t_r) at t_r 0.02: their settings were
# measured with them. Issue 20 measured the point rounds' treatment on a CI digits round (score
# control, the reward deconvolved to the data end at t_r 0.05, sharpening then capped at 20x):
# it was rejected, the on-support share falling from 91.8% to 12.9%. The 64 pixels span a data
# manifold of much lower rank; the deconvolution sharpened its nearly degenerate directions and
# the reward pushed the samples off it. The cap is now 4x (not re-measured on digits); a floor
# set from the data's own spectrum, or the deconvolution restricted to the directions the data
# spans, is what the switch needs (density.deconvolved_score).
IMAGE_CONTROL = "ddpm"
DIGITS_ROUND = dict(iterations=6, trajectories=64, steps=40, adam_steps=4, lr=1e-4, loss_steps=8,
                    late_fraction=0.5, clip_grad_norm=1.0, control=IMAGE_CONTROL)
DIGITS_LAM = 0.1
DIGITS_T_R = 0.02


def digits_explore_defaults() -> dict:
    """ExploreConfig settings for digits runs (DigitsDomain.explore_defaults)."""
    solver = {k: v for k, v in DIGITS_ROUND.items()
              if k not in ("iterations", "trajectories", "steps", "adam_steps", "lr")}
    return dict(lam=DIGITS_LAM, t_r=DIGITS_T_R, reward_target="smoothed", iterations=DIGITS_ROUND["iterations"],
                trajectories=DIGITS_ROUND["trajectories"], steps=DIGITS_ROUND["steps"],
                adam_steps=DIGITS_ROUND["adam_steps"], lr=DIGITS_ROUND["lr"], metrics_logp=False,
                weight_ema=None,  # measured (BENCHMARKS.md) without averaging: 6 iterations leave no burn-in
                likelihood_ratio_share=0.0,  # a 64-D UNet PF-ODE (Hutchinson) per iteration: not measured, left off
                solver_options=solver)


def digits_explore_config(**overrides):
    """An smeme.explore.ExploreConfig with the digits defaults, for explore.run_rounds."""
    from ..explore import ExploreConfig

    return ExploreConfig(**{**digits_explore_defaults(), **overrides})


def run_digits_rounds(run, rounds: int, lam: float = DIGITS_LAM, t_r: float = DIGITS_T_R, seed: int = 0,
                      solver: dict | None = None, on_iteration=None, on_round=None, cancel=None) -> list[int]:
    """`rounds` S-MEME rounds on a digits run through smeme.explore.run_rounds, with the
    digits defaults (DIGITS_ROUND); `solver` overrides ExploreConfig fields or, for other
    keys, Adjoint Matching settings. Raises explore.ExploreError (a ValueError) for bad
    input or a rejected round."""
    from ..explore import ExploreConfig, run_rounds

    top = {f for f in ExploreConfig.__dataclass_fields__}
    over = dict(solver or {})
    explore_over = {k: v for k, v in over.items() if k in top}
    solver_opts = {k: v for k, v in DIGITS_ROUND.items()
                   if k not in ("iterations", "trajectories", "steps", "adam_steps", "lr")}
    solver_opts.update({k: v for k, v in over.items() if k not in top})
    cfg = digits_explore_config(lam=lam, t_r=t_r, seed=seed, solver_options=solver_opts, **explore_over)
    return run_rounds(run, int(rounds), cfg, on_iteration=on_iteration, on_round=on_round, cancel=cancel)
