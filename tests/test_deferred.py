"""Deferred metrics (smeme.deferred): a round commits with the metrics that define it and is
visible at once; its PF-ODE cross-entropy and surprise are computed after it, on request,
equal to what the old path (computed before the commit) gives for the same model and noise,
cached in a file of the round's own that a crash never leaves half-written; bundles carry
those files, checked strictly, or none."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from smeme import deferred
from smeme.bundle import BundleError, export_run, import_bundle
from smeme.density import log_prob_raw
from smeme.metrics import DENSITY_METRICS, POINT_DENSITY, round_metrics, round_samples
from smeme.store import Run

ROOT = str(Path(__file__).resolve().parent.parent)
ROUND = dict(iterations=2, trajectories=64, steps=20, metrics_n=512, max_validity_drop=1.0)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny triangles run with one round, explored with the defaults (deferred metrics); tests
    change only their own copy (conftest's `run_copy`)."""
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("deferred") / "tri"
    pretrain_run(folder, "triangles", preset="tiny", steps=100, n=1024)
    run_rounds(Run.open(folder), 1, ExploreConfig(**ROUND))
    return folder


def direct_density(run, k: int, n: int, seed: int, steps: int) -> dict:
    """The PF-ODE metrics as the old path defines them, written out here: -mean log p over the
    round's samples (fixed noise) under the round's model and under round 0's."""
    model = run.load_model(k)
    raw = round_samples(run, model, n, seed, steps)
    raw = raw[np.all(np.isfinite(raw), axis=1)]
    out = {}
    for name, m in (("cross_entropy_pfode", model), ("surprise_pre", run.load_model(0))):
        logp = log_prob_raw(m, run.domain, run.standardizer, raw)
        out[name] = float(-logp[np.isfinite(logp)].mean())
    return out


def test_a_round_is_visible_with_its_defining_metrics_and_without_the_deferred(base_run):
    run = Run.open(base_run)
    assert run.rounds() == [0, 1]
    for k in (0, 1):
        record = run.metrics()[k]
        assert {"on_support", "entropy_knn", "shares", "validity", "n", "seed", "steps"} <= set(record)
        assert not set(DENSITY_METRICS) & set(record)
        assert not set(DENSITY_METRICS) & set(run.all_metrics()[k])
    assert run.metrics()[1]["n"] == ROUND["metrics_n"]
    assert deferred.pending(run) == [0, 1]
    assert not list(Path(base_run).glob("*.deferred.json"))  # nothing computed until asked


def test_the_deferred_metrics_equal_the_old_path_and_are_cached(run_copy, monkeypatch):
    run = Run.open(run_copy)
    values = deferred.measure(run)
    assert set(values) == {0, 1} and deferred.pending(run) == []
    for k in (0, 1):
        record = run.metrics()[k]
        n, seed, steps = record["n"], record["seed"], record["steps"]
        old = round_metrics(run, run.load_model(k), k, n=n, seed=seed, steps=steps, logp=True)
        assert values[k] == {name: old[name] for name in DENSITY_METRICS}  # same model, same noise, same numbers
        truth = direct_density(run, k, n, seed, steps)
        assert values[k] == pytest.approx(truth, rel=1e-9, abs=1e-9)
        assert run.all_metrics()[k] == {**record, **values[k]}
    assert values[0]["surprise_pre"] == values[0]["cross_entropy_pfode"]  # round 0 is its own pre-trained model
    assert values[1]["surprise_pre"] != values[1]["cross_entropy_pfode"]

    stamps = {p.name: p.stat().st_mtime_ns for p in run.folder.glob("*.deferred.json")}
    assert sorted(stamps) == ["round_0.deferred.json", "round_1.deferred.json"]

    def never(*a, **k):
        raise AssertionError("recomputed a cached value")

    monkeypatch.setattr(deferred, "_compute_and_write", never)
    assert deferred.measure(run) == values  # read back, not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in run.folder.glob("*.deferred.json")} == stamps


def test_values_measured_before_the_commit_are_the_ones_computed_after(base_run, tmp_path):
    """explore with metrics_logp=True (the old path) puts them in the round's record; the
    deferred computation of the same round gives the same numbers (and finds nothing to do)."""
    from smeme.explore import ExploreConfig, run_rounds

    folder = tmp_path / "now"
    shutil.copytree(base_run, folder)
    run = Run.open(folder)
    run_rounds(run, 1, ExploreConfig(**ROUND, metrics_logp=True))
    record = run.metrics()[2]
    settings = POINT_DENSITY.settings(record)
    assert settings == {"n": ROUND["metrics_n"], "seed": record["seed"], "steps": record["steps"]}
    assert POINT_DENSITY.compute(run, 2, settings, None) == {name: record[name] for name in DENSITY_METRICS}
    assert deferred.pending(run) == [0, 1]  # round 2 holds its own
    assert deferred.measure(run, [2]) == {2: {name: record[name] for name in DENSITY_METRICS}}
    assert not (folder / "round_2.deferred.json").exists()


