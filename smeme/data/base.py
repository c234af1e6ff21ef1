"""What every data set provides: raw data in its own units plus a Domain that maps
those units to model features and reads results back (support, categories, densities).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Standardizer:
    """z = (feat - mean) / std, stored with the model.

    log p_feat(f) = log p_z(z) - sum(log std)   (change of variables).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, feat: np.ndarray) -> "Standardizer":
        mean = feat.mean(axis=0)
        std = feat.std(axis=0)
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ValueError("Cannot standardise: a feature is constant (zero spread).")
        return cls(mean.astype(np.float64), std.astype(np.float64))

    def forward(self, feat: np.ndarray) -> np.ndarray:
        return (feat - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def log_det(self, feature_shape: tuple[int, ...]) -> float:
        """log |d z / d feat| = -sum(log std) over one sample's features (std broadcast)."""
        return float(-np.sum(np.log(np.broadcast_to(np.asarray(self.std, dtype=np.float64), feature_shape))))

    def to_config(self) -> dict:
        return {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}

    @classmethod
    def from_config(cls, cfg: dict) -> "Standardizer":
        """Rebuild a saved standardiser; a std that is not positive and finite (a hand edit)
        would make every sample the mean, so it is refused."""
        mean = np.asarray(cfg["mean"], dtype=np.float64)
        std = np.asarray(cfg["std"], dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(std) & (std > 0)).ravel())
        if bad.size:
            raise ValueError(f"the standardizer's std must be positive and finite, but entry {int(bad[0])} "
                             f"is {float(std.ravel()[bad[0]])}")
        if not np.all(np.isfinite(mean)):
            raise ValueError("the standardizer's mean holds NaN or infinite values")
        return cls(mean, std)


class Domain:
    """How a data set's own units (raw columns) map to model features, and back.

    Subclasses set `name`, `columns`, and override what applies to them.
    """

    name: str = "domain"
    columns: list[str] = []

    def to_features(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64)

    def from_features(self, feat: np.ndarray) -> np.ndarray:
        return np.asarray(feat, dtype=np.float64)

    def log_abs_det(self, raw: np.ndarray) -> np.ndarray:
        """log |det d feat / d raw| per row, so log p_raw = log p_feat + this."""
        return np.zeros(len(raw))

    def on_support(self, raw: np.ndarray) -> np.ndarray:
        """Boolean per row: is the point on the data's support / a valid object."""
        return np.all(np.isfinite(raw), axis=1)

    def fit_standardizer(self, feat: np.ndarray) -> Standardizer:
        """The standardisation the model trains in (per-feature by default)."""
        return Standardizer.fit(feat)

    def explore_defaults(self) -> dict:
        """ExploreConfig settings this kind of data needs instead of the defaults."""
        return {}

    def categories(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """Named per-row labels (e.g. {'region': ...}); empty when the data has none."""
        return {}

    def to_config(self) -> dict:
        raise NotImplementedError


@dataclass(init=False)
class Dataset:
    domain: Domain
    raw: np.ndarray  # (n, len(domain.columns)), the data's own units
    info: dict = field(default_factory=dict)

    def __init__(self, domain: Domain, raw: np.ndarray, table=None, info: dict | None = None):
        self.domain, self.raw, self.info = domain, raw, dict(info or {})
        # a richer per-row table (a DataFrame) where the data set has one, or a function that
        # makes it on first use: pandas costs ~1 s to import and training never needs it
        self._table = table

    @property
    def table(self):
        if callable(self._table):
            self._table = self._table()
        return self._table

    def features(self) -> np.ndarray:
        return self.domain.to_features(self.raw)
