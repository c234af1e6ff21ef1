"""Triangles given by their sides, a <= b <= c < 1.

Labels (sides sorted a <= b <= c, tol relative, angles in degrees):
    valid        finite, a > 0 and a + b > c; on the support if also c < 1
    equilateral  c - a <= tol * c
    isosceles    not equilateral, and b - a <= tol * b or c - b <= tol * c
    scalene      otherwise
    C            arccos((a^2 + b^2 - c^2) / (2ab))   (the largest angle)
    right        |C - 90| <= right_tol_deg; obtuse if C > 90 + right_tol_deg; else acute

Model features are (a/l, b/l, l) with l = a + b + c. The inverse is
(a, b, c) = (p l, q l, (1 - p - q) l), whose Jacobian determinant is l^2, so
    log p_raw(a, b, c) = log p_feat(a/l, b/l, l) - 2 log l.

Generation: every (side type, angle type) cell gets an exact count, and each cell is
filled by proposing triangles near it and keeping those `classify` puts in it (so the
labels of the data are the labels the metrics will read). In the (u = a/c, v = b/c)
plane, scalene cells are uniform on their part of the valid region; thin cells (right,
isosceles, equilateral) use constructions along their curves. The largest side c has
density proportional to c^2 on (0, max_side), so a data set with the natural shares would
be uniform over the valid sorted triangles with c < max_side.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from . import DataError
from .base import Dataset, Domain

SIDE_TYPES = ("equilateral", "isosceles", "scalene")
ANGLE_TYPES = ("acute", "right", "obtuse")
INFEASIBLE = {("equilateral", "right"), ("equilateral", "obtuse")}
# What the blog's data contained: ~1% isosceles, no equilateral, ~85% acute, ~15% obtuse.
DEFAULT_SIDE_SHARES = {"equilateral": 0.0, "isosceles": 0.01, "scalene": 0.99}
DEFAULT_ANGLE_SHARES = {"acute": 0.85, "right": 0.0, "obtuse": 0.15}


# -- classification ---------------------------------------------------------------------
def sort_sides(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != 3:
        raise DataError(f"Triangles need 3 columns (a, b, c); got an array of shape {raw.shape}.")
    return np.sort(raw, axis=1)  # NaN sorts last, and such rows are invalid anyway


def is_valid(sides: np.ndarray) -> np.ndarray:
    """On sorted sides: finite, a > 0 and the triangle inequality a + b > c."""
    a, b, c = sides.T
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(sides), axis=1) & (a > 0) & (a + b > c)


def _angle_deg(opp, s1, s2):
    """Law of cosines: the angle opposite `opp`, in degrees."""
    cos = (s1**2 + s2**2 - opp**2) / (2 * s1 * s2)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _labels(raw, tol: float, right_tol_deg: float) -> dict[str, np.ndarray]:
    sides = sort_sides(raw)
    valid = is_valid(sides)
    n = len(sides)
    a, b, c = np.where(valid[:, None], sides, 1.0).T  # placeholder sides keep the math quiet
    angle_c = _angle_deg(c, a, b)
    equilateral = c - a <= tol * c
    isosceles = ~equilateral & ((b - a <= tol * b) | (c - b <= tol * c))
    side_type = np.where(equilateral, "equilateral", np.where(isosceles, "isosceles", "scalene"))
    right = np.abs(angle_c - 90.0) <= right_tol_deg
    obtuse = ~right & (angle_c > 90.0 + right_tol_deg)
    angle_type = np.where(right, "right", np.where(obtuse, "obtuse", "acute"))
    side_type = np.where(valid, side_type, "invalid").astype(object)
    angle_type = np.where(valid, angle_type, "invalid").astype(object)
    nan = np.full(n, np.nan)
    return {
        "sides": sides, "valid": valid, "side_type": side_type, "angle_type": angle_type,
        "angle_A": np.where(valid, _angle_deg(a, b, c), nan),
        "angle_B": np.where(valid, _angle_deg(b, a, c), nan),
        "angle_C": np.where(valid, angle_c, nan),
    }


def heron_area(sides: np.ndarray) -> np.ndarray:
    """Heron's formula in Kahan's stable form for sorted sides; NaN where invalid."""
    x, y, z = sides.T
    with np.errstate(invalid="ignore"):
        prod = (z + (y + x)) * (x - (z - y)) * (x + (z - y)) * (z + (y - x))
        return np.where(is_valid(sides), 0.25 * np.sqrt(np.maximum(prod, 0.0)), np.nan)


def classify(raw: np.ndarray, tol: float = 0.02, right_tol_deg: float = 1.0) -> pd.DataFrame:
    """One row per triangle: sorted sides, validity, labels, angles, perimeter, area, ratios."""
    import pandas as pd

    lab = _labels(raw, tol, right_tol_deg)
    a, b, c = lab["sides"].T
    valid = lab["valid"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "a": a, "b": b, "c": c,
            "valid": valid,
            "on_support": valid & (c < 1.0),
            "side_type": lab["side_type"],
            "angle_type": lab["angle_type"],
            "angle_A": lab["angle_A"], "angle_B": lab["angle_B"], "angle_C": lab["angle_C"],
            "perimeter": a + b + c,
            "area": heron_area(lab["sides"]),
            "a_over_c": a / c,
            "b_over_c": b / c,
        })


# -- the domain -----------------------------------------------------------------------------
class TriangleDomain(Domain):
    name = "triangles"
    columns = ["a", "b", "c"]
    feature_names = ["a/l", "b/l", "l"]

    def __init__(self, tol: float = 0.02, right_tol_deg: float = 1.0):
        if not 0.0 <= tol < 1.0:
            raise DataError(f"The side tolerance tol must lie in [0, 1), got {tol}.")
        if not 0.0 <= right_tol_deg < 90.0:
            raise DataError(f"The right-angle tolerance must lie in [0, 90) degrees, got {right_tol_deg}.")
        self.tol = float(tol)
        self.right_tol_deg = float(right_tol_deg)

    def to_features(self, raw: np.ndarray) -> np.ndarray:
        """(a/l, b/l, l), l = a + b + c; rows are taken as given (not sorted), so this is a bijection."""
        raw = np.asarray(raw, dtype=np.float64)
        l = raw.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.column_stack([raw[:, 0] / l, raw[:, 1] / l, l])

    def from_features(self, feat: np.ndarray) -> np.ndarray:
        """(a, b, c) = (p l, q l, (1 - p - q) l)."""
        feat = np.asarray(feat, dtype=np.float64)
        p, q, l = feat.T
        return np.column_stack([p * l, q * l, (1.0 - p - q) * l])

    def log_abs_det(self, raw: np.ndarray) -> np.ndarray:
        """log |det d(a/l, b/l, l) / d(a, b, c)| = -2 log l."""
        l = np.asarray(raw, dtype=np.float64).sum(axis=1)
        with np.errstate(divide="ignore"):
            return -2.0 * np.log(np.abs(l))

    def on_support(self, raw: np.ndarray) -> np.ndarray:
        sides = sort_sides(raw)
        return is_valid(sides) & (sides[:, 2] < 1.0)

    def categories(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        lab = _labels(raw, self.tol, self.right_tol_deg)
        return {"side_type": lab["side_type"], "angle_type": lab["angle_type"]}

    def classify(self, raw: np.ndarray) -> pd.DataFrame:
        return classify(raw, self.tol, self.right_tol_deg)

    def plane_grid(self, resolution: int = 64, c: float = 0.8, upper: float = 1.0):
        """Grid over the (u = a/c, v = b/c) plane, [0, upper]^2, at a fixed largest side c.

        Returns (us, vs, raw_points, x_label, y_label) with raw = (u c, v c, c), u
        varying fastest (reshape to (len(vs), len(us))).
        """
        if not c > 0:
            raise DataError(f"The fixed side c of the plane must be positive, got {c}.")
        us = np.linspace(0.0, upper, resolution)
        vs = np.linspace(0.0, upper, resolution)
        gu, gv = np.meshgrid(us, vs)
        raw = np.column_stack([gu.ravel() * c, gv.ravel() * c, np.full(gu.size, float(c))])
        return us, vs, raw, "u = a/c", "v = b/c"

    def overlay(self) -> list[dict]:
        """Curves of the (u, v) plane: valid region, right angles, isosceles lines, equilateral."""
        theta = np.linspace(np.pi / 4, np.pi / 2, 65)  # u^2 + v^2 = 1 with u <= v
        return [
            {"name": "valid region", "x": [0.5, 0.0, 1.0, 0.5], "y": [0.5, 1.0, 1.0, 0.5], "mode": "lines"},
            {"name": "right (u^2 + v^2 = 1)", "x": np.cos(theta).tolist(), "y": np.sin(theta).tolist(), "mode": "lines"},
            {"name": "isosceles (u = v)", "x": [0.5, 1.0], "y": [0.5, 1.0], "mode": "lines"},
            {"name": "isosceles (v = 1)", "x": [0.0, 1.0], "y": [1.0, 1.0], "mode": "lines"},
            {"name": "equilateral", "x": [1.0], "y": [1.0], "mode": "markers"},
        ]

    def to_config(self) -> dict:
        return {"name": self.name, "tol": self.tol, "right_tol_deg": self.right_tol_deg}

    @classmethod
    def from_config(cls, cfg: dict) -> "TriangleDomain":
        return cls(tol=cfg.get("tol", 0.02), right_tol_deg=cfg.get("right_tol_deg", 1.0))


# -- exact counts ---------------------------------------------------------------------------
def largest_remainder(shares: dict, n: int) -> dict:
    """Integer counts summing to n, each floor(share n) or one more (Hamilton's method)."""
    keys = list(shares)
    quotas = np.array([shares[k] * n for k in keys], dtype=np.float64)
    counts = np.floor(quotas + 1e-9).astype(int)
    left = n - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:left]] += 1
    return dict(zip(keys, counts.tolist()))


