"""Reasoner: a problem step by step: the state table, attention, the step lens, interventions."""

from __future__ import annotations

import numpy as np
import streamlit as st

from apps import model_pick, ui
from apps.adapters import reasoner as ar
from apps.views import reasoner as views

ui.through_explorer()  # the entry script first, also on a direct link

st.title("Recursive latent reasoner")
st.caption("One shared transformer block applied step after step; after every step a discrete bottleneck "
           "decodes each token's value and feeds it back. Type or sample a graph-arithmetic problem and watch "
           "the variables fill in.")

ui.query_names("nodes", "seed", "steps", "step", "compare", "reasoner_view")
picked = model_pick.pick_model(("reasoner",), key="reasoner_model")
if picked is None:
    st.stop()
model, cfg = picked.model, picked.model.cfg
train_n = int(cfg.task.get("n_nodes", 16)) if cfg.task else 16


@st.cache_data(max_entries=64, show_spinner=False)
def _rollout(key: str, text: str, steps: int, _model) -> ar.Rollout:
    return ar.rollout(_model, ar.parse_problem(_model, text), steps)


@st.cache_data(max_entries=64, show_spinner=False)
def _attention(key: str, text: str, steps: int, step: int, layer: int, _model):
    """[heads, query, key]: one layer's attention at one step (a slider move back is a cache hit)."""
    return ar.attention(_model, ar.parse_problem(_model, text), steps, step, layer)


@st.cache_data(max_entries=32, show_spinner=False)
def _attention_steps(key: str, text: str, steps: int, layer: int, _model):
    """[steps, heads, query, key]: one layer's attention at every step."""
    problem = ar.parse_problem(_model, text)
    return np.stack([ar.attention(_model, problem, steps, t, layer) for t in range(steps)])


@st.cache_data(max_entries=32, show_spinner=False)
def _lens(key: str, text: str, steps: int, _model):
    return ar.step_lens(_model, ar.parse_problem(_model, text), steps)


def _open_cell() -> None:
    """A state-table cell was clicked: the Attention view at its step, the step lens on its variable."""
    points = (st.session_state.get("state_table") or {}).get("selection", {}).get("points", [])
    cell = next((c for c in map(views.state_cell, points) if c is not None), None)
    if cell is None:
        return
    step, slot = cell
    st.session_state["reasoner_step"] = step
    st.query_params["step"] = str(step)
    st.session_state["reasoner_lens_slot"] = slot
    st.session_state["reasoner_view"] = "Attention"


VIEWS = ["State table", "Attention", "All heads", "Step lens", "Intervention", "Compare"]  # one at a time

# ------------------------------------------------------------------ the problem
text_key = f"reasoner_text::{picked.key}"


def _sample() -> None:
    try:
        nodes = ui.check_int(st.session_state["reasoner_nodes"], "Nodes", 2, cfg.name_pool)
        seed = ui.check_int(st.session_state["reasoner_seed"], "Seed", 0, ui.SEED_MAX)
        st.session_state[text_key] = ar.sample_text(model, nodes, seed)
    except ValueError as e:
        st.session_state["reasoner_sample_error"] = str(e)


left, right = st.columns([3, 1])
with right:
    ui.number("Nodes", lo=2, hi=cfg.name_pool, value=min(max(train_n, 2), cfg.name_pool), key="reasoner_nodes",
              query="nodes", help=f"graph size of a sampled problem (trained on N = {train_n})")
    ui.number("Seed", lo=0, hi=ui.SEED_MAX, value=0, key="reasoner_seed", query="seed")
    st.button("Sample a problem", on_click=_sample, key="reasoner_sample")
if text_key not in st.session_state:
    with ui.guard("Sampling the default problem"):
        st.session_state[text_key] = ar.sample_text(model, train_n, 0)
with left:
    text = ui.text("Problem", area=True, limit=ar.MAX_PROBLEM_CHARS, key=text_key, height=110,
                   help="equations separated by ';': '20 = x_7; 3 = x_1; x_7 + x_1 = x_23'; values in "
                        f"Z_{cfg.modulus}, names x_0..x_{cfg.name_pool - 1}, operands defined before use; "
                        f"at most {ar.MAX_PROBLEM_CHARS:,} characters")
