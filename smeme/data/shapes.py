"""Hand-made 2-D data: a gallery of ready shapes and drawn strokes turned into point clouds.

Every shape is made of named parts (the two moons, the inner and outer ring, ...). The
`rare_share` of a shape gives its first part exactly that share of the points and splits
the rest evenly over the other parts, so a class can make one part rare and watch S-MEME
find it again. Strokes (polylines, e.g. drawn on a canvas) become points spread evenly
along their length, `spacing` apart, each moved by Gaussian jitter of `jitter` units.
All of it is deterministic under `seed` and works in plain data units (about [-2, 2]).
"""
from __future__ import annotations

import numpy as np

from . import DataError

MAX_POINTS = 20_000  # a drawn or generated set is at most this many points (a CSV run's rows)
MIN_POINTS = 100     # the CSV data set's own minimum number of rows

# name -> the names of its parts (part 0 is the one the imbalance slider makes rare)
SHAPE_PARTS = {
    "two moons": ("lower moon", "upper moon"),
    "rings": ("inner ring", "outer ring"),
    "spiral": ("arm A", "arm B"),
    "checkerboard": tuple(f"cell {i + 1}" for i in range(8)),
    "letter S": ("lower bowl", "upper bowl"),
}
SHAPES = tuple(SHAPE_PARTS)


def part_counts(n: int, parts: int, rare_share: float | None = None) -> list[int]:
    """How many of `n` points each of `parts` parts gets: part 0 round(rare_share * n), the
    others the rest as evenly as possible (earlier parts take the remainder). None: all even."""
    if not 1 <= parts <= n:
        raise DataError(f"{n} points cannot be split over {parts} parts.")
    if rare_share is None:
        rare_share = 1.0 / parts
    if not (np.isfinite(rare_share) and 0.0 < rare_share < 1.0) and parts > 1:
        raise DataError(f"The rare part's share must lie strictly between 0 and 1, got {rare_share}.")
    if parts == 1:
        return [n]
    first = min(max(int(round(rare_share * n)), 1), n - (parts - 1))
    rest, extra = divmod(n - first, parts - 1)
    return [first] + [rest + (1 if i < extra else 0) for i in range(parts - 1)]


def _check_size(n: int) -> None:
    if not MIN_POINTS <= n <= MAX_POINTS:
        raise DataError(f"A shape needs between {MIN_POINTS} and {MAX_POINTS:,} points, got {n}.")


def _arc(center, radius, start, stop, count, rng) -> np.ndarray:
    angle = rng.uniform(start, stop, count)
    return np.column_stack([center[0] + radius * np.cos(angle), center[1] + radius * np.sin(angle)])


def _part(name: str, index: int, count: int, rng) -> np.ndarray:
    """`count` noiseless points of part `index` of shape `name`."""
    if name == "two moons":
        if index == 0:
            return _arc((0.5, 0.25), 1.0, np.pi, 2 * np.pi, count, rng)
        return _arc((-0.5, -0.25), 1.0, 0.0, np.pi, count, rng)
    if name == "rings":
        return _arc((0.0, 0.0), 0.6 if index == 0 else 1.6, 0.0, 2 * np.pi, count, rng)
    if name == "spiral":
        u = np.sqrt(rng.uniform(0.02, 1.0, count))  # even density along the arm's length
        angle = 3.0 * np.pi * u + (np.pi if index == 1 else 0.0)
        return np.column_stack([1.8 * u * np.cos(angle), 1.8 * u * np.sin(angle)])
    if name == "checkerboard":
        row, col = divmod(index, 2)
        x0 = -2.0 + col * 2.0 + (1.0 if row % 2 else 0.0)  # the black cells of a 4 x 4 board
        y0 = -2.0 + row * 1.0
        return np.column_stack([rng.uniform(x0, x0 + 1.0, count), rng.uniform(y0, y0 + 1.0, count)])
    if name == "letter S":
        if index == 0:  # lower bowl: from the middle, round the right, to the bottom left
            return _arc((0.0, -0.8), 0.8, -5 * np.pi / 6, np.pi / 2, count, rng)
        return _arc((0.0, 0.8), 0.8, np.pi / 6, 3 * np.pi / 2, count, rng)  # top right, over, to the middle
    raise DataError(f"Unknown shape '{name}'; choose one of {', '.join(SHAPES)}.")


def shape_points(name: str, n: int = 2000, rare_share: float | None = None, noise: float = 0.06,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points of a gallery shape, (n, 2), in random order, and each point's part index, (n,).

    `rare_share`: part 0's share of the points (None: every part even); `noise`: the
    standard deviation of Gaussian jitter added to every point (data units)."""
    if name not in SHAPE_PARTS:
        raise DataError(f"Unknown shape '{name}'; choose one of {', '.join(SHAPES)}.")
    _check_size(int(n))
    if not (np.isfinite(noise) and 0.0 <= noise <= 1.0):
        raise DataError(f"The jitter width must lie between 0 and 1, got {noise}.")
    rng = np.random.default_rng(seed)
    counts = part_counts(int(n), len(SHAPE_PARTS[name]), rare_share)
    pts = np.concatenate([_part(name, i, c, rng) for i, c in enumerate(counts)])
    parts = np.repeat(np.arange(len(counts)), counts)
    order = rng.permutation(len(pts))  # mixed, so any first m points are a fair sample of the shape
    return pts[order] + noise * rng.standard_normal(pts.shape), parts[order]


def points_along(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points evenly `spacing` apart along a polyline (m, 2), both ends included; a single
    point (or a stroke shorter than `spacing`) gives its first point."""
    stroke = np.asarray(stroke, dtype=float).reshape(-1, 2)
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    length = float(seg.sum())
    if len(stroke) < 2 or length < spacing:
        return stroke[:1].copy()
    at = np.linspace(0.0, length, int(np.floor(length / spacing + 1e-9)) + 1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return np.column_stack([np.interp(at, cum, stroke[:, 0]), np.interp(at, cum, stroke[:, 1])])


def strokes_to_points(strokes, spacing: float = 0.05, jitter: float = 0.08, copies: int = 4,
                      seed: int = 0) -> np.ndarray:
    """A point cloud from strokes: points every `spacing` units along each stroke, each
    repeated `copies` times with Gaussian jitter of standard deviation `jitter` (so a dot
    becomes a blob of `copies` points). Raises DataError past MAX_POINTS."""
    if not (np.isfinite(spacing) and spacing > 0):
        raise DataError(f"The spacing along a stroke must be positive, got {spacing}.")
    if not (np.isfinite(jitter) and 0.0 <= jitter <= 1.0):
        raise DataError(f"The jitter width must lie between 0 and 1, got {jitter}.")
    if not 1 <= int(copies) <= 100:
        raise DataError(f"The points per brush dab must lie between 1 and 100, got {copies}.")
    centres = [points_along(s, spacing) for s in strokes if len(np.asarray(s).reshape(-1, 2))]
    if not centres:
        return np.zeros((0, 2))
    base = np.concatenate(centres)
    if len(base) * int(copies) > MAX_POINTS:
        raise DataError(f"The drawing would make {len(base) * int(copies):,} points; at most {MAX_POINTS:,} "
                        "are allowed (a lighter brush or shorter strokes).")
    rng = np.random.default_rng(seed)
    pts = np.repeat(base, int(copies), axis=0)
    return pts + jitter * rng.standard_normal(pts.shape)
