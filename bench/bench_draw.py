"""Draw your data, then look at it: how long a class waits.

1. Draw-to-trained: a gallery shape (two moons, 2,000 points, the lower moon 10%) handed to
   `services.draw.train_on_points` at the default CSV training budget, until the training
   job has ended (model trained, round 0 measured, samples drawn for display).
2. S-MEME rounds on it (`--rounds`, default settings), then page loads in headless Chromium
   (/usr/bin/chromium): the Rounds page (the player, one frame per round) and the Fields
   page (arrows and paths), first visit (computed) and later visits (cached), each timed
   from the click in the sidebar until the page's figures are drawn.

Usage: SMEME_THREADS=1 python bench/bench_draw.py [--rounds 2] [--repeats 3] [--cache DIR]
With --cache DIR already holding the explored run (a second call), only the page loads are timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from record import Recording  # noqa: E402  (bench/ is this script's folder)


def draw_to_trained(name: str) -> tuple[float, Path]:
    from smeme.services import draw, jobs
    pts, _ = draw.gallery_points("two moons", 2000, 0.1, 0.06)
    t0 = time.perf_counter()
    folder = draw.train_on_points(pts, name)
    job = jobs.get(folder, "train")
    job.wait(3600)
    assert job.status == jobs.DONE, job.error
    return time.perf_counter() - t0, folder


def explore(folder: Path, rounds: int) -> float:
    from smeme.services import jobs, launch, runs, settings
    t0 = time.perf_counter()
    job = launch.start_rounds(folder, rounds, settings.explore_defaults(runs.open_run(folder)))
    job.wait(3600)
    assert job.status == jobs.DONE, job.error
    jobs.wait_all(3600)  # the heatmaps the rounds queue
    return time.perf_counter() - t0


def page_loads(cache: Path, run: str, rounds: int, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    from browser_helpers import PLAYER, free_port, launch_browser, nav, start_server, stop_server, wait_healthy
    port = free_port()
    proc = start_server(cache, port)
    out: dict[str, list[float]] = {"Rounds": [], "Fields": []}
    ready = {"Rounds": f"() => {{ const g = {PLAYER}; return g && g._transitionData._frames.length === {rounds + 1}; }}",
             "Fields": "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                       ".filter(g => g.data && g.data.length).length >= 2"}
    try:
        wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/?run={run}")
            page.wait_for_selector("text=S-MEME", timeout=120_000)
            for i in range(repeats + 1):
                for name in ("Rounds", "Fields"):
                    page.wait_for_timeout(1500)
                    t0 = time.perf_counter()
                    nav(page, name)
                    page.wait_for_function(ready[name], timeout=300_000)
                    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                           timeout=300_000)
                    out[name].append(time.perf_counter() - t0)
                    nav(page, "Home")
            browser.close()
    finally:
        stop_server(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench_draw_"))
    os.environ["SMEME_CACHE_DIR"] = str(cache)
    from smeme.services import settings
    print(f"cache: {cache}; load: {os.getloadavg()}", flush=True)
    from smeme.services import runs
    folder = settings.runs_dir() / "moons-bench"
    if folder.exists() and len(runs.open_run(folder).rounds()) == args.rounds + 1:
        print("the cache holds the trained and explored run: page loads only", flush=True)
    else:
        with Recording("draw_to_trained", capability="Draw to trained") as rec:
            train_s, folder = draw_to_trained("moons-bench")
            steps = settings.training_defaults("csv")["steps"]
            print(f"draw-to-trained: {train_s:.1f} s (2,000 points, default CSV budget, preset steps {steps})", flush=True)
            rec.row(f"two moons (2,000 points, lower moon 10%) through draw.train_on_points at the default CSV budget "
                    f"({steps} steps), until the model is on disk with round 0 measured", f"{train_s:.0f} s", seconds=train_s)
            rounds_s = explore(folder, args.rounds)
            print(f"{args.rounds} default rounds and their heatmaps: {rounds_s:.1f} s", flush=True)
            rec.row(f"then {args.rounds} default rounds and their heatmaps", f"{rounds_s:.0f} s", seconds=rounds_s)
    with Recording("app_pages_draw", capability="App page loads") as rec:
        loads = page_loads(cache, folder.name, args.rounds, args.repeats)
        for name, times in loads.items():
            later = times[1:]
            print(f"{name}: first visit {times[0]:.2f} s; later visits median {statistics.median(later):.2f} s "
                  f"({', '.join(f'{t:.2f}' for t in later)})", flush=True)
            rec.row(f"{name}: first visit after the server starts / later visits (median of {len(later)})",
                    f"{times[0]:.2f} s / {statistics.median(later):.2f} s", "<= 1 s for a revisit (issue 4's page-switch bar)",
                    met=statistics.median(later) <= 1.0, first_s=times[0], later_s=statistics.median(later))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
