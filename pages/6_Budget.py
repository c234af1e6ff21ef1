"""Budget: one budget of solver iterations spent on K = 1, 2, 3, 4 rounds (the paper's Figure 2d)."""
import streamlit as st

from smeme import ui
from smeme.explore import ExploreError
from smeme.services import figures, jobs, runs, settings, sweeps

st.title("One budget, more rounds")
run = ui.run_or_stop("The budget sweep runs on the 2-D and table data sets; image runs have their own page.")
folder = runs.run_folder(run)
st.markdown("The paper's Figure 2d: the same number of solver iterations N, spent as K rounds of N / K iterations "
            "each, starting every time from this run's pre-trained model. Each round re-reads its reward from "
            "the model it starts from, so more rounds follow the entropy's gradient more often: with the same "
            "cost, a larger K should end higher. The run itself is not changed (each K is a branch of it).")

defaults = settings.explore_defaults(run)
c1, c2, c3, c4 = st.columns([2, 3, 2, 1])
iterations = c1.number_input("Budget N (solver iterations in all)", 1, 20_000, 4 * int(defaults["iterations"]),
                             key="b_iters")
ks = c2.multiselect("Rounds K", list(range(1, 9)), default=[1, 2, 3, 4], key="b_ks")
lam = c3.slider("λ per round", 0.01, 0.9, float(defaults.get("lam", 0.1)), 0.01, key="b_lam")
seed = c4.number_input("Seed", 0, 10_000, int(defaults.get("seed", 0)), key="b_seed")
again = st.checkbox("Run it again (replaces the earlier results of these settings)", key="b_force")

job = jobs.get(folder, sweeps.KIND)
running = job is not None and job.running
if st.button("Run the sweep", type="primary", disabled=running or not ks, key="b_start"):
    try:
        sweeps.start_budget(folder, int(iterations), ks, dict(defaults, lam=float(lam), seed=int(seed)),
                            force=again)
        st.rerun()
    except (jobs.JobBusy, ExploreError, ValueError) as exc:
        st.error(str(exc))
st.caption(f"{sweeps.sweep_iterations(int(iterations), ks)} solver iterations in all for K = "
           f"{', '.join(map(str, sorted(ks))) or '(none)'}; each K runs N // K iterations a round.")


def show():
    rows = sweeps.budget_rows(folder, int(iterations), ks, float(lam), int(seed))
    if not rows:
        st.caption("No K of this sweep has finished yet.")
        return
    ui.plot(figures.budget_lines(rows), key="b_lines")
    st.dataframe([{"K (rounds)": r["rounds"], "iterations a round": r["iterations_per_round"],
                   "final entropy (k-NN, nats)": None if r["entropy_knn"] is None else round(r["entropy_knn"], 3)}
                  for r in rows], hide_index=True)


if ui.job_panel(folder, sweeps.KIND, show_loss=False, key="b_job", extra=show) != jobs.RUNNING:
    show()
