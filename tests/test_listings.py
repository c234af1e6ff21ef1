"""Listings of cache/runs survive damaged entries (issue 21): an entry that cannot be stat-ed
(a dangling link, a temp folder removed between the listing and the stat) or read is one
damaged or skipped entry, never an exception for the page that lists."""
import json
import os
import shutil
from pathlib import Path

import pytest

from smeme import cli
from smeme.services import image_runs, runs

PRETRAIN = ["pretrain", "--dataset", "toy", "--preset", "tiny", "--n", "1000", "--steps", "30", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listings") / "toy"
    assert cli.main([*PRETRAIN, "--run", str(folder)]) == 0
    return folder


@pytest.fixture
def cache(trained, tmp_path, monkeypatch):
    """A cache whose runs/ holds one good toy run ('good') and one 'digits' config."""
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    base = tmp_path / "runs"
    shutil.copytree(trained, base / "good")
    digits = base / "digits-run"
    digits.mkdir()
    (digits / "config.json").write_text(json.dumps({"dataset": {"name": "digits"}}))
    return base


def listed(base):
    return {row["name"]: row for row in runs.list_runs()}


def test_a_dangling_link_is_skipped_by_every_listing(cache):
    os.symlink(cache / "no-such-folder", cache / "dangling")
    os.symlink(cache / "loop", cache / "loop")  # stat fails with ELOOP
    rows = listed(cache)
    assert set(rows) == {"good", "digits-run"}  # the links are skipped, the bare digits config is damaged
    assert rows["good"]["latest"] == 0 and rows["good"]["damaged"] is None and rows["digits-run"]["damaged"]
    assert runs.pick_default_run() == str((cache / "good").resolve())
    assert image_runs.digits_runs() == [cache / "digits-run"]


def test_a_folder_removed_between_listing_and_stat_is_skipped(cache, monkeypatch):
    gone = cache / ".good.new-abc123"  # a --force's temp folder, removed by the time it is stat-ed
    gone.mkdir()
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self.name == gone.name:
            shutil.rmtree(gone, ignore_errors=True)
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    assert set(listed(cache)) == {"good", "digits-run"}
    gone.mkdir()
    assert image_runs.digits_runs() == [cache / "digits-run"]


def test_a_run_that_fails_while_its_row_is_built_is_one_damaged_entry(cache, monkeypatch):
    shutil.copytree(cache / "good", cache / "other")

    def busy(folder):
        if Path(folder).name == "other":
            raise PermissionError(13, "Permission denied", str(folder))
        return None

    monkeypatch.setattr(runs.jobs, "busy", busy)
    rows = listed(cache)
    assert rows["good"]["damaged"] is None and rows["good"]["latest"] == 0
    assert rows["other"]["latest"] is None and "Permission denied" in rows["other"]["damaged"]


def test_unreadable_config_files_are_skipped_by_the_image_listings(cache, monkeypatch):
    (cache / "deep").mkdir()
    (cache / "deep" / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json
    (cache / "binary").mkdir()
    (cache / "binary" / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    assert image_runs.digits_runs() == [cache / "digits-run"]
    sd = cache.parent / "sd_runs"
    sd.mkdir()
    (sd / "deep").mkdir()
    (sd / "deep" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    os.symlink(sd / "nowhere", sd / "dangling")
    assert image_runs.sd_runs() == []
    rows = listed(cache)
    assert rows["good"]["latest"] == 0 and "deep" in rows and rows["deep"]["damaged"]
