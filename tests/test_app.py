"""Every page of the explorer under Streamlit's AppTest: defaults and edited inputs, malformed
ones included, never raise; bad input shows a message on the page.

Model pages are pointed at tiny checkpoints (``?model=<folder>``) so each run takes a fraction
of a second; the defaults run on whatever the zoo holds. The tiny checkpoints lie under a
temporary folder that ``WORKBENCH_MODELS_ROOT`` allows, as whoever starts the app would.
"""

import re
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from apps import ui, zoo
from tests import app_models
from tests.app_models import shipped

APP = str(Path(__file__).resolve().parents[1] / "apps" / "explorer.py")
PAGES = ("home", "reasoner", "act", "warp", "gain", "patching", "probing", "codebook")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ui.ROOT_ENV, str(root))
        yield {k: str(v) for k, v in app_models.all_families(root).items()}


def open_page(page: str, model: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    if model:
        at.query_params["model"] = model
    return at.run()


def ok(at: AppTest) -> AppTest:
    """No exception and no error message on the page."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def show(at: AppTest, key: str, view: str) -> AppTest:
    """Choose the view a page shows (its segmented control ``key``) and rerun."""
    return at.button_group(key=key).set_value(view).run()


def widgets(at: AppTest) -> set[str]:
    """The keys of the input widgets on the page now."""
    lists = (at.selectbox, at.number_input, at.text_input, at.checkbox, at.radio, at.slider, at.multiselect)
    return {w.key for widgets in lists for w in widgets if w.key}


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def shown(markdown: str) -> str:
    """A message as the reader sees it: Markdown escapes (``\\*``) undone."""
    return re.sub(r"\\(.)", r"\1", markdown)


def shows_error(at: AppTest, *words: str) -> None:
    """A message on the page (st.error) that contains ``words``, and no traceback."""
    assert not at.exception, [e.message for e in at.exception]
    text = " ".join(shown(e.value) for e in at.error)
    assert at.error and all(w in text for w in words), text


# ---------------------------------------------------------------- defaults
@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_with_its_defaults(page):
    at = ok(open_page(page))
    if page == "home":
        assert len(at.dataframe) == 1 and charts(at) == 0  # the zoo table; the figures are views of their own
    elif shipped(page):
        assert charts(at) >= 1
    else:
        assert at.info  # no model of the page's family is shipped yet: the page says so


def test_home_shows_the_zoo_and_the_ood_figure(tiny, monkeypatch):
    names_of = zoo.names_of
    monkeypatch.setattr(zoo, "names_of", lambda *f: [tiny["reasoner"]] if f == ("reasoner",) else names_of(*f))
    at = ok(open_page("home"))
    assert at.title[0].value == "Loop workbench"
    assert len(at.dataframe[0].value) == len(zoo.zoo_table())
    for view in ("Headline metrics", "OOD generalisation"):
        ok(show(at, "home_view", view))
        assert charts(at) == 1 and not at.dataframe, view


def test_home_preloads_the_plotly_chunk_streamlit_itself_imports():
    at = ok(open_page("home"))
    (html,) = at.get("html")
    chunk = re.search(r"import\(new URL\('\./(PlotlyChart\.[\w-]+\.js)'", html.proto.body).group(1)
    js = Path(st.__file__).parent / "static" / "static" / "js"
    assert (js / chunk).is_file()
    # the same relative URL as Streamlit's own lazy import of it, so the browser evaluates it once
    assert any(f"import(`./{chunk}`)" in p.read_text() for p in js.glob("index.*.js"))
    ok(show(at, "home_view", "Headline metrics"))
    assert not at.get("html")  # a figure view loads the code itself


def test_home_opens_the_view_its_link_names():
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["home_view"] = "OOD generalisation"
    ok(at.run())
    assert charts(at) == 1 and not at.dataframe
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["home_view"] = "no such view"
    ok(at.run())
    assert len(at.dataframe) == 1  # an unknown view falls back to the zoo


@pytest.mark.parametrize("page, family", [("reasoner", "reasoner"), ("act", "act"), ("warp", "warp"),
                                          ("patching", "reasoner"), ("patching", "act"), ("patching", "warp"),
                                          ("probing", "reasoner"), ("probing", "act"), ("probing", "warp"),
                                          ("codebook", "reasoner"), ("codebook", "act"), ("codebook", "warp")])
def test_pages_open_on_a_checkpoint_folder(tiny, page, family):
    at = ok(open_page(page, tiny[family]))
    assert charts(at) >= 1
    assert at.selectbox(key=f"{page}_model_choice").value == "a checkpoint folder…"


# ------------------------------------------------------------ model picker
def test_model_picker_rejects_missing_and_wrong_models(tiny):
    at = open_page("reasoner", str(Path(tiny["act"]).parent / "no-such-folder"))
    shows_error(at, "Cannot open the model", "neither a checkpoint folder nor a zoo model")
    at.text_input(key="reasoner_model_path").set_value("/no/such/folder").run()
    shows_error(at, "Cannot open the model", "outside the allowed root", ui.ROOT_ENV)
    at.text_input(key="reasoner_model_path").set_value(tiny["act"]).run()
    shows_error(at, "ACT", "this page shows Reasoner models")
    at.text_input(key="reasoner_model_path").set_value("").run()
    assert not at.exception and not at.error and at.info
    at.text_input(key="reasoner_model_path").set_value(tiny["reasoner"]).run()
    assert charts(ok(at)) == 1


# ---------------------------------------------------------------- reasoner
MALFORMED_PROBLEMS = [("", "empty problem"), ("20 = x_7; x_7 + x_9 = x_2", "never defined"),
                      ("99 = x_7", "outside Z_23"), ("20 = x_7; 3 = x_7", "defined twice"),
                      ("2 = x_7; x_7 + x_7 = x_200", "unknown variable"), ("x_7 = = 3", "malformed")]


def test_reasoner_page_edits(tiny):
    at = ok(open_page("reasoner", tiny["reasoner"]))
    assert charts(at) == 1  # the state table: the one view shown is the one view computed
    for text, rule in MALFORMED_PROBLEMS:
        at.text_area[0].set_value(text).run()
        shows_error(at, "malformed", rule)
        assert charts(at) == 0
    at.text_area[0].set_value("20 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5").run()
    assert charts(ok(at)) == 1
    at.number_input(key="reasoner_steps").set_value(2).run()
    at.checkbox(key="reasoner_operands").check().run()
    show(at, "reasoner_view", "Attention")
    at.slider(key="reasoner_step").set_value(1).run()
    at.selectbox(key="reasoner_attn_layer").set_value(1).run()
    at.selectbox(key="reasoner_attn_head").set_value(3).run()
    at.checkbox(key="reasoner_attn_marks").uncheck().run()
    assert charts(ok(at)) == 1
    show(at, "reasoner_view", "Step lens")
    at.selectbox(key="reasoner_lens_slot").set_value("x_23").run()
    assert charts(ok(at)) == 1
    show(at, "reasoner_view", "Intervention")
    at.selectbox(key="reasoner_edit_var").set_value(23).run()
    at.number_input(key="reasoner_edit_value").set_value(11).run()
    at.number_input(key="reasoner_edit_step").set_value(1).run()
    at.radio(key="reasoner_edit_where").set_value("every occurrence").run()
    assert charts(ok(at)) == 1
    at.number_input(key="reasoner_steps").set_value(0).run()  # back to the model's own number of steps
    at.number_input(key="reasoner_nodes").set_value(12).run()
    at.button(key="reasoner_sample").click().run()
    assert charts(ok(at)) == 1 and at.text_area[0].value.count("=") == 12


@pytest.mark.parametrize("page, key, views, charts_each", [
    ("reasoner", "reasoner_view", ["State table", "Attention", "All heads", "Step lens", "Intervention"],
     [1, 1, 1, 1, 1]),
    ("act", "act_view", ["Halting", "Ponder time vs difficulty", "Patch the halting logit"], [2, 1, 1]),
    ("warp", "warp_view", ["Forecast", "theta_t (PCA)", "Root function", "Spectrum of A", "Physical parameters"],
     [1, 1, 1, 1, 1])])
def test_only_the_chosen_view_runs(tiny, page, key, views, charts_each):
    """A model page runs the code of the view on screen only: the other views' widgets and figures
    are absent, and their computations (attention, interventions, batches) are not run."""
    own = {"reasoner": {"Attention": "reasoner_attn_layer", "Step lens": "reasoner_lens_slot",
                        "Intervention": "reasoner_edit_var", "State table": "reasoner_operands"},
           "act": {"Ponder time vs difficulty": "act_batch_n", "Patch the halting logit": "act_patch_step"},
           "warp": {"theta_t (PCA)": "warp_pca_k", "Root function": "warp_root_steps"}}[page]
    at = ok(open_page(page, tiny[page]))
    for view, n in zip(views, charts_each):
        show(at, key, view)
        assert at.button_group(key=key).value == view
        assert charts(ok(at)) == n, view
        present = widgets(at)
        assert all((widget in present) == (v == view) for v, widget in own.items()), (view, present)


def test_a_view_is_deep_linkable(tiny):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/reasoner.py")
    at.query_params["model"] = tiny["reasoner"]
    at.query_params["reasoner_view"] = "Step lens"
    ok(at.run())
    assert at.button_group(key="reasoner_view").value == "Step lens" and "reasoner_lens_slot" in widgets(at)


# --------------------------------------------------------------------- ACT
def test_act_page_edits(tiny):
    at = ok(open_page("act", tiny["act"]))
    assert charts(at) == 2  # the halting view: ponder steps and halting
    field = at.text_input(key=[w.key for w in at.text_input if w.key.startswith("act_text")][0])
    for text, rule in [("+0x000", "not an entry"), ("+0", "exactly 6"), ("", "exactly 6"), ("+0-0+0+", "more than 6")]:
        field.set_value(text).run()
        shows_error(at, "malformed", rule)
    field.set_value("+-00++").run()
    ok(at)
    show(at, "act_view", "Patch the halting logit")
    at.selectbox(key="act_patch_step").set_value("every ponder step").run()
    at.slider(key="act_patch_offset").set_value(-30.0).run()
    assert charts(ok(at)) == 1
    show(at, "act_view", "Ponder time vs difficulty")
    at.number_input(key="act_batch_n").set_value(20).run()
    at.button(key="act_sample").click().run()
    assert charts(ok(at)) == 1


# -------------------------------------------------------------------- WARP
def test_warp_page_edits(tiny):
    at = ok(open_page("warp", tiny["warp"]))
    assert charts(at) == 1  # the forecast; PCA, root, spectrum, physical parameters one at a time
    show(at, "warp_view", "Root function")
    for steps, rule in [("a, b", "not a list of integers"), ("", "empty"), ("3, 999", "out of range")]:
        at.text_input(key="warp_root_steps").set_value(steps).run()
        shows_error(at, "Root function", rule)
    at.text_input(key="warp_root_steps").set_value("0, 5, 30").run()
    at.number_input(key="warp_seed").set_value(3).run()
    at.number_input(key="warp_context").set_value(20).run()
    assert charts(ok(at)) == 1
    show(at, "warp_view", "theta_t (PCA)")
    at.radio(key="warp_pca_k").set_value(3).run()
    assert charts(ok(at)) == 1
    for view in ("Spectrum of A", "Physical parameters"):
        assert charts(ok(show(at, "warp_view", view))) == 1


def test_warp_page_forecasts_once_per_input_not_per_click(tiny, monkeypatch):
    from apps.adapters import warp as aw

    calls, forecast_run = [], aw.forecast_run
    st.cache_data.clear()  # earlier tests may have forecast the same trajectory
    monkeypatch.setattr(aw, "forecast_run", lambda *a, **k: calls.append(1) or forecast_run(*a, **k))
    at = ok(open_page("warp", tiny["warp"]))
    assert len(calls) == 1
    for view in ("theta_t (PCA)", "Spectrum of A", "Forecast"):  # other views of the same trajectory
        ok(show(at, "warp_view", view))
    assert len(calls) == 1
    ok(at.number_input(key="warp_seed").set_value(5).run())  # a new trajectory is forecast
    assert len(calls) == 2


def test_warp_page_on_a_digit_model(tiny):
    at = ok(open_page("warp", tiny["warp-digits"]))
    assert charts(at) == 1  # the completion
    at.number_input(key="warp_digit").set_value(7).run()
    at.number_input(key="warp_context").set_value(10).run()
    assert charts(ok(at)) == 1
    show(at, "warp_view", "Physical parameters")
    assert charts(ok(at)) == 0 and at.info  # no physical parameters: the view says so


# -------------------------------------------------------------------- gain
def test_gain_page_edits():
    at = ok(open_page("gain"))
    assert charts(at) == 1  # one figure at a time: the effects
    for text in ("biased adapter=abc", "gaussian", "biased weight=2"):
        at.text_input(key="gain_dist").set_value(text).run()
        shows_error(at, "malformed")
    at.text_input(key="gain_dist").set_value("biased adapter=30 weight=0.3 width=5").run()
    assert charts(ok(at)) == 1
    for view in at.button_group(key="gain_view").options:
        assert charts(ok(show(at, "gain_view", str(view)))) == 1


# --------------------------------------------------------------- analyses
def test_patching_page_edits(tiny):
    at = ok(open_page("patching", tiny["reasoner"]))
    for field, value, rule in [("patch_sites_reasoner", "steps.*.nothing_here", "matches no hook"),
                               ("patch_sites_reasoner", " ", "no sites"),
                               ("patch_pos_reasoner", "first", "comma-separated integers"),
                               ("patch_pos_reasoner", "999", "out of range")]:
        at.text_input(key=field).set_value(value).run()
        shows_error(at, "Patching", rule)
        at.text_input(key=field).set_value({"patch_sites_reasoner": "steps.*.bottleneck.hook_codes",
                                            "patch_pos_reasoner": "each"}[field]).run()
    at.text_input(key="patch_sites_reasoner").set_value("steps.*.blocks.*.attn.hook_z").run()
    at.text_input(key="patch_pos_reasoner").set_value("none").run()
    at.text_input(key="patch_heads_reasoner").set_value("each").run()
    assert charts(ok(at)) == 1  # one view at a time: the per-site heatmap
    at.radio(key="patch_method").set_value("attribution patching").run()
    at.selectbox(key="patch_ablation").set_value("zero").run()
    at.selectbox(key="patch_metric_reasoner").set_value("clean answer probability").run()
    show(at, "patch_view", "Step x layer")
    at.radio(key="patch_agg").set_value("mean").run()
    assert charts(ok(at)) == 1
    for view, n in (("Top sites", 1), ("Table", 0)):
        assert charts(ok(show(at, "patch_view", view))) == n


@pytest.mark.parametrize("page", ["patching", "probing", "codebook"])
def test_analysis_pages_explain_models_they_do_not_cover(tiny, page):
    shows_error(open_page(page, tiny["warp-digits"]), "WARP", "dynamical")


def test_probing_and_codebook_pages_edits(tiny):
    at = ok(open_page("probing", tiny["reasoner"]))
    at.selectbox(key="probe_target_reasoner").set_value("value").run()
    at.selectbox(key="probe_control").set_value("variable").run()
    at.number_input(key="probe_per_problem").set_value(2).run()
    assert charts(ok(at)) == 1  # one view at a time: accuracy by step
    assert charts(ok(show(at, "probe_view", "Step x layer"))) == 1
    at.text_input(key="probe_sites").set_value("steps.*.no_such_hook").run()
    shows_error(at, "Probing")
    at = ok(open_page("probing", tiny["act"]))
    at.selectbox(key="probe_target_act").set_value("halts").run()
    ok(at)
    at = ok(open_page("codebook", tiny["act"]))
    at.number_input(key="codebook_k_act").set_value(3).run()
    show(at, "codebook_view", "Confusion")
    at.selectbox(key="codebook_confusion_step").set_value(0).run()
    ok(at)


@pytest.mark.parametrize("page", ["reasoner", "act", "patching", "home"])
def test_a_page_always_runs_through_the_entry_script(tiny, page, monkeypatch):
    """Streamlit's pages-folder mode would run ``apps/pages/<page>.py`` on its own for the first
    request of a session that opens its URL; the page hands over to ``apps/explorer.py`` (page
    setup, threads, the error guard) and is drawn from there, on the same page and link."""
    seen = []
    check = ui.through_explorer
    monkeypatch.setattr(ui, "through_explorer", lambda: (seen.append(getattr(ui._ENTRY, "active", False)), check()))
    at = open_page(page, tiny["reasoner"] if page != "home" and page != "act" else tiny.get(page))
    ok(at)
    assert seen and seen[-1] is True, seen
    if page != "home":
        assert at.query_params["model"] and charts(at) >= 1


def test_home_links_every_zoo_model_to_its_page():
    at = ok(open_page("home"))
    table = at.dataframe[0].value
    for name, link in zip(table["model"], table["page"]):
        family = zoo.family_of(name)
        if family in ("reasoner", "act", "warp", "gain"):
            assert link == f"/{family}?model={name}"
    linked = table.dropna(subset=["page"])
    assert len(linked)
    name = linked["model"].iloc[0]
    page = linked["page"].iloc[0].split("?")[0].strip("/")
    at = ok(open_page(page, name))  # the link opens that page on that model
    assert at.selectbox(key=f"{page}_model_choice").value == name


def test_dynamics_page_runs_the_lab_on_the_zoo_through_the_registry():
    at = ok(open_page("dynamics", "reasoner"))
    assert at.title[0].value == "Loop dynamics"
    assert len(at.get("plotly_chart")) == 1  # only the chosen analysis computes
    ok(show(at, "dynamics_view", "Convergence and commit step"))
    assert "commit" in " ".join(t.value for t in at.text).lower()
    at = ok(open_page("dynamics", "act-parity"))
    ok(show(at, "dynamics_view", "Fixed points of the cell"))
    at = ok(open_page("dynamics", "warp-phys-msd"))
    views = at.button_group(key="dynamics_view").options
    import models
    from models import dynamics_adapters as da

    assert len(views) == len(da.adapters(models.load("warp-phys-msd")).analyses)  # what its adapters offer
    show(at, "dynamics_view", "Convergence and commit step")
    at.number_input(key="dynamics_n_convergence").set_value(1).run()
    assert at.error and "out of range" in at.error[0].value and not at.exception
