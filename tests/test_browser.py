"""End to end in a real headless Chromium: train a tiny toy model, run one round, compare,
step through the rounds.

Starts `streamlit run app.py` on 127.0.0.1 with an empty cache (SMEME_CACHE_DIR=tmp) and
the tiny preset (SMEME_APP_PRESET=tiny); drives it with Playwright; saves screenshots to
artifacts/ (git-ignored). Needs Debian's chromium at /usr/bin/chromium (CI installs it).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache_dir, port: int, extra_env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, SMEME_CACHE_DIR=str(cache_dir), SMEME_THREADS=os.environ.get("SMEME_THREADS", "1"),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **(extra_env or {}))
    log = open(Path(cache_dir).parent / f"streamlit-{port}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("streamlit did not become healthy")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def launch_browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def snap(page, path: Path, height: int = 2600) -> None:
    """Screenshot the whole app at 1280 px wide (Streamlit scrolls inside its own container,
    so a full-page shot needs a tall viewport)."""
    page.set_viewport_size({"width": 1280, "height": height})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1280, "height": 900})


def nav(page, title: str) -> None:
    """Click a page in the sidebar navigation."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()


PLAYER = "Array.from(document.querySelectorAll('.js-plotly-plot')).find(g => (g._transitionData || {})._frames && g._transitionData._frames.length && g.layout.sliders)"


def play_every_round(page, rounds: int) -> None:
    """On the Rounds page: the player figure holds one frame per round, and Play (in the
    browser, no server round trip) shows each of them in order."""
    page.wait_for_function(f"() => {{ const g = {PLAYER}; return g && g._transitionData._frames.length === {rounds}; }}",
                           timeout=120_000)
    page.evaluate(f"() => {{ const g = {PLAYER}; window._shown = []; "
                  "g.on('plotly_animatingframe', e => window._shown.push(e.name)); }")
    page.locator(".updatemenu-button").filter(has_text="Play").first.click()
    want = [str(k) for k in range(rounds)]
    page.wait_for_function(f"() => JSON.stringify(window._shown) === '{json.dumps(want, separators=(',', ':'))}'", timeout=60_000)


def damaged_run(folder: Path) -> None:
    """A tiny toy run whose metrics.json is damaged: the app must list it and work on."""
    from smeme.pipeline import pretrain_run

    pretrain_run(folder, "toy", n=256, steps=20, preset="tiny")
    (folder / "metrics.json").write_text('{"rounds": ')


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    port = free_port()
    damaged_run(tmp_path / "cache" / "runs" / "broken-run")
    proc = start_server(tmp_path / "cache", port, {"SMEME_APP_PRESET": "tiny"})
    try:
        wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def test_train_explore_compare_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
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
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
