"""Take the README tour's screenshots (docs/tour/*.png) against a real `streamlit run app.py`.

    python docs/tour/take_screenshots.py CACHE_DIR [--budget N] [--tiny]

Prepares the demo into CACHE_DIR (the Home page's "Prepare the demo": the toy and triangles
models, 3 rounds each; runs already there are kept) and a budget sweep on the toy, starts the
app on that cache, and saves one screenshot per stop of the tour with headless Chromium
(/usr/bin/chromium), each reduced to a 256-colour PNG (well under 300 KB).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def prepare(cache: Path, tiny: bool, budget: int) -> None:
    os.environ["SMEME_CACHE_DIR"] = str(cache)
    if tiny:
        os.environ["SMEME_APP_PRESET"] = "tiny"
    from smeme.services import demo, jobs, runs, settings, sweeps
    if not demo.ready():
        job = demo.start_demo()
        while not job.wait(10):
            print(f"{job.fraction:5.0%}  {job.message}", flush=True)
        if job.status != jobs.DONE:
            raise SystemExit(f"The demo could not be prepared: {job.error or job.status}")
    toy = settings.runs_dir() / "toy-default"
    d = settings.explore_defaults(runs.open_run(toy))
    n = budget
    if len(sweeps.budget_rows(toy, n, [1, 2, 3, 4], d["lam"], d["seed"])) < 4:
        job = sweeps.start_budget(toy, n, [1, 2, 3, 4], d, force=True)
        while not job.wait(10):
            print(f"{job.fraction:5.0%}  {job.message}", flush=True)
    jobs.wait_all(600)


def shrink(path: Path) -> None:
    from PIL import Image
    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def shoot(cache: Path, tiny: bool, budget: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import free_port, launch_browser, nav, start_server, stop_server, wait_healthy

    port = free_port()
    proc = start_server(cache, port, {"SMEME_APP_PRESET": "tiny"} if tiny else {})
    try:
        wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def snap(name: str, height: int) -> None:
                page.set_viewport_size({"width": 1280, "height": height})
                page.wait_for_timeout(1500)
                # a resize redraws the page: wait until no element is still a placeholder
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')",
                                       timeout=60_000)
                page.wait_for_timeout(2500)
                page.screenshot(path=str(OUT / name))
                shrink(OUT / name)
                print(f"{name}: {(OUT / name).stat().st_size // 1024} KB", flush=True)

            page.goto(f"http://127.0.0.1:{port}/?run=toy-default")
            expect(page.get_by_text("The demo is ready")).to_be_visible(timeout=120_000)
            expect(page.get_by_role("button", name="Open triangles-demo (3 rounds)")).to_be_visible(timeout=60_000)
            snap("1_home.png", 1300)
            nav(page, "Explore")
            expect(page.get_by_text("Metrics per round").first).to_be_visible(timeout=120_000)
            snap("2_explore.png", 1500)
            nav(page, "Rounds")
            expect(page.get_by_text("log-density, round 3").first).to_be_visible(timeout=120_000)
            page.get_by_role("slider").first.focus()
            page.keyboard.press("ArrowLeft")
            expect(page.get_by_text("log-density, round 2").first).to_be_visible(timeout=60_000)
            snap("3_rounds_toy.png", 1100)
            nav(page, "Budget")
            box = page.get_by_label("Budget N (solver iterations in all)")
            box.fill(str(budget))
            box.press("Enter")
            expect(page.get_by_text("One budget of solver iterations").first).to_be_visible(timeout=120_000)
            snap("5_budget.png", 1100)
            page.goto(f"http://127.0.0.1:{port}/?run=triangles-demo")
            nav(page, "Rounds")
            expect(page.get_by_text("Side type, round 3").first).to_be_visible(timeout=120_000)
            snap("4_rounds_triangles.png", 1100)
            browser.close()
    finally:
        stop_server(proc)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--budget", type=int, default=24, help="solver iterations in all for the budget sweep")
    ap.add_argument("--tiny", action="store_true", help="tiny models (a quick check of this script)")
    args = ap.parse_args()
    prepare(args.cache.resolve(), args.tiny, args.budget)
    shoot(args.cache.resolve(), args.tiny, args.budget)
