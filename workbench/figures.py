"""Plotly figures for analysis results: pure functions, tidy DataFrames in, ``go.Figure`` out.

``Result.figure()`` calls ``for_result``; the app's views reuse the builders directly:

* ``site_map``: patching / attribution scores as heatmaps, loop step down, position (or
  head, or layer) across, one panel per component and layer;
* ``probe_map``: probe accuracy vs step per layer, with the control task, and accuracy vs
  selectivity;
* ``codebook_figure``: code usage and perplexity per step, accuracy by depth and step,
  confusion, value-embedding PCA, Fourier spectrum over Z_p, drift from the codebook;
* ``compare``: exact patching vs attribution, site by site.

Loop steps are drawn as they are named: the row / tick labelled t is the hook ``steps.{t}.``
(``time.{t}.``, ``ponder.{n}.``), the t-th application of the loop counted from 0. Sites that
hold no measurement (NaN, or a ``status`` such as no gradient path, integer activation,
constant target) are drawn as grey cells with a legend entry naming the reason and the count,
never as blank ones; a no-op patch's value is exact and drawn as it is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.results import MEASURED

__all__ = ["for_result", "site_map", "probe_map", "codebook_figure", "compare", "animate", "wilson"]

_OUTER = ("step", "time")  # the recurrent loop goes down the y axis
_INNER = ("ponder", "layer")  # nested loops become panels (or the x axis when nothing finer exists)
MISSING_COLOR = "#bdbdbd"  # cells that hold no value (see ``status``)
_AXIS = {"step": "step t (steps.{t})", "time": "time step t (time.{t})", "ponder": "ponder step n (ponder.{n})",
         "layer": "layer l (blocks.{l})", "pos": "position", "head": "head"}


LEGEND_MARGIN = 125  # px under the plot: tick labels, the x-axis title, one legend row


def legend_below(fig: go.Figure) -> go.Figure:
    """Put the legend in a row at the figure's bottom edge, under the x-axis title: clear of the
    title above and of colour bars on the right whatever the plot's height."""
    return fig.update_layout(legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.005,
                                         xanchor="left", x=0),
                             margin=dict(b=LEGEND_MARGIN))


def animate(frames: list[go.Figure], labels: list, prefix: str = "step t = ", duration_ms: int = 600,
            height: int | None = None, only: dict[int, tuple[str, ...]] | None = None, active: int = 0) -> go.Figure:
    """One figure that plays ``frames`` (figures with the same traces, one per loop step) in turn.

    Frame ``active`` is drawn first; a play / pause button and a slider sit under the plot, the
    legend under them. Each frame keeps its own title. Axis ranges and colour scales are those
    of the first frame, so give every frame the same ones. ``only`` keeps just some properties
    of some traces in the frames (``{0: ("z",)}``: only the heatmap's values change), so large
    figures stay light.

    >>> fig = animate([attention_at(t) for t in range(T)], list(range(T)))
    """
    if not frames or len(frames) != len(labels):
        raise ValueError(f"animate: {len(frames)} frames and {len(labels)} labels; give one label per frame")
    if not 0 <= active < len(frames):
        raise ValueError(f"animate: active={active} is out of range; allowed 0..{len(frames) - 1}")
    names = [str(lab) for lab in labels]
    fig = go.Figure(frames[active])
    def changes(f: go.Figure) -> dict:
        if only is None:
            return dict(data=f.data)
        return dict(data=[{"type": f.data[i].type, **{k: f.data[i][k] for k in keys}} for i, keys in only.items()],
                    traces=list(only))

    fig.frames = [go.Frame(**changes(f), name=name, layout=dict(title=f.layout.title))
                  for f, name in zip(frames, names)]
    height = height or fig.layout.height or 520
    top, bottom = 80, 230  # px: the title above; the slider and the legend below the x axis
    plot = max(height - top - bottom, 120)

    def below(px: float) -> float:  # px under the plot area, in paper coordinates
        return -px / plot

    still = dict(frame=dict(duration=0, redraw=True), mode="immediate", transition=dict(duration=0))
    fig.update_layout(
        height=height, margin=dict(t=top, b=bottom),
        updatemenus=[dict(type="buttons", direction="left", x=0, xanchor="left", y=below(95), yanchor="top",
                          showactive=False, pad=dict(t=0, r=10), buttons=[
                              dict(label="Play", method="animate", args=[None, dict(
                                  frame=dict(duration=duration_ms, redraw=True), fromcurrent=True,
                                  transition=dict(duration=0))]),
                              dict(label="Pause", method="animate", args=[[None], still])])],
        sliders=[dict(active=active, x=0.16, len=0.84, xanchor="left", y=below(80), yanchor="top", pad=dict(t=0),
                      currentvalue=dict(prefix=prefix, visible=True),
                      steps=[dict(label=name, method="animate", args=[[name], still]) for name in names])],
        legend=dict(orientation="h", yanchor="top", y=below(160), xanchor="left", x=0))
    return fig


