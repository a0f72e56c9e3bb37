"""Figures for the explorer's home page: the zoo at a glance (data in, Plotly figure out)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


LOWER_BETTER = ("error", "mse", "loss", "perplexity")
HIGHER_BETTER = ("accuracy", "solved", "acc", "score")


def direction(metric: str) -> str:
    """'lower is better', 'higher is better' or '' (unknown) for a headline metric's name."""
    m = metric.lower()
    if any(w in m for w in LOWER_BETTER):
        return "lower is better"
    if any(w in m for w in HIGHER_BETTER):
        return "higher is better"
    return ""


def _panel_title(metric: str) -> str:
    d = direction(metric)
    return f"{metric} ({d})" if d else metric


def headline_figure(table: pd.DataFrame, title: str = "Headline metric of every shipped model") -> go.Figure:
    """One horizontal bar per model, one panel per headline metric (error, forecast MSE, ...).

    Panels are grouped, lower-is-better metrics first, then higher-is-better, then the rest, and
    each panel's title says which way is better: no axis mixes the two.

    table: ``apps.zoo.zoo_table`` rows (model, family, metric, value; and seed_mean / spread /
    seeds where a model was trained over several seeds: a black diamond at the mean with one
    standard deviation either side, next to the shipped checkpoint's bar); rows without a
    number are left out.
    """
    df = table.dropna(subset=["value"])
    df = df[df["metric"] != ""]
    if df.empty:
        raise ValueError("no model in the table has a headline number")
    order = {"lower is better": 0, "higher is better": 1, "": 2}
    metrics = sorted(dict.fromkeys(df["metric"]), key=lambda m: order[direction(m)])
    bars = [int((df["metric"] == m).sum()) for m in metrics]
    gap = 110  # pixels between panels: ticks and axis title of one, the title of the next
    height = 160 + sum(26 * b + 20 for b in bars) + gap * (len(metrics) - 1)
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=[_panel_title(m) for m in metrics],
                        row_heights=[26 * b + 20 for b in bars],
                        vertical_spacing=gap / (height - 160) if len(metrics) > 1 else 0.0)
    for i, metric in enumerate(metrics, start=1):
        g = df[df["metric"] == metric]
        nan = pd.Series(float("nan"), index=g.index)
        mean, spread, seeds = (g[c] if c in g else nan for c in ("seed_mean", "spread", "seeds"))
        text = [f"{v:.3g}" if pd.isna(s) else f"{v:.3g} (over {int(n)} seeds: {m:.3g} ± {s:.2g})"
                for v, m, s, n in zip(g["value"], mean, spread, seeds)]
        fig.add_trace(go.Bar(x=g["value"], y=g["model"], orientation="h", name=metric, showlegend=False,
                             customdata=g["family"], text=text, textposition="auto",
                             hovertemplate="%{y} (%{customdata})<br>" + metric + " = %{text}<extra></extra>"),
                      row=i, col=1)
        seeded = spread.notna()
        if seeded.any():  # the mean over training seeds, one standard deviation either side
            fig.add_trace(go.Scatter(x=mean[seeded], y=g["model"][seeded], mode="markers", showlegend=False,
                                     name="mean over seeds", marker=dict(color="black", symbol="diamond", size=9),
                                     error_x=dict(type="data", array=spread[seeded].tolist(), color="black",
                                                  thickness=1.5),
                                     hovertemplate="%{y}: mean over seeds %{x:.4g}<extra></extra>"),
                          row=i, col=1)
        fig.update_xaxes(title_text=_panel_title(metric), rangemode="tozero", row=i, col=1)  # bars start at 0
        fig.update_yaxes(title_text="model", dtick=1, row=i, col=1)
    fig.update_layout(title=title, height=max(300, height))
    return fig
