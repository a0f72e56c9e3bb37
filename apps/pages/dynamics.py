"""Dynamics: what a loop computes from one step to the next, on any family with a loop.

Every analysis of ``workbench.dynamics`` through the family registry's adapters
(``models.dynamics_adapters.run``): the iteration lens, convergence and the commit step, probe
transfer across steps, basins of the state, fixed points of the cell. The page runs each at small,
quick defaults (``models.dynamics_adapters.page_defaults``: a few inputs, few steps and sizes); the
Python API and ``workbench dynamics`` take every option.
"""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui
from models import dynamics_adapters as da
from models import registry

ui.through_explorer()  # the entry script first, also on a direct link

TITLES = {"lens": "Iteration lens", "convergence": "Convergence and commit step", "transfer": "Probe transfer",
          "basin": "Basin of the state", "fixed-points": "Fixed points of the cell"}
HELP = {"lens": "the model's own readout applied to the state after every step: accuracy and rank (a forecast: "
                "distance) of the final and the true answer per step",
        "convergence": "per example: the update size, the distance to the final state, the cosine of successive "
                       "updates, whether the last state is a fixed point, and the commit step (the first step after "
                       "which the decoded answer never changes) against difficulty",
        "transfer": "a probe fit at step i and tested at step j, the whole matrix, beside a control task",
        "basin": "the state after step t perturbed by noise of size eps: does the rollout return to the same answer, "
                 "and how fast",
        "fixed-points": "fixed points of the cell from many starts, with the eigenvalues of the Jacobian at each"}

st.title("Loop dynamics")
st.caption("Step t is the t-th application of the loop, counted from 0; the state after step t is its output.")

families = tuple(name for name, fam in registry.families().items() if fam.dynamics)
prefer = [registry.get(f).dynamics_example for f in families]
picked = model_pick.pick_model(families, key="dynamics_model", prefer=[p for p in prefer if p])
if picked is None:
    st.stop()
model, family = picked.model, picked.family
adapters = da.adapters(model)
st.caption(f"State and readout: {adapters.notes}")
analyses = list(adapters.analyses)
analysis = ui.view_picker([TITLES[a] for a in analyses], key="dynamics_view", label="Analysis")
analysis = analyses[[TITLES[a] for a in analyses].index(analysis)]
st.caption(HELP[analysis])
ui.query_names("samples", "seed")


def _defaults(analysis: str) -> dict:
    return da.page_defaults(adapters, analysis)


defaults = _defaults(analysis)
c1, c2 = st.columns(2)
n = ui.number("Samples", where=c1, lo=2, hi=512, value=int(defaults["n"]), key=f"dynamics_n_{analysis}",
              query="samples")
seed = ui.number("Seed", where=c2, lo=0, hi=ui.SEED_MAX, value=0, key="dynamics_seed", query="seed")
ui.need(n, seed)
options = {k: v for k, v in defaults.items() if k != "n"}
if options:
    st.caption("Quick settings: " + ", ".join(f"{k}={v}" for k, v in options.items())
               + " (the Python API, `models.dynamics_adapters.run`, takes any).")


@st.cache_data(max_entries=32, show_spinner=False)
def _run(key, analysis, n, seed, _model):
    return da.run(_model, analysis, seed=seed, **(_defaults(analysis) | {"n": n}))


with ui.guard(TITLES[analysis]):
    with st.spinner(f"{TITLES[analysis]}…"):
        res = _run(picked.key, analysis, int(n), int(seed), model)
    st.text(res.summary())
    st.plotly_chart(res.figure(), key=f"dynamics_{analysis}")
    st.dataframe(res.df, hide_index=True)
    ui.download_csv(res.df, f"dynamics_{analysis}_{family}.csv", key="dynamics_csv")
