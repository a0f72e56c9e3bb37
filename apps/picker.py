"""The view picker of the explorer's pages, without torch: Home uses it before ``apps.ui`` is loaded."""

from __future__ import annotations

import streamlit as st


def view_picker(views: list[str], key: str, label: str = "View", default: str | None = None) -> str:
    """The one view of a page that is shown, and the only one that computes.

    A segmented control, not tabs: tabs run every tab's code on every rerun, hidden ones
    included. The choice follows the page's link as ``?<key>=<view>`` (``/reasoner?reasoner_view=Attention``),
    so every view is deep-linkable; an unknown value falls back to the first view. ``default``:
    the view shown when the link names none (the first view when None).
    """
    if key in st.session_state and st.session_state[key] not in views:
        del st.session_state[key]
    default = default if default in views else views[0]
    chosen = st.segmented_control(label, views, default=default, required=True, key=key, bind="query-params")
    return chosen if chosen in views else views[0]
