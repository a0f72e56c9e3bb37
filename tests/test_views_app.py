"""The explorer's figure builders (``apps/views``) on small hand-made data: figure type, traces, axes."""

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from apps.views import act as act_views
from apps.views import analysis, home
from apps.views import reasoner as reasoner_views
from apps.views import warp as warp_views


def _types(fig):
    return [type(t).__name__ for t in fig.data]


# ------------------------------------------------------------------ home
def test_headline_figure_one_panel_per_metric():
    table = pd.DataFrame({"model": ["a", "b", "c", "d"], "family": ["ACT", "ACT", "WARP", "?"],
                          "headline": ["", "", "", ""], "metric": ["error", "error", "mse", ""],
                          "value": [0.1, 0.2, 3.0, None]})
    fig = home.headline_figure(table)
    assert isinstance(fig, go.Figure)
    assert _types(fig) == ["Bar", "Bar"]
    assert list(fig.data[0].y) == ["a", "b"] and list(fig.data[1].y) == ["c"]
    assert fig.layout.xaxis.title.text == "error (lower is better)"
    assert fig.layout.xaxis2.title.text == "mse (lower is better)"
    assert fig.layout.yaxis.title.text == "model"


def test_headline_figure_without_numbers_is_an_error():
    with pytest.raises(ValueError, match="headline number"):
        home.headline_figure(pd.DataFrame({"model": ["a"], "family": ["?"], "metric": [""], "value": [None]}))


# -------------------------------------------------------------- reasoner
def _state_table():
    rows = []
    for slot, truth in (("x_1", "4"), ("x_2", "7")):
        for step, value in enumerate(["EMPTY", "4", "5"]):
            status = "correct" if value == truth else ("not yet computed" if value == "EMPTY" else "wrong")
            rows.append({"slot": slot, "step": step, "value": value, "truth": truth, "exact": truth, "depth": 1,
                         "status": status})
    return pd.DataFrame(rows)


def test_state_table_figure_colours_status_and_marks_changes():
    table = _state_table()
    fig = reasoner_views.state_table_figure(table)
    # the heatmap, its cells as clickable markers, one legend entry per status
    assert _types(fig) == ["Heatmap", "Scatter", "Scatter", "Scatter", "Scatter"]
    assert fig.data[1].name == "cells" and len(fig.data[1].x) == 6
    z = np.asarray(fig.data[0].z)
    assert z.shape == (2, 3)
    assert z[0, 0] == 0 and z[0, 1] == 1 and z[0, 2] == 2  # not yet computed, correct, wrong
    assert np.asarray(fig.data[0].text)[0, 1] == "4"
    assert fig.layout.xaxis.title.text == reasoner_views.STATE_AXIS and fig.layout.yaxis.title.text == "variable"
    changed = pd.DataFrame({"slot": ["x_2"], "step": [2]})
    marked = reasoner_views.state_table_figure(table, changed)
    assert _types(marked)[-1] == "Scatter" and list(marked.data[-1].y) == ["x_2"]


def test_state_table_figure_rejects_an_empty_table():
    with pytest.raises(ValueError, match="empty"):
        reasoner_views.state_table_figure(_state_table().iloc[:0])


def test_attention_figure_marks_reads():
    labels = ["3", "=", "x_1", ";", "x_1", "=", "x_2"]
    pattern = np.full((7, 7), 1 / 7)
    reads = pd.DataFrame({"query": [6, 4], "key": [4, 2], "kind": ["operand", "definition"]})
    fig = reasoner_views.attention_figure(pattern, labels, reads, title="t")
    assert _types(fig) == ["Heatmap", "Scatter", "Scatter"]
    assert {t.name for t in fig.data[1:]} == {"reads the operand", "reads the definition"}
    assert fig.layout.xaxis.title.text == "key position" and fig.layout.yaxis.title.text == "query position"
    assert fig.layout.xaxis.ticktext[2] == "2:x_1"
    with pytest.raises(ValueError, match="query, key"):
        reasoner_views.attention_figure(pattern[:3], labels)


def test_step_lens_figure_two_panels():
    lens = pd.DataFrame([{"step": s, "layer": l, "layer_name": ["input", "block 0"][l], "value": str(s + l),
                          "p_answer": 0.5, "accuracy": 0.25} for s in range(3) for l in range(2)])
    fig = reasoner_views.step_lens_figure(lens, lens, slot="x_1")
    assert _types(fig) == ["Heatmap", "Heatmap"]
    assert list(fig.data[0].x) == ["input", "block 0"] and np.asarray(fig.data[0].z).shape == (3, 2)
    assert fig.layout.yaxis.title.text == "step t (hooks steps.{t})"
    assert fig.layout.xaxis.title.text == "layer (residual stream after)"
    assert _types(reasoner_views.step_lens_figure(lens)) == ["Heatmap"]


