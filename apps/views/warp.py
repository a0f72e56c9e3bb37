"""Figures for WARP: pure functions, data in, ``plotly.graph_objects.Figure`` out.

    forecast_figure      truth vs forecasts, one panel per state variable
    theta_pca_figure     theta_t projected on principal components, coloured by time
    spectrum_figure      eigenvalues of A in the complex plane with the unit circle
    phys_params_figure   physical parameters read from theta_t over time (WARP-Phys)
    results_table_figure the paper's table (MSE x 1e-2) and the digits numbers
    digits_figure        a digit, its context and a completion as 8x8 images
    root_functions_figure the root network of chosen steps queried over tau
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import animate, legend_below

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def forecast_figure(times: np.ndarray, truth: np.ndarray, forecasts: dict[str, np.ndarray], context: int,
                    state_names: Sequence[str] = ("x",), title: str = "Forecast vs truth") -> go.Figure:
    """times [T]; truth [T, d]; forecasts: name -> [T - context, d] (values at times[context:])."""
    truth = np.asarray(truth)
    if truth.ndim != 2 or len(times) != len(truth):
        raise ValueError(f"truth must be [T, d] with T = len(times) = {len(times)}; got {truth.shape}")
    d = truth.shape[1]
    fig = make_subplots(rows=d, cols=1, shared_xaxes=True, subplot_titles=list(state_names)[:d])
    for j in range(d):
        fig.add_trace(go.Scatter(x=times, y=truth[:, j], name="truth", line=dict(color="black"),
                                 legendgroup="truth", showlegend=j == 0), row=j + 1, col=1)
        for i, (name, pred) in enumerate(forecasts.items()):
            pred = np.asarray(pred)
            if pred.shape != (len(times) - context, d):
                raise ValueError(f"forecast {name!r} must be [{len(times) - context}, {d}]; got {pred.shape}")
            fig.add_trace(go.Scatter(x=times[context:], y=pred[:, j], name=name, legendgroup=name,
                                     line=dict(color=_PALETTE[i % len(_PALETTE)], dash="dash"), showlegend=j == 0),
                          row=j + 1, col=1)
        fig.add_vline(x=times[context - 1], line_dash="dot", line_color="grey", row=j + 1, col=1)
    for j, name in enumerate(list(state_names)[:d]):
        fig.update_yaxes(title_text=name, row=j + 1, col=1)
    fig.update_layout(title=title + " (dotted line: end of the context)", height=260 * d + 160)
    fig.update_xaxes(title_text="time", row=d, col=1)
    return legend_below(fig)


def theta_pca_figure(coords: np.ndarray, tau: np.ndarray, explained: Optional[np.ndarray] = None,
                     context: Optional[int] = None, title: str = "theta_t in weight space (PCA)",
                     step: Optional[int] = None) -> go.Figure:
    """coords [T, k>=2] (``models.warp_eval.theta_pca``), tau [T]: a path coloured by time;
    ``step`` marks theta_t at that step (``time.{t}.hook_theta``)."""
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] < 2 or len(coords) != len(tau):
        raise ValueError(f"coords must be [T, k>=2] with T = len(tau) = {len(tau)}; got {coords.shape}")
    ev = list(explained) if explained is not None else [None] * coords.shape[1]
    label = [f"PC{i + 1}" + (f" ({e:.0%})" if e is not None else "") for i, e in enumerate(ev)]
    marker = dict(color=np.asarray(tau), colorscale="Viridis", colorbar=dict(title="tau"), size=5)
    hover = [f"t={t}" for t in range(len(coords))]
    if coords.shape[1] >= 3:
        fig = go.Figure(go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], mode="lines+markers",
                                     marker=marker, line=dict(color="lightgrey"), text=hover,
                                     name="theta_t (colour: tau)"))
        fig.update_layout(scene=dict(xaxis_title=label[0], yaxis_title=label[1], zaxis_title=label[2]))
    else:
        fig = go.Figure(go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="lines+markers", marker=marker,
                                   line=dict(color="lightgrey"), text=hover, name="theta_t (colour: tau)"))
        fig.update_layout(xaxis_title=label[0], yaxis_title=label[1])
    if context is not None and 0 < context <= len(coords):
        c = coords[context - 1]
        point = (go.Scatter3d(x=[c[0]], y=[c[1]], z=[c[2]], mode="markers", name="end of context",
                              marker=dict(color="red", size=8, symbol="x")) if coords.shape[1] >= 3 else
                 go.Scatter(x=[c[0]], y=[c[1]], mode="markers", name="end of context",
                            marker=dict(color="red", size=12, symbol="x")))
        fig.add_trace(point)
    if step is not None and 0 <= step < len(coords):
        c = coords[step]
        fig.add_trace(go.Scatter3d(x=[c[0]], y=[c[1]], z=[c[2]], mode="markers", name=f"theta_t at step {step}",
                                   marker=dict(color="black", size=7, symbol="diamond")) if coords.shape[1] >= 3 else
                      go.Scatter(x=[c[0]], y=[c[1]], mode="markers", name=f"theta_t at step {step}",
                                 marker=dict(color="black", size=13, symbol="diamond-open", line=dict(width=2))))
    fig.update_layout(title=title, showlegend=context is not None or step is not None,
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))  # below: clear of the colour bar
    return fig


def spectrum_figure(eigenvalues: np.ndarray, title: str = "Spectrum of A") -> go.Figure:
    """Eigenvalues (complex) [D] with the unit circle: |lambda| > 1 grows, < 1 forgets."""
    ev = np.asarray(eigenvalues)
    angle = np.linspace(0, 2 * np.pi, 361)
    mag = np.abs(ev)
    fig = go.Figure([
        go.Scatter(x=np.cos(angle), y=np.sin(angle), mode="lines", line=dict(color="lightgrey"), name="|z| = 1"),
        go.Scatter(x=ev.real, y=ev.imag, mode="markers", name="eigenvalues",
                   marker=dict(color=mag, colorscale="RdBu_r", cmid=1.0, colorbar=dict(title="|lambda|"), size=6),
                   text=[f"|lambda|={m:.4f}" for m in mag]),
    ])
    fig.update_layout(title=f"{title}: {len(ev)} eigenvalues, max |lambda| = {mag.max():.4f}",
                      xaxis_title="Re(lambda)", yaxis_title="Im(lambda)", yaxis_scaleanchor="x",
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0), height=560)
    return fig


def phys_params_figure(tau: np.ndarray, params: np.ndarray, names: Sequence[str],
                       truth: Optional[dict[str, float]] = None, context_tau: Optional[float] = None,
                       title: str = "Physical parameters read from theta_t") -> go.Figure:
    """tau [T]; params [T, p] (``out.phys``); truth: name -> the trajectory's true value."""
    params = np.asarray(params)
    if params.ndim != 2 or params.shape != (len(tau), len(names)):
        raise ValueError(f"params must be [T={len(tau)}, p={len(names)}]; got {params.shape}")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=list(names))
    for j, name in enumerate(names):
        fig.add_trace(go.Scatter(x=tau, y=params[:, j], name=f"{name} (model)", line=dict(color=_PALETTE[j])),
                      row=1, col=j + 1)
        if truth and name in truth:
            fig.add_hline(y=truth[name], line_dash="dash", line_color="black", row=1, col=j + 1,
                          annotation_text=f"true {name}")
        if context_tau is not None:
            fig.add_vline(x=context_tau, line_dash="dot", line_color="grey", row=1, col=j + 1)
    fig.update_layout(title=title, showlegend=False)
    fig.update_xaxes(title_text="tau")
    for j, name in enumerate(names, start=1):
        fig.update_yaxes(title_text=f"{name} (read from theta_t)", row=1, col=j)
    return fig


