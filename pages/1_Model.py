"""Model: train a diffusion model on a data set, or look at the current one."""
from pathlib import Path

import streamlit as st

from smeme import ui
from smeme.services import access, cached, draw, figures, jobs, launch, results, runs, settings, texts
from smeme.data import DataError

st.title("Model")

# -------------------------------------------------------------------------------- training
training = ui.training_folder()  # a training started here (or still running after a reload)
if training and ui.job_panel(training, "train", key="model_train") == jobs.RUNNING:
    st.caption("Training continues in the background if you switch pages.")
    st.stop()

if ui.viewer():
    ui.viewer_note()
else:
    with st.expander("Train a new model", expanded=st.session_state.get("run") is None):
        st.markdown("\n".join(b for k, b in settings.content_blocks("model") if k == "md"))
        dataset = st.radio("Data set", settings.DATASETS, horizontal=True, key="m_dataset",
                           format_func={"toy": "toy (two squares)", "triangles": "triangles", "csv": "CSV upload"}.get)
        params, problem = {}, None
        if dataset == "toy":
            params["dense_mass"] = st.slider("Mass in the dense square", 0.5, 0.99, 0.9, 0.01, key="m_dense")
        elif dataset == "triangles":
            c1, c2 = st.columns(2)
            with c1:
                st.markdown("**Side types**")
                eq = st.slider("equilateral", 0.0, 0.3, 0.0, 0.01, key="m_eq")
                iso = st.slider("isosceles", 0.0, 0.5, 0.01, 0.01, key="m_iso")
            with c2:
                st.markdown("**Angle types**")
                right = st.slider("right", 0.0, 0.3, 0.0, 0.01, key="m_right")
                obtuse = st.slider("obtuse", 0.0, 0.8, 0.15, 0.01, key="m_obtuse")
            params, problem = settings.triangle_params(eq, iso, right, obtuse)
        else:
            up = st.file_uploader("CSV file (numeric columns with a header row)", type=["csv", "txt"], key="m_csv")
            if up is None:
                problem = "Upload a CSV file to train on it."
            else:
                try:
                    params["path"] = ui.saved_upload(up)
                except settings.UploadError as exc:
                    problem = str(exc)
                    st.error(problem)
        d = settings.training_defaults(dataset)
        c1, c2, c3, c4 = st.columns(4)
        width = c1.select_slider("Model width", [16, 32, 64, 128, 256], value=min(max(d["width"], 16), 256)
                                 if d["width"] in (16, 32, 64, 128, 256) else 128, key="m_width")
        depth = c2.number_input("Hidden layers", 1, 6, d["depth"], key="m_depth")
        steps = c3.number_input("Training steps", 10, 50_000, d["steps"], step=100, key="m_steps")
        seed = c4.number_input("Seed", 0, 10_000, 0, key="m_seed")
        name = st.text_input("Run name (optional)", key="m_name", placeholder=f"{dataset}-<date-time>")
        if problem is None and dataset == "csv":
            problem = settings.check_dataset_once(dataset, params)  # parsed once per file content
            if problem is not None:
                st.error(f"This file cannot be used: {problem}")
        elif problem is not None and dataset != "csv":
            st.error(problem)
        if st.button("Train", type="primary", disabled=problem is not None, key="m_train"):
            folder = runs.new_run_folder(dataset, name or None)
            try:
                launch.start_training(folder, dataset, params, steps=int(steps), seed=int(seed),
                                      model_params={"width": int(width), "depth": int(depth)}, owner=ui.owner())
            except (jobs.JobBusy, access.ReadOnlyError, DataError, ValueError) as exc:
                st.error(str(exc))
            else:
                st.session_state["training"] = str(folder.resolve())
                ui.select_run(folder)
                st.rerun()

