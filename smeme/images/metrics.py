"""Per-round image metrics: the image analogue of smeme.metrics for the digits domain.

All computed on samples drawn under fixed noise, through the in-project digit classifier
(`smeme.images.classifier`), which plays the role Inception-v3 plays for natural images:

- class histogram of the predicted digits (category shift) and the rare classes' share,
  with a 95% Wilson interval;
- mean classifier confidence (max class probability) and the share of samples at or above
  the domain's `min_confidence` ("valid", the validity proxy);
- Frechet distance between Gaussians fitted to classifier features of the round's samples
  and of the pre-trained model's samples (a FID analogue), and the Gaussian cross-entropy
  H(N_k, N_0) in that feature space (the paper's Table 1 uses the same in Inception space);
- diversity: the Vendi score (Friedman & Dieng 2023) of the samples' classifier features
  with a cosine kernel, exp(entropy of the eigenvalues of K / n): the effective number of
  distinct samples. Scale-free on purpose: the mean pairwise feature distance (kept as
  `feature_spread`) can fall while S-MEME rounds raise every entropy measure, because the
  classifier's feature norms shrink on less prototypical digits;
- entropy_knn: the Kozachenko-Leonenko k-NN entropy of the samples in pixel space
  (64-d, features in [-1, 1]: the quantity S-MEME maximises; biased in 64-d but comparable
  across rounds) and class_entropy, the entropy of the predicted-class histogram.

The Gaussian helpers (`fit_gaussian`, `frechet_distance`, `gaussian_cross_entropy`) are
shared with the Stable Diffusion metrics (smeme.images.sd_metrics) which use Inception features.
"""
from __future__ import annotations

import math

import numpy as np

from .classifier import get_classifier

METRIC_N = 256  # samples per round (fixed noise)
METRIC_STEPS = 50  # DDPM steps
METRIC_SEED = 0
REFERENCE_SEED_OFFSET = 1  # round 0's reference uses other noise, so round 0's FD is the noise floor


def fit_gaussian(feat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feat = np.asarray(feat, dtype=np.float64)
    if feat.ndim != 2 or feat.shape[0] < 2:
        raise ValueError(f"Fitting a Gaussian needs at least two feature rows, got shape {feat.shape}.")
    return feat.mean(axis=0), np.cov(feat, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) (symmetric form, stable)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(s1).astype(np.float64), np.atleast_2d(s2).astype(np.float64)
    r1 = _sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross, 0.0))


def gaussian_cross_entropy(mu_p, s_p, mu_q, s_q, ridge: float = 1e-6) -> float:
    """H(N_p, N_q) = -E_p log N_q (nats); a ridge keeps S_q invertible for dead features."""
    mu_p, mu_q = np.asarray(mu_p, np.float64), np.asarray(mu_q, np.float64)
    s_p, s_q = np.atleast_2d(s_p).astype(np.float64), np.atleast_2d(s_q).astype(np.float64)
    d = len(mu_q)
    s_q = s_q + ridge * max(np.trace(s_q) / d, 1e-12) * np.eye(d)
    sign, logdet = np.linalg.slogdet(s_q)
    diff = mu_p - mu_q
    inv = np.linalg.inv(s_q)
    return float(0.5 * (d * math.log(2 * math.pi) + logdet + np.trace(inv @ s_p) + diff @ inv @ diff))


def mean_pairwise_distance(x: np.ndarray, max_n: int = 2000) -> float:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)[:max_n]
    if len(x) < 2:
        return 0.0
    sq = (x ** 2).sum(axis=1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None)
    n = len(x)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())


def vendi_score(feat: np.ndarray, max_n: int = 2000) -> float:
    """exp(Shannon entropy of the eigenvalues of K / n), K the cosine-similarity matrix."""
    x = np.asarray(feat, dtype=np.float64).reshape(len(feat), -1)[:max_n]
    if len(x) < 2:
        return float(len(x))
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    w = np.clip(np.linalg.eigvalsh(x @ x.T / len(x)), 0, None)
    w = w[w > 1e-12]
    w = w / w.sum()
    return float(np.exp(-(w * np.log(w)).sum()))


def class_entropy(counts) -> float:
    c = np.asarray(counts, dtype=np.float64)
    p = c[c > 0] / max(c.sum(), 1)
    return float(-(p * np.log(p)).sum())


