"""Shared helpers of the AppTest files (tests/test_app_*.py): the app under AppTest, its
figures and metrics as data, a job held open, jobs settled before a rerun, and the tiny runs
of the Fields and Rounds views (`tiny_cache`, `csv_run`). The cache fixtures most files use
(`built_cache`, `cache`) are in conftest.py."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from smeme.services import jobs

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60
SLOW_TIMEOUT = 90  # seconds a script run may take on the Fields and Rounds views (many figures)
JOBS_TIMEOUT = 900  # seconds background jobs may take (a hang, not a pace: speed is measured in bench/)


@contextlib.contextmanager
def tiny_app_env(root):
    """SMEME_CACHE_DIR = root and the app's tiny preset while inside; the old values after,
    once the jobs started inside have settled."""
    old = {k: os.environ.get(k) for k in ("SMEME_CACHE_DIR", "SMEME_APP_PRESET")}
    os.environ["SMEME_CACHE_DIR"], os.environ["SMEME_APP_PRESET"] = str(root), "tiny"
    try:
        yield
    finally:
        jobs.wait_all(60)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def held_job(folder, kind, progress=None, **start):
    """A job of `kind` on `folder` that runs until it is stopped or the block ends (after a
    (fraction, text) `progress` update, if given); leaving the block releases it and waits."""
    release = threading.Event()

    def target(job):
        if progress is not None:
            job.update(*progress)
        deadline = time.monotonic() + 30
        while not (release.is_set() or job.cancel.is_set()) and time.monotonic() < deadline:
            release.wait(0.05)

    job = jobs.start(folder, kind, target, **start)
    try:
        yield job
    finally:
        release.set()
        job.wait(10)


def app(run: str | None = None, timeout: float = TIMEOUT):
    """The app under AppTest, not yet run, with `run` as the current run."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=timeout)
    if run:
        at.session_state["run"] = run
    return at


def opened(run: str | None = None, page: str | None = None):
    """The app run once with `run` current, then switched to `page`; no exception on either."""
    at = app(run, SLOW_TIMEOUT)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def figs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def fig_with(at, text: str) -> dict:
    """The first figure whose layout mentions `text`."""
    return [f for f in figs(at) if text in json.dumps(f["layout"])][0]


def arr(v) -> list:
    """A Plotly array from a chart spec, flat (plotly 6+ ships numbers as base64 'bdata')."""
    import base64

    import numpy as np
    if isinstance(v, dict) and "bdata" in v:  # flat, whatever its shape
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(np.ravel(np.asarray(v, dtype=object))) if v is not None else []


def fig_text(at) -> str:
    return json.dumps(figs(at), ensure_ascii=False)


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def picker(at):
    """The value the sidebar's run picker shows."""
    return [s for s in at.selectbox if str(s.key).startswith("_sidebar_run_")][0].value


def settle(at, page: str | None = None):
    """Let background jobs finish, then rerun so their results are drawn."""
    assert jobs.wait_all(JOBS_TIMEOUT)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


PAGES = ("pages/1_Model.py", "pages/2_Explore.py", "pages/3_Compare.py", "pages/4_Images.py")


def every_page_works(at):
    """Home and every page render without an exception."""
    at.run()
    assert not at.exception, at.exception
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
    return at


def warnings_text(at) -> str:
    return " ".join(w.value for w in at.warning)


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


CSV = b"x,y\n" + b"".join(f"{i % 7},{(i * 3) % 11}\n".encode() for i in range(300))


@contextlib.contextmanager
def tiny_cache(root: Path, datasets=("toy", "triangles")):
    """Yields {'root', 'toy', 'tri'} (resolved run folders) with SMEME_CACHE_DIR set to root: a
    tiny toy run with 2 explored rounds and a tiny triangles run with 1, heatmaps computed."""
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.pipeline import pretrain_run
    from smeme.services import launch, runs, settings
    out = {"root": root}
    with tiny_app_env(root):
        for name, key, rounds, n in (("toy", "toy", 2, 2000), ("triangles", "tri", 1, 1024)):
            if name not in datasets:
                continue
            folder = settings.runs_dir() / key
            pretrain_run(folder, name, n=n, preset="tiny")
            run = runs.open_run(folder)
            run_rounds(run, rounds, ExploreConfig(**settings.explore_defaults(run)))
            launch.start_heatmaps(folder, runs.open_run(folder).rounds())
            assert jobs.wait_all(240)
            out[key] = str(folder.resolve())
        yield out


def csv_run(root: Path, rows: int = 400, steps: int = 20, name: str = "csv3") -> str:
    """A tiny 3-column CSV run (round 0 only) in the current cache."""
    import numpy as np

    from smeme.pipeline import pretrain_run
    from smeme.services import settings
    rng = np.random.default_rng(0)
    table = root / "three.csv"
    table.write_text("height,weight,age\n" + "\n".join(",".join(f"{v:.3f}" for v in row)
                                                      for row in rng.normal(size=(rows, 3))))
    folder = settings.runs_dir() / name
    pretrain_run(folder, "csv", dataset_params={"path": str(table)}, preset="tiny", steps=steps)
    return str(folder.resolve())