KILL_MID_WRITE = """
import os, signal, sys
from smeme import deferred, fsio
from smeme.store import Run
real_fsync = os.fsync
def crash(fd):  # the bytes are written, the rename has not happened: the process dies here
    os.kill(os.getpid(), signal.SIGKILL)
fsio.os.fsync = crash
deferred.measure(Run.open(sys.argv[1]), [1])
"""


def test_a_crash_mid_write_leaves_no_partial_file(run_copy):
    run = Run.open(run_copy)
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(run.folder)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT, "SMEME_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run.folder / "round_1.deferred.json").exists()
    assert list(run.folder.glob(".round_1.deferred.json.*.tmp"))  # the half-written temp file, never read
    assert deferred.pending(run) == [0, 1] and "cross_entropy_pfode" not in run.all_metrics()[1]

    # a torn file (what a writer without the rename would leave) is never shown, and is computed again
    good = deferred.measure(run, [1])[1]
    path = run.folder / "round_1.deferred.json"
    path.write_bytes(path.read_bytes()[:40])
    assert deferred.pending(run) == [0, 1] and "cross_entropy_pfode" not in run.all_metrics()[1]
    assert deferred.measure(run, [1])[1] == good
    assert json.loads(path.read_text())["metrics"] == good


@pytest.mark.parametrize("edit", ["weights", "settings", "round", "extra", "value"])
def test_a_stale_or_foreign_file_is_not_shown(run_copy, edit):
    run = Run.open(run_copy)
    deferred.measure(run, [1])
    path = run.folder / "round_1.deferred.json"
    record = json.loads(path.read_text())
    if edit == "weights":
        record["weights_sha256"] = "0" * 64
    elif edit == "settings":
        record["settings"]["n"] += 1
    elif edit == "round":
        record["round"] = 0
    elif edit == "extra":
        record["note"] = "hi"
    else:
        record["metrics"]["surprise_pre"] = "1.0"
    path.write_text(json.dumps(record))
    assert deferred.pending(run) == [0, 1]
    assert "surprise_pre" not in run.all_metrics()[1]


# -- bundles ----------------------------------------------------------------------------------
def test_a_bundle_carries_the_deferred_metrics_or_none(run_copy, tmp_path):
    run = Run.open(run_copy)
    without = export_run(run.folder, tmp_path / "without.zip")
    deferred.measure(run, [1])
    (run.folder / "round_0.deferred.json").write_text("{}")  # damaged: left out, computed again
    with_them = export_run(run.folder, tmp_path / "with.zip")
    names = zipfile.ZipFile(with_them).namelist()
    assert "round_1.deferred.json" in names and "round_0.deferred.json" not in names
    assert not [n for n in zipfile.ZipFile(without).namelist() if n.endswith(".deferred.json")]

    plain = Run.open(import_bundle(without, tmp_path / "runs", name="plain"))
    assert deferred.pending(plain) == [0, 1]
    full = Run.open(import_bundle(with_them, tmp_path / "runs", name="full"))
    assert deferred.pending(full) == [0]
    assert full.all_metrics()[1] == run.all_metrics()[1]
    assert (full.folder / "round_1.deferred.json").read_bytes() == (run.folder / "round_1.deferred.json").read_bytes()


