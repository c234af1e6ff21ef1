"""What the app needs, without Streamlit: places and defaults (settings), runs on disk
(runs), saved metrics as tables (results), cached samples / heatmaps / figures (cached),
background work (jobs, launch), the Images page's runs and jobs (image_runs), the Plotly
figures (figures), the Rounds page's frames (stepper), run bundles (bundles), the budget
sweep (sweeps) and the ready demo (demo).

Inside: jobs, settings -> results -> runs -> cached -> launch -> demo; runs -> image_runs;
cached -> stepper; runs -> bundles; jobs -> sweeps; figures stands alone.

The Streamlit widgets the pages share are in smeme.ui; pages and app.py only lay out.
"""
from .. import images  # noqa: F401  (registers the digits data set and the image model kinds)
