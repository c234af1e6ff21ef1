"""Any numeric CSV with a header: 2 to 64 columns, 100 to 1,000,000 rows.

Raw = features = the file's columns. Files on which no density exists are refused with a
`DataError` naming the problem: text, empty, NaN or inf cells, cells too large to
standardise (|value| > 1e150), too few or too many rows or columns, a constant column,
perfectly collinear columns. Only a regular file of at most MAX_FILE_BYTES is read (a FIFO,
a device or a folder is refused before a byte is read). `dataset_from_rows` makes the same
data set from rows already in memory; a run keeps the rows it trained on (smeme.store), so
nothing of it names or reads the file again.

On-support measure ("on the data manifold"): a point is on the support when its nearest
reference data point, in per-column standardised units, is no farther than the data's
own 99th-percentile nearest-neighbour distance. The reference is a random subsample of
at most 5,000 rows (fewer for wide files, at most 100,000 numbers), saved in the domain's
config, so a run rebuilds the measure without the CSV. The threshold is measured against
that same reference (leave-one-out for rows inside it), so about 99% of the data and of
fresh draws from the data's distribution count as on the support.
"""
from __future__ import annotations

import csv as _csv
import io
import os
import re

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from ..safe_io import read_capped_bytes
from . import DataError
from .base import Dataset, Domain

MIN_ROWS, MAX_ROWS = 100, 1_000_000
MIN_COLS, MAX_COLS = 2, 64
MAX_REFERENCE_ROWS, MAX_REFERENCE_CELLS = 5_000, 100_000
MAX_THRESHOLD_ROWS = 20_000  # rows whose NN distance sets the threshold
MAX_RANK_ROWS = 100_000      # rows used to test collinearity
COLLINEAR_RTOL = 1e-6        # smallest / largest singular value of the standardised data
NN_QUANTILE = 0.99
MAX_ABS = 1e150              # larger magnitudes overflow the squares that standardising sums
NAN_WORDS = {"nan", "-nan", "+nan", "na", "n/a", "null", "none", "#n/a"}
MAX_FILE_BYTES = 256 << 20   # 1,000,000 rows of a dozen numbers; uploads in the app are smaller


