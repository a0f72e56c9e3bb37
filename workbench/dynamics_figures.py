"""Figures of the loop-dynamics lab: one pure builder per analysis of ``workbench.dynamics``
(a ``Result`` in, a Plotly figure out; every axis titled, steps counted from 0)."""

from __future__ import annotations

from itertools import islice
from typing import Optional

import numpy as np
import pandas as pd

from workbench.results import Result


def _go():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    return go, make_subplots


_STEP = "step t (state after t loop steps)"


def lens_figure(result: Result, value: Optional[str] = None, **kwargs):
    """Per step: share of answers equal to the final answer (and to the target), and their mean rank
    (real-valued answers: their mean distance)."""
    go, make_subplots = _go()
    t = result.tables["by_step"]
    has_layers = "layer" in t and t["layer"].notna().any()
    values = "error_final" in t
    right = "mean distance ||pred - answer||" if values else "mean rank (0 = top class)"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("share of answers", right))
    series = [("match_final", "error_final" if values else "rank_final", "= final answer")]
    if "accuracy" in t:
        series.append(("accuracy", "error_target" if values else "rank_target", "= true answer"))
    if has_layers:  # layer l of step t sits between t - 1 and t; the state after step t at t
        L = float(t["layer"].max()) + 1
        x = t["step"] - 1 + (t["layer"].astype(float).fillna(L - 1) + 1) / L
        x = x.where(t["layer"].notna(), t["step"].astype(float))
    else:
        x = t["step"]
    for share, rank, label in series:
        hover = t["hook"]
        fig.add_trace(go.Scatter(x=x, y=t[share], mode="lines+markers", name=label, text=hover,
                                 hovertemplate="%{text}<br>%{y:.3f}<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=t[rank], mode="lines+markers", text=hover,
                                 name=f"{'distance to' if values else 'rank of'} the {label[2:]}",
                                 hovertemplate="%{text}<br>%{y:.3g}<extra></extra>"), 1, 2)
    xtitle = _STEP if not has_layers else "step t (its layers lie in t-1..t)"
    fig.update_xaxes(title_text=xtitle, dtick=1 if len(t) <= 40 else None)
    share = "share of answers" + (f" (within tol {result.meta.get('tol')})" if values else "")
    fig.update_yaxes(title_text=share, range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="mean distance" if values else "mean rank", row=1, col=2)
    return fig.update_layout(title="Iteration lens: the model's readout after every step", height=420)


def convergence_figure(result: Result, value: Optional[str] = None, max_lines: int = 40, **kwargs):
    """Update norm and distance to the final state per step (median, and a few examples), and the
    commit step (against difficulty when given)."""
    go, make_subplots = _go()
    df, ex = result.df, result.tables["examples"]
    value = value or "update_norm"
    third = "commit step vs difficulty" if "difficulty" in ex and "commit_step" in ex else (
        "commit step" if "commit_step" in ex else "last update")
    fig = make_subplots(rows=1, cols=3, subplot_titles=(value.replace("_", " "), "distance to the final state", third))
    keys = ["example", "pos"] if "pos" in df else ["example"]
    lines = [g for _, g in islice(df.groupby(keys, sort=True), max_lines)]
    for col, c in ((value, 1), ("dist_to_final", 2)):
        # the examples as one trace broken by gaps: a trace per line costs the browser seconds to draw
        x = [v for g in lines for v in (*g["step"], None)]
        y = [v for g in lines for v in (*g[col], None)]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color="lightgrey", width=1), connectgaps=False,
                                 showlegend=False, hoverinfo="skip"), 1, c)
    med = df.groupby("step", as_index=False)[[value, "dist_to_final"]].median()
    fig.add_trace(go.Scatter(x=med["step"], y=med[value], mode="lines+markers", name="median"), 1, 1)
    fig.add_trace(go.Scatter(x=med["step"], y=med["dist_to_final"], mode="lines+markers", name="median",
                             showlegend=False), 1, 2)
    if "difficulty" in ex and "commit_step" in ex:
        fig.add_trace(go.Box(x=ex["difficulty"], y=ex["commit_step"], name="commit step", boxpoints="all"), 1, 3)
        fig.update_xaxes(title_text="difficulty", row=1, col=3)
        fig.update_yaxes(title_text="commit step", row=1, col=3)
    elif "commit_step" in ex:
        fig.add_trace(go.Histogram(x=ex["commit_step"], name="commit step"), 1, 3)
        fig.update_xaxes(title_text="commit step (answer fixed from it on)", row=1, col=3)
        fig.update_yaxes(title_text="answers", row=1, col=3)
    else:
        fig.add_trace(go.Histogram(x=ex["last_update"], name="last update"), 1, 3)
        fig.update_xaxes(title_text="||h_(T-1) - h_(T-2)||", row=1, col=3)
        fig.update_yaxes(title_text="states", row=1, col=3)
    for c, col in ((1, value), (2, "dist_to_final")):
        fig.update_xaxes(title_text=_STEP if c == 1 else "step t", row=1, col=c)
        vals = pd.to_numeric(df[col], errors="coerce").dropna()
        if len(vals) and bool((vals > 0).all()):  # a log axis unless some state repeats exactly
            fig.update_yaxes(type="log", row=1, col=c)
    fig.update_yaxes(title_text="||h_t - h_(t-1)||" if value == "update_norm" else value, row=1, col=1)
    fig.update_yaxes(title_text="||h_t - h_(T-1)||", row=1, col=2)
    rate = result.meta.get("fixed_point_rate", float("nan"))
    return fig.update_layout(title=f"Convergence: {rate:.0%} of final states are fixed points "
                                   f"({result.meta.get('tolerance', '')})", height=420)


