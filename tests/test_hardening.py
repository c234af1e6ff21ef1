"""Hardening (issue 13, part A): a full disk at each write point of `pretrain` and
`explore`, the CLI's limits and its one-sentence refusals. Commands run in-process
through smeme.cli.main, so each check costs what the command costs, not a Python start.
"""
import errno
import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from smeme import cli, cli_commands
from smeme.store import Run, StoreError

PRETRAIN = ["pretrain", "--dataset", "toy", "--preset", "tiny", "--n", 1000, "--steps", 30, "--quiet"]
EXPLORE = ["explore", "--rounds", 1, "--iterations", 2, "--lam", 0.1, "--quiet"]


def run_cli(capsys, *args):
    code = cli.main([os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def refusal(capsys, code, *args) -> str:
    """Run a command that must fail with exit `code` and one sentence; return the sentence."""
    got, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("smeme: error: "), err
    return lines[0][len("smeme: error: "):]


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening") / "toy"
    assert cli.main([*map(str, PRETRAIN), "--run", str(folder)]) == 0
    return folder


@pytest.fixture
def disk_full(monkeypatch):
    """disk_full(name, skip=0): the (skip+1)-th and later writes of file `name` through the
    store's atomic writer fail with ENOSPC at fsync, as on a full disk."""
    real_fsync = os.fsync

    def arm(name, skip=0):
        seen = [0]

        def fsync(fd):
            temp = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if temp.startswith(f".{name}."):  # the atomic writer's temp file for `name`
                seen[0] += 1
                if seen[0] > skip:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    yield arm
    monkeypatch.setattr(os, "fsync", real_fsync)


def assert_disk_full_message(message, path):
    assert message == (f"Cannot save {path}: no space left on device; free some space and try again "
                       "(everything saved before is kept).")


# -- a full disk during pre-training ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["config.json", "round_0.safetensors", "metrics.json"])
def test_pretrain_on_a_full_disk_leaves_no_folder_and_a_retry_works(capsys, tmp_path, disk_full, monkeypatch, name):
    folder = tmp_path / "new"
    disk_full(name)
    message = refusal(capsys, 1, *PRETRAIN, "--run", folder)
    assert_disk_full_message(message, folder / name)
    assert not folder.exists()  # this command created it, so it is gone
    monkeypatch.undo()
    code, out, err = run_cli(capsys, *PRETRAIN, "--run", folder)
    assert code == 0, err
    assert Run.open(folder).rounds() == [0]


@pytest.mark.slow
def test_pretrain_force_on_a_full_disk_keeps_the_old_run(capsys, run_copy, disk_full):
    before = snapshot(run_copy)
    disk_full("round_0.safetensors")
    message = refusal(capsys, 1, *PRETRAIN, "--force", "--run", run_copy)
    assert_disk_full_message(message, run_copy / "round_0.safetensors")
    assert snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]  # no half-written new run beside it


@pytest.mark.slow
def test_pretrain_into_an_existing_empty_folder_leaves_it_reusable(capsys, tmp_path, disk_full, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    disk_full("metrics.json")
    assert_disk_full_message(refusal(capsys, 1, *PRETRAIN, "--run", folder), folder / "metrics.json")
    assert folder.is_dir() and {p.name for p in folder.iterdir()} <= {".lock"}
    monkeypatch.undo()
    assert run_cli(capsys, *PRETRAIN, "--run", folder)[0] == 0


@pytest.mark.slow
def test_a_left_over_unfinished_pretraining_does_not_block_a_retry(capsys, base_run, tmp_path):
    # what the old code left on a full disk: config.json (and perhaps round 0), no metrics.json
    folder = tmp_path / "leftover"
    folder.mkdir()
    shutil.copy(base_run / "config.json", folder / "config.json")
    shutil.copy(base_run / "round_0.safetensors", folder / "round_0.safetensors")
    assert "never finished" in refusal(capsys, 2, "report", "--run", folder)
    code, _, err = run_cli(capsys, *PRETRAIN, "--run", folder)
    assert code == 0, err
    assert Run.open(folder).metrics()[0]["train"]["steps"] == 30


def test_a_foreign_config_json_is_not_reused(capsys, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["UNet2DModel"]}')
    message = refusal(capsys, 2, *PRETRAIN, "--run", folder)
    assert message == f"{folder} is not empty and is not an smeme run; choose an empty or new folder."
    assert (folder / "config.json").read_text() == '{"architectures": ["UNet2DModel"]}'


@pytest.mark.slow
@pytest.mark.parametrize("name, skip", [("train_loss.npy", 0), ("metrics.json", 1)])
def test_pretrain_writes_after_the_commit_only_warn(capsys, tmp_path, disk_full, name, skip):
    # after metrics.json first names round 0 the round is saved; a later write failing loses nothing
    folder = tmp_path / "run"
    disk_full(name, skip)
    code, out, err = run_cli(capsys, *PRETRAIN, "--run", folder)
    assert code == 0, err
    assert out.startswith(f"round 0 saved in {folder}")
    assert err.startswith("warning: ") and "no space left on device" in err
    run = Run.open(folder)
    assert run.rounds() == [0] and run.metrics()[0]["train"]["steps"] == 30


# -- a full disk during explore -----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["round_1.safetensors", "metrics.json"])
def test_explore_on_a_full_disk_commits_nothing_and_keeps_everything(capsys, run_copy, disk_full, name):
    before = snapshot(run_copy)
    disk_full(name)
    assert_disk_full_message(refusal(capsys, 1, *EXPLORE, "--run", run_copy), run_copy / name)
    assert snapshot(run_copy) == before  # no orphan weights, no temp file, metrics untouched
    code, out, _ = run_cli(capsys, "report", "--run", run_copy)
    assert code == 0 and list(json.loads(out)["rounds"]) == ["0"]


@pytest.mark.slow
def test_explore_full_disk_in_round_two_keeps_round_one_with_its_metrics(capsys, run_copy, disk_full, monkeypatch):
    disk_full("round_2.safetensors")
    message = refusal(capsys, 1, *EXPLORE[:1], "--rounds", 2, *EXPLORE[3:], "--run", run_copy)
    assert_disk_full_message(message, run_copy / "round_2.safetensors")
    monkeypatch.undo()
    code, out, _ = run_cli(capsys, "report", "--run", run_copy)
    rounds = json.loads(out)["rounds"]
    assert list(rounds) == ["0", "1"] and rounds["1"]["lam"] == 0.1 and "on_support" in rounds["1"]
    assert not (run_copy / "round_2.safetensors").exists()


@pytest.mark.slow
def test_an_orphan_weights_file_is_invisible_and_overwritten(capsys, run_copy):
    # a save that died between the weights and metrics.json (the old code's full-disk state)
    orphan = run_copy / "round_1.safetensors"
    shutil.copy(run_copy / "round_0.safetensors", orphan)
    assert Run.open(run_copy).rounds() == [0]
    code, out, _ = run_cli(capsys, "report", "--run", run_copy)
    assert list(json.loads(out)["rounds"]) == ["0"]  # never a round shown with {}
    assert "no round 1" in refusal(capsys, 2, "sample", "--run", run_copy, "--round", 1, "--n", 4,
                                   "--out", run_copy.parent / "s.csv")
    code, out, err = run_cli(capsys, *EXPLORE, "--run", run_copy)
    assert code == 0, err
    assert out.startswith("round 1: ")
    run = Run.open(run_copy)
    assert run.rounds() == [0, 1] and run.metrics()[1]["iterations"] == 2
    assert orphan.read_bytes() != (run_copy / "round_0.safetensors").read_bytes()


def test_save_round_removes_its_weights_when_the_commit_fails(run_copy, disk_full):
    run = Run.open(run_copy)
    model = run.load_model(0)
    disk_full("metrics.json")
    with pytest.raises(StoreError, match="no space left on device"):
        run.save_round(1, model, {"lam": 0.1})
    assert not run.round_path(1).exists() and run.rounds() == [0]


# -- the lock is taken before training ----------------------------------------------------
def test_pretrain_force_on_a_busy_run_is_refused_before_training(capsys, run_copy, monkeypatch):
    import smeme.train

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the run is busy")

    monkeypatch.setattr(smeme.train, "pretrain", no_training)
    before = snapshot(run_copy)
    fd = os.open(run_copy / ".lock", os.O_RDWR)
    try:  # another open file description: conflicts like another process's lock
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = refusal(capsys, 1, *PRETRAIN, "--force", "--run", run_copy)
    finally:
        os.close(fd)
    assert message.startswith(f"The run in {run_copy} is busy: another smeme process")
    assert snapshot(run_copy) == before


# -- a hand-edited standardiser --------------------------------------------------------------
@pytest.mark.parametrize("std, shown", [("0.0", "0.0"), ("-2.0", "-2.0"), ("NaN", "nan")])
def test_a_standardiser_without_spread_is_refused_at_load(capsys, run_copy, std, shown):
    path = run_copy / "config.json"
    cfg = json.loads(path.read_text())
    cfg["standardizer"]["std"][1] = "STD"
    path.write_text(json.dumps(cfg).replace('"STD"', std))
    message = refusal(capsys, 2, "sample", "--run", run_copy, "--n", 4, "--out", run_copy.parent / "s.csv")
    assert message == (f"config.json in {run_copy} is inconsistent: the standardizer's std must be positive "
                       f"and finite, but entry 1 is {shown}.")
    assert not (run_copy.parent / "s.csv").exists()


# -- limits on numbers that size work -----------------------------------------------------------
@pytest.mark.parametrize("args, option, limit, given", [
    (["sample", "--run", "r", "--out", "o.csv", "--n", "1e9"], "--n", "100,000", "1,000,000,000"),
    (["sample", "--run", "r", "--out", "o.csv", "--n", 4, "--steps", 5000], "--steps", "1,000", "5,000"),
    (["pretrain", "--dataset", "toy", "--run", "r", "--steps", "1e12"], "--steps", "1,000,000", "1,000,000,000,000"),
    (["pretrain", "--dataset", "toy", "--run", "r", "--n", 2_000_000], "--n", "1,000,000", "2,000,000"),
    (["tilt", "--run", "r", "--rounds", 1, "--resolution", "1e6"], "--resolution", "1,000", "1,000,000"),
    (["tilt", "--run", "r", "--rounds", 1000], "--rounds", "100", "1,000"),
    (["explore", "--run", "r", "--rounds", 101], "--rounds", "100", "101"),
    (["explore", "--run", "r", "--rounds", 1, "--iterations", 10 ** 6], "--iterations", "10,000", "1,000,000"),
    (["grid", "--run", "r", "--rounds", "0", "--out", "g.png", "--n", 65], "--n", "64", "65"),
    (["sample", "--run", "r", "--out", "o.csv", "--n", 4, "--seed", 2 ** 40], "--seed", "4,294,967,295",
     "1,099,511,627,776"),
    (["report", "--run", "r", "--threads", 10_000], "--threads", "256", "10,000"),
])
def test_limits_are_named_in_the_refusal(capsys, tmp_path, monkeypatch, args, option, limit, given):
    monkeypatch.chdir(tmp_path)
    message = refusal(capsys, 2, *args)
    command = args[0]
    assert message == (f"Argument {option}: expected a number of at most {limit} (the CLI's limit), got {given} "
                       f"(see 'python -m smeme {command} --help').")
    assert list(tmp_path.iterdir()) == []


def test_a_fractional_count_is_not_a_whole_number(capsys):
    message = refusal(capsys, 2, "sample", "--run", "r", "--out", "o.csv", "--n", "2.5")
    assert message.startswith("Argument --n: expected a whole number, got '2.5'")


def test_sample_noise_is_capped_by_samples_times_steps_times_features(capsys, run_copy, monkeypatch):
    monkeypatch.setattr(cli_commands, "MAX_NOISE_NUMBERS", 1000)
    out = run_copy.parent / "s.csv"
    message = refusal(capsys, 2, "sample", "--run", run_copy, "--n", 100, "--steps", 10, "--out", out)
    assert message == ("100 samples x 10 steps x 2 features need 2,000 noise numbers, more than the limit "
                       "of 1,000; ask for fewer samples or steps.")
    assert not out.exists()


# -- unclear messages made clear ----------------------------------------------------------------
def test_a_csv_cell_too_large_to_standardise_names_column_and_row(capsys, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 3))
    lines = ["a,b,c"] + [",".join(f"{v:.6f}" for v in row) for row in data]
    lines[5] = "0.5,1e308,0.25"  # data row 5
    path = tmp_path / "huge.csv"
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = refusal(capsys, 2, "pretrain", "--dataset", "csv", "--csv", path, "--run", tmp_path / "r")
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert message == "Column 'b' row 5 holds 1e+308, too large to standardise (values must be at most 1e+150 in magnitude)."
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("header", [b"a,b\rc\n", b"\x93\xfe\x00,\x81\n"])
def test_a_csv_header_the_csv_reader_refuses_is_one_sentence_naming_the_file_in_the_cli(capsys, tmp_path, header):
    path = tmp_path / "odd.csv"
    path.write_bytes(header + b"\n".join(b"%d,%d" % (i, i * i % 7) for i in range(150)) + b"\n")
    message = refusal(capsys, 2, "pretrain", "--dataset", "csv", "--csv", path, "--run", tmp_path / "r", "--quiet")
    assert f"'{path}'" in message and message.endswith("."), message
    assert not (tmp_path / "r").exists()


def test_an_unknown_data_param_lists_the_accepted_ones(capsys, tmp_path):
    message = refusal(capsys, 2, "pretrain", "--dataset", "toy", "--data-param", "foo=1", "--run", tmp_path / "r")
    assert message == "The toy data set has no parameter 'foo'; it accepts: dense_mass, side, gap."
    message = refusal(capsys, 2, "pretrain", "--dataset", "triangles", "--data-param", "n=5", "--run", tmp_path / "r")
    assert message == "--data-param n=... is set with its own option, --n."
    message = refusal(capsys, 2, "pretrain", "--dataset", "triangles", "--data-param", "sides=1", "--run", tmp_path / "r")
    assert message.startswith("The triangles data set has no parameter 'sides'; it accepts: side_shares, ")
    assert not (tmp_path / "r").exists()


def test_sample_out_a_folder_says_so(capsys, base_run, tmp_path):
    message = refusal(capsys, 2, "sample", "--run", base_run, "--n", 4, "--out", tmp_path)
    assert message == f"Cannot write '{tmp_path}': it is a folder; give a file name, e.g. '{tmp_path / 'out.csv'}'."
    assert list(tmp_path.iterdir()) == []


def test_logp_points_a_folder_says_so(capsys, base_run, tmp_path):
    message = refusal(capsys, 2, "logp", "--run", base_run, "--points", tmp_path, "--out", tmp_path / "o.csv")
    assert message == f"The points file '{tmp_path}' is a folder, not a CSV file."
    assert not (tmp_path / "o.csv").exists()


def test_logp_points_that_are_not_a_regular_file_are_refused_before_reading(capsys, base_run, tmp_path):
    fifo = tmp_path / "points.csv"
    os.mkfifo(fifo)  # a blocking read would hang the command
    message = refusal(capsys, 2, "logp", "--run", base_run, "--points", fifo, "--out", tmp_path / "o.csv")
    assert message == f"The points file '{fifo}' is a FIFO (named pipe), not a regular file; it is not read."
    if os.path.exists("/dev/zero"):
        message = refusal(capsys, 2, "logp", "--run", base_run, "--points", "/dev/zero", "--out", tmp_path / "o.csv")
        assert message == "The points file '/dev/zero' is a device, not a regular file; it is not read."
    assert not (tmp_path / "o.csv").exists()


def test_grid_on_a_toy_run_says_grid_is_for_image_runs(capsys, base_run, tmp_path):
    message = refusal(capsys, 2, "grid", "--run", base_run, "--rounds", "0", "--out", tmp_path / "g.png")
    assert message == (f"grid draws image runs (digits or Stable Diffusion), but {base_run} is a toy run; "
                       "use 'smeme sample' for its points.")
    assert not (tmp_path / "g.png").exists()


def test_sample_on_a_full_disk_names_the_output_and_keeps_the_old_one(capsys, base_run, tmp_path, disk_full):
    out = tmp_path / "s.csv"
    out.write_text("keep\n")
    disk_full("s.csv")
    assert_disk_full_message(refusal(capsys, 1, "sample", "--run", base_run, "--n", 4, "--out", out), out)
    assert out.read_text() == "keep\n" and sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


# -- issue 21: a run is self-contained; no config reads a file outside the cache ----------------
SECRET = "SECRET-MARKER-7f3a"
PAGES = ("pages/1_Model.py", "pages/2_Explore.py", "pages/3_Compare.py", "pages/4_Images.py",
         "pages/5_Rounds.py", "pages/6_Budget.py")


def legacy_csv_run(folder, secret):
    """A csv run as older versions wrote it, crafted to name `secret` (a file outside the run)
    everywhere they named their CSV: dataset.params.path, dataset.info.params.path and
    dataset.domain.path; and it keeps no rows of its own."""
    from smeme.pipeline import pretrain_rows

    rows = np.random.default_rng(2).normal(size=(300, 2)) * [1.0, 3.0]
    pretrain_rows(folder, rows, ["x", "y"], preset="tiny", steps=20)
    config = json.loads((folder / "config.json").read_text())
    del config["dataset"]["training_rows"]
    for holder in (config["dataset"]["params"], config["dataset"]["info"]["params"], config["dataset"]["domain"]):
        holder["path"] = str(secret)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "training_rows.npy").unlink()
    return folder