def _check_shares(shares: dict | None, names: tuple, default: dict, what: str) -> dict:
    if shares is None:
        return dict(default)
    unknown = [k for k in shares if k not in names]
    if unknown:
        raise DataError(f"Unknown {what} type '{unknown[0]}'; choose from {', '.join(names)}.")
    out = {k: float(shares.get(k, 0.0)) for k in names}
    if any(not math.isfinite(v) or v < 0 for v in out.values()):
        raise DataError(f"The {what} shares must be finite and non-negative, got {shares}.")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"The {what} shares sum to {total:g}; they must sum to 1.")
    return {k: v / total for k, v in out.items()}


def cell_counts(n: int, side_shares: dict | None = None, angle_shares: dict | None = None) -> dict:
    """Exact count per (side type, angle type) whose marginals are the requested shares.

    Rule: side and angle counts are rounded by largest remainder; equilateral triangles
    are all acute (the only feasible kind); the isosceles count is spread over the
    remaining angle counts in proportion to them, and scalene takes the rest. Refuses a
    request in which the equilateral share exceeds the acute share.
    """
    side = _check_shares(side_shares, SIDE_TYPES, DEFAULT_SIDE_SHARES, "side")
    angle = _check_shares(angle_shares, ANGLE_TYPES, DEFAULT_ANGLE_SHARES, "angle")
    if side["equilateral"] > angle["acute"] + 1e-9:
        raise DataError(
            f"Equilateral triangles are always acute, so the equilateral share "
            f"({side['equilateral']:g}) cannot exceed the acute share ({angle['acute']:g}).")
    side_n, angle_n = largest_remainder(side, n), largest_remainder(angle, n)
    equilateral = min(side_n["equilateral"], angle_n["acute"])  # rounding tie: at most one off
    side_n["scalene"] += side_n["equilateral"] - equilateral
    rest = dict(angle_n, acute=angle_n["acute"] - equilateral)
    n_rest = n - equilateral
    iso = largest_remainder({k: v / n_rest for k, v in rest.items()}, side_n["isosceles"]) if n_rest else {}
    counts = {(s, a): 0 for s in SIDE_TYPES for a in ANGLE_TYPES}
    counts[("equilateral", "acute")] = equilateral
    for a in ANGLE_TYPES:
        counts[("isosceles", a)] = iso.get(a, 0)
        counts[("scalene", a)] = rest[a] - iso.get(a, 0)
    return counts


