"""8x8 handwritten digits (scikit-learn's `load_digits`, shipped inside the wheel: no download).

Raw units: 64 pixel columns p00..p77 with integer intensities 0..16 (row-major).
Features: images of shape (1, 8, 8) scaled to [-1, 1] (f = raw / 8 - 1). Models run at the
data's own 8x8 resolution; upsampling is for display only.

Default data set: an imbalanced subset, so that exploration has a measurable target.
Classes 0-4 keep all their images, classes 5-9 keep 20% of theirs (the first 20% in a
seeded shuffle). The training set is then about 1,080 images, of which the "rare"
classes 5-9 are 1/6. A model that explores its manifold should raise that share.

Validity / on-support: a generated image is "valid" when the in-project digit classifier
(`smeme.images.classifier`) is confident about it (max class probability >= `min_confidence`).
Categories: {'digit': predicted class as a string '0'..'9'}.
"""
from __future__ import annotations

import numpy as np

from ..data.base import Dataset, Domain, Standardizer
from .classifier import get_classifier
from .pixels import (DEFAULT_RARE_CLASSES, DEFAULT_RARE_FRACTION, MAX_INTENSITY, N_PIXELS, SIDE,  # noqa: F401
                     images_to_raw, imbalanced_indices, load_all_digits, pixel_columns, raw_to_images)


class DigitsDomain(Domain):
    name = "digits"
    sample_shape = (1, SIDE, SIDE)

    def __init__(self, min_confidence: float = 0.7):
        if not 0 < min_confidence < 1:
            raise ValueError(f"min_confidence must lie in (0, 1), got {min_confidence}.")
        self.min_confidence = float(min_confidence)
        self.columns = pixel_columns()

    def to_features(self, raw: np.ndarray) -> np.ndarray:
        return raw_to_images(raw)

    def from_features(self, feat: np.ndarray) -> np.ndarray:
        return images_to_raw(feat)

    def log_abs_det(self, raw: np.ndarray) -> np.ndarray:
        # feat = raw / 8 - 1 for each of the 64 pixels: log|det| = -64 log 8
        return np.full(len(raw), -N_PIXELS * np.log(MAX_INTENSITY / 2))

    def _probs(self, raw: np.ndarray) -> np.ndarray:
        return get_classifier().predict_proba(raw_to_images(np.clip(raw, 0, MAX_INTENSITY)))

    def on_support(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        finite = np.all(np.isfinite(raw), axis=1)
        out = np.zeros(len(raw), dtype=bool)
        if finite.any():
            out[finite] = self._probs(raw[finite]).max(axis=1) >= self.min_confidence
        return out

    def categories(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        raw = np.nan_to_num(np.asarray(raw, dtype=np.float64))
        return {"digit": self._probs(raw).argmax(axis=1).astype(str)}

    def fit_standardizer(self, feat: np.ndarray):
        """The identity: features are already in [-1, 1], and per-pixel standardisation is
        undefined here (corner pixels are always 0)."""
        return Standardizer(np.zeros(()), np.ones(()))

    def explore_defaults(self) -> dict:
        from .digits_rounds import digits_explore_defaults

        return digits_explore_defaults()

    def round_metrics(self, run, model, round_index: int, **kw) -> dict:
        """Image metrics of a round (smeme.images.metrics.digits_round_metrics)."""
        from .metrics import digits_round_metrics

        return digits_round_metrics(run, model, round_index, **kw)

    def to_config(self) -> dict:
        return {"name": "digits", "min_confidence": self.min_confidence}

    @classmethod
    def from_config(cls, cfg: dict) -> "DigitsDomain":
        return cls(min_confidence=float(cfg.get("min_confidence", 0.7)))


def make_digits(n=None, seed: int = 0, rare_classes=DEFAULT_RARE_CLASSES,
                rare_fraction: float = DEFAULT_RARE_FRACTION, balanced: bool = False,
                min_confidence: float = 0.7) -> Dataset:
    """The digits data set (imbalanced by default; `balanced=True` keeps all 1,797).

    `n` (optional) subsamples the result without replacement (seeded).
    """
    import pandas as pd

    raw, labels = load_all_digits()
    rare = tuple(int(c) for c in (() if balanced else rare_classes))
    if any(c < 0 or c > 9 for c in rare):
        raise ValueError(f"Rare classes must be digits 0..9, got {rare}.")
    idx = np.arange(len(labels)) if balanced or not rare else imbalanced_indices(labels, rare, rare_fraction, seed)
    if n is not None:
        n = int(n)
        if n < 1:
            raise ValueError(f"The number of digits must be positive, got {n}.")
        idx = np.sort(np.random.default_rng(int(seed)).permutation(idx)[: min(n, len(idx))])
    domain = DigitsDomain(min_confidence=min_confidence)
    table = pd.DataFrame({"label": labels[idx]})
    share = float(np.isin(labels[idx], rare).mean()) if rare else 0.0
    info = {"rare_classes": list(rare), "rare_fraction": float(rare_fraction) if rare else 1.0,
            "rare_share": share, "n": int(len(idx)),
            "class_counts": np.bincount(labels[idx], minlength=10).tolist()}
    return Dataset(domain=domain, raw=raw[idx], table=table, info=info)
