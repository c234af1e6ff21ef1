"""Rounds: step through a run's rounds one at a time (slider or Play), on fixed axes."""
import streamlit as st

from smeme import ui
from smeme.services import cached, figures, jobs, launch, runs, stepper

st.title("Round by round")
run = ui.run_or_stop()
folder = runs.run_folder(run)
rounds = run.rounds()
st.caption("Each frame is one round's model. The samples come from the same fixed noise in every round, so a "
           "point that moves is one sample that the round moved; the previous round's positions are drawn "
           "faint behind them. Axes and colours stay the same across rounds.")
if len(rounds) < 2:
    st.info("This run has only the pre-trained round so far: run S-MEME rounds on the Explore page.")

if runs.is_image_run(run):
    def draw(k):
        f = stepper.digits_frame(run, k)
        left, right = st.columns([3, 2], gap="medium")
        left.image(list(f["row"]), caption=[f"round {k}"] * len(f["row"]), width=96, clamp=True)
        with right:
            if f["shares"]:
                ui.plot(figures.class_histogram(f["shares"], k, f["prev_shares"], f["y_max"]), key="r_classes")
else:
    missing = stepper.missing_heatmaps(run)
    if missing:
        launch.start_heatmaps(folder, missing, owner=ui.owner())  # deferred while rounds run (their job queues them)
    ui.job_panel(folder, "heatmap", show_loss=False, key="r_heat")
    views = stepper.category_views(run)
    pair = None
    if not views:  # CSV and other tables: any two of the columns
        names = stepper.columns(run)
        if len(names) >= 2:
            c1, c2 = st.columns(2)
            i = c1.selectbox("Column (x)", range(len(names)), index=0, format_func=names.__getitem__, key="r_col_x")
            j = c2.selectbox("Column (y)", range(len(names)), index=1, format_func=names.__getitem__, key="r_col_y")
            pair = (int(i), int(j))
    zrange, ranges = stepper.heat_range(run), stepper.plane_range(run)

    def draw(k):
        f = stepper.frame(run, k)
        ui.plot(cached.figure(run, ("step", k, zrange, f["hm"] is not None), lambda: figures.round_frame(
            k, f["hm"], f["points"], f["prev_points"], overlay=f["overlay"], labels=f["labels"],
            colors=f["colors"], zrange=zrange, ranges=ranges)), key="r_frame")
        cols = st.columns(max(len(views), 1))
        for col, (cat, title) in zip(cols, views):
            shares, order, top = stepper.category_frame(run, k, cat)
            with col:
                ui.plot(figures.category_bars(shares, title=f"{title}, round {k}", y_max=top, categories=order),
                        key=f"r_cat_{cat}")
        if pair is not None:
            p = stepper.pair_frame(run, k, *pair)
            with cols[0]:
                ui.plot(figures.pair_scatter(k, p["points"], p["prev_points"], labels=p["labels"],
                                             ranges=p["ranges"]), key="r_pair")

ui.round_stepper(rounds, draw, key="r")
if jobs.get(folder, "explore") is not None and jobs.get(folder, "explore").running:
    st.caption("Rounds are running on the Explore page; new rounds join the slider when they finish, and "
               "the heatmaps are computed once the rounds end.")
