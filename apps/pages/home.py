"""Home: the zoo (every shipped model with its card's headline, linked to its page, and the model
cards), the headline metrics as a figure, and the reasoners' OOD figure: one view at a time
(``?home_view=``), the zoo first. The zoo view draws no Plotly figure, so the first page a user
sees does not wait for the server to build figures; the browser loads Plotly's code while it draws
the zoo, for the figure views.

Home reads the zoo's files only (``config.json``, ``metrics.json``, ``card.md``): it imports
neither torch nor the models (nor ``apps.ui``, which imports torch, unless another page has
loaded it already), so the explorer opens in seconds. The zoo's table and figures are cached
until a file of the zoo changes. Once Home has run, a background thread builds Home's figures
(the first click on a figure view finds them cached), then imports what the model pages need
(torch, TransformerLens, scikit-learn), so the first model page opened afterwards does not wait
for them; each of its steps waits for a pause in which no script runs.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

import models
from apps import background, zoo
from apps.picker import view_picker
from models import registry

PAGES = Path(__file__).parent  # a family with a file here has a page of its own, at /<family>
ROW_PX, HEADER_PX = 66, 36  # the zoo table's rows (tall enough to wrap a headline in three lines) and header
MODEL_PX, HEADLINE_PX = 200, 330  # its first columns, in px: both in view in a 1000 px wide window


def _through_explorer() -> None:
    """The entry script first, also on a direct link (``apps.ui.through_explorer``, without its imports)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def page_link(name: str) -> str | None:
    """The deep link of the page that opens a zoo model (``/reasoner?model=reasoner-deep``): its
    family's page, else the Dynamics page for a family with a loop (the GRU baselines); None for none."""
    try:
        family = zoo.family_of(name)
        looped = family in registry.families() and bool(registry.get(family).dynamics)
    except Exception:  # noqa: BLE001 - an unreadable entry: its row says why, it has no page
        return None
    page = family if (PAGES / f"{family}.py").is_file() else "dynamics" if looped else None
    return f"/{page}?{urlencode({'model': name})}" if page and (PAGES / f"{page}.py").is_file() else None


def _stamp() -> tuple:
    """What the zoo's listing depends on: every entry's files and their modification times."""
    out = [str(models.ZOO)]
    for name in models.zoo_names():
        for f in ("config.json", "metrics.json", "card.md"):
            p = models.ZOO / name / f
            out.append((name, f, p.stat().st_mtime_ns if p.is_file() else 0))
    return tuple(out)


@st.cache_data(max_entries=4, show_spinner=False)
def _zoo(stamp: tuple):
    """The zoo's table; built without Plotly, which only the figure views import."""
    return zoo.zoo_table()


@st.cache_data(max_entries=4, show_spinner=False)
def _headline(stamp: tuple):
    from apps.views.home import headline_figure

    table = _zoo(stamp)
    return headline_figure(table) if table["value"].notna().any() else None


@st.cache_data(max_entries=4, show_spinner=False)
def _ood(stamp: tuple):
    """(whether any reasoner is shipped, its OOD figure or None)."""
    from apps.views.reasoner import ood_figure

    reasoners = zoo.names_of("reasoner")
    ood = zoo.ood_table(reasoners)
    return bool(reasoners), None if ood.empty else ood_figure(ood, train_n=zoo.training_size(reasoners))


@st.cache_resource(show_spinner=False)
def _plotly_preload() -> str | None:
    """A module script that has the browser load Streamlit's Plotly chart code (a 4.7 MB chunk) as
    it draws the zoo, so the first figure view opened from Home does not wait a second for it; None
    where this Streamlit has no such chunk. Not deferred to an idle moment: a click right after the
    page appears would come first and wait for the chunk again. It is imported from the URL
    Streamlit itself imports it from, so the browser evaluates it once."""
    import re

    js = Path(st.__file__).parent / "static" / "static" / "js"
    chunks = sorted(p.name for p in js.glob("PlotlyChart.*.js") if re.fullmatch(r"[\w.-]+", p.name))
    if len(chunks) != 1:
        return None
    return ("<script type=\"module\">const index = document.querySelector('script[type=\"module\"][src*=\"/index.\"]');"
            f"if (index) import(new URL('./{chunks[0]}', index.src)).catch(() => {{}});</script>")


WARM_UP_DELAY_S = 4.0  # after Home's figures, before the heavy imports: the browser draws Home first
QUIET_S = 1.5  # no script for this long before each heavy import starts
HEAVY = ("torch", "sklearn.decomposition", "transformer_lens")  # what the model pages import