# -------------------------------------------------------------------- ACT
def test_ponder_steps_figure_bars_coloured_by_correctness():
    steps = pd.DataFrame({"t": [0, 1], "item": ["12", "7"], "N": [3, 5], "R": [0.2, 0.4],
                          "prediction": ["12", "18"], "target": ["12", "19"], "correct": [True, False]})
    fig = act_views.ponder_steps_figure(steps)
    assert _types(fig) == ["Bar"]
    assert list(fig.data[0].y) == [3, 5] and list(fig.data[0].marker.color) == ["#2ca02c", "#d62728"]
    assert fig.layout.xaxis.title.text == "input step t" and fig.layout.yaxis.title.text == "ponder steps N(t)"


def test_halting_compare_figure_one_panel_per_input_step():
    def trace(N):
        return pd.DataFrame([{"t": t, "n": n + 1, "N": N, "h": 0.3, "cum_halt": 0.3 * (n + 1), "p": 0.3}
                             for t in range(2) for n in range(N)])

    fig = act_views.halting_compare_figure(trace(3), trace(1))
    assert _types(fig) == ["Scatter"] * 4  # clean and patched in each of two panels
    assert fig.layout.annotations[0].text == "t=0: N 3 -> 1"
    assert fig.layout.xaxis.title.text == "ponder step n" and fig.layout.yaxis.title.text == "cumulative h"
    no_act = trace(2).assign(cum_halt=np.nan, h=np.nan)
    assert act_views.halting_compare_figure(no_act, no_act).layout.yaxis.title.text == "weight p"


# ------------------------------------------------------------------- WARP
def test_root_functions_figure_panels_per_output_and_marks():
    tau = np.linspace(0, 1, 5)
    curves = pd.concat([pd.DataFrame({"step": s, "tau": tau, "output": o, "value": tau * s})
                        for s in (1, 4) for o in ("x", "v", "m")], ignore_index=True)
    marks = curves.groupby(["step", "output"], as_index=False).first()
    fig = warp_views.root_functions_figure(curves, marks)
    assert _types(fig) == ["Scatter"] * 12  # 2 steps x 3 outputs x (curve + mark)
    assert [a.text for a in fig.layout.annotations[:3]] == ["x", "v", "m"]
    assert fig.layout.xaxis.title.text == "tau" and fig.layout.yaxis.title.text == "root output x"
    with pytest.raises(ValueError, match="at least one step"):
        warp_views.root_functions_figure(curves.iloc[:0])


# --------------------------------------------------------------- analyses
def _sites():
    rows = []
    for comp in ("hook_resid_pre", "hook_mlp_out"):
        for step in range(3):
            for layer in range(2):
                for pos in range(4):
                    rows.append({"site": f"steps.{step}.blocks.{layer}.{comp}[pos={pos}]", "component": comp,
                                 "step": step, "layer": layer, "pos": pos, "score": (pos - 1) * step})
    return pd.DataFrame(rows)


def test_loop_grid_figure_aggregates_positions():
    df = _sites()
    fig = analysis.loop_grid_figure(df, "score")
    assert _types(fig) == ["Heatmap", "Heatmap"]  # one panel per component
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3, 2) and z[2, 0] == 4.0  # the largest |score| over positions: (3 - 1) * 2
    assert fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "step"
    assert np.asarray(analysis.loop_grid_figure(df, "score", "mean").data[0].z)[2, 0] == 1.0


def test_loop_grid_figure_errors():
    with pytest.raises(ValueError, match="not in the table"):
        analysis.loop_grid_figure(_sites(), "nope")
    with pytest.raises(ValueError, match="loop step column"):
        analysis.loop_grid_figure(pd.DataFrame({"site": ["a"], "score": [1.0]}), "score")
    with pytest.raises(ValueError, match="agg"):
        analysis.loop_grid_figure(_sites(), "score", "median")


def test_top_sites_figure_orders_by_magnitude():
    df = _sites()
    df.loc[0, "score"] = -100.0
    fig = analysis.top_sites_figure(df, "score", k=5)
    assert _types(fig) == ["Bar"] and len(fig.data[0].y) == 5
    assert fig.data[0].x[0] == -100.0 and fig.data[0].marker.color[0] == "#b2182b"  # negative: red
    assert fig.layout.xaxis.title.text == "score" and fig.layout.yaxis.title.text == "site"
    with pytest.raises(ValueError, match="missing"):
        analysis.top_sites_figure(df.assign(score=np.nan), "score")


