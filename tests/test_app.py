"""Every page of the explorer under Streamlit's AppTest: defaults and edited inputs, malformed
ones included, never raise; bad input shows a message on the page.

Model pages are pointed at tiny checkpoints (``?model=<folder>``) so each run takes a fraction
of a second; the defaults run on whatever the zoo holds. The tiny checkpoints lie under a
temporary folder that ``WORKBENCH_MODELS_ROOT`` allows, as whoever starts the app would.
"""

from pathlib import Path

import pytest
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


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def shows_error(at: AppTest, *words: str) -> None:
    """A message on the page (st.error) that contains ``words``, and no traceback."""
    assert not at.exception, [e.message for e in at.exception]
    text = " ".join(e.value for e in at.error)
    assert at.error and all(w in text for w in words), text


# ---------------------------------------------------------------- defaults
@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_with_its_defaults(page):
    at = ok(open_page(page))
    if shipped(page):
        assert charts(at) >= 1
    else:
        assert at.info  # no model of the page's family is shipped yet: the page says so


def test_home_shows_the_zoo_and_the_ood_figure(tiny, monkeypatch):
    names_of = zoo.names_of
    monkeypatch.setattr(zoo, "names_of", lambda *f: [tiny["reasoner"]] if f == ("reasoner",) else names_of(*f))
    at = ok(open_page("home"))
    assert at.title[0].value == "Loop workbench"
    assert len(at.dataframe[0].value) == len(zoo.zoo_table())
    assert charts(at) == 2  # headline metrics and the OOD figure


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
    assert charts(ok(at)) == 4


# ---------------------------------------------------------------- reasoner
MALFORMED_PROBLEMS = [("", "empty problem"), ("20 = x_7; x_7 + x_9 = x_2", "never defined"),
                      ("99 = x_7", "outside Z_23"), ("20 = x_7; 3 = x_7", "defined twice"),
                      ("2 = x_7; x_7 + x_7 = x_200", "unknown variable"), ("x_7 = = 3", "malformed")]


def test_reasoner_page_edits(tiny):
    at = ok(open_page("reasoner", tiny["reasoner"]))
    assert charts(at) == 4  # state table, attention, step lens, intervention
    for text, rule in MALFORMED_PROBLEMS:
        at.text_area[0].set_value(text).run()
        shows_error(at, "malformed", rule)
        assert charts(at) == 0
    at.text_area[0].set_value("20 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5").run()
    assert charts(ok(at)) == 4
    at.number_input(key="reasoner_steps").set_value(2).run()
    at.checkbox(key="reasoner_operands").check().run()
    at.selectbox(key="reasoner_attn_step").set_value(1).run()
    at.selectbox(key="reasoner_attn_layer").set_value(1).run()
    at.selectbox(key="reasoner_attn_head").set_value(3).run()
    at.checkbox(key="reasoner_attn_marks").uncheck().run()
    at.selectbox(key="reasoner_lens_slot").set_value("x_23").run()
    at.selectbox(key="reasoner_edit_var").set_value(23).run()
    at.number_input(key="reasoner_edit_value").set_value(11).run()
    at.number_input(key="reasoner_edit_step").set_value(1).run()
    at.radio(key="reasoner_edit_where").set_value("every occurrence").run()
    assert charts(ok(at)) == 4
    at.number_input(key="reasoner_steps").set_value(0).run()  # back to the model's own number of steps
    at.number_input(key="reasoner_nodes").set_value(12).run()
    at.button(key="reasoner_sample").click().run()
    assert charts(ok(at)) == 4 and at.text_area[0].value.count("=") == 12


# --------------------------------------------------------------------- ACT
def test_act_page_edits(tiny):
    at = ok(open_page("act", tiny["act"]))
    assert charts(at) == 4
    field = at.text_input(key=[w.key for w in at.text_input if w.key.startswith("act_text")][0])
    for text, rule in [("+0x000", "not an entry"), ("+0", "exactly 6"), ("", "exactly 6"), ("+0-0+0+", "more than 6")]:
        field.set_value(text).run()
        shows_error(at, "malformed", rule)
    field.set_value("+-00++").run()
    ok(at)
    at.selectbox(key="act_patch_step").set_value("every ponder step").run()
    at.slider(key="act_patch_offset").set_value(-30.0).run()
    at.number_input(key="act_batch_n").set_value(20).run()
    at.button(key="act_sample").click().run()
    assert charts(ok(at)) == 4


# -------------------------------------------------------------------- WARP
def test_warp_page_edits(tiny):
    at = ok(open_page("warp", tiny["warp"]))
    assert charts(at) == 5  # forecast, PCA, root, spectrum, physical parameters
    for steps, rule in [("a, b", "not a list of integers"), ("", "empty"), ("3, 999", "out of range")]:
        at.text_input(key="warp_root_steps").set_value(steps).run()
        shows_error(at, "Root function", rule)
    at.text_input(key="warp_root_steps").set_value("0, 5, 30").run()
    at.number_input(key="warp_seed").set_value(3).run()
    at.number_input(key="warp_context").set_value(20).run()
    at.radio(key="warp_pca_k").set_value(3).run()
    assert charts(ok(at)) == 5


def test_warp_page_on_a_digit_model(tiny):
    at = ok(open_page("warp", tiny["warp-digits"]))
    assert charts(at) == 4  # completion, PCA, root, spectrum (no physical parameters)
    at.number_input(key="warp_digit").set_value(7).run()
    at.number_input(key="warp_context").set_value(10).run()
    assert charts(ok(at)) == 4


# -------------------------------------------------------------------- gain
def test_gain_page_edits():
    at = ok(open_page("gain"))
    assert charts(at) == 6
    for text in ("biased adapter=abc", "gaussian", "biased weight=2"):
        at.text_input(key="gain_dist").set_value(text).run()
        shows_error(at, "malformed")
    at.text_input(key="gain_dist").set_value("biased adapter=30 weight=0.3 width=5").run()
    assert charts(ok(at)) == 6


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
    assert charts(ok(at)) == 3
    at.radio(key="patch_method").set_value("attribution patching").run()
    at.selectbox(key="patch_ablation").set_value("zero").run()
    at.selectbox(key="patch_metric_reasoner").set_value("clean answer probability").run()
    at.radio(key="patch_agg").set_value("mean").run()
    assert charts(ok(at)) == 3


@pytest.mark.parametrize("page", ["patching", "probing", "codebook"])
def test_analysis_pages_explain_models_they_do_not_cover(tiny, page):
    shows_error(open_page(page, tiny["warp-digits"]), "WARP", "dynamical")


def test_probing_and_codebook_pages_edits(tiny):
    at = ok(open_page("probing", tiny["reasoner"]))
    at.selectbox(key="probe_target_reasoner").set_value("value").run()
    at.selectbox(key="probe_control").set_value("variable").run()
    at.number_input(key="probe_per_problem").set_value(2).run()
    assert charts(ok(at)) == 2
    at.text_input(key="probe_sites").set_value("steps.*.no_such_hook").run()
    shows_error(at, "Probing")
    at = ok(open_page("probing", tiny["act"]))
    at.selectbox(key="probe_target_act").set_value("halts").run()
    ok(at)
    at = ok(open_page("codebook", tiny["act"]))
    at.number_input(key="codebook_k_act").set_value(3).run()
    at.selectbox(key="codebook_confusion_step").set_value(0).run()
    ok(at)
