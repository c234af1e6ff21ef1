"""Draw your data: a canvas drawing (Fabric.js JSON from the drawing component) or a gallery
shape becomes a point cloud, and the point cloud becomes a CSV run.

The canvas is read in pixels and mapped to data units: the canvas height spans [-2, 2] on
the y axis (up is up), the x axis has the same scale, centred. `train_on_points` is the
one place that turns points into a training job: it writes them as an uploaded CSV and
starts the same CSV pre-training an upload starts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import DataError
from ..data.shapes import MIN_POINTS, SHAPE_PARTS, shape_points, strokes_to_points
from . import launch, runs, settings

DATA_HALF_HEIGHT = 2.0  # the canvas height spans [-2, 2] data units
MAX_OBJECTS = 500       # strokes and dots read from one drawing (the rest are ignored)
MAX_VERTICES = 20_000   # vertices read from one drawing in all
CANVAS_SIZE = (440, 220)  # the drawing canvas in pixels (width, height): x spans [-4, 4]
PREVIEW_RANGES = ((-4.2, 4.2), (-2.2, 2.2))  # the preview's axes: the whole canvas, fixed
PREVIEW_POINTS = 2000   # points drawn in the preview (a larger set shows a fair sample of them)
BRUSH_SPACING = 0.05    # data units between two dabs of the brush along a stroke


def _number(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _path_vertices(obj: dict) -> np.ndarray:
    """The (x, y) pairs of a Fabric path's commands (end and control points), moved by the
    object's offset if it was dragged after drawing (left/top differ from the path's box)."""
    xy = []
    for cmd in obj.get("path") or []:
        if not isinstance(cmd, (list, tuple)):
            continue
        nums = [n for n in (_number(v) for v in cmd[1:]) if n is not None]
        xy.extend(zip(nums[0::2], nums[1::2]))
    pts = np.asarray(xy, dtype=float).reshape(-1, 2)
    left, top = _number(obj.get("left")), _number(obj.get("top"))
    if len(pts) and left is not None and top is not None and obj.get("originX", "left") == "left":
        half = (_number(obj.get("strokeWidth")) or 0.0) / 2
        pts = pts + (left + half - pts[:, 0].min(), top + half - pts[:, 1].min())
    return pts


def _dot_centre(obj: dict) -> np.ndarray:
    left, top = _number(obj.get("left")), _number(obj.get("top"))
    if left is None or top is None:
        return np.zeros((0, 2))
    r = _number(obj.get("radius")) or 0.0
    cx = left + (r if obj.get("originX", "left") == "left" else 0.0)
    cy = top + (r if obj.get("originY", "top") == "top" else 0.0)
    return np.array([[cx, cy]])


def canvas_strokes(drawing, width: int, height: int) -> list[np.ndarray]:
    """The strokes (freehand paths) and dots (circles) of a canvas drawing, in data units.

    `drawing`: the component's json_data ({'objects': [...]}); anything else, and objects
    of other kinds, are ignored (a browser sends it: it is read, never trusted)."""
    objects = drawing.get("objects") if isinstance(drawing, dict) else None
    if not isinstance(objects, list) or width <= 0 or height <= 0:
        return []
    scale = 2 * DATA_HALF_HEIGHT / float(height)
    strokes, budget = [], MAX_VERTICES
    for obj in objects[:MAX_OBJECTS]:
        if not isinstance(obj, dict):
            continue
        kind = str(obj.get("type", "")).lower()
        pts = _path_vertices(obj) if kind == "path" else _dot_centre(obj) if kind == "circle" else None
        if pts is None or not len(pts):
            continue
        pts = pts[:budget]
        budget -= len(pts)
        strokes.append(np.column_stack([(pts[:, 0] - width / 2) * scale, (height / 2 - pts[:, 1]) * scale]))
        if budget <= 0:
            break
    return strokes


def drawing_points(drawing, width: int, height: int, spacing: float, jitter: float, copies: int,
                   seed: int = 0) -> np.ndarray:
    """The point cloud of a canvas drawing (see smeme.data.shapes.strokes_to_points)."""
    return strokes_to_points(canvas_strokes(drawing, width, height), spacing=spacing, jitter=jitter,
                             copies=copies, seed=seed)


def gallery_points(shape: str, n: int, rare_share: float, jitter: float, seed: int = 0):
    """A gallery shape's points and each point's part name (for the preview's colours)."""
    pts, part = shape_points(shape, n, rare_share=rare_share, noise=jitter, seed=seed)
    return pts, np.asarray(SHAPE_PARTS[shape])[part]


def points_csv(points: np.ndarray, columns=("x", "y")) -> bytes:
    """The points as CSV text with a header row (6 significant digits)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    lines = [",".join(columns)] + [",".join(f"{v:.6g}" for v in row) for row in pts]
    return ("\n".join(lines) + "\n").encode()


def train_on_points(points: np.ndarray, name: str | None = None, *, steps: int | None = None, seed: int = 0,
                    model_params: dict | None = None, owner: str | None = None) -> Path:
    """Pre-train a model on `points` (n, 2) as a CSV run, exactly as an uploaded CSV is
    trained; returns the run's folder (the job runs in the background).

    Raises DataError (too few points, a set no density exists over), UploadError (the
    uploads folder is full), ReadOnlyError (viewer mode) or JobBusy, each one sentence."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise DataError("The points to train on must be finite (x, y) pairs.")
    if len(pts) < MIN_POINTS:
        raise DataError(f"The drawing has {len(pts)} points; at least {MIN_POINTS} are needed "
                        "(draw more strokes or use a denser brush).")
    label = name or "drawn"
    path = settings.save_upload(f"{label}.csv", points_csv(pts))
    params = {"path": str(path)}
    problem = settings.check_dataset_once("csv", params)
    if problem is not None:
        raise DataError(problem)
    folder = runs.new_run_folder("drawn", name or None)
    launch.start_training(folder, "csv", params, steps=steps, seed=seed, model_params=model_params,
                          label="Training (drawn data)", owner=owner)
    return folder
