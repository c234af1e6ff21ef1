"""Property-based tests (hypothesis) of the readers of user-controlled bytes (issue 21): CSV
files, a run's config.json, run folders and bundles. Whatever the input, the result is a
loaded object or one of the project's errors with a one-line message; no other exception
escapes; nothing is written outside the target; a refused import leaves nothing behind.

Sizes: the "ci" profile of tests/conftest.py (default), or SMEME_FUZZ=long for a longer run.
"""
import io
import json
import math
import os
import shutil
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smeme import cli  # noqa: E402
from smeme.bundle import BundleError, export_run, import_bundle  # noqa: E402
from smeme.data import DataError  # noqa: E402
from smeme.data.csv import load_csv  # noqa: E402
from smeme.services import runs as run_service  # noqa: E402
from smeme.store import Run, StoreError  # noqa: E402

PROJECT_ERRORS = (StoreError, DataError)  # BundleError and RunLockedError are StoreErrors
PRETRAIN = ["pretrain", "--dataset", "toy", "--preset", "tiny", "--n", "1000", "--steps", "30", "--quiet"]


def examples(share: float) -> int:
    """`share` of the active profile's max_examples (the cheap properties run more cases)."""
    return max(10, int(settings.default.max_examples * share))


def note(label: str) -> None:
    """Count `label` in hypothesis' statistics (--hypothesis-show-statistics) inside a property."""
    if currently_in_test_context():
        event(label)