if err := st.session_state.pop("reasoner_sample_error", None):
    ui.error(f"Sampling: {err}")
ui.need(text)

try:
    problem = ar.parse_problem(model, text or "")
except ValueError as e:
    ui.error(f"The problem text is malformed: {e}")
    st.stop()

default_steps = ar.default_steps(model, problem)
steps = ui.number("Steps", lo=0, hi=cfg.max_steps, value=0, key="reasoner_steps", query="steps",
                  help=f"0 = the model's own choice for depth {problem.depth}: {default_steps} steps")
ui.need(steps)
steps = steps or default_steps

with ui.guard("Running the model"):
    with st.spinner("Running the model…"):
        ro = _rollout(picked.key, text, steps, model)
    summary = ro.summary()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("nodes / depth", f"{problem.n_nodes} / {problem.depth}")
    c2.metric("steps", summary["steps"])
    c3.metric("node accuracy", f"{summary['node_accuracy']:.2f}")
    c4.metric("fully solved", "yes" if summary["fully_solved"] else "no")

    view = ui.view_picker(VIEWS, key="reasoner_view", default="Compare" if "compare" in st.query_params else None)

    if view == "State table":
        with ui.guard("State table"):
            operands = st.checkbox("Also show operand slots (filled by one-hop lookups)", key="reasoner_operands",
                                   disabled=cfg.scheme != "one_hop")
            table = ar.state_table(ro, operands=operands)
            st.plotly_chart(views.state_table_figure(table), key="state_table", on_select=_open_cell,
                            selection_mode="points")
            st.caption("Click a cell to open the attention at its step (and the step lens on its variable).")
            ui.download_csv(table, "reasoner_state.csv", key="state_csv")

    if view == "Attention":
        with ui.guard("Attention"):
            step = ui.step_slider("Step t", ro.steps, key="reasoner_step",
                                  help="hooks steps.{t}: the step that produces the state table's column t")
            a1, a2, a3 = st.columns([1, 1, 2])
            layer = a1.selectbox("Layer", list(range(cfg.n_layers)), key="reasoner_attn_layer")
            head = a2.selectbox("Head", ["mean over heads"] + list(range(cfg.n_heads)), key="reasoner_attn_head")
            with a3:
                mark = st.checkbox("Mark where the exact algorithm reads (operand and definition positions)",
                                   value=True, key="reasoner_attn_marks")
                play = ui.play_toggle("reasoner_attn_play")
            what = head if isinstance(head, str) else f"head {head}"
            labels, marks = ar.token_labels(ro.enc, cfg.modulus), ar.reads(ro.enc) if mark else None
            if play:
                with st.spinner("Reading the attention at every step…"):
                    every = _attention_steps(picked.key, text, ro.steps, layer, model)
                shown = every.mean(1) if head == "mean over heads" else every[:, int(head)]
                st.plotly_chart(views.attention_animation(shown, labels, marks, what=what, layer=layer,
                                                                  start=step),
                                key="attention_play")
            else:
                with st.spinner("Reading the attention pattern…"):
                    pattern = _attention(picked.key, text, ro.steps, step, layer, model)
                shown = pattern.mean(0) if head == "mean over heads" else pattern[int(head)]
                st.plotly_chart(views.attention_figure(shown, labels, marks,
                                                       title=f"Attention at step {step}, layer {layer}, {what}"),
                                key="attention")

    if view == "All heads":
        with ui.guard("All heads"):
            step = ui.step_slider("Step t", ro.steps, key="reasoner_step",
                                  help="hooks steps.{t}: the step that produces the state table's column t")
            with st.spinner("Reading every head…"):
                grid = np.stack([_attention(picked.key, text, ro.steps, step, l, model)
                                 for l in range(cfg.n_layers)])
            st.plotly_chart(views.attention_grid_figure(grid, ar.token_labels(ro.enc, cfg.modulus), step),
                            key="attention_grid")

    if view == "Step lens":
        with ui.guard("Step lens"):
            with st.spinner("Decoding every layer of every step…"):
                lens = _lens(picked.key, text, ro.steps, model)
            slots = list(dict.fromkeys(lens["slot"]))
            deepest = problem.equations[max(range(problem.n_nodes), key=lambda i: problem.depths[i])].target
            if st.session_state.get("reasoner_lens_slot") not in slots:  # a clicked cell sets it; else the deepest
                st.session_state["reasoner_lens_slot"] = f"x_{deepest}" if f"x_{deepest}" in slots else slots[0]
            slot = st.selectbox("Variable", slots, key="reasoner_lens_slot")
            st.plotly_chart(views.step_lens_figure(lens[lens.slot == slot], ar.lens_overview(lens), slot=slot),
                            key="step_lens")
            ui.download_csv(lens, "reasoner_step_lens.csv", key="lens_csv")

    if view == "Intervention":
        with ui.guard("Intervention"):
            st.write("Set a variable to a value after a step (through `steps.{t}.bottleneck.hook_codes`) and watch "
                     "the later steps change.")
            if cfg.latent != "discrete":
                st.warning("This model feeds its residual stream back, not the codes: a code set here changes only "
                           "that step's output, not the later steps.")
            variables = [e.target for e in problem.equations]
            e1, e2, e3, e4 = st.columns(4)
            var = e1.selectbox("Variable", variables, format_func=lambda v: f"x_{v}", key="reasoner_edit_var")
            value = ui.number("Value", where=e2, lo=0, hi=cfg.modulus - 1, value=0, key="reasoner_edit_value")
            at = ui.number("At step t", where=e3, lo=0, hi=max(0, ro.steps - 1), value=0, key="reasoner_edit_step",
                           help="written into the codes step t outputs (steps.{t}.bottleneck.hook_codes): "
                                "the table's column t")
            where = e4.radio("Write at", ar.WHERE, key="reasoner_edit_where")
            ui.need(value, at)
            with st.spinner("Running with the intervention…"):
                edited = ar.intervene(model, problem, ro.steps, int(var), int(value), int(at), where)
            before, after = ar.state_table(ro), ar.state_table(edited)
            changed = ar.changed_cells(before, after)
            new = edited.summary()
            st.write(f"{len(changed)} cell(s) changed; node accuracy {summary['node_accuracy']:.2f} -> "
                     f"{new['node_accuracy']:.2f}, fully solved {summary['fully_solved']} -> {new['fully_solved']}.")
            title = f"After setting x_{var} = {value} at step {at} (outlined: changed cells)"
            st.plotly_chart(views.state_table_figure(after, changed, title=title), key="intervention")
            if len(changed):
                st.dataframe(changed, hide_index=True)

    if view == "Compare":
        with ui.guard("Compare"):
            st.write("The same problem, run by a second model of the family for its own number of steps "
                     "(or the Steps field's): its state table beside this one's.")
            other = model_pick.pick_other(picked, key="reasoner_compare")
            if other is not None:
                try:
                    other_problem = ar.parse_problem(other.model, text)
                except ValueError as e:
                    raise ValueError(f"{other.name} cannot read this problem: {e}") from e
                other_steps = min(steps, other.model.cfg.max_steps) if st.session_state.get("reasoner_steps") \
                    else ar.default_steps(other.model, other_problem)
                with st.spinner(f"Running {other.name}…"):
                    other_ro = _rollout(other.key, text, other_steps, other.model)
                st.dataframe(views.compare_summary(summary, other_ro.summary(), (picked.name, other.name)),
                             hide_index=True)
                left_col, right_col = st.columns(2)
                mine, theirs = ar.state_table(ro), ar.state_table(other_ro)
                left_col.plotly_chart(views.state_table_figure(mine, title=picked.name), key="compare_a")
                right_col.plotly_chart(views.state_table_figure(
                    theirs, ar.changed_cells(mine, theirs), title=f"{other.name} (outlined: differs)"),
                    key="compare_b")
