"""The Streamlit widgets the pages share: run picker, job progress, headline metrics, plots.

The only module of the package that imports Streamlit (besides app.py and pages/); what it
shows comes from smeme.services.
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from .services import access, figures, jobs, motion
from .services.runs import damage_note, is_image_run, list_runs, open_problem, open_run, pick_default_run
from .services.settings import content_blocks, runs_dir

log = logging.getLogger("smeme.app")


def render_content(name: str) -> None:
    for kind, text in content_blocks(name):
        if kind == "latex":
            st.latex(text)
        else:
            st.markdown(text)


def plot(fig, key: str | None = None) -> None:
    if st.session_state.get("projector"):  # the sidebar's toggle: every figure of every page
        fig = motion.projector(fig)
    st.plotly_chart(fig, key=key, config=figures.PLOTLY_CONFIG, theme=None)


def projector_toggle() -> None:
    st.toggle("Projector", key="projector", help="Larger points, lines and fonts, and the previous round drawn "
              "darker: for a class in front of a projector. Applies to every page.")


def owner() -> str:
    """This browser session's token: the jobs it starts are stored with it (who may stop them)."""
    return st.session_state.setdefault("_smeme_owner", uuid.uuid4().hex)


def viewer() -> bool:
    """Read-only viewer mode (SMEME_VIEWER=1): pages hide training, rounds, stops and uploads."""
    return access.viewer_mode()


def viewer_note() -> None:
    st.caption(":material/visibility: " + access.VIEWER_MESSAGE)


def may_stop(job) -> bool:
    return access.may_stop(job, owner(), st.get_option("server.address"))


def stop_job(folder, kind: str) -> None:
    """Stop the job for this session; a refusal (viewer mode, another visitor's job) is shown."""
    try:
        jobs.stop(folder, kind, owner(), st.get_option("server.address"))
    except access.ReadOnlyError as exc:
        st.session_state["_stop_refused"] = str(exc)


def saved_upload(up) -> str:
    """The server-side path of an uploaded file (saved once per upload, not on every rerun)."""
    from .services.settings import save_upload

    paths = st.session_state.setdefault("_upload_paths", {})
    if up.file_id not in paths:
        paths[up.file_id] = str(save_upload(up.name, up.getvalue()))
    return paths[up.file_id]


def shape_picker():
    """A gallery shape with its settings: (points, part names, problem or None)."""
    from .data import DataError
    from .data.shapes import SHAPE_PARTS, SHAPES
    from .services import draw

    c1, c2 = st.columns(2)
    shape = c1.selectbox("Shape", SHAPES, key="d_shape")
    n = c2.number_input("Points", 100, 20_000, 2000, step=500, key="d_n")
    parts = SHAPE_PARTS[shape]
    even = round(1.0 / len(parts), 2)
    rare = c1.slider(f"Share of the {parts[0]} (the rare part)", 0.01, even, even, 0.01, key=f"d_rare_{shape}",
                     help=f"Balanced at {even:.0%}; lower makes the {parts[0]} rare, and S-MEME's task is to find it.")
    jitter = c2.slider("Jitter width", 0.0, 0.3, 0.06, 0.01, key="d_jitter_shape")
    try:
        pts, names = draw.gallery_points(shape, int(n), float(rare), float(jitter))
    except DataError as exc:
        return np.zeros((0, 2)), None, str(exc)
    return pts, names, None


def drawing_canvas():
    """A drawing canvas with its brush: (points, None, problem or None)."""
    from streamlit_drawable_canvas import st_canvas  # a Streamlit component: imported where it is drawn

    from .data import DataError
    from .data.shapes import MIN_POINTS
    from .services import draw

    c1, c2, c3 = st.columns(3)
    brush = c1.radio("Brush", ["strokes", "dots"], horizontal=True, key="d_brush")
    copies = c2.slider("Brush density (points per dab)", 1, 30, 4, key="d_density")
    jitter = c3.slider("Jitter width", 0.0, 0.5, 0.08, 0.01, key="d_jitter")
    width, height = draw.CANVAS_SIZE
    result = st_canvas(stroke_width=6, stroke_color="#4C78A8", background_color="#FFFFFF", height=height,
                       width=width, drawing_mode="freedraw" if brush == "strokes" else "point",
                       point_display_radius=4, key="d_canvas")
    try:
        pts = draw.drawing_points(getattr(result, "json_data", None), width, height, draw.BRUSH_SPACING,
                                  float(jitter), int(copies))
    except DataError as exc:
        return np.zeros((0, 2)), None, str(exc)
    if len(pts) < MIN_POINTS:
        return pts, None, (f"The drawing makes {len(pts)} points; at least {MIN_POINTS} are needed "
                           "(draw more, or raise the brush density).")
    return pts, None, None


