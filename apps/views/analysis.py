"""Figures for the analysis pages (patching, probing): loop-step grids and top sites.

The per-site heatmaps themselves come from ``workbench.figures`` (``Result.figure()``);
these builders add the overviews the pages show beside them. Data in, Plotly figure out.

Both say what they could not show: sites without a value (no gradient path, constant target,
...; see ``status``) are grey cells with a legend entry, or are counted in the title, never
silently dropped. The top sites of a patching table are those with the largest ``effect``
(see ``workbench.results.EFFECT``), whichever column is shown.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import MISSING_COLOR, legend_below, missing, reasons

MAX_SHOWN = 12  # values of one input shown in a cell before "…"

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
    miss = missing(df, value)
    d = df[~miss]
    if d.empty:
        why = ", ".join(f"{n} {k}" for k, n in reasons(df, value).items())
        raise ValueError(f"every {value!r} is missing ({why}): nothing to draw")
    gone = reasons(df, value)
    comps = list(dict.fromkeys(df["component"])) if "component" in df else [""]

    def pick(s: pd.Series) -> float:
        return float(s.loc[s.abs().idxmax()]) if agg == "max |value|" else float(s.mean())

    fig = make_subplots(rows=1, cols=len(comps), subplot_titles=comps, horizontal_spacing=0.08)
    lim = float(np.nanmax(np.abs(d[value].astype(float)))) or 1.0
    shown = False
    for i, comp in enumerate(comps, start=1):
        full = df[df["component"] == comp] if comp else df
        g = d[d["component"] == comp] if comp else d
        cells = full.groupby([y, x]).size().unstack(x)  # every (y, x) cell that has sites
        grid = (g.groupby([y, x])[value].agg(pick).unstack(x) if len(g) else cells * np.nan)
        grid = grid.reindex(index=cells.index, columns=cells.columns)
        xs, ys = [str(c) for c in grid.columns], list(grid.index)
        fig.add_trace(go.Heatmap(z=grid.values, x=xs, y=ys, coloraxis="coloraxis",
                                 hovertemplate=f"{comp}<br>{y}=%{{y}}<br>{x}=%{{x}}<br>{agg} {value}=%{{z:.4f}}"
                                               "<extra></extra>"), row=1, col=i)
        empty = grid.isna() & cells.notna()
        if empty.values.any():  # cells none of whose sites holds a value: grey, with a legend entry
            fig.add_trace(go.Heatmap(z=empty.where(empty).values.astype(float), x=xs, y=ys, showscale=False,
                                     colorscale=[[0, MISSING_COLOR], [1, MISSING_COLOR]], hoverongaps=False,
                                     name="no value: " + ", ".join(f"{n} {k}" for k, n in gone.items()),
                                     showlegend=not shown, legendgroup="missing",
                                     hovertemplate=f"{comp}<br>{y}=%{{y}}<br>{x}=%{{x}}<br>no {value}"
                                                   "<extra></extra>"), row=1, col=i)
            shown = True
        fig.update_xaxes(title_text=x, type="category", row=1, col=i)  # loop indices as in the hooks (steps.{t})
        fig.update_yaxes(title_text=y, autorange="reversed", type="category", row=1, col=i)
    left = f" [grey: {', '.join(f'{n} {k}' for k, n in gone.items())} of {len(df)} sites]" if gone else ""
    fig.update_layout(title=(title or f"{value} by {y} and {x} ({agg} over the other indices)") + left,
                      coloraxis=dict(colorscale="RdBu", cmid=0, cmin=-lim, cmax=lim, colorbar_title=value),
                      height=max(350, 22 * d[y].nunique() + 200))
    return legend_below(fig) if shown else fig


def top_sites(df: pd.DataFrame, value: str, k: int = 15) -> tuple[pd.DataFrame, str, int]:
    """The ``k`` measured sites with the largest effect (largest first), the column ranked on, and
    how many sites were left unranked.

    A patching / attribution table (with an ``effect`` column) is ranked on ``|effect|`` (so a
    zero ablation lists the sites that matter, not the unaffected ones whose score is ~1);
    any other table on ``|value|``. Sites without a measurement (``status`` other than "ok",
    or NaN) are not ranked.
    """
    if value not in df:
        raise ValueError(f"column {value!r} is not in the table; columns: {list(df.columns)}")
    rank = "effect" if "effect" in df else value
    keep = ~missing(df, value) & ~missing(df, rank)
    if "status" in df:
        keep &= df["status"] == "ok"
    d = df[keep]
    if d.empty:
        why = ", ".join(f"{n} {k}" for k, n in reasons(df, value).items()) or "no site has status 'ok'"
        raise ValueError(f"every {value!r} is missing ({why}): nothing to draw")
    top = d.loc[d[rank].astype(float).abs().sort_values(ascending=False, kind="stable").index].head(int(k))
    return top, rank, len(df) - len(d)


def top_sites_figure(df: pd.DataFrame, value: str, k: int = 15, title: str | None = None) -> go.Figure:
    """The ``top_sites`` as horizontal bars of ``value`` (largest on top); the title counts the
    sites left unranked."""
    top, rank, left = top_sites(df, value, k)
    fig = go.Figure(go.Bar(x=top[value], y=top["site"], orientation="h",
                           marker_color=["#2166ac" if v >= 0 else "#b2182b" for v in top[value]],
                           hovertemplate="%{y}<br>" + value + " = %{x:.4f}<extra></extra>"))
    note = f"; {left} of {len(df)} sites not ranked (no measurement)" if left else ""
    fig.update_layout(title=(title or f"Top {len(top)} sites by |{rank}|") + note, xaxis_title=value, yaxis_title="site",
                      yaxis=dict(autorange="reversed"), height=max(300, 26 * len(top) + 150),
                      margin=dict(l=320))
    return fig


# where a site opens on its model's page: the page's step query from the site's loop index, and its view
SITE_PAGES = {"reasoner": ("step", {"reasoner_view": "Attention"}), "act": ("time", {}), "warp": ("step", {})}


def site_link(family: str, model: str, row: pd.Series) -> str | None:
    """The model page at a result row's loop step (``/reasoner?model=m&step=3&reasoner_view=Attention``);
    None where the family has no page with a step slider or the row has no step."""
    if family not in SITE_PAGES:
        return None
    column, extra = SITE_PAGES[family]
    step = row.get(column)
    if step is None or pd.isna(step):
        return None
    return f"/{family}?{urlencode({'model': model, 'step': int(step), **extra})}"


# ------------------------------------------------------------------ inputs
def _values(x: np.ndarray) -> str:
    """One input as text: its numbers rounded, the first ``MAX_SHOWN`` of them."""
    flat = np.asarray(x).reshape(-1)
    shown = " ".join(f"{v:g}" for v in np.round(flat[:MAX_SHOWN].astype(float), 3))
    return shown + (f" … ({flat.size} values, shape {list(np.shape(x))})" if flat.size > MAX_SHOWN else "")


def _where(a: np.ndarray, b: np.ndarray) -> str:
    """Where two inputs differ: the leading indices (position, time step, ...) of the changed values."""
    a, b = np.squeeze(np.asarray(a)), np.squeeze(np.asarray(b))  # [1, 6] -> [6]: the entries, not one time step
    if a.shape != b.shape:
        return f"shapes {list(a.shape)} vs {list(b.shape)}"
    diff = a != b if a.ndim <= 1 else (a != b).reshape(a.shape[0], -1).any(1)
    idx = np.flatnonzero(diff)
    if not len(idx):
        return "nowhere"
    listed = ", ".join(str(i) for i in idx[:8]) + (f", … ({len(idx)} in all)" if len(idx) > 8 else "")
    return listed


def inputs_table(clean, corrupted, texts: tuple[list[str], list[str]] | None = None,
                 labels: list[list[str]] | None = None) -> pd.DataFrame:
    """The clean / corrupted pairs of a patching experiment, one row per pair.

    clean, corrupted: [B, ...] arrays (or tensors); ``texts``: the pairs in the task's text
    format where it has one. ``differs at`` lists the leading indices where a pair differs
    (token positions, named by the clean input's token ``labels[i]`` when given, or time steps).
    """
    a, b = np.asarray(clean), np.asarray(corrupted)
    if a.shape[:1] != b.shape[:1]:
        raise ValueError(f"clean and corrupted hold {len(a)} and {len(b)} inputs; they must pair up")
    rows = []
    for i in range(len(a)):
        where = _where(a[i], b[i])
        tokens = labels[i] if labels and i < len(labels) else None
        if tokens and where != "nowhere" and not where.startswith("shapes"):
            where = ", ".join(f"{w.strip()}:{tokens[int(w)]}" if w.strip().isdigit() and int(w) < len(tokens)
                              else w.strip() for w in where.split(","))
        rows.append({"pair": i,
                     "clean": texts[0][i] if texts else _values(a[i]),
                     "corrupted": texts[1][i] if texts else _values(b[i]),
                     "differs at": where})
    return pd.DataFrame(rows)
