"""The Streamlit app driven by AppTest: every page, widgets set, buttons clicked, the
rendered metrics and figures checked. Tiny models (SMEME_APP_PRESET=tiny) in a temporary
cache (SMEME_CACHE_DIR), so the real cache/ is never touched."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from smeme.services import cached, launch, runs, settings
from smeme.services import jobs

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60


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


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """Built once per module: a cache with a tiny toy run (2 rounds) and a tiny triangles run
    (1 round). Tests never use it directly: each gets its own copy (`cache`)."""
    old = {k: os.environ.get(k) for k in ("SMEME_CACHE_DIR", "SMEME_APP_PRESET")}
    root = tmp_path_factory.mktemp("appcache")
    os.environ["SMEME_CACHE_DIR"] = str(root)
    os.environ["SMEME_APP_PRESET"] = "tiny"
    from smeme.pipeline import pretrain_run
    toy = settings.runs_dir() / "toy-default"
    tri = settings.runs_dir() / "tri"
    pretrain_run(toy, "toy", n=2000, preset="tiny")
    pretrain_run(tri, "triangles", n=1024, preset="tiny")
    queued = {}
    for folder, k in ((toy, 2), (tri, 1)):
        job = launch.start_rounds(folder, k, settings.explore_defaults(runs.open_run(folder)))
        assert job.wait(120) and job.status == "done", job.error
        queued[folder.name] = (job, jobs.get(folder, "heatmap"))  # the heatmaps the rounds queued
    assert jobs.wait_all(240)
    yield root, queued
    jobs.wait_all(60)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cache(built_cache, tmp_path, monkeypatch):
    """This test's own copy of the built cache (tests add rounds, runs and damage to it)."""
    built, queued = built_cache
    root = tmp_path / "cache"
    shutil.copytree(built, root)
    monkeypatch.setenv("SMEME_CACHE_DIR", str(root))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    toy, tri = str((root / "runs" / "toy-default").resolve()), str((root / "runs" / "tri").resolve())
    yield {"root": root, "toy": toy, "tri": tri, "queued": {toy: queued["toy-default"], tri: queued["tri"]}}
    jobs.wait_all(60)


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


# ------------------------------------------------------------------------------ home

def test_home_offers_one_click_default_training_on_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    at = app().run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Train the default toy model", "Prepare the demo"]
    assert any("No trained model" in i.value for i in at.info)
    assert len(at.latex) >= 3  # the objective, the first variation, mirror descent
    at.button(key="train_default").click().run()
    assert not at.exception
    job = jobs.get(tmp_path / "runs" / "toy-default", "train")
    assert job is not None and job.kind == "train"
    settle(at)
    assert any("Model ready: toy-default" in s.value for s in at.success)
    assert metrics(at)["Data set"] == "toy"
    assert "model samples, round 0" in fig_text(at)
    assert at.session_state["run"] == str((tmp_path / "runs" / "toy-default").resolve())


def test_home_lists_runs_and_opens_one(cache):
    at = app().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["run"]) == {"toy-default", "tri"}
    assert dict(zip(table["run"], table["rounds"])) == {"toy-default": 2, "tri": 1}
    assert metrics(at)["Data set"] == "toy"  # the default run opens by itself
    at.selectbox(key="home_pick").set_value(cache["tri"])
    at.button(key="home_open").click().run()
    assert at.session_state["run"] == cache["tri"]
    assert metrics(at)["Data set"] == "triangles"
    assert metrics(at)["Rounds"] == "1"
    assert "u = a/c" in fig_text(at)


# ------------------------------------------------------------------------------ model

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


# ------------------------------------------------------------------------------ explore

