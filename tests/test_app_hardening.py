"""The explorer against bad input: broken checkpoint folders, numbers out of range (typed or in a
deep link), over-long text and folders outside the allowed root. Every case is a message on the
page that met it, never a traceback, and never a value clamped or cut silently.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import models
from apps import model_pick, ui, zoo
from apps.adapters import act as aa
from apps.adapters import reasoner as ar
from tests import app_models

APP = str(Path(__file__).resolve().parents[1] / "apps" / "explorer.py")
MODEL_PAGES = ("reasoner", "act", "warp", "gain", "patching", "probing", "codebook")
BAD_CONFIGS = {  # folder name -> config.json text, and the words of the message it gives
    "corrupt": ("{not json", "corrupt JSON"),
    "number": ("42", "expected a JSON object"),
    "null": ("null", "expected a JSON object"),
    "disallowed": (json.dumps({"class": "os.system", "config": {}}), "not allowed"),
}

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The allowed root: tiny checkpoints of every family and one folder per bad config.json."""
    base = tmp_path_factory.mktemp("hardening")
    app_models.all_families(base)
    for name, (text, _) in BAD_CONFIGS.items():
        (base / name).mkdir()
        (base / name / "config.json").write_text(text)
    return base


@pytest.fixture
def allowed(root, monkeypatch):
    monkeypatch.setenv(ui.ROOT_ENV, str(root))
    return root


def open_page(page: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    for k, v in query.items():
        at.query_params[k] = str(v)
    return at.run()


def no_traceback(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in no_traceback(at).error)


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# ------------------------------------------------------------ broken checkpoints
@pytest.mark.parametrize("page", MODEL_PAGES)
def test_a_bad_checkpoint_folder_is_a_message_on_its_page(allowed, page):
    at = None
    for name, (_, words) in BAD_CONFIGS.items():
        if at is None:
            at = open_page(page, model=allowed / name)
        else:  # the same session, another folder typed into the box
            at.text_input(key=f"{page}_model_path").set_value(str(allowed / name)).run()
        text = errors(at)
        assert "Cannot open the model" in text and words in text, (name, text)
        assert charts(at) == 0


def test_bad_zoo_entries_are_rows_on_home_and_other_pages_still_work(root, tmp_path, monkeypatch):
    zoo_dir = tmp_path / "zoo"
    app_models.act(zoo_dir / "good-act")
    for name, (text, _) in BAD_CONFIGS.items():
        (zoo_dir / name).mkdir(parents=True)
        (zoo_dir / name / "config.json").write_text(text)
    (zoo_dir / "good-act" / "metrics.json").write_text("[1, 2]")  # unreadable metrics: the row says so
    monkeypatch.setattr(models, "ZOO", zoo_dir)
    monkeypatch.delenv(ui.ROOT_ENV, raising=False)

    table = zoo.zoo_table()
    assert list(table.model) == sorted(["good-act", *BAD_CONFIGS])
    bad = table[table.model != "good-act"]
    assert (bad.family == "?").all() and bad.headline.str.startswith("unreadable").all()
    assert "expected a JSON object" in table.set_index("model").headline["good-act"]
    assert zoo.names_of("act") == ["good-act"]

    at = no_traceback(open_page("home"))
    assert at.title[0].value == "Loop workbench" and len(at.dataframe[0].value) == len(table)
    at = no_traceback(open_page("act"))  # opens on the one good entry
    assert not at.error and charts(at) == 2  # the halting view: ponder steps and halting
    text = errors(open_page("act", model="null"))  # a zoo name whose config is null: a message
    assert "Cannot open the model" in text and "expected a JSON object" in text


# ------------------------------------------------------------- allowed folders
def test_folders_outside_the_root_are_refused(root, tmp_path, monkeypatch):
    act = str(root / "act")
    monkeypatch.delenv(ui.ROOT_ENV, raising=False)
    with pytest.raises(ValueError, match=f"not a zoo model.*{ui.ROOT_ENV}"):
        model_pick.checked_folder(act)
    text = errors(open_page("act", model=act))
    assert "Cannot open the model" in text and ui.ROOT_ENV in text

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "escape").symlink_to(root / "act", target_is_directory=True)
    monkeypatch.setenv(ui.ROOT_ENV, str(elsewhere))
    for spelling in (act, str(elsewhere / ".." / ".." / root.name / "act"), str(elsewhere / "escape")):
        with pytest.raises(ValueError, match="outside the allowed root"):
            model_pick.checked_folder(spelling)
    text = errors(open_page("act", model=act))
    assert "outside the allowed root" in text and str(elsewhere.resolve()) in text

    monkeypatch.setenv(ui.ROOT_ENV, os.pathsep.join([str(elsewhere), str(root)]))
    assert model_pick.checked_folder(act) == (root / "act").resolve()
    assert model_pick.checked_folder("reasoner" if "reasoner" in models.zoo_names() else act)  # zoo names need no root
    at = open_page("act", model=act)
    assert not errors(at) and charts(at) == 2  # the halting view