def assert_project_error(exc: BaseException):
    assert isinstance(exc, PROJECT_ERRORS), f"{type(exc).__name__} escaped: {exc!r}"
    text = str(exc)
    assert text.strip() and "\n" not in text and "\r" not in text, repr(text)


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """{relative path: bytes or '<dir>' / '<link>'} of everything under root but `skip`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if skip is not None and (p == skip or skip in p.parents):
                continue
            rel = p.relative_to(root).as_posix()
            out[rel] = "<link>" if p.is_symlink() else "<dir>" if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained toy run (and its bundle) shared by every property of this module."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "toy"
    assert cli.main([*PRETRAIN, "--run", str(folder)]) == 0
    bundle = root / "toy.zip"
    export_run(folder, bundle)
    files = {name: (folder / name).read_bytes() for name in ("config.json", "metrics.json", "round_0.safetensors")}
    return Trained(folder=folder, bundle=bundle, files=files, config=json.loads(files["config.json"]),
                   scratch=root / "scratch")


class Trained(dict):
    def __repr__(self):  # hypothesis prints the fixture in a failing case: keep it short
        return f"<trained run in {self['folder']}>"


class Workspace:
    """A fresh folder per example: `target` is what the code may write; `outside` holds a
    sentinel file that must never change."""

    def __init__(self, scratch: Path):
        scratch.mkdir(exist_ok=True)
        self.root = Path(tempfile.mkdtemp(dir=scratch))
        self.outside = self.root / "outside"
        self.outside.mkdir()
        (self.outside / "sentinel.txt").write_text("do not touch\n")
        self.before = snapshot(self.outside)

    def check_outside(self, *targets: str):
        """The sentinel is unchanged and nothing but `targets` was made beside it."""
        assert snapshot(self.outside) == self.before
        assert set(os.listdir(self.root)) <= {"outside", *targets}, os.listdir(self.root)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.root, ignore_errors=True)


# -- CSV --------------------------------------------------------------------------------------
def _load_or_refuse(path):
    try:
        return load_csv(path)
    except Exception as exc:  # noqa: BLE001 - the property: only DataError may come out
        assert_project_error(exc)
        assert isinstance(exc, DataError)
        note("refused")
        return None


@settings(max_examples=examples(1.0))
@given(blob=st.binary(max_size=3000), header=st.sampled_from([b"", b"x,y\n", b"a,b,c\r\n", b"\xef\xbb\xbfx,y\n"]))
def test_csv_random_bytes_load_or_are_refused(trained, blob, header):
    with Workspace(trained["scratch"]) as ws:
        path = ws.root / "data.csv"
        path.write_bytes(header + blob)
        data = _load_or_refuse(path)
        if data is not None:
            assert np.isfinite(data.raw).all() and data.raw.shape[1] >= 2
        ws.check_outside("data.csv")


BAD_CELLS = ["nan", "NaN", "inf", "-inf", "", " ", "abc", "1e309", "1e151", '"1,2"', '"', "\r", "1,5", "0x10",
             "1_000", "\x00", "é", "--1", "1e-400", "TRUE", "null"]
name_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def csv_tables(draw):
    """A numeric table, then its file: random shape, column names, damage, line ends, encoding."""
    rows = draw(st.integers(0, 260))
    cols = draw(st.sampled_from([1, 2, 2, 3, 5, 8, 65]))
    seed = draw(st.integers(0, 2 ** 16))
    kind = draw(st.sampled_from(["normal", "normal", "ints", "constant", "collinear", "huge", "tiny"]))
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, cols))
    if kind == "ints":
        values = rng.integers(-5, 5, size=(rows, cols)).astype(float)
    elif kind == "constant" and cols:
        values[:, draw(st.integers(0, cols - 1))] = 3.0
    elif kind == "collinear" and cols >= 2:
        values[:, 1] = 2.0 * values[:, 0] - 1.0
    elif kind == "huge":
        values *= 1e140
    elif kind == "tiny":
        values *= 1e-300
    names = draw(st.one_of(st.just([f"c{j}" for j in range(cols)]), st.lists(name_text, min_size=cols, max_size=cols)))
    cells = [[repr(float(v)) for v in row] for row in values]
    damage = draw(st.lists(st.tuples(st.integers(0, max(rows - 1, 0)), st.integers(0, cols - 1),
                                     st.sampled_from(BAD_CELLS)), max_size=3))
    for r, c, token in damage:
        if rows:
            cells[r][c] = token
    end = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    sep = draw(st.sampled_from([",", ",", ", ", ";"]))
    text = end.join([sep.join(names)] + [sep.join(row) for row in cells]) + draw(st.sampled_from(["", end, end * 3]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    blob = text.encode(encoding, errors="replace")
    valid = (not damage and kind in ("normal", "huge") and sep in (",", ", ") and end in ("\n", "\r\n")
             and encoding in ("utf-8", "utf-8-sig") and 2 <= cols <= 64 and rows >= 100
             and names == [f"c{j}" for j in range(cols)])
    return blob, values, valid


@settings(max_examples=examples(0.5))
@given(table=csv_tables())
def test_csv_tables_load_exactly_or_are_refused(trained, table):
    blob, values, valid = table
    with Workspace(trained["scratch"]) as ws:
        path = ws.root / "table.csv"
        path.write_bytes(blob)
        data = _load_or_refuse(path)
        if valid:  # a well-formed table loads, every value as written (repr round-trips floats)
            assert data is not None and np.array_equal(data.raw, values)
        elif data is not None:
            assert np.isfinite(data.raw).all() and data.raw.shape[0] >= 100
        ws.check_outside("table.csv")


# -- config.json -----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
EXTREMES = [None, True, 0, -1, 1, 2, 3, 10 ** 6, 10 ** 30, -(10 ** 30), 1e308, -1e308, 1e-320, 0.5,
            float("nan"), float("inf"), "", "x", "mlp", "toy", "csv", "digits", "sd", [], {}, [1, 2], {"a": 1},
            "/etc/passwd", "../../outside/sentinel.txt"]


def _paths(obj, prefix=()):
    """Every key path of a nested dict/list (the config's schema)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_configs(draw, config):
    """A real run's config with 1-4 changes: a key removed, a value replaced by an extreme or
    random JSON value, an unknown key added."""
    cfg = json.loads(json.dumps(config))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(cfg)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = cfg
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["delete", "extreme", "extreme", "random", "add"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        else:
            parent[path[-1]] = draw(st.sampled_from(EXTREMES) if op == "extreme" else json_values)
    return cfg


def _open_and_use(folder: Path):
    """What the app and CLI do with a run folder: the checked open, the listing's row, the
    domain, and the latest round's model (its weights finite). Returns the run or None."""
    try:
        run = run_service.open_run(folder)
        run.domain
        model = run.load_model(run.rounds()[-1])
        for k in run.rounds():  # CheckedRun's promise: every listed round loads
            Run.load_model(run, k)
    except Exception as exc:  # noqa: BLE001 - the property: only the project's errors may come out
        assert_project_error(exc)
        note("refused")
        return None
    note("opened")
    assert all(bool(p.isfinite().all()) for p in model.parameters())
    return run


def _write_run(ws: Workspace, files: dict) -> Path:
    folder = ws.root / "runs" / "r"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_config_mutations_open_or_are_refused(trained, data, monkeypatch):
    cfg = data.draw(mutated_configs(trained["config"]))
    with Workspace(trained["scratch"]) as ws:
        folder = _write_run(ws, {**trained["files"], "config.json": json.dumps(cfg).encode()})
        monkeypatch.setenv("SMEME_CACHE_DIR", str(ws.root))
        _open_and_use(folder)
        rows = run_service.list_runs()  # never raises; the run is one row, loaded or damaged
        assert [r["name"] for r in rows] == ["r"]
        assert (rows[0]["latest"] is None) == bool(rows[0]["damaged"])
        ws.check_outside("runs")


@settings(max_examples=examples(0.4))
@given(value=json_values, raw=st.binary(max_size=64))
def test_random_config_json_opens_or_is_refused(trained, value, raw):
    with Workspace(trained["scratch"]) as ws:
        for text in (json.dumps(value).encode(), raw):
            folder = _write_run(ws, {**trained["files"], "config.json": text})
            assert _open_and_use(folder) is None  # no random value is a whole config
            shutil.rmtree(folder.parent)
        ws.check_outside()


def test_a_deeply_nested_config_is_refused(trained):
    with Workspace(trained["scratch"]) as ws:
        folder = _write_run(ws, {**trained["files"], "config.json": b"[" * 100_000 + b"]" * 100_000})
        assert _open_and_use(folder) is None


# -- run folders ----------------------------------------------------------------------------------
def _safetensors_header(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def _nan_weights(original: bytes, index: int, value: float) -> bytes:
    from safetensors.torch import load, save

    state = load(original)
    name = sorted(state)[index % len(state)]
    tensor = state[name].clone()
    tensor.view(-1)[0] = value
    state[name] = tensor
    return save(state)


DIR = "<dir>"  # a folder in a file's place


@st.composite
def damages(draw, files):
    """1-3 changes to a run's files: truncation, deletion, garbage, a lying safetensors header,
    NaN weights, a stray or extra round file, a folder or a link in a file's place. Returns
    {name: bytes, DIR or ('link', target)}."""
    out = dict(files)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(files) + ["round_1.safetensors", "round_7.safetensors"]))
        op = draw(st.sampled_from(["truncate", "delete", "garbage", "header", "nan", "copy", "folder", "link"]))
        data = out.get(name) if isinstance(out.get(name), bytes) else files["round_0.safetensors"]
        if op == "truncate":
            out[name] = data[:draw(st.integers(0, max(len(data) - 1, 0)))]
        elif op == "delete":
            out.pop(name, None)
        elif op == "garbage":
            out[name] = draw(st.binary(max_size=200))
        elif op == "header":
            header = draw(st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
            out[name] = _safetensors_header(header, draw(st.binary(max_size=64)))
            if draw(st.booleans()):  # a length field that lies
                out[name] = struct.pack("<Q", draw(st.integers(0, 2 ** 64 - 1))) + out[name][8:]
        elif op == "nan":
            out[name] = _nan_weights(files["round_0.safetensors"], draw(st.integers(0, 50)),
                                     draw(st.sampled_from([math.nan, math.inf, -math.inf])))
        elif op == "copy":
            out[name] = data
            metrics = out.get("metrics.json")
            if name.startswith("round_") and isinstance(metrics, bytes) and draw(st.booleans()):
                try:  # and name the round in metrics.json
                    record = json.loads(metrics)
                    record["rounds"][name[6:-12]] = {}
                    out["metrics.json"] = json.dumps(record).encode()
                except (ValueError, KeyError, TypeError):
                    pass
        elif op == "folder":
            out[name] = DIR
        else:
            out[name] = ("link", draw(st.sampled_from(["../../outside/sentinel.txt", "nowhere", name])))
    return out


@settings(max_examples=examples(0.6))
@given(data=st.data())
def test_damaged_run_folders_open_or_are_refused(trained, data, monkeypatch):
    entries = data.draw(damages(trained["files"]))
    with Workspace(trained["scratch"]) as ws:
        folder = _write_run(ws, {k: v for k, v in entries.items() if isinstance(v, bytes)})
        for name, value in entries.items():
            if value == DIR:
                (folder / name).mkdir()
            elif isinstance(value, tuple):
                os.symlink(value[1], folder / name)
        monkeypatch.setenv("SMEME_CACHE_DIR", str(ws.root))
        before = snapshot(folder)
        _open_and_use(folder)
        rows = run_service.list_runs()  # never raises; a folder with a config.json is one row
        assert [r["name"] for r in rows] == (["r"] if (folder / "config.json").exists() else [])
        assert snapshot(folder) == before  # opening and listing change nothing in the run
        ws.check_outside("runs")


# -- bundles ------------------------------------------------------------------------------------
MEMBER_NAMES = ["config.json", "metrics.json", "round_0.safetensors", "round_1.safetensors", "round_7.safetensors",
                "round_0.deferred.json", "round_01.deferred.json",
                "cache/data_n2000.npy", "cache/", "../evil.json", "/etc/evil", "cache/../../evil", "a\\b",
                "C:/evil", "round_0.safetensors/", "", ".", "cache/x.pkl", "émoji-✓.json", "x" * 300,
                "../outside/sentinel.txt"]


@st.composite
def bundles(draw, files, config):
    """A zip built member by member: the run's own files (some damaged or with a mutated
    config), strange names, duplicates, links, large zero-filled members, lying sizes."""
    members = []
    if draw(st.booleans()):
        files = {**files, "config.json": json.dumps(draw(mutated_configs(config))).encode()}
    for name in sorted(files):
        if draw(st.integers(0, 9)):  # usually kept
            members.append((name, files[name], "file"))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.one_of(st.sampled_from(MEMBER_NAMES), st.text(max_size=20)))
        kind = draw(st.sampled_from(["file", "file", "link", "dir", "zeros"]))
        data = b"\0" * draw(st.integers(0, 3 << 20)) if kind == "zeros" else draw(st.binary(max_size=100))
        members.append((name, data, "file" if kind == "zeros" else kind))
    order = draw(st.permutations(range(len(members))))
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are meant
        for i in order:
            name, data, kind = members[i]
            info = zipfile.ZipInfo(name or "unnamed")
            info.compress_type = zipfile.ZIP_DEFLATED
            if kind == "link":
                info.external_attr = (0o120777 << 16)
                data = draw(st.sampled_from([b"../outside/sentinel.txt", b"/etc/passwd", b"config.json"]))
            elif kind == "dir":
                info.external_attr = (0o040755 << 16) | 0x10
            try:
                zf.writestr(info, data)
            except (ValueError, UnicodeEncodeError):
                continue
    blob = bytearray(buf.getvalue())
    if draw(st.integers(0, 7)) == 0 and len(blob) > 30:  # flip bytes: CRCs, declared sizes, headers
        for _ in range(draw(st.integers(1, 4))):
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    return bytes(blob)


@settings(max_examples=examples(0.6))
@given(data=st.data())
def test_bundle_import_imports_a_run_or_leaves_nothing(trained, data):
    blob = data.draw(bundles(trained["files"], trained["config"]))
    with Workspace(trained["scratch"]) as ws:
        bundle = ws.root / "b.zip"
        bundle.write_bytes(blob)
        runs = ws.root / "runs"
        try:
            dest = import_bundle(bundle, runs, name="imported")
        except Exception as exc:  # noqa: BLE001 - the property: only BundleError may come out
            assert_project_error(exc)
            assert isinstance(exc, BundleError)
            note(f"refused: {str(exc).split(': ', 1)[-1][:30]}")
            assert not runs.exists()  # a refused import leaves nothing, not even a temp folder
        else:
            assert dest == runs / "imported" and [p.name for p in runs.iterdir()] == ["imported"]
            assert not any(p.is_symlink() for p in dest.rglob("*"))
            assert _open_and_use(dest) is not None  # an imported run opens and each round loads
        assert bundle.read_bytes() == blob
        ws.check_outside("b.zip", "runs")


def test_the_real_bundle_imports(trained, tmp_path):
    """The unmutated bundle is accepted, so the bundle property above is not vacuous."""
    dest = import_bundle(trained["bundle"], tmp_path / "runs", name="copy")
    assert _open_and_use(dest) is not None
