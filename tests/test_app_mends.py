"""Issue 24's mends, each through the page (AppTest) or the command a user runs: triangles'
support numbers add up, per-data-set text, Budget's sweep list, viewer mode hides what it
cannot do, the loss chart's ticks, shares in percent, Home's next step, the sidebar while a
run trains, CLI help with defaults, `budget` progress on stderr (README's file references: tests/test_readme.py)."""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import pytest

from smeme.services import runs, settings, sweeps, texts
from apptest_helpers import app, figs, held_job, metrics

ROOT = Path(__file__).resolve().parent.parent


def pct(text: str) -> float:
    return float(text.rstrip("%"))


# ------------------------------------------------------------------------------ triangles

def test_triangles_off_support_tiles_add_up_and_the_text_is_about_triangles(cache):
    at = app(cache["tri"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    m = metrics(at)
    assert "Validity" not in m
    assert pct(m["Off support"]) == pytest.approx(pct(m["Not a triangle"]) + pct(m["Too large"]), abs=1e-9)
    flat = runs.open_run(cache["tri"]).metrics()[1]
    assert pct(m["Off support"]) == pytest.approx(round(100 * (1 - flat["on_support"]), 1))
    assert pct(m["Not a triangle"]) == pytest.approx(round(100 * (1 - flat["validity"]), 1))
    page = " ".join(" ".join(md.value.replace("*", "").split()) for md in at.markdown)
    assert "squares" not in page and "off support = not a triangle" in page
    at.switch_page("pages/1_Model.py").run()  # the Model page: the same definitions
    m0 = runs.open_run(cache["tri"]).metrics()[0]
    assert metrics(at)["On support"] == f"{100 * m0['on_support']:.1f}%"
    sentence = [c.value for c in at.caption if c.value.startswith("Off support")][0]
    off, not_tri, too_large = (float(x) for x in re.findall(r"([\d.]+)%", sentence))
    assert off == pytest.approx(not_tri + too_large, abs=1e-9)
    assert off == pytest.approx(round(100 - pct(metrics(at)["On support"]), 1))


def test_toy_explore_speaks_of_its_squares(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert "squares" in " ".join(md.value for md in at.markdown)
    assert "Not a triangle" not in metrics(at)


def test_support_parts_are_exact_in_the_digits_shown():
    parts = texts.support_parts({"on_support": 0.9284, "validity": 0.9651})
    assert parts == {"off_support": 7.2, "not_triangle": 3.5, "too_large": 3.7}
    assert texts.support_parts({"on_support": 0.9}) is None


# ------------------------------------------------------------------------------ budget

def test_budget_lists_the_sweeps_on_disk_and_opens_the_latest(cache):
    older = Path(cache["toy"]).parent / "toy-default-budget" / "N60-lam0.1-seed0" / "K1"
    older.mkdir(parents=True)
    os.utime(older.parent, (time.time() - 3600, time.time() - 3600))
    job = sweeps.start_budget(cache["toy"], 2, [1, 2], dict(settings.explore_defaults(), lam=0.2, seed=3))
    assert job.wait(120) and job.status == "done", job.error
    found = sweeps.existing_sweeps(cache["toy"])
    assert [(s["iterations"], s["lam"], s["seed"], s["ks"]) for s in found] == [(2, 0.2, 3, [1, 2]), (60, 0.1, 0, [1])]
    at = app(cache["toy"]).run()
    at.switch_page("pages/6_Budget.py").run()
    assert not at.exception
    assert at.selectbox(key="b_sweep").options == ["N = 2, λ = 0.2, seed 3 (K = 1, 2)", "N = 60, λ = 0.1, seed 0 (K = 1)"]
    assert at.number_input(key="b_iters").value == 2 and at.slider(key="b_lam").value == pytest.approx(0.2)
    assert at.number_input(key="b_seed").value == 3 and at.multiselect(key="b_ks").value == [1, 2]
    lines = [f for f in figs(at) if "One budget of solver iterations" in json.dumps(f["layout"])][0]
    assert len(lines["data"]) == 2  # the latest sweep's K = 1, 2 are drawn at once
    at.selectbox(key="b_sweep").set_value("N = 60, λ = 0.1, seed 0 (K = 1)").run()
    assert at.number_input(key="b_iters").value == 60
    assert any("No K of the sweep N = 60" in c.value for c in at.caption)  # K1's folder holds no finished K


# ------------------------------------------------------------------------------ viewer mode

def test_viewer_mode_hides_what_viewers_cannot_do(cache, monkeypatch):
    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    assert not at.slider and not at.number_input and not at.radio  # no lambda, seed, solver
    assert not [b for b in at.button if b.key in ("x_one", "x_k_btn")]
    assert "Metrics per round" in json.dumps(figs(at))
    at.switch_page("pages/6_Budget.py").run()
    assert not at.exception
    assert not at.number_input and not at.slider and not at.multiselect
    assert "b_start" not in [b.key for b in at.button]
    from smeme.services import access
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):  # the service refuses too
        sweeps.start_budget(cache["toy"], 2, [1], settings.explore_defaults())


# ------------------------------------------------------------------------------ charts

def test_the_loss_chart_has_several_labelled_ticks_and_shares_are_in_percent(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    loss = [f for f in figs(at) if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "loss"][0]
    assert len(loss["layout"]["yaxis"]["tickvals"]) >= 3
    at.switch_page("pages/2_Explore.py").run()
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    titles = [a["text"] for a in tl["layout"]["annotations"]]
    share_axis = "yaxis" + ("" if titles.index("Off-support fraction") == 0 else str(titles.index("Off-support fraction") + 1))
    assert tl["layout"][share_axis]["tickformat"] == ".0%"
    assert "tickformat" not in tl["layout"]["yaxis"]  # entropy in nats stays as it is
    import pandas as pd
    from smeme.services import figures
    bars = figures.category_bars(pd.DataFrame({"round": [0, 0], "category": ["a", "b"], "share": [0.9, 0.1]}))
    assert bars.layout.yaxis.tickformat == ".0%"


# ------------------------------------------------------------------------------ home, sidebar

def test_home_next_step_follows_the_run(cache):
    at = app(cache["toy"]).run()  # two rounds done
    text = [s.value for s in at.success][0]
    assert "2 S-MEME round(s) done" in text and "Rounds page" in text and "Next: run S-MEME rounds" not in text
    from smeme.pipeline import pretrain_run
    fresh = settings.runs_dir() / "fresh"
    pretrain_run(fresh, "toy", n=500, preset="tiny")
    at = app(str(fresh.resolve())).run()
    assert "Next: run S-MEME rounds on the Explore page." in [s.value for s in at.success][0]
    with held_job(fresh, "explore", (0.2, "Round 1: solver iteration 1/4")):
        at.run()
        assert "S-MEME rounds are running now." in [s.value for s in at.success][0]


def test_the_sidebar_names_a_training_run_with_its_progress(cache):
    folder = settings.runs_dir() / "being-trained"
    folder.mkdir()
    with held_job(folder, "train", (0.4, "Training: step 40/100")):
        at = app(str(folder.resolve())).run()
        assert not at.exception
        box = [s for s in at.selectbox if str(s.key).startswith("_sidebar_run_")][0]
        assert box.format_func(box.options[0]) == "being-trained (training: 40%)"
        assert any("being-trained: " in c.value and "(40%)" in c.value for c in at.sidebar.caption)


# ------------------------------------------------------------------------------ CLI

def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a.option_strings[-1] if a.option_strings else a.dest}", a)
                            for a in sub._actions if not isinstance(a, argparse._HelpAction))


def test_every_cli_option_has_help_and_says_its_default():
    from smeme.cli import build_parser

    missing, silent = [], []
    for name, action in _options(build_parser()):
        if name.startswith("sd-explore"):
            continue  # its own parser (smeme.images.sd_explore)
        if not action.help:
            missing.append(name)
        elif action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
            silent.append(name)
    assert not missing and not silent, (missing, silent)
    helps = {n: a.help for n, a in _options(build_parser())}
    assert "default" in helps["explore --lam"] and helps["explore --rounds"]


def test_budget_prints_progress_to_stderr_before_the_first_k_ends(cache, capsys):
    from smeme.cli import main

    code = main(["budget", "--run", cache["toy"], "--iterations", "2", "--rounds", "1,2", "--trajectories", "64",
                 "--metrics-n", "256", "--no-logp", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("budget: K = 1 (1 of 2), round 1 of 1")
    assert any(l.startswith("budget: K = 2 (2 of 2), round 2 of 2") for l in lines)
    assert len(out.strip().splitlines()) == 2  # the JSON lines, one per K, on stdout
