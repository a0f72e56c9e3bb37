"""Probing: linear probes at every loop step, with a control task (selectivity = score - control)."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui, zoo
from apps.adapters import analysis as an
from apps.views.analysis import loop_grid_figure
from workbench.figures import probe_map

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Linear probes")
st.caption("Cache activations at every loop step, fit one linear probe per site on a held-out split, and compare "
           "with a control task of random labels: high selectivity means the feature is readable there.")

picked = model_pick.pick_model(zoo.ANALYSIS_FAMILIES, key="probing_model")
if picked is None:
    st.stop()
model, family = picked.model, picked.family
try:
    study = an.check(model, family)  # what probing means for this family: collection, targets, options
    targets = tuple(study.targets(model))
    options = study.options(model, "probe")
except ValueError as e:
    ui.error(f"Probing: {e}")
    st.stop()
ui.query_names("samples", "seed", "probe_view", *(o.query for o in options if o.query))
SAMPLES = 128  # the default number of samples, at least: enough test rows for a steady control curve
VIEWS = ["By step", "Step x layer", "Table"]  # one is shown and computed at a time


@st.cache_data(max_entries=16, show_spinner=False)
def _collect(key, family, n, seed, options, _model):
    return an.collect(_model, family, n, seed, **dict(options))


@st.cache_data(max_entries=32, show_spinner=False)
def _fit(key, family, n, seed, options, target, control, _model, _acts):
    return an.fit_probe(_model, family, _acts, target, control, seed=seed)


c1, c2, c3, c4 = st.columns(4)
default_n, lo, hi = study.size("probe")
default_n = max(default_n, min(SAMPLES, hi))
n = ui.number("Samples", where=c1, lo=lo, hi=hi, value=default_n, key=f"probe_n_{family}", query="samples",
              help="problems or sequences")
seed = ui.number("Seed", where=c2, lo=0, hi=ui.SEED_MAX, value=0, key="probe_seed", query="seed")
target = c3.selectbox("Target", targets, index=targets.index(study.default_target) if study.default_target in targets
                      else 0, key=f"probe_target_{family}")
control = "none"
if len(study.controls) > 1:
    control = c4.selectbox("Control task", study.controls, key="probe_control",
                           help="none: relabel each row at random; variable: one random label per variable name "
                                "(Hewitt & Liang)")
values = {}
if options:
    row = st.columns([3 if o.text else 1 for o in options])
    values = {o.name: ui.option(o, prefix="probe", family=family, where=where) for o, where in zip(options, row)}
ui.need(n, seed, *values.values())
chosen = tuple(sorted(values.items()))

with ui.guard("Probing"):
    with st.spinner("Collecting activations…"):
        acts = _collect(picked.key, family, n, seed, chosen, model)
    with st.spinner("Fitting probes…"):
        res = _fit(picked.key, family, n, seed, chosen, target, control, model, acts)
    score = "accuracy" if "accuracy" in res.df else "r2"
    best = res.best(score)
    k1, k2, k3, k4 = st.columns(4)
    k1.metric("rows / sites", f"{acts.n} / {len(res.df)}")
    if "n_test" in res.df and res.df["n_test"].notna().any():
        k4.metric("test rows per site (n)", f"{int(res.df['n_test'].min())}",
                  help="held-out rows each probe is scored on; the bands are 95% Wilson intervals")
    if best is None:
        st.info(ui.plain(res.left_out() or "No site could be ranked."))
    else:
        k2.metric(f"best {score}", f"{best[score]:.3f}", help=str(best["site"]))
        k3.metric("its selectivity", f"{best.get('selectivity', float('nan')):.3f}")
    if res.left_out():
        st.caption(ui.plain(res.left_out()))
    view = ui.view_picker(VIEWS, key="probe_view")
    if view == "By step":
        with ui.guard("By step"):
            st.plotly_chart(probe_map(res.df), key="probe_map")
    if view == "Step x layer":
        with ui.guard("Step x layer"):
            value = st.selectbox("Show", [c for c in (score, "selectivity", "control") if c in res.df],
                                 key="probe_value")
            try:
                st.plotly_chart(loop_grid_figure(res.df, value, "mean"), key="probe_grid")
            except ValueError as e:
                st.info(ui.plain(f"No step x layer view for these sites: {e}"))
    if view == "Table":
        st.dataframe(res.df, hide_index=True)
    ui.download_csv(res.df, f"probe_{family}_{target}.csv", key="probe_csv")
