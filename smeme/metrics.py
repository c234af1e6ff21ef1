"""Per-round metrics of an S-MEME run, on samples drawn under fixed noise (JSON-ready).

What `round_metrics` reports, all in the data's own units:
- entropy_knn: Kozachenko-Leonenko k-NN entropy of ALL finite samples (the entropy of
  the model's distribution, the quantity S-MEME raises); entropy_knn_on_support: the same
  on the on-support samples only. Leakage off the support raises the first: read it
  next to `on_support`.
- cross_entropy_pfode: -mean log p_k(x) of the round's own samples under its PF-ODE
  density: a CROSS-entropy (>= the entropy when the two disagree), not the entropy.
- surprise_pre: -mean log p_0(x) of the round's samples under the pre-trained model.
- on_support: share of samples on the data's support / valid; validity: share not
  labelled 'invalid' (triangles); shares[category][label] with 95% Wilson intervals.
- toy: sparse_share, and the closed-form prediction p_k ~ p_pre^g, g = prod_i (1 - lam_i)
  where the lambdas of rounds 1..k are known, with p_pre the
  pre-trained model's own two-region split (round 0's `closed_form.pre_sparse_share`).

A round's metrics come in two parts. The ones that define it (shares, support, validity,
k-NN entropy, the closed form: `sample_metrics`) are cheap, sample-based, and committed with
the round. The PF-ODE ones (cross_entropy_pfode, surprise_pre: `density_metrics`, ~7x the
cost of the rest on a triangles round) are DEFERRED: `deferred_metrics_of(run)` says which
metrics a run's rounds leave for later and how they are computed from the committed round
(smeme.deferred stores them beside it); `round_metrics` computes both parts at once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .density import knn_entropy, log_prob_raw, mc_cross_entropy
from .sampling import FixedNoise, sample_ddpm

KNN_K = 5
METRICS_N, METRICS_SEED, METRICS_STEPS = 4096, 1234, 100  # a round's metric samples: n, fixed-noise seed, DDPM steps
DENSITY_METRICS = ("cross_entropy_pfode", "surprise_pre")  # the PF-ODE metrics (deferred)
NOTES = {
    "entropy_knn": "Kozachenko-Leonenko k-NN entropy (nats) of all finite samples, data units",
    "cross_entropy_pfode": "-mean log p_k under the PF-ODE density: a cross-entropy, not the entropy",
    "surprise_pre": "-mean log p_0 (pre-trained model) of this round's samples",
}


def wilson_interval(count: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion count / n ((0, 1) when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = count / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(centre - half, 0.0), min(centre + half, 1.0)


def category_shares(labels) -> dict[str, dict]:
    """{label: {'share', 'lo', 'hi', 'count'}} over all rows, labels sorted."""
    labels = np.asarray(labels).astype(str)
    n = len(labels)
    out = {}
    for lab in sorted(set(labels.tolist())):
        count = int(np.sum(labels == lab))
        lo, hi = wilson_interval(count, n)
        out[lab] = {"share": count / n, "lo": lo, "hi": hi, "count": count}
    return out


def _float(v) -> float | None:
    """A JSON-ready float; None for NaN / inf."""
    v = float(v)
    return v if math.isfinite(v) else None


def _model_dtype(model) -> torch.dtype:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return p.dtype if p is not None else torch.float64


def round_samples(run, model, n: int = METRICS_N, seed: int = METRICS_SEED, steps: int = METRICS_STEPS) -> np.ndarray:
    """n DDPM samples under the fixed noise of `seed`, in the data's own units (n rows)."""
    noise = FixedNoise.from_seed(seed, n, tuple(model.sample_shape), steps, dtype=_model_dtype(model))
    z = sample_ddpm(model, noise).detach().to(torch.float64).cpu().numpy()
    return np.asarray(run.domain.from_features(run.standardizer.inverse(z)), dtype=np.float64)


def _mean_surprise(model, run, raw: np.ndarray, **kw) -> float | None:
    """-mean log p(x) over the points with a finite log-density (data units)."""
    logp = log_prob_raw(model, run.domain, run.standardizer, raw, **kw)
    logp = logp[np.isfinite(logp)]
    return _float(mc_cross_entropy(logp)) if logp.size else None


def lam_history_from_config(config: dict, k: int) -> list[float] | None:
    """The lambdas of rounds 1..k from a run config's 'explore' section, if it says them."""
    explore = (config or {}).get("explore") or {}
    hist = explore.get("lam_history")
    if hist is not None and len(hist) >= k:
        return [float(v) for v in hist[:k]]
    lam = explore.get("lam")
    if lam is not None and explore.get("lam_schedule", "constant") == "constant":
        return [float(lam)] * k
    return None


