"""Images: digits (8x8, fully offline) and Stable Diffusion (a local folder), as grids under
fixed noise (rows: rounds, columns: samples) with each round's metrics beside them.

Thin: runs, background work, grids and tables come from smeme.services.image_runs; the
metrics shown were saved by the rounds (smeme.images.metrics).
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from smeme import ui
from smeme.bundle import BundleError
from smeme.services import access, image_runs, jobs, runs, settings, texts

settings.setup()
st.title("Images: the same noise through every round")
st.caption("Each row is a round's model, each column one fixed initial noise and noise sequence: "
           "a column shows how S-MEME moves one sample round after round. Digits run at 8x8 and are "
           "enlarged for display only.")

kind = st.radio("Model", ["Digits (8x8, offline)", "Stable Diffusion (local folder)"], horizontal=True,
                key="img_kind")


def _grid_controls(rounds: list[int], key: str):
    c1, c2, c3 = st.columns([3, 1, 1])
    shown = c1.multiselect("Rounds (rows)", rounds, default=rounds[-4:] if len(rounds) > 4 else rounds,
                           key=f"{key}_rounds")
    n = c2.number_input("Samples (columns)", 1, 16, 8, key=f"{key}_n")
    seed = c3.number_input("Noise seed", 0, 10**6, 0, key=f"{key}_seed")
    return sorted(shown), int(n), int(seed)


# ======================================================================================
# digits
if kind.startswith("Digits"):
    if ui.viewer():
        ui.viewer_note()
    else:
        ready = image_runs.ready_manifest()
        if ready is not None and not (image_runs.ready_digits_folder() / "config.json").is_file():
            train = ready.get("train", {})
            c1, c2 = st.columns([1, 3], vertical_alignment="center")
            if c1.button("Use the ready digits model", type="primary", key="img_ready",
                         icon=":material/download_done:"):
                try:
                    folder = image_runs.import_ready_digits()
                    st.session_state["img_digits_pick"] = folder.name
                    st.rerun()
                except (BundleError, access.ReadOnlyError) as exc:
                    st.error(str(exc))
            c2.caption(f"A model pre-trained with this project and shipped with it (checksummed): "
                       f"{train.get('steps', '?')} steps, {texts.percent(train.get('valid_share'))} of its "
                       "samples read as a digit with confidence >= 0.7. Import it and run rounds at once.")
        with st.expander("Pre-train a digits model", expanded=not image_runs.digits_runs() and ready is None):
            st.write("A diffusers UNet2DModel trained on scikit-learn's 8x8 digits (no download). By default "
                     "digits 5-9 keep only a fraction of their images, so exploration has a visible target: "
                     "their share should rise round by round.")
            c1, c2, c3, c4 = st.columns(4)
            name = c1.text_input("Run name", value=f"digits-{time.strftime('%m%d-%H%M')}")
            per_step = image_runs.seconds_per_training_step()
            steps = c2.number_input("Training steps", 50, 20000, 600, step=50, help=None if per_step is None else
                                    f"Measured: {per_step:.2f} s a step ({image_runs.measured_where()}).")
            frac = c3.slider("Share kept of digits 5-9", 0.05, 1.0, 0.2, 0.05)
            seed = c4.number_input("Seed", 0, 10**6, 0)
            if per_step is not None:
                st.caption(f"{int(steps)} steps: about {texts.duration(per_step * int(steps))} at the measured "
                           f"pace ({per_step:.2f} s a step, {image_runs.measured_where()}); a quieter machine is "
                           "faster.")
            if st.button("Pre-train", type="primary", key="img_pretrain"):
                folder = runs.new_run_folder("digits", name)
                try:
                    image_runs.start_digits_training(folder, int(steps), float(frac), int(seed), owner=ui.owner())
                    st.session_state["img_digits_run"] = str(folder)
                except (jobs.JobBusy, access.ReadOnlyError) as exc:
                    st.error(str(exc))
    # every running digits pre-training, whichever session started it, and how this session's ended
    shown_jobs = [j.folder for j in image_runs.running_digits_trainings()]
    pending = st.session_state.get("img_digits_run")
    if pending and str(Path(pending).resolve()) not in shown_jobs:
        shown_jobs.append(pending)
    for i, training in enumerate(shown_jobs):
        ui.job_panel(training, "train", key=f"img_train_{i}")

    digit_runs = image_runs.digits_runs()
    if not digit_runs:
        st.info("No digits model yet: " + ("one is being pre-trained (above)." if shown_jobs else
                                          "use the ready one or pre-train one above." if
                                          image_runs.ready_manifest() is not None else "pre-train one above."))
        st.stop()
    names = [r.name for r in digit_runs]
    if st.session_state.get("img_digits_pick") not in names:
        st.session_state.pop("img_digits_pick", None)
    chosen = st.selectbox("Digits run", names, index=0, key="img_digits_pick")
    folder = digit_runs[names.index(chosen)]
    try:
        run = runs.open_run(folder)
    except Exception as exc:  # noqa: BLE001 - still training or damaged: say which
        st.warning(runs.open_problem(folder, exc))
        st.stop()
    note = runs.damage_note(run)
    if note:
        st.warning(note)
    rounds = run.rounds()

    if not ui.viewer():
        with st.expander("Run S-MEME rounds", expanded=len(rounds) == 1):
            c1, c2, c3 = st.columns(3)
            more = c1.number_input("Rounds to add", 1, 10, 3)
            lam = c2.number_input("lambda (exploration strength)", 0.01, 0.9, 0.1, step=0.05,
                                  help="Each round fine-tunes towards p_prev^(1 - lambda) (paper: 0.1).")
            pace = image_runs.round_seconds(run)
            if pace is not None:
                c1.caption(f"About {texts.duration(pace[0] * int(more))} for {int(more)} round(s) "
                           f"({pace[0]:.0f} s a round: {pace[1]}).")
            if c3.button("Run rounds", type="primary"):
                try:
                    image_runs.start_digits_rounds(folder, int(more), float(lam), owner=ui.owner())
                except (jobs.JobBusy, access.ReadOnlyError) as exc:
                    st.error(str(exc))
    ui.job_panel(str(folder), "explore", key="img_explore")

    shown, n, seed = _grid_controls(rounds, "img_d")
    if not shown:
        st.info("Pick at least one round.")
        st.stop()
    left, right = st.columns([3, 2], gap="medium")
    with left:
        cache_key = ("img_grid", str(folder), tuple(shown), n, seed, tuple(rounds))
        img = st.session_state.get(cache_key)
        if img is None:
            with st.spinner("Sampling every round under the same noise..."):
                img = image_runs.image_grid(run, shown, n=n, seed=seed)
            st.session_state[cache_key] = img
        st.image(img, caption=f"Rows: rounds {shown}; columns: {n} samples, noise seed {seed}")
    with right:
        metrics = run.metrics()
        table = image_runs.metrics_table(metrics, shown, [
            ("rare_share", "rare share"), ("confidence", "confidence"), ("valid_share", "valid"),
            ("frechet_distance", "FD to round 0"), ("diversity", "diversity (Vendi)"),
            ("entropy_knn", "k-NN entropy")])
        shares = ["rare share", "confidence", "valid"]  # shares and probabilities: in percent
        st.dataframe(table.style.format(precision=3).format(texts.percent, subset=shares), width="stretch")
        st.caption("Confidence: the digit classifier's mean top probability (validity proxy); valid: share "
                   "at or above its threshold. FD: Frechet distance to round 0's samples in the classifier's "
                   "feature space (round 0's value is the sampling-noise floor). Diversity: Vendi score, the "
                   "effective number of distinct samples.")
        shares = image_runs.class_shares_table(metrics, shown)
        if shares is not None:
            st.bar_chart(shares, stack=False, x_label="predicted digit", y_label="share (%)")

# ======================================================================================
# Stable Diffusion
else:
    sd_errors = image_runs.sd_errors()
    st.write("Use a local diffusers Stable Diffusion pipeline (nothing is downloaded). Rounds tune a LoRA "
             "adapter with Adjoint Matching on the guided model (classifier-free guidance, w = 8, as the "
             "paper), the one sampling draws from. On a CPU a "
             "real SD round takes hours: run it on a GPU with `python -m smeme sd-explore ...` "
             "(several GPUs: `torchrun --nproc_per_node N -m smeme sd-explore ...`).")
    models = image_runs.sd_models()
    sources = {src: label for label, src in models}
    if not models:
        st.info("No Stable Diffusion pipeline on this server: put a diffusers pipeline folder in the models "
                "folder (SMEME_MODELS_DIR, default cache/models) or in the local Hugging Face cache.")
    missing_weights = image_runs.missing_metric_weights()
    if missing_weights:
        st.info("Metrics: " + " ".join(missing_weights) + " Grids are shown without them.")

    if models and ui.viewer():
        ui.viewer_note()
    elif models:
        with st.expander("Start or continue an SD run", expanded=True):
            src = st.selectbox("Stable Diffusion model", list(sources), format_func=sources.get, key="img_sd_src")
            c1, c2, c3 = st.columns([2, 3, 1])
            name = c1.text_input("Run name", value="sd-creative-architecture", key="img_sd_name")
            prompt = c2.text_input("Prompt", value="A creative architecture.", key="img_sd_prompt")
            more = c3.number_input("Rounds", 1, 10, 3, key="img_sd_more")
            if st.button("Run rounds", type="primary", key="img_sd_start"):
                try:
                    job = image_runs.start_sd_rounds(name, src, prompt, int(more), owner=ui.owner())
                    st.session_state["img_sd_run"] = job.folder
                except (*sd_errors, jobs.JobBusy, access.ReadOnlyError) as exc:
                    st.error(str(exc))

    sd_runs = image_runs.sd_runs()
    if not sd_runs:
        st.info("No Stable Diffusion run yet.")
        st.stop()
    names = [p.name for p in sd_runs]
    pick = st.selectbox("SD run", names, key="img_sd_pick")
    folder = sd_runs[names.index(pick)]
    ui.job_panel(str(folder), "explore", key="img_sd_explore")
    try:
        run, sd_rounds, metrics = image_runs.open_sd_run(folder)
    except sd_errors as exc:
        st.error(runs.open_problem(folder, exc))
        st.stop()
    shown, n, seed = _grid_controls(sd_rounds, "img_s")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        if shown and st.button("Draw the grid", help="Samples each round (cached in the run folder)."):
            try:
                with st.spinner("Sampling and decoding every round under the same noise..."):
                    st.session_state[("img_sd_grid", str(folder))] = image_runs.image_grid(run, shown, n=n, seed=seed)
            except (*sd_errors, ValueError) as exc:
                st.error(str(exc))
        img = st.session_state.get(("img_sd_grid", str(folder)))
        if img is not None:
            st.image(img)
    with right:
        st.dataframe(image_runs.metrics_table(metrics, sd_rounds, [
            ("fid", "FID to round 0"), ("inception_cross_entropy", "Inception cross-entropy"),
            ("clip_score", "CLIP score"), ("seconds", "seconds")]), width="stretch")
        missing = image_runs.metrics_not_computed(metrics)
        if missing:
            st.caption("Not computed: " + " ".join(missing))
