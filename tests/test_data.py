"""Data sets: toy closed forms, triangle generator and labels, CSV checks, configs."""
import json
import os

import numpy as np
import pytest

from smeme.data import DataError, domain_from_config, make_dataset
from smeme.data.csv import load_csv
from smeme.data.toy import ToyDomain, entropy_after, pretrained_entropy, sparse_share_after
from smeme.data.triangles import TriangleDomain, cell_counts, classify, largest_remainder, make_triangles


# -- toy ----------------------------------------------------------------------------------
def test_toy_counts_support_and_regions():
    data = make_dataset("toy", n=10_001, seed=3)
    region = data.domain.categories(data.raw)["region"]
    assert (region == "dense").sum() == round(10_001 * 0.9)
    assert data.domain.on_support(data.raw).all()
    off = np.array([[0.0, 0.0], [5.0, 0.0], [-1.0, 0.9], [np.nan, 0.0]])  # gap, far, above, NaN
    assert not data.domain.on_support(off).any()
    assert list(data.domain.categories(off)["region"]) == ["off"] * 4


def test_toy_params_adjustable():
    data = make_dataset("toy", n=1000, dense_mass=0.7, side=2.0, gap=1.0)
    x0, x1, _, _ = data.domain.boxes()["sparse"]
    assert (x0, x1) == (0.5, 2.5)
    assert (data.table["region"] == "sparse").sum() == 300
    with pytest.raises(DataError, match="dense_mass"):
        ToyDomain(dense_mass=1.0)


@pytest.mark.parametrize("lam, expected", [(0.1, [0.12, 0.14, 0.17, 0.19]), (0.3, [0.18, 0.25, 0.32, 0.37])])
def test_toy_sparse_share_closed_form(lam, expected):
    got = [sparse_share_after(lam, k) for k in range(1, 5)]
    assert np.allclose(got, expected, atol=0.005)
    assert ToyDomain().sparse_share_after(lam, 0) == pytest.approx(0.1)


@pytest.mark.parametrize("lam, k", [(0.0, 0), (0.1, 3), (0.3, 4)])
def test_toy_entropy_matches_monte_carlo(lam, k):
    dom = ToyDomain(side=1.5)
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(-2.0, 2.0, 400_000), rng.uniform(-1.0, 1.0, 400_000)])
    box_area = 8.0
    g = (1 - lam) ** k
    log_p = dom.log_density(x)  # tilted density p_k = p_pre^g / Z, Z = integral of p_pre^g
    p_g = np.exp(g * log_p)
    z = box_area * p_g.mean()
    p_k = p_g / z
    h_mc = -box_area * np.mean(np.where(p_k > 0, p_k * np.log(np.where(p_k > 0, p_k, 1.0)), 0.0))
    assert h_mc == pytest.approx(dom.entropy_after(lam, k), abs=0.01)
    assert pretrained_entropy() == pytest.approx(-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)))
    assert entropy_after(0.3, 4) > entropy_after(0.3, 1) > pretrained_entropy()


def test_toy_grid_and_overlay():
    dom = ToyDomain()
    xs, ys, raw, xl, yl = dom.plane_grid(20)
    assert raw.shape == (400, 2) and (xl, yl) == ("x", "y")
    assert np.allclose(raw.reshape(20, 20, 2)[3, :, 0], xs)
    assert len(dom.overlay()) == 2


# -- triangles: labels ----------------------------------------------------------------------
def test_classify_hand_made_triangles():
    raw = np.array([
        [0.5, 0.5, 0.5],        # equilateral
        [0.5, 0.5, 0.6],        # isosceles acute
        [0.6, 0.45, 0.75],      # 3-4-5 right, unsorted on purpose
        [0.3, 0.4, 0.6],        # obtuse, C = 117.3 deg
        [0.25, 0.25, 0.5],      # degenerate: a + b = c
        [0.7, 0.9, 1.2],        # valid (obtuse) but c >= 1
        [0.4, 0.495, 0.5],      # isosceles through c - b <= tol c
        [np.nan, 0.3, 0.4],     # not finite
        [-0.1, 0.3, 0.35],      # negative side
    ])
    t = classify(raw)
    assert list(t.side_type) == ["equilateral", "isosceles", "scalene", "scalene", "invalid",
                                 "scalene", "isosceles", "invalid", "invalid"]
    assert list(t.angle_type) == ["acute", "acute", "right", "obtuse", "invalid",
                                  "obtuse", "acute", "invalid", "invalid"]
    assert list(t.valid) == [True] * 4 + [False, True, True, False, False]
    assert list(t.on_support) == [True] * 4 + [False, False, True, False, False]
    assert list(t.loc[2, ["a", "b", "c"]]) == [0.45, 0.6, 0.75]
    assert t.angle_C[2] == pytest.approx(90.0) and t.area[2] == pytest.approx(0.5 * 0.45 * 0.6)
    assert t.angle_C[3] == pytest.approx(np.degrees(np.arccos(-0.11 / 0.24)))
    assert np.allclose(t.loc[0, ["angle_A", "angle_B", "angle_C"]], 60.0)
    assert np.allclose(t[["angle_A", "angle_B", "angle_C"]].sum(axis=1)[t.valid], 180.0)
    assert t.perimeter[0] == pytest.approx(1.5) and t.a_over_c[2] == pytest.approx(0.6)


