"""The 8x8 handwritten digits' raw pixels (scikit-learn's `load_digits`, shipped inside the
wheel: no download) and the map between raw intensities and model features.

Raw units: 64 pixel columns p00..p77 with integer intensities 0..16 (row-major).
Features: images of shape (1, 8, 8) scaled to [-1, 1] (f = raw / 8 - 1).
"""
from __future__ import annotations

import numpy as np

SIDE = 8
N_PIXELS = SIDE * SIDE
MAX_INTENSITY = 16.0
DEFAULT_RARE_CLASSES = (5, 6, 7, 8, 9)
DEFAULT_RARE_FRACTION = 0.2


def pixel_columns() -> list[str]:
    return [f"p{r}{c}" for r in range(SIDE) for c in range(SIDE)]


def load_all_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: raw pixels (n, 64) in 0..16 and labels (n,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


def raw_to_images(raw: np.ndarray) -> np.ndarray:
    """(n, 64) raw 0..16 -> (n, 1, 8, 8) in [-1, 1]."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != N_PIXELS:
        raise ValueError(f"Digits need {N_PIXELS} pixel columns per row, got shape {raw.shape}.")
    return (raw / (MAX_INTENSITY / 2) - 1.0).reshape(-1, 1, SIDE, SIDE)


def images_to_raw(img: np.ndarray) -> np.ndarray:
    """(n, 1, 8, 8) (or (n, 64)) in [-1, 1] -> (n, 64) raw intensities (not clipped)."""
    img = np.asarray(img, dtype=np.float64)
    return ((img.reshape(img.shape[0], -1) + 1.0) * (MAX_INTENSITY / 2))


def imbalanced_indices(labels: np.ndarray, rare_classes=DEFAULT_RARE_CLASSES,
                       rare_fraction: float = DEFAULT_RARE_FRACTION, seed: int = 0) -> np.ndarray:
    """Indices keeping every image of common classes and `rare_fraction` of the rare ones."""
    if not 0 < rare_fraction <= 1:
        raise ValueError(f"rare_fraction must lie in (0, 1], got {rare_fraction}.")
    rng = np.random.default_rng(int(seed))
    keep = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if c in set(int(r) for r in rare_classes):
            idx = rng.permutation(idx)[: max(1, int(round(rare_fraction * len(idx))))]
        keep.append(np.sort(idx))
    return np.sort(np.concatenate(keep))
