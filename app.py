"""S-MEME app: `streamlit run app.py`. Home page plus navigation (pages/)."""
from pathlib import Path

import streamlit as st

from smeme import ui
from smeme.bundle import BundleError
from smeme.services import access, bundles, cached, demo, figures, image_runs, jobs, launch, runs, settings

st.set_page_config(page_title="S-MEME", page_icon=":material/explore:", layout="wide")
settings.warm_imports()
HERE = Path(__file__).parent


def home():
    st.title("S-MEME: exploring what a diffusion model knows")
    st.caption("Score-based Maximum Entropy Manifold Exploration (De Santi et al., ICML 2025)")

    default = runs.default_run_folder()
    all_runs = runs.list_runs()
    preparing = demo.job()
    if preparing is not None and preparing.running:
        demo_section()
        st.divider()
        ui.render_content("home")
        return

    train_job = jobs.get(default, "train")
    if not [r for r in all_runs if r["latest"] is not None] or (train_job and train_job.running):
        st.subheader("Start here")
        if ui.viewer() and not (train_job and train_job.running):
            st.info("No trained model on disk yet.")
            ui.viewer_note()
        elif not (train_job and train_job.running):
            st.info("No trained model on disk yet. Train the default toy model (two squares, 90% / 10% "
                    "of the mass) with one click; it takes under a minute.")
            if st.button("Train the default toy model", type="primary", key="train_default"):
                d = settings.training_defaults("toy")
                try:
                    launch.start_training(default, "toy", steps=d["steps"], seed=0,
                                          model_params={"width": d["width"], "depth": d["depth"]},
                                          label="Training the default toy model", owner=ui.owner())
                    ui.select_run(default)
                    st.rerun()
                except (jobs.JobBusy, access.ReadOnlyError) as exc:
                    st.warning(str(exc))
        status = ui.job_panel(default, "train", key="home_train")
        if status == jobs.RUNNING:
            return
        demo_section()
        share_section(None)
    else:
        run_section(all_runs)

    st.divider()
    ui.render_content("home")


def run_section(all_runs):
    run = ui.current_run()
    if run is None:
        st.info("Choose a run below.")
    else:
        current_run_panel(run)
    st.subheader("Runs on disk")
    table = [{"run": r["name"], "data set": r["dataset"], "rounds": r["rounds"],
              "entropy (k-NN, nats)": None if r["entropy"] is None else round(r["entropy"], 3),
              "off support (%)": None if r["off_support"] is None else round(100 * r["off_support"], 1),
              "status": r["status"]} for r in all_runs]
    st.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(table), 250))
    for r in all_runs:
        if r.get("damaged"):
            st.caption(f":material/warning: {r['name']} cannot be opened: {r['damaged']}")
    folders = ui.openable(all_runs)
    labels = {r["folder"]: ui.run_label(r) for r in all_runs}
    cur = st.session_state.get("run")
    c1, c2, c3 = st.columns([3, 1, 3], vertical_alignment="bottom")
    pick = c1.selectbox("Open a run", folders, index=folders.index(cur) if cur in folders else 0,
                        format_func=lambda f: labels.get(f, Path(f).name), key="home_pick")
    if c2.button("Open", key="home_open", width="stretch"):
        ui.select_run(pick)
        st.rerun()
    with c3:
        if ui.viewer():
            ui.viewer_note()
        else:
            st.page_link("pages/1_Model.py", label="Start a new run (Model page)", icon=":material/add:")
    demo_section()
    share_section(run)


def demo_section():
    """'Prepare the demo': the toy and triangles models, 3 rounds each, in the background."""
    st.subheader("Demo")
    state = demo.status()
    if demo.job() is not None and demo.job().running:
        st.caption("Preparing the demo: the toy and triangles models are trained, then explored for "
                   f"{demo.ROUNDS} rounds each. You can close the page; it goes on in the background.")
        ui.job_panel(demo.demo_folder(), demo.KIND, show_loss=False, key="home_demo")
        return
    ui.job_panel(demo.demo_folder(), demo.KIND, show_loss=False, key="home_demo")  # how the last one ended
    if all(r["ready"] for r in state):
        cols = st.columns(len(state))
        for col, r in zip(cols, state):
            if col.button(f"Open {r['name']} ({r['rounds']} rounds)", key=f"home_demo_open_{r['name']}",
                          width="stretch"):
                ui.select_run(r["folder"])
                st.rerun()
        st.caption("The demo is ready. Open a run, then step through its rounds on the Rounds page."
                   + (" The ready digits model waits on the Images page: run its rounds live."
                      if (image_runs.ready_digits_folder() / "config.json").is_file() else ""))
        return
    st.caption(f"Train the toy and triangles models and run {demo.ROUNDS} S-MEME rounds on each, in the "
               "background, so that a class can start from finished runs (a few minutes on a laptop), and add "
               "the ready digits model for the Images page. Runs already there are kept and completed.")
    if ui.viewer():
        ui.viewer_note()
        return
    if st.button("Prepare the demo", key="home_demo_start", icon=":material/school:"):
        try:
            demo.start_demo(owner=ui.owner())
            st.rerun()
        except (jobs.JobBusy, access.ReadOnlyError) as exc:
            st.warning(str(exc))