def _parse_cell_shares(cell_shares: dict) -> dict:
    """{(side, angle) or 'side/angle': share} -> full dict over all cells; refuses infeasible ones."""
    out = {(s, a): 0.0 for s in SIDE_TYPES for a in ANGLE_TYPES}
    for key, share in cell_shares.items():
        cell = tuple(key.split("/")) if isinstance(key, str) else tuple(key)
        if cell not in out:
            raise DataError(f"Unknown triangle cell {key!r}; use (side type, angle type), e.g. ('isosceles', 'obtuse').")
        if not math.isfinite(share) or share < 0:
            raise DataError(f"The share of {cell[0]} {cell[1]} triangles must be finite and non-negative, got {share}.")
        if cell in INFEASIBLE and share > 0:
            raise DataError(f"{cell[0].capitalize()} {cell[1]} triangles do not exist (an equilateral "
                            f"triangle's angles are all 60 degrees), so their share must be 0.")
        out[cell] = float(share)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"The cell shares sum to {total:g}; they must sum to 1.")
    return out


# -- proposals per cell, in the (u, v) = (a/c, b/c) plane ------------------------------------------
def _uniform_valid_region(m, rng):
    """Uniform on the triangle (1/2, 1/2), (0, 1), (1, 1) (reflection trick)."""
    r1, r2 = rng.random(m), rng.random(m)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    u = 0.5 + r1 * (0.0 - 0.5) + r2 * (1.0 - 0.5)
    v = 0.5 + r1 * (1.0 - 0.5) + r2 * (1.0 - 0.5)
    return u, v


