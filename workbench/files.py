"""Files written safely, with no torch: one file atomically, several as one unit, JSON read back
with clear errors. ``workbench.checkpoints`` builds on it; ``models.available()`` and the command
line's ``list`` use it alone, so they start without importing torch.

A unit of files: every file goes into ``<folder>/.pending/``, a ``COMMIT`` marker is written
last, then the files are moved into place. Whoever opens the folder next finishes a committed
unit or drops an uncommitted one (``recover``), so after a kill at any moment the folder holds
one complete set, never a mix of two.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PENDING, COMMIT = ".pending", "COMMIT"  # the staging folder of a unit and its last file
CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"  # a checkpoint folder's files


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


def load_metrics(folder: str | Path) -> dict:
    path = Path(folder) / METRICS
    return read_json_object(path) if path.is_file() else {}

