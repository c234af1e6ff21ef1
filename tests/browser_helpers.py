"""Helpers for the browser tests, the tour's screenshots and the app benchmarks: start
`streamlit run app.py` on 127.0.0.1 with a given cache, open it in Debian's headless
Chromium (Playwright, never `playwright install`), and the page steps they share."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


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


@contextmanager
def served_app(cache_dir, extra_env: dict | None = None):
    """The app served from `cache_dir` on a free local port, for the duration of the block: yields its URL."""
    port = free_port()
    proc = start_server(cache_dir, port, extra_env)
    try:
        wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


@contextmanager
def app_page(p, url: str, height: int = 900):
    """A Chromium page on `url` (1280 px wide), closed after the block, which must leave no
    JavaScript error on the page."""
    browser = launch_browser(p)
    page = browser.new_page(viewport={"width": 1280, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    try:
        yield page
    finally:
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def require_chromium() -> None:
    """Skip the calling test where Debian's chromium or Playwright is absent."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
