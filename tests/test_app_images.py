"""The Images page's services (smeme.services.image_runs) and the page driven by AppTest:
Stable Diffusion models are chosen from the server's list, names stay in the cache."""
from __future__ import annotations

import json
import shutil

import pytest

from apptest_helpers import app
from smeme.services import image_runs, jobs


def test_class_shares_table_is_in_percent_per_shown_round():
    shares = [0.5, 0.25, 0.125, 0.125, 0, 0, 0, 0, 0, 0]
    metrics = {0: {"class_shares": [0.1] * 10}, 1: {"rare_share": 0.2}, 2: {"class_shares": shares}}
    table = image_runs.class_shares_table(metrics, [0, 1, 2])
    assert list(table.columns) == ["round 0", "round 2"]  # round 1 saved no shares
    assert list(table.index) == [str(d) for d in range(10)]
    assert table["round 0"].tolist() == pytest.approx([10.0] * 10)
    assert table["round 2"].tolist() == pytest.approx([50.0, 25.0, 12.5, 12.5, 0, 0, 0, 0, 0, 0])
    assert image_runs.class_shares_table(metrics, [1]) is None
    assert image_runs.class_shares_table(metrics, [0]).shape == (10, 1)  # only the shown rounds


def test_metrics_not_computed_names_the_first_round_that_lacked_weights():
    assert image_runs.metrics_not_computed({0: {"fid": 1.0}, 1: {}}) is None
    lacking = ["Inception-v3 weights are missing."]
    assert image_runs.metrics_not_computed({0: {"fid": 1.0}, 1: {"missing_weights": lacking}}) == lacking
