"""Probing: linear probes at every loop step, with a control task (selectivity = score - control)."""

from __future__ import annotations

import streamlit as st

from apps import ui, zoo
from apps.adapters import analysis as an
from apps.views.analysis import loop_grid_figure
from workbench.figures import probe_map

st.title("Linear probes")
st.caption("Cache activations at every loop step, fit one linear probe per site on a held-out split, and compare "
           "with a control task of random labels: high selectivity means the feature is readable there.")

ui.query_names("samples", "seed", "nodes", "per_problem", "stride")
picked = ui.pick_model(zoo.ANALYSIS_FAMILIES, key="probing_model", prefer=zoo.names_of("reasoner"))
if picked is None:
    st.stop()
model, family = picked.model, picked.family

DEFAULT_N = {"reasoner": 16, "act": 400, "warp": 200}


@st.cache_data(max_entries=16, show_spinner=False)
def _collect(key, family, n, seed, patterns, nodes, per_problem, stride, _model):
    return an.collect(_model, family, n, seed, patterns, n_nodes=nodes, per_problem=per_problem, stride=stride)


@st.cache_data(max_entries=32, show_spinner=False)
def _fit(key, family, n, seed, patterns, nodes, per_problem, stride, target, control, _model, _acts):
    return an.fit_probe(_model, family, _acts, target, control, seed=seed)


c1, c2, c3, c4 = st.columns(4)
lo, hi = an.PROBE_N[family]
n = ui.number("Samples", where=c1, lo=lo, hi=hi, value=DEFAULT_N[family], key=f"probe_n_{family}", query="samples",
              help="problems (reasoner) or sequences")
seed = ui.number("Seed", where=c2, lo=0, hi=ui.SEED_MAX, value=0, key="probe_seed", query="seed")
try:
    targets = an.probe_targets(model, family)
except ValueError as e:
    st.error(f"Probing: {e}")
    st.stop()
target = c3.selectbox("Target", targets, index=targets.index("computed") if "computed" in targets else 0,
                      key=f"probe_target_{family}")
control = "none"
patterns, nodes, per_problem, stride = "", None, 3, 8
if family == "reasoner":
    control = c4.selectbox("Control task", ["none", "variable"], key="probe_control",
                           help="none: relabel each row at random; variable: one random label per variable name "
                                "(Hewitt & Liang)")
    r1, r2, r3 = st.columns([3, 1, 1])
    patterns = ui.text("Sites (hook names or globs)", where=r1, limit=2000, value="steps.*.blocks.*.hook_resid_post",
                       key="probe_sites")
    train_n = int(model.cfg.task.get("n_nodes", 16)) if model.cfg.task else 16
    nodes = ui.number("Nodes", where=r2, lo=2, hi=model.cfg.name_pool, value=min(train_n, 16), key="probe_nodes",
                      query="nodes")
    per_problem = ui.number("Variables per problem", where=r3, lo=1, hi=64, value=4, key="probe_per_problem",
                            query="per_problem")
elif family == "warp":
    stride = ui.number("Every k-th time step", where=c4, lo=1, hi=max(1, int(getattr(model.cfg, "seq_len", 1024))),
                       value=8, key="probe_stride", query="stride")
ui.need(n, seed, patterns, nodes if family == "reasoner" else 0, per_problem, stride)

with ui.guard("Probing"):
    with st.spinner("Collecting activations…"):
        acts = _collect(picked.key, family, n, seed, patterns, nodes, per_problem, stride, model)
    with st.spinner("Fitting probes…"):
        res = _fit(picked.key, family, n, seed, patterns, nodes, per_problem, stride, target, control, model, acts)
    score = "accuracy" if "accuracy" in res.df else "r2"
    best = res.best(score)
    k1, k2, k3 = st.columns(3)
    k1.metric("rows / sites", f"{acts.n} / {len(res.df)}")
    if best is None:
        st.info(res.left_out() or "No site could be ranked.")
    else:
        k2.metric(f"best {score}", f"{best[score]:.3f}", help=str(best["site"]))
        k3.metric("its selectivity", f"{best.get('selectivity', float('nan')):.3f}")
    if res.left_out():
        st.caption(res.left_out())
    curve_tab, grid_tab, table_tab = st.tabs(["By step", "Step x layer", "Table"])
    with curve_tab:
        st.plotly_chart(probe_map(res.df), key="probe_map")
    with grid_tab, ui.guard("Step x layer"):
        value = st.selectbox("Show", [c for c in (score, "selectivity", "control") if c in res.df], key="probe_value")
        try:
            st.plotly_chart(loop_grid_figure(res.df, value, "mean"), key="probe_grid")
        except ValueError as e:
            st.info(f"No step x layer view for these sites: {e}")
    with table_tab:
        st.dataframe(res.df, hide_index=True)
    ui.download_csv(res.df, f"probe_{family}_{target}.csv", key="probe_csv")
