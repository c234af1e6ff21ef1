"""The command line, end to end in subprocesses: `python -m smeme ...`."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smeme(*args, cwd=None):
    env = {**os.environ, "SMEME_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "smeme", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def assert_clean_failure(proc, code=2, match=None):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith("smeme: error: ")
    if match:
        assert match.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "toy"
    proc = smeme("pretrain", "--dataset", "toy", "--preset", "tiny", "--n", 2000, "--run", folder)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return folder


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pretrain_sample_report(base_run, tmp_path):
    assert (base_run / "round_0.safetensors").exists() and (base_run / "config.json").exists()
    out = tmp_path / "s.csv"
    proc = smeme("sample", "--run", base_run, "--n", 64, "--seed", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["x", "y"] and len(frame) == 64
    assert np.isfinite(frame.to_numpy()).all()
    again = tmp_path / "s2.csv"
    smeme("sample", "--run", base_run, "--round", 0, "--n", 64, "--seed", 3, "--out", again)
    assert out.read_bytes() == again.read_bytes()  # fixed noise: same seed, same samples

    proc = smeme("report", "--run", base_run)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert list(report["rounds"]) == ["0"] and report["dataset"] == "toy"


def test_logp_adds_column(base_run, tmp_path):
    from smeme import density  # noqa: F401 - an import error fails the test
    pts = tmp_path / "p.csv"
    pd.DataFrame({"id": [1, 2, 3], "x": [-0.75, 0.75, 3.0], "y": [0.0, 0.0, 3.0]}).to_csv(pts, index=False)
    out = tmp_path / "o.csv"
    proc = smeme("logp", "--run", base_run, "--points", pts, "--out", out)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "x", "y", "logp"]
    assert np.isfinite(frame["logp"]).all() and frame["logp"][0] > frame["logp"][2]


def _bad_csvs(tmp_path):
    rng = np.random.default_rng(0)
    good = pd.DataFrame(rng.normal(size=(200, 2)), columns=["u", "v"])
    cases = {}
    text = good.astype(object)
    text.iloc[17, 1] = "hello"
    cases["text"] = text
    nan = good.copy()
    nan.iloc[5, 0] = np.nan
    cases["nan"] = nan
    inf = good.copy()
    inf.iloc[9, 1] = np.inf
    cases["inf"] = inf
    cases["one column"] = good[["u"]]
    cases["few rows"] = good.iloc[:20]
    cases["65 columns"] = pd.DataFrame(rng.normal(size=(200, 65)), columns=[f"c{i}" for i in range(65)])
    paths = {}
    for name, frame in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.csv"
        frame.to_csv(path, index=False)
        paths[name] = path
    return paths


def test_bad_csv_inputs(tmp_path):
    for name, path in _bad_csvs(tmp_path).items():
        target = tmp_path / f"run_{path.stem}"
        proc = smeme("pretrain", "--dataset", "csv", "--csv", path, "--preset", "tiny", "--run", target)
        assert_clean_failure(proc)
        assert not target.exists(), name


def test_damaged_and_foreign_weights(run_copy, tmp_path):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    weights = run_copy / "round_0.safetensors"
    original = weights.read_bytes()

    weights.write_bytes(original[: len(original) // 3])
    assert_clean_failure(smeme("sample", "--run", run_copy, "--n", 4, "--out", out), match="damaged")
    weights.write_bytes(os.urandom(256))
    assert_clean_failure(smeme("sample", "--run", run_copy, "--n", 4, "--out", out), match="damaged")

    from safetensors.torch import save_file
    import torch

    save_file({"encoder.weight": torch.zeros(2, 2)}, str(weights))
    assert_clean_failure(smeme("sample", "--run", run_copy, "--n", 4, "--out", out), match="does not hold")
    assert out.read_text() == "precious\n"


def test_shape_mismatch(run_copy, tmp_path):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["model"]["width"] = 48
    (run_copy / "config.json").write_text(json.dumps(cfg))
    assert_clean_failure(smeme("sample", "--run", run_copy, "--n", 4, "--out", tmp_path / "o.csv"), match="shape")
    assert not (tmp_path / "o.csv").exists()


def test_missing_run_and_bad_arguments(tmp_path):
    assert_clean_failure(smeme("sample", "--run", tmp_path / "nope", "--n", 4, "--out", tmp_path / "o.csv"),
                         match="does not exist")
    assert_clean_failure(smeme("report", "--run", tmp_path), match="no config.json")
    assert_clean_failure(smeme("sample", "--run", tmp_path, "--n", "many", "--out", "o.csv"))
    assert_clean_failure(smeme("pretrain", "--dataset", "csv", "--run", tmp_path / "r"), match="--csv")


def test_failed_commands_leave_files_untouched(run_copy, tmp_path):
    before = snapshot(run_copy)
    # pretrain into an existing run refuses (before any training) ...
    assert_clean_failure(smeme("pretrain", "--dataset", "toy", "--preset", "tiny", "--run", run_copy),
                         match="already holds a run")
    # ... and a bad round number or bad points file leaves the output alone.
    out = tmp_path / "o.csv"
    out.write_text("keep\n")
    assert_clean_failure(smeme("sample", "--run", run_copy, "--round", 7, "--n", 4, "--out", out), match="round 7")
    pts = tmp_path / "p.csv"
    pts.write_text("x,z\n1,2\n")
    assert_clean_failure(smeme("logp", "--run", run_copy, "--points", pts, "--out", out), match="column")
    assert out.read_text() == "keep\n"
    assert snapshot(run_copy) == before


def test_explore_one_round_and_refusals(run_copy):
    from smeme import explore  # noqa: F401 - an import error fails the test
    proc = smeme("explore", "--run", run_copy, "--rounds", 1, "--iterations", 2, "--lam", 0.1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("round 1: ")
    assert (run_copy / "round_1.safetensors").exists()
    before = snapshot(run_copy)
    assert_clean_failure(smeme("explore", "--run", run_copy, "--rounds", 1, "--lam", 1), match="allow")
    assert snapshot(run_copy) == before


def test_explore_ess_fallback_reaches_the_rounds_and_none_switches_it_off(run_copy):
    """--ess-fallback sets the share each round's solver runs with ('none': tempering); a value outside
    (0, 1) is refused in one sentence naming the option, and nothing is written."""
    from smeme.store import Run

    for given in ("none", "0.3"):
        proc = smeme("explore", "--run", run_copy, "--rounds", 1, "--iterations", 2, "--ess-fallback", given)
        assert proc.returncode == 0, proc.stderr
    metrics = Run.open(run_copy).metrics()
    assert metrics[1]["explore"]["ess_fallback"] is None and metrics[2]["explore"]["ess_fallback"] == 0.3
    before = snapshot(run_copy)
    for bad in ("1", "half"):
        assert_clean_failure(smeme("explore", "--run", run_copy, "--rounds", 1, "--ess-fallback", bad),
                             match="--ess-fallback")
    assert snapshot(run_copy) == before


def test_explore_share_options_reach_the_rounds_and_are_checked(run_copy):
    """--max-validity-drop sets the support guard's limit, --lr-share the likelihood-ratio term's share of the
    rounds and --lr-max-features its bound on the columns; a value outside [0, 1] (or a bound not a whole number
    >= 1 or 'none') is refused in one sentence naming the option, and nothing is written."""
    from smeme.store import Run

    proc = smeme("explore", "--run", run_copy, "--rounds", 1, "--iterations", 2, "--max-validity-drop", "1",
                 "--lr-share", "0", "--lr-max-features", "none")
    assert proc.returncode == 0, proc.stderr
    settings = Run.open(run_copy).metrics()[1]["explore"]
    assert settings["max_validity_drop"] == 1.0 and settings["likelihood_ratio_share"] == 0.0
    assert settings["likelihood_ratio_max_features"] is None
    before = snapshot(run_copy)
    for option in ("--max-validity-drop", "--lr-share"):
        for bad in ("1.5", "-0.1", "nan"):
            assert_clean_failure(smeme("explore", "--run", run_copy, "--rounds", 1, option, bad), match=option)
    for bad in ("0", "2.5", "many"):
        assert_clean_failure(smeme("explore", "--run", run_copy, "--rounds", 1, "--lr-max-features", bad),
                             match="--lr-max-features")
    assert snapshot(run_copy) == before


def test_tilt_prints_the_exact_rounds_of_a_2d_run(base_run, tmp_path):
    proc = smeme("tilt", "--run", base_run, "--rounds", 2, "--lam", 0.3, "--resolution", 48, "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and [r["lam"] for r in rows] == [None, 0.3, 0.3]
    for r in rows:
        assert sum(r["shares"]["region"].values()) == pytest.approx(1.0, abs=1e-9)
        assert r["on_support"] == pytest.approx(1.0 - r["shares"]["region"].get("off", 0.0), abs=1e-9)
    sparse = [r["shares"]["region"]["sparse"] for r in rows]
    assert sparse[0] < sparse[1] < sparse[2]  # the tilt flattens: the light square gains mass
    missing = smeme("tilt", "--run", base_run, "--round", 7, "--rounds", 1)
    assert_clean_failure(missing, match="no round 7")
    tri = tmp_path / "tri"
    assert smeme("pretrain", "--dataset", "triangles", "--preset", "tiny", "--n", 512, "--run", tri).returncode == 0
    assert_clean_failure(smeme("tilt", "--run", tri, "--rounds", 1), match="2-D points")
    assert_clean_failure(smeme("tilt", "--run", base_run, "--rounds", 1, "--lam", 1.5), match="lambda")


# -- issue 21: eleven unclear messages, each now one sentence naming the input and the limit ----
# In-process (smeme.cli.main), so each case costs what its command costs, not a Python start.
def run_in_process(capsys, *args):
    """(exit code, the one error line) of a command that must fail cleanly."""
    import warnings

    from smeme import cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main([os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Warning" not in err
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("smeme: error: "), (code, err)
    line = lines[0]
    assert len(line) < 300 and line.endswith(".") and ".tmp" not in line and "[Errno" not in line, line
    return code, line


def _with_model_width(base_run, tmp_path, width):
    run = tmp_path / "wide"
    import shutil

    shutil.copytree(base_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["width"] = width
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _huge_points(tmp_path):
    path = tmp_path / "huge_points.csv"
    path.write_text("x,y\n0.5,0.1\n1e308,1e308\n")
    return path


def _bare_cr_csv(tmp_path):
    path = tmp_path / "bare_cr.csv"
    path.write_bytes(b"a\rb,c\n" + b"".join(b"%d,%d\n" % (i, i * i % 7) for i in range(150)))
    return path


UNCLEAR = {  # case: (arguments, substrings the one line must hold)
    "bare-CR CSV header": (lambda run, tmp: ["pretrain", "--dataset", "csv", "--csv", _bare_cr_csv(tmp),
                                             "--run", tmp / "r"], ["bare_cr.csv"]),
    "dense_mass=nan": (lambda run, tmp: ["pretrain", "--dataset", "toy", "--data-param", "dense_mass=nan",
                                         "--run", tmp / "r"], ["dense_mass", "finite number", "'nan'"]),
    "width 1e6 sample": (lambda run, tmp: ["sample", "--run", _with_model_width(run, tmp, 10 ** 6), "--n", 4,
                                           "--out", tmp / "o.csv"], ["width", "8,192", "1,000,000", "wide"]),
    "width 1e6 explore": (lambda run, tmp: ["explore", "--run", _with_model_width(run, tmp, 10 ** 6), "--rounds", 1,
                                            "--iterations", 1, "--quiet"], ["width", "8,192", "1,000,000"]),
    "tilt --t-r 1e-300": (lambda run, tmp: ["tilt", "--run", run, "--rounds", 1, "--t-r", "1e-300", "--quiet"],
                          ["--t-r 1e-300", "[1e-06, 1)"]),
    "logp 1e308": (lambda run, tmp: ["logp", "--run", run, "--points", _huge_points(tmp), "--out", tmp / "o.csv"],
                   ["huge_points.csv", "Row 3", "1e+308", "1e+150"]),
    "sample --out /proc/version": (lambda run, tmp: ["sample", "--run", run, "--n", 4, "--out", "/proc/version"],
                                   ["'/proc/version'", "/proc does not exist or does not accept new files"]),
    "pretrain --run /proc/x": (lambda run, tmp: ["pretrain", "--dataset", "toy", "--preset", "tiny", "--n", 200,
                                                 "--steps", 2, "--quiet", "--run", "/proc/smeme-x"],
                               ["'/proc/smeme-x'", "does not accept new files"]),
    "--steps 1e308": (lambda run, tmp: ["sample", "--run", run, "--n", 4, "--steps", "1e308", "--out", tmp / "o.csv"],
                      ["--steps", "at most 1,000", "'1e308'"]),
    "--n 1e300": (lambda run, tmp: ["sample", "--run", run, "--n", "1e300", "--out", tmp / "o.csv"],
                  ["--n", "at most 100,000", "'1e300'"]),
    "--n of 400 digits": (lambda run, tmp: ["sample", "--run", run, "--n", "9" * 400, "--out", tmp / "o.csv"],
                          ["--n", "at most 100,000", "'999999999999999999999..."]),
}


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_messages_name_the_input_and_the_limit(capsys, base_run, tmp_path, case):
    if "/proc" in case and not os.path.isfile("/proc/version"):
        pytest.skip("needs Linux's /proc")
    make_args, wanted = UNCLEAR[case]
    before = snapshot(base_run)
    _, line = run_in_process(capsys, *make_args(base_run, tmp_path))
    for text in wanted:
        assert text in line, (text, line)
    assert snapshot(base_run) == before
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "r").exists()


@pytest.fixture
def read_only(monkeypatch):
    """Make writes under a folder fail as on a read-only file system (EROFS): creating,
    opening for writing, renaming or removing anything below it."""
    import errno

    roots = []
    real_open, real_mkdir = os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def under(path):
        path = os.path.abspath(os.fspath(path))
        return any(path == r or path.startswith(r + os.sep) for r in roots)

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & writes and under(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if under(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def guarded(real):
        def move(src, dst, *args, **kwargs):
            if under(src) or under(dst):
                refuse(src)
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "rename", guarded(os.rename))
    monkeypatch.setattr(os, "replace", guarded(os.replace))
    return lambda folder: roots.append(os.path.abspath(os.fspath(folder)))


@pytest.mark.parametrize("command", ["pretrain", "explore", "export", "import", "budget", "metrics"])
def test_a_read_only_cache_is_named_as_read_only(capsys, base_run, tmp_path, monkeypatch, read_only, command):
    import shutil

    from smeme import cli

    cache = tmp_path / "cache"
    runs = cache / "runs"
    shutil.copytree(base_run, runs / "toy")
    bundle = tmp_path / "toy.zip"
    assert cli.main(["export", "--run", str(runs / "toy"), "--out", str(bundle)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SMEME_CACHE_DIR", str(cache))
    before = snapshot(cache)
    read_only(cache)
    args = {"pretrain": ["pretrain", "--dataset", "toy", "--preset", "tiny", "--n", 200, "--steps", 2, "--quiet",
                         "--run", runs / "new"],
            "explore": ["explore", "--run", runs / "toy", "--rounds", 1, "--iterations", 1, "--quiet"],
            "export": ["export", "--run", runs / "toy", "--out", cache / "toy.zip"],
            "import": ["import", bundle, "--name", "again"],
            "budget": ["budget", "--run", runs / "toy", "--iterations", 2, "--rounds", "1", "--trajectories", 8,
                       "--solver-steps", 4, "--metrics-n", 16, "--no-logp", "--quiet"],
            "metrics": ["metrics", "--run", runs / "toy", "--quiet"]}[command]
    _, line = run_in_process(capsys, *args)
    assert "read-only" in line and str(cache) in line, line
    assert snapshot(cache) == before


@pytest.mark.parametrize("kind, params, wanted", [
    ("mlp", {"dim": 2, "width": 10 ** 6}, "width must lie between 1 and 8,192, got 1,000,000"),
    ("mlp", {"dim": 2, "depth": 10 ** 9}, "depth must lie between 1 and 64, got 1,000,000,000"),
    ("mlp", {"dim": 64, "width": 8192, "depth": 2}, "more than the limit of 67,108,864"),
    ("mlp", {"dim": 2, "linear_skip": 10 ** 12}, "more than the limit of 67,108,864"),
    ("mlp", {"dim": 2, "gaussian_skip": "yes"}, "gaussian_skip must be true or false"),
    ("mlp", {"dim": 2, "width": float("inf")}, "non-finite size"),
    ("unet2d", {"block_out_channels": [32, 64, 10 ** 6]}, "channel count must lie between 1 and 1,024"),
    ("unet2d", {"sample_size": 10 ** 6}, "sample_size must lie between 1 and 512"),
])
def test_model_size_caps_name_the_limit(kind, params, wanted):
    """A stored model's size is checked before anything is allocated (config.json may come from a bundle)."""
    import smeme.images  # noqa: F401  (registers the unet2d kind)
    from smeme.models.registry import build_model
    from smeme.schedule import VPSchedule

    with pytest.raises(ValueError) as caught:
        build_model({"kind": kind, **params}, VPSchedule())
    assert wanted in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_sd_explore_is_a_subcommand_with_clean_refusals(tmp_path):
    """sd-explore is parsed by the CLI itself (no second parser): its errors are the CLI's."""
    assert_clean_failure(smeme("sd-explore", "--run", tmp_path / "new"), match="pass --pipeline")
    assert_clean_failure(smeme("sd-explore", "--run", tmp_path / "new", "--pipeline", tmp_path / "nowhere"),
                         match="does not exist")
    assert_clean_failure(smeme("sd-explore", "--run", tmp_path / "new", "--rounds", 0), match="--rounds")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("columns", [["x", "y", "z"], ["a,b", 'say "hi"', "plain"]])
