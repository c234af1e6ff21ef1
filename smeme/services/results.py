"""A run's saved metrics as the pages show them: flattened names, JSON for download."""
from __future__ import annotations

import json
import math

import numpy as np


# Names the pages use -> keys of smeme.metrics.round_metrics (flattened with dots); a
# data set without a validity label (toy, csv) shows its on-support share as validity.
_METRIC_KEYS = {
    "entropy": ["entropy_knn"],
    "cross_entropy": ["cross_entropy_pfode"],
    "surprise": ["surprise_pre"],
    "on_support": ["on_support"],
    "validity": ["validity", "on_support"],
    "sparse_share": ["shares.region.sparse.share"],
    "sparse_closed_form": ["sparse_share_closed_form"],
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def metric_number(v):
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v):
        return v  # (value, lo, hi)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def flat_metrics(m: dict) -> dict:
    """One round's metrics as {name: float} with the page's names (+ '<name>_lo/_hi')."""
    flat = _flatten(m or {})
    out = {}
    for name, keys in _METRIC_KEYS.items():
        for k in keys:
            if k in flat and metric_number(flat[k]) is not None:
                v = metric_number(flat[k])
                if isinstance(v, (list, tuple)):
                    out[name], out[f"{name}_lo"], out[f"{name}_hi"] = map(float, v)
                else:
                    out[name] = v
                base = k[: -len(".share")] if k.endswith(".share") else k
                lo = flat.get(f"{k}_lo", flat.get(f"{base}.lo"))
                hi = flat.get(f"{k}_hi", flat.get(f"{base}.hi"))
                ci = flat.get(f"{k}_ci")
                if isinstance(ci, (list, tuple)) and len(ci) == 2:
                    lo, hi = ci
                if metric_number(lo) is not None and metric_number(hi) is not None:
                    out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
                break
    if "on_support" in out and "off_support" not in out:
        out["off_support"] = 1.0 - out["on_support"]
    for k, v in flat.items():  # everything else numeric, under its own name
        if k not in out and isinstance(metric_number(v), float):
            out[k] = metric_number(v)
    return out


def metrics_json(run) -> str:
    """Every round's metrics, with the deferred ones computed so far (smeme.deferred), as JSON."""
    return json.dumps({str(k): v for k, v in sorted(run.all_metrics().items())}, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def solver_health(m: dict) -> str | None:
    """One line on how the round's solve went: the likelihood-ratio weights' effective sample
    size (share of the trajectories; tempered when it fell below the floor), the reward values' ODE
    steps where the round read them with fewer than its most (RoundReward), whether the solver
    converged (SolverResult.round_metrics) and, for the toy, the share of the closed form's
    log-odds shift reached. None when the round has none of them."""
    parts = []
    if m.get("lr_off_by_dimension") is True:
        ran, asked = m.get("iterations"), (m.get("explore") or {}).get("iterations")
        budget = (f", on a larger budget: {ran} iterations, not {asked}"
                  if isinstance(ran, int) and isinstance(asked, int) and ran > asked else "")
        parts.append("likelihood-ratio term off for this round: with this many columns, or at this lambda, its "
                     f"gradient would be mostly noise (Adjoint Matching alone{budget})")
    if metric_number(m.get("lr_ess_min")) is not None:
        parts.append(f"likelihood-ratio weights: effective sample size {m['lr_ess_min']:.0%} of the "
                     f"trajectories at worst, {m.get('lr_ess_median', m['lr_ess_min']):.0%} typical")
        tempered = int(m.get("lr_tempered_iterations") or 0)
        if tempered:
            parts.append(f"tempered in {tempered} iteration{'s' if tempered > 1 else ''} "
                         f"(down to beta {m.get('lr_beta_min', 1.0):.2f})")
        kept = metric_number(m.get("lr_steps_kept_mean"))
        if kept is not None and kept < 1:  # ess_fallback: those steps went to the adjoint term
            parts.append(f"{1 - kept:.0%} of the likelihood-ratio steps left to Adjoint Matching (weights too uneven)")
    steps, steps_tv = m.get("reward_ode_steps"), metric_number(m.get("reward_steps_tv"))
    if isinstance(steps, int) and steps_tv is not None and steps_tv > 0:
        parts.append(f"reward values read with {steps} ODE steps (their weights within {steps_tv:.2%} "
                     f"of the full steps')")
    if isinstance(m.get("solver_converged"), bool):
        change = metric_number(m.get("solver_control_change"))
        moved = f" (the control moved {change:.0%} over the averaged window)" if change is not None else ""
        fit = metric_number(m.get("solver_target_fit"))
        meets = "" if fit is None else f"; its regression target {fit:.2f}x the control along it (1 at the fixed point)"
        parts.append(("solver converged" if m["solver_converged"] else
                      "solver NOT converged: more iterations per round would move this round further") + moved + meets)
    if metric_number(m.get("tilt_share_closed_form")) is not None:
        parts.append(f"{m['tilt_share_closed_form']:.0%} of the closed form's shift of the sparse square reached")
    return "; ".join(parts) + "." if parts else None
