"""The Explore page driven by AppTest (tiny models in a temporary cache, conftest.py's
`cache`): rounds run from the page, the settings travel to the worker as one ExploreConfig,
bad ones are refused there; a second tab is told the run is busy; a stop keeps the finished
rounds; each finished round gets its heatmap."""
from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pytest

from apptest_helpers import TIMEOUT, app, arr, fig_text, figs, held_job, metrics, settle
from smeme.explore import ExploreConfig
from smeme.services import cached, jobs, launch, runs, settings


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


def test_explore_runs_a_round_and_the_timeline_grows(cache):
    at = app(cache["tri"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    assert [b.label for b in at.button][:2] == ["Run next round", "Run 3 rounds"]
    assert "Stop" not in [b.label for b in at.button]  # nothing to stop
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    n_before = len(arr(tl["data"][0]["x"]))
    at.radio(key="x_solver").set_value("student-teacher")
    at.slider(key="x_lam").set_value(0.2)
    at.number_input(key="x_iters").set_value(2)
    at.button(key="x_one").click().run()
    assert not at.exception
    settle(at)
    run = runs.open_run(cache["tri"])
    assert run.rounds() == [0, 1, 2]
    m = run.metrics()[2]
    assert m.get("solver") == "student-teacher" and m.get("lam") == pytest.approx(0.2)
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    assert arr(tl["data"][0]["x"]) == list(range(n_before + 1))
    assert "Entropy (k-NN)" in metrics(at) and "Not a triangle" in metrics(at)  # issue 24: tiles add up
    assert any("Round 2" in md.value for md in at.markdown)
    assert "round 1" in fig_text(at) and "round 2" in fig_text(at)  # newest beside previous


def test_explore_timeline_shows_what_a_perfect_solver_reaches(cache):
    from smeme.tilt import summarise_rounds

    job = launch.start_heatmaps(cache["toy"], [0])  # the exact rounds start from round 0's heatmap
    assert job is None or (job.wait(120) and job.status == "done"), job and job.error
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    assert sum(t["name"] == "perfect solver" for t in tl["data"]) == 3, [t["name"] for t in tl["data"]]
    run = runs.open_run(cache["toy"])
    m = run.metrics()
    hm = cached.heatmap_cached(run, 0)
    truth = summarise_rounds(run, hm["xs"], hm["ys"], hm["logp"], [m[k]["lam"] for k in (1, 2)],
                             [0.0, 0.0])  # "perfect solver" is the paper's target, whichever reward the rounds used
    sparse = [t for t in tl["data"] if t["name"] == "perfect solver" and t.get("yaxis") == "y4"]  # 4th panel
    assert sparse and np.allclose(arr(sparse[0]["y"]), [r["shares"]["region"]["sparse"] for r in truth])
    assert arr(sparse[0]["x"]) == sorted(m)
    entropy = [t for t in tl["data"] if t["name"] == "perfect solver" and t.get("yaxis") in (None, "y")]  # 1st panel
    gains = [r["entropy"] - truth[0]["entropy"] for r in truth]
    assert entropy and np.allclose(arr(entropy[0]["y"]), [m[0]["entropy_knn"] + g for g in gains])


def test_explore_second_tab_gets_a_clear_busy_message(cache, monkeypatch):
    with held_job(cache["toy"], "explore", (0.25, "Round 3 of 5: solver iteration 1/4"),
                  label="S-MEME rounds (3)") as job:
        at = app(cache["toy"]).run()
        at.switch_page("pages/2_Explore.py").run()
        assert not at.exception
        assert at.button(key="x_one").disabled and at.button(key="x_k_btn").disabled
        bars = [(p.value, p.text) for p in at.get("progress")]  # the other tab's job, live
        assert any(v == 25 and t.startswith("Round 3 of 5: solver iteration 1/4") for v, t in bars), bars
        assert [b.label for b in at.button].count("Stop") == 0  # not this session's job (issue 21)
        # the run's writes are refused in another tab (registry) ...
        with pytest.raises(jobs.JobBusy, match="busy"):
            launch.start_rounds(cache["toy"], 1, settings.explore_defaults())
        # ... and with the single-user switch, Stop in this tab stops the other tab's job
        monkeypatch.setenv("SMEME_SINGLE_USER", "1")
        at.run()
        assert [b.label for b in at.button].count("Stop") == 1  # one Stop while rounds run
        at.button(key="x_job_stop").click().run()
        assert job.cancel.is_set()


def test_explore_stop_keeps_finished_rounds(cache):
    run = runs.open_run(cache["toy"])
    before = run.rounds()
    chosen = dict(settings.explore_defaults(run), iterations=50)
    job = launch.start_rounds(cache["toy"], 3, chosen)
    deadline = time.time() + 120
    while "solver iteration" not in job.snapshot()["message"] and job.running and time.time() < deadline:
        time.sleep(0.05)  # stop it mid-round, once the solver is really running
    job.stop()
    assert job.wait(120)
    assert job.status == "cancelled", (job.status, job.error)
    finished = [e["round"] for e in job.snapshot()["events"]]
    after = runs.open_run(cache["toy"]).rounds()
    assert after == before + finished  # the finished rounds are kept, the stopped one is dropped
    assert len(finished) < 3


def test_each_finished_round_gets_its_heatmap_without_a_model_page_visit(cache):
    assert jobs.wait_all(TIMEOUT * 2)
    for folder in (cache["toy"], cache["tri"]):
        run = runs.open_run(folder)
        assert all(cached.heatmap_cached(run, k) is not None for k in run.rounds()), folder
        explore, heat = cache["queued"][folder]
        assert heat is not None and heat.status == "done"
        assert heat.started >= explore.finished  # queued after the rounds, never beside them


def test_new_rounds_stop_a_heatmap_job_of_their_run(cache):
    with held_job(cache["tri"], "heatmap", writes=False) as heat:
        job = launch.start_rounds(cache["tri"], 1, dict(settings.explore_defaults(runs.open_run(cache["tri"]))))
        assert heat.cancel.is_set()  # the round does not share the CPU with heatmaps
        job.stop()
        assert jobs.wait_all(TIMEOUT * 2)
