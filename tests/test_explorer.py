import json
import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "apps" / "explorer.py")

# run in a fresh interpreter: which thread imports torch / transformer_lens while Home is drawn
SPY = """
import json, sys, threading
seen = []

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "transformer_lens"):
            seen.append([name, threading.current_thread().name])
        return None

sys.meta_path.insert(0, Spy())
from streamlit.testing.v1 import AppTest

at = AppTest.from_file(sys.argv[1], default_timeout=300).run()
print(json.dumps({"exception": [e.message for e in at.exception], "title": [t.value for t in at.title],
                  "tables": len(at.dataframe), "seen": seen}))
"""


def test_explorer_opens_on_the_zoo():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Loop workbench"


def test_home_does_not_import_torch():
    """Home lists the zoo from its files: its script never imports torch or TransformerLens (only
    the background warm-up for the other pages does, once Home is drawn)."""
    out = subprocess.run([sys.executable, "-c", SPY, APP], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["exception"] and result["title"] == ["Loop workbench"] and result["tables"] == 1, result
    by_page = [(name, thread) for name, thread in result["seen"] if thread != "explorer-warm-up"]
    assert not by_page, f"imported while Home was drawn: {by_page}"


def test_the_zoo_listing_reads_files_only():
    code = ("import sys; from apps import zoo; t = zoo.zoo_table(); zoo.ood_table(); "
            "print(len(t), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"


def test_home_shows_the_card_picked():
    import models

    at = AppTest.from_file(APP, default_timeout=60).run()
    names = models.zoo_names()
    picker = at.selectbox(key="home_card")
    assert list(picker.options) == names
    last = names[-1]
    at = picker.select(last).run()
    first_line = (models.resolve(last) / "card.md").read_text().strip().splitlines()[0]
    assert any(first_line in m.value for m in at.markdown), f"the card of {last} is not shown"