def select_run(folder) -> None:
    """Make `folder` this session's run (and remember it in the URL, so a reload keeps it)."""
    st.session_state["run"] = str(Path(folder).resolve())
    try:
        st.query_params["run"] = Path(folder).name
    except Exception:  # noqa: BLE001 - query params are a nicety
        pass


def training_folder() -> str | None:
    """The folder of a training job this session should watch: the one it started, else a
    training still running for the run named in the URL (a reload), else the newest one."""
    folder = st.session_state.get("training")
    if folder:
        return folder
    running = [j for j in jobs.active() if j.kind == "train" and not j.topic]  # digits: the Images page
    if not running:
        return None
    name = st.query_params.get("run")
    pick = next((j.folder for j in running if name and Path(j.folder).name == name), running[-1].folder)
    st.session_state["training"] = pick  # keep showing it (and how it ended) in this session
    return pick


def run_or_stop(image_note: str | None = None):
    """The session's run for a page; stops the page with a note when there is none, or, with
    `image_note`, when it is an image run (whose rounds have their own page)."""
    run = current_run()
    if run is None:
        st.info("Open or train a model first (Home or Model page).")
        st.page_link("pages/1_Model.py", label="Model page", icon=":material/model_training:")
        st.stop()
    if image_note is not None and is_image_run(run):
        st.info(image_note)
        st.stop()
    return run


def current_run():
    """The run chosen in this session (st.session_state['run']), else the one named in the
    URL (?run=name, survives a reload), else the default / newest run; None if there is none."""
    folder = st.session_state.get("run")
    if not folder:
        name = st.query_params.get("run")
        if name and (runs_dir() / Path(name).name).is_dir():
            folder = str((runs_dir() / Path(name).name).resolve())
        else:
            folder = pick_default_run()
        if not folder:
            return None
        st.session_state["run"] = folder
    try:
        run = open_run(folder)
    except Exception as exc:  # noqa: BLE001 - e.g. still training, or damaged: say so
        if jobs.busy(folder) is None:
            log.warning("cannot open the run %s", folder, exc_info=True)  # details for the server's log
            st.warning(open_problem(folder, exc))
        return None
    note = damage_note(run)
    if note:
        st.warning(note)
    return run


def openable(rows: list[dict]) -> list[str]:
    """The folders a run picker offers: runs that open, and damaged ones (opening says why)."""
    return [r["folder"] for r in rows if r["latest"] is not None or r.get("damaged")]


def run_label(row: dict) -> str:
    return f"{row['name']} (damaged)" if row.get("damaged") else f"{row['name']} ({row['dataset']})"


LOSS_REDRAW_S = 3.0


