"""Figures for the analysis pages (patching, probing): loop-step grids and top sites.

The per-site heatmaps themselves come from ``workbench.figures`` (``Result.figure()``);
these builders add the overviews the pages show beside them. Data in, Plotly figure out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_ROWS = ("step", "time")  # the outer (recurrent) loop goes down
_COLS = ("layer", "ponder", "head", "pos")  # the first finer index present goes across
AGGREGATES = ("max |value|", "mean")


def _present(df: pd.DataFrame, col: str) -> bool:
    return col in df and df[col].notna().any()


def loop_grid_figure(df: pd.DataFrame, value: str, agg: str = "max |value|", title: str | None = None) -> go.Figure:
    """A heatmap per component: outer loop step (rows) x the next index (columns: layer, ponder
    step, head or position), aggregating the other indices (positions, heads) with ``agg``.

    df: a result table (``Result.df``) with loop columns such as step / layer / pos and ``value``.
    ``agg``: "max |value|" (the signed value of largest magnitude) or "mean".
    """
    if value not in df:
        raise ValueError(f"column {value!r} is not in the table; columns: {list(df.columns)}")
    if agg not in AGGREGATES:
        raise ValueError(f"agg={agg!r}; allowed: {AGGREGATES}")
    y = next((c for c in _ROWS if _present(df, c)), None)
    x = next((c for c in _COLS if _present(df, c) and c != y), None)
    if y is None or x is None:
        raise ValueError(f"the table needs a loop step column ({' or '.join(_ROWS)}) and one of {_COLS}; "
                         f"it has {list(df.columns)}")
    d = df[df[value].notna()]
    if d.empty:
        raise ValueError(f"every {value!r} is missing (NaN): nothing to draw")
    comps = list(dict.fromkeys(d["component"])) if "component" in d else [""]

    def pick(s: pd.Series) -> float:
        return float(s.loc[s.abs().idxmax()]) if agg == "max |value|" else float(s.mean())

    fig = make_subplots(rows=1, cols=len(comps), subplot_titles=comps, horizontal_spacing=0.08)
    lim = float(np.nanmax(np.abs(d[value].astype(float)))) or 1.0
    for i, comp in enumerate(comps, start=1):
        g = d[d["component"] == comp] if comp else d
        grid = g.groupby([y, x])[value].agg(pick).unstack(x)
        fig.add_trace(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=list(grid.index),
                                 coloraxis="coloraxis",
                                 hovertemplate=f"{comp}<br>{y}=%{{y}}<br>{x}=%{{x}}<br>{agg} {value}=%{{z:.4f}}"
                                               "<extra></extra>"), row=1, col=i)
        fig.update_xaxes(title_text=x, row=1, col=i)
        fig.update_yaxes(title_text=y, autorange="reversed", row=1, col=i)
    fig.update_layout(title=title or f"{value} by {y} and {x} ({agg} over the other indices)",
                      coloraxis=dict(colorscale="RdBu", cmid=0, cmin=-lim, cmax=lim, colorbar_title=value),
                      height=max(350, 22 * d[y].nunique() + 200))
    return fig


def top_sites_figure(df: pd.DataFrame, value: str, k: int = 15, title: str | None = None) -> go.Figure:
    """The ``k`` sites with the largest |value|, as horizontal bars (largest on top)."""
    if value not in df:
        raise ValueError(f"column {value!r} is not in the table; columns: {list(df.columns)}")
    d = df[df[value].notna()]
    if d.empty:
        raise ValueError(f"every {value!r} is missing (NaN): nothing to draw")
    top = d.reindex(d[value].abs().sort_values(ascending=False).index).head(int(k))
    fig = go.Figure(go.Bar(x=top[value], y=top["site"], orientation="h",
                           marker_color=["#2166ac" if v >= 0 else "#b2182b" for v in top[value]],
                           hovertemplate="%{y}<br>" + value + " = %{x:.4f}<extra></extra>"))
    fig.update_layout(title=title or f"Top {len(top)} sites by |{value}|", xaxis_title=value, yaxis_title="site",
                      yaxis=dict(autorange="reversed"), height=max(300, 26 * len(top) + 150),
                      margin=dict(l=320))
    return fig
