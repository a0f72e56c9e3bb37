"""Figures for the gain-controlled circuit's adaptation experiment (data in, Plotly figure out).

Inputs are the tables of ``models.gain_experiment.AdaptationResult``: ``neurons`` (one row per
neuron), ``tuning`` (tidy responses) and the correlation matrices.
"""

from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_CONDITION_DASH = {"before": "dot", "after": "solid"}


def _adapter_line(fig: go.Figure, x: float, **kw) -> None:
    fig.add_vline(x=x, line_dash="dash", line_color="grey", annotation_text="adapter", **kw)


def tuning_figure(tuning: pd.DataFrame, preferred: Optional[Sequence[float]] = None, adapter: float = 0.0) -> go.Figure:
    """Tuning curves before (dotted) and after (solid) adaptation for a few neurons.

    tuning: tidy rows condition ('before'/'after'), neuron, preferred, orientation, response.
    preferred: preferred orientations to show (nearest neurons); default: seven from -60 to 60 deg.
    """
    prefs = np.sort(tuning.preferred.unique())
    wanted = [-60, -30, -15, 0, 15, 30, 60] if preferred is None else list(preferred)
    chosen = sorted({float(prefs[np.argmin(np.abs(prefs - w))]) for w in wanted})
    colors = px.colors.sample_colorscale("Turbo", [i / max(1, len(chosen) - 1) for i in range(len(chosen))])
    fig = go.Figure()
    for color, pref in zip(colors, chosen):
        for cond in ("before", "after"):
            d = tuning[(tuning.preferred == pref) & (tuning.condition == cond)].sort_values("orientation")
            fig.add_trace(go.Scatter(x=d.orientation, y=d.response, mode="lines", line=dict(color=color, dash=_CONDITION_DASH[cond]),
                                     name=f"{pref:+.0f} deg, {cond}", legendgroup=f"{pref}"))
    _adapter_line(fig, adapter)
    fig.update_layout(title="Tuning curves before (dotted, uniform gains) and after (solid, adapted gains)",
                      xaxis_title="stimulus orientation (deg)", yaxis_title="steady-state response")
    return fig


def shift_figure(neurons: pd.DataFrame) -> go.Figure:
    """Tuning-curve peak shift (positive = away from the adapter) vs preferred orientation relative to it."""
    d = neurons.sort_values("distance")
    fig = go.Figure(go.Scatter(x=d.distance, y=d.shift_away, mode="lines+markers", name="peak shift"))
    fig.add_hline(y=0, line_color="grey")
    _adapter_line(fig, 0.0)
    fig.update_layout(title="Repulsion: tuning-curve peak shift away from the adapter",
                      xaxis_title="preferred orientation - adapter (deg)", yaxis_title="shift away from adapter (deg)")
    return fig


def maxmin_figure(neurons: pd.DataFrame) -> go.Figure:
    """Response maxima and minima of every neuron before and after adaptation."""
    d = neurons.sort_values("distance")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("response maximum", "response minimum"))
    for col, what in ((1, "max"), (2, "min")):
        for cond, color in (("before", "grey"), ("after", "crimson")):
            fig.add_trace(go.Scatter(x=d.distance, y=d[f"{what}_{cond}"], mode="lines+markers", name=cond,
                                     line=dict(color=color, dash=_CONDITION_DASH[cond]), showlegend=col == 1),
                          row=1, col=col)
        fig.add_vline(x=0, line_dash="dash", line_color="grey", row=1, col=col)
        fig.update_xaxes(title_text="preferred orientation - adapter (deg)", row=1, col=col)
    fig.update_layout(title="Changes of response maxima and minima")
    return fig


def correlation_figure(before: np.ndarray, after: np.ndarray, preferred: Sequence[float]) -> go.Figure:
    """Pairwise response correlations under the biased ensemble: before, after, and after - before."""
    p = np.asarray(preferred)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("before (uniform gains)", "after (adapted gains)", "after - before"),
                        horizontal_spacing=0.08)
    fig.add_trace(go.Heatmap(z=before, x=p, y=p, coloraxis="coloraxis"), 1, 1)
    fig.add_trace(go.Heatmap(z=after, x=p, y=p, coloraxis="coloraxis"), 1, 2)
    diff = after - before
    lim = float(np.abs(diff).max()) or 1.0
    fig.add_trace(go.Heatmap(z=diff, x=p, y=p, zmin=-lim, zmax=lim, colorscale="PuOr_r",
                             colorbar=dict(title="change", x=1.08)), 1, 3)
    fig.update_layout(title="Pairwise response correlations across the biased ensemble",
                      coloraxis=dict(colorscale="RdBu_r", cmin=-1, cmax=1, colorbar=dict(title="r", x=1.0)))
    for c in (1, 2, 3):
        fig.update_xaxes(title_text="preferred (deg)", row=1, col=c)
        fig.update_yaxes(title_text="preferred (deg)" if c == 1 else None, row=1, col=c, scaleanchor=f"x{c if c > 1 else ''}")
    return fig


