"""Compare: any two rounds of the current run side by side."""
from pathlib import Path

import streamlit as st

from smeme import ui
from smeme.services import cached, figures, jobs, launch, results, runs, settings

st.title("Compare rounds")
run = ui.run_or_stop("This is an image run: its rounds are shown on the Images page.")
folder = runs.run_folder(run)
rounds = run.rounds()
ui.render_content("compare")

c1, c2, c3 = st.columns([2, 2, 3])
label = lambda k: "round 0 (pre-trained)" if k == 0 else f"round {k}"  # noqa: E731
a = c1.selectbox("Round a", rounds, index=0, format_func=label, key=f"c_a_{Path(folder).name}")
b = c2.selectbox("Round b", rounds, index=len(rounds) - 1, format_func=label, key=f"c_b_{Path(folder).name}")
res = c3.select_slider("Heatmap resolution", [32, 48, 64, 96], value=settings.HEATMAP_RES, key="c_res")
if len(rounds) < 2:
    st.info("This run has only the pre-trained round: run S-MEME rounds on the Explore page to compare.")
names = (f"round {a}", f"round {b}")
launch.start_deferred_metrics(folder, owner=ui.owner())  # rounds saved without their PF-ODE metrics
ui.job_panel(folder, "metrics", show_loss=False, key="c_metrics")
tl = cached.timeline(run)

# ---------------------------------------------------------------- log-density heatmaps
st.subheader("Log-density")
if runs.has_plane(run):
    hm_a, hm_b = cached.heatmap_cached(run, a, res), cached.heatmap_cached(run, b, res)
    if hm_a is not None and hm_b is not None:
        ui.plot(cached.figure(run, ("heat", a, b, res), lambda: figures.heatmap_compare(
            hm_a, hm_b, overlay=cached.overlay(run), names=names)), key="c_heat")
    else:
        job = jobs.get(folder, "heatmap")
        if (job is None or not job.running) and launch.start_heatmaps(folder, [a, b], res, owner=ui.owner()) is None:
            st.caption("The heatmaps are computed when the rounds running on this run end.")
        ui.job_panel(folder, "heatmap", show_loss=False, key="c_heat_job")
else:
    st.caption("This data set has no 2-D plane to draw densities on.")

# ---------------------------------------------------------------- the same noise, two rounds
left, right = st.columns([3, 2], gap="medium")
with left:
    pa, pb = cached.samples(run, a), cached.samples(run, b)
    ui.plot(cached.figure(run, ("disp", a, b), lambda: figures.displacement(
        cached.plane(run, pa), cached.plane(run, pb), overlay=cached.overlay(run), labels=cached.plane_labels(run),
        ranges=cached.plane_ranges(run), names=names, title="Same initial noise: where each sample moved",
        max_points=400)), key="c_disp")
with right:
    ui.plot(figures.timeline(tl, [("Entropy (k-NN, nats)", [("entropy", "k-NN entropy")]),
                                  ("Surprise under round 0", [("surprise", "mean −log p_pre")])],
                             title="Entropy and surprise per round", height=500, vertical=True), key="c_lines")

ra = tl[tl["round"] == a].iloc[0].to_dict() if len(tl) and (tl["round"] == a).any() else {}
rb = tl[tl["round"] == b].iloc[0].to_dict() if len(tl) and (tl["round"] == b).any() else {}
ui.compare_metrics(ra, rb, names)

# ---------------------------------------------------------------- triangles
if runs.run_dataset(run) == "triangles":
    st.subheader("Triangle types per round")
    t1, t2 = st.columns(2)
    with t1:
        ui.plot(figures.category_bars(cached.category_shares(run, rounds, "side_type"), title="Side type"),
                key="c_side")
    with t2:
        ui.plot(figures.category_bars(cached.category_shares(run, rounds, "angle_type"), title="Angle type"),
                key="c_angle")
    ui.plot(figures.timeline(tl, [("Validity", [("validity", "valid"), ("on_support", "on support")])],
                             height=260), key="c_valid")
    ui.plot(cached.figure(run, ("gallery", a, b), lambda: figures.triangle_gallery(
        {names[0]: pa[:6], names[1]: pb[:6]}, title="A few samples, same noise")), key="c_tri")
elif runs.run_dataset(run) == "toy":
    ui.plot(figures.category_bars(cached.category_shares(run, sorted({a, b}), "region"),
                                  title="Where the samples land"), key="c_region")

# ---------------------------------------------------------------- export
d1, d2, d3 = st.columns(3)
d1.download_button(f"Samples of {names[0]} (CSV)", cached.samples_csv(run, a), file_name=f"samples_round{a}.csv",
                   mime="text/csv", key="c_dl_a")
d2.download_button(f"Samples of {names[1]} (CSV)", cached.samples_csv(run, b), file_name=f"samples_round{b}.csv",
                   mime="text/csv", key="c_dl_b")
d3.download_button("Metrics (JSON)", results.metrics_json(run), file_name="metrics.json", mime="application/json",
                   key="c_dl_m")
st.caption("Figures: use the camera button in each plot's toolbar to save a PNG.")
