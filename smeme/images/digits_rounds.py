"""S-MEME rounds on the digits UNet: the digits' own Algorithm 1 defaults.

The digits UNet is an ordinary NoisePredictor, so smeme.explore.run_rounds drives it; what
digits need is their own settings (DIGITS_ROUND, DIGITS_LAM, DIGITS_T_R), sized for a round
under a minute on one CPU core with its metrics (BENCHMARKS.md, "Digits round": the measured
time and what a round reaches over solver seeds: rare-class share, confidence, readable share).
"""
from __future__ import annotations


def digits_solver_config(**overrides):
    """Adjoint Matching settings of one digits round (DIGITS_ROUND, then `overrides` that are not None)."""
    from ..solvers.adjoint_matching import AdjointMatchingConfig

    base = dict(DIGITS_ROUND)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return AdjointMatchingConfig(**base)


# Digits rounds use the DDPM-unit control (the 40-step chain's own tilt; the network's score
# carries kappa_i of it), though the score-unit control's fixed point is the exact tilt at image
# size (tests/test_image_fidelity.py): at t_r 0.02 the score-unit control took the suite's briefly
# trained model off its support in 2 of 3 solver seeds (the reward reads that network's eps error
# over sqrt(1 - ab) = 0.043, and that control carries all of the tilt to the data end); at t_r
# 0.05-0.1 it stays on the support but, over 3 rounds of the ready model, reads less readable and
# less diverse than 'ddpm' (README, "Known limits"; BENCHMARKS.md, "Digits round").
# And the smoothed reward -lam log p(x, t_r): the deconvolved reward
# sharpens the nearly degenerate directions of the 64 pixels' low-rank data manifold and
# pushes samples off it; see density.deconvolved_score.
# DIGITS_ROUND: the AdjointMatchingConfig fields of one digits round; DIGITS_LAM: its lambda;
# DIGITS_T_R: the diffusion time at which the previous round's score gives the reward.
DIGITS_CONTROL = "ddpm"
DIGITS_ROUND = dict(iterations=4, trajectories=48, steps=40, adam_steps=4, lr=1.5e-4, loss_steps=8,
                    late_fraction=0.5, clip_grad_norm=1.0, control=DIGITS_CONTROL)
DIGITS_LAM = 0.1
DIGITS_T_R = 0.02


def digits_explore_defaults() -> dict:
    """ExploreConfig settings for digits runs (DigitsDomain.explore_defaults)."""
    solver = {k: v for k, v in DIGITS_ROUND.items()
              if k not in ("iterations", "trajectories", "steps", "adam_steps", "lr")}
    return dict(lam=DIGITS_LAM, t_r=DIGITS_T_R, reward_target="smoothed", iterations=DIGITS_ROUND["iterations"],
                trajectories=DIGITS_ROUND["trajectories"], steps=DIGITS_ROUND["steps"],
                adam_steps=DIGITS_ROUND["adam_steps"], lr=DIGITS_ROUND["lr"], metrics_logp=False,
                weight_ema=None,  # no weight average: 4 iterations leave no room for a burn-in
                likelihood_ratio_share=0.0,  # off: it needs a 64-D UNet PF-ODE (Hutchinson) per iteration
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