def wilson(k, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval (95% by default) of ``k`` successes in ``n`` trials: (low, high).

    >>> wilson(8, 10)   # (array(0.49...), array(0.94...))
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        mid = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)


def axis_title(col: str) -> str:
    """The axis title of an index column: loop indices say which hook index they are."""
    return _AXIS.get(col, col)


def missing(df: pd.DataFrame, value: str) -> pd.Series:
    """[rows] bool: sites whose ``value`` is not a measurement: NaN, or a ``status`` (constant
    target, no gradient path, ...) that says it measures nothing."""
    out = pd.to_numeric(df[value], errors="coerce").isna()
    if "status" in df:
        out |= ~df["status"].isin(MEASURED)
    return out


def reasons(df: pd.DataFrame, value: str) -> dict[str, int]:
    """{reason: count} of the sites drawn grey (``missing``)."""
    miss = missing(df, value)
    if not miss.any():
        return {}
    return {str(k): int(v) for k, v in _why(df[miss]).value_counts().items()}


def _why(gone: pd.DataFrame) -> pd.Series:
    if "status" not in gone:
        return pd.Series("not computed", index=gone.index)
    return gone["status"].where(~gone["status"].isin(MEASURED), "not computed")


def _missing_note(df: pd.DataFrame, value: str) -> str:
    r = reasons(df, value)
    return "" if not r else " [grey: " + ", ".join(f"{n} {k}" for k, n in r.items()) + f" of {len(df)} sites]"


def for_result(result, value: str, **kwargs) -> go.Figure:
    """The default figure of a ``workbench.results.Result``."""
    if result.kind in ("patch", "attribute"):
        title = kwargs.pop("title", f"{'Activation patching' if result.kind == 'patch' else 'Attribution patching'}"
                                    f": {value} (0 = corrupted, 1 = clean)" if value == "score" else value)
        return site_map(result.df, value=value, title=title, **kwargs)
    if result.kind == "probe":
        return probe_map(result.df, **kwargs)
    if result.kind == "codebook":
        return codebook_figure(result, **kwargs)
    if result.kind in DYNAMICS_KINDS:  # the loop-dynamics lab: workbench/dynamics_figures.py
        from workbench import dynamics_figures

        return getattr(dynamics_figures, DYNAMICS_KINDS[result.kind])(result, value=value, **kwargs)
    raise ValueError(f"no figure for result kind {result.kind!r}")


# result kind of workbench.dynamics -> its builder in workbench.dynamics_figures
DYNAMICS_KINDS = {"iteration_lens": "lens_figure", "convergence": "convergence_figure",
                  "probe_transfer": "transfer_figure", "basin": "basin_figure",
                  "fixed_points": "fixed_points_figure"}


# ------------------------------------------------------------------ sites
def _present(df: pd.DataFrame, col: str) -> bool:
    return col in df and df[col].notna().any()


