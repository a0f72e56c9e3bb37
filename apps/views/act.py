"""Figures for the Adaptive Computation Time RNN (data in, Plotly figure out).

Ponder steps are drawn as the hooks name them: the tick n is ``time.{t}.ponder.{n}``, the
n-th state update counted from 0, so patching the halting logit at ponder step n and halting
there shows at n. N(t), the number of updates, is a count: a sample that halts at ponder step
n has N(t) = n + 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import animate, legend_below


def ponder_difficulty_figure(table: pd.DataFrame, by: str, title: str | None = None) -> go.Figure:
    """Mean ponder time (±1 std) and error against a difficulty, one line per model.

    table: tidy rows with columns ``by``, mean_ponder, std_ponder, step_error and
    (optionally) model — ``models.act_eval.ponder_by`` output, concatenated over models.
    """
    df = table if "model" in table else table.assign(model="model")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ponder time N(t)", "error"))
    colors = px.colors.qualitative.Plotly
    for i, (name, g) in enumerate(df.groupby("model", sort=False)):
        color = colors[i % len(colors)]
        fig.add_trace(go.Scatter(x=g[by], y=g["mean_ponder"], name=name, legendgroup=name, mode="lines+markers",
                                 line_color=color, error_y=dict(type="data", array=g["std_ponder"], visible=True)),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g[by], y=g["step_error"], name=name, legendgroup=name, showlegend=False,
                                 mode="lines+markers", line_color=color), row=1, col=2)
    fig.update_xaxes(title_text=by.replace("_", " "))
    fig.update_yaxes(title_text="mean N(t)", row=1, col=1)
    fig.update_yaxes(title_text="error", range=[-0.02, 1.02], row=1, col=2)
    fig.update_layout(title=title or f"Ponder time against {by.replace('_', ' ')}")
    return legend_below(fig)


def tau_sweep_figure(table: pd.DataFrame, title: str = "Time penalty sweep") -> go.Figure:
    """Error and mean ponder time against tau (log axis), as in the paper's figure.

    table: rows with columns tau, error, mean_ponder (and optionally model).
    """
    df = table.sort_values("tau")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    hover = df["model"] if "model" in df else None
    fig.add_trace(go.Scatter(x=df["tau"], y=df["error"], name="error", mode="lines+markers", hovertext=hover),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=df["tau"], y=df["mean_ponder"], name="mean ponder time", mode="lines+markers",
                             line_dash="dash", hovertext=hover), secondary_y=True)
    fig.update_xaxes(type="log", title_text="time penalty tau")
    fig.update_yaxes(title_text="error", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="mean ponder time N(t)", rangemode="tozero", secondary_y=True)
    fig.update_layout(title=title)
    return fig


PONDER_AXIS = "ponder step n"  # ticks are the hooks' n: time.{t}.ponder.{n}, from 0


def ponder_step(trace: pd.DataFrame) -> pd.Series:
    """The ponder step n of every row, counted from 0 as in the hook names.

    trace: halting-trace rows with a ``ponder`` column (from 0), or only ``n``: counted from 0
    when every input step's first row has n = 0, else (``models.act_eval.halting_trace``, which
    counts from 1) shifted down by one.
    """
    if "ponder" in trace:
        return trace["ponder"].astype(int)
    if trace.empty:
        return trace["n"]
    from_one = bool((trace.groupby("t")["n"].min() >= 1).all())
    return (trace["n"] - 1 if from_one else trace["n"]).astype(int)


def halting_figure(trace: pd.DataFrame, title: str = "Halting at every ponder step n (hooks time.{t}.ponder.{n}, "
                                                    "n from 0)") -> go.Figure:
    """Halting probability h, cumulative h and weight p per ponder step; one panel per input step.

    trace: ``models.act_eval.halting_trace`` output (columns t, n, h, cum_halt, p, N, R; see
    ``ponder_step`` for how n is read). The x axis is the ponder step n from 0, as in the hooks.
    """
    trace = trace.assign(ponder=ponder_step(trace))
    steps = sorted(trace["t"].unique())
    fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True,
                        subplot_titles=[f"t={t}: N={int(trace[trace.t == t]['N'].iloc[0])}" for t in steps])
    for col, t in enumerate(steps, start=1):
        g = trace[trace.t == t]
        first = col == 1
        fig.add_trace(go.Bar(x=g["ponder"], y=g["p"], name="weight p", marker_color="#636efa", showlegend=first,
                             legendgroup="p"), row=1, col=col)
        if g["h"].notna().any():
            fig.add_trace(go.Scatter(x=g["ponder"], y=g["h"], name="halting h", mode="markers",
                                     marker_color="#ef553b", marker_size=9, showlegend=first, legendgroup="h"),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=g["ponder"], y=g["cum_halt"], name="cumulative h", mode="lines+markers",
                                     line_color="#00cc96", showlegend=first, legendgroup="c"), row=1, col=col)
        fig.update_xaxes(title_text=PONDER_AXIS, dtick=1, row=1, col=col)
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    fig.update_yaxes(title_text="probability", row=1, col=1)
    fig.update_layout(title=title, barmode="overlay")
    return legend_below(fig)


def ponder_sequence_figure(steps: pd.DataFrame, label: str = "digits", title: str = "Ponder time along a sequence"
                           ) -> go.Figure:
    """Ponder time at each input step of a few sequences; ``label`` column shown on hover.

    steps: rows with columns item, position, ponder (``ACTEvaluation.steps``, a few items).
    """
    fig = px.line(steps, x="position", y="ponder", color=steps["item"].astype(str), markers=True,
                  hover_data=[c for c in (label, "correct") if c in steps])
    fig.update_layout(title=title, xaxis_title="input step t", yaxis_title="N(t)", legend_title="sequence")
    return fig


def ponder_steps_figure(steps: pd.DataFrame, title: str = "Ponder time per input step") -> go.Figure:
    """N(t) per input step as bars (green: right answer, red: wrong), R(t) and the answer on hover.

    steps: ``apps.adapters.act.per_step`` rows (t, item, N, R, prediction, target, correct).
    """
    if steps.empty:
        raise ValueError("no input steps to show")
    colors = ["#2ca02c" if ok else "#d62728" for ok in steps["correct"]]
    custom = np.stack([steps["item"].astype(str), steps["prediction"].astype(str), steps["target"].astype(str),
                       steps["R"].round(3).astype(str)], axis=1)
    fig = go.Figure(go.Bar(x=steps["t"], y=steps["N"], marker_color=colors, customdata=custom, name="N(t)",
                           text=steps["N"], textposition="outside",
                           hovertemplate="t=%{x}: input %{customdata[0]}<br>N(t)=%{y}, R(t)=%{customdata[3]}"
                                         "<br>answer %{customdata[1]} (true %{customdata[2]})<extra></extra>"))
    fig.update_layout(title=title + " (green: right answer, red: wrong)", xaxis_title="input step t",
                      yaxis_title="ponder steps N(t)", xaxis=dict(type="category"),  # one step: one tick, not -0.4..0.4
                      yaxis=dict(rangemode="tozero", dtick=1 if steps["N"].max() <= 12 else None))
    return fig


def halting_compare_figure(clean: pd.DataFrame, patched: pd.DataFrame,
                           title: str = "Cumulative halting probability: clean vs patched halting logit "
                                        "(ponder step n as in time.{t}.ponder.{n}, from 0)") -> go.Figure:
    """Cumulative h per ponder step for every input step, before (solid) and after (dashed) a patch.

    clean, patched: ``models.act_eval.halting_trace`` rows (t, n, N, cum_halt, p; see
    ``ponder_step``). The x axis is the ponder step n from 0, as in the hook names, so a patch of
    ``time.{t}.ponder.{n}.hook_halt_logit`` that makes the model halt shows its last point at n.
    """
    steps = sorted(set(clean["t"]) | set(patched["t"]))
    if not steps:
        raise ValueError("no ponder steps to compare")
    clean, patched = clean.assign(ponder=ponder_step(clean)), patched.assign(ponder=ponder_step(patched))
    fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True, subplot_titles=[
        f"t={t}: N {_first_n(clean, t)} -> {_first_n(patched, t)}" for t in steps])
    # without ACT there is no halting unit: show the weight p instead of the cumulative h
    column = "cum_halt" if clean["cum_halt"].notna().any() else "p"
    for col, t in enumerate(steps, start=1):
        for name, df, dash, color in (("clean", clean, "solid", "#636efa"), ("patched", patched, "dash", "#ef553b")):
            g = df[df.t == t]
            fig.add_trace(go.Scatter(x=g["ponder"], y=g[column], mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=col == 1, line=dict(dash=dash, color=color)), row=1, col=col)
        fig.update_xaxes(title_text=PONDER_AXIS, dtick=1, row=1, col=col)
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    fig.update_yaxes(title_text="cumulative h" if column == "cum_halt" else "weight p", row=1, col=1)
    fig.update_layout(title=title)
    return legend_below(fig)


def _first_n(trace: pd.DataFrame, t: int) -> str:
    """N(t): the number of ponder steps at input step t (it halts at ponder step N(t) - 1)."""
    g = trace[trace.t == t]
    return str(int(g["N"].iloc[0])) if len(g) else "-"


def halting_animation(trace: pd.DataFrame, t: int) -> go.Figure:
    """Halting at input step ``t`` played ponder step by ponder step: frame n shows the weights p,
    the halting probabilities h and the cumulative h up to ``time.{t}.ponder.{n}``.

    trace: ``models.act_eval.halting_trace`` rows (see ``ponder_step``).
    """
    g = trace[trace.t == t].assign(ponder=lambda d: ponder_step(d)).sort_values("ponder")
    if g.empty:
        raise ValueError(f"no ponder steps at input step t={t}; input steps: {sorted(trace['t'].unique())}")
    act = g["h"].notna().any()
    n_all = len(g)
    frames = []
    for n in range(n_all):
        d = g.iloc[: n + 1]
        fig = go.Figure([go.Bar(x=d["ponder"], y=d["p"], name="weight p", marker_color="#636efa")])
        fig.add_trace(go.Scatter(x=d["ponder"], y=d["h"] if act else [None] * len(d), name="halting h",
                                 mode="markers", marker=dict(color="#ef553b", size=9)))
        fig.add_trace(go.Scatter(x=d["ponder"], y=d["cum_halt"] if act else [None] * len(d), name="cumulative h",
                                 mode="lines+markers", line_color="#00cc96"))
        fig.update_layout(title=f"Input step t={t}: after ponder step n={n} (time.{t}.ponder.{n}); "
                                f"it halts after N={int(g['N'].iloc[0])} updates")
        frames.append(fig)
    fig = animate(frames, list(range(n_all)), prefix="ponder step n = ", height=580)
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    fig.update_layout(barmode="overlay", xaxis=dict(title=PONDER_AXIS, dtick=1, range=[-0.5, n_all - 0.5]),
                      yaxis=dict(title="probability", range=[0, 1.1]))
    return fig
