"""Gain: the adaptation experiment of the gain-controlled recurrent circuit."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui
from apps.views import gain as views
from models import gain_experiment
from models.gain_solvers import default_solver
from workbench.tasks import orientation as ori

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Gain-controlled recurrent circuit")
st.caption("36 orientation-tuned neurons with fixed recurrent weights adapt only their gains to the stimulus "
           "distribution, trading coding fidelity against activity (gain-v1; gain-homeostatic is the ablation whose "
           "gains only equalise mean rates); the gain changes, propagated through the recurrence, reproduce V1's "
           "adaptation effects.")

ui.query_names("gain_view")
picked = model_pick.pick_model(("gain",), key="gain_model")
if picked is None:
    st.stop()
model = picked.model


@st.cache_data(max_entries=16, show_spinner=False)
def _experiment(key: str, distribution: str, solver: str, _model):
    return gain_experiment.run(_model, ori.parse(distribution), solver=solver)


default = model.cfg.biased
text = ui.text("Adapting distribution", limit=500, value=default, key="gain_dist",
               help="e.g. 'biased adapter=30 weight=0.3 width=5'; the shipped gains were optimised for "
                    f"'{default}'")
ui.need(text)
try:
    dist = ori.parse(text)
except ValueError as e:
    ui.error(f"The distribution is malformed: {e}")
    st.stop()

with ui.guard("The adaptation experiment"):
    solver = "stored" if dist == model.cfg.distribution("biased") else default_solver(model, dist)
    with st.spinner("Solving the gains and measuring the effects…"):
        result = _experiment(picked.key, ori.format_distribution(dist), solver, model)
    how = {"stored": "the stored set", "analytic": "solved here in closed form",
           "gradient": "solved here by gradient descent"}[solver]
    st.caption(f"objective: {model.cfg.objective}. before: gains for the uniform distribution; after: gains for "
               f"'{result.distribution}' ({how}).")
    titles = {"effects": "Effects", "tuning": "Tuning curves", "shift": "Repulsion", "maxmin": "Maxima / minima",
              "correlations": "Correlations", "gains": "Gain profile"}
    view = ui.view_picker(list(titles.values()), key="gain_view")  # one figure is drawn at a time
    name = next(k for k, v in titles.items() if v == view)
    with ui.guard(view):
        st.plotly_chart(views.figure(result, name), key=f"gain_{name}")
    ui.download_csv(result.effects, "gain_effects.csv", key="effects_csv")