# ------------------------------------------------------- every axis readable
_INDEX = re.compile(r"\b(step|layer|head)\b", re.I)  # loop indices: categorical axes, never 0.5 ticks
_NO_LEGEND = ("Heatmap", "Contour", "Image", "Histogram2d")  # not in the legend unless asked


def _used_axes(fig):
    """The layout names of the 2-D axes some trace draws on ('xaxis', 'yaxis2', ...)."""
    names = set()
    for t in fig.data:
        if type(t).__name__ in ("Table", "Scatter3d", "Surface", "Pie"):
            continue
        names.add("xaxis" + (t.xaxis or "x")[1:])
        names.add("yaxis" + (t.yaxis or "y")[1:])
    return names


def readable_problems(fig) -> list[str]:
    """What a reader cannot read: untitled axes, loop-index axes with fractional ticks, 'trace 0'
    legend entries. An axis shared with a titled one (``matches``) needs no title of its own."""
    problems = []
    for name in sorted(_used_axes(fig)):
        axis = fig.layout[name]
        title = (axis.title.text or "") if axis.title else ""
        if not title and not axis.matches:
            problems.append(f"{name} has no title")
        if _INDEX.search(title):
            traces = [t for t in fig.data if ("xaxis" + (t.xaxis or "x")[1:] == name or
                                              "yaxis" + (t.yaxis or "y")[1:] == name)]
            values = [v for t in traces for v in np.ravel(np.asarray(
                getattr(t, name[0]) if getattr(t, name[0], None) is not None else [], dtype=object))]
            strings = values and all(isinstance(v, str) for v in values)
            if axis.type != "category" and not strings and axis.dtick != 1:
                problems.append(f"{name} ({title!r}) is a loop index on a continuous axis")
    legend = fig.layout.legend
    if legend.y is not None and legend.y > 1 and (legend.yanchor or "auto") != "top":
        problems.append("the legend sits over the title")
    bars = any(getattr(t, "showscale", None) is not False and type(t).__name__ in _NO_LEGEND for t in fig.data) or \
        bool(fig.layout.coloraxis.colorbar.title.text) or any(
            getattr(getattr(t, "marker", None), "colorbar", None) and t.marker.colorbar.title.text for t in fig.data)
    entries = [t for t in fig.data if t.showlegend is True or (t.showlegend is None and type(t).__name__ not in
                                                               _NO_LEGEND)]
    if bars and len(entries) and fig.layout.showlegend is not False and legend.orientation != "h":
        problems.append("the legend sits on the colour bar (right): put it below")
    for t in fig.data:
        listed = t.showlegend is True or (t.showlegend is None and type(t).__name__ not in _NO_LEGEND)
        unnamed = t.name is None or str(t.name).startswith("trace")
        if fig.layout.showlegend is not False and listed and unnamed and len(fig.data) > 1:
            problems.append(f"a {type(t).__name__} has no legend name")
    return problems


def _trace(N, steps=2):
    return pd.DataFrame([{"t": t, "n": n + 1, "N": N, "h": 0.3, "cum_halt": 0.3 * (n + 1), "p": 0.3, "R": 0.1}
                         for t in range(steps) for n in range(N)])