def site_map(df: pd.DataFrame, value: str = "score", title: str | None = None, max_panels: int = 24,
             labels: list[str] | None = None, labels_of: str = "input 0") -> go.Figure:
    """Heatmaps of ``value`` over the sites of a patching or attribution result.

    y: the loop step (``step`` or ``time``); x: ``pos``, else ``head``, else ``layer``;
    one panel per remaining combination (component, layer, ponder step, head). Loop indices,
    heads and positions are categorical axes; ``labels`` names the tokens of the positions
    (``8:x_7``), read from ``labels_of``.
    """
    if value not in df:
        raise ValueError(f"column {value!r} is not in the result; columns: {list(df.columns)}")
    title = (title or value) + _missing_note(df, value)
    miss = missing(df, value)
    df = df.assign(**{value: pd.to_numeric(df[value], errors="coerce").astype(float).mask(miss)})
    y = next((c for c in _OUTER if _present(df, c)), None)
    x = next((c for c in ("pos", "head", *_INNER) if _present(df, c) and c != y), None)
    if y is not None and x is None:  # a single loop (e.g. WARP's time): one line per component
        fig = px.line(df, x=y, y=value, color="component", markers=True, hover_data=["site"])
        _mark_missing_points(fig, df[miss], y, value)
        return fig.update_layout(title=title, xaxis_title=axis_title(y), yaxis_title=value)
    if y is None or x is None:  # no loop structure: one bar per site
        fig = px.bar(df, x="site", y=value, hover_data=[c for c in ("hook", "status", "note") if c in df])
        _mark_missing_points(fig, df[miss], "site", value)
        return fig.update_layout(title=title, xaxis_title="site", yaxis_title=value)
    facets = [c for c in ("component", *_INNER, "head") if c in df and _present(df, c) and c not in (x, y)]
    groups = list(df.groupby(facets, dropna=False, sort=True)) if facets else [((), df)]
    groups = groups[:max_panels]
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    names = [", ".join(f"{c}={v}" if c != "component" else str(v) for c, v in zip(facets, np.atleast_1d(key)))
             for key, _ in groups]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=names or None, vertical_spacing=0.12 / max(1, nrows / 3))
    vals = df[value].astype(float)
    lim = float(np.nanmax(np.abs(vals))) if vals.notna().any() else 1.0
    shown: set[str] = set()
    counts = reasons(df, value)
    for i, (_, g) in enumerate(groups):
        grid = g.pivot_table(index=y, columns=x, values=value, aggfunc="mean", dropna=False)
        xs, ys = [_tick(c, x, labels) for c in grid.columns], [_tick(v, y, None) for v in grid.index]
        hover = f"{y}=%{{y}}<br>{x}=%{{x}}<br>{value}=%{{z:.4f}}<extra></extra>"
        fig.add_trace(go.Heatmap(z=grid.values, x=xs, y=ys, coloraxis="coloraxis", hovertemplate=hover),
                      row=i // ncols + 1, col=i % ncols + 1)
        gm = g[miss.loc[g.index]]
        if len(gm):  # grey cells, one legend entry per reason
            for reason, cells in gm.assign(_why=_why(gm)).groupby("_why", sort=True):
                mask = cells.assign(_one=1.0).pivot_table(index=y, columns=x, values="_one", aggfunc="max")
                mask = mask.reindex(index=grid.index, columns=grid.columns)
                fig.add_trace(go.Heatmap(
                    z=mask.values, x=xs, y=ys, colorscale=[[0, MISSING_COLOR], [1, MISSING_COLOR]], showscale=False,
                    name=f"{reason} ({counts.get(reason, len(cells))} sites, grey)", legendgroup=reason,
                    showlegend=reason not in shown, hoverongaps=False,
                    hovertemplate=f"{y}=%{{y}}<br>{x}=%{{x}}<br>{value}: none ({reason})<extra></extra>"),
                    row=i // ncols + 1, col=i % ncols + 1)
                shown.add(reason)
        x_title = f"{axis_title(x)} (token of {labels_of})" if x == "pos" and labels else axis_title(x)
        fig.update_xaxes(title_text=x_title, type="category", row=i // ncols + 1, col=i % ncols + 1)
        fig.update_yaxes(title_text=axis_title(y), autorange="reversed", type="category", row=i // ncols + 1,
                         col=i % ncols + 1)
    fig.update_layout(title=title, height=max(350, 280 * nrows), legend=dict(orientation="h", y=-0.15),
                      coloraxis=dict(colorscale="RdBu", cmid=0, cmin=-max(lim, 1e-9), cmax=max(lim, 1e-9),
                                     colorbar_title=value))
    return fig


def _tick(value, col: str, labels: list[str] | None) -> str:
    """A heatmap column's label: ``8:x_7`` for a position with a token label, else the index."""
    if col == "pos" and labels and not pd.isna(value) and 0 <= int(value) < len(labels):
        return f"{int(value)}:{labels[int(value)]}"
    return str(int(value)) if isinstance(value, (float, np.floating)) and float(value).is_integer() else str(value)


def _mark_missing_points(fig: go.Figure, gone: pd.DataFrame, x: str, value: str) -> None:
    """Grey crosses at 0 for the sites without a value, one legend entry per reason."""
    if gone.empty:
        return
    for reason, g in gone.assign(_why=_why(gone)).groupby("_why", sort=True):
        fig.add_trace(go.Scatter(x=g[x], y=[0.0] * len(g), mode="markers", name=f"{reason} ({len(g)} sites)",
                                 marker=dict(symbol="x", color=MISSING_COLOR, size=9), text=g["site"],
                                 hovertemplate=f"%{{text}}<br>{value}: none ({reason})<extra></extra>"))


def compare(exact: pd.DataFrame, approx: pd.DataFrame, value: str = "score") -> go.Figure:
    """Exact patching vs attribution patching, one point per site; sites without an estimate
    are left out and counted in the title."""
    both = exact[["site", value]].merge(approx[["site", value]], on="site", suffixes=("_exact", "_attribution"))
    n_all = len(both)
    both = both.dropna()
    r = both[f"{value}_exact"].corr(both[f"{value}_attribution"]) if len(both) > 1 else float("nan")
    fig = px.scatter(both, x=f"{value}_exact", y=f"{value}_attribution", hover_name="site")
    lo = float(np.nanmin(both[[f"{value}_exact", f"{value}_attribution"]].values)) if len(both) else 0.0
    hi = float(np.nanmax(both[[f"{value}_exact", f"{value}_attribution"]].values)) if len(both) else 1.0
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dot", color="grey"))
    left = f"; {n_all - len(both)} without an estimate left out" if n_all > len(both) else ""
    return fig.update_layout(title=f"Attribution vs exact patching ({len(both)} sites, r = {r:.3f}{left})",
                             xaxis_title="exact patching score", yaxis_title="attribution estimate")


# ---------------------------------------------------------------- probes
def probe_map(df: pd.DataFrame, metric: str | None = None) -> go.Figure:
    """Left: probe score (solid) and control-task score (dotted) vs loop step, one line per
    layer / component. Right: score vs selectivity, one point per site.

    The x axis is the ponder step n when ponder steps vary (ACT: ``time.{t}.ponder.{n}``, one
    line per input step t), else the outermost loop index that varies, so ponder-step sites are
    never stacked at one x. With an ``n_test`` column, accuracies get a 95% Wilson band (the
    control's lighter) and the title gives n."""
    metric = metric or ("accuracy" if "accuracy" in df else "r2")
    loops = [c for c in (*_OUTER, "ponder") if _present(df, c)]
    varies = [c for c in loops if df[c].nunique() > 1]
    y = "ponder" if "ponder" in varies else (varies[0] if varies else (loops[0] if loops else None))
    df = df.copy()
    group_cols = [c for c in ("target", "component", "layer") if _present(df, c)]
    group_cols += [c for c in varies if c != y]  # an outer loop drawn as lines, not stacked
    df["series"] = df[group_cols].apply(lambda col: col.map(lambda v: "" if pd.isna(v) else
                                                            (f"{col.name} {v}" if col.name in loops else str(v)))).agg(
        lambda row: " ".join(v for v in row if v), axis=1) if group_cols else "probe"
    if y:
        df = df.sort_values(y, kind="stable")
    band = metric == "accuracy" and _present(df, "n_test")
    n_note = ""
    if band:
        ns = df["n_test"].dropna().astype(int)
        n_note = f"; n = {ns.min()} test rows per site" if ns.min() == ns.max() else \
            f"; n = {ns.min()}..{ns.max()} test rows per site"
        n_note += ", bands: 95% Wilson interval"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{metric} by {y or 'site'} (dotted: control task)",
                                                         f"{metric} vs selectivity"))
    colors = px.colors.qualitative.Plotly
    miss = missing(df, metric) if metric in df else pd.Series(False, index=df.index)
    for i, (name, g) in enumerate(df.groupby("series", sort=True)):
        c = colors[i % len(colors)]
        xs = g[y] if y else g["site"]
        gm = miss.loc[g.index]
        if band:
            for col, alpha in ((metric, 0.2), ("control", 0.08)):
                if col in g and g[col].notna().any():
                    fig.add_trace(_wilson_band(xs, g[col].mask(gm), g["n_test"], c, alpha, name), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=g[metric].mask(gm), mode="lines+markers", name=name, line=dict(color=c),
                                 legendgroup=name), row=1, col=1)
        if "control" in g and g["control"].notna().any():
            fig.add_trace(go.Scatter(x=xs, y=g["control"].mask(gm), mode="lines", name=f"{name} control",
                                     showlegend=False, line=dict(color=c, dash="dot"), legendgroup=name),
                          row=1, col=1)
        if "selectivity" in g:
            g = g[~gm]
            fig.add_trace(go.Scatter(x=g["selectivity"], y=g[metric], mode="markers", showlegend=False,
                                     marker=dict(color=c), text=g["site"], legendgroup=name,
                                     hovertemplate="%{text}<br>selectivity=%{x:.3f}<br>score=%{y:.3f}<extra></extra>"),
                          row=1, col=2)
    gone = df[miss]
    if len(gone):  # sites that measure nothing: grey crosses, not part of the lines
        for reason, g in gone.assign(_why=_why(gone)).groupby("_why", sort=True):
            fig.add_trace(go.Scatter(x=g[y] if y else g["site"], y=g[metric].fillna(0.0), mode="markers",
                                     name=f"{reason} ({len(g)} sites, not ranked)", text=g["site"],
                                     marker=dict(symbol="x", color=MISSING_COLOR, size=11),
                                     hovertemplate=f"%{{text}}<br>{metric}=%{{y:.3f}} ({reason})<extra></extra>"),
                          row=1, col=1)
    if "chance" in df and df["chance"].notna().any():
        fig.add_hline(y=float(df["chance"].mean()), line_dash="dash", line_color="grey", row=1, col=1,
                      annotation_text="chance")
    fig.update_xaxes(title_text=axis_title(y) if y else "site", row=1, col=1)
    if y:
        fig.update_xaxes(dtick=1, tick0=0, row=1, col=1)  # whole loop steps only
    fig.update_xaxes(title_text="selectivity = probe − control", row=1, col=2)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_yaxes(title_text=metric, row=1, col=2)
    return legend_below(fig.update_layout(title="Linear probes" + n_note, height=480))


