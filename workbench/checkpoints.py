"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` + ``metrics.json``.

``config.json`` names the model class (``"models.reasoner.Reasoner"``) and holds every
constructor argument; the class must offer ``config_dict()`` and ``from_config(dict)``.
Every file is written atomically (temporary file in the same folder, then ``os.replace``),
so an interrupted write never leaves a half-written checkpoint behind.

>>> save("runs/r1", model, metrics={"fully_solved": 0.99})
>>> model = load("runs/r1")
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its model."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_jsonable)
            f.write("\n")

    atomic_write(path, write)


def as_saved(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists), for comparing with a saved file."""
    return json.loads(json.dumps(data, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from e


def class_path(model: torch.nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def save(folder: str | Path, model: torch.nn.Module, metrics: dict | None = None, extra: dict | None = None) -> None:
    """Write weights, then config, then metrics (each atomically)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp))
    write_json(folder / CONFIG, {"class": class_path(model), "config": model.config_dict(), **(extra or {})})
    if metrics is not None:
        write_json(folder / METRICS, metrics)


def _import_class(path: str, source: Path):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{source}: unknown model class {path!r} ({e})") from e


def build(folder: str | Path) -> torch.nn.Module:
    """The model described by ``config.json``, with fresh weights."""
    cfg_path = Path(folder) / CONFIG
    config = read_json(cfg_path)
    if "class" not in config or "config" not in config:
        raise CheckpointError(f"{cfg_path}: needs keys 'class' and 'config'; found {sorted(config)}")
    cls = _import_class(config["class"], cfg_path)
    try:
        return cls.from_config(config["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: config does not build {config['class']}: {e}") from e


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``model``; every mismatch is reported with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{path}: does not match {class_path(model)} ({', '.join(parts)})")
    model.load_state_dict(state)


def load(folder: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the model from ``config.json``, load ``model.safetensors``, return it in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    model = build(folder)
    load_weights(model, folder / WEIGHTS)
    return model.to(device).eval()


def load_metrics(folder: str | Path) -> dict:
    path = Path(folder) / METRICS
    return read_json(path) if path.is_file() else {}