def _builders():
    labels = ["3", "=", "x_1", ";", "x_1", "=", "x_2"]
    lens = pd.DataFrame([{"step": s, "layer": l, "layer_name": ["input", "block 0"][l], "value": str(s + l),
                          "p_answer": 0.5, "accuracy": 0.25} for s in range(3) for l in range(2)])
    steps = pd.DataFrame({"t": [0], "item": ["12"], "N": [3], "R": [0.2], "prediction": ["12"], "target": ["12"],
                          "correct": [True]})
    by = pd.DataFrame({"model": ["a"] * 3, "n_digits": [1, 2, 3], "mean_ponder": [1.0, 2.0, 3.0],
                       "std_ponder": [0.1] * 3, "step_error": [0.0, 0.1, 0.2]})
    tau = np.linspace(0, 1, 5)
    curves = pd.concat([pd.DataFrame({"step": s, "tau": tau, "output": o, "value": tau * s})
                        for s in (1, 4) for o in ("x", "v")], ignore_index=True)
    ood = pd.DataFrame({"model": ["a", "a"], "n_nodes": [8, 16], "fully_solved": [1.0, 0.5]})
    per_step = pd.DataFrame([{"model": "a", "step": s, "depth": d, "solved": 0.5} for s in (1, 2, 3) for d in (1, 2)])
    headline = pd.DataFrame({"model": ["a", "b", "c"], "family": ["ACT", "ACT", "WARP"], "headline": [""] * 3,
                             "metric": ["error", "error", "mse"], "value": [0.1, 0.2, 3.0]})
    return {
        "headline": lambda: home.headline_figure(headline),
        "ood": lambda: reasoner_views.ood_figure(ood, train_n=16),
        "per_step": lambda: reasoner_views.per_step_figure(per_step),
        "state_table": lambda: reasoner_views.state_table_figure(_state_table()),
        "attention": lambda: reasoner_views.attention_figure(np.full((7, 7), 1 / 7), labels, title="t"),
        "step_lens": lambda: reasoner_views.step_lens_figure(lens, lens, slot="x_1"),
        "ponder_steps": lambda: act_views.ponder_steps_figure(steps),
        "halting": lambda: act_views.halting_figure(_trace(3, 1)),
        "halting_compare": lambda: act_views.halting_compare_figure(_trace(3), _trace(1)),
        "ponder_difficulty": lambda: act_views.ponder_difficulty_figure(by, "n_digits"),
        "tau_sweep": lambda: act_views.tau_sweep_figure(pd.DataFrame({"tau": [1e-3, 1e-2], "error": [0.1, 0.2],
                                                                      "mean_ponder": [3.0, 2.0]})),
        "forecast": lambda: warp_views.forecast_figure(np.arange(6.0), np.ones((6, 2)), {"m": np.ones((3, 2))}, 3,
                                                       ("x", "v")),
        "theta_pca": lambda: warp_views.theta_pca_figure(np.random.default_rng(0).normal(size=(6, 2)), tau.tolist()
                                                         + [1.0], [0.6, 0.3], context=3),
        "spectrum": lambda: warp_views.spectrum_figure(np.array([0.5 + 0.5j, 0.9, -0.2j])),
        "phys_params": lambda: warp_views.phys_params_figure(tau, np.ones((5, 2)), ["omega", "gamma"],
                                                             truth={"omega": 1.0}, context_tau=0.5),
        "digits": lambda: warp_views.digits_figure(np.zeros(64), np.zeros(34), 30),
        "root_functions": lambda: warp_views.root_functions_figure(curves, curves),
        "attention_grid": lambda: reasoner_views.attention_grid_figure(np.full((2, 2, 7, 7), 1 / 7), labels, step=1),
        "attention_play": lambda: reasoner_views.attention_animation(np.full((3, 7, 7), 1 / 7), labels),
        "halting_play": lambda: act_views.halting_animation(_trace(3), t=0),
        "theta_play": lambda: warp_views.theta_path_animation(np.random.default_rng(0).normal(size=(6, 2)),
                                                              tau.tolist() + [1.0], [0.6, 0.3], context=3),
        "loop_grid": lambda: analysis.loop_grid_figure(_sites(), "score"),
        "top_sites": lambda: analysis.top_sites_figure(_sites(), "score"),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_every_axis_is_titled_and_loop_indices_are_categorical(name):
    fig = _builders()[name]()
    assert readable_problems(fig) == []


def test_headline_figure_keeps_lower_and_higher_is_better_apart():
    table = pd.DataFrame({"model": ["a", "b", "c"], "family": ["R", "W", "A"], "headline": [""] * 3,
                          "metric": ["fully_solved", "forecast_mse_x1e-2", "error"], "value": [1.0, 3.0, 0.1]})
    fig = home.headline_figure(table)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["forecast_mse_x1e-2 (lower is better)", "error (lower is better)",
                      "fully_solved (higher is better)"]


def test_probe_map_plots_act_ponder_sites_against_the_ponder_step():
    from workbench.figures import probe_map

    df = pd.DataFrame({"site": [f"time.0.ponder.{n}.hook_state" for n in range(5)], "component": "hook_state",
                       "time": 0, "ponder": range(5), "accuracy": np.linspace(0.5, 0.9, 5),
                       "control": 0.5, "selectivity": np.linspace(0.0, 0.4, 5)})
    fig = probe_map(df)
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4]  # not five points stacked at t = 0
    assert fig.layout.xaxis.title.text.startswith("ponder step n") and fig.layout.xaxis.dtick == 1
    assert readable_problems(fig) == []
