"""The Model page: the pre-trained model with its heatmap, training with chosen settings,
bad data sets explained, CSV uploads parsed once and kept under a quota.
Driven by AppTest on tiny models in a temporary cache (conftest.py's `cache`)."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from apptest_helpers import CSV, app, fig_text, figs, metrics, picker, settle
from smeme.services import jobs, runs, settings


def test_model_page_shows_the_pretrained_model_with_its_heatmap(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    assert not at.exception
    m = metrics(at)
    assert m["Data set"] == "toy" and "On support" in m and "Entropy (k-NN)" in m
    assert "training data" in fig_text(at) and "model samples" in fig_text(at)
    settle(at)  # the heatmap job
    spec = [f for f in figs(at) if any(t.get("type") == "heatmap" for t in f["data"])]
    assert spec and "log-density of the pre-trained model" in json.dumps(spec[0]["layout"])
    assert {b.label for b in at.get("download_button")} >= {"Download samples (CSV)", "Download metrics (JSON)"}
    # a revisit reads the cached heatmap: no new job
    before = jobs.get(cache["toy"], "heatmap")
    at.run()
    assert jobs.get(cache["toy"], "heatmap") is before
    assert any(any(t.get("type") == "heatmap" for t in f["data"]) for f in figs(at))


def test_model_page_trains_triangles_with_chosen_settings(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("triangles").run()
    at.slider(key="m_iso").set_value(0.1).run()
    at.number_input(key="m_steps").set_value(40)
    at.number_input(key="m_depth").set_value(2)
    at.text_input(key="m_name").set_value("tri-small")
    at.button(key="m_train").click().run()
    assert not at.exception
    folder = str((settings.runs_dir() / "tri-small").resolve())
    assert at.session_state["run"] == folder
    at.switch_page("app.py").run()  # (AppTest draws the sidebar with app.py, not with a page alone)
    assert picker(at) == folder  # while it trains, the picker shows the run the page acts on, not a blank
    at.switch_page("pages/1_Model.py").run()
    settle(at)
    run = runs.open_run(folder)
    assert run.config["dataset"]["name"] == "triangles"
    assert run.config["dataset"]["params"]["side_shares"]["isosceles"] == pytest.approx(0.1)
    assert run.config["train"]["steps"] == 40 and run.config["model"]["depth"] == 2
    assert metrics(at)["Data set"] == "triangles"
    assert "On support" in metrics(at)  # issue 24: one definition, split in the caption


def test_model_page_rejects_a_malformed_csv_without_breaking(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("csv").run()
    at.file_uploader(key="m_csv").set_value(("bad.csv", b"x,y\n1,2\nfoo,bar\n", "text/csv")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith("This file cannot be used:")
    assert at.button(key="m_train").disabled
    # the rest of the page still renders the current model
    assert metrics(at)["Data set"] == "toy"


def test_model_page_impossible_triangle_shares_are_explained(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("triangles").run()
    at.slider(key="m_right").set_value(0.3)
    at.slider(key="m_obtuse").set_value(0.8).run()
    assert any("more than 1" in e.value for e in at.error)
    assert at.button(key="m_train").disabled


def test_an_upload_is_parsed_once_per_content(cache, monkeypatch):
    calls = []
    real = settings.check_dataset
    monkeypatch.setattr(settings, "check_dataset", lambda d, p: calls.append(p) or real(d, p))
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("csv").run()
    at.file_uploader(key="m_csv").set_value(("points.csv", CSV, "text/csv")).run()
    assert not at.exception and not at.error
    at.number_input(key="m_seed").set_value(3).run()
    at.number_input(key="m_steps").set_value(40).run()
    assert len(calls) == 1, calls
    assert not at.button(key="m_train").disabled
    saved = list(settings.uploads_dir().glob("*.csv"))
    assert len(saved) == 1 and saved[0].read_bytes() == CSV


def test_uploads_have_a_quota_and_old_unused_ones_are_removed(cache, monkeypatch):
    up = settings.uploads_dir()
    first = settings.save_upload("a.csv", CSV)
    monkeypatch.setenv("SMEME_UPLOADS_MB", str(1.5 * len(CSV) / 2 ** 20))
    with pytest.raises(settings.UploadError, match=r"uploads folder is full .*SMEME_UPLOADS_MB"):
        settings.save_upload("b.csv", CSV + b"1,1\n")
    assert settings.save_upload("a.csv", CSV) == first  # the same content again: no new space needed
    # the page says it in one sentence
    at = app(cache["toy"]).run()
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="m_dataset").set_value("csv").run()
    at.file_uploader(key="m_csv").set_value(("c.csv", CSV + b"2,2\n", "text/csv")).run()
    assert not at.exception
    assert any("uploads folder is full" in e.value for e in at.error) and at.button(key="m_train").disabled
    # uploads older than a day that no run uses are removed; one a run was trained on is kept
    used = up / "used-0000.csv"
    used.write_bytes(b"x,y\n1,2\n")
    cfg_path = Path(cache["tri"]) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dataset"].setdefault("params", {})["path"] = str(used)
    cfg_path.write_text(json.dumps(cfg))
    day_ago = time.time() - 25 * 3600
    for p in up.glob("*.csv"):
        os.utime(p, (day_ago, day_ago))
    monkeypatch.delenv("SMEME_UPLOADS_MB")
    new = settings.save_upload("b.csv", CSV + b"1,1\n")
    assert sorted(p.name for p in up.glob("*.csv")) == sorted([new.name, used.name])
    with pytest.raises(settings.UploadError, match="at most 200 MB"):
        settings.save_upload("huge.csv", b"0" * (settings.UPLOAD_FILE_MB * 2 ** 20 + 1))


def test_identical_uploads_at_once_never_share_a_temp_file(cache):
    barrier = threading.Barrier(6)
    out, errors = [], []

    def save():
        barrier.wait()
        try:
            out.append(settings.save_upload("same.csv", CSV))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(out)) == 1 and out[0].read_bytes() == CSV
    assert [p.name for p in settings.uploads_dir().iterdir()] == [out[0].name]  # no temp file left
