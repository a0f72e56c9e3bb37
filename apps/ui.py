"""Streamlit helpers shared by the explorer's pages: the model picker, the model cache, checked
input fields, error messages instead of tracebacks, and CSV downloads.

Models load once per process (``st.cache_resource``), keyed by the checkpoint folder and
the time its weights were written, so a checkpoint saved again at the same path reloads.

Which folders a page may open: the zoo's models always; a checkpoint folder elsewhere only
under the root named by the environment variable ``WORKBENCH_MODELS_ROOT`` when the app
starts (``WORKBENCH_MODELS_ROOT=runs streamlit run apps/explorer.py``; several roots are
separated by ``os.pathsep``). Without it, only zoo names are accepted.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st
import torch
from threadpoolctl import threadpool_limits

import models
from apps import zoo
from apps.picker import view_picker  # noqa: F401 - the pages call it as ui.view_picker
from models import registry
from workbench import checkpoints

FOLDER = "a checkpoint folder…"
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


def _to_link(key: str, query: str) -> None:
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
                           on_change=_to_link if query else None, args=(key, query) if query else None)
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


# --------------------------------------------------------------------- the model
@dataclass
class Picked:
    """A model chosen on a page: its zoo name or folder, a cache key, its family and the model."""

    name: str
    key: str
    family: str
    model: torch.nn.Module


def allowed_roots() -> list[Path]:
    """The folders named by ``WORKBENCH_MODELS_ROOT`` (symlinks and ``..`` resolved); none when unset."""
    raw = os.environ.get(ROOT_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def checked_folder(name_or_path: str) -> Path:
    """The checkpoint folder of a zoo name, or of a path under an allowed root; ``ValueError`` otherwise.

    A path is resolved (symlinks, ``..``, relative to the working directory) before it is
    compared with the roots, so no spelling reaches outside them.
    """
    text = str(name_or_path).strip()
    check_length(text, "Checkpoint folder", MAX_PATH_CHARS)
    if not text:
        raise ValueError("no model named: choose a zoo model or type a checkpoint folder")
    if "\x00" in text:
        raise ValueError("Checkpoint folder: the path contains a NUL character")
    if text in models.zoo_names():
        return models.ZOO / text
    path = Path(text).expanduser().resolve()
    roots = allowed_roots()
    if _inside(path, models.ZOO.resolve()) or any(_inside(path, r) for r in roots):
        return models.resolve(path)  # CheckpointError when it holds no checkpoint
    zoo_list = ", ".join(models.zoo_names()) or "(none)"
    if not roots:
        raise ValueError(f"{text!r} is not a zoo model ({zoo_list}), and checkpoint folders outside the zoo are "
                         f"off: start the app with {ROOT_ENV}=<folder> to open checkpoints under that folder")
    where = " or ".join(str(r) for r in roots)
    raise ValueError(f"{text!r} ({path}) is outside the allowed root {where}: only zoo models and checkpoint "
                     f"folders under it open here ({ROOT_ENV}, set when the app starts, names the root)")


def stamp(folder: Path) -> int:
    weights = folder / checkpoints.WEIGHTS
    return weights.stat().st_mtime_ns if weights.is_file() else 0


@st.cache_resource(show_spinner="Loading the model…", max_entries=24)
def _load(folder: str, mtime: int) -> torch.nn.Module:
    setup_threads()
    return models.load(folder)


def load(name_or_path: str) -> tuple[torch.nn.Module, str]:
    """(model, cache key) for a zoo name or checkpoint folder under an allowed root, loaded once per process."""
    folder = checked_folder(name_or_path).resolve()
    mtime = stamp(folder)
    return _load(str(folder), mtime), f"{folder}@{mtime}"


def _check(model, family: str) -> None:
    """What the family's pages read from the config, read once here: a bad config is a message.

    The family's adapter (``apps/adapters/<family>.py``, where it has one) says what it needs."""
    module = f"apps.adapters.{family.replace('-', '_')}"
    if importlib.util.find_spec(module) is not None:
        check = getattr(importlib.import_module(module), "check_model", None)
        if check is not None:
            check(model)


def family_hook(family: str, name: str, package: str = "apps.views"):
    """The function ``name`` of the family's module in ``package`` (``apps.views.reasoner.patching_inputs``),
    or None where the family has no such module or function: pages ask, never branch on names."""
    module = f"{package}.{family.replace('-', '_')}"
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), name, None)


def _ordered(names: list[str], families: tuple[str, ...], prefer: list[str] | None) -> list[str]:
    known = registry.families()
    flagships = [known[f].flagship for f in families if f in known]
    first = [n for n in (prefer or []) + flagships if n in names]
    return list(dict.fromkeys(first + names))


def _open(name: str, families: tuple[str, ...], kinds: str) -> Picked:
    folder = checked_folder(name)
    cls = zoo.class_of(folder)
    if cls not in models.CLASSES:
        raise checkpoints.CheckpointError(f"{name!r}: model class {cls!r} is not allowed; allowed: "
                                          f"{', '.join(sorted(models.CLASSES))}")
    family = zoo.family_of(folder)
    if family not in families:
        raise ValueError(f"{name!r} holds a model of the family {zoo.label(family)} ({cls}); "
                         f"this page shows {kinds} models")
    model, cache_key = load(name)
    _check(model, family)
    return Picked(name, cache_key, family, model)


