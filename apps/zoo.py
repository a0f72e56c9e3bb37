"""The zoo as the explorer sees it: model families, headline metrics and OOD tables.

A model's family is the registry's (``models.registry``) family of the ``class`` field of its
``config.json``, so listing the zoo never loads a model. ``FAMILIES`` (family -> its classes),
``LABELS`` (family -> its name on screen) and ``ANALYSIS_FAMILIES`` (the families the analysis
pages cover: those with a study) are read from the registry whenever they are used, so a family
registered later shows up. Pure functions (no Streamlit): the pages and the tests share them.
Only the zoo's files are read (torch is not imported), so Home lists the zoo in a fraction of a
second. An unreadable zoo entry never breaks a listing: ``zoo_table`` shows it as a row saying what is
wrong, ``names_of`` and ``ood_table`` leave it out.

>>> family_of("models/zoo/act-parity")        # 'act'
>>> names_of("warp")                          # ['warp-digits', 'warp-lv', 'warp-msd', ...]
>>> zoo_table()                               # one row per shipped model: family, headline, metric, value
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd

import models
from models import registry
from workbench import files


def __getattr__(name: str):
    if name == "FAMILIES":  # family -> the model classes (config.json "class") that belong to it
        return {n: f.classes for n, f in registry.families().items()}
    if name == "LABELS":
        return {n: f.label for n, f in registry.families().items()}
    if name == "ANALYSIS_FAMILIES":  # the families the analysis pages (patching, probing, codebook) cover
        return registry.names(analysed=True)
    raise AttributeError(f"module 'apps.zoo' has no attribute {name!r}")


def read_config(folder: str | Path) -> dict:
    """``config.json`` with its ``class`` (a string) and ``config`` (an object); ``CheckpointError``
    otherwise (as ``workbench.checkpoints.read_config``, without importing torch)."""
    path = Path(folder) / files.CONFIG
    config = files.read_json_object(path)
    if not isinstance(config.get("class"), str) or not isinstance(config.get("config"), dict):
        raise files.CheckpointError(f"{path}: needs 'class' (a string) and 'config' (an object); "
                                    f"found keys {sorted(config)}")
    return config


def class_of(folder: str | Path) -> str:
    """The ``class`` field of a checkpoint's config.json (``CheckpointError`` if unreadable or malformed)."""
    return read_config(folder)["class"]


def config_of(name_or_path: str | Path) -> dict:
    """The constructor arguments stored in a checkpoint's config.json (without loading the model)."""
    return read_config(models.resolve(name_or_path))["config"]


def family_of(name_or_path: str | Path) -> str:
    """The family of a zoo name or checkpoint folder; ``'other'`` for classes of no family."""
    family = registry.family_of_class(class_of(models.resolve(name_or_path)))
    return family.name if family else "other"


def label(family: str) -> str:
    """A family's name on screen (the name itself for one the registry does not know)."""
    known = registry.families().get(family)
    return known.label if known else family


def names_of(*families: str) -> list[str]:
    """Zoo names whose family is one of ``families`` (sorted; unreadable entries skipped)."""
    known = registry.names()
    unknown = [f for f in families if f not in known]
    if unknown:
        raise ValueError(f"unknown model family {unknown}; allowed: {', '.join(known)}")
    out = []
    for name in models.zoo_names():
        try:
            if family_of(name) in families:
                out.append(name)
        except Exception:  # noqa: BLE001 - unreadable (or being written): the home page's table says why
            continue
    return out


