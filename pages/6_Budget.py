"""Budget: one budget of solver iterations spent on K = 1, 2, 3, 4 rounds (the paper's Figure 2d)."""
import streamlit as st

from smeme import ui
from smeme.explore import ExploreError
from smeme.services import access, figures, jobs, runs, settings, sweeps

st.title("One budget, more rounds")
run = ui.run_or_stop("The budget sweep runs on the 2-D and table data sets; image runs have their own page.")
folder = runs.run_folder(run)
st.markdown("The paper's Figure 2d: the same number of solver iterations N, spent as K rounds of N / K iterations "
            "each, starting every time from this run's pre-trained model. Each round re-reads its reward from "
            "the model it starts from, so more rounds follow the entropy's gradient more often: with the same "
            "cost, a larger K should end higher. The run itself is not changed (each K is a branch of it).")

defaults = settings.explore_defaults(run)
done = sweeps.existing_sweeps(folder)


def sweep_label(s: dict) -> str:
    return f"N = {s['iterations']}, λ = {s['lam']:g}, seed {s['seed']} (K = {', '.join(map(str, s['ks']))})"


def load_sweep(s: dict) -> None:
    """Show sweep `s`: its settings go into the widgets below."""
    st.session_state.update(b_iters=s["iterations"], b_lam=float(s["lam"]), b_seed=s["seed"],
                            b_ks=[k for k in s["ks"] if 1 <= k <= 8] or [1])


if done:
    labels = [sweep_label(s) for s in done]
    if st.session_state.get("b_folder") != folder:  # a new run (or first visit): open its latest sweep
        st.session_state["b_folder"] = folder
        st.session_state["b_sweep"] = labels[0]
        load_sweep(done[0])
    if st.session_state.get("b_sweep") not in labels:
        st.session_state["b_sweep"] = labels[0]
    st.selectbox("Sweeps on this run (newest first)", labels, key="b_sweep",
                 on_change=lambda: load_sweep(done[labels.index(st.session_state["b_sweep"])]))
else:
    if st.session_state.get("b_folder") != folder:  # another run's settings do not carry over
        for key in ("b_iters", "b_lam", "b_seed", "b_ks", "b_sweep"):
            st.session_state.pop(key, None)
    st.session_state["b_folder"] = folder
    st.caption("No sweep has been run on this run yet.")

if ui.viewer():  # viewers see the sweeps that exist, nothing to change or start
    ui.viewer_note()
    if not done:
        st.stop()
    chosen = done[[sweep_label(s) for s in done].index(st.session_state["b_sweep"])]
    iterations, ks, lam, seed = chosen["iterations"], chosen["ks"], chosen["lam"], chosen["seed"]
else:
    for k, v in (("b_iters", 4 * int(defaults["iterations"])), ("b_ks", [1, 2, 3, 4]),
                 ("b_lam", float(defaults.get("lam", 0.1))), ("b_seed", int(defaults.get("seed", 0)))):
        st.session_state.setdefault(k, v)  # the widgets read their values from here (load_sweep sets them)
    c1, c2, c3, c4 = st.columns([2, 3, 2, 1])
    iterations = c1.number_input("Budget N (solver iterations in all)", 1, 20_000, key="b_iters")
    ks = c2.multiselect("Rounds K", list(range(1, 9)), key="b_ks")
    lam = c3.slider("λ per round", 0.01, 0.9, step=0.01, key="b_lam")
    seed = c4.number_input("Seed", 0, 10_000, key="b_seed")
    again = st.checkbox("Run it again (replaces the earlier results of these settings)", key="b_force")
    job = jobs.get(folder, sweeps.KIND)
    running = job is not None and job.running
    if st.button("Run the sweep", type="primary", disabled=running or not ks, key="b_start"):
        try:
            sweeps.start_budget(folder, int(iterations), ks, dict(defaults, lam=float(lam), seed=int(seed)),
                                force=again, owner=ui.owner())
            st.rerun()
        except (jobs.JobBusy, ExploreError, access.ReadOnlyError, ValueError) as exc:
            st.error(str(exc))
    st.caption(f"{sweeps.sweep_iterations(int(iterations), ks)} solver iterations in all for K = "
               f"{', '.join(map(str, sorted(ks))) or '(none)'}; each K runs N // K iterations a round.")


def show():
    rows = sweeps.budget_rows(folder, int(iterations), ks, float(lam), int(seed))
    if not rows:
        st.caption(f"No K of the sweep N = {int(iterations)}, λ = {float(lam):g}, seed {int(seed)} has finished yet.")
        return
    ui.plot(figures.budget_lines(rows), key="b_lines")
    st.dataframe([{"K (rounds)": r["rounds"], "iterations a round": r["iterations_per_round"],
                   "final entropy (k-NN, nats)": None if r["entropy_knn"] is None else round(r["entropy_knn"], 3)}
                  for r in rows], hide_index=True)


if ui.job_panel(folder, sweeps.KIND, show_loss=False, key="b_job", extra=show) != jobs.RUNNING:
    show()
