"""The ready digits model that ships with smeme (smeme/assets): checksummed, a few MB, imported
with one click on Images and by "Prepare the demo", and a run whose rounds start at once."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from apptest_helpers import app
from smeme.bundle import BundleError
from smeme.services import image_runs, jobs, runs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(empty_cache):
    return empty_cache


def test_the_ready_model_ships_checksummed_and_small():
    manifest = json.loads(image_runs.READY_MANIFEST.read_text())
    data = image_runs.READY_BUNDLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert len(data) == manifest["bytes"] < 8 << 20
    # measured, not typed: the pace the Images page quotes, and the model's quality
    assert manifest["train"]["cpu_seconds_per_step"] > 0 and manifest["round"]["cpu_seconds"] > 0
    assert 0.5 < manifest["train"]["valid_share"] <= 1
    # it is in the repository (a fresh clone has it) and in the package data
    tracked = subprocess.run(["git", "ls-files", "smeme/assets"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:  # a source tree without git (an sdist) has nothing to ask
        assert {"smeme/assets/digits-ready.zip", "smeme/assets/digits-ready.json"} <= set(tracked.stdout.split())
    assert 'smeme = ["assets/*.zip", "assets/*.json"]' in (ROOT / "pyproject.toml").read_text()


def test_one_click_on_images_imports_it_and_rounds_can_start(cache):
    at = app(timeout=120).run()
    at.switch_page("pages/4_Images.py").run()
    assert not at.exception
    assert any("use the ready one" in i.value for i in at.info)
    at.button(key="img_ready").click().run()
    assert not at.exception and not at.error
    folder = image_runs.ready_digits_folder()
    run = runs.open_run(folder)
    assert run.rounds() == [0] and run.config["dataset"]["name"] == "digits"
    assert at.selectbox(key="img_digits_pick").value == "digits-ready"
    assert "img_ready" not in [b.key for b in at.button]  # once imported, the offer is gone
    assert at.get("imgs") or at.get("image")  # the grid of round 0 is drawn
    captions = " ".join(c.value for c in at.caption)
    assert "s a round: measured on the ready model" in captions  # the round's time, from the measurement
    assert image_runs.import_ready_digits() == folder  # a second click keeps the run


def test_a_damaged_copy_is_refused_and_nothing_is_added(cache, tmp_path, monkeypatch):
    bad = tmp_path / "digits-ready.zip"
    data = bytearray(image_runs.READY_BUNDLE.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(image_runs, "READY_BUNDLE", bad)
    with pytest.raises(BundleError, match="does not match its checksum"):
        image_runs.import_ready_digits()
    assert not image_runs.ready_digits_folder().exists()
    monkeypatch.setattr(image_runs, "READY_MANIFEST", tmp_path / "missing.json")
    with pytest.raises(BundleError, match="has no ready digits model"):
        image_runs.import_ready_digits()


def test_prepare_the_demo_imports_it(cache, monkeypatch):
    from smeme.services import demo

    monkeypatch.setattr(demo, "_stages", lambda owner: [])  # the toy and triangles stages: test_app_home.py
    job = demo.start_demo()
    assert job.wait(120) and job.status == jobs.DONE, job.error
    assert runs.open_run(image_runs.ready_digits_folder()).rounds() == [0]
    shutil.rmtree(image_runs.ready_digits_folder())
