"""The explorer's step slider with play, all-heads grid, Compare view, Patching inputs, probe
intervals, Gain effect panels and escaped messages: figure builders on hand-made data, and the
pages under Streamlit's AppTest, bad deep links included (a message, never a traceback)."""

import json
import urllib.parse

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apps import ui
from apps.views import act as act_views
from apps.views import analysis
from apps.views import gain as gain_views
from apps.views import reasoner as reasoner_views
from apps.views import warp as warp_views
from tests import app_models
from tests.test_app import APP, charts, ok, shown, show, shows_error
from tests.test_views_app import _trace, readable_problems
from workbench import figures


# ------------------------------------------------------------------ builders
def _frames(n):
    return [reasoner_views.attention_figure(np.full((3, 3), i / 10), ["a", "b", "c"], title=f"step {i}")
            for i in range(n)]


def test_animate_plays_one_frame_per_step():
    fig = figures.animate(_frames(4), [0, 1, 2, 3])
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3"]
    assert fig.frames[2].layout.title.text == "step 2"
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["Play", "Pause"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "1", "2", "3"]
    assert fig.layout.legend.y < fig.layout.sliders[0].y < 0  # slider under the plot, the legend under it
    later = figures.animate(_frames(4), [0, 1, 2, 3], active=2)  # starts at the chosen step
    assert later.layout.sliders[0].active == 2 and later.layout.title.text == "step 2"
    with pytest.raises(ValueError, match="one label per frame"):
        figures.animate(_frames(2), [0])
    with pytest.raises(ValueError, match="active=5 is out of range"):
        figures.animate(_frames(2), [0, 1], active=5)


def test_wilson_interval():
    lo, hi = figures.wilson(np.array([0, 8, 10]), np.array([10, 10, 10]))
    assert lo[0] == 0 and 0.4 < lo[1] < 0.8 < hi[1] < 1 and hi[2] == 1
    assert (hi - lo)[1] > figures.wilson(80, 100)[1] - figures.wilson(80, 100)[0]  # more rows, narrower