def job_panel(folder, kind: str, *, show_loss: bool = True, key: str | None = None,
              poll: float = 0.8, extra=None) -> str | None:
    """Show a job's progress, live; returns its status (None if no job).

    While the job runs, a fragment reruns every `poll` seconds (progress moves at least
    once a second) and, when the job ends, reruns the whole page once so that the result
    appears. The loss curve is rebuilt at most every LOSS_REDRAW_S seconds (an unchanged
    figure is not redrawn by the browser): redrawing it at every poll cost the browser and
    the server more than a core, and training ran 4x slower beside it (bench_app.py). A
    finished job's outcome (error / stopped) is shown statically. `extra()`, if
    given, is drawn inside the live fragment after the progress (e.g. the metrics of the
    rounds finished so far), so it refreshes while the job runs."""
    job = jobs.get(folder, kind)
    if job is None:
        return None
    key = key or f"job_{kind}"
    seen = st.session_state.setdefault("_jobs_seen", set())

    if not job.running:
        seen.add(job.id)
        snap = job.snapshot()
        if snap["status"] == jobs.FAILED:
            st.error(snap["error"])
        elif snap["status"] == jobs.CANCELLED:
            st.warning(f"{job.label or kind}: stopped after {snap['elapsed']:.0f} s.")
        return snap["status"]

    @st.fragment(run_every=poll)
    def _live():
        snap = job.snapshot()
        if snap["status"] != jobs.RUNNING:
            if job.id not in seen:
                seen.add(job.id)
                st.rerun(scope="app")
            return
        cols = st.columns([5, 1], vertical_alignment="center")
        cols[0].progress(snap["fraction"], text=jobs.progress_text(snap))
        if may_stop(job):  # only where the rights allow (services.access): hidden, not greyed out
            cols[1].button("Stop", key=f"{key}_stop", on_click=stop_job, args=(job.folder, job.kind),
                           disabled=snap["cancel_requested"], width="stretch")
        elif not viewer():
            cols[1].caption("Started in another session: only it can stop this job.")
        refused = st.session_state.pop("_stop_refused", None)
        if refused:
            st.warning(refused)
        if show_loss and snap["losses"]:
            drawn = st.session_state.setdefault("_job_loss_figures", {})
            hit = drawn.get(key)
            if hit is None or hit[0] != job.id or time.time() - hit[1] >= LOSS_REDRAW_S:
                hit = drawn[key] = (job.id, time.time(),
                                    figures.loss_curve(snap["losses"], title=f"{job.label or kind}: loss"))
            plot(hit[2], key=f"{key}_loss")
        if extra is not None:
            extra()

    _live()
    return jobs.RUNNING


def sidebar() -> None:
    """Run picker and running jobs, on every page. While jobs run, it redraws itself every
    SIDEBAR_POLL_S seconds, so that it never says a run is in preparation after the page has
    said the model is ready."""
    owner()  # this session's token from its first page on
    if not st.session_state.get("run"):
        current_run()  # resolves the session's run: URL (?run=), else default / newest

    @st.fragment(run_every=SIDEBAR_POLL_S if jobs.active() else None)
    def _sidebar():
        runs = list_runs()
        folders = openable(runs)
        names = {r["folder"]: run_label(r) for r in runs}
        cur = st.session_state.get("run")
        if cur and cur not in folders:  # the run the page acts on, still training (or just imported)
            folders.insert(0, cur)
            job = jobs.busy(cur)
            names[cur] = f"{Path(cur).name} (" + (f"training: {job.fraction:.0%})" if job is not None
                                                  else "in preparation)")
        if folders:
            idx = folders.index(cur) if cur in folders else None
            choice = st.selectbox("Run", folders, index=idx, format_func=lambda f: names.get(f, Path(f).name),
                                  placeholder="Choose a run", key=f"_sidebar_run_{cur}")
            if choice and choice != cur:
                select_run(choice)
                st.rerun(scope="app")
        else:
            st.caption("No runs yet: train one on the Home or Model page.")
        for j in jobs.active():
            st.caption(f":material/hourglass_top: {Path(j.folder).name}: {j.label or j.kind} ({j.fraction:.0%})")

    with st.sidebar:  # a fragment writes only inside its own container
        _sidebar()
        projector_toggle()  # outside the fragment: toggling it reruns the whole page


SIDEBAR_POLL_S = 2.0


HEADLINE = [("entropy", "Entropy (k-NN)", "{:.3f}"), ("off_support", "Off support", "{:.1%}"),
            ("surprise", "Surprise", "{:.3f}"), ("sparse_share", "Sparse share", "{:.1%}")]
# triangles: the off-support share split into its two parts, so the three tiles add up
TRIANGLE_PARTS = [("not_triangle", "Not a triangle", "{:.1%}"), ("too_large", "Too large", "{:.1%}")]


def _with_parts(row) -> dict:
    """The row with the triangles' off-support parts (services.texts.support_parts) as shares."""
    from .services.texts import support_parts

    out = {k: row.get(k) for k in ("entropy", "off_support", "surprise", "sparse_share", "on_support", "validity")}
    parts = support_parts({k: v for k, v in out.items() if v is not None and pd.notna(v)})
    if parts is not None:
        out.update(off_support=parts["off_support"] / 100, not_triangle=parts["not_triangle"] / 100,
                   too_large=parts["too_large"] / 100)
    return out


DEFERRED_TILES = {"surprise"}  # computed after the round is saved (services.launch.start_deferred_metrics)
COMPUTING = "computing…"


