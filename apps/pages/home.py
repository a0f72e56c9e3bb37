"""Home: the zoo (every shipped model with its card's headline) and the reasoners' OOD figure."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

import models
from apps import ui, zoo
from apps.views.home import headline_figure
from apps.views.reasoner import ood_figure

ui.through_explorer()  # the entry script first, also on a direct link

MODEL_PAGES = ("reasoner", "act", "warp", "gain")  # families with a page of their own, at /<family>


def page_link(name: str) -> str | None:
    """The deep link of a zoo model's page (``/reasoner?model=reasoner-deep``), None for none."""
    try:
        family = zoo.family_of(name)
    except Exception:  # noqa: BLE001 - an unreadable entry: its row says why, it has no page
        return None
    return f"/{family}?{urlencode({'model': name})}" if family in MODEL_PAGES else None


st.title("Loop workbench")
st.caption("Hooked, trained looped models and the tools to look inside every step. Pick a page on the left: "
           "one per model family, one per analysis.")

ui.query_names()
with ui.guard("The zoo"):
    table = zoo.zoo_table()
    st.subheader("The zoo")
    if table.empty:
        st.info("The zoo is empty: train a model, e.g. `workbench train reasoner --preset quick --out "
                "models/zoo/<name>`.")
    else:
        links = [page_link(name) for name in table["model"]]
        table = table.assign(page=links) if any(links) else table
        st.dataframe(table, hide_index=True, column_config={
            "page": st.column_config.LinkColumn("open", display_text=r"/(\w+)\?",
                                                help="the model's page, opened on this model"),
            "headline": st.column_config.TextColumn("headline (model card)", width="large"),
            "value": st.column_config.NumberColumn("value", format="%.4g")})
        if table["value"].notna().any():
            st.plotly_chart(headline_figure(table), key="headline")

with ui.guard("The OOD table"):
    st.subheader("Out-of-distribution generalisation (reasoners)")
    reasoners = zoo.names_of("reasoner")
    ood = zoo.ood_table(reasoners)
    if ood.empty:
        st.info("No reasoner in the zoo has an OOD table yet"
                + ("" if reasoners else " (no reasoner is shipped yet)")
                + ": `workbench eval reasoner --update-zoo` measures fully solved vs number of nodes and stores it.")
    else:
        st.plotly_chart(ood_figure(ood, train_n=zoo.training_size(reasoners)), key="ood")

with ui.guard("The model cards"):
    st.subheader("Model cards")
    for name in models.zoo_names():
        with st.expander(name), ui.guard(f"The card of {name}"):  # one unreadable card is one message
            card = models.resolve(name) / "card.md"
            st.markdown(card.read_text() if card.is_file() else "(no card yet: the model is still being trained)")