def share_section(run):
    """Download the current run as a bundle; open a bundle someone else made."""
    st.subheader("Share a run")
    left, right = st.columns(2, gap="large")
    with left:
        if run is not None:
            folder = runs.run_folder(run)
            st.download_button(f"Download {Path(folder).name} as a bundle (.zip)",
                               data=lambda: bundles.bundle_bytes(folder), file_name=bundles.bundle_file_name(folder),
                               mime="application/zip", key="home_bundle", on_click="ignore",
                               icon=":material/download:")
            st.caption("A bundle holds the run's settings, every round's weights and its metrics and cached "
                       "results; open it on another machine with the uploader here or `python -m smeme import`.")
    with right:
        if ui.viewer():
            ui.viewer_note()
            return
        up = st.file_uploader("Open a run bundle (.zip)", type=["zip"], key="home_upload")
        done = st.session_state.setdefault("_bundles_opened", {})  # upload id -> folder or error
        if up is not None:
            if up.file_id not in done:
                try:
                    done[up.file_id] = ("ok", str(bundles.import_upload(up.name, up.getvalue())))
                except (BundleError, access.ReadOnlyError) as exc:
                    done[up.file_id] = ("error", str(exc))
                else:
                    ui.select_run(done[up.file_id][1])
                    st.session_state.pop("home_pick", None)  # the run list's picker shows it too
                    st.rerun()
            outcome, text = done[up.file_id]
            if outcome == "error":
                st.error(text)
            else:
                st.success(f"Opened the bundle as the run {Path(text).name}.")


def next_step(run) -> tuple[str, str, str, str]:
    """(sentence, page, link label, icon): what to do next with this run, from its state."""
    rounds = len(run.rounds()) - 1
    explore = jobs.get(runs.run_folder(run), "explore")
    if explore is not None and explore.running:
        return ("S-MEME rounds are running now.", "pages/2_Explore.py", "Explore: watch the rounds",
                ":material/explore:")
    if rounds < 1:
        return ("Next: run S-MEME rounds on the Explore page.", "pages/2_Explore.py",
                "Explore: run S-MEME rounds", ":material/explore:")
    return (f"{rounds} S-MEME round(s) done. Next: step through them on the Rounds page (or compare two on "
            "Compare, or run more on Explore).", "pages/5_Rounds.py", "Rounds: step through the rounds",
            ":material/slideshow:")


def current_run_panel(run):
    st.subheader(f"Current run: {Path(runs.run_folder(run)).name}")
    k = run.latest_round
    if runs.is_image_run(run):
        st.info("An image run: see the Images page for its grids.")
        return
    tl = cached.timeline(run)
    last = tl.iloc[-1].to_dict() if len(tl) else {}
    left, right = st.columns([3, 2], gap="large")
    with right:
        m = st.columns(2)
        m[0].metric("Data set", runs.run_dataset(run))
        m[1].metric("Rounds", max(len(run.rounds()) - 1, 0))
        m = st.columns(2)
        if last.get("entropy") is not None:
            m[0].metric("Entropy (k-NN)", f"{last['entropy']:.3f}")
        if last.get("off_support") is not None:
            m[1].metric("Off support", f"{last['off_support']:.1%}")
        text, page, label, icon = next_step(run)
        st.success(f"Model ready: {Path(runs.run_folder(run)).name}, round {k}. {text}")
        st.page_link(page, label=label, icon=icon)
    with left:
        pts = cached.samples(run, k)
        data = cached.data_sample(run)
        note = cached.data_note(run)
        if note:
            st.caption(note)
        panels = ([("training data", cached.plane(run, data))] if data is not None else []) + \
                 [(f"model samples, round {k}", cached.plane(run, pts))]
        ui.plot(cached.figure(run, ("home-scatter", k), lambda: figures.scatter_panels(
            panels, overlay=cached.overlay(run), labels=cached.plane_labels(run), ranges=cached.plane_ranges(run),
            height=340)),
            key="home_scatter")


pages = [
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Model.py", title="Model", icon=":material/model_training:"),
    st.Page("pages/2_Explore.py", title="Explore", icon=":material/explore:"),
    st.Page("pages/5_Rounds.py", title="Rounds", icon=":material/slideshow:"),
    st.Page("pages/7_Fields.py", title="Fields", icon=":material/air:"),
    st.Page("pages/3_Compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/6_Budget.py", title="Budget", icon=":material/stacked_line_chart:"),
]
if (HERE / "pages" / "4_Images.py").exists():
    pages.append(st.Page("pages/4_Images.py", title="Images", icon=":material/image:"))

nav = st.navigation(pages)
ui.sidebar()
nav.run()
