"""App benchmarks in a real headless Chromium (Debian's /usr/bin/chromium).

1. Cold start: from launching `streamlit run app.py` on an EMPTY cache to the trained
   default toy model on screen (click "Train the default toy model" on Home, wait for
   "Model ready"). Target <= 60 s on the 2-core machine. Reported with its parts: server
   up, first page drawn, training job (from the click to the model on screen).
2. Page switches with cached results: after every page was visited once (so samples and
   heatmaps are cached on disk and in memory), click through the sidebar navigation and
   time each switch until the page has finished drawing (Streamlit's running indicator
   gone and the page's last figure visible). Target <= 1 s.

Usage: SMEME_THREADS=1 python bench/bench_app.py [--preset tiny] [--rounds 1] [--repeats 3] [--json out.json]
Default preset: the app's real default (the 'toy' preset). --rounds N runs N default
S-MEME rounds before the page-switch timings so that Compare has two rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_browser import CHROMIUM, free_port, launch_browser, start_server, stop_server, wait_healthy  # noqa: E402


def wait_drawn(page, ready_text: str, n_plots: int, timeout_ms: int = 120_000) -> None:
    """Until the page has finished drawing: its marker text is shown, no element is still a
    loading skeleton, and at least `n_plots` Plotly figures are rendered (visible)."""
    page.wait_for_function(
        """([text, n]) => {
            if (document.querySelector('[data-testid="stSkeleton"]')) return false;
            const main = document.querySelector('[data-testid="stMain"]');
            if (!main || !main.innerText.includes(text)) return false;
            const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(e => e.offsetParent !== null);
            return plots.length >= n;
        }""", arg=[ready_text, n_plots], timeout=timeout_ms, polling=20)


def switch(page, title: str, ready_text: str, n_plots: int) -> float:
    t0 = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    wait_drawn(page, ready_text, n_plots)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="SMEME_APP_PRESET for the app (default: the real defaults)")
    ap.add_argument("--rounds", type=int, default=1, help="S-MEME rounds to run before timing page switches")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is absent: apt-get install -y chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import expect, sync_playwright

    out: dict = {"preset": args.preset or "default"}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {"SMEME_APP_PRESET": args.preset} if args.preset else {}
        t_launch = time.perf_counter()
        proc = start_server(Path(tmp) / "cache", port, env)
        try:
            wait_healthy(port, proc, timeout=120)
            out["server_up_s"] = time.perf_counter() - t_launch
            with sync_playwright() as p:
                browser = launch_browser(p)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}")
                button = page.get_by_role("button", name="Train the default toy model")
                button.wait_for(state="visible", timeout=120_000)
                out["first_page_s"] = time.perf_counter() - t_launch
                t_click = time.perf_counter()
                button.click()
                expect(page.get_by_text("Model ready: toy-default")).to_be_visible(timeout=600_000)
                page.locator(".js-plotly-plot").first.wait_for(state="visible")
                t_ready = time.perf_counter()
                out["click_to_model_s"] = t_ready - t_click
                out["launch_to_model_on_screen_s"] = t_ready - t_launch
                try:  # where the job's time went (the run's own records)
                    m0 = json.loads((Path(tmp) / "cache" / "runs" / "toy-default" / "metrics.json").read_text())["rounds"]["0"]
                    out["training_s"] = m0["train"]["seconds"]
                    out["round0_metrics_s"] = m0.get("seconds")
                    out["train_steps"] = m0["train"]["steps"]
                    print(f"  of which: {out['train_steps']} training steps {out['training_s']:.1f} s, "
                          f"round-0 metrics {out['round0_metrics_s']:.1f} s", flush=True)
                except (OSError, KeyError, ValueError):
                    pass
                print(f"cold start: server up {out['server_up_s']:.1f} s, first page {out['first_page_s']:.1f} s, "
                      f"click -> trained model on screen {out['click_to_model_s']:.1f} s; "
                      f"total {out['launch_to_model_on_screen_s']:.1f} s (target <= 60 s)", flush=True)

                # warm every page once (heatmaps and samples get cached), with rounds for Compare
                if args.rounds:
                    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Explore", exact=True).click()
                    t0 = time.perf_counter()
                    if args.rounds == 1:
                        page.get_by_role("button", name="Run next round").click()
                    else:
                        page.get_by_label("K (rounds)").fill(str(args.rounds))
                        page.get_by_role("button", name=f"Run {args.rounds} rounds").click()
                    expect(page.get_by_text(f"Round {args.rounds} (change from round {args.rounds - 1})")).to_be_visible(
                        timeout=600_000)
                    out["rounds_s"] = time.perf_counter() - t0
                    print(f"{args.rounds} default round(s) from the Explore page: {out['rounds_s']:.1f} s", flush=True)
                # (page, text it shows once drawn, Plotly figures it shows with cached results)
                pages = [("Model", "log-density of the pre-trained model", 2), ("Explore", "Metrics per round", 2),
                         ("Compare", "difference (round", 4 if args.rounds else 3), ("Home", "Runs on disk", 1)]
                for title, ready, _ in pages:  # warm-up visit (computes and caches heatmaps)
                    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
                    page.get_by_text(ready).first.wait_for(state="visible", timeout=600_000)
                times: dict[str, list[float]] = {t: [] for t, _, _ in pages}
                for _ in range(args.repeats):
                    for title, ready, n in pages:
                        times[title].append(switch(page, title, ready, n))
                out["page_switch_s"] = {t: {"median": statistics.median(v), "max": max(v)} for t, v in times.items()}
                for t, v in times.items():
                    print(f"switch to {t:8s}: median {statistics.median(v):.2f} s, max {max(v):.2f} s "
                          f"over {len(v)} (target <= 1 s)", flush=True)
                browser.close()
        finally:
            stop_server(proc)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