def toy_closed_form(domain, lam_history: list[float], pre_sparse_share: float | None = None) -> dict:
    """Closed form for the two-square toy: p_k ~ p_pre^g with g = prod_i (1 - lam_i).

    p_pre is the pre-trained MODEL's distribution (the tilt acts on what the base sampler
    produces), taken as uniform on each square with the model's own
    sparse share (among on-support samples) when it is known, else the data's split.
    Written as one round of rate 1 - g, so the toy's own formulas apply.
    """
    if pre_sparse_share is not None and 0 < pre_sparse_share < 1:
        domain = type(domain)(dense_mass=1.0 - pre_sparse_share, side=domain.side, gap=domain.gap)
    g = float(np.prod([1.0 - lam for lam in lam_history])) if lam_history else 1.0
    entropy = domain.entropy_after(1.0 - g, 1)
    return {
        "exponent": g,
        "pre_sparse_share": _float(1.0 - domain.dense_mass),
        "sparse_share": _float(domain.sparse_share_after(1.0 - g, 1)),
        "entropy": _float(entropy),
        "entropy_gain": _float(entropy - domain.pretrained_entropy()),
    }


def tilt_share(before: float | None, reached: float | None, exact: float | None) -> float | None:
    """Share of the exact log-odds shift reached: (logit(reached) - logit(before)) /
    (logit(exact) - logit(before)); None where undefined (no shift, shares of 0 or 1)."""
    vals = (before, reached, exact)
    if any(v is None or not 0 < v < 1 for v in vals):
        return None
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    want = logit(exact) - logit(before)
    return _float((logit(reached) - logit(before)) / want) if abs(want) > 1e-9 else None


def _support_sparse_share(shares: dict) -> float | None:
    """Sparse share among on-support samples (the closed form's two-region mass split)."""
    region = shares.get("region", {})
    dense = region.get("dense", {"count": 0})["count"]
    sparse = region.get("sparse", {"count": 0})["count"]
    return sparse / (dense + sparse) if dense + sparse else None


def round_metrics(run, model, round_index: int, n: int = METRICS_N, seed: int = METRICS_SEED,
                  steps: int = METRICS_STEPS, base_model=None, logp: bool = True,
                  lam_history: list[float] | None = None, density_kw: dict | None = None) -> dict:
    """Metrics of round `round_index` (see the module docstring), JSON-ready: the sample-based
    ones (sample_metrics) and, unless logp=False, the PF-ODE ones on the same samples
    (density_metrics; the slow part).

    run: run.domain, run.standardizer, run.load_model(0), run.config.
    base_model: the pre-trained model (default: `model` itself for round 0, else
    run.load_model(0)). lam_history: lambdas of rounds 1..k (default: read from
    run.config['explore']). A domain with its own `round_metrics` (images) computes them itself.
    """
    domain = run.domain
    if hasattr(domain, "round_metrics"):
        return domain.round_metrics(run, model, round_index)
    start = time.perf_counter()
    out, raw = sample_metrics(run, model, round_index, n, seed, steps, lam_history)
    if logp:
        out.update(density_metrics(run, model, round_index, raw, base_model, density_kw))
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def sample_metrics(run, model, round_index: int, n: int = METRICS_N, seed: int = METRICS_SEED,
                   steps: int = METRICS_STEPS, lam_history: list[float] | None = None) -> tuple[dict, np.ndarray]:
    """The metrics that define round `round_index` (all but the PF-ODE ones), and the n samples
    (data units) they were measured on: drawn under the fixed noise of `seed`."""
    domain = run.domain
    raw = round_samples(run, model, n, seed, steps)
    finite = np.all(np.isfinite(raw.reshape(len(raw), -1)), axis=1)
    on_support = np.asarray(domain.on_support(raw), dtype=bool)
    out: dict = {"round": int(round_index), "n": int(n), "seed": int(seed), "steps": int(steps),
                 "finite": _float(finite.mean()), "on_support": _float(on_support.mean())}
    out["on_support_ci"] = list(wilson_interval(int(on_support.sum()), len(raw)))
    out["entropy_knn"] = _float(knn_entropy(raw[finite], k=KNN_K)) if finite.sum() > KNN_K else None
    out["entropy_knn_on_support"] = (_float(knn_entropy(raw[on_support], k=KNN_K))
                                     if on_support.sum() > KNN_K else None)
    shares = {key: category_shares(labels) for key, labels in domain.categories(raw).items()}
    out["shares"] = shares
    invalid = [s["invalid"]["share"] for s in shares.values() if "invalid" in s]
    if invalid:
        out["validity"] = 1.0 - invalid[0]
    if "region" in shares:
        out["sparse_share"] = shares["region"].get("sparse", {"share": 0.0})["share"]
        out["sparse_share_on_support"] = _support_sparse_share(shares)  # what the closed form describes
    if hasattr(domain, "sparse_share_after"):
        out.update(_closed_form_metrics(run, round_index, shares, lam_history, out.get("sparse_share_on_support")))
    out["notes"] = dict(NOTES)
    return out, raw