def _headline(now, before, title: str, triangles: bool = False) -> None:
    """HEADLINE metrics of `now` (a dict or a timeline row) with the change from `before`; a
    deferred metric still being computed shows as COMPUTING."""
    spec = HEADLINE[:2] + TRIANGLE_PARTS + HEADLINE[2:] if triangles else HEADLINE
    waiting = bool(now.get("deferred_pending"))
    if triangles:
        now, before = _with_parts(now), None if before is None else _with_parts(before)
    known = lambda name: now.get(name) is not None and pd.notna(now.get(name))  # noqa: E731
    items = [it for it in spec if known(it[0]) or (waiting and it[0] in DEFERRED_TILES)]
    if not items:
        return
    st.markdown(title)
    cols = st.columns(len(items))
    for col, (name, label, fmt) in zip(cols, items):
        if not known(name):
            col.metric(label, COMPUTING, help="Computed after the round was saved, in the background; "
                       "shown here when ready.")
            continue
        delta = None
        if before is not None and before.get(name) is not None and pd.notna(before.get(name)):
            d = float(now[name] - before[name])
            delta = fmt.format(d) if "%" not in fmt else f"{d * 100:+.1f} pts"
        col.metric(label, fmt.format(float(now[name])), delta=delta,
                   delta_color="inverse" if name == "off_support" else "normal")


def metric_row(tl: pd.DataFrame, dataset: str | None = None) -> None:
    """The latest round's headline metrics, with the change from the round before; for
    triangles, off support = not a triangle + too large (longest side >= 1), tile by tile."""
    last = tl.iloc[-1]
    prev = tl.iloc[-2] if len(tl) >= 2 else None
    _headline(last, prev, f"**Round {int(last['round'])}**"
              + (f" (change from round {int(prev['round'])})" if prev is not None else ""),
              triangles=dataset == "triangles")


def compare_metrics(ra: dict, rb: dict, names: tuple[str, str]) -> None:
    """Headline metrics of round b, with the change from round a."""
    _headline(rb, ra, f"**{names[1]}** (change from {names[0]})")


PLAY_EVERY_S = 1.5


def round_stepper(rounds: list[int], draw, key: str = "step", every: float = PLAY_EVERY_S) -> int:
    """A 'Round' slider with a Play / Pause button over `rounds`; `draw(k)` draws round k.

    Slider, button and frame live in one fragment: moving the slider reruns only the
    fragment (draw(k) should be a cache lookup). While playing, the fragment reruns every
    `every` seconds and each run shows the next round; at the last round it stops. Play and
    Pause rerun the whole page, which (re)registers the fragment with or without its timer.
    Returns the round shown."""
    at, playing, fresh = f"{key}_round", f"{key}_playing", f"{key}_fresh"
    if st.session_state.get(at) not in rounds:
        st.session_state[at] = rounds[-1]

    @st.fragment(run_every=every if st.session_state.get(playing) else None)
    def stepper():
        c1, c2 = st.columns([1, 8], vertical_alignment="bottom")
        if c1.button("Pause" if st.session_state.get(playing) else "Play", key=f"{key}_play",
                     icon=":material/pause:" if st.session_state.get(playing) else ":material/play_arrow:",
                     disabled=len(rounds) < 2, width="stretch"):
            start = not st.session_state.get(playing)
            st.session_state[playing] = start
            if start:
                st.session_state[fresh] = True  # this click's own run shows the round it starts from
                if st.session_state[at] == rounds[-1]:
                    st.session_state[at] = rounds[0]
            st.rerun(scope="app")
        if st.session_state.get(playing) and not st.session_state.pop(fresh, False):
            later = [r for r in rounds if r > st.session_state[at]]
            if later:
                st.session_state[at] = later[0]
            if len(later) <= 1:  # the last round is on screen now: stop, and drop the timer
                st.session_state[playing] = False
                st.session_state[fresh] = True
        with c2:
            k = st.select_slider("Round", options=rounds, key=at,
                                 format_func=lambda r: f"{r} (pre-trained)" if r == 0 else str(r))
        draw(k)
        if st.session_state.pop(fresh, False) and not st.session_state.get(playing):
            st.rerun(scope="app")  # played to the end: rerun once without the timer

    stepper()
    return st.session_state[at]
