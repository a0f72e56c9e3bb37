"""Streamlit explorer: ``streamlit run apps/explorer.py`` (or ``make app``)."""

from __future__ import annotations

import streamlit as st

import models

st.set_page_config(page_title="Loop workbench", layout="wide")
st.title("Loop workbench")
st.caption("Hooked, trained looped models and the tools to look inside every step.")

names = models.zoo_names()
if not names:
    st.info("The zoo is empty: train a model with `workbench train reasoner --preset quick --out models/zoo/<name>`.")
for name in names:
    with st.expander(name, expanded=False):
        card = models.resolve(name) / "card.md"
        st.markdown(card.read_text() if card.is_file() else "(no card)")