def _wilson_band(xs: pd.Series, acc: pd.Series, n: pd.Series, color: str, alpha: float, group: str) -> go.Scatter:
    """A filled 95% Wilson band around an accuracy curve (one polygon: upper edge out, lower back)."""
    ok = acc.notna() & n.notna()
    x, a, m = list(xs[ok]), acc[ok].to_numpy(float), n[ok].to_numpy(float)
    lo, hi = wilson(a * m, m)
    r, g, b = px.colors.hex_to_rgb(color) if color.startswith("#") else (99, 110, 250)
    return go.Scatter(x=x + x[::-1], y=list(hi) + list(lo[::-1]), fill="toself", mode="lines", line=dict(width=0),
                      fillcolor=f"rgba({r},{g},{b},{alpha})", hoverinfo="skip", showlegend=False, legendgroup=group,
                      name=f"{group} 95% interval")


# --------------------------------------------------------------- codebook
CODEBOOK_VIEWS = ("usage", "accuracy", "confusion", "pca", "fourier", "drift")


def codebook_figure(result, which: str = "usage", step: int | None = None) -> go.Figure:
    """One view of a codebook report; ``which`` is one of ``CODEBOOK_VIEWS``."""
    if which not in CODEBOOK_VIEWS:
        raise ValueError(f"which={which!r}; allowed: {CODEBOOK_VIEWS}")
    tables, df = result.tables, result.df
    if which != "usage" and which not in tables:
        raise ValueError(f"this codebook report has no {which!r} table; it has: {sorted({'usage', *tables})}")
    if which == "usage":
        fig = make_subplots(rows=1, cols=2, subplot_titles=("perplexity", "codes used / dead"))
        fig.add_trace(go.Scatter(x=df["step"], y=df["perplexity"], mode="lines+markers", name="perplexity"), 1, 1)
        fig.add_trace(go.Bar(x=df["step"], y=df["used"], name="used"), 1, 2)
        fig.add_trace(go.Bar(x=df["step"], y=df["dead"], name="dead"), 1, 2)
        fig.update_xaxes(title_text="step t", dtick=1 if len(df) <= 40 else None)
        fig.update_yaxes(title_text="effective number of codes", row=1, col=1)
        fig.update_yaxes(title_text="codes", row=1, col=2)
        return fig.update_layout(title="Code usage per step", barmode="stack", height=400)
    t = tables[which]
    if which == "accuracy":
        grid = t.pivot_table(index="depth", columns="step", values="accuracy")
        fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), zmin=0, zmax=1,
                                   colorscale="Viridis", colorbar_title="accuracy",
                                   hovertemplate="step=%{x}<br>depth=%{y}<br>accuracy=%{z:.3f}<extra></extra>"))
        return fig.update_layout(title="Decoded code = true value, by depth and step", xaxis_title="step",
                                 yaxis_title="depth")
    if which == "confusion":
        s = int(t["step"].max()) if step is None else step
        grid = t[t.step == s].pivot_table(index="truth", columns="code", values="count", fill_value=0)
        fig = go.Figure(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                                   colorscale="Blues", colorbar_title="count"))
        return fig.update_layout(title=f"Confusion at step {s}: true value (rows) vs decoded code (columns)",
                                 xaxis_title="decoded code", yaxis_title="true value")
    if which == "pca":
        var = result.meta.get("pca_explained", [])
        fig = px.scatter(t, x="pc1", y="pc2", text="code", color="code" if t["code"].dtype.kind in "if" else None)
        fig.update_traces(textposition="top center")
        lab = [f"PC{i + 1} ({v:.0%})" for i, v in enumerate(var[:2])] if len(var) >= 2 else ["PC1", "PC2"]
        return fig.update_layout(title="Value embeddings, first two principal components", xaxis_title=lab[0],
                                 yaxis_title=lab[1])
    if which == "fourier":
        fig = px.bar(t, x="frequency", y="power")
        return fig.update_layout(title="Fourier spectrum of the value embeddings over Z_p (share of non-constant power)",
                                 xaxis_title="frequency k", yaxis_title="share of power")
    fig = px.line(t, x="step", y="relative_distance", markers=True)
    return fig.update_layout(title="Distance of each step's latent from the nearest codebook embedding",
                             xaxis_title="step", yaxis_title="distance / embedding norm")
