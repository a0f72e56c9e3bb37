"""Training recipes: how one model of each family is built, trained, evaluated and described.

A recipe is a module ``models/recipes/<family>.py`` with the same parts in every family:

    PRESETS = {"parity": {"args": {"task": "parity", "steps": 14000, ...},  # option defaults, plain data
                          "what": "ACT on 16-bit parity ..."}}              # what it is, for the card

    def build(args) -> Setup              # the model and its TrainSpec from the parsed options (torch is seeded)
    def batches(...)                      # make_batch(rng, step) of that TrainSpec: the training data
    def evaluate(model, setup) -> dict    # fresh evaluation of the reloaded checkpoint: metrics.json's parts
    def headline(parts, setup) -> dict    # the headline metric, from those parts
    def report(metrics, setup) -> str     # what the command prints when the run is done
    def card(folder, stored, metrics, what) -> dict   # card.md's parts (keywords of workbench.cards.write_card)
    def fit(setup, train) -> dict         # instead of a TrainSpec, where workbench.train does not train the
                                          # model (the gain circuit: its gains are solved); saves the checkpoint

``run(recipe, args, command)`` is the one procedure around them, the same for every family: seed,
train through ``workbench.train`` (or the recipe's ``fit``), reload the checkpoint with
``models.load``, evaluate it on fresh data, write ``metrics.json`` and ``card.md``.

    >>> from models import recipes
    >>> from models.recipes import act
    >>> metrics = recipes.run(act, args, "workbench train act --preset parity")  # args: that command's options

This module imports no torch, so the command line's option layer can use its helpers
(``from_args``, ``preset_of``, ``check_writable``) while ``workbench --help`` stays fast; the
family modules import their models at the top.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import models
from workbench import cards, files

# what metrics.json keeps of the trainer's (or a recipe's fit's) result, in this order
TRAIN_KEYS = ("step", "train_wall_s", "hardware", "world_size", "seed")


@dataclass
class Setup:
    """What a recipe's ``build`` makes of the parsed options before training."""

    args: Any  # the parsed options (an argparse.Namespace)
    model: Any  # the torch.nn.Module to train, built after torch.manual_seed(seed)
    task: Any = None  # the task config that batches and evaluations sample from
    spec: Any = None  # the workbench.train.TrainSpec; None where the recipe's fit trains the model
    info: dict = field(default_factory=dict)  # anything else evaluate / report need (e.g. the gain solvers)


# ------------------------------------------------------------------ the run
def run(recipe: ModuleType, args, command: str) -> dict:
    """Train one model of ``recipe``'s family as ``args`` say; returns the metrics written beside it.

    ``command`` is the command as typed, recorded in the card (after the earlier commands of a
    resumed run). Every check on the options and the output folder comes before any work.
    """
    import torch  # here, not at the top: the option helpers above are imported by `workbench --help`
    from workbench.train import TrainConfig, train as train_model

    train = from_args(TrainConfig, args)
    check_writable(train.out)
    if train.threads:
        torch.set_num_threads(train.threads)
    torch.manual_seed(train.seed)
    setup = recipe.build(args)
    result = recipe.fit(setup, train) if setup.spec is None else train_model(setup.spec, train)
    # The card's numbers come from the saved checkpoint on fresh data, not from training logs.
    model = models.load(train.out)
    parts = recipe.evaluate(model, setup)
    metrics = {"headline": recipe.headline(parts, setup), **parts,
               "train": {k: result[k] for k in TRAIN_KEYS if k in result}}
    if "history" in result:
        metrics["history"] = result["history"]
    files.write_json(Path(train.out) / files.METRICS, metrics)
    command = cards.commands_so_far(train.out, command, train.resume)
    write_card(recipe, train.out, metrics, command, getattr(args, "preset", None))
    print(recipe.report(metrics, setup))
    return metrics


def write_card(recipe: ModuleType, folder: str | Path, metrics: dict, command: str, preset: str | None) -> None:
    """``card.md`` of the checkpoint in ``folder``: the recipe's parts, the command(s), seed, wall time, hardware."""
    folder = Path(folder)
    stored = files.read_json(folder / files.CONFIG)
    what = recipe.PRESETS.get(preset or "", {}).get("what")
    train = metrics["train"]
    parts = recipe.card(folder, stored, metrics, what)
    parts["notes"] = "\n\n".join(p for p in (parts.get("notes", ""), cards.seeds_section(metrics.get("seeds"))) if p)
    cards.write_card(folder, command=command, seed=train["seed"], wall_s=train["train_wall_s"],
                     hardware=train["hardware"], **parts)


def update(recipe: ModuleType, folder: str | Path, **parts) -> None:
    """Add ``parts`` to a checkpoint's metrics and write its card again, with the command recorded in it.

    For evaluations that belong on a card (``workbench eval act --update-zoo`` stores the tau sweep).
    """
    folder = Path(folder)
    metrics = {**files.load_metrics(folder), **parts}
    files.write_json(folder / files.METRICS, metrics)
    command = cards.card_command(folder / "card.md")
    write_card(recipe, folder, metrics, command, preset_of(command.split()))


# ------------------------------------------------------------------ options
def preset_of(argv: list[str]) -> str | None:
    """The value of ``--preset`` in a command line (presets set other options' defaults)."""
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return None


def from_args(cls, args, skip: tuple[str, ...] = (), **overrides):
    """``cls`` (a config dataclass) built from the parsed options; its ValueError names the flags.

    ``steps=-5 must be a whole number >= 1`` from the dataclass reads ``--steps=-5 must be ...``.
    """
    given = [f.name for f in fields(cls) if f.name not in skip and f.name not in overrides and hasattr(args, f.name)]
    values = {name: getattr(args, name) for name in given}
    values.update(overrides)
    try:
        return cls(**values)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError) as e:
        message = str(e)
        for name in sorted(given, key=len, reverse=True):
            pattern = rf"(?<![\w.-])(?:{re.escape(cls.__name__)}\.)?{re.escape(name)}(?==)"
            message = re.sub(pattern, "--" + name.replace("_", "-"), message)
        raise ValueError(message) from e


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Raise ``ValueError`` unless ``path`` is, or can become, a writable folder (creates nothing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is not writable")
