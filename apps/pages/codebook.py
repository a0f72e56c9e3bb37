"""Codebook: how the discrete bottleneck (or a k-means codebook of the states) is used, step by step."""

from __future__ import annotations

import streamlit as st

from apps import ui, zoo
from apps.adapters import analysis as an
from workbench.figures import CODEBOOK_VIEWS, codebook_figure

st.title("Codebook analysis")
st.caption("Per loop step: codes used, perplexity, dead codes, accuracy of the decoded code against the exact "
           "algorithm, the embeddings' geometry and the distance of the latents from the codebook. ACT and WARP "
           "have no discrete bottleneck: they get a k-means codebook of their states.")

ui.query_names("samples", "seed", "nodes", "k")
picked = ui.pick_model(zoo.ANALYSIS_FAMILIES, key="codebook_model", prefer=zoo.names_of("reasoner"))
if picked is None:
    st.stop()
model, family = picked.model, picked.family

DEFAULT_N = {"reasoner": 16, "act": 300, "warp": 100}
TITLES = {"usage": "Usage", "accuracy": "Accuracy by depth", "confusion": "Confusion", "pca": "Embeddings (PCA)",
          "fourier": "Fourier spectrum", "drift": "Drift"}


@st.cache_data(max_entries=16, show_spinner=False)
def _report(key, family, n, seed, k, nodes, _model):
    return an.codebook(_model, family, n, seed, k=k, n_nodes=nodes)


c1, c2, c3 = st.columns(3)
lo, hi = an.CODEBOOK_N[family]
n = ui.number("Samples", where=c1, lo=lo, hi=hi, value=DEFAULT_N[family], key=f"codebook_n_{family}",
              query="samples")
seed = ui.number("Seed", where=c2, lo=0, hi=ui.SEED_MAX, value=0, key="codebook_seed", query="seed")
k, nodes = 8, None
if family == "reasoner":
    train_n = int(model.cfg.task.get("n_nodes", 16)) if model.cfg.task else 16
    nodes = ui.number("Nodes", where=c3, lo=2, hi=model.cfg.name_pool, value=min(train_n, 16), key="codebook_nodes",
                      query="nodes")
    ui.need(nodes)
else:
    k = ui.number("Clusters k", where=c3, lo=2, hi=256, value=8 if family == "act" else 16,
                  key=f"codebook_k_{family}", query="k")
ui.need(n, seed, k)

with ui.guard("Codebook analysis"):
    with st.spinner("Rolling out and analysing the codes…"):
        rep = _report(picked.key, family, n, seed, k, nodes, model)
    repair = rep.meta.get("repair")
    cols = st.columns(3)
    cols[0].metric("steps", len(rep.df))
    cols[1].metric("perplexity at the last step", f"{rep.df['perplexity'].iloc[-1]:.2f}")
    if repair:
        cols[2].metric("one-step repair rate", f"{repair['repair_rate']:.3f}",
                       help=f"{repair['corrupted']} corrupted slots")
    views = [v for v in CODEBOOK_VIEWS if v == "usage" or v in rep.tables]
    for tab, which in zip(st.tabs([TITLES[v] for v in views]), views):
        with tab, ui.guard(TITLES[which]):
            kwargs = {}
            if which == "confusion":
                kwargs["step"] = st.selectbox("Step", list(range(len(rep.df))), index=len(rep.df) - 1,
                                              key="codebook_confusion_step")
            st.plotly_chart(codebook_figure(rep, which=which, **kwargs), key=f"codebook_{which}")
    st.dataframe(rep.df, hide_index=True)
    ui.download_csv(rep.df, f"codebook_{family}.csv", key="codebook_csv")