def _from_angles(A, C):
    """Sides over c from angles (law of sines): u = sin A / sin C, v = sin B / sin C."""
    B = 180.0 - A - C
    sc = np.sin(np.radians(C))
    return np.sin(np.radians(A)) / sc, np.sin(np.radians(B)) / sc


def _propose(cell, m, rng, tol, right_tol_deg):
    side, angle = cell
    if side == "equilateral":  # a, b within tol of c
        u, v = np.sort(rng.uniform(1 - tol, 1.0, (2, m)), axis=0)
        return u, v
    if angle == "right":  # C in the right band, A below B
        C = rng.uniform(90 - right_tol_deg, 90 + right_tol_deg, m)
        half = (180.0 - C) / 2
        width = half if side == "scalene" else np.minimum(half, np.degrees(tol))
        return _from_angles(half - width * rng.random(m), C)
    if side == "isosceles":  # near u = v (any angle type) or near v = 1 (always acute)
        on_diagonal = rng.random(m) < (1.0 if angle == "obtuse" else 0.3)
        v = np.where(on_diagonal, rng.uniform(0.5, 1.0, m), 1.0 - tol * rng.random(m))
        u = np.where(on_diagonal, v * (1.0 - tol * rng.random(m)), rng.uniform(1.0 - v, v))
        return u, v
    return _uniform_valid_region(m, rng)  # scalene acute / obtuse


def _fill_cell(cell, m, rng, tol, right_tol_deg, max_side):
    """m triangles that `classify` puts in `cell`, by proposal and rejection."""
    kept, have, proposed = [], 0, 0
    while have < m:
        if proposed > 1000 * m + 100_000:
            raise DataError(f"Could not generate {cell[0]} {cell[1]} triangles with tol={tol} "
                            f"and right_tol_deg={right_tol_deg}; the tolerances leave that type almost no room.")
        batch = 2 * (m - have) + 256
        u, v = _propose(cell, batch, rng, tol, right_tol_deg)
        c = max_side * rng.random(batch) ** (1.0 / 3.0)  # density ∝ c^2 on (0, max_side)
        raw = np.column_stack([u * c, v * c, c])
        lab = _labels(raw, tol, right_tol_deg)
        ok = lab["valid"] & (lab["side_type"] == cell[0]) & (lab["angle_type"] == cell[1]) & (lab["sides"][:, 2] < max_side)
        kept.append(lab["sides"][ok])
        have += int(ok.sum())
        proposed += batch
    return np.concatenate(kept)[:m]


def make_triangles(n: int = 8192, seed: int = 0, side_shares: dict | None = None,
                   angle_shares: dict | None = None, cell_shares: dict | None = None,
                   max_side: float = 1.0, tol: float = 0.02, right_tol_deg: float = 1.0) -> Dataset:
    """n sorted triangles with exactly the requested shares of side and angle types.

    Pass marginal `side_shares` / `angle_shares` (dicts over SIDE_TYPES / ANGLE_TYPES,
    joined by the rule in `cell_counts`), or the joint `cell_shares` directly.
    """
    if n < 1:
        raise DataError(f"The triangle data set needs at least one triangle, got n={n}.")
    if not 0.0 < max_side <= 1.0:
        raise DataError(f"max_side must lie in (0, 1], got {max_side}.")
    domain = TriangleDomain(tol, right_tol_deg)
    if cell_shares is not None:
        if side_shares is not None or angle_shares is not None:
            raise DataError("Pass either cell_shares or side_shares/angle_shares, not both.")
        counts = largest_remainder(_parse_cell_shares(cell_shares), n)
    else:
        counts = cell_counts(n, side_shares, angle_shares)
    rng = np.random.default_rng(seed)
    parts = [_fill_cell(cell, m, rng, tol, right_tol_deg, max_side) for cell, m in counts.items() if m > 0]
    raw = np.concatenate(parts)[rng.permutation(n)]
    params = {"n": n, "seed": seed, "side_shares": side_shares, "angle_shares": angle_shares,
              "cell_shares": None if cell_shares is None else {"/".join(k) if not isinstance(k, str) else k: v
                                                                for k, v in cell_shares.items()},
              "max_side": max_side, "tol": tol, "right_tol_deg": right_tol_deg}
    info = {"name": "triangles", "params": params, "cell_counts": {"/".join(k): v for k, v in counts.items()}}
    return Dataset(domain=domain, raw=raw, table=lambda: domain.classify(raw), info=info)
