"""Fields: what a round learned, as arrows over the log-density, and sample paths from noise to data."""
import streamlit as st

from smeme import ui
from smeme.services import cached, fields, motion, stepper

st.title("Fields: what a round learned")
run = ui.run_or_stop(image_note="Fields are drawn for runs of points; an image run's rounds are on the Images page.")
try:
    fields.check_run(run)
except fields.FieldsUnavailable as exc:
    st.info(str(exc))
    st.stop()

names = stepper.columns(run)
pair = (0, 1)
if len(names) > 2:
    c1, c2 = st.columns(2)
    i = c1.selectbox("Column (x)", range(len(names)), index=0, format_func=names.__getitem__, key="f_col_x")
    j = c2.selectbox("Column (y)", range(len(names)), index=1, format_func=names.__getitem__, key="f_col_y")
    pair = (int(i), int(j))
    st.caption(f"This run has {len(names)} columns: the arrows are their components along the two chosen "
               "columns, on a grid where the other columns are held at their medians.")
    if pair[0] == pair[1]:
        st.info("Choose two different columns.")
        st.stop()

later = run.rounds()[1:]
c1, c2 = st.columns(2)
if len(later) > 1:
    k = c1.select_slider("Round", later, value=later[-1], key="f_round")
else:
    k = later[0]
    c1.markdown(f"**Round {k}** (the run's only explored round)")
t = c2.select_slider("Diffusion time t", fields.TIMES, value=fields.REFERENCE_T, key="f_t",
                     help="1 is pure noise, 0 is the data. The reward's arrows do not depend on t.")
prev = run.rounds()[run.rounds().index(k) - 1]
labels = (names[pair[0]], names[pair[1]])
with st.spinner("Computing the fields..."):  # a revisit is a lookup: the figures are memoised
    fig = cached.figure(run, ("fields", k, t, pair), lambda: motion.field_figure(
        fields.log_density(run, prev, pair), fields.reward_arrows(run, k, pair),
        fields.change_arrows(run, k, t, pair), fields.arrow_scales(run, pair), t, k, labels=labels))
ui.plot(fig, key="f_arrows")
st.caption(f"Shaded: round {prev}'s log-density. Arrow lengths are on one scale for every round and every t.")
ui.render_content("fields")

st.subheader("From noise to data")
speed = st.select_slider("Speed", list(motion.SPEEDS), value="normal", key="f_speed")
with st.spinner("Sampling the paths..."):
    fig = cached.figure(run, ("paths", k, pair, speed), lambda: motion.paths_player(
        fields.log_density(run, k, pair), fields.paths(run, k, pair), k, labels=labels, speed=speed))
ui.plot(fig, key="f_paths")
