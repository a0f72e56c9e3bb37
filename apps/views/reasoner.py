"""Figures for the recursive reasoner."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


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


def per_step_figure(per_step: pd.DataFrame) -> go.Figure:
    """Fraction of nodes of depth d solved after step t; one panel per model (and size)."""
    df = per_step.copy()
    df["panel"] = df["model"] + (" N=" + df["n_nodes"].astype(str) if "n_nodes" in df else "")
    fig = px.line(df, x="step", y="solved", color="depth", facet_col="panel", facet_col_wrap=2, markers=True,
                  color_discrete_sequence=px.colors.sequential.Viridis)
    fig.update_layout(title="Nodes of depth d solved after step t", yaxis_title="solved", xaxis_title="step")
    return fig
