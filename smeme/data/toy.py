"""The two-square toy density of the paper's Figure 2.

Two equal squares of side `side`, `gap` apart along x, centred on the origin:
the dense square on the left holds `dense_mass` of the mass, the sparse square on the
right holds the rest, uniform inside each. Everything here is exact, so the toy is the
place where S-MEME's closed forms are checked:

    p_k(x) ∝ p_pre(x) ** ((1 - lam) ** k)      (k rounds of entropy reward at rate lam)
"""
from __future__ import annotations

import numpy as np

from . import DataError
from .base import Dataset, Domain


def _check_params(dense_mass: float, side: float, gap: float) -> None:
    if not 0.0 < dense_mass < 1.0:
        raise DataError(f"dense_mass must lie strictly between 0 and 1, got {dense_mass}.")
    if not side > 0.0:
        raise DataError(f"The square side must be positive, got {side}.")
    if not gap >= 0.0:
        raise DataError(f"The gap between the squares must be zero or more, got {gap}.")


class ToyDomain(Domain):
    """Raw = features = (x, y); support = the two closed squares."""

    name = "toy"
    columns = ["x", "y"]

    def __init__(self, dense_mass: float = 0.9, side: float = 1.0, gap: float = 0.5):
        _check_params(dense_mass, side, gap)
        self.dense_mass = float(dense_mass)
        self.side = float(side)
        self.gap = float(gap)

    # -- geometry -----------------------------------------------------------------
    def boxes(self) -> dict[str, tuple[float, float, float, float]]:
        """{'dense' | 'sparse': (x_min, x_max, y_min, y_max)}."""
        s, g = self.side, self.gap
        return {
            "dense": (-g / 2 - s, -g / 2, -s / 2, s / 2),
            "sparse": (g / 2, g / 2 + s, -s / 2, s / 2),
        }

    def _inside(self, raw: np.ndarray, box) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        x, y = raw[:, 0], raw[:, 1]
        x0, x1, y0, y1 = box
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)  # NaN compares False

    def on_support(self, raw: np.ndarray) -> np.ndarray:
        boxes = self.boxes()
        return self._inside(raw, boxes["dense"]) | self._inside(raw, boxes["sparse"])

    def categories(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        boxes = self.boxes()
        region = np.full(len(raw), "off", dtype=object)
        region[self._inside(raw, boxes["sparse"])] = "sparse"
        region[self._inside(raw, boxes["dense"])] = "dense"
        return {"region": region}

    def log_density(self, raw: np.ndarray) -> np.ndarray:
        """Exact log p_pre(x): log(mass / area) inside a square, -inf outside."""
        region = self.categories(raw)["region"]
        area = self.side**2
        out = np.full(len(raw), -np.inf)
        out[region == "dense"] = np.log(self.dense_mass / area)
        out[region == "sparse"] = np.log((1 - self.dense_mass) / area)
        return out

    # -- closed forms ---------------------------------------------------------------
    def sparse_share_after(self, lam: float, k: int) -> float:
        return sparse_share_after(lam, k, self.dense_mass)

    def entropy_after(self, lam: float, k: int) -> float:
        return entropy_after(lam, k, self.dense_mass, self.side)

    def pretrained_entropy(self) -> float:
        return pretrained_entropy(self.dense_mass, self.side)

    # -- plotting -------------------------------------------------------------------
    def plane_grid(self, resolution: int = 64, margin: float | None = None):
        """A regular grid over a box around both squares.

        Returns (xs, ys, raw_points, x_label, y_label); raw_points has
        len(ys) * len(xs) rows, x varying fastest (reshape to (len(ys), len(xs))).
        """
        margin = 0.25 * self.side if margin is None else float(margin)
        b = self.boxes()
        xs = np.linspace(b["dense"][0] - margin, b["sparse"][1] + margin, resolution)
        ys = np.linspace(b["dense"][2] - margin, b["dense"][3] + margin, resolution)
        gx, gy = np.meshgrid(xs, ys)
        return xs, ys, np.column_stack([gx.ravel(), gy.ravel()]), "x", "y"

    def overlay(self) -> list[dict]:
        """Outlines of the two squares as closed polylines: [{'name', 'x', 'y', 'mode'}]."""
        out = []
        for region, (x0, x1, y0, y1) in self.boxes().items():
            out.append({
                "name": f"{region} square",
                "x": [x0, x1, x1, x0, x0],
                "y": [y0, y0, y1, y1, y0],
                "mode": "lines",
            })
        return out

    # -- config ---------------------------------------------------------------------
    def to_config(self) -> dict:
        return {"name": self.name, "dense_mass": self.dense_mass, "side": self.side, "gap": self.gap}

    @classmethod
    def from_config(cls, cfg: dict) -> "ToyDomain":
        return cls(dense_mass=cfg["dense_mass"], side=cfg["side"], gap=cfg["gap"])


# -- closed forms (equal-area squares) --------------------------------------------------
def tilted_shares(lam: float, k: int, dense_mass: float = 0.9) -> tuple[float, float]:
    """(dense, sparse) mass after k rounds: share_i ∝ m_i ** g with g = (1 - lam) ** k.

    p_k ∝ p_pre ** g is constant on each square, so the mass of square i is
    area * (m_i / area) ** g; the equal areas cancel in the normalisation.
    """
    _check_params(dense_mass, 1.0, 0.0)
    if not 0.0 <= lam <= 1.0:
        raise DataError(f"lam must lie in [0, 1], got {lam}.")
    if k < 0:
        raise DataError(f"The round number k must be zero or more, got {k}.")
    g = (1.0 - lam) ** k
    dense, sparse = dense_mass**g, (1.0 - dense_mass) ** g
    return dense / (dense + sparse), sparse / (dense + sparse)


def sparse_share_after(lam: float, k: int, dense_mass: float = 0.9) -> float:
    """Mass in the sparse square after k rounds (0.9/0.1, lam=0.1: 0.12, 0.14, 0.17, 0.19)."""
    return tilted_shares(lam, k, dense_mass)[1]


def entropy_after(lam: float, k: int, dense_mass: float = 0.9, side: float = 1.0) -> float:
    """Differential entropy (nats) of p_k: H = -sum_i w_i log(w_i / area)  (piecewise uniform)."""
    area = side**2
    total = 0.0
    for w in tilted_shares(lam, k, dense_mass):
        if w > 0:
            total -= w * np.log(w / area)
    return float(total)


def pretrained_entropy(dense_mass: float = 0.9, side: float = 1.0) -> float:
    """Entropy of p_pre itself (k = 0)."""
    return entropy_after(0.0, 0, dense_mass, side)


def make_toy(n: int = 20_000, seed: int = 0, dense_mass: float = 0.9, side: float = 1.0,
             gap: float = 0.5) -> Dataset:
    """n points, exactly round(n * dense_mass) of them uniform in the dense square."""
    if n < 2:
        raise DataError(f"The toy data set needs at least 2 points, got n={n}.")
    domain = ToyDomain(dense_mass, side, gap)
    rng = np.random.default_rng(seed)
    n_dense = int(round(n * dense_mass))
    counts = {"dense": n_dense, "sparse": n - n_dense}
    parts, labels = [], []
    for region, (x0, x1, y0, y1) in domain.boxes().items():
        m = counts[region]
        parts.append(np.column_stack([rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)]))
        labels += [region] * m
    order = rng.permutation(n)
    raw = np.concatenate(parts)[order]
    regions = np.asarray(labels, dtype=object)[order]
    info = {"name": "toy", "params": {"n": n, "seed": seed, **domain.to_config()}}
    info["params"].pop("name")
    return Dataset(domain=domain, raw=raw, table=lambda: _table(raw, regions, domain.columns), info=info)


def _table(raw: np.ndarray, regions: np.ndarray, columns):
    import pandas as pd

    table = pd.DataFrame(raw, columns=columns)
    table["region"] = regions
    return table
