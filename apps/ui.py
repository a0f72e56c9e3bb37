"""Streamlit helpers shared by the explorer's pages: checked input fields, error messages
instead of tracebacks, the step slider, the family's page hooks and CSV downloads. The model a
page shows (picking, folder checks, the model cache) is in ``apps.model_pick``.

Every number field and text field is checked here, not clamped or cut by the widget: a value
out of its range (typed, or arriving by a deep link such as ``?model=reasoner&steps=4``) is
refused with a message naming the field and its allowed range.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import threading
from contextlib import contextmanager

import pandas as pd
import streamlit as st
import torch
from threadpoolctl import threadpool_limits

from apps.picker import view_picker  # noqa: F401 - the pages call it as ui.view_picker

ROOT_ENV = "WORKBENCH_MODELS_ROOT"
MAX_PATH_CHARS = 4096
SEED_MAX = 2**32 - 1  # seeds: 0..SEED_MAX (what numpy's and torch's generators take everywhere)


_THREADS_SET = False


def setup_threads() -> None:
    """Small models and small matrices run fastest on one thread (torch and BLAS alike; a
    multi-threaded BLAS on a busy CPU can take seconds for a 100 x 400 SVD).
    WORKBENCH_THREADS overrides."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import sklearn.decomposition  # noqa: F401 - loads scipy's own BLAS, so the limit below reaches it too

    n = int(os.environ.get("WORKBENCH_THREADS", "1"))
    torch.set_num_threads(n)
    threadpool_limits(limits=n)  # process-wide, not a context manager here
    _THREADS_SET = True


# ------------------------------------------------------------------ the entry script
_ENTRY = threading.local()


@contextmanager
def entry():
    """``apps/explorer.py`` runs the chosen page inside this block (after its page setup)."""
    _ENTRY.active = True
    try:
        yield
    finally:
        _ENTRY.active = False


def through_explorer() -> None:
    """The first call of every page: make sure ``apps/explorer.py`` ran first.

    ``apps/pages/`` sits next to the entry script, so Streamlit starts in its older pages-folder
    mode and runs a page's file directly when the first request of a server (or of a test
    session) opens that page's URL (``/reasoner?model=...``): the entry script's page setup,
    threads and error guard would be skipped. The explorer's ``st.navigation`` turns that mode
    off; here a page reached without the entry script turns it off too and reruns, so the
    entry script runs and opens the same page with the same query parameters.
    """
    if getattr(_ENTRY, "active", False):
        return
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:  # not when a page file is itself the main script
        PagesManager.uses_pages_directory = False
        st.rerun()


# ------------------------------------------------------------ messages, not tracebacks
class Refused(Exception):
    """An input was refused; its message is already on the page."""


_STATE = threading.local()  # each Streamlit session runs its script in a thread of its own


def error_text(e: Exception) -> str:
    """The message a page shows for an exception: its text, with the type for unexpected ones.

    A list announced with nothing after it ("closest fired hooks: ") is dropped, not shown empty."""
    if isinstance(e, (ValueError, KeyError)):
        text = str(e).strip("'\"") if isinstance(e, KeyError) else str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return re.sub(r"[;,]?\s*closest fired hooks:\s*$", "", text)


