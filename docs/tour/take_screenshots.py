"""Take the README tour's screenshots (docs/tour/*.png) against a real `streamlit run app.py`.

    python docs/tour/take_screenshots.py CACHE_DIR [--budget N] [--tiny] [--only 6_draw.png,7_fields.png]

Prepares the demo into CACHE_DIR (the Home page's "Prepare the demo": the toy and triangles
models, 3 rounds each; runs already there are kept) and a budget sweep on the toy, starts the
app on that cache, and saves one screenshot per stop of the tour with headless Chromium
(/usr/bin/chromium), each reduced to a 256-colour PNG (well under 300 KB). `--only` takes
the named shots alone (the budget sweep is run only for 5_budget.png).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


SHOTS = ("1_home.png", "2_explore.png", "3_rounds_toy.png", "4_rounds_triangles.png", "5_budget.png",
         "6_draw.png", "7_fields.png")


def prepare(cache: Path, tiny: bool, budget: int, shots=SHOTS) -> None:
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
    if "5_budget.png" not in shots:
        jobs.wait_all(600)
        return
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


def shoot(cache: Path, tiny: bool, budget: int, shots=SHOTS) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_helpers import PLAYER, free_port, launch_browser, nav, start_server, stop_server, wait_healthy

    def player_ready(page, frames: int) -> None:
        page.wait_for_function(f"() => {{ const g = {PLAYER}; return g && g._transitionData._frames.length === {frames}; }}",
                               timeout=120_000)

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
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=120_000)  # no rerun in progress (a page mid-run is greyed)
                page.wait_for_timeout(2500)
                page.screenshot(path=str(OUT / name))
                shrink(OUT / name)
                print(f"{name}: {(OUT / name).stat().st_size // 1024} KB", flush=True)

            page.goto(f"http://127.0.0.1:{port}/?run=toy-default")
            expect(page.get_by_text("The demo is ready")).to_be_visible(timeout=120_000)
            expect(page.get_by_role("button", name="Open triangles-demo (3 rounds)")).to_be_visible(timeout=60_000)
            if "1_home.png" in shots:
                snap("1_home.png", 1300)
            if "2_explore.png" in shots:
                nav(page, "Explore")
                expect(page.get_by_text("Metrics per round").first).to_be_visible(timeout=120_000)
                snap("2_explore.png", 1500)
            if "3_rounds_toy.png" in shots:
                nav(page, "Rounds")
                player_ready(page, 4)
                snap("3_rounds_toy.png", 1200)
            if "7_fields.png" in shots:
                nav(page, "Fields")
                expect(page.get_by_text("reward gradient of round 3").first).to_be_visible(timeout=240_000)
                page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                       ".filter(g => g.data && g.data.length).length >= 2", timeout=240_000)
                snap("7_fields.png", 2000)
            if "6_draw.png" in shots:
                nav(page, "Model")
                page.get_by_text("Draw your data (or pick a ready shape)").click()
                expect(page.get_by_text("Share of the lower moon (the rare part)")).to_be_visible(timeout=60_000)
                page.get_by_role("slider", name="Share of the lower moon (the rare part)").focus()
                for _ in range(40):  # from an even 50% to 10%
                    page.keyboard.press("ArrowLeft")
                expect(page.get_by_text("0.10").first).to_be_visible(timeout=60_000)
                page.get_by_text("Draw your data (or pick a ready shape)").scroll_into_view_if_needed()
                snap("6_draw.png", 1100)
            if "5_budget.png" in shots:
                nav(page, "Budget")
                box = page.get_by_label("Budget N (solver iterations in all)")
                box.fill(str(budget))
                box.press("Enter")
                expect(page.get_by_text("One budget of solver iterations").first).to_be_visible(timeout=120_000)
                snap("5_budget.png", 1100)
            if "4_rounds_triangles.png" in shots:
                page.goto(f"http://127.0.0.1:{port}/?run=triangles-demo")
                nav(page, "Rounds")
                player_ready(page, 4)
                expect(page.get_by_text("Side type").first).to_be_visible(timeout=120_000)
                snap("4_rounds_triangles.png", 1200)
            browser.close()
    finally:
        stop_server(proc)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--budget", type=int, default=24, help="solver iterations in all for the budget sweep")
    ap.add_argument("--tiny", action="store_true", help="tiny models (a quick check of this script)")
    ap.add_argument("--only", default=",".join(SHOTS), help="comma-separated shots to take (default: all)")
    args = ap.parse_args()
    shots = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(shots) - set(SHOTS))
    if unknown:
        raise SystemExit(f"Unknown shot(s) {', '.join(unknown)}; choose from {', '.join(SHOTS)}.")
    prepare(args.cache.resolve(), args.tiny, args.budget, shots)
    shoot(args.cache.resolve(), args.tiny, args.budget, shots)
