import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from smeme.threads import configure  # noqa: E402

configure()


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
