"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` + ``metrics.json``.

``config.json`` names the model class (``"models.reasoner.Reasoner"``) and holds every
constructor argument; the class must offer ``config_dict()`` and ``from_config(dict)``.
A class is built only if the caller's allow-list names it (``models.load`` passes the
family registry's classes): nothing named in a file is ever imported.

A checkpoint is written as one unit (``workbench.files.write_unit``): after a kill at any
moment the folder holds one complete step, never a mix of two.

>>> save("runs/r1", model, metrics={"fully_solved": 0.99})
>>> model = load("runs/r1", classes=allow(Reasoner))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import (COMMIT, CONFIG, METRICS, PENDING, WEIGHTS, CheckpointError, as_saved, atomic_write, dump_json,
                    load_metrics, read_json, read_json_object, recover, write_json, write_unit)

# the file helpers are part of this module's API too (older callers use checkpoints.write_json etc.)
__all__ = ["COMMIT", "CONFIG", "METRICS", "PENDING", "WEIGHTS", "CheckpointError", "ClassTable", "allow", "as_saved",
           "atomic_write", "build", "class_path", "dump_json", "load", "load_metrics", "load_weights",
           "read_config", "read_json", "read_json_object", "read_safetensors", "recover", "save", "write_json",
           "write_unit"]

# class path as written in config.json -> a function returning the class (so an allow-list
# can name classes without importing every family up front)
ClassTable = Mapping[str, Callable[[], type]]


# ------------------------------------------------------------------ models
def class_path(model_or_class: torch.nn.Module | type) -> str:
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    return f"{cls.__module__}.{cls.__qualname__}"


def allow(*classes: type) -> dict[str, Callable[[], type]]:
    """An allow-list of already imported classes, for ``build`` and ``load``."""
    return {class_path(c): (lambda c=c: c) for c in classes}


def save(folder: str | Path, model: torch.nn.Module, metrics: dict | None = None, extra: dict | None = None,
         more: Mapping[str, Callable[[str], None]] | None = None) -> None:
    """Write weights, config, metrics (and ``more`` files, e.g. the training state) as one unit."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"class": class_path(model), "config": model.config_dict(), **(extra or {})}
    files: dict[str, Callable[[str], None]] = {
        WEIGHTS: lambda p: save_file(state, p),
        CONFIG: lambda p: dump_json(p, config),
    }
    if metrics is not None:
        files[METRICS] = lambda p: dump_json(p, metrics)
    files.update(more or {})
    write_unit(folder, files)


def read_config(folder: str | Path) -> dict:
    """``config.json`` checked for its two keys: ``class`` (a string) and ``config`` (an object)."""
    cfg_path = Path(folder) / CONFIG
    config = read_json_object(cfg_path)
    if not isinstance(config.get("class"), str) or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"{cfg_path}: needs 'class' (a string) and 'config' (an object); "
                              f"found keys {sorted(config)}")
    return config


def build(folder: str | Path, classes: ClassTable) -> torch.nn.Module:
    """The model described by ``config.json``, with fresh weights; its class must be in ``classes``."""
    cfg_path = Path(folder) / CONFIG
    config = read_config(folder)
    name = config["class"]
    if name not in classes:
        raise CheckpointError(f"{cfg_path}: model class {name!r} is not allowed; allowed: {', '.join(sorted(classes))}")
    cls = classes[name]()
    try:
        return cls.from_config(config["config"])
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, MemoryError) as e:
        raise CheckpointError(f"{cfg_path}: config does not build {name}: {e}") from e


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``model``; every mismatch (names, shapes, dtypes, non-finite
    values) is reported with the file."""
    path = Path(path)
    state = read_safetensors(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shared = [k for k in own if k in state]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in shared if state[k].shape != own[k].shape]
    dtypes = [f"{k}: file {state[k].dtype} vs model {own[k].dtype}" for k in shared if state[k].dtype != own[k].dtype]
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    if shapes:
        parts.append("shape mismatch " + "; ".join(shapes[:5]))
    if dtypes:
        parts.append("dtype mismatch " + "; ".join(dtypes[:5]))
    if parts:
        raise CheckpointError(f"{path}: does not match {class_path(model)} ({', '.join(parts)})")
    bad = [k for k in shared if state[k].is_floating_point() and not torch.isfinite(state[k]).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN or inf) in {bad[:5]}{'...' if len(bad) > 5 else ''}")
    model.load_state_dict(state)


def load(folder: str | Path, classes: ClassTable, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the model from ``config.json``, load ``model.safetensors``, return it in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    recover(folder)
    model = build(folder, classes)
    load_weights(model, folder / WEIGHTS)
    return model.to(device).eval()
