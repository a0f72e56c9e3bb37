"""Codebook: how the discrete bottleneck (or a k-means codebook of the states) is used, step by step."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui, zoo
from apps.adapters import analysis as an
from workbench.figures import CODEBOOK_VIEWS, codebook_figure

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Codebook analysis")
st.caption("Per loop step: codes used, perplexity, dead codes, accuracy of the decoded code against the exact "
           "algorithm, the embeddings' geometry and the distance of the latents from the codebook. ACT and WARP "
           "have no discrete bottleneck: they get a k-means codebook of their states.")

picked = model_pick.pick_model(zoo.ANALYSIS_FAMILIES, key="codebook_model")
if picked is None:
    st.stop()
model, family = picked.model, picked.family
try:
    study = an.check(model, family)  # what the codebook report reads for this family, and its options
    options = study.options(model, "codebook")
except ValueError as e:
    ui.error(f"Codebook analysis: {e}")
    st.stop()
ui.query_names("samples", "seed", "codebook_view", *(o.query for o in options if o.query))

TITLES = {"usage": "Usage", "accuracy": "Accuracy by depth", "confusion": "Confusion", "pca": "Embeddings (PCA)",
          "fourier": "Fourier spectrum", "drift": "Drift"}


@st.cache_data(max_entries=16, show_spinner=False)
def _report(key, family, n, seed, options, _model):
    return an.codebook(_model, family, n, seed, **dict(options))


cols = st.columns(2 + len(options))
default_n, lo, hi = study.size("codebook")
n = ui.number("Samples", where=cols[0], lo=lo, hi=hi, value=default_n, key=f"codebook_n_{family}", query="samples")
seed = ui.number("Seed", where=cols[1], lo=0, hi=ui.SEED_MAX, value=0, key="codebook_seed", query="seed")
values = {o.name: ui.option(o, prefix="codebook", family=family, where=where) for o, where in zip(options, cols[2:])}
ui.need(n, seed, *values.values())

with ui.guard("Codebook analysis"):
    with st.spinner("Rolling out and analysing the codes…"):
        rep = _report(picked.key, family, n, seed, tuple(sorted(values.items())), model)
    repair = rep.meta.get("repair")
    cols = st.columns(3)
    cols[0].metric("steps", len(rep.df))
    cols[1].metric("perplexity at the last step", f"{rep.df['perplexity'].iloc[-1]:.2f}")
    if repair:
        cols[2].metric("one-step repair rate", f"{repair['repair_rate']:.3f}",
                       help=f"{repair['corrupted']} corrupted slots")
    shown = [v for v in CODEBOOK_VIEWS if v == "usage" or v in rep.tables]
    titles = [TITLES[v] for v in shown]
    which = shown[titles.index(ui.view_picker(titles, key="codebook_view"))]  # one view computes at a time
    with ui.guard(TITLES[which]):
        kwargs = {}
        if which == "confusion":
            kwargs["step"] = st.selectbox("Step", list(range(len(rep.df))), index=len(rep.df) - 1,
                                          key="codebook_confusion_step")
        st.plotly_chart(codebook_figure(rep, which=which, **kwargs), key=f"codebook_{which}")
    st.dataframe(rep.df, hide_index=True)
    ui.download_csv(rep.df, f"codebook_{family}.csv", key="codebook_csv")
