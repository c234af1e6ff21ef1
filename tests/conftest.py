import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from smeme.threads import configure  # noqa: E402

# One thread unless told otherwise: 'auto' (the default outside tests) may change the count
# mid-run, and tests compare runs bit for bit. Child processes (CLI, app jobs) inherit it.
os.environ.setdefault("SMEME_THREADS", "1")
configure()


def pytest_collection_modifyitems(items):
    """Longest files first (their seconds in file_seconds.json, from a CI run; unlisted files count
    as short): with `--dist loadfile --no-loadscope-reorder` each worker takes the next file when
    it is free, so the heavy files start early and the short ones even the workers out at the end.
    Only the order changes; the order within a file is kept."""
    import json

    with open(os.path.join(os.path.dirname(__file__), "file_seconds.json")) as f:
        seconds = json.load(f)
    items.sort(key=lambda item: -seconds.get(os.path.basename(str(item.path)), 0))


# The AppTest files' cache (tests/test_app_*.py): tiny models (SMEME_APP_PRESET=tiny) in a
# temporary cache (SMEME_CACHE_DIR), so the real cache/ is never touched.
@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """Built once per module: a cache with a tiny toy run (2 rounds) and a tiny triangles run
    (1 round). Tests never use it directly: each gets its own copy (`cache`)."""
    from apptest_helpers import tiny_app_env
    from smeme.pipeline import pretrain_run
    from smeme.services import jobs, launch, runs, settings

    root = tmp_path_factory.mktemp("appcache")
    with tiny_app_env(root):
        toy = settings.runs_dir() / "toy-default"
        tri = settings.runs_dir() / "tri"
        pretrain_run(toy, "toy", n=2000, preset="tiny")
        pretrain_run(tri, "triangles", n=1024, preset="tiny")
        queued = {}
        for folder, k in ((toy, 2), (tri, 1)):
            job = launch.start_rounds(folder, k, settings.explore_defaults(runs.open_run(folder)))
            assert job.wait(120) and job.status == "done", job.error
            queued[folder.name] = (job, jobs.get(folder, "heatmap"))  # the heatmaps the rounds queued
        assert jobs.wait_all(240)
        yield root, queued


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty cache of this test's own, with neither viewer nor single-user mode."""
    from smeme.services import jobs
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path / "cache"))
    for k in ("SMEME_VIEWER", "SMEME_SINGLE_USER"):
        monkeypatch.delenv(k, raising=False)
    yield tmp_path / "cache"
    assert jobs.wait_all(60)


@pytest.fixture
def cache(built_cache, tmp_path, monkeypatch):
    """This test's own copy of the built cache (tests add rounds, runs and damage to it)."""
    from smeme.services import jobs
    built, queued = built_cache
    root = tmp_path / "cache"
    shutil.copytree(built, root)
    monkeypatch.setenv("SMEME_CACHE_DIR", str(root))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    toy, tri = str((root / "runs" / "toy-default").resolve()), str((root / "runs" / "tri").resolve())
    yield {"root": root, "toy": toy, "tri": tri, "queued": {toy: queued["toy-default"], tri: queued["tri"]}}
    jobs.wait_all(60)


@pytest.fixture
def run_copy(base_run, tmp_path):
    """A copy of the module's `base_run` fixture (a pre-trained run) in this test's folder."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


# Hypothesis profiles for the fuzz tests (tests/test_fuzz.py): "ci" by default (the sizes
# BENCHMARKS.md reports), "long" with SMEME_FUZZ=long for a longer local search. No example
# database, and hypothesis' own caches live in the temp folder: nothing is written into the checkout.
try:
    from hypothesis import HealthCheck, settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # tests/test_fuzz.py skips itself without hypothesis
    pass
else:
    import tempfile

    set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "smeme-hypothesis"))  # its caches, not in the checkout
    _FUZZ_SETTINGS = dict(deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
    settings.register_profile("ci", max_examples=600, derandomize=True, **_FUZZ_SETTINGS)
    settings.register_profile("long", max_examples=5_000, **_FUZZ_SETTINGS)
    settings.load_profile("long" if os.environ.get("SMEME_FUZZ", "").strip() == "long" else "ci")