def test_attention_grid_one_panel_per_layer_and_head_on_one_scale():
    labels = ["3", "=", "x_1", ";", "x_1"]
    patterns = np.random.default_rng(0).dirichlet(np.ones(5), size=(2, 3, 5))  # [layers, heads, q, k]
    fig = reasoner_views.attention_grid_figure(patterns, labels, step=4)
    assert len(fig.data) == 6 and {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert [a.text for a in fig.layout.annotations][:4] == ["layer 0, head 0", "layer 0, head 1", "layer 0, head 2",
                                                             "layer 1, head 0"]
    assert fig.layout.coloraxis.cmin == 0 and "step 4" in fig.layout.title.text
    assert readable_problems(fig) == []
    with pytest.raises(ValueError, match="layers, heads"):
        reasoner_views.attention_grid_figure(patterns[0], labels, step=0)


def test_attention_animation_keeps_one_colour_scale():
    labels = ["3", "=", "x_1"]
    patterns = np.stack([np.eye(3) * (t + 1) / 3 for t in range(3)])
    fig = reasoner_views.attention_animation(patterns, labels, what="head 1", layer=0)
    assert len(fig.frames) == 3 and {f.data[0].zmax for f in fig.frames} == {1.0}
    assert "step 2" in fig.frames[2].layout.title.text


def test_halting_animation_plays_the_ponder_steps():
    fig = act_views.halting_animation(_trace(3), t=1)
    assert [f.name for f in fig.frames] == ["0", "1", "2"]
    assert len(fig.frames[0].data[0].x) == 1 and len(fig.frames[2].data[0].x) == 3  # the bars grow with n
    assert fig.layout.xaxis.title.text == act_views.PONDER_AXIS and fig.layout.xaxis.dtick == 1
    with pytest.raises(ValueError, match="no ponder steps"):
        act_views.halting_animation(_trace(3), t=7)


def test_theta_path_animation_fixed_axes_and_every_step_capped():
    coords = np.random.default_rng(0).normal(size=(200, 2))
    fig = warp_views.theta_path_animation(coords, np.linspace(0, 1, 200), [0.5, 0.2], context=50, max_frames=20)
    names = [int(f.name) for f in fig.frames]
    assert len(names) <= 21 and names[0] == 0 and names[-1] == 199
    assert fig.layout.xaxis.range is not None and fig.layout.xaxis.title.text.startswith("PC1")
    marked = warp_views.theta_pca_figure(coords, np.linspace(0, 1, 200), step=10)
    assert marked.data[-1].name == "theta_t at step 10" and list(marked.data[-1].x) == [coords[10, 0]]


def test_effects_figure_one_panel_per_unit():
    effects = pd.DataFrame({
        "effect": ["maxima/minima", "repulsion", "decorrelation", "coding"],
        "measure": ["mean response maximum, near", "mean peak shift away from the adapter (deg), flank",
                    "mean correlation, near pairs", "activity E[sum r^2]"],
        "before": [1.0, 0.0, 0.5, 6.0], "after": [0.7, 0.6, 0.4, 5.5], "change": [-0.3, 0.6, -0.1, -0.5],
        "expected": ["<0", ">0", "<0", ""], "reproduced": [True, True, True, True]})
    fig = gain_views.effects_figure(effects)
    assert [a.text for a in fig.layout.annotations] == ["Peak shifts", "Response rates", "Correlations",
                                                         "Other measures"]
    assert len(fig.data) == 4 and [y.replace("<br>", " ") for y in fig.data[0].y] == [effects.measure[1]]
    assert all(len(line) <= 32 for y in fig.data[0].y for line in y.split("<br>"))  # wrapped for narrow pages
    assert fig.data[0].customdata[0][0] == effects.measure[1]  # the whole name on hover
    assert fig.layout.xaxis.title.text.endswith("(deg)") and "correlation" in fig.layout.xaxis3.title.text
    assert list(fig.data[3].marker.color) == ["grey"]  # no direction expected
    assert readable_problems(fig) == []


def test_inputs_table_shows_pairs_and_where_they_differ():
    clean = np.zeros((2, 4, 5))
    corrupted = clean.copy()
    corrupted[0, 2, 1] = 5
    table = analysis.inputs_table(clean, corrupted, labels=[["a", "=", "x_1", ";"], ["b"] * 4])
    assert list(table.columns) == ["pair", "clean", "corrupted", "differs at"]
    assert table["differs at"].tolist() == ["2:x_1", "nowhere"]
    assert "(20 values, shape [4, 5])" in table["clean"][0]
    texts = analysis.inputs_table(clean, corrupted, texts=(["1 = x_1", "2 = x_2"], ["3 = x_1", "2 = x_2"]))
    assert texts["corrupted"].tolist() == ["3 = x_1", "2 = x_2"]
    with pytest.raises(ValueError, match="pair up"):
        analysis.inputs_table(clean, corrupted[:1])


def test_site_map_names_positions_by_token_and_keeps_indices_categorical():
    df = pd.DataFrame([{"site": f"steps.{t}.x[pos={p}]", "component": "x", "step": t, "layer": 0, "pos": p,
                        "score": float(p)} for t in range(2) for p in range(3)])
    fig = figures.site_map(df, labels=["20", "=", "x_7"])
    assert list(fig.data[0].x) == ["0:20", "1:=", "2:x_7"]
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"
    assert "token of input 0" in fig.layout.xaxis.title.text
    assert analysis.loop_grid_figure(df, "score").layout.xaxis.type == "category"


def test_probe_map_draws_intervals_and_says_n():
    df = pd.DataFrame({"site": [f"steps.{t}.h" for t in range(4)], "component": "h", "step": range(4),
                       "accuracy": [0.5, 0.6, 0.9, 1.0], "control": 0.5, "selectivity": [0, 0.1, 0.4, 0.5],
                       "n_test": 128})
    fig = figures.probe_map(df)
    assert "n = 128 test rows" in fig.layout.title.text
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2 and len(bands[0].x) == 8  # the score's and the control's, up and back
    assert all(lo - 1e-9 <= a <= hi + 1e-9 for a, hi, lo in zip(df.accuracy, bands[0].y[:4], bands[0].y[4:][::-1]))


def test_probe_map_draws_act_ponder_steps_per_input_step():
    df = pd.DataFrame([{"site": f"time.{t}.ponder.{n}.hook_state", "component": "hook_state", "time": t,
                        "ponder": n, "accuracy": 0.5 + n / 10, "control": 0.5, "selectivity": n / 10}
                       for t in range(2) for n in range(4)])
    fig = figures.probe_map(df)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["hook_state time 0", "hook_state time 1"]
    assert list(lines[0].x) == [0, 1, 2, 3] and fig.layout.xaxis.title.text.startswith("ponder step n")


def test_messages_are_escaped_and_never_list_nothing():
    assert ui.plain("steps.*.hook_z _x $y <pad>") == r"steps.\*.hook_z \_x \$y \<pad>"
    assert ui.plain(ui.ROOT_ENV) == ui.ROOT_ENV  # underscores inside a name stay
    e = ValueError("'steps.*.x' matches no hook that fired in this run; closest fired hooks: ")
    assert ui.error_text(e) == "'steps.*.x' matches no hook that fired in this run"


# --------------------------------------------------------------------- pages
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer_views")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ui.ROOT_ENV, str(root))
        found = {k: str(v) for k, v in app_models.all_families(root).items()}
        found["reasoner-b"] = str(app_models.reasoner(root / "reasoner-b"))
        yield found


def _page(page, **query):
    """The page opened by a link with ``query`` (``?model=...&step=...``)."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(f"pages/{page}.py")
    for k, v in query.items():
        at.query_params[k] = str(v)
    return at.run()


def _spec(at, i=0):
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_reasoner_step_slider_play_and_all_heads(tiny):
    at = ok(_page("reasoner", model=tiny["reasoner"], reasoner_view="Attention", step=2))
    assert at.slider(key="reasoner_step").value == 2 and "Attention at step 2" in _spec(at)["layout"]["title"]["text"]
    at.slider(key="reasoner_step").set_value(3).run()
    assert at.query_params["step"] == "3" and "step 3" in _spec(ok(at))["layout"]["title"]["text"]
    at.toggle(key="reasoner_attn_play").set_value(True).run()
    spec = _spec(ok(at))
    assert len(spec["frames"]) == at.slider(key="reasoner_step").max + 1  # one frame per step
    assert spec["layout"]["sliders"][0]["active"] == 3  # from the step chosen
    show(at, "reasoner_view", "All heads")
    spec = _spec(ok(at))
    assert charts(at) == 1 and len(spec["data"]) == 2 * 4  # the tiny model: 2 layers x 4 heads
    assert "step 3" in spec["layout"]["title"]["text"]


@pytest.mark.parametrize("page, view, key", [("reasoner", "Attention", "reasoner_view"),
                                             ("warp", "theta_t (PCA)", "warp_view"),
                                             ("act", "Halting", "act_view")])
def test_a_step_out_of_range_in_the_link_is_a_message(tiny, page, view, key):
    at = _page(page, model=tiny[page], step=999, **{key: view})
    shows_error(at, "?step=999 is refused", "out of range", "allowed 0..")
    assert charts(at) >= 1  # the view still draws, at the default step
    at = _page(page, model=tiny[page], step="x", **{key: view})
    shows_error(at, "?step=x is refused", "not a whole number")


def test_act_slider_and_play_through_the_ponder_steps(tiny):
    at = ok(_page("act", model=tiny["act"]))
    assert charts(at) == 2 and any("only step" in c.value for c in at.caption)  # parity: one input step
    at.toggle(key="act_play").set_value(True).run()
    spec = _spec(ok(at), 1)
    assert spec["frames"] and spec["layout"]["sliders"][0]["currentvalue"]["prefix"] == "ponder step n = "


def test_warp_slider_marks_theta_and_plays_the_path(tiny):
    at = ok(_page("warp", model=tiny["warp"], warp_view="theta_t (PCA)", step=5))
    assert at.slider(key="warp_step").value == 5
    assert _spec(at)["data"][-1]["name"] == "theta_t at step 5"
    at.toggle(key="warp_play").set_value(True).run()
    assert len(_spec(ok(at))["frames"]) > 1


def test_compare_two_models_on_one_problem(tiny):
    at = ok(_page("reasoner", model=tiny["reasoner"], compare=tiny["reasoner-b"]))
    assert at.button_group(key="reasoner_view").value == "Compare"  # the link opens the view
    assert charts(at) == 2 and list(at.dataframe[0].value["model"]) == [tiny["reasoner"], tiny["reasoner-b"]]
    at = _page("reasoner", model=tiny["reasoner"], compare="no-such-model")
    assert not at.exception
    text = " ".join(shown(e.value) for e in at.error)
    assert "?compare=no-such-model is refused" in text and "no model of the zoo" in text
    at = _page("reasoner", model=tiny["reasoner"], compare=tiny["act"])
    shows_error(at, "?compare=", "refused", "this page shows Reasoner models")


def test_patching_shows_its_inputs_a_batch_and_token_positions(tiny):
    at = ok(_page("patching", model=tiny["reasoner"]))
    assert at.number_input(key="patch_n_reasoner").value >= 2
    inputs = at.dataframe[0].value
    assert len(inputs) >= 2 and {"clean", "corrupted", "differs at"} <= set(inputs.columns)
    assert "=" in inputs["clean"][0] and inputs["clean"][0] != inputs["corrupted"][0]
    xaxis = _spec(at)["layout"]["xaxis"]
    assert "token" in xaxis["title"]["text"] and xaxis["type"] == "category"
    assert ":" in _spec(at)["data"][0]["x"][0]  # '0:14'
    at.text_input(key="patch_sites_reasoner").set_value("steps.*.nothing_here").run()
    shows_error(at, "steps.*.nothing_here", "matches no hook")
    assert "steps.\\*.nothing_here" in at.error[0].value  # escaped, so the stars show


def test_probing_defaults_to_a_steady_sample_and_shows_n(tiny):
    at = ok(_page("probing", model=tiny["act"]))
    assert any(m.label == "test rows per site (n)" for m in at.metric)
    spec = _spec(at)
    assert "test rows per site" in spec["layout"]["title"]["text"]
    assert any(d.get("fill") == "toself" for d in spec["data"])
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("ponder step n")


def test_state_table_cells_are_clickable_and_read_back_as_steps():
    table = pd.DataFrame({"slot": ["x_1", "x_2"] * 3, "step": [-1, -1, 0, 0, 1, 1],
                          "value": ["EMPTY", "EMPTY", 3, "EMPTY", 3, 4], "truth": [3, 4] * 3,
                          "exact": ["EMPTY", "EMPTY", 3, "EMPTY", 3, 4], "depth": [0, 1] * 3,
                          "status": ["not yet computed"] * 2 + ["correct", "not yet computed"] + ["correct"] * 2})
    fig = reasoner_views.state_table_figure(table)
    cells = next(t for t in fig.data if t.name == "cells")
    assert len(cells.x) == 6 and set(cells.x) == {"input", "0", "1"} and set(cells.y) == {"x_1", "x_2"}
    assert fig.layout.clickmode == "event+select"
    assert reasoner_views.state_cell({"x": "1", "y": "x_2"}) == (1, "x_2")
    assert reasoner_views.state_cell({"x": "input", "y": "x_1"}) == (0, "x_1")  # the step that reads the input
    assert reasoner_views.state_cell({"x": "Attention", "y": "x_1"}) is None and reasoner_views.state_cell({}) is None


def test_top_sites_link_to_the_model_page_at_their_step(tiny):
    at = ok(_page("patching", model=tiny["reasoner"]))
    at.button_group(key="patch_view").set_value("Top sites").run()
    ok(at)
    links = next(d.value for d in at.dataframe if "open" in d.value)
    ranked = _spec(at)["data"][0]["y"]  # the bars, largest first
    assert list(links["site"]) == list(ranked)
    first = urllib.parse.urlparse(links["open"][0])
    query = urllib.parse.parse_qs(first.query)
    assert first.path == "/reasoner" and query["model"] == [tiny["reasoner"]]
    assert query["reasoner_view"] == ["Attention"]
    assert query["step"] == [links["site"][0].split(".")[1]]  # 'steps.3.blocks.0...' -> 3


def test_site_link_reads_each_family_s_step():
    row = pd.Series({"step": 3, "time": 2, "site": "x"})
    assert analysis.site_link("warp", "warp-msd", row) == "/warp?model=warp-msd&step=3"
    assert analysis.site_link("act", "act-parity", row) == "/act?model=act-parity&step=2"
    assert analysis.site_link("gain", "gain-v1", row) is None  # no step slider on its page
    assert analysis.site_link("act", "act-parity", pd.Series({"step": 1})) is None  # no input step in the row


def test_large_state_tables_drop_cell_text_and_draw_cells_with_webgl():
    slots, steps = [f"x_{i}" for i in range(100)], list(range(-1, 30))
    table = pd.DataFrame([{"slot": s, "step": t, "value": 1, "truth": 1, "exact": 1, "depth": 0, "status": "correct"}
                          for t in steps for s in slots])
    assert len(table) > reasoner_views.MAX_TEXT_CELLS
    fig = reasoner_views.state_table_figure(table)
    assert fig.data[0].texttemplate is None and fig.data[1].type == "scattergl"
    small = reasoner_views.state_table_figure(table[table.slot.isin(slots[:4])])
    assert small.data[0].texttemplate == "%{text}" and small.data[1].type == "scatter"
