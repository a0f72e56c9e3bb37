"""Patching: exact activation patching or attribution patching over every loop step."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui, zoo
from apps.adapters import analysis as an
from apps.views.analysis import AGGREGATES, inputs_table, loop_grid_figure, site_link, top_sites, top_sites_figure
from models import registry
from workbench.figures import site_map

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Activation patching")
st.caption("Run a corrupted input, write the clean activation into one site, and measure how much of the clean "
           "behaviour comes back: score 0 = as corrupted, 1 = as clean. Attribution patching estimates the same "
           "from one backward pass.")

picked = model_pick.pick_model(zoo.ANALYSIS_FAMILIES, key="patching_model")
if picked is None:
    st.stop()
model, family = picked.model, picked.family
try:
    study = an.check(model, family)  # what patching means for this family: inputs, metrics, sites, options
    options = study.options(model, "patch")
except ValueError as e:
    ui.error(f"Patching: {e}")
    st.stop()
ui.query_names("inputs", "seed", "patch_view", *(o.query for o in options if o.query))
BATCH = 2  # the default number of clean / corrupted pairs, at least (cost grows with it)
VIEWS = ["Per site", "Step x layer", "Top sites", "Table"]  # one is shown and computed at a time


@st.cache_data(max_entries=32, show_spinner=False)
def _setup(key, family, n, seed, metric, options, _model):
    """The experiment's description, its inputs as a table and the first clean input's token labels."""
    s = an.setup(_model, family, n, seed, metric, **dict(options))
    as_text = ui.family_hook(family, "patching_inputs")
    found = as_text(s, _model.cfg) if as_text else None
    texts, labels = found if found else (None, None)
    return s.description, inputs_table(s.clean, s.corrupted, texts, labels), (labels[0] if labels else None)


@st.cache_data(max_entries=32, show_spinner=False)
def _patch(key, family, n, seed, metric, options, patterns, positions, heads, method, ablation, _model):
    s = an.setup(_model, family, n, seed, metric, **dict(options))
    sel = an.sites(patterns, positions, heads, loops=s.loops)
    return an.run_patching(_model, s, sel, method=method, ablation=ablation)


cols = st.columns(3 + len(options))
default_n, lo, hi = study.size("patch")
default_n = max(default_n, min(BATCH, hi))  # a batch: one pair says little about a site
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
    with st.spinner("Preparing the inputs…"):
        description, inputs, labels = _setup(picked.key, family, int(n), int(seed), metric,
                                             tuple(sorted(values.items())), model)
    st.caption(description)
    with st.expander(f"The {len(inputs)} clean / corrupted input pair(s)", expanded=True):
        st.dataframe(inputs, hide_index=True, key="patch_inputs")
    with st.spinner("Patching every site…"):
        res = _patch(picked.key, family, int(n), int(seed), metric, tuple(sorted(values.items())),
                     patterns, positions, heads, method, ablation, model)
    m = res.meta
    k1, k2, k3 = st.columns(3)
    k1.metric("sites", len(res.df))
    k2.metric("metric clean / corrupted", f"{m.get('metric_clean', float('nan')):.3f} / "
                                          f"{m.get('metric_corrupted', float('nan')):.3f}")
    k3.metric("seconds", f"{m.get('seconds', float('nan')):.2f}")
    if res.left_out():
        st.caption(res.left_out())
    shown = [c for c in ("score", "metric", "estimate") if c in res.df]
    v1, v2 = st.columns([1, 3])
    value = v1.selectbox("Show", shown, key="patch_value")
    with v2:
        view = ui.view_picker(VIEWS, key="patch_view")
    if view == "Per site":
        with ui.guard("Per-site heatmap"):
            st.plotly_chart(site_map(res.df, value=value, title=f"{method}: {value}", labels=labels,
                                     labels_of="pair 0's clean input"), key="site_map")
    if view == "Step x layer":
        with ui.guard("Step x layer"):
            agg = st.radio("Over positions and heads", AGGREGATES, horizontal=True, key="patch_agg")
            try:
                st.plotly_chart(loop_grid_figure(res.df, value, agg), key="loop_grid")
            except ValueError as e:
                st.info(ui.plain(f"No step x layer view for these sites: {e}"))
    if view == "Top sites":
        with ui.guard("Top sites"):
            st.plotly_chart(top_sites_figure(res.df, value), key="top_sites")
            top = top_sites(res.df, value)[0]
            links = [site_link(family, picked.name, row) for _, row in top.iterrows()]
            if any(links):  # each site opens its model's page at that step
                link = st.column_config.LinkColumn("open at step", display_text=r"step=(\d+)",
                                                   help="the model's page at this site's step")
                st.dataframe(top.assign(open=links)[["open", "site", value]], hide_index=True, key="top_links",
                             column_config={"open": link})
    if view == "Table":
        st.dataframe(res.df, hide_index=True)
    ui.download_csv(res.df, f"patching_{family}.csv", key="patch_csv")