def test_explore_runs_a_round_and_the_timeline_grows(cache):
    at = app(cache["tri"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    assert [b.label for b in at.button][:2] == ["Run next round", "Run 3 rounds"]
    assert "Stop" not in [b.label for b in at.button]  # nothing to stop
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    n_before = len(arr(tl["data"][0]["x"]))
    at.radio(key="x_solver").set_value("student-teacher")
    at.slider(key="x_lam").set_value(0.2)
    at.number_input(key="x_iters").set_value(2)
    at.button(key="x_one").click().run()
    assert not at.exception
    settle(at)
    run = runs.open_run(cache["tri"])
    assert run.rounds() == [0, 1, 2]
    m = run.metrics()[2]
    assert m.get("solver") == "student-teacher" and m.get("lam") == pytest.approx(0.2)
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    assert arr(tl["data"][0]["x"]) == list(range(n_before + 1))
    assert "Entropy (k-NN)" in metrics(at) and "Not a triangle" in metrics(at)  # issue 24: tiles add up
    assert any("Round 2" in md.value for md in at.markdown)
    assert "round 1" in fig_text(at) and "round 2" in fig_text(at)  # newest beside previous


def test_explore_timeline_shows_what_a_perfect_solver_reaches(cache):
    from smeme.tilt import summarise_rounds

    job = launch.start_heatmaps(cache["toy"], [0])  # the exact rounds start from round 0's heatmap
    assert job is None or (job.wait(120) and job.status == "done"), job and job.error
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    assert not at.exception
    tl = [f for f in figs(at) if "Metrics per round" in json.dumps(f["layout"])][0]
    assert sum(t["name"] == "perfect solver" for t in tl["data"]) == 3, [t["name"] for t in tl["data"]]
    run = runs.open_run(cache["toy"])
    m = run.metrics()
    hm = cached.heatmap_cached(run, 0)
    truth = summarise_rounds(run, hm["xs"], hm["ys"], hm["logp"], [m[k]["lam"] for k in (1, 2)],
                             [0.0, 0.0])  # "perfect solver" is the paper's target, whichever reward the rounds used
    sparse = [t for t in tl["data"] if t["name"] == "perfect solver" and t.get("yaxis") == "y4"]  # 4th panel
    assert sparse and np.allclose(arr(sparse[0]["y"]), [r["shares"]["region"]["sparse"] for r in truth])
    assert arr(sparse[0]["x"]) == sorted(m)
    entropy = [t for t in tl["data"] if t["name"] == "perfect solver" and t.get("yaxis") in (None, "y")]  # 1st panel
    gains = [r["entropy"] - truth[0]["entropy"] for r in truth]
    assert entropy and np.allclose(arr(entropy[0]["y"]), [m[0]["entropy_knn"] + g for g in gains])


def test_explore_second_tab_gets_a_clear_busy_message(cache, monkeypatch):
    with held_job(cache["toy"], "explore", (0.25, "Round 3 of 5: solver iteration 1/4"),
                  label="S-MEME rounds (3)") as job:
        at = app(cache["toy"]).run()
        at.switch_page("pages/2_Explore.py").run()
        assert not at.exception
        assert at.button(key="x_one").disabled and at.button(key="x_k_btn").disabled
        bars = [(p.value, p.text) for p in at.get("progress")]  # the other tab's job, live
        assert any(v == 25 and t.startswith("Round 3 of 5: solver iteration 1/4") for v, t in bars), bars
        assert [b.label for b in at.button].count("Stop") == 0  # not this session's job (issue 21)
        # the run's writes are refused in another tab (registry) ...
        with pytest.raises(jobs.JobBusy, match="busy"):
            launch.start_rounds(cache["toy"], 1, settings.explore_defaults())
        # ... and with the single-user switch, Stop in this tab stops the other tab's job
        monkeypatch.setenv("SMEME_SINGLE_USER", "1")
        at.run()
        assert [b.label for b in at.button].count("Stop") == 1  # one Stop while rounds run
        at.button(key="x_job_stop").click().run()
        assert job.cancel.is_set()


def test_explore_stop_keeps_finished_rounds(cache):
    run = runs.open_run(cache["toy"])
    before = run.rounds()
    chosen = dict(settings.explore_defaults(run), iterations=50)
    job = launch.start_rounds(cache["toy"], 3, chosen)
    deadline = time.time() + 120
    while "solver iteration" not in job.snapshot()["message"] and job.running and time.time() < deadline:
        time.sleep(0.05)  # stop it mid-round, once the solver is really running
    job.stop()
    assert job.wait(120)
    assert job.status == "cancelled", (job.status, job.error)
    finished = [e["round"] for e in job.snapshot()["events"]]
    after = runs.open_run(cache["toy"]).rounds()
    assert after == before + finished  # the finished rounds are kept, the stopped one is dropped
    assert len(finished) < 3


# ------------------------------------------------------------------------------ compare

def test_compare_toy_heatmaps_difference_and_displacement(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/3_Compare.py").run()
    assert not at.exception
    assert at.selectbox(key="c_a_toy-default").value == 0
    latest = runs.open_run(cache["toy"]).latest_round
    assert at.selectbox(key="c_b_toy-default").value == latest
    at.select_slider(key="c_res").set_value(32).run()
    for _ in range(3):  # a heatmap job of the first resolution may still be running: then the next
        settle(at)
        if "difference" in fig_text(at):
            break
    text = fig_text(at)
    assert f"difference (round {latest} − round 0)" in text
    heat = [f for f in figs(at) if sum(t.get("type") == "heatmap" for t in f["data"]) == 3][0]
    assert heat["layout"]["coloraxis2"]["cmid"] == 0
    assert any(t.get("name") == "dense square" for t in heat["data"])  # support outline
    assert "Same initial noise" in text and "moved" in text
    assert "Entropy and surprise per round" in text
    m = metrics(at)
    assert {"Entropy (k-NN)", "Off support", "Sparse share"} <= set(m)
    assert any(md.value.startswith(f"**round {latest}**") for md in at.markdown)
    labels = {b.label for b in at.get("download_button")}
    assert "Metrics (JSON)" in labels and f"Samples of round {latest} (CSV)" in labels
    # another round: its heatmap is computed in the background, then drawn
    at.selectbox(key="c_b_toy-default").set_value(1).run()
    settle(at)
    assert "difference (round 1 − round 0)" in fig_text(at)
    # back to a round with cached results: drawn at once, no job started
    last_job = jobs.get(cache["toy"], "heatmap")
    at.selectbox(key="c_b_toy-default").set_value(latest).run()
    assert f"difference (round {latest} − round 0)" in fig_text(at)
    assert jobs.get(cache["toy"], "heatmap") is last_job


def test_compare_triangles_shows_types_validity_and_triangles(cache):
    at = app(cache["tri"]).run()
    at.switch_page("pages/3_Compare.py").run()
    settle(at)
    text = fig_text(at)
    for title in ("Side type", "Angle type", "Validity", "A few samples, same noise", "u = a/c",
                  "right (u^2 + v^2 = 1)", "isosceles (u = v)", "equilateral"):
        assert title in text, title
    bars = [f for f in figs(at) if "Side type" in json.dumps(f["layout"])][0]
    assert all(t["type"] == "bar" and "error_y" in t for t in bars["data"])
    assert len(bars["data"]) == len(runs.open_run(cache["tri"]).rounds())


# ------------------------------------------------------------------------------ damaged runs

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


def test_a_damaged_metrics_json_is_listed_as_damaged_and_the_other_runs_work(cache):
    (Path(cache["tri"]) / "metrics.json").write_text('{"rounds": {"0": ')
    at = every_page_works(app())
    at.switch_page("app.py").run()
    table = at.dataframe[0].value
    status = dict(zip(table["run"], table["status"]))
    assert status["tri"].startswith("damaged: metrics.json in tri is damaged"), status
    assert metrics(at)["Data set"] == "toy"  # the default run opens as before
    # opening the damaged run says what is wrong and how to recover, on every page
    assert "tri (damaged)" in at.selectbox(key="home_pick").options
    at.selectbox(key="home_pick").set_value(cache["tri"])
    at.button(key="home_open").click().run()
    assert not at.exception
    note = warnings_text(at)
    assert "metrics.json is damaged, so its rounds cannot be listed" in note, note
    assert "2 weights file(s) are still on disk" in note and "pre-train it again" in note
    assert cache["root"].as_posix() not in note  # the server's paths stay on the server
    every_page_works(at)
    for page in PAGES[:3]:
        at.switch_page(page).run()
        assert "metrics.json is damaged" in warnings_text(at), page


@pytest.mark.parametrize("damage", ["garbage", "foreign"])
def test_a_damaged_round_file_leaves_the_earlier_rounds_working(cache, damage):
    target = Path(cache["toy"]) / "round_2.safetensors"
    if damage == "garbage":
        target.write_bytes(b"\x00not a safetensors file")
        why = "is damaged"
    else:  # another run's weights (the triangles model has other shapes)
        shutil.copy(Path(cache["tri"]) / "round_1.safetensors", target)
        why = "tensor"
    at = app(cache["toy"])
    every_page_works(at)
    at.switch_page("app.py").run()
    note = warnings_text(at)
    assert "Round(s) 2 of toy-default cannot be loaded" in note and why in note, note
    assert "rounds 0, 1 still load" in note
    assert metrics(at)["Rounds"] == "1"
    assert "model samples, round 1" in fig_text(at)
    table = at.dataframe[0].value
    assert dict(zip(table["run"], table["status"]))["toy-default"] == "damaged round(s) 2"
    # a new round never overwrites the damaged file: the job fails with one sentence
    before = target.read_bytes()
    job = launch.start_rounds(cache["toy"], 1, settings.explore_defaults(runs.open_run(cache["toy"])))
    assert job.wait(120) and job.status == "failed"
    assert "damaged" in job.error and "\n" not in job.error.strip(), job.error
    assert target.read_bytes() == before


# ------------------------------------------------------------------------------ Stable Diffusion: no free paths

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


# ------------------------------------------------------------------------------ viewer mode, who may stop

def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_viewer_mode_shows_runs_and_rounds_but_every_write_is_refused(cache, monkeypatch):
    from smeme.services import access, image_runs

    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = every_page_works(app(cache["toy"]))
    at.switch_page("app.py").run()
    assert metrics(at)["Data set"] == "toy" and "viewer mode" in captions(at)
    at.switch_page("pages/1_Model.py").run()
    assert "m_train" not in {b.key for b in at.button} and not at.get("file_uploader")
    assert metrics(at)["Data set"] == "toy" and "viewer mode" in captions(at)
    at.switch_page("pages/2_Explore.py").run()
    assert not {"x_one", "x_k_btn"} & {b.key for b in at.button}  # hidden, not greyed out (issue 24)
    assert "Stop" not in [b.label for b in at.button]
    assert "Metrics per round" in fig_text(at) and "viewer mode" in captions(at)
    at.switch_page("pages/3_Compare.py").run()
    at.selectbox(key="c_b_toy-default").set_value(1).run()  # stepping through rounds works
    assert any(md.value.startswith("**round 1**") for md in at.markdown)
    at.switch_page("pages/4_Images.py").run()
    assert "Pre-train" not in {b.label for b in at.button}
    # the services refuse too, not only the pages
    before = sorted(p.name for p in Path(cache["toy"]).iterdir())
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        launch.start_rounds(cache["toy"], 1, settings.explore_defaults())
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        launch.start_training(settings.runs_dir() / "new", "toy")
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        settings.save_upload("a.csv", b"x,y\n1,2\n")
    with pytest.raises(access.ReadOnlyError, match="viewer mode"):
        image_runs.start_sd_rounds("sd", "anything", "a prompt.", 1)
    assert not settings.uploads_dir().exists() and not image_runs.sd_runs_dir().exists()
    assert not (settings.runs_dir() / "new").exists()
    assert sorted(p.name for p in Path(cache["toy"]).iterdir()) == before
    assert jobs.wait_all(TIMEOUT)  # the pages' own heatmap jobs
    with held_job(cache["toy"], "heatmap", writes=False) as job:  # read-only work runs
        with pytest.raises(access.ReadOnlyError, match="viewer mode"):
            jobs.stop(cache["toy"], "heatmap", who=None)
        assert not job.cancel.is_set()


def test_viewer_mode_on_an_empty_cache_offers_no_training(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_VIEWER", "1")
    at = app().run()
    assert not at.exception
    assert "train_default" not in {b.key for b in at.button}
    assert "viewer mode" in captions(at)


def test_a_job_is_stopped_only_by_the_session_that_started_it(cache, monkeypatch):
    from smeme.services import access

    monkeypatch.setenv("SMEME_SINGLE_USER", "0")  # as when serving a class
    progress = (0.1, "Round 3: solver iteration 1/4")
    at = app(cache["toy"]).run()
    at.switch_page("pages/2_Explore.py").run()
    mine = at.session_state["_smeme_owner"]
    with held_job(cache["toy"], "explore", progress, owner="another-visitor") as other:
        at.run()
        assert "x_job_stop" not in [b.key for b in at.button]  # hidden where it may not be used (issue 24)
        with pytest.raises(access.ReadOnlyError, match="started by another visitor"):
            jobs.stop(cache["toy"], "explore", who=mine)
        assert not other.cancel.is_set()
    with held_job(cache["toy"], "explore", progress, owner=mine) as own:
        at.run()
        assert not at.button(key="x_job_stop").disabled
        at.button(key="x_job_stop").click().run()
        assert own.cancel.is_set()


def test_single_user_mode_defaults():
    from smeme.services import access

    env = {k: os.environ.pop(k) for k in ("SMEME_SINGLE_USER", "SMEME_VIEWER") if k in os.environ}
    try:  # issue 21: off on every address unless switched on (a proxy on localhost is everyone)
        assert not access.single_user("localhost") and not access.single_user(None)
        assert not access.single_user("0.0.0.0")
        os.environ["SMEME_SINGLE_USER"] = "1"
        assert access.single_user("0.0.0.0")
        del os.environ["SMEME_SINGLE_USER"]
        os.environ["SMEME_VIEWER"] = "1"
        assert not access.single_user("localhost")
    finally:
        for k in ("SMEME_SINGLE_USER", "SMEME_VIEWER"):
            os.environ.pop(k, None)
        os.environ.update(env)


# ------------------------------------------------------------------------------ uploads

CSV = b"x,y\n" + b"".join(f"{i % 7},{(i * 3) % 11}\n".encode() for i in range(300))


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


# ------------------------------------------------------------------------------ heatmaps after rounds

def test_each_finished_round_gets_its_heatmap_without_a_model_page_visit(cache):
    assert jobs.wait_all(TIMEOUT * 2)
    for folder in (cache["toy"], cache["tri"]):
        run = runs.open_run(folder)
        assert all(cached.heatmap_cached(run, k) is not None for k in run.rounds()), folder
        explore, heat = cache["queued"][folder]
        assert heat is not None and heat.status == "done"
        assert heat.started >= explore.finished  # queued after the rounds, never beside them


def test_new_rounds_stop_a_heatmap_job_of_their_run(cache):
    with held_job(cache["tri"], "heatmap", writes=False) as heat:
        job = launch.start_rounds(cache["tri"], 1, dict(settings.explore_defaults(runs.open_run(cache["tri"]))))
        assert heat.cancel.is_set()  # the round does not share the CPU with heatmaps
        job.stop()
        assert jobs.wait_all(TIMEOUT * 2)


# The Rounds page's player is tested in test_app_play.py.


# ------------------------------------------------------------------------------ bundles

def test_a_bundle_uploaded_in_the_app_opens_as_a_run(cache):
    from smeme.services import bundles
    data = bundles.bundle_bytes(cache["tri"])
    at = app(cache["toy"]).run()
    at.file_uploader(key="home_upload").set_value(("from a colleague.zip", data, "application/zip")).run()
    assert not at.exception
    folder = str((settings.runs_dir() / "from-a-colleague").resolve())
    assert at.session_state["run"] == folder
    assert picker(at) == folder
    assert metrics(at)["Data set"] == "triangles"
    assert runs.open_run(folder).metrics() == runs.open_run(cache["tri"]).metrics()
    # a damaged file: one sentence, nothing added, the current run stays
    at.file_uploader(key="home_upload").set_value(("broken.zip", data[: len(data) // 2], "application/zip")).run()
    assert not at.exception
    assert [e.value for e in at.error] and at.error[0].value.startswith("The bundle broken.zip is refused:")
    assert not (settings.runs_dir() / "broken").exists()
    assert at.session_state["run"] == folder
    assert {b.label for b in at.get("download_button")} >= {"Download from-a-colleague as a bundle (.zip)"}


# ------------------------------------------------------------------------------ budget

def test_budget_view_draws_one_line_per_k(cache):
    at = app(cache["toy"]).run()
    at.switch_page("pages/6_Budget.py").run()
    assert not at.exception
    at.multiselect(key="b_ks").set_value([1, 2])
    at.number_input(key="b_iters").set_value(2)
    at.button(key="b_start").click().run()
    assert not at.exception and not at.error
    settle(at)
    lines = [f for f in figs(at) if "One budget of solver iterations" in json.dumps(f["layout"])][0]
    assert [t["name"] for t in lines["data"]] == ["K = 1 (2 iterations a round)", "K = 2 (1 iterations a round)"]
    assert [len(arr(t["x"])) for t in lines["data"]] == [2, 3]  # rounds 0..K
    assert jobs.get(cache["toy"], "budget").status == "done"
    # the same settings again: one sentence, unless asked to replace them
    at.button(key="b_start").click().run()
    assert any("run with these settings before" in e.value for e in at.error)


# ------------------------------------------------------------------------------ demo

@pytest.mark.slow
def test_home_prepares_the_demo_in_the_background(tmp_path, monkeypatch):
    from smeme.services import demo
    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SMEME_APP_PRESET", "tiny")
    at = app().run()
    at.button(key="home_demo_start").click().run()
    assert not at.exception
    assert demo.job() is not None and demo.job().running
    assert any(p.proto.text.startswith("Training the toy model") for p in at.get("progress"))
    settle(at)
    assert demo.job().status == "done", demo.job().error
    labels = [b.label for b in at.button]
    assert "Open toy-default (3 rounds)" in labels and "Open triangles-demo (3 rounds)" in labels
    for r in demo.status():
        run = runs.open_run(r["folder"])
        assert run.rounds() == [0, 1, 2, 3]
        assert all(cached.heatmap_cached(run, k) is not None for k in run.rounds())  # ready for the rounds view
    at.button(key="home_demo_open_triangles-demo").click().run()
    assert at.session_state["run"] == demo.status()[1]["folder"]
