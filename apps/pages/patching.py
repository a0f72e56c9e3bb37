"""Patching: exact activation patching or attribution patching over every loop step."""

from __future__ import annotations

import streamlit as st

from apps import ui, zoo
from apps.adapters import analysis as an
from apps.views.analysis import AGGREGATES, loop_grid_figure, top_sites_figure
from workbench.figures import site_map

st.title("Activation patching")
st.caption("Run a corrupted input, write the clean activation into one site, and measure how much of the clean "
           "behaviour comes back: score 0 = as corrupted, 1 = as clean. Attribution patching estimates the same "
           "from one backward pass.")

ui.query_names("inputs", "seed", "nodes", "stride")
picked = ui.pick_model(zoo.ANALYSIS_FAMILIES, key="patching_model", prefer=zoo.names_of("reasoner"))
if picked is None:
    st.stop()
model, family = picked.model, picked.family


@st.cache_data(max_entries=32, show_spinner=False)
def _patch(key, family, n, seed, nodes, metric, patterns, positions, heads, stride, method, ablation, _model):
    s = an.setup(_model, family, n, seed, metric, n_nodes=nodes)
    sel = an.sites(patterns, positions, heads, time_stride=stride, time_steps=s.time_steps)
    return an.run_patching(_model, s, sel, method=method, ablation=ablation), s.description


c1, c2, c3, c4 = st.columns(4)
lo, hi = an.N_RANGE[family]
n = ui.number("Inputs", where=c1, lo=lo, hi=hi, value=an.DEFAULT_N[family], key=f"patch_n_{family}", query="inputs",
              help="clean / corrupted pairs in the batch (scores use the batch mean)")
seed = ui.number("Seed", where=c2, lo=0, hi=ui.SEED_MAX, value=0, key="patch_seed", query="seed")
nodes = None
if family == "reasoner":
    train_n = int(model.cfg.task.get("n_nodes", 16)) if model.cfg.task else 16
    nodes = ui.number("Nodes", where=c3, lo=2, hi=model.cfg.name_pool, value=min(train_n, 16), key="patch_nodes",
                      query="nodes", help=f"graph size (trained on N = {train_n})")
    ui.need(nodes)
metric = c4.selectbox("Metric", an.METRICS[family], key=f"patch_metric_{family}")

d1, d2 = st.columns(2)
method = d1.radio("Method", an.METHODS, horizontal=True, key="patch_method")
ablation = d2.selectbox("Ablation", [None, "zero", "mean", "resample"], key="patch_ablation",
                        format_func=lambda a: "none (patch clean into corrupted)" if a is None else a)
default_sites, default_pos = an.DEFAULT_SITES[family]
s1, s2, s3, s4 = st.columns([3, 1, 1, 1])
patterns = ui.text("Sites (hook names or globs)", where=s1, limit=2000, value=default_sites,
                   key=f"patch_sites_{family}",
                   help="e.g. steps.*.blocks.*.hook_resid_pre, steps.*.blocks.1.attn.hook_z, time.*.hook_theta")
positions = ui.text("Positions", where=s2, limit=1000, value=default_pos, key=f"patch_pos_{family}",
                    help="each, none or 0,3,7")
heads = ui.text("Heads", where=s3, limit=1000, value="none", key=f"patch_heads_{family}",
                help="each, none or 0,1 (attention hooks)")
stride = ui.number("Every k-th time step", where=s4, lo=1, hi=max(1, int(getattr(model.cfg, "seq_len", 1024))),
                   value=8, key="patch_stride", query="stride") if family == "warp" else None
ui.need(n, seed, patterns, positions, heads, stride if family == "warp" else 0)

with ui.guard("Patching"):
    with st.spinner("Patching every site…"):
        res, description = _patch(picked.key, family, int(n), int(seed), nodes, metric, patterns, positions, heads,
                                  stride, method, ablation, model)
    st.caption(description)
    m = res.meta
    k1, k2, k3 = st.columns(3)
    k1.metric("sites", len(res.df))
    k2.metric("metric clean / corrupted", f"{m.get('metric_clean', float('nan')):.3f} / "
                                          f"{m.get('metric_corrupted', float('nan')):.3f}")
    k3.metric("seconds", f"{m.get('seconds', float('nan')):.2f}")
    if res.left_out():
        st.caption(res.left_out())
    values = [c for c in ("score", "metric", "estimate") if c in res.df]
    value = st.selectbox("Show", values, key="patch_value")
    grid_tab, loop_tab, top_tab, table_tab = st.tabs(["Per site", "Step x layer", "Top sites", "Table"])
    with grid_tab, ui.guard("Per-site heatmap"):
        st.plotly_chart(site_map(res.df, value=value, title=f"{method}: {value}"), key="site_map")
    with loop_tab, ui.guard("Step x layer"):
        agg = st.radio("Over positions and heads", AGGREGATES, horizontal=True, key="patch_agg")
        try:
            st.plotly_chart(loop_grid_figure(res.df, value, agg), key="loop_grid")
        except ValueError as e:
            st.info(f"No step x layer view for these sites: {e}")
    with top_tab, ui.guard("Top sites"):
        st.plotly_chart(top_sites_figure(res.df, value), key="top_sites")
    with table_tab:
        st.dataframe(res.df, hide_index=True)
    ui.download_csv(res.df, f"patching_{family}.csv", key="patch_csv")