def gain_profile_figure(neurons: pd.DataFrame, adapter: float = 0.0, objective: Optional[str] = None) -> go.Figure:
    """The gains optimised for the uniform and for the biased distribution vs preferred orientation."""
    d = neurons.sort_values("preferred")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=d.preferred, y=d.gain_before, mode="lines+markers", name="uniform p(s)",
                             line=dict(color="grey", dash="dot")))
    fig.add_trace(go.Scatter(x=d.preferred, y=d.gain_after, mode="lines+markers", name="biased p(s)",
                             line=dict(color="crimson")))
    _adapter_line(fig, adapter)
    title = "Gain profile" + (f" ({objective} objective)" if objective else "")
    fig.update_layout(title=title, xaxis_title="preferred orientation (deg)", yaxis_title="gain g_i")
    return fig


EFFECT_UNITS = (  # (panel, what the measure's text says, x-axis title): one unit per panel
    ("Peak shifts", "(deg)", "after - before (deg)"),
    ("Response rates", "response", "after - before (response, a.u.)"),
    ("Correlations", "correlation", "after - before (correlation r)"),
    ("Other measures", "", "after - before (the measure's unit)"),
)
_PANEL_GAP, _BAR = 110, 34  # px: between panels (an axis title and the next panel's title); per bar


def effect_unit(measure: str) -> str:
    """The panel of ``EFFECT_UNITS`` a measure belongs to, read from its text."""
    return next(name for name, word, _ in EFFECT_UNITS if word in measure.lower())


def effects_figure(effects: pd.DataFrame, objective: Optional[str] = None) -> go.Figure:
    """Every measure's change after - before, one bar each, one panel per unit (degrees, response
    rates, correlations, the rest), each with its own titled axis. Green: the expected direction,
    red: the other direction, grey: no direction expected."""
    d = effects.assign(unit=effects.measure.map(effect_unit))
    panels = [(name, title) for name, _, title in EFFECT_UNITS if (d.unit == name).any()]
    sizes = [max(int((d.unit == name).sum()), 2) for name, _ in panels]
    plot_px = _BAR * sum(sizes) + _PANEL_GAP * (len(panels) - 1)  # the gaps sized in pixels, not fractions
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[name for name, _ in panels],
                        row_heights=sizes, vertical_spacing=_PANEL_GAP / plot_px)
    for row, (name, title) in enumerate(panels, start=1):
        g = d[d.unit == name]
        colors = ["grey" if e == "" else ("seagreen" if ok else "crimson") for e, ok in zip(g.expected, g.reproduced)]
        fig.add_trace(go.Bar(x=g.change, y=[_wrap(m) for m in g.measure], orientation="h", marker_color=colors,
                             name=name, customdata=np.stack([g.measure, g.before, g.after,
                                                             g.expected.replace("", "none")], 1),
                             hovertemplate="%{customdata[0]}<br>change %{x:.3f}<br>before %{customdata[1]:.3f}, "
                                           "after %{customdata[2]:.3f}<br>expected %{customdata[3]}<extra></extra>"),
                      row=row, col=1)
        fig.add_vline(x=0, line_color="grey", row=row, col=1)
        fig.update_xaxes(title_text=title, title_standoff=4, row=row, col=1)
        fig.update_yaxes(title_text="measure", autorange="reversed", automargin=True, row=row, col=1)
    title = "Adaptation effects" + (f", {objective} objective" if objective else "") + \
        "<br><sup>green: direction as expected, red: not, grey: no direction expected</sup>"
    fig.update_layout(title=title, showlegend=False, margin=dict(t=110, b=70), height=plot_px + 180)
    return fig


def _wrap(text: str, width: int = 32) -> str:
    """A long measure name on a few short lines, so the bars keep most of a narrow page."""
    return "<br>".join(textwrap.wrap(text, width))


def figure(result, name: str) -> go.Figure:
    """One figure of the experiment (a key of ``all_figures``), built alone."""
    builders = {
        "effects": lambda: effects_figure(result.effects, result.objective),
        "tuning": lambda: tuning_figure(result.tuning, adapter=result.adapter),
        "shift": lambda: shift_figure(result.neurons),
        "maxmin": lambda: maxmin_figure(result.neurons),
        "correlations": lambda: correlation_figure(result.corr_before, result.corr_after, result.preferred),
        "gains": lambda: gain_profile_figure(result.neurons, adapter=result.adapter, objective=result.objective),
    }
    if name not in builders:
        raise ValueError(f"no gain figure {name!r}; allowed: {', '.join(builders)}")
    return builders[name]()


def all_figures(result) -> dict[str, go.Figure]:
    """Every figure of the experiment from a ``models.gain_experiment.AdaptationResult`` (plain data)."""
    return {name: figure(result, name) for name in ("effects", "tuning", "shift", "maxmin", "correlations", "gains")}
