"""The Budget page: one sweep of a solver-iteration budget over K rounds, one line per K.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations

import json

from apptest_helpers import app, arr, figs, settle
from smeme.services import jobs


def test_budget_view_draws_one_line_per_k(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/6_Budget.py").run()
    assert not at.exception
    at.multiselect(key="b_ks").set_value([1, 2])
    at.number_input(key="b_iters").set_value(2)
    at.button(key="b_start").click().run()
    assert not at.exception and not at.error
    settle(at)
    lines = [f for f in figs(at) if "One budget of solver iterations" in json.dumps(f["layout"])][0]
    assert [t["name"] for t in lines["data"]] == ["K = 1 (2 iterations a round)", "K = 2 (1 iterations a round)"]
    assert [len(arr(t["x"])) for t in lines["data"]] == [2, 3]  # rounds 0..K
    assert jobs.get(cache["toy"], "budget").status == "done"
    # the same settings again: one sentence, unless asked to replace them
    at.button(key="b_start").click().run()
    assert any("run with these settings before" in e.value for e in at.error)
