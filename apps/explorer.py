"""Streamlit explorer: ``streamlit run apps/explorer.py`` (or ``make app``).

One page per model family and one per analysis (``apps/pages/``); every figure comes from a
pure builder in ``apps/views/``, every model computation from ``apps/adapters/``. A page's
``?model=`` query parameter opens it on a zoo name or a checkpoint folder, and its number
fields take query parameters too (``/reasoner?model=reasoner&steps=4``); values out of range
are refused with a message. A model page shows one view at a time (a segmented control, not
tabs, so only the view on screen computes); the view is in the link too
(``/reasoner?model=reasoner&reasoner_view=Attention``).

Every page runs through this script (page setup, threads, the error guard), also when the
first request opens a page's URL directly: see ``apps.ui.through_explorer``. Home, opened before
any other page, runs without ``apps.ui`` (which imports torch), so the explorer opens in seconds.

Checkpoint folders outside the zoo open only under the folder named by the environment
variable ``WORKBENCH_MODELS_ROOT`` (``WORKBENCH_MODELS_ROOT=runs streamlit run
apps/explorer.py``); without it, pages open zoo models only.
"""

from __future__ import annotations

import sys

import streamlit as st

st.set_page_config(page_title="Loop workbench", layout="wide")

HOME = st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)
PAGES = {
    "Overview": [HOME],
    "Models": [
        st.Page("pages/reasoner.py", title="Reasoner", icon=":material/account_tree:"),
        st.Page("pages/act.py", title="ACT", icon=":material/hourglass_top:"),
        st.Page("pages/warp.py", title="WARP", icon=":material/ssid_chart:"),
        st.Page("pages/gain.py", title="Gain", icon=":material/tune:"),
    ],
    "Analyses": [
        st.Page("pages/patching.py", title="Patching", icon=":material/healing:"),
        st.Page("pages/probing.py", title="Probing", icon=":material/search:"),
        st.Page("pages/codebook.py", title="Codebook", icon=":material/grid_view:"),
        st.Page("pages/dynamics.py", title="Dynamics", icon=":material/cyclone:"),
    ],
}

page = st.navigation(PAGES)
if page.url_path == HOME.url_path and "apps.ui" not in sys.modules:
    # Home reads the zoo's files only: opened first, it does not wait for apps.ui's imports (torch)
    try:
        page.run()
    except Exception as e:  # noqa: BLE001 - a last safety net; Streamlit's stop / rerun are BaseExceptions
        st.error(f"The Home page failed: {type(e).__name__}: {e}")
else:
    from apps import ui

    ui.setup_threads()
    with ui.entry(), ui.guard(f"The {page.title} page failed"):  # a last safety net: a message, never a traceback
        page.run()