def _closed_form_metrics(run, round_index: int, shares: dict, lam_history, reached) -> dict:
    """The toy's closed form after the round's lambdas (when known) and the share of its shift reached."""
    hist = lam_history if lam_history is not None else lam_history_from_config(getattr(run, "config", {}), round_index)
    if round_index == 0:
        hist = []
    if hist is None:
        return {}
    pre = (_support_sparse_share(shares) if round_index == 0
           else (getattr(run, "metrics", dict)() or {}).get(0, {}).get("closed_form", {}).get("pre_sparse_share"))
    cf = toy_closed_form(run.domain, hist, pre)
    return {"closed_form": cf, "sparse_share_closed_form": cf["sparse_share"],
            "tilt_share_closed_form": tilt_share(pre, reached, cf["sparse_share"])}


def density_metrics(run, model, round_index: int, raw: np.ndarray, base_model=None,
                    density_kw: dict | None = None) -> dict:
    """The PF-ODE metrics of round `round_index` on its samples `raw` (data units):
    cross_entropy_pfode under the round's own model, surprise_pre under the pre-trained one
    (`base_model`, default run.load_model(0); round 0 is its own). density_kw goes to
    smeme.density.log_prob (e.g. its progress callback)."""
    kw = density_kw or {}
    finite = np.all(np.isfinite(raw.reshape(len(raw), -1)), axis=1)
    cross_entropy = _mean_surprise(model, run, raw[finite], **kw)
    if base_model is None:
        base_model = model if round_index == 0 else run.load_model(0)
    surprise = cross_entropy if base_model is model else _mean_surprise(base_model, run, raw[finite], **kw)
    return {"cross_entropy_pfode": cross_entropy, "surprise_pre": surprise}


@dataclass(frozen=True)
class DeferredMetrics:
    """Metrics a kind of run leaves out of a round's committed record and computes after it
    (smeme.deferred stores and caches them, one file per round)."""
    names: tuple[str, ...]  # the keys they add to a round's metrics
    settings: Callable[[dict], dict]  # a round's committed record -> what its deferred metrics are computed with
    compute: Callable  # (run, k, settings, progress) -> {name: number or None}; progress(done, total) or None


def _density_settings(record: dict) -> dict:
    """The samples a round's PF-ODE metrics are measured on: those its record was (n, seed, steps)."""
    defaults = {"n": METRICS_N, "seed": METRICS_SEED, "steps": METRICS_STEPS}
    return {key: int(record[key]) if type(record.get(key)) is int else value for key, value in defaults.items()}


def _deferred_density(run, k: int, settings: dict, progress=None) -> dict:
    """Round k's PF-ODE metrics on the samples its committed metrics were measured on
    (drawn again under the same fixed noise): what round_metrics(logp=True) computes."""
    model = run.load_model(k)
    raw = round_samples(run, model, settings["n"], settings["seed"], settings["steps"])
    kw = {"progress": _over_solves(progress, 1 if k == 0 else 2)} if progress else None
    return density_metrics(run, model, k, raw, density_kw=kw)


def _over_solves(progress, solves: int):
    """progress(done, total) over `solves` PF-ODE solves in a row, from each solve's own count."""
    state = {"solve": 0, "last": 0}

    def tick(done, total):
        if done < state["last"]:  # the next solve started
            state["solve"] += 1
        state["last"] = done
        progress(min(state["solve"], solves - 1) * total + done, solves * total)
    return tick


POINT_DENSITY = DeferredMetrics(DENSITY_METRICS, _density_settings, _deferred_density)


def deferred_metrics_of(run) -> DeferredMetrics | None:
    """What a run's rounds leave for later: the domain's own `deferred_metrics()` when it has
    one; else the PF-ODE metrics for point data (a domain without its own round_metrics)."""
    domain = run.domain
    if hasattr(domain, "deferred_metrics"):
        return domain.deferred_metrics()
    return None if hasattr(domain, "round_metrics") else POINT_DENSITY