def holds_the_secret(blob: bytes, arrays) -> bool:
    """The secret's marker in the bytes, or one of its values (987654 + i) in the arrays."""
    return SECRET.encode() in blob or any(np.any(np.abs(np.asarray(a, dtype=float) - 987654.0) < 300)
                                          for a in arrays if np.asarray(a).dtype.kind in "fiu")


def test_a_run_naming_an_outside_file_never_reads_it_on_any_page_or_export(tmp_path, monkeypatch, capsys):
    import io
    import zipfile

    from streamlit.testing.v1 import AppTest

    from smeme.services import bundles, cached, jobs, runs

    secret = tmp_path / "secret.csv"
    secret.write_text(f"{SECRET}_a,{SECRET}_b\n" + "\n".join(f"{987654.0 + i},{i * i}" for i in range(200)) + "\n")
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    folder = legacy_csv_run(tmp_path / "cache" / "runs" / "legacy", secret)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.session_state["run"] = str(folder.resolve())
    at.run()  # the home page
    assert not at.exception, at.exception
    assert "The training rows are not stored in this run" in " ".join(c.value for c in at.caption)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert jobs.wait_all(60)
        at.run()
        assert not at.exception, (page, at.exception)
        if page == "pages/1_Model.py":
            notes = " ".join(c.value for c in at.caption)
            assert "The training rows are not stored in this run" in notes, notes
    run = runs.open_run(folder)
    assert cached.data_sample(run) is None and "not stored in this run" in cached.data_note(run)
    in_run = [p for p in folder.rglob("*") if p.is_file()]
    assert not any(holds_the_secret(p.read_bytes(), [np.load(p)] if p.suffix == ".npy" else []) for p in in_run)
    # its export (the app's download and the CLI's) carries no byte of it, nor its name
    for blob in (bundles.bundle_bytes(folder),):
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            arrays = [np.load(io.BytesIO(zf.read(n))) for n in zf.namelist() if n.endswith(".npy")]
            assert not holds_the_secret(blob, arrays) and str(secret).encode() not in zf.read("config.json")
    code, _, err = run_cli(capsys, "export", "--run", folder, "--out", tmp_path / "legacy.zip")
    assert code == 0, err
    assert SECRET.encode() not in (tmp_path / "legacy.zip").read_bytes()
    assert str(secret).encode() not in (tmp_path / "legacy.zip").read_bytes()
    # its rounds stay usable
    code, _, err = run_cli(capsys, "sample", "--run", folder, "--n", 20, "--steps", 10, "--out", tmp_path / "s.csv")
    assert code == 0, err


