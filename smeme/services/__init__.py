"""What the app needs, without Streamlit: places and defaults (settings), runs on disk
(runs), saved metrics as tables (results), cached samples / heatmaps / figures (cached),
background work (jobs, launch), the Images page's runs and jobs (image_runs) and the
Plotly figures (figures).

Inside: jobs, settings -> results -> runs -> cached -> launch; runs -> image_runs;
figures stands alone.

The Streamlit widgets the pages share are in smeme.ui; pages and app.py only lay out.
"""
from .. import images  # noqa: F401  (registers the digits data set and the image model kinds)
