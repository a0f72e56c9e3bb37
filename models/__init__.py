"""Hooked models, the family registry and the zoo of shipped, trained checkpoints.

>>> import models
>>> print(models.available())          # one line per shipped checkpoint
>>> model = models.load("reasoner")    # hooked model, eval mode, on the CPU
>>> models.family_of(model).label      # 'Reasoner' (models/registry.py: one Family per family)
>>> models.task_of("act-parity")       # ParityConfig(size=16, ...), read from config.json
"""

from __future__ import annotations

from pathlib import Path

from workbench import files

ZOO = Path(__file__).parent / "zoo"


def __getattr__(name: str):
    # ``models.CLASSES`` (class path -> (module, attribute): the only classes a checkpoint may
    # name) is the registry's live table; the registry is imported on first use
    if name == "CLASSES":
        from models import registry

        return registry.CLASSES
    if name == "registry":
        import importlib

        return importlib.import_module("models.registry")
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def allowed_classes(extra: dict | None = None) -> dict:
    """The allow-list ``workbench.checkpoints.load`` takes: every registered family's classes
    (``extra``: more, e.g. a test's toy class). A class is imported only when a checkpoint of
    it is opened."""
    from models import registry

    return {**registry.class_table(), **(extra or {})}


def family_of(model_or_name):
    """The registry's ``Family`` of a model, a zoo name or a checkpoint folder."""
    from models import registry

    return registry.family_of(model_or_name)


def task_of(model_or_name, **overrides):
    """The task a model (or zoo name, or checkpoint folder) was trained on: the task's config dataclass."""
    from models import registry

    return registry.task_of(model_or_name, **overrides)


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO.iterdir() if (p / files.CONFIG).is_file()) if ZOO.is_dir() else []


def _headline(name: str) -> str:
    card = ZOO / name / "card.md"
    if card.is_file():
        for line in card.read_text().splitlines():
            if line.startswith("> "):
                return line[2:].strip()
    cls = files.read_json(ZOO / name / files.CONFIG)["class"]
    from models import registry

    family = registry.family_of_class(cls)
    return f"{family.label}: {family.description}" if family else cls


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
