"""Patching: exact activation patching or attribution patching over every loop step."""

from __future__ import annotations

import streamlit as st

from apps import ui, zoo
from apps.adapters import analysis as an
from apps.views.analysis import AGGREGATES, loop_grid_figure, top_sites_figure
from models import registry
from workbench.figures import site_map

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Activation patching")
st.caption("Run a corrupted input, write the clean activation into one site, and measure how much of the clean "
           "behaviour comes back: score 0 = as corrupted, 1 = as clean. Attribution patching estimates the same "
           "from one backward pass.")

picked = ui.pick_model(zoo.ANALYSIS_FAMILIES, key="patching_model")
if picked is None:
    st.stop()
model, family = picked.model, picked.family
try:
    study = an.check(model, family)  # what patching means for this family: inputs, metrics, sites, options
    options = study.options(model, "patch")
except ValueError as e:
    st.error(f"Patching: {e}")
    st.stop()
ui.query_names("inputs", "seed", *(o.query for o in options if o.query))


@st.cache_data(max_entries=32, show_spinner=False)
def _patch(key, family, n, seed, metric, options, patterns, positions, heads, method, ablation, _model):
    s = an.setup(_model, family, n, seed, metric, **dict(options))
    sel = an.sites(patterns, positions, heads, loops=s.loops)
    return an.run_patching(_model, s, sel, method=method, ablation=ablation), s.description


cols = st.columns(3 + len(options))
default_n, lo, hi = study.size("patch")
n = ui.number("Inputs", where=cols[0], lo=lo, hi=hi, value=default_n, key=f"patch_n_{family}", query="inputs",
              help="clean / corrupted pairs in the batch (scores use the batch mean)")
seed = ui.number("Seed", where=cols[1], lo=0, hi=ui.SEED_MAX, value=0, key="patch_seed", query="seed")
values = {o.name: ui.option(o, prefix="patch", family=family, where=where) for o, where in zip(options, cols[2:-1])}
default_metric = registry.get(family).metric
metric = cols[-1].selectbox("Metric", study.metrics, key=f"patch_metric_{family}",
                            index=study.metrics.index(default_metric) if default_metric in study.metrics else 0)

d1, d2 = st.columns(2)
method = d1.radio("Method", an.METHODS, horizontal=True, key="patch_method")
ablation = d2.selectbox("Ablation", [None, "zero", "mean", "resample"], key="patch_ablation",
                        format_func=lambda a: "none (patch clean into corrupted)" if a is None else a)
default_sites, default_pos = study.page_sites
s1, s2, s3 = st.columns([3, 1, 1])
patterns = ui.text("Sites (hook names or globs)", where=s1, limit=2000, value=default_sites,
                   key=f"patch_sites_{family}",
                   help="e.g. steps.*.blocks.*.hook_resid_pre, steps.*.blocks.1.attn.hook_z, time.*.hook_theta")
positions = ui.text("Positions", where=s2, limit=1000, value=default_pos, key=f"patch_pos_{family}",
                    help="each, none or 0,3,7")
heads = ui.text("Heads", where=s3, limit=1000, value="none", key=f"patch_heads_{family}",
                help="each, none or 0,1 (attention hooks)")
ui.need(n, seed, patterns, positions, heads, *values.values())

with ui.guard("Patching"):
    with st.spinner("Patching every site…"):
        res, description = _patch(picked.key, family, int(n), int(seed), metric, tuple(sorted(values.items())),
                                  patterns, positions, heads, method, ablation, model)
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