def results_table_figure(table: pd.DataFrame, digits: Optional[pd.DataFrame] = None,
                         title: str = "Forecast MSE x 1e-2 on fresh data") -> go.Figure:
    """table: rows = systems, columns = GRU / WARP / WARP-Phys; digits: tidy rows (model, metric, value)."""
    header = ["system", *table.columns]
    cells = [list(table.index)] + [[("-" if pd.isna(v) else f"{v:.3f}") for v in table[c]] for c in table.columns]
    fig = make_subplots(rows=2 if digits is not None and len(digits) else 1, cols=1,
                        specs=[[{"type": "table"}]] * (2 if digits is not None and len(digits) else 1),
                        subplot_titles=[title] + (["Digits (test split)"] if digits is not None and len(digits)
                                                  else []))
    fig.add_trace(go.Table(header=dict(values=header), cells=dict(values=cells)), row=1, col=1)
    if digits is not None and len(digits):
        fig.add_trace(go.Table(header=dict(values=["model", "metric", "value", "images"]),
                               cells=dict(values=[list(digits.model), list(digits.metric),
                                                  [f"{v:.4f}" for v in digits.value], list(digits.n)])),
                      row=2, col=1)
    fig.update_layout(height=320 + (200 if digits is not None and len(digits) else 0))
    return fig


def digits_figure(truth: np.ndarray, completion: np.ndarray, context: int, title: str = "Completion") -> go.Figure:
    """truth [64] in [0, 1]; completion [64 - context]: truth, context only, context + completion."""
    truth = np.asarray(truth, dtype=float).reshape(-1)
    completion = np.asarray(completion, dtype=float).reshape(-1)
    if truth.shape != (64,) or completion.shape != (64 - context,):
        raise ValueError(f"truth must have 64 pixels and completion {64 - context}; got {truth.shape}, "
                         f"{completion.shape}")
    given = truth.copy()
    given[context:] = np.nan
    filled = np.concatenate([truth[:context], completion])
    fig = make_subplots(rows=1, cols=3, subplot_titles=["truth", f"context ({context} pixels)", "completed"])
    for j, img in enumerate((truth, given, filled)):
        fig.add_trace(go.Heatmap(z=img.reshape(8, 8), colorscale="Greys", zmin=0, zmax=1, showscale=j == 2),
                      row=1, col=j + 1)
    fig.update_yaxes(autorange="reversed", title_text="pixel row")
    fig.update_xaxes(title_text="pixel column")
    fig.update_layout(title=title, height=340)
    return fig


