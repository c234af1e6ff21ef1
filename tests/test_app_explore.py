"""The Explore page driven by AppTest (tiny models in a temporary cache): rounds run from
the page, the settings travel to the worker as one ExploreConfig, bad ones are refused there."""
from __future__ import annotations

import json
import pickle

import pytest

from smeme.explore import ExploreConfig
from smeme.services import jobs, launch, runs, settings
from test_app import app, built_cache, cache  # noqa: F401  (the fixtures: a tiny toy run and a triangles run)


def test_the_explore_page_sends_one_explore_config_to_the_rounds(cache, monkeypatch):
    """Page -> launch.start_rounds -> the worker -> explore.run_rounds: one typed ExploreConfig,
    crossing the process boundary as its to_dict() (plain JSON data) and rebuilt once."""
    started, explored = [], []

    def fake_start_process(folder, kind, func, *args, **options):
        started.append((kind, func, args))
        return None

    def fake_run_rounds(run, rounds, config, **callbacks):
        explored.append((rounds, config))
        return []

    monkeypatch.setattr(launch.jobs, "start_process", fake_start_process)
    monkeypatch.setattr("smeme.explore.run_rounds", fake_run_rounds)
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    at.slider(key="x_lam").set_value(0.37)
    at.number_input(key="x_k").set_value(2)
    at.button(key="x_k_btn").click().run()
    assert not at.exception and not at.error
    [(kind, func, args)] = started
    assert kind == "explore"
    carried = args[-1]
    assert type(carried) is dict and json.loads(json.dumps(carried)) == carried  # plain data across the boundary

    class ChildJob:  # what the worker sees of its job
        cancel = jobs.threading.Event()

        def update(self, *a, **k):
            pass

        def log(self, event):
            pass

    func(ChildJob(), *pickle.loads(pickle.dumps(args)))  # the worker's side, as the child process runs it
    [(rounds, config)] = explored
    assert rounds == 2 and type(config) is ExploreConfig
    assert config.lam == pytest.approx(0.37)


def test_the_explore_page_refuses_a_bad_setting_in_one_sentence(cache, monkeypatch):
    """The page's widgets only offer valid values; a setting they combine with (a data set's
    lam_power, say) can still be bad: ExploreConfig's own sentence, on the page, nothing started."""
    defaults = settings.explore_defaults
    monkeypatch.setattr(settings, "explore_defaults", lambda run=None: {**defaults(run), "lam_power": 0.3})
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    at.radio(key="x_sched").set_value("decreasing")
    at.button(key="x_one").click().run()
    assert not at.exception
    [err] = at.error
    assert err.value == "lam_power must lie in (0.5, 1] (Robbins-Monro), got 0.3."
    assert jobs.get(cache["toy"], "explore") is None
    assert runs.open_run(cache["toy"]).rounds() == [0, 1, 2]  # nothing started, nothing lost
