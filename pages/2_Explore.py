"""Explore: run S-MEME rounds on the current run, live."""
from pathlib import Path

import streamlit as st

from smeme import ui
from smeme.services import access, cached, figures, jobs, launch, results, runs, settings, texts

st.title("Explore")
run = ui.run_or_stop("This is an image run: its rounds are shown on the Images page.")
folder = runs.run_folder(run)
st.caption(f"Run **{Path(folder).name}** ({runs.run_dataset(run)}), {len(run.rounds()) - 1} round(s) so far.")
ui.render_content("explore")
dataset = runs.run_dataset(run)
for kind, text in texts.dataset_content("explore", dataset):  # what this data set's numbers mean
    if kind == "latex":
        st.latex(text)
    else:
        st.markdown(text)

busy = runs.busy_message(folder)
if ui.viewer():  # viewers watch: no settings to change, nothing to start
    ui.viewer_note()
else:
    defaults = settings.explore_defaults(run)
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    solver = c1.radio("Solver", settings.SOLVERS, format_func=settings.SOLVER_NAMES.get, key="x_solver",
                      index=settings.SOLVERS.index(defaults.get("solver", "adjoint"))
                      if defaults.get("solver") in settings.SOLVERS else 0)
    lam = c2.slider("λ per round", 0.01, 0.9, float(defaults.get("lam", 0.1)), 0.01, key="x_lam",
                    help="Reward −λ log p of the previous round; 1/λ is the mirror-descent step's α.")
    schedule = c2.radio("λ schedule", settings.LAM_SCHEDULES, horizontal=True, key="x_sched",
                        index=settings.LAM_SCHEDULES.index(defaults.get("lam_schedule", "constant"))
                        if defaults.get("lam_schedule") in settings.LAM_SCHEDULES else 0)
    iters = c3.number_input("Solver iterations per round", 1, 2000, int(defaults["iterations"]), key="x_iters")
    k_rounds = c3.number_input("K (rounds)", 1, 20, 3, key="x_k")
    seed = c4.number_input("Seed", 0, 10_000, int(defaults.get("seed", 0)), key="x_seed")
    target = c1.radio("Reward", settings.REWARD_TARGETS, format_func=settings.REWARD_TARGET_NAMES.get,
                      key="x_target", index=settings.REWARD_TARGETS.index(defaults.get("reward_target", "smoothed"))
                      if defaults.get("reward_target") in settings.REWARD_TARGETS else 0,
                      help="The smoothed reward tilts towards p·p(·, t_r)^−λ, which equals the paper's p^(1−λ) only "
                           "where every direction is much wider than the noise at t_r.")

    b1, b2 = st.columns(2)  # the job panel below carries the one Stop button while rounds run
    start_one = b1.button("Run next round", type="primary", disabled=busy is not None, key="x_one", width="stretch")
    start_k = b2.button(f"Run {int(k_rounds)} rounds", disabled=busy is not None, key="x_k_btn", width="stretch")
    if start_one or start_k:
        try:
            config = settings.explore_config(defaults, solver=solver, lam=lam, lam_schedule=schedule,
                                             iterations=int(iters), seed=int(seed), reward_target=target)
            launch.start_rounds(folder, 1 if start_one else int(k_rounds), config, owner=ui.owner())
            st.rerun()
        except (jobs.JobBusy, access.ReadOnlyError, ValueError) as exc:  # ExploreError is a ValueError
            st.error(str(exc))
    elif busy and (jobs.get(folder, "explore") is None or not jobs.get(folder, "explore").running):
        st.warning(busy)


def show_results():
    r = runs.open_run(folder)
    tl = cached.timeline(r)
    if len(tl):
        ui.metric_row(tl, dataset)
        health = results.solver_health(r.metrics().get(r.latest_round, {}))
        if health:
            st.caption(f"Solver health, round {r.latest_round}: {health}")
    ui.plot(cached.figure(r, ("timeline",), lambda: figures.timeline(tl, runs.timeline_panels(r),
                                                                       title="Metrics per round")),
            key="x_timeline")
    rounds = r.rounds()
    shown = rounds[-2:] if len(rounds) >= 2 else rounds

    def build():
        panels = [(f"round {k}" + (" (pre-trained)" if k == 0 else ""), cached.plane(r, cached.samples(r, k)))
                  for k in shown]
        cats = runs.color_categories(r, [cached.samples(r, k) for k in shown])
        return figures.scatter_panels(panels, overlay=cached.overlay(r), labels=cached.plane_labels(r), colors=cats,
                                      ranges=cached.plane_ranges(r), height=420,
                                      title="Newest samples beside the previous round's (same noise)")
    ui.plot(cached.figure(r, ("samples", tuple(shown)), build), key="x_samples")


status = ui.job_panel(folder, "explore", key="x_job", extra=show_results)
if status != jobs.RUNNING:
    launch.start_deferred_metrics(folder, owner=ui.owner())  # rounds saved without their PF-ODE metrics
    ui.job_panel(folder, "metrics", show_loss=False, key="x_metrics")
    show_results()
    st.download_button("Download metrics (JSON)", results.metrics_json(run), file_name="metrics.json",
                       mime="application/json", key="x_dl_metrics")
