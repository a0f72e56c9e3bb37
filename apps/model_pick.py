"""The model a page of the explorer shows: the picker, the folder checks and the model cache.

Models load once per process (``st.cache_resource``), keyed by the checkpoint folder and
the time its weights were written, so a checkpoint saved again at the same path reloads.

Which folders a page may open: the zoo's models always; a checkpoint folder elsewhere only
under the root named by the environment variable ``WORKBENCH_MODELS_ROOT`` when the app
starts (``WORKBENCH_MODELS_ROOT=runs streamlit run apps/explorer.py``; several roots are
separated by ``os.pathsep``). Without it, only zoo names are accepted.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

import models
from apps import zoo
from apps.ui import (MAX_PATH_CHARS, ROOT_ENV, check_length, error, error_text, need, setup_threads, text,
                     to_link)
from models import registry
from workbench import checkpoints

FOLDER = "a checkpoint folder…"  # the picker's last option: type a folder


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
    choice = st.selectbox(label, options, key=key, on_change=to_link, args=(key, query),
                          help=f"another {zoo.label(picked.family)} model, run on the same input; "
                               f"the link's ?{query}= sets it")
    try:
        return _open(choice, (picked.family,), zoo.label(picked.family))
    except Exception as e:  # noqa: BLE001 - whatever a checkpoint holds, the page shows a message
        error(f"Cannot open the model to compare with: {error_text(e)}")
        return None
