"""Hooked models and the zoo of shipped, trained checkpoints.

>>> import models
>>> print(models.available())          # one line per shipped checkpoint
>>> model = models.load("reasoner")    # hooked model, eval mode, on the CPU
"""

from __future__ import annotations

from pathlib import Path

import importlib

from workbench import files

ZOO = Path(__file__).parent / "zoo"

# The only classes a checkpoint may name: class path -> (module, attribute) of this package.
# A module is imported only when a checkpoint of its class is opened.
CLASSES: dict[str, tuple[str, str]] = {
    "models.reasoner.Reasoner": ("models.reasoner", "Reasoner"),
    "models.act.ACT": ("models.act", "ACT"),
    "models.warp.Warp": ("models.warp", "Warp"),
    "models.gru.GRU": ("models.gru", "GRU"),
    "models.gain.GainCircuit": ("models.gain", "GainCircuit"),
}


def _importer(module: str, name: str):
    return lambda: getattr(importlib.import_module(module), name)


def allowed_classes(extra: dict | None = None) -> dict:
    """The allow-list ``workbench.checkpoints.load`` takes (``extra``: more, e.g. a test's toy class)."""
    return {**{path: _importer(*where) for path, where in CLASSES.items()}, **(extra or {})}


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO.iterdir() if (p / files.CONFIG).is_file()) if ZOO.is_dir() else []


def _headline(name: str) -> str:
    card = ZOO / name / "card.md"
    if card.is_file():
        for line in card.read_text().splitlines():
            if line.startswith("> "):
                return line[2:].strip()
    return files.read_json(ZOO / name / files.CONFIG)["class"]


def available() -> str:
    """The shipped checkpoints, one line each: ``name  headline``."""
    names = zoo_names()
    width = max((len(n) for n in names), default=0)
    return "\n".join(f"{n:<{width}}  {_headline(n)}" for n in names)


def resolve(name_or_path: str | Path) -> Path:
    """A zoo name or a checkpoint folder -> the folder; unknown names list the zoo."""
    path = Path(name_or_path)
    if (path / files.CONFIG).is_file():
        return path
    if (ZOO / str(name_or_path) / files.CONFIG).is_file():
        return ZOO / str(name_or_path)
    raise files.CheckpointError(
        f"{name_or_path!r} is neither a checkpoint folder nor a zoo model; zoo models: {', '.join(zoo_names()) or '(none)'}"
    )


def load(name_or_path: str | Path, device="cpu"):
    """The hooked model (a ``torch.nn.Module``) of a zoo entry or checkpoint folder, in eval mode."""
    from workbench import checkpoints  # torch comes in here, not when the zoo is listed

    return checkpoints.load(resolve(name_or_path), allowed_classes(), device=device)


def metrics(name_or_path: str | Path) -> dict:
    return files.load_metrics(resolve(name_or_path))
