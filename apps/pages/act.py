"""ACT: halting and ponder time of the Adaptive Computation Time RNN on one input and over a batch."""

from __future__ import annotations

import streamlit as st

from apps import model_pick, ui
from apps.adapters import act as aa
from apps.views import act as views

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Adaptive Computation Time RNN")
st.caption("At every input step the RNN updates its state a variable number of times (ponders) until the "
           "cumulative halting probability reaches 1 - eps. Edit an input, watch it halt, and patch the "
           "halting logit.")

ui.query_names("seed", "problems", "step", "act_view")
picked = model_pick.pick_model(("act",), key="act_model")
if picked is None:
    st.stop()
model, cfg = picked.model, picked.model.cfg

VIEWS = ["Halting", "Ponder time vs difficulty", "Patch the halting logit"]  # one is shown and computed at a time


@st.cache_data(max_entries=32, show_spinner=False)
def _ponder_vs_difficulty(key: str, n: int, seed: int, by: str, _model):
    """Ponder time and error by difficulty on n fresh problems: computed once per model and setting."""
    return aa.ponder_vs_difficulty(_model, n, seed, by)

# ------------------------------------------------------------------ the input
text_key = f"act_text::{picked.key}"


def _sample() -> None:
    try:
        seed = ui.check_int(st.session_state["act_seed"], "Seed", 0, ui.SEED_MAX)
        st.session_state[text_key] = aa.sample_text(model, seed)
    except ValueError as e:
        st.session_state["act_sample_error"] = str(e)


left, right = st.columns([3, 1])
with right:
    ui.number("Seed", lo=0, hi=ui.SEED_MAX, value=0, key="act_seed", query="seed")
    st.button("Sample an input", on_click=_sample, key="act_sample")
if text_key not in st.session_state:
    with ui.guard("Sampling the default input"):
        st.session_state[text_key] = aa.sample_text(model, 0)
with left:
    text = ui.text(f"Input ({cfg.task_name})", limit=aa.MAX_INPUT_CHARS, key=text_key, help=aa.input_format(model))
    st.caption(f"Format: {aa.input_format(model)}. ACT {'on, tau = ' + format(cfg.tau, 'g') if cfg.act else 'off'}; "
               f"{cfg.cell} cell, {cfg.hidden} units, at most {cfg.max_ponder} ponder steps.")
if err := st.session_state.pop("act_sample_error", None):
    ui.error(f"Sampling: {err}")
ui.need(text)

try:
    x = aa.parse_input(model, text)
except ValueError as e:
    ui.error(f"The input is malformed: {e}")
    st.stop()

with ui.guard("Running the model"):
    steps = aa.per_step(model, x)
    c1, c2, c3 = st.columns(3)
    c1.metric("input steps", len(steps))
    c2.metric("mean ponder time N(t)", f"{steps['N'].mean():.2f}")
    c3.metric("answers right", f"{int(steps['correct'].sum())} / {len(steps)}")

    view = ui.view_picker(VIEWS, key="act_view")

    if view == "Halting":
        with ui.guard("Halting"):
            st.plotly_chart(views.ponder_steps_figure(steps), key="ponder_steps")
            trace = aa.trace(model, x)
            if not cfg.act:
                st.info("ACT is off for this model (a fixed number of state updates per input): there is no halting "
                        "probability, only the weight p of the step that is used.")
            h1, h2 = st.columns([3, 1])
            t = ui.step_slider("Input step t", len(steps), key="act_step", where=h1,
                               help="hooks time.{t}: the input step whose ponder steps are shown")
            play = ui.play_toggle("act_play", "Play through the ponder steps", where=h2)
            if play:
                st.plotly_chart(views.halting_animation(trace, t), key="halting_play")
            else:
                st.plotly_chart(views.halting_figure(trace[trace.t == t]), key="halting")
            ui.download_csv(trace, "act_halting.csv", key="halting_csv")

    if view == "Ponder time vs difficulty":
        with ui.guard("Ponder time vs difficulty"):
            b1, b2, b3 = st.columns(3)
            n = ui.number("Fresh problems", where=b1, lo=1, hi=5000, value=200, step=50, key="act_batch_n",
                          query="problems")
            by = b2.selectbox("Difficulty", aa.difficulties(model), key="act_batch_by")
            seed = ui.number("Seed", where=b3, lo=0, hi=ui.SEED_MAX, value=1, key="act_batch_seed")
            ui.need(n, seed)
            with st.spinner("Evaluating fresh problems…"):
                table = _ponder_vs_difficulty(picked.key, int(n), int(seed), by, model)
            st.plotly_chart(views.ponder_difficulty_figure(table.assign(model=picked.name), by), key="difficulty")
            ui.download_csv(table, "act_ponder_by.csv", key="difficulty_csv")

    if view == "Patch the halting logit":
        with ui.guard("Patching the halting logit"):
            if not cfg.act:
                st.info("ACT is off for this model: the halting unit is not used, so patching it changes nothing.")
            p1, p2 = st.columns(2)
            where = p1.selectbox("Ponder step", ["every ponder step"] + list(range(cfg.max_ponder)), index=1,
                                 key="act_patch_step", help="ponder steps counted from 0 (hook time.{t}.ponder.{n})")
            offset = p2.slider("Add to the halting logit", min_value=-30.0, max_value=30.0, value=20.0, step=0.5,
                               key="act_patch_offset", help="large positive: halt here; large negative: keep pondering")
            hooks = aa.halt_patch(None if where == "every ponder step" else int(where), offset, cfg.max_ponder)
            patched_steps = aa.per_step(model, x, hooks)
            compared = views.halting_compare_figure(aa.trace(model, x), aa.trace(model, x, hooks))
            st.plotly_chart(compared, key="halting_compare")
            compare = steps[["t", "item", "N", "prediction", "target"]].merge(
                patched_steps[["t", "N", "prediction"]], on="t", suffixes=("", " patched"))
            st.dataframe(compare, hide_index=True)