def test_the_sample_csv_is_what_pandas_writes(columns):
    """`sample` writes its CSV without pandas (0.6 CPU-s at start-up), byte for byte as
    pandas' to_csv(index=False, float_format='%.9g') does: 9 significant digits, NaN empty,
    quoted names."""
    from smeme.cli_commands import _points_csv

    rng = np.random.default_rng(0)
    for values in (rng.normal(size=(40, 3)) * 10.0 ** rng.integers(-12, 12, size=(40, 3)),
                   np.array([[np.nan, np.inf, -np.inf], [-0.0, 0.0, 1e300], [1234567890.0, 0.1, 1 / 3]]),
                   rng.normal(size=(10, 3)).astype(np.float32), rng.integers(-5, 2 ** 40, size=(4, 3)),
                   np.zeros((0, 3))):
        expected = pd.DataFrame(values, columns=columns).to_csv(index=False, float_format="%.9g")
        assert _points_csv(columns, values) == expected


def test_commands_load_only_what_they_need(base_run, tmp_path):
    """--help loads neither torch nor numpy; sample and report load neither pandas nor scipy
    (their fixed cost beyond `import torch`, bench/bench_cli_overhead.py)."""
    script = ("import sys\nfrom smeme.cli import main\ncode = main(sys.argv[2:]) if sys.argv[1] == 'run' else 0\n"
              "heavy = ('torch', 'numpy', 'pandas', 'scipy', 'plotly', 'streamlit')\n"
              "print('loaded:', *(m for m in heavy if m in sys.modules)); sys.exit(code)")
    env = {**os.environ, "SMEME_THREADS": "1", "PYTHONPATH": ROOT}

    def loaded(*argv):
        proc = subprocess.run([sys.executable, "-c", script, *map(str, argv)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return set(proc.stdout.strip().splitlines()[-1].split()[1:])  # the line after the command's output

    assert loaded("import") == set()  # importing the CLI
    assert loaded("run", "report", "--run", base_run) == {"torch", "numpy"}
    assert loaded("run", "sample", "--run", base_run, "--n", 8, "--steps", 5, "--out", tmp_path / "s.csv",
                  "--quiet") == {"torch", "numpy"}