# ------------------------------------------------------------------- numbers
def test_out_of_range_numbers_are_refused_with_their_range(allowed):
    model = str(allowed / "reasoner")
    at = open_page("reasoner", model=model, steps=999)
    text = errors(at)
    assert "?steps=999" in text and "Steps: 999 is out of range; allowed 0..16" in text
    assert at.number_input(key="reasoner_steps").value == 0 and charts(at) == 1  # the default, said so
    at = open_page("reasoner", model=model, nodes="abc", stpe=3)
    assert "Nodes: 'abc' is not a whole number; allowed 2..128" in errors(at)
    assert "?stpe=" in at.warning[0].value  # a misspelt parameter
    at = open_page("reasoner", model=model, steps=3, nodes=12)  # in range: taken
    assert not errors(at) and at.number_input(key="reasoner_steps").value == 3
    assert at.number_input(key="reasoner_nodes").value == 12

    at.button_group(key="reasoner_view").set_value("Intervention").run()  # the view with the "Value" field
    for key, value, words in [("reasoner_steps", 17, "Steps: 17 is out of range; allowed 0..16"),
                              ("reasoner_steps", -1, "Steps: -1 is out of range; allowed 0..16"),
                              ("reasoner_edit_value", 23, "Value: 23 is out of range; allowed 0..22")]:
        at.number_input(key=key).set_value(value).run()
        assert words in errors(at), (key, value)
        assert at.number_input(key=key).value == value  # kept as typed, not clamped
        at.number_input(key=key).set_value(0).run()
        assert not errors(at)


def test_out_of_range_numbers_on_other_pages(allowed):
    at = open_page("warp", model=allowed / "warp", context=32)
    assert "Context (values given): 32 is out of range; allowed 1..31" in errors(at) and charts(at) == 1
    at.number_input(key="warp_context").set_value(0).run()
    assert "allowed 1..31" in errors(at) and charts(at) == 0
    at = open_page("act", model=allowed / "act")
    at.button_group(key="act_view").set_value("Ponder time vs difficulty").run()
    at.number_input(key="act_batch_n").set_value(5001).run()
    assert "Fresh problems: 5001 is out of range; allowed 1..5000" in errors(at)
    assert charts(at) == 0  # the batch view, the one shown, is refused
    at = open_page("codebook", model=allowed / "act", k=1)
    assert "Clusters k: 1 is out of range; allowed 2..256" in errors(at)


# ---------------------------------------------------------------------- text
def test_over_long_text_is_refused_before_parsing(allowed):
    at = open_page("reasoner", model=allowed / "reasoner")
    long = "20 = x_7; " * 2001  # 20,010 characters
    at.text_area[0].set_value(long).run()
    assert "at most 20,000 are accepted" in errors(at) and charts(at) == 0
    at = open_page("act", model=allowed / "act")
    field = at.text_input(key=[w.key for w in at.text_input if w.key.startswith("act_text")][0])
    field.set_value("+" * 5000).run()
    assert "at most 2,000 are accepted" in errors(at)

    reasoner, act = models.load(allowed / "reasoner"), models.load(allowed / "act")
    with pytest.raises(ValueError, match="at most 20,000"):
        ar.parse_problem(reasoner, "x" * 10**7)
    with pytest.raises(ValueError, match="at most 2,000"):
        aa.parse_input(act, "+" * 10**7)
