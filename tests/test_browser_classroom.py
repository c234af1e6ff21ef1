"""A class's tour in a real headless Chromium: draw on the canvas (the points appear), pick a
shape from the gallery with a rare part, train it with a tiny budget, run a round, open the
fields, and play the rounds in the browser (one frame per round, none skipped).

Empty cache, tiny preset."""
from __future__ import annotations

import pytest

from browser_helpers import ARTIFACTS, app_page, nav, play_every_round, require_chromium, served_app, snap

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    require_chromium()
    with served_app(tmp_path / "cache", {"SMEME_APP_PRESET": "tiny"}) as url:
        yield url


def draw_stroke(page) -> None:
    """One freehand stroke across the drawing canvas (Fabric's upper canvas takes the mouse)."""
    canvas = page.locator("canvas.upper-canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 31):
        page.mouse.move(x0 + i * 0.02 * box["width"], y0 - 0.3 * box["height"] * (i / 30) ** 2)
    page.mouse.up()


def test_draw_train_explore_fields_and_play_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p, app_page(p, server, height=1100) as page:
        expect(page.get_by_role("button", name="Train the default toy model")).to_be_visible(timeout=60_000)
        nav(page, "Model")
        page.get_by_text("Draw your data (or pick a ready shape)").click()

        # the canvas: a stroke becomes points in the preview
        page.get_by_text("My drawing", exact=True).click()
        expect(page.get_by_text("The drawing makes 0 points")).to_be_visible(timeout=60_000)
        draw_stroke(page)
        expect(page.get_by_text("The drawing makes 0 points")).to_have_count(0, timeout=60_000)
        page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                               ".some(g => (g.layout.title || {}).text === 'Your data')", timeout=60_000)
        snap(page, ARTIFACTS / "browser_draw.png", 1600)

        # the gallery: two moons, the lower moon rare, trained with the tiny preset
        page.get_by_text("A ready shape", exact=True).click()
        expect(page.get_by_text("Share of the lower moon (the rare part)")).to_be_visible(timeout=60_000)
        page.get_by_label("Run name (optional)").last.fill("moons")
        page.get_by_role("button", name="Train on this").click()
        expect(page.get_by_text("Pre-trained model: moons")).to_be_visible(timeout=240_000)
        # the heatmap job that follows training reruns the pages while it runs: let it end
        expect(page.get_by_text("log-density of the pre-trained model").first).to_be_visible(timeout=240_000)

        nav(page, "Explore")
        page.get_by_role("button", name="Run next round").click(timeout=30_000)
        expect(page.get_by_text("Round 1 (change from round 0)")).to_be_visible(timeout=240_000)

        nav(page, "Fields")
        expect(page.get_by_text("reward gradient of round 1").first).to_be_visible(timeout=120_000)
        expect(page.get_by_text("From noise to data").first).to_be_visible(timeout=60_000)
        snap(page, ARTIFACTS / "browser_fields.png", 2200)

        nav(page, "Rounds")
        play_every_round(page, 2)
        assert not page.get_by_text("Traceback").count()
        assert not page.locator('[data-testid="stException"]').count()
