"""Shared helpers of the AppTest files (tests/test_app_*.py): the app under AppTest, its
figures and metrics as data, a job held open, and jobs settled before a rerun. The cache
fixtures they use (`built_cache`, `cache`) are in conftest.py."""
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


def app(run: str | None = None):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if run:
        at.session_state["run"] = run
    return at


def figs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def arr(v) -> list:
    """A Plotly array from a chart spec (plotly 6+ ships numbers as base64 'bdata')."""
    import base64

    import numpy as np
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def fig_text(at) -> str:
    return json.dumps(figs(at), ensure_ascii=False)


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def picker(at):
    """The value the sidebar's run picker shows."""
    return [s for s in at.selectbox if str(s.key).startswith("_sidebar_run_")][0].value


def settle(at, page: str | None = None):
    """Let background jobs finish, then rerun so their results are drawn."""
    assert jobs.wait_all(TIMEOUT)
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
