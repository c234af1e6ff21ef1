"""Tiny runs for the AppTest files of the drawing, fields and play views (not a test module):
a toy run with 2 explored rounds and a triangles run with 1, heatmaps computed, in a cache
of their own (SMEME_CACHE_DIR), with the app's tiny preset."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 90


@contextmanager
def tiny_cache(root: Path, datasets=("toy", "triangles")):
    """Yields {'root', 'toy', 'tri'} (resolved run folders) with SMEME_CACHE_DIR set to root."""
    from apptest_helpers import tiny_app_env
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.pipeline import pretrain_run
    from smeme.services import jobs, launch, runs, settings
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


def app(run: str | None = None, page: str | None = None):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if run:
        at.session_state["run"] = run
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def figs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def fig_with(at, text: str) -> dict:
    return [f for f in figs(at) if text in json.dumps(f["layout"])][0]


def arr(v) -> list:
    """A Plotly array from a chart spec, flat (plotly 6+ ships numbers as base64 'bdata')."""
    import base64

    import numpy as np
    if isinstance(v, dict) and "bdata" in v:  # flat, whatever its shape
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(np.ravel(np.asarray(v, dtype=object))) if v is not None else []


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