def test_classify_tolerances_are_parameters():
    def triangle_with_c(deg):  # a = 0.6, b = 0.8, C given
        return [0.6, 0.8, np.sqrt(1.0 - 0.96 * np.cos(np.radians(deg)))]
    raw = np.array([triangle_with_c(90.6), triangle_with_c(91.4), [0.45, 0.455, 0.6]])
    assert list(classify(raw).angle_type) == ["right", "obtuse", "acute"]
    assert classify(raw, right_tol_deg=2.0).angle_type[1] == "right"
    assert classify(raw).side_type[2] == "isosceles"                 # b - a = 0.011 b
    assert classify(raw, tol=0.01).side_type[2] == "scalene"


# -- triangles: generator -------------------------------------------------------------------
def test_default_triangles_match_the_blog_shares():
    data = make_triangles(n=4000, seed=1)
    t = data.table
    assert t.valid.all() and t.on_support.all() and (t.c < 1).all()
    assert (np.diff(data.raw, axis=1) >= 0).all()
    sides = t.side_type.value_counts().to_dict()
    angles = t.angle_type.value_counts().to_dict()
    assert sides == {"scalene": 3960, "isosceles": 40}
    assert angles == {"acute": 3400, "obtuse": 600}


def test_requested_shares_are_exact_counts():
    side = {"equilateral": 0.1, "isosceles": 0.3, "scalene": 0.6}
    angle = {"acute": 0.45, "right": 0.2, "obtuse": 0.35}
    n = 2001
    t = make_triangles(n=n, seed=2, side_shares=side, angle_shares=angle).table
    assert t.side_type.value_counts().to_dict() == {k: v for k, v in largest_remainder(side, n).items() if v}
    assert t.angle_type.value_counts().to_dict() == largest_remainder(angle, n)
    joint = t.groupby(["side_type", "angle_type"]).size().to_dict()
    expected = {k: v for k, v in cell_counts(n, side, angle).items() if v}
    assert joint == expected
    assert joint[("isosceles", "right")] == pytest.approx(0.3 * n * 0.2 / 0.9, abs=1)  # proportional rule


def test_cell_shares_exact_and_features_of_every_cell():
    cells = {("isosceles", "obtuse"): 0.25, ("isosceles", "right"): 0.25,
             ("scalene", "right"): 0.25, "equilateral/acute": 0.25}
    t = make_triangles(n=400, seed=0, cell_shares=cells, max_side=0.5).table
    assert t.groupby(["side_type", "angle_type"]).size().to_dict() == {
        ("equilateral", "acute"): 100, ("isosceles", "obtuse"): 100,
        ("isosceles", "right"): 100, ("scalene", "right"): 100}
    assert (t.c < 0.5).all()


@pytest.mark.parametrize("kwargs", [
    {"side_shares": {"equilateral": 1.0}, "angle_shares": {"obtuse": 1.0}},
    {"side_shares": {"equilateral": 0.3, "scalene": 0.7}, "angle_shares": {"acute": 0.2, "right": 0.8}},
    {"cell_shares": {("equilateral", "obtuse"): 0.1, ("scalene", "acute"): 0.9}},
    {"cell_shares": {"equilateral/right": 0.5, "scalene/acute": 0.5}},
    {"side_shares": {"isosceles": 0.5, "scalene": 0.6}},
    {"angle_shares": {"acute": 0.5, "blunt": 0.5}},
])
def test_infeasible_or_bad_requests_are_refused(kwargs):
    with pytest.raises(DataError):
        make_triangles(n=100, **kwargs)


