"""Streamlit helpers shared by the explorer's pages: the model picker, the model cache,
error messages instead of tracebacks, and CSV downloads.

Models load once per process (``st.cache_resource``), keyed by the checkpoint folder and
the time its weights were written, so a checkpoint saved again at the same path reloads.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from threadpoolctl import threadpool_limits

import models
from apps import zoo
from workbench import checkpoints

FOLDER = "a checkpoint folder…"
# the model each family's pages open on when the zoo has it
FLAGSHIPS = {"reasoner": "reasoner", "act": "act-parity", "warp": "warp-phys-msd", "gain": "gain-v1"}


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


@dataclass
class Picked:
    """A model chosen on a page: its zoo name or folder, a cache key, its family and the model."""

    name: str
    key: str
    family: str
    model: torch.nn.Module


def stamp(folder: Path) -> int:
    weights = folder / checkpoints.WEIGHTS
    return weights.stat().st_mtime_ns if weights.is_file() else 0


@st.cache_resource(show_spinner="Loading the model…", max_entries=24)
def _load(folder: str, mtime: int) -> torch.nn.Module:
    setup_threads()
    return models.load(folder)


def load(name_or_path: str) -> tuple[torch.nn.Module, str]:
    """(model, cache key) for a zoo name or checkpoint folder, loaded once per process."""
    folder = models.resolve(name_or_path).resolve()
    mtime = stamp(folder)
    return _load(str(folder), mtime), f"{folder}@{mtime}"


def _ordered(names: list[str], families: tuple[str, ...], prefer: list[str] | None) -> list[str]:
    first = [n for n in (prefer or []) + [FLAGSHIPS.get(f, "") for f in families] if n in names]
    return list(dict.fromkeys(first + names))


def pick_model(families: tuple[str, ...], key: str, label: str = "Model",
               prefer: list[str] | None = None) -> Picked | None:
    """A model of one of ``families``: a zoo entry or a typed checkpoint folder.

    The page's ``?model=`` query parameter (a zoo name or a folder) chooses the first
    selection. Returns None (after a message on the page) when nothing usable is chosen.
    """
    names = _ordered(zoo.names_of(*families), families, prefer)
    kinds = " or ".join(zoo.LABELS[f] for f in families)
    choice_key, path_key = f"{key}_choice", f"{key}_path"
    query = st.query_params.get("model")
    if choice_key not in st.session_state and query:
        if query in names:
            st.session_state[choice_key] = query
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
        name = st.text_input("Checkpoint folder", key=path_key, placeholder="runs/my-model").strip()
        if not name:
            st.info("Type the path of a checkpoint folder (with config.json and model.safetensors).")
            return None
    try:
        family = zoo.family_of(name)
        if family not in families:
            raise ValueError(f"{name!r} holds a model of the family {zoo.LABELS.get(family, family)} "
                             f"({zoo.class_of(models.resolve(name))}); this page shows {kinds} models")
        model, cache_key = load(name)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError
        st.error(f"Cannot open the model: {e}")
        return None
    return Picked(name, cache_key, family, model)


def error_text(e: Exception) -> str:
    """The message a page shows for an exception: its text, with the type for unexpected ones."""
    if isinstance(e, (ValueError, KeyError)):
        return str(e).strip("'\"") if isinstance(e, KeyError) else str(e)
    return f"{type(e).__name__}: {e}"


@contextmanager
def guard(what: str = ""):
    """Show any error raised inside the block as a message on the page, never a traceback.

    The rest of the block is skipped; the page continues after it.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - Streamlit's stop / rerun are BaseExceptions and pass through
        st.error(f"{what}: {error_text(e)}" if what else error_text(e))


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