def transfer_figure(result: Result, value: Optional[str] = None, **kwargs):
    """Heatmap: probe fit at step i (rows) tested at step j (columns); the diagonal with its control."""
    go, make_subplots = _go()
    df, metric = result.df, result.meta.get("metric", "score")
    value = value or "score"
    grid = df.pivot_table(index="train_step", columns="test_step", values=value, dropna=False)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        subplot_titles=(f"{value}: fit at step i, tested at step j", "same step (dotted: control)"))
    fig.add_trace(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                             colorscale="Viridis", colorbar=dict(title=value, x=0.5),
                             hovertemplate="fit at %{y}<br>tested at %{x}<br>%{z:.3f}<extra></extra>"), 1, 1)
    d = df[df.train_step == df.test_step]
    fig.add_trace(go.Scatter(x=d["train_step"], y=d["score"], mode="lines+markers", name=metric), 1, 2)
    fig.add_trace(go.Scatter(x=d["train_step"], y=d["control"], mode="lines", line=dict(dash="dot"),
                             name="control"), 1, 2)
    if d["chance"].notna().any() and metric == "accuracy":
        fig.add_hline(y=float(d["chance"].mean()), line_dash="dash", line_color="grey", row=1, col=2)
    fig.update_xaxes(title_text="test step j", row=1, col=1)
    fig.update_yaxes(title_text="train step i", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="step (fit and tested)", row=1, col=2)
    fig.update_yaxes(title_text=metric, row=1, col=2)
    return fig.update_layout(title="Probe transfer across steps", height=430)


def basin_figure(result: Result, value: Optional[str] = None, **kwargs):
    """Heatmaps over (perturbed step, eps): return rate and median recovery time."""
    go, make_subplots = _go()
    t = result.tables["by_step"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("return rate (final answer unchanged)",
                                                        "median recovery time (steps)"))
    for c, col, scale in ((1, "return_rate", "RdYlGn"), (2, "median_recovery_time", "Blues")):
        grid = t.pivot_table(index="step", columns="eps", values=col, dropna=False)
        fig.add_trace(go.Heatmap(z=grid.values, x=[f"{e:g}" for e in grid.columns], y=[str(i) for i in grid.index],
                                 colorscale=scale, colorbar=dict(title=col.replace("_", " "),
                                                                 x=0.45 if c == 1 else 1.0),
                                 hovertemplate="step %{y}, eps %{x}<br>%{z:.3f}<extra></extra>"), 1, c)
        fig.update_xaxes(title_text="perturbation size eps" + (" (x ||h||)" if result.meta.get("relative") else ""),
                         type="category", row=1, col=c)
        fig.update_yaxes(title_text="perturbed after step t", autorange="reversed", row=1, col=c)
    return fig.update_layout(title="Basins: perturb the state after step t, follow the rollout", height=420)


def fixed_points_figure(result: Result, value: Optional[str] = None, **kwargs):
    """Eigenvalues of the Jacobian at every fixed point (with the unit circle or the imaginary axis)."""
    go, make_subplots = _go()
    e, kind = result.tables["eigenvalues"], result.meta.get("kind", "map")
    pts = result.meta.get("points")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Jacobian eigenvalues", "fixed points"))
    for k, g in e.groupby("point", sort=True):
        label = f"point {k} ({g['stability'].iloc[0]})"
        fig.add_trace(go.Scatter(x=g["real"], y=g["imag"], mode="markers", name=label), 1, 1)
    if kind == "map":
        a = np.linspace(0, 2 * np.pi, 200)
        fig.add_trace(go.Scatter(x=np.cos(a), y=np.sin(a), mode="lines", line=dict(color="grey", dash="dot"),
                                 name="|lambda| = 1"), 1, 1)
    else:
        fig.add_vline(x=0, line_dash="dot", line_color="grey", row=1, col=1)
    if pts is not None and len(pts):
        if pts.shape[1] >= 2:
            centred = pts - pts.mean(0)
            if pts.shape[1] > 2 and len(pts) > 1:
                _, _, vt = np.linalg.svd(centred, full_matrices=False)
                xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[:1].T, np.zeros(len(pts))]
                labels = ("PC 1", "PC 2")
            else:
                xy, labels = pts[:, :2], ("h[0]", "h[1]")
        else:
            xy, labels = np.c_[pts[:, 0], np.zeros(len(pts))], ("h[0]", "")
        df = result.df
        fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers+text", text=df["stability"],
                                 textposition="top center", marker=dict(size=8 + 2 * np.sqrt(df["starts"])),
                                 name="fixed points"), 1, 2)
        fig.update_xaxes(title_text=labels[0], row=1, col=2)
        fig.update_yaxes(title_text=labels[1] or "-", row=1, col=2)
    else:
        fig.update_xaxes(title_text="(no fixed point found)", row=1, col=2)
        fig.update_yaxes(title_text="-", row=1, col=2)
    fig.update_xaxes(title_text="Re lambda", row=1, col=1)
    fig.update_yaxes(title_text="Im lambda", row=1, col=1)
    return fig.update_layout(title=f"Fixed points of {'h -> F(h)' if kind == 'map' else 'dh/dt = F(h)'}: "
                                   f"{len(result.df)} found from {result.meta.get('starts')} starts", height=420)