def test_data_sample_of_a_legacy_csv_run_does_not_open_its_path(tmp_path, monkeypatch):
    """Even a FIFO (which would hang a reader) named by an old run is never opened."""
    from smeme.services import cached, runs

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    folder = legacy_csv_run(tmp_path / "legacy", fifo)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(os.fspath(p)) or real_open(p, *a, **k))
    run = runs.open_run(folder)
    assert cached.data_sample(run) is None
    assert str(fifo) not in opened


def test_a_config_nested_100000_levels_is_one_damaged_run(tmp_path, monkeypatch):
    """RecursionError from a hostile config.json escapes nowhere: the run does not open (one
    sentence), the digits listing and the uploads check skip it."""
    from smeme.services import image_runs, settings

    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    deep = settings.runs_dir() / "deep"
    deep.mkdir(parents=True)
    (deep / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    (deep / "metrics.json").write_text('{"rounds": ' + "{\"a\":" * 100_000 + "1" + "}" * 100_001)
    assert image_runs.digits_runs() == []
    assert settings.uploads_in_use() == set()
    with pytest.raises(StoreError) as info:
        Run.open(deep)
    assert str(info.value) == f"config.json in {deep} is damaged: it nests deeper than 64 levels."
    from smeme.store import read_manifest
    with pytest.raises(StoreError, match="metrics.json in .* is damaged: it nests deeper than 64 levels"):
        read_manifest(deep)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_run_json_that_is_not_a_small_regular_file_is_refused_before_reading(tmp_path, kind, monkeypatch):
    from smeme import safe_io

    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "config.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero")
        target.symlink_to("/dev/zero")  # a link is refused before what it names
    elif kind == "folder":
        target.mkdir()
    else:
        target.write_text("{}" + " " * 2000)
        monkeypatch.setattr(safe_io, "MAX_JSON_BYTES", 1000)
    with pytest.raises(StoreError) as info:
        Run.open(folder)
    words = {"fifo": "is a FIFO (named pipe), not a regular file", "device": "is a symbolic link",
             "folder": "is a folder, not a regular file", "huge": "more than the 1000 bytes that may be read"}[kind]
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("header", [b"a,b\rc\n", b"\x93\xfe\x00,\x81\n"])
def test_a_csv_header_the_csv_reader_refuses_is_one_sentence_on_the_model_page(tmp_path, monkeypatch, header):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    body = header + b"\n".join(b"%d,%d" % (i, i * i % 7) for i in range(150)) + b"\n"
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("csv").run()
    at.file_uploader(key="m_csv").set_value(("odd.csv", body, "text/csv")).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("This file cannot be used: The ") and "odd-" in errors[0], errors
    assert at.button(key="m_train").disabled


def test_a_run_never_reads_through_a_link_or_a_fifo_inside_it(run_copy, tmp_path):
    """A round file that is a link (to a file outside the run) is refused in one sentence; a cached
    array that is a FIFO or a link is a cache miss, not a hang or a read outside the run."""
    outside = tmp_path / "outside.safetensors"
    shutil.move(run_copy / "round_0.safetensors", outside)
    (run_copy / "round_0.safetensors").symlink_to(outside)
    run = Run.open(run_copy)
    with pytest.raises(StoreError, match=r"^round_0.safetensors in .* is a symbolic link; it is not followed\.$"):
        run.load_model(0)
    os.mkfifo(run.cache_path("samples_fifo"))
    assert run.load_array("samples_fifo") is None
    np.save(tmp_path / "elsewhere.npy", np.arange(3))
    run.cache_path("linked").symlink_to(tmp_path / "elsewhere.npy")
    assert run.load_array("linked") is None