@st.cache_resource(show_spinner=False)
def _warm_up() -> threading.Thread:
    """Once per server, in the background and only between scripts: Home's own figures built (the
    first click on a figure view finds them cached), then the model pages' heavy packages imported."""
    steps = [(0.2, lambda: (_headline(_stamp()), _ood(_stamp()))), (0.0, lambda: time.sleep(WARM_UP_DELAY_S))]
    steps += [(QUIET_S, functools.partial(importlib.import_module, module)) for module in HEAVY]
    return background.run_between_scripts(steps, name="explorer-warm-up")


class _Guard:
    """Show an error raised inside the block as a message, never a traceback (``apps.ui.guard``)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is not None and issubclass(kind, Exception):  # Streamlit's stop / rerun pass through
            st.error(f"{self.what}: {e}" if isinstance(e, ValueError) else f"{self.what}: {kind.__name__}: {e}")
            return True
        return False


_ui = sys.modules.get("apps.ui")  # loaded once another page ran: then Home goes through it as every page does
if _ui is not None:
    _ui.through_explorer()  # the entry script first, also on a direct link
    guard = _ui.guard
else:
    _through_explorer()
    guard = _Guard

st.title("Loop workbench")
st.caption("Hooked, trained looped models and the tools to look inside every step. Pick a page on the left: "
           "one per model family, one per analysis.")

VIEWS = ["Zoo", "Headline metrics", "OOD generalisation"]
unknown = [q for q in st.query_params if q not in ("model", "home_view")]
if unknown:  # as apps.ui.query_names: a misspelt parameter is not ignored silently
    st.warning(f"This page ignores the link's {', '.join(f'?{q}=' for q in unknown)}: it takes ?home_view=")
view = view_picker(VIEWS, "home_view")

if view == "Zoo":
    with guard("The zoo"):
        st.subheader("The zoo")
        table = _zoo(_stamp())
        if table.empty:
            st.info("The zoo is empty: train a model, e.g. `workbench train reasoner --preset quick --out "
                    "models/zoo/<name>`.")
        else:
            links = [page_link(name) for name in table["model"]]
            table = table.assign(page=links)
            # the model's name is the link to its page; a row without one (an unreadable entry) shows the name apart
            shown = (["page"] if all(links) else ["model", "page"]) + ["headline", "value", "seed_mean", "spread",
                                                                        "seeds", "metric", "family"]
            # rows tall enough for a headline to wrap (the grid wraps text only in rows over 64 px)
            st.dataframe(table, hide_index=True, row_height=ROW_PX, height=HEADER_PX + ROW_PX * len(table) + 3,
                         column_order=shown, column_config={
                             "model": st.column_config.TextColumn("model", width=MODEL_PX, pinned=True),
                             "page": st.column_config.LinkColumn(
                                 "model" if all(links) else "page", display_text=r"model=([^&]+)", width=MODEL_PX,
                                 pinned=True, help="opens the model's page on this model"),
                             "headline": st.column_config.TextColumn("headline (model card)", width=HEADLINE_PX),
                             "value": st.column_config.NumberColumn("value", format="%.4g"),
                             "seed_mean": st.column_config.NumberColumn(
                                 "mean over seeds", format="%.4g",
                                 help="the headline metric's mean over training seeds"),
                             "spread": st.column_config.NumberColumn(
                                 "± sd", format="%.2g", help="standard deviation over training seeds, where measured"),
                             "seeds": st.column_config.NumberColumn("seeds", format="%d")})

    with guard("The model cards"):
        st.subheader("Model cards")
        names = models.zoo_names()
        # one card at a time: a dozen cards drawn at once (even in closed expanders) cost the page seconds
        name = st.selectbox("Model card", names, key="home_card", help="the zoo entry whose card to show") \
            if names else None
        if name is not None:
            with guard(f"The card of {name}"):  # an unreadable card is one message
                card = models.resolve(name) / "card.md"
                st.markdown(card.read_text() if card.is_file() else "(no card yet: the model is still being trained)")
    preload = _plotly_preload()
    if preload:
        st.html(preload, unsafe_allow_javascript=True)

elif view == "Headline metrics":
    with guard("The headline metrics"):
        headline = _headline(_stamp())
        if headline is None:
            st.info("No model in the zoo has a headline number yet.")
        else:
            st.plotly_chart(headline, key="headline")

else:
    with guard("The OOD table"):
        st.subheader("Out-of-distribution generalisation (reasoners)")
        any_reasoner, ood = _ood(_stamp())
        if ood is None:
            st.info("No reasoner in the zoo has an OOD table yet"
                    + ("" if any_reasoner else " (no reasoner is shipped yet)")
                    + ": `workbench eval reasoner --update-zoo` measures fully solved vs number of nodes and stores it.")
        else:
            st.plotly_chart(ood, key="ood")

_warm_up()
