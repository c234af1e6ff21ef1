"""The Images page's services (smeme.services.image_runs) and the page driven by AppTest
(conftest.py's `cache`): Stable Diffusion models are chosen from the server's list, names
stay in the cache."""
from __future__ import annotations

import json
import shutil

import pytest

from apptest_helpers import app
from smeme.services import image_runs, jobs


def test_class_shares_table_is_in_percent_per_shown_round():
    shares = [0.5, 0.25, 0.125, 0.125, 0, 0, 0, 0, 0, 0]
    metrics = {0: {"class_shares": [0.1] * 10}, 1: {"rare_share": 0.2}, 2: {"class_shares": shares}}
    table = image_runs.class_shares_table(metrics, [0, 1, 2])
    assert list(table.columns) == ["round 0", "round 2"]  # round 1 saved no shares
    assert list(table.index) == [str(d) for d in range(10)]
    assert table["round 0"].tolist() == pytest.approx([10.0] * 10)
    assert table["round 2"].tolist() == pytest.approx([50.0, 25.0, 12.5, 12.5, 0, 0, 0, 0, 0, 0])
    assert image_runs.class_shares_table(metrics, [1]) is None
    assert image_runs.class_shares_table(metrics, [0]).shape == (10, 1)  # only the shown rounds


def test_metrics_not_computed_names_the_first_round_that_lacked_weights():
    assert image_runs.metrics_not_computed({0: {"fid": 1.0}, 1: {}}) is None
    lacking = ["Inception-v3 weights are missing."]
    assert image_runs.metrics_not_computed({0: {"fid": 1.0}, 1: {"missing_weights": lacking}}) == lacking


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    pytest.importorskip("diffusers")
    from test_sd import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("models_src") / "tiny-sd")


def test_sd_models_are_chosen_from_the_configured_roots_and_names_stay_in_the_cache(cache, tiny_pipeline,
                                                                                    tmp_path, monkeypatch):
    from smeme.images.sd import SDError
    from smeme.services import image_runs

    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(tiny_pipeline, models / "tiny-sd")
    (models / "not-a-pipeline").mkdir()
    monkeypatch.setenv("SMEME_MODELS_DIR", str(models))
    at = app(cache["toy"]).run()
    at.switch_page("pages/4_Images.py").run()
    at.radio(key="img_kind").set_value("Stable Diffusion (local folder)").run()
    assert not at.exception
    # no box takes a server path: the model is picked from what the server lists
    assert "img_sd_src" not in {t.key for t in at.text_input}
    assert at.selectbox(key="img_sd_src").options == ["tiny-sd (models folder)"]  # not-a-pipeline is left out
    # a hostile run name becomes one folder inside cache/sd_runs
    at.text_input(key="img_sd_name").set_value("../../escaped")
    at.number_input(key="img_sd_more").set_value(1)
    at.button(key="img_sd_start").click().run()
    assert not at.exception, at.exception
    job = jobs.get(image_runs.sd_runs_dir() / "escaped", "explore")
    assert job is not None
    job.stop()
    assert job.wait(120)
    assert (image_runs.sd_runs_dir() / "escaped" / "config.json").is_file()
    assert not (cache["root"].parent / "escaped").exists() and not (cache["root"] / "escaped").exists()
    config = json.loads((image_runs.sd_runs_dir() / "escaped" / "config.json").read_text())
    assert config["model"]["source"] == str((models / "tiny-sd").resolve())
    # the service refuses a source it did not offer (a crafted request), before writing anything
    with pytest.raises(SDError, match="Choose a Stable Diffusion model from the list"):
        image_runs.start_sd_rounds("probe", "/etc", "a prompt.", 1)
    assert not (image_runs.sd_runs_dir() / "probe").exists()
    for name, folder in (("../x", "x"), ("/abs/path", "abs-path"), ("..", "sd-run"), (".hidden", "hidden")):
        assert image_runs.sd_run_folder(name) == image_runs.sd_runs_dir() / folder


def test_sd_models_include_the_local_hugging_face_cache(cache, tiny_pipeline, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from smeme.services import image_runs

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    shutil.copytree(tiny_pipeline, repo / "snapshots" / "abc123")
    (hub / "models--org--half" / "refs").mkdir(parents=True)  # a ref without its snapshot: not offered
    (hub / "models--org--half" / "refs" / "main").write_text("nope")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("SMEME_MODELS_DIR", str(tmp_path / "no-models-here"))
    assert image_runs.sd_models() == [("org/tiny-sd (Hugging Face cache)", "org/tiny-sd")]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    at = app(cache["toy"]).run()
    at.switch_page("pages/4_Images.py").run()
    at.radio(key="img_kind").set_value("Stable Diffusion (local folder)").run()
    assert not at.exception
    assert any("No Stable Diffusion pipeline on this server" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "img_sd_start"]