def pick_model(families: tuple[str, ...], key: str, label: str = "Model",
               prefer: list[str] | None = None) -> Picked | None:
    """A model of one of ``families``: a zoo entry or a typed checkpoint folder.

    The page's ``?model=`` query parameter (a zoo name or a folder) chooses the first
    selection. Returns None (after a message on the page) when nothing usable is chosen;
    a checkpoint that cannot be read or built is such a message, never a traceback.
    """
    names = _ordered(zoo.names_of(*families), families, prefer)
    kinds = " or ".join(zoo.label(f) for f in families)
    choice_key, path_key = f"{key}_choice", f"{key}_path"
    query = st.query_params.get("model")
    if choice_key not in st.session_state and query:
        if query in names:
            st.session_state[choice_key] = query
        elif len(query) > MAX_PATH_CHARS:
            error(f"The link's ?model= has {len(query):,} characters; at most {MAX_PATH_CHARS:,} are accepted")
        else:
            st.session_state[choice_key], st.session_state[path_key] = FOLDER, query
    options = names + [FOLDER]
    if st.session_state.get(choice_key) not in options:
        st.session_state.pop(choice_key, None)
    choice = st.selectbox(label, options, key=choice_key,
                          help=f"a shipped {kinds} model, or a checkpoint folder written by "
                               "`workbench.checkpoints.save` or `workbench train`")
    if not names:
        st.info(f"No {kinds} model in the zoo yet (`models/zoo/`). Train one (see the README) or type a "
                "checkpoint folder below.")
    if choice != FOLDER:
        name = choice
    else:
        roots = allowed_roots()
        where = (f"under {' or '.join(str(r) for r in roots)} ({ROOT_ENV})" if roots else
                 f"none outside the zoo: start the app with {ROOT_ENV}=<folder> to allow one")
        name = text("Checkpoint folder", limit=MAX_PATH_CHARS, key=path_key, placeholder="runs/my-model",
                    help=f"a folder with config.json and model.safetensors; allowed: {where}")
        need(name)
        name = name.strip()
        if not name:
            st.info("Type the path of a checkpoint folder (with config.json and model.safetensors).")
            return None
    try:
        return _open(name, families, kinds)
    except Exception as e:  # noqa: BLE001 - whatever a checkpoint holds, the page shows a message
        error(f"Cannot open the model: {error_text(e)}")
        return None


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
                     on_change=_to_link, args=(key, query))
    return int(t)


def play_toggle(key: str, label: str = "Play through the steps", where=None) -> bool:
    """A switch between the figure at the chosen step and an animation of every step (with a play button)."""
    return bool((where or st).toggle(label, key=key, help="an animated figure: press play, or drag its slider"))


# ---------------------------------------------------------------------- compare
def pick_other(picked: Picked, key: str, label: str = "Compare with", query: str = "compare") -> Picked | None:
    """A second model of ``picked``'s family to show beside it on the same input.

    Offers the zoo's other models of the family; the page's ``?compare=`` chooses the first
    selection (a zoo name, or a checkpoint folder under an allowed root). A name the page
    cannot open is refused with a message naming the models it can, never a traceback.
    Returns None (after a message) when there is nothing to compare with.
    """
    names = [n for n in zoo.names_of(picked.family) if n != picked.name]
    extra_key = f"{key}_extra"
    raw = st.query_params.get(query)
    if key not in st.session_state and raw:
        if raw in names:
            st.session_state[key] = raw
        else:
            try:
                if raw not in models.zoo_names() and os.sep not in raw:
                    raise ValueError(f"{raw[:80]!r} is no model of the zoo (nor a checkpoint folder)")
                other = _open(raw, (picked.family,), zoo.label(picked.family))
            except Exception as e:  # noqa: BLE001 - a bad link is a message
                listed = ", ".join(names) or "none in the zoo"
                error(f"The link's ?{query}={raw[:80]} is refused: {error_text(e)}. "
                      f"Models to compare with: {listed}")
                del st.query_params[query]
            else:
                st.session_state[extra_key] = other.name
                st.session_state[key] = other.name
    extra = st.session_state.get(extra_key)
    options = names + ([extra] if extra and extra not in names and extra != picked.name else [])
    if not options:
        st.info(f"No other {zoo.label(picked.family)} model to compare with: the zoo holds only {picked.name}.")
        return None
    if st.session_state.get(key) not in options:
        st.session_state.pop(key, None)
    choice = st.selectbox(label, options, key=key, on_change=_to_link, args=(key, query),
                          help=f"another {zoo.label(picked.family)} model, run on the same input; "
                               f"the link's ?{query}= sets it")
    try:
        return _open(choice, (picked.family,), zoo.label(picked.family))
    except Exception as e:  # noqa: BLE001 - whatever a checkpoint holds, the page shows a message
        error(f"Cannot open the model to compare with: {error_text(e)}")
        return None