class CsvDomain(Domain):
    name = "csv"

    def __init__(self, columns, nn_threshold, reference_points, center, scale,
                 low=None, high=None, median=None):
        self.columns = list(columns)
        self.nn_threshold = float(nn_threshold)
        self.reference_points = np.asarray(reference_points, dtype=np.float64)
        self.center = np.asarray(center, dtype=np.float64)  # distances use (x - center) / scale
        self.scale = np.asarray(scale, dtype=np.float64)
        ref = self.reference_points
        self.low = ref.min(axis=0) if low is None else np.asarray(low, dtype=np.float64)
        self.high = ref.max(axis=0) if high is None else np.asarray(high, dtype=np.float64)
        self.median = np.median(ref, axis=0) if median is None else np.asarray(median, dtype=np.float64)
        self._nn = NearestNeighbors(n_neighbors=1).fit(self._unit(ref))

    def _unit(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, dtype=np.float64) - self.center) / self.scale

    def nearest_distance(self, raw: np.ndarray) -> np.ndarray:
        """Distance to the nearest reference point, in standardised units; inf if not finite."""
        raw = np.asarray(raw, dtype=np.float64)
        out = np.full(len(raw), np.inf)
        finite = np.all(np.isfinite(raw), axis=1)
        if finite.any():
            out[finite] = self._nn.kneighbors(self._unit(raw[finite]))[0][:, 0]
        return out

    def on_support(self, raw: np.ndarray) -> np.ndarray:
        return self.nearest_distance(raw) <= self.nn_threshold

    def explore_defaults(self) -> dict:
        # 30 iterations of 1,024 trajectories: later rounds of a CSV model need more Adam steps
        # than the toy's 15 to reach their tilt (BENCHMARKS.md, solver fidelity).
        return {"iterations": 30, "trajectories": 1024}

    def plane_grid(self, resolution: int = 64):
        """Grid over the first two columns' data range; the other columns at their medians.

        Returns (xs, ys, raw_points, x_label, y_label), x varying fastest.
        """
        xs = np.linspace(self.low[0], self.high[0], resolution)
        ys = np.linspace(self.low[1], self.high[1], resolution)
        gx, gy = np.meshgrid(xs, ys)
        raw = np.tile(self.median, (gx.size, 1))
        raw[:, 0], raw[:, 1] = gx.ravel(), gy.ravel()
        return xs, ys, raw, self.columns[0], self.columns[1]

    def overlay(self) -> list[dict]:
        return []

    def to_config(self) -> dict:
        return {
            "name": self.name, "columns": self.columns, "nn_threshold": self.nn_threshold,
            "reference_points": self.reference_points.tolist(),
            "center": self.center.tolist(), "scale": self.scale.tolist(),
            "low": self.low.tolist(), "high": self.high.tolist(), "median": self.median.tolist(),
        }

    @classmethod
    def from_config(cls, cfg: dict) -> "CsvDomain":
        """Rebuild from to_config(); runs made before runs kept their rows also hold a 'path',
        which is ignored (never read)."""
        keys = ("columns", "nn_threshold", "reference_points", "center", "scale", "low", "high", "median")
        return cls(**{k: cfg.get(k) for k in keys})

    @classmethod
    def fit(cls, data: np.ndarray, columns, seed: int = 0) -> "CsvDomain":
        """Choose the reference subsample and measure the 99th-percentile NN distance."""
        n, d = data.shape
        rng = np.random.default_rng(seed)
        m = min(n, MAX_REFERENCE_ROWS, max(MIN_ROWS, MAX_REFERENCE_CELLS // d))
        ref_idx = np.sort(rng.choice(n, m, replace=False))
        center, scale = data.mean(axis=0), data.std(axis=0)
        unit = (data - center) / scale
        nn = NearestNeighbors(n_neighbors=2).fit(unit[ref_idx])
        eval_idx = np.sort(rng.choice(n, min(n, MAX_THRESHOLD_ROWS), replace=False))
        dist = nn.kneighbors(unit[eval_idx])[0]
        in_ref = np.isin(eval_idx, ref_idx)
        nn_dist = np.where(in_ref, dist[:, 1], dist[:, 0])  # leave-one-out for reference rows
        threshold = float(np.quantile(nn_dist, NN_QUANTILE))
        return cls(columns, threshold, data[ref_idx], center, scale,
                   low=data.min(axis=0), high=data.max(axis=0), median=np.median(data, axis=0))


# -- reading and checking ----------------------------------------------------------------------
def _read_text(path) -> str:
    path = os.fspath(path)
    blob = read_capped_bytes(path, MAX_FILE_BYTES, DataError, f"The CSV file '{path}'")
    if not blob.strip():
        raise DataError(f"The CSV file '{path}' is empty.")
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"The CSV file '{path}' is not UTF-8 text (byte 0x{blob[e.start]:02x} at position {e.start}).") from None


def _check_header(text: str, path: str) -> list[str]:
    try:
        header = next(_csv.reader(io.StringIO(text)), [])
    except _csv.Error as e:  # e.g. a bare carriage return or a NUL byte in the header line
        raise DataError(f"The header line of the CSV file '{path}' cannot be read as CSV ({e}).") from None
    names = [h.strip() for h in header]
    if len(names) < MIN_COLS:
        raise DataError(f"The CSV file '{path}' has {len(names)} column; at least {MIN_COLS} are needed.")
    if len(names) > MAX_COLS:
        raise DataError(f"The CSV file '{path}' has {len(names)} columns; at most {MAX_COLS} are supported.")
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"The CSV file '{path}' has no name for column {i + 1} in its header line.")
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"The CSV file '{path}' names column '{name}' twice in its header line.")
        seen.add(name)
    if all(_is_number(name) for name in names):
        raise DataError(f"The first line of '{path}' holds numbers, not column names; the file needs a header line.")
    return names


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _first_bad_cell(text: str, names: list[str], col: str) -> str:
    """Explain why column `col` is not all finite numbers (rows count from 1 after the header)."""
    cells = pd.read_csv(io.StringIO(text), usecols=[col], dtype=str, keep_default_na=False,
                        skipinitialspace=True, nrows=MAX_ROWS + 1)[col]
    for row, cell in enumerate(cells, start=1):
        s = cell.strip()
        if s == "":
            return f"Column '{col}' row {row} is empty."
        if s.lower() in NAN_WORDS:
            return f"Column '{col}' contains NaN (row {row})."
        try:
            value = float(s)
        except ValueError:
            return f"Column '{col}' row {row} holds text '{s[:40]}'."
        if np.isnan(value):
            return f"Column '{col}' contains NaN (row {row})."
        if np.isinf(value):
            return f"Column '{col}' contains inf (row {row})."
    return f"Column '{col}' is not numeric."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    return text[:200] or type(exc).__name__


def _bad_column(text: str, names: list[str], col: str, path: str) -> str:
    """_first_bad_cell's sentence, or a plain one when the column cannot be re-read alone."""
    try:
        return _first_bad_cell(text, names, col)
    except (pd.errors.ParserError, _csv.Error, ValueError, OverflowError):
        return f"Column '{col}' of '{path}' is not all numbers."


