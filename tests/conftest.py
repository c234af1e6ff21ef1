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