def rezip(src, dst, edits: dict):
    """A copy of the zip `src` with members replaced, added (name -> bytes) or dropped (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename not in edits:
                zout.writestr(info, zin.read(info))
        for name, data in edits.items():
            if data is not None:
                zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("case, words", [
    ("uncommitted round", "round that is not saved"),
    ("leading zero", "round that is not saved"),
    ("other weights", "other weights"),
    ("unknown field", "unknown field 'extra'"),
    ("not a number", "not a finite number"),
    ("other names", "exactly the deferred metrics"),
    ("other settings", "other settings"),
    ("not json", "round_1.deferred.json"),
])
def test_import_refuses_a_deferred_file_smeme_would_not_write(run_copy, tmp_path, case, words):
    run = Run.open(run_copy)
    deferred.measure(run, [1])
    good = export_run(run.folder, tmp_path / "good.zip")
    record = json.loads((run.folder / "round_1.deferred.json").read_text())
    edits = {}
    if case == "uncommitted round":
        edits["round_7.deferred.json"] = json.dumps({**record, "round": 7})
    elif case == "leading zero":
        edits = {"round_1.deferred.json": None, "round_01.deferred.json": json.dumps(record)}
    elif case == "other weights":
        edits["round_1.deferred.json"] = json.dumps({**record, "weights_sha256": "f" * 64})
    elif case == "unknown field":
        edits["round_1.deferred.json"] = json.dumps({**record, "extra": 1})
    elif case == "not a number":
        edits["round_1.deferred.json"] = json.dumps({**record, "metrics": {**record["metrics"], "surprise_pre": [1]}})
    elif case == "other names":
        edits["round_1.deferred.json"] = json.dumps({**record, "metrics": {"cross_entropy_pfode": 1.0}})
    elif case == "other settings":
        edits["round_1.deferred.json"] = json.dumps({**record, "settings": {**record["settings"], "seed": 9}})
    else:
        edits["round_1.deferred.json"] = b"{not json"
    bad = rezip(good, tmp_path / "bad.zip", edits)
    runs = tmp_path / "runs"
    with pytest.raises(BundleError) as err:
        import_bundle(bad, runs)
    text = str(err.value)
    assert text.startswith("The bundle bad.zip is refused: ") and words in text and "\n" not in text, text
    assert not runs.exists()  # nothing written


# -- the command line -----------------------------------------------------------------------
def smeme(*args):
    env = {**os.environ, "SMEME_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "smeme", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def lines(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_cli_metrics_computes_them_once_then_reads_them(base_run, tmp_path):
    folder = tmp_path / "tri"
    shutil.copytree(base_run, folder)
    first = lines(smeme("metrics", "--run", folder, "--rounds", "1", "--quiet"))
    assert [(r["round"], r["computed"]) for r in first] == [(1, True)]
    run = Run.open(folder)
    record = run.metrics()[1]
    truth = direct_density(run, 1, record["n"], record["seed"], record["steps"])
    assert {name: first[0][name] for name in DENSITY_METRICS} == pytest.approx(truth, rel=1e-6)
    written = (folder / "round_1.deferred.json").read_bytes()
    again = lines(smeme("metrics", "--run", folder))
    assert [(r["round"], r["computed"]) for r in again] == [(0, True), (1, False)]
    assert again[1] == {**first[0], "computed": False}
    assert (folder / "round_1.deferred.json").read_bytes() == written  # read back, not rewritten
    report = json.loads(smeme("report", "--run", folder).stdout)
    assert report["rounds"]["1"]["surprise_pre"] == first[0]["surprise_pre"]


@pytest.mark.parametrize("option, logp", [([], False), (["--density-metrics", "later"], False),
                                          (["--density-metrics", "now"], True)])
def test_cli_explore_computes_them_before_the_commit_only_when_asked(base_run, monkeypatch, option, logp):
    from smeme.cli import main

    seen = []
    monkeypatch.setattr("smeme.explore.run_rounds", lambda run, rounds, config, **kw: seen.append(config))
    assert main(["explore", "--run", str(base_run), "--rounds", "1", "--quiet", *option]) == 0
    assert [c.metrics_logp for c in seen] == [logp]


@pytest.mark.parametrize("args, words", [
    (["--rounds", "1,x"], "comma-separated round numbers"),
    (["--rounds", ","], "names no round"),
    (["--rounds", "9"], "has no round 9"),
])
def test_cli_metrics_refuses_bad_rounds_in_one_line(base_run, args, words, capsys):
    from smeme.cli import main

    before = sorted(p.name for p in Path(base_run).iterdir())
    assert main(["metrics", "--run", str(base_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert sorted(p.name for p in Path(base_run).iterdir()) == before


def test_cli_help_names_the_defaults(capsys):
    from smeme.cli import main

    for command, words in (("explore", "'later' (default)"), ("metrics", "default: every saved round")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert words in " ".join(capsys.readouterr().out.split())


def test_a_kind_that_defers_nothing_takes_no_deferred_file(tmp_path):
    """A Stable Diffusion run defers no metrics: `smeme metrics` has nothing to do for it, and a
    bundle of one that holds a deferred-metrics file is refused."""
    from test_bundle import make_sd_run

    from smeme.cli import main
    from smeme.store import open_run

    src, _ = make_sd_run(tmp_path / "made" / "sd")
    run = open_run(src)
    assert run.deferred_metrics is None and deferred.pending(run) == [] and deferred.measure(run) == {}
    assert main(["metrics", "--run", str(src), "--quiet"]) == 0
    assert not list(src.glob("*.deferred.json"))
    good = export_run(src, tmp_path / "sd.zip")
    record = {"schema_version": 1, "round": 1, "weights_sha256": deferred.weights_sha256(src / "round_1.safetensors"),
              "settings": {}, "metrics": {"fid": 1.0}, "seconds": 1.0}
    bad = rezip(good, tmp_path / "bad.zip", {"round_1.deferred.json": json.dumps(record)})
    with pytest.raises(BundleError, match="this kind of run defers no metrics"):
        import_bundle(bad, tmp_path / "runs")
    (src / "round_1.deferred.json").write_text(json.dumps(record))
    assert "round_1.deferred.json" not in zipfile.ZipFile(export_run(src, tmp_path / "again.zip")).namelist()