def headline(name_or_path: str | Path) -> dict:
    """The card's headline line and the metrics' headline number of one checkpoint.

    Returns ``{"headline": str, "metric": str, "value": float | None, "seed_mean": float | None,
    "spread": float | None, "seeds": int | None}``; missing parts are empty (a checkpoint still
    training has no card). ``value`` is this checkpoint's; ``seed_mean``, ``spread`` and
    ``seeds`` are the mean and sample standard deviation of the headline metric over training
    seeds and their number, where the metrics store a ``seeds`` comparison of that metric
    (``{"metric": ..., "values": [...]}``).
    """
    folder = models.resolve(name_or_path)
    line = ""
    card = folder / "card.md"
    if card.is_file():
        try:
            line = next((ln[2:].strip() for ln in card.read_text().splitlines() if ln.startswith("> ")), "")
        except (OSError, UnicodeDecodeError) as e:
            raise files.CheckpointError(f"{card}: unreadable ({e})") from e
    metrics = files.load_metrics(folder)
    head = metrics.get("headline", {})
    metric, value = "", None
    if isinstance(head, dict) and "metric" in head and "value" in head:
        if _is_number(head["value"]):
            metric, value = str(head["metric"]), float(head["value"])
    elif isinstance(head, dict):  # several headline numbers (the gain circuit): show the first
        numbers = [(k, v) for k, v in head.items() if _is_number(v)]
        if numbers:
            metric, value = str(numbers[0][0]), float(numbers[0][1])
    mean, spread, seeds = seed_spread(metrics.get("seeds"), metric)
    return {"headline": line, "metric": metric, "value": value, "seed_mean": mean, "spread": spread, "seeds": seeds}


def seed_spread(seeds, metric: str) -> tuple[float | None, float | None, int | None]:
    """(mean, sample standard deviation, number of seeds) of ``metric`` in a metrics file's
    ``seeds`` part, or Nones where it holds no such comparison (or fewer than two numbers)."""
    if not isinstance(seeds, dict) or seeds.get("metric") != metric or not metric:
        return None, None, None
    values = [float(v) for v in seeds.get("values", []) if _is_number(v)]
    if len(values) < 2:
        return None, None, None
    return statistics.mean(values), statistics.stdev(values), len(values)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def zoo_table() -> pd.DataFrame:
    """One row per zoo model: model, family, headline (card line), metric, value, and the mean and
    spread over training seeds where measured (``seed_mean``, ``spread``, ``seeds``; see ``headline``)."""
    rows = []
    for name in models.zoo_names():
        try:
            cls = class_of(models.resolve(name))
            if cls not in models.CLASSES:
                raise files.CheckpointError(f"model class {cls!r} is not one the workbench opens")
            fam = family_of(name)
            rows.append({"model": name, "family": label(fam), **headline(name)})
        except Exception as e:  # noqa: BLE001 - one bad entry is one row saying what is wrong
            rows.append({"model": name, "family": "?", "headline": f"unreadable: {e}", "metric": "", "value": None})
    return pd.DataFrame(rows, columns=ZOO_COLUMNS)


ZOO_COLUMNS = ["model", "family", "headline", "metric", "value", "seed_mean", "spread", "seeds"]


def ood_table(names: list[str] | None = None) -> pd.DataFrame:
    """The reasoners' OOD tables (``metrics.json["ood"]``) as tidy rows with a ``model`` column.

    Columns: model, n_nodes, fully_solved (and node_acc, max_steps, n where stored). Empty
    when no reasoner has an OOD table yet.
    """
    frames = []
    for name in names if names is not None else names_of("reasoner"):
        try:
            ood = files.load_metrics(models.resolve(name)).get("ood")
            frame = pd.DataFrame(ood) if ood else None
            if frame is not None and not {"n_nodes", "fully_solved"} <= set(frame.columns):
                frame = None
        except Exception:  # noqa: BLE001 - a malformed table is left out, as a missing one
            frame = None
        if frame is not None:
            frames.append(frame.assign(model=name))
    if not frames:
        return pd.DataFrame(columns=["model", "n_nodes", "fully_solved"])
    return pd.concat(frames, ignore_index=True)


def training_size(names: list[str]) -> int | None:
    """The training graph size of the first reasoner in ``names`` (for the OOD figure's marker)."""
    for name in names:
        try:
            n = int(getattr(registry.task_of(name), "n_nodes", 0) or 0)
        except Exception:  # noqa: BLE001 - no usable size in this config: try the next
            continue
        if n:
            return n
    return None