# -------------------------------------------------------------------------------- draw your data
if not ui.viewer():
    with st.expander("Draw your data (or pick a ready shape)", expanded=False):
        st.caption("Draw strokes and dots, or pick a ready shape; the points you see on the right become a CSV "
                   "data set with columns x and y, trained like an upload and explorable like any run.")
        source = st.radio("Points from", ["A ready shape", "My drawing"], horizontal=True, key="d_source")
        c_in, c_out = st.columns([3, 2], gap="medium")
        with c_in:
            if source == "A ready shape":
                pts, parts, problem = ui.shape_picker()
            else:
                pts, parts, problem = ui.drawing_canvas()
        with c_out:
            if len(pts):
                ui.plot(figures.scatter_panels([(f"{len(pts):,} points", pts)], colors=[parts],
                                               ranges=draw.PREVIEW_RANGES, title="Your data", height=330,
                                               max_points=draw.PREVIEW_POINTS),
                        key="d_preview")
            if problem:
                st.info(problem)
        c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        d_name = c1.text_input("Run name (optional)", key="d_name", placeholder="drawn-<date-time>")
        d_steps = c2.number_input("Training steps", 10, 50_000, settings.training_defaults("csv")["steps"],
                                  step=100, key="d_steps")
        if c3.button("Train on this", type="primary", disabled=problem is not None, key="d_train", width="stretch"):
            try:
                folder = draw.train_on_points(pts, d_name or None, steps=int(d_steps), owner=ui.owner())
            except (jobs.JobBusy, access.ReadOnlyError, settings.UploadError, DataError) as exc:
                st.error(str(exc))
            else:
                st.session_state["training"] = str(folder.resolve())
                ui.select_run(folder)
                st.rerun()

# -------------------------------------------------------------------------------- result
run = ui.current_run()
if run is None:
    st.info("No model yet: train one above (or pick a run in the sidebar).")
    st.stop()
if runs.is_image_run(run):
    st.info("This is an image run: its rounds are shown on the Images page.")
    st.stop()

st.subheader(f"Pre-trained model: {Path(runs.run_folder(run)).name}")
info = runs.run_info(run)
m0 = results.flat_metrics(run.metrics().get(0, {}))
cols = st.columns(5)
cols[0].metric("Data set", info["dataset"])
cols[1].metric("Model", info["model"])
cols[2].metric("Training steps", info["steps"])
if "on_support" in m0:
    cols[3].metric("On support", texts.percent(m0["on_support"]),
                   help="Triangles: a valid triangle whose longest side is below 1." if info["dataset"] == "triangles"
                   else None)
if "entropy" in m0:
    cols[4].metric("Entropy (k-NN)", f"{m0['entropy']:.3f}")

if info["dataset"] == "triangles":
    st.caption(texts.support_sentence(m0))  # off support, split so that the numbers add up
left, right = st.columns(2, gap="medium")
with left:
    pts = cached.samples(run, 0)
    data = cached.data_sample(run)
    note = cached.data_note(run)
    if note:
        st.caption(note)
    panels = (([("training data", cached.plane(run, data))] if data is not None else [])
              + [("model samples", cached.plane(run, pts))])
    ui.plot(cached.figure(run, ("model-scatter",), lambda: figures.scatter_panels(
        panels, overlay=cached.overlay(run), labels=cached.plane_labels(run), ranges=cached.plane_ranges(run),
        title="Data vs model samples", height=420)), key="model_scatter")
with right:
    hm = cached.heatmap_cached(run, 0)
    if hm is not None:
        ui.plot(cached.figure(run, ("model-heat", settings.HEATMAP_RES), lambda: figures.heatmap(
            hm, overlay=cached.overlay(run), title="log-density of the pre-trained model")), key="model_heatmap")
    elif runs.has_plane(run):
        folder = runs.run_folder(run)
        if jobs.get(folder, "heatmap") is None or not jobs.get(folder, "heatmap").running:
            launch.start_heatmaps(folder, [0], owner=ui.owner())
        ui.job_panel(folder, "heatmap", show_loss=False, key="model_heat")
    else:
        st.caption("This data set has no 2-D plane to draw its density on.")

with st.expander("Training loss and settings"):
    hist = runs.training_history(run)
    if hist:
        ui.plot(figures.loss_curve(hist), key="model_loss")
    st.json(info["config"], expanded=False)

c1, c2 = st.columns(2)
c1.download_button("Download samples (CSV)", cached.samples_csv(run, 0), file_name="samples_round0.csv",
                   mime="text/csv", key="model_dl_samples")
c2.download_button("Download metrics (JSON)", results.metrics_json(run), file_name="metrics.json",
                   mime="application/json", key="model_dl_metrics")