_MARKUP = re.compile(r"([\\*`$~<])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def plain(text: str) -> str:
    """``text`` escaped for Streamlit's Markdown, so a message shows exactly as written.

    Globs and code (``steps.*.hook_z``, ``$x``, ``<pad>``) would otherwise turn into italics, maths
    or HTML; an underscore is escaped where it could start or end emphasis (``_x``), not inside
    a name (``hook_resid_pre`` stays as it is).
    """
    return _MARKUP.sub(lambda m: "\\" + m.group(0), str(text))


def error(text: str, where=None) -> None:
    """An error message on the page, shown as written (see ``plain``)."""
    (where or st).error(plain(text))


@contextmanager
def guard(what: str = ""):
    """Show any error raised inside the block as a message on the page, never a traceback.

    The rest of the block is skipped; the page continues after it.
    """
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    except Refused:
        pass  # the refused field already says why
    except Exception as e:  # noqa: BLE001 - Streamlit's stop / rerun are BaseExceptions and pass through
        error(f"{what}: {error_text(e)}" if what else error_text(e))
    finally:
        _STATE.depth -= 1


def need(*values) -> None:
    """Go no further when a field was refused (``None``): inside ``guard`` only its block is
    skipped, elsewhere the page stops. The field's message is already on the page."""
    if any(v is None for v in values):
        if getattr(_STATE, "depth", 0):
            raise Refused()
        st.stop()


# ------------------------------------------------------------------ checked fields
def _as_int(value) -> int | None:
    """A whole number from an int, an integral float or a short decimal string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and len(value.strip()) <= 40:
        try:
            return int(value.strip())
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                return None
            return int(f) if f.is_integer() else None
    return None


def check_int(value, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo..hi``; ``ValueError`` names the field and the range otherwise."""
    number = _as_int(value)
    if number is None:
        shown = repr(value) if len(repr(value)) <= 42 else repr(value)[:40] + "…"
        raise ValueError(f"{name}: {shown} is not a whole number; allowed {lo}..{hi}")
    if not lo <= number <= hi:
        raise ValueError(f"{name}: {number} is out of range; allowed {lo}..{hi}")
    return number


def check_length(text: str, name: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters; ``ValueError`` names the field otherwise."""
    if len(text) > limit:
        raise ValueError(f"{name}: the text has {len(text):,} characters; at most {limit:,} are accepted")
    return text


def _query_int(key: str, query: str | None, name: str, lo: int, hi: int, where) -> None:
    """Seed a number field from the page's ``?query=`` parameter (first run only), refusing bad values."""
    if query is None or key in st.session_state or query not in st.query_params:
        return
    raw = st.query_params[query]
    try:
        st.session_state[key] = check_int(raw, name, lo, hi)
    except ValueError as e:
        error(f"The link's ?{query}={raw[:40]} is refused, so the field shows its default. {e}", where)
        del st.query_params[query]


def to_link(key: str, query: str) -> None:
    """A widget's ``on_change``: its new value into the page's link as ``?<query>=<value>``."""
    st.query_params[query] = str(st.session_state[key])


def number(label: str, *, key: str, lo: int, hi: int, value: int, where=None, query: str | None = None,
           help: str | None = None, step: int = 1) -> int | None:
    """An integer field allowed ``lo..hi``: its value, or ``None`` after a message under it.

    The widget itself has no bounds (it would silently keep the old value); the range is
    checked here and shown in the help. ``query`` names the page's deep-link parameter that
    sets the field's first value (``?steps=4``) and follows its later edits.
    """
    where = where or st
    _query_int(key, query, label, lo, hi, where)
    bounds = f"allowed {lo}..{hi}"
    x = where.number_input(label, value=int(value), step=step, key=key, help=f"{help}; {bounds}" if help else bounds,
                           on_change=to_link if query else None, args=(key, query) if query else None)
    try:
        return check_int(x, label, lo, hi)
    except ValueError as e:
        error(str(e), where)
        return None


def text(label: str, *, limit: int, where=None, area: bool = False, **kwargs) -> str | None:
    """A text field of at most ``limit`` characters: its text, or ``None`` after a message under it.

    The box holds one character more than the limit, so a paste that is too long is refused
    with a message instead of being cut silently at the limit.
    """
    where = where or st
    widget = where.text_area if area else where.text_input
    value = widget(label, max_chars=limit + 1, **kwargs) or ""
    try:
        return check_length(value, label, limit)
    except ValueError as e:
        error(f"{e}: shorten it", where)
        return None


def option(o, *, prefix: str, family: str, where=None):
    """The field of a study's option (``probes.study.Option``): its value, or ``None`` after a message.

    Its widget key is ``<prefix>_<key>`` (``probe_per_problem``), with the family appended when
    the option says its default differs between families (``codebook_k_act``)."""
    key = f"{prefix}_{o.flag}" + (f"_{family}" if o.per_family else "")
    if o.text:
        return text(o.label, where=where, limit=o.text, value=str(o.default), key=key, help=o.help or None)
    return number(o.label, where=where, lo=o.lo, hi=o.hi, value=o.default, key=key, query=o.query,
                  help=o.help or None)


def query_names(*names: str) -> None:
    """Warn about deep-link parameters the page does not take (a misspelt ``?step=`` is not ignored silently)."""
    allowed = ("model",) + names
    unknown = [q for q in st.query_params if q not in allowed]
    if unknown:
        st.warning(plain(f"This page ignores the link's {', '.join(f'?{q}=' for q in unknown)}: it takes "
                   f"{', '.join(f'?{q}=' for q in allowed)}"))


# ------------------------------------------------------------------------- misc
def download_csv(df: pd.DataFrame, filename: str, key: str, label: str = "Download CSV") -> None:
    st.download_button(label, df.to_csv(index=False).encode(), file_name=filename, mime="text/csv", key=key)


def int_list(text: str, name: str) -> list[int]:
    """Comma-separated integers from a text field; ``ValueError`` names the field."""
    try:
        values = [int(v) for v in text.replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a list of integers like '0, 10, 40'") from None
    if not values:
        raise ValueError(f"{name} is empty: enter integers like '0, 10, 40'")
    return values


# ------------------------------------------------------------------- loop steps
def _seed_from_link(key: str, query: str, name: str, lo: int, hi: int) -> None:
    """Set a widget's first value from the page's ``?query=`` (first run only); refuse bad values."""
    if key in st.session_state or query not in st.query_params:
        return
    raw = st.query_params[query]
    try:
        st.session_state[key] = check_int(raw, name, lo, hi)
    except ValueError as e:
        error(f"The link's ?{query}={raw[:40]} is refused, so the slider shows its default. {e}")
        del st.query_params[query]


def step_slider(label: str, steps: int, *, key: str, query: str = "step", value: int = 0, where=None,
                help: str | None = None) -> int:
    """A slider over the loop steps ``0..steps - 1``; its value follows the page's ``?step=``.

    A link's step out of range is refused with a message naming the range (the slider shows
    ``value``); when the number of steps shrinks under the chosen one, the slider moves to
    the last step. With a single step there is nothing to slide: a caption says so.
    """
    where = where or st
    if steps < 1:
        raise ValueError(f"{label}: there are no steps to show")
    last = steps - 1
    _seed_from_link(key, query, label, 0, last)
    if last == 0:
        where.caption(f"{label}: 0 (the only step)")
        return 0
    if key not in st.session_state:
        st.session_state[key] = min(max(int(value), 0), last)
    elif not 0 <= int(st.session_state[key]) <= last:
        st.session_state[key] = last
    bounds = f"steps 0..{last}; the link's ?{query}= sets it"
    t = where.slider(label, 0, last, key=key, help=f"{help}; {bounds}" if help else bounds,
                     on_change=to_link, args=(key, query))
    return int(t)


def play_toggle(key: str, label: str = "Play through the steps", where=None) -> bool:
    """A switch between the figure at the chosen step and an animation of every step (with a play button)."""
    return bool((where or st).toggle(label, key=key, help="an animated figure: press play, or drag its slider"))


def family_hook(family: str, name: str, package: str = "apps.views"):
    """The function ``name`` of the family's module in ``package`` (``apps.views.reasoner.patching_inputs``),
    or None where the family has no such module or function: pages ask, never branch on names."""
    module = f"{package}.{family.replace('-', '_')}"
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), name, None)