def test_triangle_features_round_trip_and_jacobian():
    dom = TriangleDomain()
    raw = make_triangles(n=50, seed=4).raw
    feat = dom.to_features(raw)
    assert np.allclose(feat[:, 2], raw.sum(axis=1))
    assert np.allclose(dom.from_features(feat), raw, atol=1e-12)
    h = 1e-6
    for x in raw[:10]:  # central differences of d feat / d raw
        jac = np.column_stack([(dom.to_features((x + h * e)[None]) - dom.to_features((x - h * e)[None]))[0] / (2 * h)
                               for e in np.eye(3)])
        assert np.log(abs(np.linalg.det(jac))) == pytest.approx(dom.log_abs_det(x[None])[0], abs=1e-5)


def test_triangle_domain_support_categories_grid_overlay():
    dom = TriangleDomain(tol=0.03, right_tol_deg=0.5)
    assert domain_from_config(json.loads(json.dumps(dom.to_config()))).to_config() == dom.to_config()
    raw = np.array([[0.75, 0.45, 0.6], [0.6, 0.8, 1.0]])
    assert list(dom.on_support(raw)) == [True, False]
    assert list(dom.categories(raw)["angle_type"]) == ["right", "right"]
    us, vs, grid, xl, yl = dom.plane_grid(11, c=0.5)
    assert grid.shape == (121, 3) and np.allclose(grid[:, 2], 0.5) and xl.startswith("u")
    assert np.allclose(grid.reshape(11, 11, 3)[4, :, 0], us * 0.5)
    names = [o["name"] for o in dom.overlay()]
    assert any("right" in s for s in names) and "equilateral" in names


# -- csv ------------------------------------------------------------------------------------
def _write(tmp_path, name, header, rows):
    path = tmp_path / name
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.fixture
def good_rows():
    return np.random.default_rng(0).normal(size=(150, 3)).round(6).tolist()


def test_valid_csv_loads_and_rebuilds(tmp_path, good_rows):
    path = _write(tmp_path, "ok.csv", ["x", "y", "z"], good_rows)
    data = make_dataset("csv", path=str(path))
    assert data.raw.shape == (150, 3) and data.domain.columns == ["x", "y", "z"]
    assert np.allclose(data.features(), data.raw)
    rebuilt = domain_from_config(json.loads(json.dumps(data.domain.to_config())))
    assert rebuilt.nn_threshold == data.domain.nn_threshold
    xs, ys, grid, xl, yl = rebuilt.plane_grid(5)
    assert grid.shape == (25, 3) and (xl, yl) == ("x", "y")
    assert np.allclose(grid[:, 2], np.median(data.raw[:, 2])) and rebuilt.overlay() == []


@pytest.mark.parametrize("edit, message", [
    (lambda h, r: (h, r[:16] + [[1.0, "abc", 2.0]] + r[17:]), "column 'y' row 17 holds text 'abc'"),
    (lambda h, r: (h, r[:4] + [[1.0, "NaN", 2.0]] + r[5:]), "column 'y' contains nan"),
    (lambda h, r: (h, r[:4] + [[1.0, 2.0, ""]] + r[5:]), "column 'z' row 5 is empty"),
    (lambda h, r: (h, r[:4] + [["inf", 2.0, 3.0]] + r[5:]), "column 'x' contains inf"),
    (lambda h, r: (h, r[:4] + [[1.0, "-inf", 3.0]] + r[5:]), "column 'y' contains inf"),
    (lambda h, r: (["x"], [[row[0]] for row in r]), "has 1 column; at least 2 are needed"),
    (lambda h, r: (h, r[:42]), "has 42 rows; at least 100 are needed"),
    (lambda h, r: ([f"c{i}" for i in range(65)], [row * 22 for row in r][:100]), "has 65 columns; at most 64"),
    (lambda h, r: (h, [[a, b, 7] for a, b, _ in r]), "column 'z' is constant"),
    (lambda h, r: (h, [[a, 2 * a - 1, c] for a, _, c in r]), "columns 'x' and 'y' are perfectly collinear"),
    (lambda h, r: (h, [[a, b, a + 3 * b] for a, b, _ in r]), "columns 'x', 'y' and 'z' are perfectly collinear"),
    (lambda h, r: (h, r[:4] + [[1.0, 2.0, 3.0, 4.0]] + r[5:]), "line 6"),
    (lambda h, r: (["1", "2", "3"], r), "needs a header line"),
])
def test_csv_refusals(tmp_path, good_rows, edit, message):
    header, rows = edit(["x", "y", "z"], good_rows)
    with pytest.raises(DataError) as err:
        load_csv(_write(tmp_path, "bad.csv", header, rows))
    assert message in str(err.value).lower()


