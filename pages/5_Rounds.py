"""Rounds: play a run's rounds in the browser (one figure, a frame per round), on fixed axes."""
import streamlit as st

from smeme import ui
from smeme.services import cached, figures, jobs, launch, motion, runs, stepper

st.title("Round by round")
run = ui.run_or_stop()
folder = runs.run_folder(run)
rounds = run.rounds()
st.caption("Each frame is one round's model. The samples come from the same fixed noise in every round, so a "
           "point that moves is one sample that the round moved; the previous round's positions are drawn "
           "faint behind them (darker with the sidebar's Projector toggle). Axes and colours stay the same "
           "across rounds.")
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
    zrange = stepper.heat_range(run)
    ranges, labels = stepper.plane_range(run), cached.plane_labels(run)
    if pair is not None:
        p = stepper.pair_frame(run, rounds[-1], *pair)
        ranges, labels = p["ranges"], p["labels"]
    speed = st.select_slider("Speed", list(motion.SPEEDS), value="normal", key="r_speed",
                             help="How long each round stays on screen while playing.")

    def build():
        frames, bars = stepper.player_frames(run, pair)
        if pair not in (None, (0, 1)):  # the heatmaps are over the first two columns only
            frames = [{**f, "hm": None} for f in frames]
        return motion.rounds_player(frames, zrange=zrange, ranges=ranges, labels=labels, overlay=cached.overlay(run),
                                    bar_titles=bars, speed=speed, heat_note="the log-density is drawn over the "
                                    "first two columns: choose them to see it")
    ui.plot(cached.figure(run, ("player", zrange, pair, speed), build), key="r_player")
    st.caption("Play runs in your browser: every round is already in the figure, so none is skipped. Drag the "
               "slider under the figure to step through the rounds by hand.")

if runs.is_image_run(run):
    ui.round_stepper(rounds, draw, key="r")
if jobs.get(folder, "explore") is not None and jobs.get(folder, "explore").running:
    st.caption("Rounds are running on the Explore page; new rounds join the slider when they finish, and "
               "the heatmaps are computed once the rounds end.")