def read_numeric_csv(path) -> pd.DataFrame:
    """The file as a float64 DataFrame, or a DataError naming what is wrong with it."""
    text = _read_text(path)
    names = _check_header(text, os.fspath(path))
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True, index_col=False, nrows=MAX_ROWS + 1)
    except (pd.errors.ParserError, _csv.Error, ValueError, OverflowError) as e:
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if ragged:
            want, line, got = ragged.groups()
            raise DataError(f"Line {line} of '{os.fspath(path)}' has {got} fields but the header has {want}.") from None
        raise DataError(f"Cannot parse '{os.fspath(path)}' as CSV: {_one_line(e)}.") from None
    if len(frame.columns) != len(names):
        raise DataError(f"Cannot parse '{os.fspath(path)}' as CSV: its header line reads as {len(names)} "
                        f"columns but its table as {len(frame.columns)}.")
    frame.columns = names
    if len(frame) < MIN_ROWS:
        raise DataError(f"The CSV file '{os.fspath(path)}' has {len(frame)} rows; at least {MIN_ROWS} are needed.")
    if len(frame) > MAX_ROWS:
        raise DataError(f"The CSV file '{os.fspath(path)}' has more than {MAX_ROWS:,} rows; at most {MAX_ROWS:,} are supported.")
    for col in names:
        values = frame[col]
        numeric = values.dtype.kind in "iuf"
        if not numeric or not np.all(np.isfinite(values.to_numpy(dtype=np.float64) if numeric else [])):
            raise DataError(_bad_column(text, names, col, os.fspath(path)))
        huge = np.flatnonzero(np.abs(values.to_numpy(dtype=np.float64)) > MAX_ABS)
        if huge.size:
            row = int(huge[0])
            raise DataError(f"Column '{col}' row {row + 1} holds {values.iloc[row]:g}, too large to standardise "
                            f"(values must be at most {MAX_ABS:g} in magnitude).")
    return frame.astype(np.float64)


def check_density_exists(data: np.ndarray, columns: list[str]) -> None:
    """Refuse constant columns and perfectly collinear columns (rank-deficient data)."""
    std = data.std(axis=0)
    for j, name in enumerate(columns):
        if not std[j] > 0 or np.ptp(data[:, j]) == 0:
            raise DataError(f"Column '{name}' is constant; no density exists over it.")
    rows = data
    if len(data) > MAX_RANK_ROWS:  # exact collinearity holds on every subsample too
        rows = data[np.random.default_rng(0).choice(len(data), MAX_RANK_ROWS, replace=False)]
    spread = rows.std(axis=0)
    unit = (rows - rows.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    _, s, vt = np.linalg.svd(unit, full_matrices=False)  # rank of the centred, scaled matrix
    if s[-1] <= COLLINEAR_RTOL * s[0]:
        null = np.abs(vt[-1])
        involved = [columns[j] for j in np.flatnonzero(null > 0.05 * null.max())]
        if len(involved) == 2:
            raise DataError(f"Columns '{involved[0]}' and '{involved[1]}' are perfectly collinear; no density exists over them.")
        listed = ", ".join(f"'{c}'" for c in involved[:-1]) + f" and '{involved[-1]}'"
        raise DataError(f"Columns {listed} are perfectly collinear (one is a linear combination of the others); no density exists over them.")


def load_csv(path, n: int | None = None, seed: int = 0) -> Dataset:
    """Load and check a numeric CSV; with n, keep a random subsample of n rows."""
    frame = read_numeric_csv(path)
    return dataset_from_rows(frame.to_numpy(dtype=np.float64), list(frame.columns), n=n, seed=seed)


def _check_rows(rows, columns) -> tuple[np.ndarray, list[str]]:
    """Rows given in memory (not read from a file) as a checked float64 array and names."""
    try:
        data = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataError("The rows must be a table of numbers.") from None
    columns = [str(c).strip() for c in columns]
    if data.ndim != 2:
        raise DataError(f"The rows must form a table (rows x columns), got an array of shape {data.shape}.")
    if len(columns) != data.shape[1]:
        raise DataError(f"The rows have {data.shape[1]} columns but {len(columns)} column names are given.")
    if not MIN_COLS <= len(columns) <= MAX_COLS:
        raise DataError(f"The data has {len(columns)} columns; {MIN_COLS} to {MAX_COLS} are supported.")
    if not all(columns) or len(set(columns)) != len(columns):
        raise DataError("Each column needs its own, non-empty name.")
    if not MIN_ROWS <= len(data) <= MAX_ROWS:
        raise DataError(f"The data has {len(data):,} rows; {MIN_ROWS} to {MAX_ROWS:,} are supported.")
    bad = np.argwhere(~np.isfinite(data) | (np.abs(np.nan_to_num(data)) > MAX_ABS))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise DataError(f"Column '{columns[col]}' row {row + 1} holds {data[row, col]:g}; values must be finite "
                        f"and at most {MAX_ABS:g} in magnitude.")
    return data, columns


def dataset_from_rows(rows, columns, n: int | None = None, seed: int = 0) -> Dataset:
    """The csv data set of rows already in memory (n x columns numbers, e.g. a file's or
    drawn by hand), checked as a file's would be; with n, a random subsample of n rows.
    Nothing names a file: a run trained on it keeps these rows (smeme.store)."""
    data, columns = _check_rows(rows, columns)
    check_density_exists(data, columns)
    if n is not None and n < len(data):
        if n < MIN_ROWS:
            raise DataError(f"A subsample of {n} rows is too small; at least {MIN_ROWS} are needed.")
        keep = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
        data = data[keep]
    domain = CsvDomain.fit(data, columns, seed=seed)
    info = {"name": "csv", "params": {"n": n, "seed": seed}, "rows": len(data)}
    return Dataset(domain=domain, raw=data, table=pd.DataFrame(data, columns=columns), info=info)
