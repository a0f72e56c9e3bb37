"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` + ``metrics.json``.

``config.json`` names the model class (``"models.reasoner.Reasoner"``) and holds every
constructor argument; the class must offer ``config_dict()`` and ``from_config(dict)``.
A class is built only if the caller's allow-list names it (``models.load`` passes the
family registry's classes): nothing named in a file is ever imported.

A checkpoint is written as one unit: every file goes into ``<folder>/.pending/``, a
``COMMIT`` marker is written last, then the files are moved into place. Whoever opens the
folder next finishes a committed unit or drops an uncommitted one (``recover``), so after
a kill at any moment the folder holds one complete step, never a mix of two.

>>> save("runs/r1", model, metrics={"fully_solved": 0.99})
>>> model = load("runs/r1", classes=allow(Reasoner))
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"
PENDING, COMMIT = ".pending", "COMMIT"

# class path as written in config.json -> a function returning the class (so an allow-list
# can name classes without importing every family up front)
ClassTable = Mapping[str, Callable[[], type]]


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its model."""


# ------------------------------------------------------------------ one file
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; a plain open() would give 0666 less the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dump_json(path: str | Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
        f.write("\n")


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, lambda tmp: dump_json(tmp, data))


def as_saved(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists), for comparing with a saved file."""
    return json.loads(json.dumps(data, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from e


def read_json_object(path: str | Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


# ------------------------------------------------------------ one unit of files
def write_unit(folder: str | Path, files: Mapping[str, Callable[[str], None]]) -> None:
    """Write several files of ``folder`` as one unit: ``files`` maps a name to ``write(path)``.

    After a kill at any moment, ``recover(folder)`` leaves either every old file or every new one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    pending = folder / PENDING
    pending.mkdir()
    mode = _file_mode()
    for name, write in files.items():
        write(str(pending / name))
        os.chmod(pending / name, mode)
        _fsync(pending / name)
    atomic_write(pending / COMMIT, lambda tmp: Path(tmp).write_text("\n".join(files) + "\n"))
    _fsync(pending)
    _apply(folder)


def recover(folder: str | Path) -> None:
    """Finish a committed unit of files or drop an unfinished one (no-op on a clean folder)."""
    pending = Path(folder) / PENDING
    if not pending.is_dir():
        return
    if (pending / COMMIT).is_file():
        _apply(Path(folder))
    else:
        shutil.rmtree(pending)


def _apply(folder: Path) -> None:
    pending = folder / PENDING
    for name in (pending / COMMIT).read_text().split():
        if (pending / name).exists():  # a name already moved by an interrupted _apply is skipped
            os.replace(pending / name, folder / name)
    shutil.rmtree(pending)
    for tmp in folder.glob(".*.tmp"):  # left by a kill inside atomic_write
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def load_metrics(folder: str | Path) -> dict:
    path = Path(folder) / METRICS
    return read_json_object(path) if path.is_file() else {}