def test_csv_file_level_refusals(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("x,y\n".encode() + "é,1\n".encode("latin-1"))
    for path, message in [(empty, "is empty"), (latin, "not utf-8"), (tmp_path / "missing.csv", "cannot be read"),
                          (tmp_path, "is a folder, not a regular file")]:
        with pytest.raises(DataError, match="(?i)" + message):
            load_csv(path)


def test_csv_on_support_holds_99_percent(tmp_path):
    rng = np.random.default_rng(1)

    def draw(n):  # a curved 2-D cloud
        x = rng.normal(size=(n, 2))
        return np.column_stack([x[:, 0], x[:, 1] * 0.3 + x[:, 0] ** 2])

    path = _write(tmp_path, "cloud.csv", ["p", "q"], draw(8000).tolist())
    data = load_csv(path)
    dom = data.domain
    assert len(dom.reference_points) == 5000
    assert dom.on_support(data.raw).mean() >= 0.99
    fresh = dom.on_support(draw(20_000)).mean()
    assert fresh == pytest.approx(0.99, abs=0.006)
    assert not dom.on_support(np.array([[10.0, -10.0], [np.nan, 0.0]])).any()


def test_make_dataset_dispatch_errors():
    with pytest.raises(DataError, match="Unknown data set"):
        make_dataset("cifar")
    with pytest.raises(DataError, match="path"):
        make_dataset("csv")
    with pytest.raises(DataError, match="Unknown data set"):
        domain_from_config({"name": "nope"})
    assert domain_from_config(ToyDomain(0.8).to_config()).dense_mass == 0.8


# -- reading a data file: what it is and how large, checked before a byte is read ------------
def test_a_csv_that_is_not_a_regular_file_is_refused_before_it_is_read(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # reading it would block forever: it must not even be opened for a blocking read
    cases = [(fifo, "is a FIFO (named pipe), not a regular file"), (tmp_path, "is a folder, not a regular file")]
    if os.path.exists("/dev/zero"):
        cases.append(("/dev/zero", "is a device, not a regular file"))  # endless: a memory blow-up if read
    for path, words in cases:
        with pytest.raises(DataError) as err:
            load_csv(path)
        assert str(err.value) == f"The CSV file '{path}' {words}; it is not read."


def test_a_csv_larger_than_the_cap_is_refused_naming_the_cap(tmp_path, good_rows, monkeypatch):
    import smeme.data.csv as csv_module

    path = _write(tmp_path, "big.csv", ["x", "y", "z"], good_rows)
    monkeypatch.setattr(csv_module, "MAX_FILE_BYTES", 1024)
    with pytest.raises(DataError, match=r"^The CSV file '.*big.csv' is [\d.]+ KiB, more than the 1 KiB that may be read\.$"):
        load_csv(path)
    assert csv_module.MAX_FILE_BYTES < path.stat().st_size


@pytest.mark.parametrize("header", [b"a,b\rc\n", b"x\r,y\n", b"\xff\xfe,b\n", b'"a,b\n'])
def test_a_header_that_the_csv_reader_refuses_is_a_data_error_naming_the_file(tmp_path, header):
    path = tmp_path / "odd.csv"
    path.write_bytes(header + b"\n".join(b"%d,%d" % (i, i * i % 7) for i in range(150)) + b"\n")
    with pytest.raises(DataError) as err:
        load_csv(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and message.endswith("."), message


def test_random_bytes_are_a_data_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(20):
        path = tmp_path / f"random{i}.csv"
        path.write_bytes(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
        with pytest.raises(DataError) as err:
            load_csv(path)
        assert str(path) in str(err.value) or "Column" in str(err.value), str(err.value)


def test_rows_in_memory_make_the_same_data_set_as_their_file_and_name_no_file(tmp_path, good_rows):
    from smeme.data.csv import dataset_from_rows

    path = _write(tmp_path, "ok.csv", ["x", "y", "z"], good_rows)
    from_file = load_csv(path, n=120, seed=3)
    from_rows = dataset_from_rows(np.array(good_rows), ["x", "y", "z"], n=120, seed=3)
    assert np.array_equal(from_file.raw, from_rows.raw)
    assert from_file.domain.to_config() == from_rows.domain.to_config()
    assert str(tmp_path) not in json.dumps([from_file.domain.to_config(), from_file.info])
    with pytest.raises(DataError, match="row 5 holds nan"):
        dataset_from_rows(np.where(np.arange(150)[:, None] == 4, np.nan, np.array(good_rows)), ["x", "y", "z"])
    with pytest.raises(DataError, match="3 columns but 2 column names"):
        dataset_from_rows(np.array(good_rows), ["x", "y"])
