"""Hand-made 2-D data: the gallery's shapes, the imbalance slider, strokes and canvas drawings
turned into points (smeme.data.shapes, smeme.services.draw)."""
from __future__ import annotations

import numpy as np
import pytest

from smeme.data import DataError
from smeme.data.shapes import SHAPE_PARTS, SHAPES, part_counts, points_along, shape_points, strokes_to_points
from smeme.services import draw


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_has_the_requested_number_of_points_and_parts(shape):
    pts, part = shape_points(shape, 1234, seed=3)
    assert pts.shape == (1234, 2) and np.all(np.isfinite(pts))
    counts = np.bincount(part, minlength=len(SHAPE_PARTS[shape]))
    assert counts.sum() == 1234 and counts.max() - counts.min() <= 1  # balanced by default
    assert np.all(np.abs(pts) < 2.5)  # inside the drawing's frame


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("share", [0.02, 0.1, 0.3])
def test_the_imbalance_slider_gives_the_rare_part_the_requested_share(shape, share):
    parts = len(SHAPE_PARTS[shape])
    if share > 1 / parts:
        share = 1 / parts / 2
    _, part = shape_points(shape, 2000, rare_share=share)
    counts = np.bincount(part, minlength=parts)
    assert counts[0] == round(share * 2000)
    others = counts[1:]
    assert others.max() - others.min() <= 1 and others.sum() == 2000 - counts[0]


def test_part_counts_are_exact_and_refuse_impossible_splits():
    assert part_counts(10, 3, 0.2) == [2, 4, 4]
    assert part_counts(11, 3, 0.2) == [2, 5, 4]
    assert part_counts(100, 1) == [100]
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        part_counts(100, 2, 1.5)
    with pytest.raises(DataError, match="cannot be split"):
        part_counts(2, 3)


def test_the_parts_sit_where_the_shape_says():
    pts, part = shape_points("rings", 2000, noise=0.0)
    radius = np.linalg.norm(pts, axis=1)
    assert np.allclose(radius[part == 0], 0.6) and np.allclose(radius[part == 1], 1.6)
    pts, part = shape_points("checkerboard", 2000, noise=0.0)
    cell = np.floor(pts + 2.0).astype(int)  # 4 x 4 board of unit cells
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)  # only the black cells
    assert len({tuple(c) for c in cell}) == 8


def test_bad_shape_settings_are_one_sentence():
    with pytest.raises(DataError, match="Unknown shape 'heart'"):
        shape_points("heart")
    with pytest.raises(DataError, match="between 100 and 20,000 points"):
        shape_points("rings", 50)
    with pytest.raises(DataError, match="jitter width"):
        shape_points("rings", 500, noise=float("nan"))


def test_points_along_a_stroke_are_evenly_spaced_and_cover_it():
    stroke = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    pts = points_along(stroke, 0.1)
    assert len(pts) == 21
    assert np.allclose(pts[0], [0, 0]) and np.allclose(pts[-1], [1, 1]) and np.allclose(pts[10], [1, 0])
    step = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    assert np.allclose(step, 0.1)


def test_strokes_become_jittered_copies_and_are_capped():
    dot = [np.array([[0.5, -0.5]])]
    pts = strokes_to_points(dot, spacing=0.05, jitter=0.1, copies=2000 // 100, seed=1)
    assert pts.shape == (20, 2)
    many = strokes_to_points(dot * 100, spacing=0.05, jitter=0.1, copies=50, seed=1)
    assert abs(many.mean(axis=0) - [0.5, -0.5]).max() < 0.02
    assert abs(many.std(axis=0) - 0.1).max() < 0.01
    assert np.allclose(strokes_to_points(dot, jitter=0.0, copies=3), [[0.5, -0.5]] * 3)
    with pytest.raises(DataError, match="at most 20,000"):
        strokes_to_points([np.array([[-2.0, 0.0], [2.0, 0.0]])], spacing=0.001, copies=10)


def test_a_canvas_drawing_is_read_in_data_units_and_junk_is_ignored():
    w, h = 600, 300  # height spans [-2, 2]: 75 pixels a unit, centre (300, 150)
    drawing = {"objects": [
        {"type": "path", "left": 297, "top": 72, "strokeWidth": 6,  # the box of the path, stroke included
         "path": [["M", 300, 150], ["Q", 300, 150, 375, 150], ["L", 375, 75]]},
        {"type": "circle", "left": 146, "top": 221, "radius": 4, "originX": "left", "originY": "top"},
        {"type": "rect", "left": 0, "top": 0},
        "junk", {"type": "path", "path": [["M", "x", None]]},
    ]}
    strokes = draw.canvas_strokes(drawing, w, h)
    assert len(strokes) == 2
    assert np.allclose(strokes[0], [[0, 0], [0, 0], [1, 0], [1, 1]])
    assert np.allclose(strokes[1], [[(150 - 300) / 75, (150 - 225) / 75]])
    # a path dragged 75 px to the right after drawing moves by one unit
    moved = {"objects": [dict(drawing["objects"][0], left=297 + 75)]}
    assert np.allclose(draw.canvas_strokes(moved, w, h)[0], [[1, 0], [1, 0], [2, 0], [2, 1]])
    assert draw.canvas_strokes(None, w, h) == [] and draw.canvas_strokes({"objects": "x"}, w, h) == []


def test_points_csv_round_trips_through_the_csv_reader(tmp_path):
    from smeme.data.csv import read_numeric_csv
    pts, _ = shape_points("spiral", 300)
    path = tmp_path / "drawn.csv"
    path.write_bytes(draw.points_csv(pts))
    frame = read_numeric_csv(path)
    assert list(frame.columns) == ["x", "y"]
    assert np.allclose(frame.to_numpy(), pts, rtol=1e-5, atol=1e-6)
