"""End to end in a real headless Chromium: train a tiny toy model, run one round, compare,
step through the rounds.

Starts `streamlit run app.py` on 127.0.0.1 with an empty cache (SMEME_CACHE_DIR=tmp) and
the tiny preset (SMEME_APP_PRESET=tiny); drives it with Playwright; saves screenshots to
artifacts/ (git-ignored). Needs Debian's chromium at /usr/bin/chromium (CI installs it).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from browser_helpers import ARTIFACTS, app_page, nav, play_every_round, require_chromium, served_app, snap

pytestmark = pytest.mark.browser


def damaged_run(folder: Path) -> None:
    """A tiny toy run whose metrics.json is damaged: the app must list it and work on."""
    from smeme.pipeline import pretrain_run

    pretrain_run(folder, "toy", n=256, steps=20, preset="tiny")
    (folder / "metrics.json").write_text('{"rounds": ')


@pytest.fixture
def server(tmp_path):
    require_chromium()
    damaged_run(tmp_path / "cache" / "runs" / "broken-run")
    with served_app(tmp_path / "cache", {"SMEME_APP_PRESET": "tiny"}) as url:
        yield url


def test_train_explore_compare_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p, app_page(p, server) as page:
        # the damaged run in the cache breaks nothing: it is listed with its problem
        expect(page.get_by_role("button", name="Train the default toy model")).to_be_visible(timeout=60_000)
        assert not page.locator('[data-testid="stException"]').count()

        # Home: one click trains the default toy model (tiny preset), with progress
        page.get_by_role("button", name="Train the default toy model").click(timeout=60_000)
        expect(page.get_by_text("Model ready: toy-default")).to_be_visible(timeout=240_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("broken-run cannot be opened: metrics.json in broken-run is damaged").first).to_be_visible(timeout=60_000)
        snap(page, ARTIFACTS / "browser_home.png", 1600)

        # Explore: one round
        nav(page, "Explore")
        page.get_by_role("button", name="Run next round").click(timeout=30_000)
        expect(page.get_by_text("Round 1 (change from round 0)")).to_be_visible(timeout=240_000)
        # .first: while the page reruns after the round, the live panel's copy can linger a moment
        expect(page.get_by_text("Metrics per round").first).to_be_visible(timeout=60_000)
        snap(page, ARTIFACTS / "browser_explore.png", 1800)

        # Compare: heatmaps (with their difference) and metrics
        nav(page, "Compare")
        expect(page.get_by_text("difference (round 1 − round 0)")).to_be_visible(timeout=240_000)
        expect(page.locator('[data-testid="stMetric"]').first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("round 1 (change from round 0)")).to_be_visible(timeout=60_000)
        expect(page.locator('[data-testid="stMetric"]').filter(has_text="Entropy (k-NN)")).to_be_visible(timeout=60_000)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
        snap(page, ARTIFACTS / "browser_compare.png", 2400)

        # Rounds: the browser plays every round, none skipped
        nav(page, "Rounds")
        play_every_round(page, 2)
        snap(page, ARTIFACTS / "browser_rounds.png", 1800)
        assert not page.get_by_text("Traceback").count()
        assert not page.locator('[data-testid="stException"]').count()