def root_functions_figure(curves: pd.DataFrame, marks: Optional[pd.DataFrame] = None,
                          title: str = "The root network at chosen steps, queried over tau") -> go.Figure:
    """One panel per root output, one line per step over tau; ``marks`` are the points each step decodes.

    curves, marks: tidy rows (step, tau, output, value) from ``apps.adapters.warp.root_curves``.
    """
    if curves.empty:
        raise ValueError("no root curves: choose at least one step")
    outputs = list(dict.fromkeys(curves["output"]))
    steps = sorted(curves["step"].unique())
    fig = make_subplots(rows=1, cols=len(outputs), subplot_titles=outputs)
    for i, step in enumerate(steps):
        color = _PALETTE[i % len(_PALETTE)]
        for j, name in enumerate(outputs, start=1):
            g = curves[(curves.step == step) & (curves.output == name)]
            fig.add_trace(go.Scatter(x=g["tau"], y=g["value"], mode="lines", name=f"step {step}", legendgroup=str(step),
                                     showlegend=j == 1, line=dict(color=color)), row=1, col=j)
            if marks is not None:
                m = marks[(marks.step == step) & (marks.output == name)]
                fig.add_trace(go.Scatter(x=m["tau"], y=m["value"], mode="markers", legendgroup=str(step),
                                         showlegend=False, marker=dict(color=color, size=10, symbol="diamond"),
                                         hovertemplate=f"step {step} decodes here<br>tau=%{{x:.3f}}<br>%{{y:.4f}}"
                                                       "<extra></extra>"), row=1, col=j)
    fig.update_xaxes(title_text="tau")
    for j, name in enumerate(outputs, start=1):
        fig.update_yaxes(title_text=f"root output {name}", row=1, col=j)
    fig.update_layout(title=title + " (diamonds: where each step is decoded)")
    return legend_below(fig)


def theta_path_animation(coords: np.ndarray, tau: np.ndarray, explained: Optional[np.ndarray] = None,
                         context: Optional[int] = None, max_frames: int = 80,
                         title: str = "theta_t in weight space (PCA)") -> go.Figure:
    """theta_t's path (first two principal components) drawn step by step up to t, played in turn.

    coords [T, k>=2], tau [T]; at most ``max_frames`` frames (every k-th step, the last always).
    Axes and the colour scale are fixed to the whole path, so the frames compare.
    """
    coords, tau = np.asarray(coords), np.asarray(tau, dtype=float)
    if coords.ndim != 2 or coords.shape[1] < 2 or len(coords) != len(tau) or not len(coords):
        raise ValueError(f"coords must be [T, k>=2] with T = len(tau) = {len(tau)}; got {coords.shape}")
    T = len(coords)
    shown = sorted(set(range(0, T, max(1, -(-T // max_frames)))) | {T - 1})
    ev = list(explained) if explained is not None else [None, None]
    label = [f"PC{i + 1}" + (f" ({e:.0%})" if e is not None else "") for i, e in enumerate(ev[:2])]
    pad = lambda v: (float(v.min()) - 0.05 * (float(np.ptp(v)) or 1), float(v.max()) + 0.05 * (float(np.ptp(v)) or 1))
    frames = []
    for t in shown:
        fig = go.Figure(go.Scatter(x=coords[: t + 1, 0], y=coords[: t + 1, 1], mode="lines+markers",
                                   name="theta_t (colour: tau)", line=dict(color="lightgrey"),
                                   marker=dict(color=tau[: t + 1], colorscale="Viridis", cmin=tau.min(),
                                               cmax=tau.max(), size=5, colorbar=dict(title="tau")),
                                   text=[f"t={i}" for i in range(t + 1)]))
        fig.add_trace(go.Scatter(x=[coords[t, 0]], y=[coords[t, 1]], mode="markers", name="theta_t now",
                                 marker=dict(color="black", size=13, symbol="diamond-open", line=dict(width=2))))
        c = coords[context - 1] if context is not None and 0 < context <= T else (None, None)
        fig.add_trace(go.Scatter(x=[c[0]], y=[c[1]], mode="markers", name="end of context",
                                 marker=dict(color="red", size=12, symbol="x")))
        fig.update_layout(title=f"{title}: up to step {t} (tau = {tau[t]:.3f})")
        frames.append(fig)
    fig = animate(frames, shown, prefix="step t = ", height=620)
    return fig.update_layout(xaxis=dict(title=label[0], range=pad(coords[:, 0])),
                             yaxis=dict(title=label[1], range=pad(coords[:, 1])))
