"""WARP: forecast a sampled trajectory (or complete a digit), theta_t in weight space, the root
function, the spectrum of A and WARP-Phys's physical parameters."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui, zoo
from apps.adapters import warp as aw
from apps.views import warp as views
from workbench.tasks import dynamics as dy

ui.through_explorer()  # the entry script first, also on a direct link

st.title("WARP: weight-space linear RNN")
st.caption("The hidden state theta_t is the weight vector of a small root network, updated linearly by input "
           "differences: theta_t = A theta_{t-1} + B (u_t - u_{t-1}). Sample a trajectory, forecast it from its "
           "context, and look at theta_t and the root network it encodes.")

ui.query_names("digit", "seed", "context", "step", "warp_view")
picked = model_pick.pick_model(("warp",), key="warp_model")
if picked is None:
    st.stop()
model = picked.model


@st.cache_data(max_entries=16, show_spinner=False)
def _spectrum(key: str, _model):
    return _model.spectrum().numpy()


@st.cache_data(max_entries=32, show_spinner=False)
def _run(key: str, digits: bool, sample: int, context: int, _model) -> aw.ForecastRun:
    """The model on one test digit or one fresh trajectory: computed once, not on every click."""
    if digits:
        return aw.digit_run(_model, sample, context)
    return aw.forecast_run(_model, aw.sample(_model, sample), context)


try:
    task = aw.task_of(model)
except ValueError as e:
    ui.error(str(e))
    st.stop()
digits = aw.is_digits(model)
length = 64 if digits else task.length

c1, c2 = st.columns(2)
if digits:
    try:
        n_digits = aw.n_test_digits(model)
    except (ValueError, OSError) as e:
        ui.error(f"The test digits: {e}")
        st.stop()
    sample = ui.number("Test digit (index)", where=c1, lo=0, hi=n_digits - 1, value=0, key="warp_digit",
                       query="digit")
else:
    sample = ui.number("Trajectory (seed)", where=c1, lo=0, hi=ui.SEED_MAX, value=0, key="warp_seed", query="seed")
context = ui.number("Context (values given)", where=c2, lo=1, hi=length - 1, value=task.context, key="warp_context",
                    query="context", help=f"the protocol gives {task.context} of {length} values")
ui.need(sample, context)

with ui.guard("Forecasting"):
    with st.spinner("Forecasting…"):
        run = _run(picked.key, digits, int(sample), int(context), model)
    m1, m2, m3 = st.columns(3)
    if digits:
        m1.metric("digit", run.label)
        m2.metric("class read by the model", "-" if run.predicted is None else run.predicted)
        m3.metric("completion MSE", "-" if run.forecast is None else f"{run.mse:.4f}")
    else:
        m1.metric("system", task.spec.name, help=task.spec.description)
        m2.metric("forecast MSE x 1e-2", f"{run.mse * 100:.3f}",
                  help=f"over the {length - int(context)} generated steps")
        m3.metric("context", f"{int(context)} of {length}")
        st.markdown(f"`{task.spec.description}` with " + ", ".join(f"{k} = {v:.3g}" for k, v in run.params.items()))
    taus = aw.taus(model, len(run.thetas))

    first = "Completion" if digits else "Forecast"
    view = ui.view_picker([first, "theta_t (PCA)", "Root function", "Spectrum of A", "Physical parameters"],
                          key="warp_view")  # one view is shown and computed at a time
    if view == first:
        with ui.guard("Forecast"):
            if run.forecast is None:
                st.info("This model only classifies: it has no regression head to complete the sequence.")
            elif digits:
                st.plotly_chart(views.digits_figure(run.truth[:, 0], run.forecast[:, 0], int(context),
                                                    title=f"Completing a {run.label}"), key="digit")
            else:
                # only forecasters of the same system can share the trajectory
                same = [n for n in zoo.names_of("warp", "gru")
                        if n != picked.name and zoo.config_of(n).get("task", {}).get("system") == task.system]
                extra = st.multiselect("Compare with", same, key="warp_compare",
                                       help="other shipped forecasters of the same system (WARP, WARP-Phys, GRU)")
                forecasts = {picked.name: run.forecast}
                for name in extra:
                    other, other_key = model_pick.load(name)
                    forecasts[name] = _run(other_key, False, int(sample), int(context), other).forecast
                st.plotly_chart(views.forecast_figure(run.times, run.truth, forecasts, int(context), run.state_names),
                                key="forecast")

    if view == "theta_t (PCA)":
        with ui.guard("theta_t"):
            p1, p2, p3 = st.columns([1, 3, 1])
            k = p1.radio("Components", [2, 3], horizontal=True, key="warp_pca_k")
            play = ui.play_toggle("warp_play", where=p3)
            coords, explained = aw.pca(run, k=int(k))
            if play:
                p2.caption("The path drawn step by step (first two components).")
                st.plotly_chart(views.theta_path_animation(coords, taus, explained, context=int(context)),
                                key="theta_play")
            else:
                t = ui.step_slider("Step t", len(coords), key="warp_step", value=len(coords) - 1, where=p2,
                                   help="hooks time.{t}.hook_theta: the diamond marks theta_t")
                st.plotly_chart(views.theta_pca_figure(coords, taus, explained, context=int(context), step=t),
                                key="theta_pca")

    if view == "Root function":
        with ui.guard("Root function"):
            T = len(run.thetas)
            default = ", ".join(str(s) for s in sorted({0, int(context) - 1, T // 2, T - 1}))
            chosen = ui.text("Steps (comma-separated)", limit=1000, value=default, key="warp_root_steps",
                             help=f"steps 0..{T - 1}; each step's root network is queried over tau in [0, 1]")
            ui.need(chosen)
            curves, marks = aw.root_curves(model, run, ui.int_list(chosen, "Steps"))
            st.plotly_chart(views.root_functions_figure(curves, marks), key="root")

    if view == "Spectrum of A":
        with ui.guard("Spectrum"):
            st.plotly_chart(views.spectrum_figure(_spectrum(picked.key, model)), key="spectrum")

    if view == "Physical parameters":
        with ui.guard("Physical parameters"):
            names = aw.phys_names(model)
            if not names or run.phys is None:
                st.info("This model is plain WARP: its root predicts the next value directly. WARP-Phys models "
                        "(physics='sine' or 'msd') read physical parameters from theta_t.")
            else:
                truth = {k: v for k, v in run.params.items() if k in names}
                st.plotly_chart(views.phys_params_figure(taus, run.phys, names, truth=truth,
                                                         context_tau=float(taus[int(context) - 1])), key="phys")

st.caption(f"Systems: {', '.join(f'{s.name} ({s.description})' for s in dy.SYSTEMS.values())}; "
               "digits: scikit-learn's 8x8 digits as 64-pixel sequences.")
