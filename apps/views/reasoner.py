"""Figures for the recursive reasoner.

Steps are drawn as the hooks name them: step t is ``steps.{t}.``, the t-th application of the
loop counted from 0, and the state after step t is what application t outputs
(``steps.{t}.bottleneck.hook_codes``). The state table puts the input in a column of its own
("input") before step 0, so a selector's step t, an intervention "after step t" and the
column t of every figure are the same step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import animate, legend_below
from workbench.tasks import graph_arith as ga


def ood_figure(table: pd.DataFrame, train_n: int | None = None) -> go.Figure:
    """Fully solved vs number of nodes, one line per model (the paper's figure).

    table: tidy rows with columns model, n_nodes, fully_solved.
    """
    fig = px.line(table, x="n_nodes", y="fully_solved", color="model", markers=True,
                  hover_data=[c for c in ("node_acc", "max_steps", "n") if c in table])
    if train_n:
        fig.add_vline(x=train_n, line_dash="dot", annotation_text="training size")
    fig.update_layout(xaxis_title="number of nodes N", yaxis_title="fully solved", yaxis_range=[-0.02, 1.02],
                      title="Out-of-distribution generalisation")
    return fig


STATE_AXIS = "step t (state after steps.{t}; input = before step 0)"


def loop_steps(step: pd.Series, counts_steps_run: bool) -> pd.Series:
    """Loop steps from 0 (the state after application t), -1 for the input.

    ``counts_steps_run``: the column counts steps run (0 = the input, k = after k steps), as
    ``apps.adapters.reasoner.state_table`` and ``models.reasoner_eval`` write it; such a count k
    is the state after step k - 1.
    """
    return step.astype(int) - 1 if counts_steps_run else step.astype(int)


def _state_steps(table: pd.DataFrame) -> bool:
    """Does a state table count steps run? (Tables in loop steps mark the input with step -1.)"""
    return not (table["step"] < 0).any()


def per_step_figure(per_step: pd.DataFrame) -> go.Figure:
    """Fraction of nodes of depth d solved after step t (t from 0, as in ``steps.{t}``); one panel
    per model (and size). Rows counting steps run (from 1, ``models.reasoner_eval``) are read as such."""
    df = per_step.copy()
    df["step"] = loop_steps(df["step"], counts_steps_run=bool(len(df)) and int(df["step"].min()) >= 1)
    df["panel"] = df["model"] + (" N=" + df["n_nodes"].astype(str) if "n_nodes" in df else "")
    fig = px.line(df, x="step", y="solved", color="depth", facet_col="panel", facet_col_wrap=2, markers=True,
                  color_discrete_sequence=px.colors.sequential.Viridis)
    fig.update_layout(title="Nodes of depth d solved after step t (steps.{t}, from 0)", yaxis_title="solved",
                      xaxis_title="step t")
    fig.update_xaxes(dtick=1, tick0=0)  # whole steps only
    return fig


# ------------------------------------------------------------ one problem, step by step
STATUS_COLORS = {"not yet computed": "#d9d9d9", "correct": "#2ca02c", "wrong": "#d62728"}
MAX_TEXT_CELLS = 2500  # larger state tables show values on hover only, their cells drawn with WebGL


def state_cell(point: dict) -> tuple[int, str] | None:
    """(loop step t, variable) of a clicked state-table cell (a selection point of the figure's
    "cells" trace), the input column read as step 0 (the step that reads it); None for other points."""
    x, y = point.get("x"), point.get("y")
    if x is None or y is None:
        return None
    if str(x) == "input":
        return 0, str(y)
    try:
        return int(x), str(y)
    except (TypeError, ValueError):
        return None


def state_table_figure(table: pd.DataFrame, changed: pd.DataFrame | None = None,
                       title: str = "Each variable's decoded value after every step") -> go.Figure:
    """The step-by-step state: one row per variable, one column per step, the value as text.

    table: rows (slot, step, value, truth, exact, status, depth) with ``step`` the loop step t
    whose output the row shows and -1 for the input; tables that count steps run (0 = the
    input, ``apps.adapters.reasoner.state_table``) are read as such. Column t is the state
    after ``steps.{t}``, the input has a column of its own. Cells are coloured by status
    (correct / wrong / not yet computed); ``changed`` (rows slot, step, in the table's
    convention) outlines the cells an intervention changed.
    """
    if table.empty:
        raise ValueError("the state table is empty: the problem has no variable slots")
    runs = _state_steps(table)
    table = table.assign(step=loop_steps(table["step"], runs))
    if changed is not None and len(changed):
        changed = changed.assign(step=loop_steps(changed["step"], runs))
    slots = list(dict.fromkeys(table["slot"]))
    steps = sorted(table["step"].unique())
    labels = ["input" if t < 0 else str(t) for t in steps]
    codes = {s: i for i, s in enumerate(STATUS_COLORS)}
    grid = table.pivot(index="slot", columns="step", values="status").reindex(index=slots, columns=steps)
    text = table.pivot(index="slot", columns="step", values="value").reindex(index=slots, columns=steps)
    custom = np.dstack([table.pivot(index="slot", columns="step", values=c).reindex(index=slots, columns=steps).values
                        for c in ("truth", "exact", "depth")])
    n = len(STATUS_COLORS)
    scale = [v for i, c in enumerate(STATUS_COLORS.values()) for v in ((i / n, c), ((i + 1) / n, c))]
    z = np.array([[codes.get(v, np.nan) for v in row] for row in grid.values], dtype=float)
    large = z.size > MAX_TEXT_CELLS  # thousands of text labels and SVG markers make the browser crawl
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=slots, text=text.values, texttemplate=None if large else "%{text}",
        colorscale=scale, zmin=-0.5, zmax=n - 0.5, showscale=False, xgap=1, ygap=1, hoverinfo="skip"))
    # the cells again as invisible markers: a heatmap sends no selection to the app, markers do
    # (a click on a cell opens its step); they carry the hover text too
    cols, rows = np.meshgrid(np.arange(len(steps)), np.arange(len(slots)))
    fig.add_trace((go.Scattergl if large else go.Scatter)(
        x=[labels[c] for c in cols.ravel()], y=[slots[r] for r in rows.ravel()], mode="markers",
        name="cells", showlegend=False, marker=dict(symbol="square", size=18, color="rgba(0,0,0,0)"),
        text=text.values.ravel(), customdata=custom.reshape(-1, custom.shape[-1]),
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)),
        hovertemplate="%{y}, after step %{x}<br>decoded %{text}<br>true value %{customdata[0]}"
                      "<br>exact algorithm %{customdata[1]}<br>depth %{customdata[2]}<extra></extra>"))
    for status, color in STATUS_COLORS.items():  # legend entries for the three colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=status,
                                 marker=dict(symbol="square", size=12, color=color)))
    if changed is not None and len(changed):
        fig.add_trace(go.Scatter(x=["input" if t < 0 else str(t) for t in changed["step"]], y=changed["slot"],
                                 mode="markers", name="changed",
                                 marker=dict(symbol="square-open", size=22, color="black", line=dict(width=2)),
                                 hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title=STATE_AXIS, yaxis_title="variable", clickmode="event+select",
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category"),
                      height=max(300, 24 * len(slots) + 160))
    legend_below(fig)
    return fig


def attention_figure(pattern: np.ndarray, labels: list[str], reads: pd.DataFrame | None = None,
                     title: str = "Attention pattern") -> go.Figure:
    """pattern [query, key] of one head (or a mean over heads); labels [L] token labels.

    ``reads`` (rows query, key, kind) marks where the exact algorithm reads: the definition
    (circles) or operand (squares) positions each slot depends on.
    """
    pattern = np.asarray(pattern)
    L = len(labels)
    if pattern.shape != (L, L):
        raise ValueError(f"pattern must be [query, key] = [{L}, {L}] (one per token label); got {list(pattern.shape)}")
    # Categorical axes named by the tokens: the hover reads them from the axes, so the figure does
    # not carry two [L, L] arrays of labels (at L = 179 they were three quarters of its 0.8 MB).
    ticks = [f"{i}:{lab}" for i, lab in enumerate(labels)]
    fig = go.Figure(go.Heatmap(z=pattern.astype(np.float32), x=ticks, y=ticks, colorscale="Blues", zmin=0,
                               colorbar=dict(title="weight"),
                               hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"))
    symbols = {"definition": ("circle-open", "#d62728"), "operand": ("square-open", "#ff7f0e")}
    if reads is not None and len(reads):
        for kind, g in reads.groupby("kind"):
            symbol, color = symbols.get(kind, ("x", "black"))
            fig.add_trace(go.Scatter(x=[ticks[k] for k in g["key"]], y=[ticks[q] for q in g["query"]],
                                     mode="markers", name=f"reads the {kind}",
                                     marker=dict(symbol=symbol, color=color, size=9, line=dict(width=2))))
    step = max(1, L // 40)
    axis = dict(type="category", tickmode="array", tickvals=ticks[::step], ticktext=ticks[::step],
                tickfont=dict(size=9))
    fig.update_layout(title=title, xaxis=dict(title="key position", **axis),
                      yaxis=dict(title="query position", autorange="reversed", **axis),
                      height=max(450, min(900, 12 * L + 200)))
    legend_below(fig)
    return fig


def step_lens_figure(at_slot: pd.DataFrame, overview: pd.DataFrame | None = None, slot: str = "",
                     title: str = "Step lens: the value head read after every layer of every step") -> go.Figure:
    """Left: at one slot, the decoded value (text) and the probability of its true value
    (colour) per step (rows) and layer (columns). Right: the fraction of all slots decoded
    right. Inputs are ``step_lens`` rows (step, layer, layer_name, value, p_answer) and
    ``lens_overview`` rows (step, layer, layer_name, accuracy).
    """
    if at_slot.empty:
        raise ValueError("no step-lens rows for this slot")
    cols = 2 if overview is not None else 1
    fig = make_subplots(rows=1, cols=cols, horizontal_spacing=0.12,
                        subplot_titles=[f"P(true value) at {slot}" if slot else "P(true value)"]
                        + (["fraction of slots decoded right"] if cols == 2 else []))
    order = at_slot.sort_values("layer")["layer_name"].unique().tolist()
    p = at_slot.pivot(index="step", columns="layer_name", values="p_answer")[order]
    text = at_slot.pivot(index="step", columns="layer_name", values="value")[order]
    fig.add_trace(go.Heatmap(z=p.values, x=order, y=list(p.index), text=text.values, texttemplate="%{text}",
                             colorscale="Viridis", zmin=0, zmax=1,
                             colorbar=dict(title="P", x=0.44 if cols == 2 else 1.0),
                             hovertemplate="step %{y}, %{x}<br>decoded %{text}<br>P(true) %{z:.3f}<extra></extra>"),
                  row=1, col=1)
    if overview is not None:
        acc = overview.pivot(index="step", columns="layer_name", values="accuracy")[order]
        fig.add_trace(go.Heatmap(z=acc.values, x=order, y=list(acc.index), colorscale="Viridis", zmin=0, zmax=1,
                                 colorbar=dict(title="acc", x=1.0),
                                 hovertemplate="step %{y}, %{x}<br>accuracy %{z:.3f}<extra></extra>"), row=1, col=2)
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text="layer (residual stream after)", row=1, col=c)
        fig.update_yaxes(title_text="step t (hooks steps.{t})", autorange="reversed", type="category", row=1, col=c)
    fig.update_layout(title=title, height=max(350, 28 * len(p) + 180))
    return fig


def attention_animation(patterns: np.ndarray, labels: list[str], reads: pd.DataFrame | None = None,
                        what: str = "mean over heads", layer: int = 0, start: int = 0) -> go.Figure:
    """The attention of one head (or the head mean) at every step, played step by step from ``start``.

    patterns: [steps, query, key]; frame t is step t (``steps.{t}``), all on one colour scale.
    """
    patterns = np.asarray(patterns)
    if patterns.ndim != 3 or not len(patterns):
        raise ValueError(f"patterns must be [steps, query, key] with at least one step; got {list(patterns.shape)}")
    top = float(patterns.max()) or 1.0
    frames = []
    for t, p in enumerate(patterns):
        fig = attention_figure(np.round(p, 4), labels, reads, title=f"Attention at step {t}, layer {layer}, {what}")
        fig.update_traces(zmax=top, selector=dict(type="heatmap"))
        frames.append(fig)
    return animate(frames, list(range(len(patterns))), prefix="step t = ", only={0: ("z", "zmax")}, active=start,
                   height=max(520, min(950, 12 * len(labels) + 320)))


def attention_grid_figure(patterns: np.ndarray, labels: list[str], step: int) -> go.Figure:
    """Every head of every layer at one step, small multiples on one colour scale.

    patterns: [layers, heads, query, key] (``steps.{step}.blocks.{l}.attn.hook_pattern``).
    Rows are layers, columns heads; the hover names the query and key tokens (``8:x_7``).
    """
    patterns = np.asarray(patterns)
    if patterns.ndim != 4 or patterns.shape[2:] != (len(labels), len(labels)):
        raise ValueError(f"patterns must be [layers, heads, query, key] with query = key = {len(labels)} "
                         f"(one per token label); got {list(patterns.shape)}")
    n_layers, n_heads, L, _ = patterns.shape
    ticks = [f"{i}:{lab}" for i, lab in enumerate(labels)]  # categorical axes: the hover names the tokens
    fig = make_subplots(rows=n_layers, cols=n_heads, horizontal_spacing=0.02, vertical_spacing=0.06,
                        subplot_titles=[f"layer {l}, head {h}" for l in range(n_layers) for h in range(n_heads)])
    for l in range(n_layers):
        for h in range(n_heads):
            fig.add_trace(go.Heatmap(z=np.round(patterns[l, h], 4), x=ticks, y=ticks, coloraxis="coloraxis",
                                     name=f"layer {l}, head {h}",
                                     hovertemplate=f"layer {l}, head {h}<br>query %{{y}}<br>key %{{x}}"
                                                   "<br>weight %{z:.3f}<extra></extra>"), row=l + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False, matches="x", type="category")
    fig.update_yaxes(showticklabels=False, matches="y", autorange="reversed", type="category")
    fig.update_xaxes(title_text="key position", matches=None, row=n_layers, col=1)
    fig.update_yaxes(title_text="query position", matches=None, autorange="reversed", row=1, col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=f"Every head at step {step} (steps.{step}.blocks.{{l}}.attn.hook_pattern)",
                      coloraxis=dict(colorscale="Blues", cmin=0, cmax=float(patterns.max()) or 1.0,
                                     colorbar=dict(title="weight")),
                      height=max(300, 60 + 230 * n_layers))
    return fig


def compare_summary(a: dict, b: dict, names: tuple[str, str]) -> pd.DataFrame:
    """Two rollouts' summaries (``Rollout.summary()``) side by side, one row per model."""
    return pd.DataFrame([{"model": n, "steps": s["steps"], "node accuracy": round(s["node_accuracy"], 3),
                          "fully solved": s["fully_solved"]} for n, s in zip(names, (a, b))])


def patching_inputs(experiment, cfg) -> tuple[tuple[list[str], list[str]], list[list[str]]] | None:
    """The clean and corrupted problems of a patching experiment as text, and each clean problem's
    token labels; None when the experiment holds no problems (only tensors)."""
    clean, corrupted = getattr(experiment, "problems", None), getattr(experiment, "corrupted_problems", None)
    if not clean or not corrupted:
        return None
    labels = []
    for p in clean:
        enc = ga.encode(p, cfg.scheme, cfg.name_pool)
        labels.append([ga.describe_token(enc, i, cfg.modulus) for i in range(len(enc.answer))])
    return ([ga.format_problem(p) for p in clean], [ga.format_problem(p) for p in corrupted]), labels