def wilson_interval(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [max(centre - half, 0.0), min(centre + half, 1.0)]


def _knn_entropy(x: np.ndarray, k: int = 5):
    try:
        from ..density import knn_entropy

        return knn_entropy(np.asarray(x).reshape(len(x), -1), k=k)
    except (ImportError, ValueError):
        return None


def digits_metrics(images: np.ndarray, reference: np.ndarray | None = None,
                   rare_classes=(5, 6, 7, 8, 9), min_confidence: float = 0.7,
                   classifier=None) -> dict:
    """JSON-ready metrics of generated digits (n, 1, 8, 8) in [-1, 1].

    `reference`: the pre-trained model's samples (same shape), for the Frechet distance and
    the Gaussian cross-entropy; omitted -> those two keys are None.
    """
    clf = classifier or get_classifier()
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    finite = np.all(np.isfinite(images.reshape(n, -1)), axis=1)
    imgs = np.where(np.isfinite(images), images, 0.0)
    probs = clf.predict_proba(imgs)
    conf = probs.max(axis=1)
    conf[~finite] = 0.0
    pred = probs.argmax(axis=1)
    counts = np.bincount(pred, minlength=10)
    rare = np.isin(pred, list(rare_classes))
    feat = clf.features(imgs)
    out = {
        "n": int(n),
        "class_counts": counts.tolist(),
        "class_shares": (counts / max(n, 1)).tolist(),
        "rare_classes": [int(c) for c in rare_classes],
        "rare_share": float(rare.mean()) if n else 0.0,
        "rare_share_ci": wilson_interval(int(rare.sum()), n),
        "confidence": float(conf.mean()) if n else 0.0,
        "valid_share": float((conf >= min_confidence).mean()) if n else 0.0,
        "min_confidence": float(min_confidence),
        "diversity": vendi_score(feat),
        "diversity_label": "Vendi score of classifier features (effective number of distinct samples)",
        "feature_spread": mean_pairwise_distance(feat),
        "pixel_diversity": mean_pairwise_distance(imgs),
        "class_entropy": class_entropy(counts),
        "entropy_knn": _knn_entropy(imgs),
        "entropy_knn_label": "k-NN (Kozachenko-Leonenko) entropy in pixel space, features in [-1, 1], nats",
        "frechet_distance": None,
        "gaussian_cross_entropy": None,
        # the keys every run's metrics share (explore's validity check, the app's timeline)
        "on_support": float((conf >= min_confidence).mean()) if n else 0.0,
        "off_support": float((conf < min_confidence).mean()) if n else 0.0,
        "feature_space": "digit classifier penultimate layer (64-d)",
    }
    if reference is not None:
        ref_feat = clf.features(np.nan_to_num(np.asarray(reference, dtype=np.float64)))
        mu_k, s_k = fit_gaussian(feat)
        mu_0, s_0 = fit_gaussian(ref_feat)
        out["frechet_distance"] = frechet_distance(mu_k, s_k, mu_0, s_0)
        out["gaussian_cross_entropy"] = gaussian_cross_entropy(mu_k, s_k, mu_0, s_0)
    return out


def digits_samples(run, k: int, n: int, seed: int, steps: int = METRIC_STEPS, model=None) -> np.ndarray:
    """Round k's samples under the fixed noise of `seed`, as features (n, 1, 8, 8) in [-1, 1] units."""
    import torch

    from ..sampling import sample

    model = model if model is not None else run.load_model(k)
    z = sample(model, int(n), steps=int(steps), seed=int(seed)).detach().to(torch.float64).cpu().numpy()
    feat = run.standardizer.inverse(z.reshape(len(z), -1)).reshape(z.shape)
    return feat


def digits_round_metrics(run, model, round_index: int, n: int = METRIC_N, seed: int = METRIC_SEED,
                         steps: int = METRIC_STEPS, base_model=None) -> dict:
    """Metrics of round k of a digits run: samples under the fixed noise of `seed` against
    round 0's samples under the noise of seed + 1 (cached in the run)."""
    ds = run.config.get("dataset", {})
    info, params = ds.get("info", {}) or {}, ds.get("params", {}) or {}
    rare = info.get("rare_classes") or params.get("rare_classes") or [5, 6, 7, 8, 9]
    min_conf = float(run.config.get("dataset", {}).get("domain", {}).get("min_confidence", 0.7))
    ref_seed = seed + REFERENCE_SEED_OFFSET
    key = f"digits_reference_n{n}_seed{ref_seed}_steps{steps}"
    ref = run.load_array(key)
    if ref is None or ref.shape[0] != n:
        ref_model = model if round_index == 0 else run.load_model(0)
        ref = digits_samples(run, 0, n, ref_seed, steps, model=ref_model)
        run.save_array(key, ref)
    images = digits_samples(run, round_index, n, seed, steps, model=model)
    out = digits_metrics(images, ref, rare_classes=rare, min_confidence=min_conf)
    out.update({"round": int(round_index), "seed": int(seed), "steps": int(steps),
                "entropy": out["entropy_knn"]})
    return out
